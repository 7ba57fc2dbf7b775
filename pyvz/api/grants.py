"""Who may do what: roles, CT scopes, API tokens and trusted client certificates.

A token is shown once, when it is made, and stored only as its SHA-256: its secret is 32
random bytes, so a fast hash is as good as a slow one. A trusted client certificate is
stored as its fingerprint. Both live in one file, etc/vz/api/grants.json (mode 0600), which
`pyvzd token …` and `pyvzd trust …` change and the daemon reads when it changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths

TOKEN_PREFIX = "pyvz"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SCOPE_WORD = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,64}")


class Role(IntEnum):
    """Each role can do what the ones below it can."""

    VIEWER = 1  # read: list, status, config, snapshots, backups, metrics, events
    OPERATOR = 2  # and start/stop/restart/suspend/resume, console, exec, snapshot, backup
    ADMIN = 3  # and create, set, destroy, clone, restore, migrate, templates, host changes

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"invalid role {text!r}: expected viewer, operator or admin"
            ) from None

    @property
    def label(self) -> str:
        return self.name.lower()


def parse_scope(text: str) -> tuple[str, ...]:
    """`*`, or CTIDs, CTID ranges (100-199), names and shell patterns, comma-separated."""
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if not words:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "empty scope: give CTIDs, names, patterns or *")
    for word in words:
        if not _SCOPE_WORD.fullmatch(word):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid scope entry {word!r}")
        if re.fullmatch(r"\d+-\d+", word):
            low, high = (int(n) for n in word.split("-"))
            if low > high:
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid CTID range {word!r}")
    return words


@dataclass(frozen=True)
class Grant:
    """What one caller may do: a role over a scope of CTs."""

    who: str  # shown in the audit log and in events
    role: Role
    scope: tuple[str, ...] = ("*",)

    def may(self, needed: Role) -> bool:
        return self.role >= needed

    @property
    def everything(self) -> bool:
        return "*" in self.scope

    def covers(self, ctid: int, name: str | None = None) -> bool:
        """Whether CT `ctid` (called `name`) is in this grant's scope."""
        for word in self.scope:
            if word == "*":
                return True
            if re.fullmatch(r"\d+-\d+", word):
                low, high = (int(n) for n in word.split("-"))
                if low <= ctid <= high:
                    return True
            elif fnmatchcase(str(ctid), word) or (name is not None and fnmatchcase(name, word)):
                return True
        return False


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class Grants:
    """The grants file of one root."""

    def __init__(self, paths: Paths) -> None:
        self.path = paths.api_dir / "grants.json"
        self._seen: tuple[float, int] | None = None
        self._entries: list[dict[str, Any]] = []

    def entries(self) -> list[dict[str, Any]]:
        """The file's entries, read again only when it changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._entries = None, []
            return []
        if self._seen != (st.st_mtime, st.st_size):
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise VzError(ExitCode.INVALID_CONFIG, f"{self.path}: unreadable ({err})") from None
            self._entries = [e for e in loaded if isinstance(e, dict)] if isinstance(loaded, list) else []
            self._seen = (st.st_mtime, st.st_size)
        return self._entries

    def _save(self, entries: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(entries, indent=1) + "\n", mode=0o600)
        self._seen = None

    def _named(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.entries() if e.get("name") == name), None)

    def add_token(self, name: str, role: Role, scope: tuple[str, ...]) -> str:
        """Make a token; returns the secret, which nothing stores."""
        self._check_new(name)
        key = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        entry = {
            "name": name,
            "kind": "token",
            "id": key,
            "sha256": hashlib.sha256(secret.encode()).hexdigest(),
            "role": role.label,
            "scope": list(scope),
            "created": int(time.time()),
        }
        self._save([*self.entries(), entry])
        return f"{TOKEN_PREFIX}_{key}_{secret}"

    def add_certificate(self, name: str, print_: str, role: Role, scope: tuple[str, ...]) -> None:
        self._check_new(name)
        if not re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", print_):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid SHA-256 fingerprint {print_!r}")
        entry = {
            "name": name,
            "kind": "certificate",
            "fingerprint": print_,
            "role": role.label,
            "scope": list(scope),
            "created": int(time.time()),
        }
        self._save([*self.entries(), entry])

    def _check_new(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid name {name!r}: letters, digits, _.@-")
        if self._named(name) is not None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"a grant named {name!r} exists already")

    def remove(self, name: str) -> None:
        entries = self.entries()
        if self._named(name) is None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"no token or certificate named {name!r}")
        self._save([e for e in entries if e.get("name") != name])

    def for_token(self, token: str) -> Grant | None:
        """The grant of a presented token; None for anything else."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            return None
        _prefix, key, secret = parts
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for entry in self.entries():
            if (
                entry.get("kind") == "token"
                and entry.get("id") == key
                and hmac.compare_digest(str(entry.get("sha256", "")), digest)
            ):
                return _grant(entry, f"token {entry.get('name')}")
        return None

    def for_certificate(self, print_: str) -> Grant | None:
        for entry in self.entries():
            if entry.get("kind") == "certificate" and entry.get("fingerprint") == print_:
                return _grant(entry, f"certificate {entry.get('name')}")
        return None


def _grant(entry: dict[str, Any], who: str) -> Grant | None:
    try:
        return Grant(who, Role.parse(str(entry.get("role"))), parse_scope(",".join(entry.get("scope") or [])))
    except VzError:
        return None  # a hand-edited entry that makes no sense grants nothing


def local_grant(uid: int, gids: set[int]) -> Grant | None:
    """A caller on the unix socket: root, or a member of the `pyvz` group, is the host's
    admin (as the incus-admin group is Incus's); anyone else may not use the socket."""
    if uid == 0:
        return Grant("root (local)", Role.ADMIN)
    try:
        import grp

        group = grp.getgrnam("pyvz")
    except KeyError:
        return None
    if group.gr_gid in gids:
        import pwd

        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return Grant(f"{user} (local, group pyvz)", Role.ADMIN)
    return None


def gids_of(pid: int) -> set[int]:
    """The groups of a process (SO_PEERCRED gives only its primary one)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()
