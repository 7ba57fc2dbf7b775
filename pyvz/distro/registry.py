"""Pick the handler for a CT: from its /etc/os-release, else the generic one."""

from __future__ import annotations

import re

from pyvz.distro.base import Distro
from pyvz.rootview import RootView


class Busybox(Distro):
    name = "busybox"
    halt_signal = "SIGUSR2"  # busybox init powers off on USR2 (it ignores SIGPWR)
    boot_probe = ("test", "-e", "/run/boot-complete")


class Debian(Distro):
    name = "debian"
    halt_signal = "SIGRTMIN+3"  # systemd's "halt"
    # Booted once systemd says so; "degraded" is booted too (with a failed unit to look at).
    boot_probe = (
        "sh",
        "-c",
        's=$(systemctl is-system-running --wait 2>/dev/null); [ "$s" = running ] || [ "$s" = degraded ]',
    )


_HANDLERS: dict[str, type[Distro]] = {"busybox": Busybox, "debian": Debian, "ubuntu": Debian}


def os_release_ids(view: RootView) -> list[str]:
    text = view.read_or_empty("/etc/os-release") or view.read_or_empty("/usr/lib/os-release")
    ids: list[str] = []
    for key in ("ID", "ID_LIKE"):
        match = re.search(rf"^{key}=[\"']?([^\"'\n]*)[\"']?$", text, re.MULTILINE)
        if match:
            ids.extend(match.group(1).split())
    return ids


def detect(view: RootView, hint: str | None = None) -> Distro:
    """The handler for the template's distribution (`hint`, from its manifest), else the one
    /etc/os-release names, else the generic one."""
    for distro_id in ([hint] if hint else []) + os_release_ids(view):
        handler = _HANDLERS.get(distro_id)
        if handler:
            return handler()
    return Distro()
