"""The template repository format: what `vztmpl publish` writes and `vztmpl-dl` reads.

A repository is a plain directory, served by any web server (or read through file://):

    index.json                  the list of templates (below)
    NAME.tar.zst                the archive (or .tar.xz, .tar.gz, .tar)
    NAME.tar.zst.asc            its detached GPG signature
    NAME.manifest.json          its manifest (pyvz.templates.manifest)

index.json is

    {"format": 1,
     "templates": [{"name": "debian-12-amd64-minbase", "archive": "debian-12-amd64-minbase.tar.zst",
                    "size": 123456, "sha256": "<64 hex digits>", "distribution": "debian",
                    "version": "12", "architecture": "amd64", "build_date": "2024-01-01T00:00:00Z"}]}

`archive` is a file name in the same directory: NAME plus one of the archive suffixes, never
a path. A client checks the archive's size and sha256 against both index.json and the
manifest, and its signature against its own trusted keyring, so the web server itself need
not be trusted. docs/template-repository.md describes the same format for people serving one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.atomic import fsync_dir, write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.paths import Paths
from pyvz.templates import cache, gpg
from pyvz.templates.manifest import SUFFIX as MANIFEST_SUFFIX
from pyvz.templates.manifest import Manifest, check_archive

FORMAT = 1
INDEX = "index.json"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


class IndexEntry(NamedTuple):
    """One template as index.json lists it."""

    name: str
    archive: str
    size: int
    sha256: str
    distribution: str
    version: str
    architecture: str
    build_date: str

    @classmethod
    def from_manifest(cls, name: str, archive: str, manifest: Manifest) -> IndexEntry:
        return cls(
            name,
            archive,
            manifest.size,
            manifest.sha256,
            manifest.distribution,
            manifest.version,
            manifest.architecture,
            manifest.build_date,
        )

    @property
    def signature(self) -> str:
        return self.archive + gpg.SIGNATURE_SUFFIX

    @property
    def precreated(self) -> bool:
        """Listed from a directory of OpenVZ precreated templates (templates/precreated.py):
        no index.json, so no checksum and no manifest; the signature vouches for it."""
        return not self.sha256

    @property
    def manifest(self) -> str:
        return self.name + MANIFEST_SUFFIX


def _entry(data: Any, source: str, number: int) -> IndexEntry:
    where = f"{source}: template #{number}"
    if not isinstance(data, dict):
        raise VzError(ExitCode.BAD_TEMPLATE, f"{where} is not an object")
    missing = [field for field in IndexEntry._fields if field not in data]
    if missing:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{where} has no {', '.join(missing)}")
    entry = IndexEntry(**{field: data[field] for field in IndexEntry._fields})
    for field in IndexEntry._fields:
        value = getattr(entry, field)
        wanted = int if field == "size" else str
        if type(value) is not wanted:
            kind = "an integer" if wanted is int else "a string"
            raise VzError(ExitCode.BAD_TEMPLATE, f"{where}: {field} must be {kind}")
    name = entry.name
    if not _NAME_RE.fullmatch(name) or len(name) > 128:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{where}: invalid template name {name!r}")
    # A file name, never a path: a repository must not make a client write outside its cache.
    if entry.archive not in {name + suffix for suffix in cache.SUFFIXES}:
        raise VzError(
            ExitCode.BAD_TEMPLATE, f"{where}: archive {entry.archive!r} is not {name}.tar[.zst|.xz|.gz]"
        )
    if not _SHA_RE.fullmatch(entry.sha256):
        raise VzError(ExitCode.BAD_TEMPLATE, f"{where}: sha256 is not 64 lowercase hex digits")
    if entry.size < 0:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{where}: negative size")
    return entry


def parse_index(text: str, source: str) -> list[IndexEntry]:
    """index.json's templates, checked field by field; `source` names it in errors."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{source}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise VzError(
            ExitCode.BAD_TEMPLATE, f"{source}: not a format-{FORMAT} template index (format: {found!r})"
        )
    templates = data.get("templates")
    if not isinstance(templates, list):
        raise VzError(ExitCode.BAD_TEMPLATE, f'{source}: "templates" must be a list')
    entries = [_entry(item, source, number) for number, item in enumerate(templates, 1)]
    names = [entry.name for entry in entries]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{source}: template {duplicate} is listed twice")
    return entries


