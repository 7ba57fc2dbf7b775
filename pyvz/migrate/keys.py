"""The migration key: a host's own SSH key for vzmigrate, good for nothing else.

Each host has one key pair in etc/vz/migrate/. `vzmigrate --authorize PUBKEY` on a
receiving host installs the sender's public key in root's authorized_keys behind
`restrict` (no pty, no forwarding, no agent, no X11, no user rc) and a forced command, so
whatever the sender asks for, sshd runs `vzmigrate --receive --peer FINGERPRINT` instead: the
receiver then takes only the migration protocol, and records which key sent each CT.
Root on one host never becomes root on another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shlex
import socket
import sys
from pathlib import Path

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import run

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
MARK = "pyvz-migrate"
_FINGERPRINT_RE = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


def key_path(paths: Paths) -> Path:
    return paths.etc_vz / "migrate" / "id_ed25519"


def ensure_key(paths: Paths) -> Path:
    """This host's migration key, made on first use."""
    key = key_path(paths)
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = key.with_name(f".{key.name}.partial")
        for leftover in (partial, partial.with_suffix(".pub")):
            leftover.unlink(missing_ok=True)
        comment = f"{MARK}@{socket.gethostname()}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(partial)])
        os.replace(partial.with_name(partial.name + ".pub"), key.with_name(key.name + ".pub"))
        os.replace(partial, key)
    return key


def public_line(paths: Paths) -> str:
    ensure_key(paths)
    return key_path(paths).with_name("id_ed25519.pub").read_text().strip()


def parse_public(line: str) -> tuple[str, str, str]:
    """(type, base64 blob, SHA256 fingerprint) of an OpenSSH public key line, checked."""
    fields = line.strip().split()
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"not an SSH public key line (want TYPE BASE64 [COMMENT], TYPE one of {', '.join(KEY_TYPES)})",
        )
    kind, blob = fields[0], fields[1]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "the public key's base64 is malformed") from None
    # The blob starts with its own type name: a key pasted under the wrong type is refused.
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"the public key's data is not a {kind} key")
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return kind, blob, f"SHA256:{digest}"


def check_fingerprint(text: str) -> str:
    if not _FINGERPRINT_RE.match(text):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"malformed key fingerprint {text!r}")
    return text


def receiver_command(paths: Paths, fingerprint: str) -> str:
    """What sshd runs for the key, whatever the client asked for."""
    launcher = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "vzmigrate" else None
    argv = [str(launcher)] if launcher else [sys.executable, "-m", "pyvz.cli.vzmigrate"]
    if paths.root != Path("/"):
        argv = ["env", f"PYVZ_ROOT={paths.root}", *argv]
    command = shlex.join([*argv, "--receive", "--peer", fingerprint])
    if '"' in command or "\\" in command:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"cannot put {command!r} in authorized_keys")
    return command


def authorize(paths: Paths, line: str, authorized_keys: Path) -> str:
    """Install (or replace) the key's restricted line; returns its fingerprint."""
    kind, blob, fingerprint = parse_public(line)
    entry = f'restrict,command="{receiver_command(paths, fingerprint)}" {kind} {blob} {MARK}'
    try:
        lines = authorized_keys.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [existing for existing in lines if blob not in existing.split()]
    authorized_keys.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(authorized_keys, "\n".join([*kept, entry]) + "\n", mode=0o600)
    return fingerprint


def default_authorized_keys(paths: Paths, configured: str | None) -> Path:
    return paths.host(configured) if configured else paths.host("/root/.ssh/authorized_keys")
