"""What every distribution handler does, on a CT root seen from the host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.rootview import RootView

FIRST_USER_ID = 1000


class Account(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str


class Distro:
    """The generic fallback; specific distributions override what differs."""

    name: ClassVar[str] = "generic"
    halt_signal: ClassVar[str] = "SIGPWR"
    # Command run inside the CT; exit 0 once boot has finished. None: init running is enough.
    boot_probe: ClassVar[tuple[str, ...] | None] = None

    def set_hostname(self, view: RootView, hostname: str) -> None:
        view.write_text("/etc/hostname", hostname + "\n")
        short = hostname.split(".")[0]
        names = hostname if short == hostname else f"{hostname} {short}"
        hosts = view.read_or_empty("/etc/hosts").splitlines()
        kept = [line for line in hosts if not re.match(r"^\s*127\.0\.1\.1\s", line)]
        if not any(re.match(r"^\s*127\.0\.0\.1\s", line) for line in kept):
            kept.insert(0, "127.0.0.1 localhost.localdomain localhost")
        if not any(re.match(r"^\s*::1\s", line) for line in kept):
            kept.insert(1, "::1 localhost ip6-localhost ip6-loopback")
        kept.append(f"127.0.1.1 {names}")
        view.write_text("/etc/hosts", "\n".join(kept) + "\n")

    def set_resolver(self, view: RootView, nameservers: tuple[str, ...], search: tuple[str, ...]) -> bool:
        """Write /etc/resolv.conf; True if it changed. `inherit` means the host's servers."""
        if nameservers == ("inherit",):
            nameservers, inherited_search = host_resolver()
            search = search or inherited_search
        lines = [f"search {' '.join(search)}"] if search else []
        lines += [f"nameserver {server}" for server in nameservers]
        text = "\n".join(lines) + "\n"
        if view.read_or_empty("/etc/resolv.conf") == text:
            return False
        view.write_text("/etc/resolv.conf", text)
        return True

    def hostname_command(self, hostname: str) -> tuple[str, ...]:
        """Run inside a running CT so the change takes effect without a restart."""
        return ("hostname", hostname)

    def set_password(self, view: RootView, user: str, password: str) -> bool:
        """Set `user`'s password, creating the user if needed. Returns True if created."""
        if not view.exists("/etc/passwd"):
            raise VzError(ExitCode.CHANGE_PASSWORD, "the CT has no /etc/passwd")
        created = False
        account = find_account(view, user)
        if account is None:
            account = self._add_user(view, user)
            created = True
        hashed = _sha512_crypt(password)
        self._set_shadow(view, user, hashed)
        return created

    def _add_user(self, view: RootView, user: str) -> Account:
        passwd = view.read_text("/etc/passwd")
        group = view.read_or_empty("/etc/group")
        used_uids = {int(f[2]) for f in _rows(passwd) if len(f) > 2 and f[2].isdigit()}
        used_gids = {int(f[2]) for f in _rows(group) if len(f) > 2 and f[2].isdigit()}
        uid = next(i for i in range(FIRST_USER_ID, 60000) if i not in used_uids and i not in used_gids)
        shell = "/bin/bash" if view.exists("/bin/bash") else "/bin/sh"
        home = f"/home/{user}"
        account = Account(user, uid, uid, home)
        view.write_text("/etc/passwd", _append(passwd, f"{user}:x:{uid}:{uid}::{home}:{shell}"))
        if not any(f[0] == user for f in _rows(group)):
            view.write_text("/etc/group", _append(group, f"{user}:x:{uid}:"))
        if view.exists("/etc/gshadow"):
            gshadow = view.read_text("/etc/gshadow")
            mode = view.mode_of("/etc/gshadow")
            view.write_text(
                "/etc/gshadow",
                _append(gshadow, f"{user}:!::"),
                mode=0o640 if mode is None else mode,
                owner=(0, _shadow_gid(view)),
            )
        view.mkdir("/home", 0o755)
        view.mkdir(home, 0o750, owner=(uid, uid))
        return account

    def _set_shadow(self, view: RootView, user: str, hashed: str) -> None:
        shadow = view.read_or_empty("/etc/shadow")
        mode = view.mode_of("/etc/shadow")
        mode = 0o640 if mode is None else mode
        lines = shadow.splitlines()
        days = _days_since_epoch()
        for index, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] == user:
                fields += [""] * (9 - len(fields))
                fields[1], fields[2] = hashed, str(days)
                lines[index] = ":".join(fields)
                break
        else:
            lines.append(f"{user}:{hashed}:{days}:0:99999:7:::")
        view.write_text("/etc/shadow", "\n".join(lines) + "\n", mode=mode, owner=(0, _shadow_gid(view)))


def _sha512_crypt(password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        # crypt is deprecated for 3.13; on 3.11 it is the stdlib's only SHA-512 crypt(3).
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def host_resolver() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The host's nameservers and search domains. A local stub resolver (systemd-resolved's
    127.0.0.53) cannot serve a CT in its own network namespace, so its upstream list is used."""
    servers: list[str] = []
    search: list[str] = []
    for path in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        servers = [
            line.split()[1]
            for line in text.splitlines()
            if line.startswith("nameserver ") and len(line.split()) > 1
        ]
        search = [
            word for line in text.splitlines() if line.startswith("search ") for word in line.split()[1:]
        ]
        if servers and not all(server.startswith("127.") for server in servers):
            break
    return tuple(s for s in servers if not s.startswith("127.")), tuple(search)


def find_account(view: RootView, user: str, by_uid: bool = False) -> Account | None:
    """`user`'s entry in the CT's /etc/passwd (read through its root); `by_uid`: a number
    matches the uid too, as `vzctl run --user 1000` means it."""
    for fields in _rows(view.read_or_empty("/etc/passwd")):
        if len(fields) >= 7 and fields[2].isdigit() and (fields[0] == user or (by_uid and fields[2] == user)):
            return Account(fields[0], int(fields[2]), int(fields[3]), fields[5])
    return None


def find_group(view: RootView, group: str) -> int | None:
    """The gid of `group` (a name or a gid) in the CT's /etc/group."""
    for fields in _rows(view.read_or_empty("/etc/group")):
        if len(fields) >= 3 and fields[2].isdigit() and group in (fields[0], fields[2]):
            return int(fields[2])
    return None


def _rows(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip()]


def _append(text: str, line: str) -> str:
    return (text if text.endswith("\n") or not text else text + "\n") + line + "\n"


def _shadow_gid(view: RootView) -> int:
    for fields in _rows(view.read_or_empty("/etc/group")):
        if fields[0] == "shadow" and len(fields) > 2 and fields[2].isdigit():
            return int(fields[2])
    return 0


def _days_since_epoch() -> int:
    import time

    return int(time.time() // 86400)
