"""OpenVZ's precreated templates: a plain directory of `NAME.tar.gz` (or `.tar.xz`) archives,
each with its detached GPG signature `NAME.tar.gz.asc` beside it, and no index.json.

Such a repository is read as a directory: through file:// (or a plain path) by listing it,
through http(s) from the web server's own directory listing (the links in its HTML page).
No checksum is published, so the signature is what vouches for an archive, and it is
checked against the host's trusted keyring like every other download (GPG_CHECK=yes, the
default). Once checked, the archive gets a manifest made from its own /etc/os-release, as
`vztmpl import` makes one, and is installed into the cache the usual way.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyvz.templates.repository import IndexEntry

SUFFIXES = (".tar.gz", ".tar.xz")  # what OpenVZ published
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_HREF_RE = re.compile(r"""href\s*=\s*["']([^"'#?]+)["']""", re.IGNORECASE)
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "x86": "i386", "i386": "i386", "i686": "i386"}


def _entry(filename: str, size: int) -> IndexEntry | None:
    suffix = next((s for s in SUFFIXES if filename.endswith(s)), None)
    if suffix is None:
        return None
    name = filename[: -len(suffix)]
    if not _NAME_RE.fullmatch(name) or len(name) > 128:
        return None
    # OpenVZ's names are DISTRIBUTION-VERSION-ARCH[-FLAVOUR]: what the list shows until a
    # download's own os-release says better.
    parts = name.split("-")
    arch = next((_ARCHES[p] for p in parts[2:] if p in _ARCHES), "unknown")
    version = parts[1] if len(parts) > 1 else "unknown"
    return IndexEntry(name, filename, size, "", parts[0], version, arch, "-")


def _pick(found: dict[str, int]) -> list[IndexEntry]:
    """One entry per template (.tar.gz before .tar.xz), sizes where they are known (-1 not)."""
    entries: dict[str, IndexEntry] = {}
    for filename in sorted(found, key=lambda f: (f, not f.endswith(".tar.gz"))):
        entry = _entry(filename, found[filename])
        if entry is not None and entry.name not in entries:
            entries[entry.name] = entry
    return sorted(entries.values(), key=lambda e: e.name)


def list_directory(directory: Path) -> list[IndexEntry]:
    found = {}
    for item in os.scandir(directory):
        if item.is_file():
            found[item.name] = item.stat().st_size
    return _pick(found)


def parse_listing(page: str) -> list[IndexEntry]:
    """The templates a web server's directory listing links to (files in that directory)."""
    found = {}
    for href in _HREF_RE.findall(page):
        target = unquote(html.unescape(href)).removeprefix("./")
        if "/" in target.rstrip("/") or urlsplit(target).scheme:
            continue  # elsewhere: not a file of this directory
        found[target] = -1
    return _pick(found)
