"""The template cache: $ROOT/var/lib/vz/template/cache/NAME.tar.{zst,xz,gz}."""

from __future__ import annotations

from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths

SUFFIXES = (".tar.zst", ".tar.xz", ".tar.gz", ".tar")
EMBEDDED = "busybox"


def find(paths: Paths, name: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = paths.template_cache / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def available(paths: Paths) -> list[str]:
    names = set()
    if paths.template_cache.is_dir():
        for entry in paths.template_cache.iterdir():
            for suffix in SUFFIXES:
                if entry.name.endswith(suffix) and not entry.name.startswith("."):
                    names.add(entry.name[: -len(suffix)])
    return sorted(names | {EMBEDDED})


def require(paths: Paths, name: str) -> Path:
    """The archive for `name`; the embedded busybox template is built on first use."""
    archive = find(paths, name)
    if archive is not None:
        return archive
    if name == EMBEDDED:
        from pyvz.templates.busybox import build

        return build(paths)
    raise VzError(
        ExitCode.OSTEMPLATE_NOT_FOUND,
        f"OS template {name!r} not found in {paths.template_cache} "
        f"(available: {', '.join(available(paths))})",
    )