def render_index(entries: list[IndexEntry]) -> str:
    templates = [entry._asdict() for entry in sorted(entries, key=lambda e: e.name)]
    return json.dumps({"format": FORMAT, "templates": templates}, indent=2) + "\n"


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _chosen(paths: Paths, names: list[str] | None, allow_unsigned: bool) -> list[cache.Entry]:
    entries = {entry.name: entry for entry in cache.entries(paths)}
    if names is None:
        chosen = [e for e in entries.values() if e.manifest is not None and (e.signed or allow_unsigned)]
        for entry in entries.values():
            if entry not in chosen:
                why = "it has no manifest" if entry.manifest is None else "it is not signed"
                log.info(f"Not publishing {entry.name}: {why}")
        if not chosen:
            raise VzError(
                ExitCode.OSTEMPLATE_NOT_FOUND,
                f"no signed template with a manifest in {paths.template_cache} to publish "
                "(sign one with `vztmpl sign NAME --key KEYID`)",
            )
        return chosen
    chosen = []
    for name in names:
        found = entries.get(name)
        if found is None:
            raise VzError(ExitCode.OSTEMPLATE_NOT_FOUND, f"OS template {name!r} is not in the cache")
        if found.manifest is None:
            raise VzError(
                ExitCode.BAD_TEMPLATE,
                f"{name} has no manifest ({name}{MANIFEST_SUFFIX}); re-import it with `vztmpl import`",
            )
        if not found.signed and not allow_unsigned:
            raise VzError(
                ExitCode.BAD_TEMPLATE,
                f"{name} is not signed and clients check signatures: sign it with "
                f"`vztmpl sign {name} --key KEYID` first",
            )
        chosen.append(found)
    return chosen


def load_index(directory: Path) -> list[IndexEntry]:
    index = directory / INDEX
    try:
        return parse_index(index.read_text(), str(index))
    except FileNotFoundError:
        return []


def publish(
    paths: Paths, names: list[str] | None, directory: Path, allow_unsigned: bool = False
) -> list[IndexEntry]:
    """Copy templates from the cache into a repository directory and rewrite its index.json.

    `names` None publishes every signed template that has a manifest. Templates already in
    the directory's index stay listed; index.json is written last, so a client never sees
    an entry before its files.
    """
    chosen = _chosen(paths, names, allow_unsigned)
    directory.mkdir(parents=True, exist_ok=True)
    listed = {entry.name: entry for entry in load_index(directory)}
    for item in chosen:
        assert item.manifest is not None
        check_archive(item.archive, item.manifest)  # never publish a damaged archive
        entry = IndexEntry.from_manifest(item.name, item.archive.name, item.manifest)
        write_atomic(directory / entry.manifest, item.manifest._replace(name=item.name).to_json())
        signature = gpg.signature_for(item.archive)
        if item.signed:
            _copy_atomic(signature, directory / entry.signature)
        else:
            (directory / entry.signature).unlink(missing_ok=True)
        _copy_atomic(item.archive, directory / entry.archive)
        old = listed.get(item.name)
        if old is not None and old.archive != entry.archive:  # e.g. .tar.xz replaced by .tar.zst
            (directory / old.archive).unlink(missing_ok=True)
            (directory / old.signature).unlink(missing_ok=True)
        listed[item.name] = entry
        log.info(f"Published {item.name} ({entry.archive}, {entry.size} bytes)")
    entries = list(listed.values())
    write_atomic(directory / INDEX, render_index(entries))
    fsync_dir(directory)
    return entries
