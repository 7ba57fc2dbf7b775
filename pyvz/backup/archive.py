"""Archive file names, compression, and which old archives pruning removes.

An archive is `vzdump-CTID-YYYY_MM_DD-HH_MM_SS.tar.zst` (`.tar.gz`, `.tar.lzo`, `.tar`) with the log of
the run that wrote it beside it (`.log`), as OpenVZ's vzdump named them. While it is being
written it has a hidden partial name, so only complete archives ever carry the real one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError


class Compression(StrEnum):
    ZSTD = "zstd"
    GZIP = "gzip"
    LZO = "lzo"  # Proxmox-era vzdump's `--compress lzo` (lzop), for scripts that say so
    NONE = "none"

    @property
    def suffix(self) -> str:
        return {"zstd": ".tar.zst", "gzip": ".tar.gz", "lzo": ".tar.lzo", "none": ".tar"}[self.value]

    @property
    def compressor(self) -> tuple[str, ...] | None:
        """The command that compresses a tar stream from stdin to stdout."""
        if self is Compression.ZSTD:
            return ("zstd", "-T0", "-q", "-c")  # every core; zstd's default level 3
        if self is Compression.GZIP:
            return ("gzip", "-c")
        if self is Compression.LZO:
            return ("lzop", "-c")  # lzop's default level, as old vzdump ran it
        return None

    @property
    def tar_option(self) -> tuple[str, ...]:
        """How tar reads this compression (it runs the decompressor itself)."""
        if self is Compression.ZSTD:
            return ("--zstd",)
        if self is Compression.GZIP:
            return ("--gzip",)
        if self is Compression.LZO:
            return ("--lzop",)
        return ()

    @property
    def tester(self) -> tuple[str, ...] | None:
        """The decompressor's own integrity check (frame checksums)."""
        if self is Compression.ZSTD:
            return ("zstd", "-t", "-q")
        if self is Compression.GZIP:
            return ("gzip", "-t")
        if self is Compression.LZO:
            return ("lzop", "-t", "-q")
        return None


_STAMP = "%Y_%m_%d-%H_%M_%S"
_NAME_RE = re.compile(r"vzdump-(\d+)-(\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d)(\.tar(?:\.zst|\.gz|\.lzo)?)")
_BY_SUFFIX = {c.suffix: c for c in Compression}


class ArchiveName(NamedTuple):
    ctid: int
    date: datetime  # local time, to the second
    compression: Compression

    @property
    def stem(self) -> str:
        return f"vzdump-{self.ctid}-{self.date.strftime(_STAMP)}"

    @property
    def name(self) -> str:
        return self.stem + self.compression.suffix

    @property
    def log_name(self) -> str:
        return self.stem + ".log"

    @property
    def partial_name(self) -> str:
        return f".{self.name}.partial"

    @classmethod
    def parse(cls, name: str) -> ArchiveName | None:
        """The parts of a complete archive's file name; None for anything else."""
        match = _NAME_RE.fullmatch(name)
        if not match:
            return None
        try:
            date = datetime.strptime(match.group(2), _STAMP)
        except ValueError:
            return None
        return cls(int(match.group(1)), date, _BY_SUFFIX[match.group(3)])


def compression_of(path: Path) -> Compression:
    """How an archive is compressed, from its name (any name ending like ours)."""
    for suffix in sorted(_BY_SUFFIX, key=len, reverse=True):
        if path.name.endswith(suffix):
            return _BY_SUFFIX[suffix]
    raise VzError(
        ExitCode.RESTORE_ERROR,
        f"{path.name} is not a vzdump archive name (expected .tar.zst, .tar.gz, .tar.lzo or .tar)",
    )


def archives_of(dumpdir: Path, ctid: int) -> list[ArchiveName]:
    """The CT's complete archives in `dumpdir`, oldest first."""
    try:
        names = [ArchiveName.parse(entry.name) for entry in dumpdir.iterdir()]
    except FileNotFoundError:
        return []
    return sorted((n for n in names if n is not None and n.ctid == ctid), key=lambda n: n.date)


def partial_leftovers(dumpdir: Path, ctid: int) -> list[Path]:
    """Partial archives of this CT that an interrupted vzdump left behind."""
    try:
        return sorted(dumpdir.glob(f".vzdump-{ctid}-*.partial"))
    except FileNotFoundError:
        return []


def to_prune(
    archives: Iterable[ArchiveName],
    parents: Mapping[str, str | None],
    now: datetime,
    maxfiles: int | None = None,
    max_days: int | None = None,
) -> list[ArchiveName]:
    """Which archives go: beyond the newest `maxfiles`, or older than `max_days`.

    The newest archive always stays, and so does every archive a kept incremental is built
    on (`parents`: archive name -> its parent's name), so pruning never breaks a chain.
    """
    ordered = sorted(archives, key=lambda n: n.date, reverse=True)
    keep = []
    for index, archive in enumerate(ordered):
        too_many = maxfiles is not None and index >= maxfiles
        too_old = max_days is not None and now - archive.date > timedelta(days=max_days)
        if index == 0 or not (too_many or too_old):
            keep.append(archive.name)
    needed = set(keep)
    for name in keep:
        parent = parents.get(name)
        while parent is not None and parent not in needed:
            needed.add(parent)
            parent = parents.get(parent)
    return [a for a in reversed(ordered) if a.name not in needed]
