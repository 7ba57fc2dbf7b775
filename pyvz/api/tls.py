"""The daemon's HTTPS certificate: made once (by `make install`, or at the first start),
self-signed, its fingerprint printed for clients to pin; client certificates are checked
against the grants file by their fingerprint."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from pyvz.api.grants import fingerprint
from pyvz.paths import Paths
from pyvz.run import run


def cert_files(paths: Paths) -> tuple[Path, Path]:
    return paths.api_dir / "server.crt", paths.api_dir / "server.key"


def ensure_certificate(paths: Paths) -> Path:
    """The server certificate, made now if there is none (EC P-256, ten years)."""
    cert, key = cert_files(paths)
    if cert.exists() and key.exists():
        return cert
    paths.api_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = socket.gethostname() or "localhost"
    tmp_cert, tmp_key = cert.with_suffix(".crt.tmp"), key.with_suffix(".key.tmp")
    run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "3650", "-subj", f"/CN={name}/O=pyvz",
            "-addext", f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1,IP:::1",
            "-keyout", str(tmp_key), "-out", str(tmp_cert),
        ],
        timeout=60,
    )  # fmt: skip
    tmp_key.chmod(0o600)
    tmp_key.rename(key)
    tmp_cert.rename(cert)
    return cert


def server_fingerprint(paths: Paths) -> str:
    cert, _key = cert_files(paths)
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))


def server_context(paths: Paths) -> ssl.SSLContext:
    """TLS 1.2+; a client may present a certificate, which the request handler then looks
    up by fingerprint (there is no CA: a trusted certificate is trusted by itself)."""
    cert, key = cert_files(paths)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_OPTIONAL
    trusted = paths.api_dir / "clients"
    loaded = False
    if trusted.is_dir():
        for pem in sorted(trusted.glob("*.crt")):
            try:
                context.load_verify_locations(cafile=str(pem))
                loaded = True
            except (ssl.SSLError, OSError):
                continue
    if not loaded:
        context.verify_mode = ssl.CERT_NONE  # nothing to check a client certificate against
    return context
