"""GPG material for tests: keys made in a throwaway GNUPGHOME, and its gpg-agent torn down."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def gpg(home: Path, *args: str) -> str:
    """Run gpg in `home` (batch mode); returns its stdout and fails the test on an error."""
    done = subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def new_key(home: Path, email: str) -> str:
    """A new passphrase-less ed25519 signing key that never expires; returns its fingerprint."""
    gpg(home, "--passphrase", "", "--quick-gen-key", f"pyvz test <{email}>", "ed25519", "sign", "0")
    listing = gpg(home, "--with-colons", "--list-secret-keys", f"<{email}>")
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def export_public(home: Path, *keys: str) -> str:
    """The armored public halves of `keys`."""
    return gpg(home, "--armor", "--export", *keys)


def kill_agents(home: Path) -> None:
    """Stop the gpg-agent (and any other daemon) gpg started for `home`."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


@contextmanager
def throwaway_home() -> Iterator[Path]:
    """An empty GNUPGHOME under /tmp; its daemons are killed and it is removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="pyvz-gpg-", dir="/tmp"))
    home.chmod(0o700)
    try:
        yield home
    finally:
        kill_agents(home)
        shutil.rmtree(home, ignore_errors=True)
