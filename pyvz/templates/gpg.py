"""Detached GPG signatures on templates, checked against the host's trusted keyring.

The keyring is a plain (binary) keyring file, $ROOT/etc/vz/trusted.gpg by default, so
verification needs only gpgv and no GnuPG home directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.run import run

SIGNATURE_SUFFIX = ".asc"


def signature_for(archive: Path) -> Path:
    return archive.with_name(archive.name + SIGNATURE_SUFFIX)


def verify(archive: Path, signature: Path, keyring: Path) -> str:
    """Check `signature` over `archive`; returns the signer's key fingerprint."""
    if not signature.exists():
        raise VzError(ExitCode.BAD_TEMPLATE, f"{archive.name} has no signature ({signature.name} missing)")
    if not keyring.exists() or keyring.stat().st_size == 0:
        raise VzError(
            ExitCode.BAD_TEMPLATE,
            f"no trusted keys in {keyring}: add the publisher's key with `vztmpl trust KEYFILE`",
        )
    with tempfile.TemporaryDirectory(prefix="pyvz-gpgv-") as home:
        result = run(
            [
                "gpgv",
                "--homedir",
                home,
                "--status-fd",
                "1",
                "--keyring",
                str(keyring),
                str(signature),
                str(archive),
            ],
            check=False,
        )
    status = result.stdout
    if "[GNUPG:] VALIDSIG" in status and result.returncode == 0:
        line = next(s for s in status.splitlines() if s.startswith("[GNUPG:] VALIDSIG"))
        return line.split()[2]
    if "NO_PUBKEY" in status or "ERRSIG" in status:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{archive.name} is signed by a key that is not trusted here")
    if "BADSIG" in status:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{archive.name}: BAD signature (the archive was altered)")
    raise VzError(
        ExitCode.BAD_TEMPLATE, f"{archive.name}: signature check failed: {result.stderr.strip()[-200:]}"
    )


def sign(archive: Path, key_id: str, homedir: Path | None = None) -> Path:
    """Write ARCHIVE.asc with the admin's key (from GNUPGHOME or ~/.gnupg)."""
    signature = signature_for(archive)
    partial = signature.with_name(f".{signature.name}.partial")
    argv = [
        "gpg",
        "--batch",
        "--yes",
        "--armor",
        "--local-user",
        key_id,
        "--detach-sign",
        "--output",
        str(partial),
    ]
    if homedir is not None:
        argv[1:1] = ["--homedir", str(homedir)]
    try:
        run([*argv, str(archive)], error_code=ExitCode.BAD_TEMPLATE)
        os.replace(partial, signature)
    finally:
        partial.unlink(missing_ok=True)
    return signature


def trust(key_file: Path, keyring: Path) -> list[str]:
    """Add the keys in `key_file` (armored or binary) to the trusted keyring; returns fingerprints."""
    keyring.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyvz-gpg-") as home:
        base = ["gpg", "--homedir", home, "--batch", "--no-default-keyring", "--keyring", str(keyring)]
        run([*base, "--import", str(key_file)], error_code=ExitCode.BAD_TEMPLATE)
        listing = run([*base, "--with-colons", "--list-keys"]).stdout
    os.chmod(keyring, 0o644)
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
