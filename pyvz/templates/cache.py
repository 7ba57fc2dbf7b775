"""The template cache: $ROOT/var/lib/vz/template/cache/.

Each template NAME is NAME.tar.{zst,xz,gz} (or .tar), with NAME.tar.zst.asc (a detached GPG
signature) and NAME.manifest.json beside it. A template is installed by writing the
signature and manifest first and renaming the archive into place last, so a template is
only ever visible complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.templates import gpg
from pyvz.templates.manifest import Manifest, check_archive, load, path_for, save

SUFFIXES = (".tar.zst", ".tar.xz", ".tar.gz", ".tar")
EMBEDDED = "busybox"
DEFAULT_KEYRING = "/etc/vz/trusted.gpg"


class Entry(NamedTuple):
    name: str
    archive: Path
    manifest: Manifest | None
    signed: bool


def find(paths: Paths, name: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = paths.template_cache / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _name_of(filename: str) -> str | None:
    for suffix in SUFFIXES:
        if filename.endswith(suffix) and not filename.startswith("."):
            return filename[: -len(suffix)]
    return None


def entries(paths: Paths) -> list[Entry]:
    found = []
    if paths.template_cache.is_dir():
        for entry in sorted(paths.template_cache.iterdir()):
            name = _name_of(entry.name)
            if name is not None and entry.is_file():
                manifest = load(path_for(paths.template_cache, name))
                found.append(Entry(name, entry, manifest, gpg.signature_for(entry).exists()))
    return found


def available(paths: Paths) -> list[str]:
    return sorted({entry.name for entry in entries(paths)} | {EMBEDDED})


def keyring(paths: Paths) -> Path:
    """The trusted keyring: KEYRING in download.conf, else etc/vz/trusted.gpg."""
    from pyvz.config import ConfigFile

    conf_path = paths.etc_vz / "download.conf"
    configured = ConfigFile.load(conf_path).get("KEYRING") if conf_path.exists() else None
    return paths.host(configured or DEFAULT_KEYRING)


def require(paths: Paths, name: str) -> Path:
    """The archive for `name`; the embedded busybox template is built on first use, and
    any other missing one is downloaded (and verified) from download.conf's repositories."""
    archive = find(paths, name)
    if archive is not None:
        return archive
    if name == EMBEDDED:
        from pyvz.templates.busybox import build

        return build(paths)
    from pyvz.templates import download  # only when a template is missing: keeps start-up fast

    if download.settings(paths).repos:
        return download.fetch(paths, name, gpg_check=True)
    raise VzError(
        ExitCode.OSTEMPLATE_NOT_FOUND,
        f"OS template {name!r} not found in {paths.template_cache} "
        f"(available: {', '.join(available(paths))})",
    )


def verify(paths: Paths, name: str) -> str:
    """Check the archive against its manifest and its signature; returns the signer."""
    archive = require(paths, name)
    manifest = load(path_for(paths.template_cache, name))
    if manifest is None:
        raise VzError(ExitCode.BAD_TEMPLATE, f"template {name} has no manifest ({name}.manifest.json)")
    check_archive(archive, manifest)
    return gpg.verify(archive, gpg.signature_for(archive), keyring(paths))


def install(
    paths: Paths, name: str, source: Path, manifest: Manifest, signature: Path | None, move: bool = False
) -> Path:
    """Put a checked archive into the cache under `name`, atomically (archive last)."""
    suffix = next((s for s in SUFFIXES if source.name.endswith(s)), None)
    if suffix is None:
        raise VzError(
            ExitCode.BAD_TEMPLATE, f"{source.name}: not a .tar, .tar.zst, .tar.xz or .tar.gz archive"
        )
    cache = paths.template_cache
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}{suffix}"
    partial = cache / f".{target.name}.partial-{os.getpid()}"
    try:
        if move:
            os.replace(source, partial) if source.parent == cache else shutil.move(source, partial)
        else:
            shutil.copyfile(source, partial)
        check_archive(partial, manifest)
        old = find(paths, name)
        if old is not None and old != target:  # the same template in another compression
            old.unlink()
            gpg.signature_for(old).unlink(missing_ok=True)
        save(path_for(cache, name), manifest._replace(name=name))
        signature_target = gpg.signature_for(target)
        if signature is None:
            signature_target.unlink(missing_ok=True)
        elif not (signature_target.exists() and signature.samefile(signature_target)):
            shutil.copyfile(signature, signature_target)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def remove(paths: Paths, name: str) -> None:
    archive = find(paths, name)
    if archive is None:
        raise VzError(ExitCode.OSTEMPLATE_NOT_FOUND, f"OS template {name!r} is not in the cache")
    archive.unlink()  # the template is gone from here on; the rest is tidying
    gpg.signature_for(archive).unlink(missing_ok=True)
    path_for(paths.template_cache, name).unlink(missing_ok=True)
