"""`vztmpl import` and `vztmpl export`: moving templates in and out of the cache.

A file travels with its signature (FILE.asc) and manifest (NAME.manifest.json) beside it.
Import checks the signature by default; an archive without a manifest gets one made from
its own /etc/os-release.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.params import parse_template_name
from pyvz.paths import Paths
from pyvz.run import run
from pyvz.templates import cache, gpg
from pyvz.templates.manifest import Manifest, check_archive, load, path_for, sha256_file


def _split(file: Path) -> tuple[str, str]:
    for suffix in cache.SUFFIXES:
        if file.name.endswith(suffix):
            return file.name[: -len(suffix)], suffix
    raise VzError(ExitCode.BAD_TEMPLATE, f"{file.name}: not a .tar, .tar.zst, .tar.xz or .tar.gz archive")


def _os_release(archive: Path) -> dict[str, str]:
    for member in ("./usr/lib/os-release", "./etc/os-release", "usr/lib/os-release", "etc/os-release"):
        result = run(["tar", "-xOf", str(archive), member], check=False)
        if result.returncode == 0 and result.stdout.strip():
            return {
                m.group(1): m.group(2).strip("\"'")
                for m in re.finditer(r"^([A-Z_]+)=(.*)$", result.stdout, re.MULTILINE)
            }
    return {}


def made_manifest(archive: Path, name: str) -> Manifest:
    release = _os_release(archive)
    return Manifest(
        name=name,
        distribution=release.get("ID", "unknown"),
        version=release.get("VERSION_ID", "unknown"),
        architecture="unknown",
        build_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(archive.stat().st_mtime)),
        sha256=sha256_file(archive),
        size=archive.stat().st_size,
    )


def import_archive(paths: Paths, file: Path, name: str | None, gpg_check: bool = True) -> str:
    if not file.is_file():
        raise VzError(ExitCode.OSTEMPLATE_NOT_FOUND, f"{file} does not exist")
    stem, _suffix = _split(file)
    name = parse_template_name(name or stem)
    signature = gpg.signature_for(file)
    if gpg_check:
        gpg.verify(file, signature, cache.keyring(paths))
    else:
        log.warning(f"importing {file.name} without checking its signature (--no-gpg-check)")
    if run(["tar", "-tf", str(file)], check=False).returncode != 0:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{file.name} is not a readable tar archive")
    manifest = load(path_for(file.parent, stem))
    if manifest is not None:
        check_archive(file, manifest)
    else:
        manifest = made_manifest(file, name)
    cache.install(paths, name, file, manifest, signature if signature.exists() else None)
    return name


def export_archive(paths: Paths, name: str, file: Path) -> None:
    archive = cache.require(paths, name)
    stem, suffix = _split(archive)
    if not file.name.endswith(suffix):
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"{file.name}: {name} is a {suffix} archive; name it *{suffix}"
        )
    if not file.parent.is_dir():
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{file.parent} is not a directory")
    partial = file.with_name(f".{file.name}.partial")
    manifest_target = path_for(file.parent, _split(file)[0])
    try:
        shutil.copyfile(archive, partial)
        manifest = load(path_for(paths.template_cache, name))
        # What travels with the file is exactly what the cache has: no stale .asc or manifest
        # from an earlier export may stay beside it.
        if manifest is not None:
            check_archive(partial, manifest)
            shutil.copyfile(path_for(paths.template_cache, name), manifest_target)
        else:
            manifest_target.unlink(missing_ok=True)
        if gpg.signature_for(archive).exists():
            shutil.copyfile(gpg.signature_for(archive), gpg.signature_for(file))
        else:
            gpg.signature_for(file).unlink(missing_ok=True)
        partial.replace(file)
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot export to {file}: {err.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
