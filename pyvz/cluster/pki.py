"""The cluster's certificates, made with openssl (as pyvz/api/tls.py makes pyvzd's).

One CA per cluster (made by `vzcluster init`, kept on that host: its key signs the
certificates of every host that joins through it). Each member has three key pairs, all
EC P-256 and signed by the CA, in $ROOT/etc/vz/cluster/:

- server.crt/key: what its etcd shows to clients (serverAuth, and clientAuth: etcd's HTTP
  gateway dials its own gRPC port with it; SANs: its address, its name, 127.0.0.1)
- peer.crt/key: what its etcd shows to, and checks from, the other members (serverAuth and
  clientAuth: a peer connection is TLS both ways)
- client.crt/key: what pyvz on the host (vzcluster, the agent) shows to etcd (clientAuth)

Keys are 0600 and never leave the host they were made on: a joining host sends
certificate requests and gets certificates back. Every file is written whole and renamed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from pathlib import Path

from pyvz.atomic import write_atomic
from pyvz.cluster.etcd import TlsFiles
from pyvz.errors import ClusterExit, VzError
from pyvz.run import run

ROLES = ("server", "peer", "client")
_USAGE = {
    "server": "serverAuth,clientAuth",  # etcd's own gateway dials its gRPC port with it
    "peer": "serverAuth,clientAuth",
    "client": "clientAuth",
}
DAYS = 3650


def ca_cert(directory: Path) -> Path:
    return directory / "ca.crt"


def ca_key(directory: Path) -> Path:
    return directory / "ca.key"


def cert(directory: Path, role: str) -> Path:
    return directory / f"{role}.crt"


def key(directory: Path, role: str) -> Path:
    return directory / f"{role}.key"


def client_tls(directory: Path) -> TlsFiles:
    return TlsFiles(ca_cert(directory), cert(directory, "client"), key(directory, "client"))


def _openssl(argv: list[str]) -> str:
    try:
        return run(["openssl", *argv], timeout=60).stdout
    except VzError as err:
        raise VzError(ClusterExit.PKI, f"openssl failed: {err.message}") from None


def _install(path: Path, text: str, mode: int) -> None:
    write_atomic(path, text, mode=mode)
    os.chmod(path, mode)  # whatever the umask took away or left


def make_ca(directory: Path, cluster: str) -> None:
    """The cluster's CA (ca.crt, ca.key), unless there is one."""
    if ca_cert(directory).exists() and ca_key(directory).exists():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".ca-") as scratch:
        tmp_key, tmp_cert = Path(scratch) / "ca.key", Path(scratch) / "ca.crt"
        _openssl(
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", str(DAYS), "-subj", f"/CN=pyvz cluster {cluster} CA/O=pyvz",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", str(tmp_key), "-out", str(tmp_cert),
            ]
        )  # fmt: skip
        _install(ca_key(directory), tmp_key.read_text(), 0o600)
        _install(ca_cert(directory), tmp_cert.read_text(), 0o644)


def request(directory: Path, role: str, name: str) -> str:
    """A new key for `role` (written as ROLE.key, 0600) and its certificate request (PEM)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".req-") as scratch:
        tmp_key, csr = Path(scratch) / "key", Path(scratch) / "csr"
        _openssl(
            [
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", f"/CN={name}/O=pyvz/OU={role}",
                "-keyout", str(tmp_key), "-out", str(csr),
            ]
        )  # fmt: skip
        _install(key(directory, role), tmp_key.read_text(), 0o600)
        return csr.read_text()


def sign(ca_directory: Path, csr: str, role: str, name: str, address: str) -> str:
    """Sign a member's request with the CA: the names in the certificate are the ones given
    here (the member's name and address, and 127.0.0.1), never those the request asks for."""
    if role not in ROLES:
        raise VzError(ClusterExit.PKI, f"unknown certificate role {role!r}")
    if not ca_key(ca_directory).exists():
        raise VzError(
            ClusterExit.PKI,
            f"this host holds no cluster CA key ({ca_key(ca_directory)}): join through the one that ran init",
        )
    ip = ipaddress.ip_address(address)
    names = [f"DNS:{name}", f"IP:{ip}", "IP:127.0.0.1"]
    extensions = (
        "[v3]\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={_USAGE[role]}\n"
        f"subjectAltName={','.join(names)}\n"
    )
    with tempfile.TemporaryDirectory(prefix="pyvz-csr-") as scratch:
        csr_file, ext_file, out = Path(scratch) / "csr", Path(scratch) / "ext", Path(scratch) / "crt"
        csr_file.write_text(csr)
        ext_file.write_text(extensions)
        _openssl(
            [
                "x509", "-req", "-in", str(csr_file), "-CA", str(ca_cert(ca_directory)),
                "-CAkey", str(ca_key(ca_directory)), "-set_serial", str(secrets.randbits(63)),
                "-days", str(DAYS), "-extfile", str(ext_file), "-extensions", "v3", "-out", str(out),
            ]
        )  # fmt: skip
        return out.read_text()


def install_cert(directory: Path, role: str, pem: str) -> None:
    if "BEGIN CERTIFICATE" not in pem:
        raise VzError(ClusterExit.PKI, f"the {role} certificate received is not a PEM certificate")
    _install(cert(directory, role), pem, 0o644)


def install_ca(directory: Path, pem: str) -> None:
    if "BEGIN CERTIFICATE" not in pem:
        raise VzError(ClusterExit.PKI, "the CA certificate received is not a PEM certificate")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _install(ca_cert(directory), pem, 0o644)


def issue_all(directory: Path, ca_directory: Path, name: str, address: str) -> None:
    """Every certificate of a member whose CA is at hand (init, and the test hosts)."""
    for role in ROLES:
        install_cert(directory, role, sign(ca_directory, request(directory, role, name), role, name, address))
