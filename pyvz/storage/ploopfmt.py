"""The ploop1 image format, read as untrusted input and never written.

A ploop image ("delta") starts with a 64-byte header followed by the BAT: one little-endian
u32 per virtual cluster, saying where in this file that cluster's data is (0: not here, look
in the parent delta). Version 1 stores the offset in 512-byte sectors, version 2 in clusters.
The header and BAT fill the first `FirstBlockOffset` sectors; data clusters follow. The
header counts as the first 16 BAT slots, so virtual cluster k is slot k + 16.

A raw ("Plain") base image is the disk itself, byte for byte.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from pyvz.errors import ExitCode, VzError

SECTOR = 512
_HEADER = struct.Struct("<16sIIIIIQIIIQ")  # ploop_pvd_header, packed
SIGNATURES = {b"WithoutFreeSpace": 1, b"WithouFreSpacExt": 2}
IMAGE_TYPE = 2  # PRL_IMAGE_COMPRESSED: every ploop1 delta says this
DISK_IN_USE = 0x746F6E59  # set while an image is open for writing; cleared by a clean close
FLAG_VERSION_CONVERT = 0x2  # a v1<->v2 conversion was interrupted
MAP_OFFSET = _HEADER.size // 4
MIN_CLUSTER, MAX_CLUSTER = 32 << 10, 64 << 20  # what ploop itself accepts
# 64 Mi clusters (64 TiB at the usual 1 MiB): validating that many slots takes ~20 s; a header
# that claims more is either damaged or a disk far beyond what a CT's private area holds.
MAX_CLUSTERS = 1 << 26


def damaged(path: Path, what: str) -> VzError:
    return VzError(ExitCode.MOUNT_IMAGE, f"ploop image {path} is damaged: {what}")


@dataclass(frozen=True)
class Header:
    version: int  # 1 or 2
    cluster: int  # bytes
    clusters: int  # BAT entries: the virtual disk's size in clusters
    size: int  # the virtual disk, bytes
    first_block: int  # bytes taken by header + BAT (a whole number of clusters)
    in_use: bool
    flags: int


def parse_header(data: bytes, file_size: int, path: Path) -> Header:
    """The header of a delta of `file_size` bytes, checked against itself and the file."""
    if len(data) < _HEADER.size or file_size < _HEADER.size:
        raise damaged(path, f"{file_size} bytes is too short for a ploop header")
    sig, kind, _heads, _cyls, sectors, clusters, size_field, in_use, first, flags, _ext = _HEADER.unpack_from(
        data
    )
    version = SIGNATURES.get(sig)
    if version is None:
        raise VzError(ExitCode.MOUNT_IMAGE, f"{path} is not a ploop image (signature {sig!r})")
    if kind != IMAGE_TYPE:
        raise damaged(path, f"image type {kind} (ploop1 images are type {IMAGE_TYPE})")
    cluster = sectors * SECTOR
    if not (MIN_CLUSTER <= cluster <= MAX_CLUSTER) or cluster & (cluster - 1):
        raise damaged(path, f"cluster size {sectors} sectors is not a power of two from 64 to 131072")
    size_sectors = size_field & 0xFFFFFFFF if version == 1 else size_field
    if first == 0 or first % sectors:
        raise damaged(path, f"first data block at sector {first} is not a whole number of clusters")
    if clusters == 0 or clusters > MAX_CLUSTERS:
        raise damaged(path, f"{clusters} clusters is out of range (1 to {MAX_CLUSTERS})")
    if size_sectors == 0 or size_sectors > clusters * sectors:
        raise damaged(path, f"disk size {size_sectors} sectors does not fit {clusters} clusters")
    if (MAP_OFFSET + clusters) * 4 > first * SECTOR:
        raise damaged(path, f"a BAT of {clusters} entries does not fit before sector {first}")
    if first * SECTOR > file_size:
        raise damaged(path, f"truncated: the BAT ends at byte {first * SECTOR}, the file at {file_size}")
    return Header(
        version, cluster, clusters, size_sectors * SECTOR, first * SECTOR, in_use == DISK_IN_USE, flags
    )


def _open_read_only(path: Path) -> int:
    """O_NOATIME where allowed (we own the file or are root): reading leaves no trace."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:
        return os.open(path, flags)


class Delta:
    """One image of a chain, open read-only. `locate` maps a virtual cluster to a byte
    offset in this file, or None when the cluster is not in this image."""

    path: Path
    cluster: int
    size: int  # the virtual disk as this image sees it, bytes
    file_size: int

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = _open_read_only(path)
        except FileNotFoundError:
            raise VzError(ExitCode.NO_PRIVATE, f"ploop image {path} does not exist") from None
        except OSError as err:
            raise VzError(ExitCode.MOUNT_IMAGE, f"cannot open ploop image {path}: {err.strerror}") from None
        try:
            st = os.fstat(self.fd)
            if not (st.st_mode & 0o170000 == 0o100000):
                raise VzError(ExitCode.MOUNT_IMAGE, f"ploop image {path} is not a regular file")
            self.file_size = st.st_size
            self._open()
        except BaseException:
            os.close(self.fd)
            raise

    def _open(self) -> None:
        raise NotImplementedError

    def locate(self, vcluster: int) -> int | None:
        raise NotImplementedError

    def pread(self, length: int, offset: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise damaged(self.path, f"short read of {length} bytes at {offset}")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PloopDelta(Delta):
    """A ploop1 image (expanded or preallocated, version 1 or 2)."""

    header: Header

    def _open(self) -> None:
        self.header = parse_header(os.pread(self.fd, _HEADER.size, 0), self.file_size, self.path)
        self.cluster = self.header.cluster
        self.size = self.header.size
        if sys.byteorder != "little":
            raise VzError(ExitCode.PLOOP_UNSUP, "reading ploop images needs a little-endian host")
        # A read-only shared mapping: the BAT is paged in from the file, not copied to the heap,
        # and the mapping cannot write (PROT_READ).
        self._map = mmap.mmap(self.fd, self.header.first_block, mmap.MAP_SHARED, mmap.PROT_READ)
        self._bat = memoryview(self._map).cast("I")
        self._check_bat()

    def slot(self, vcluster: int) -> int:
        return int(self._bat[MAP_OFFSET + vcluster])

    def _offset(self, entry: int) -> int:
        return entry * SECTOR if self.header.version == 1 else entry * self.cluster

    def _check_bat(self) -> None:
        """Every mapped cluster must lie whole inside the file, after the BAT, and be mapped once."""
        header = self.header
        per_cluster = self.cluster // SECTOR
        data_clusters = self.file_size // self.cluster
        seen = bytearray((data_clusters + 7) // 8)
        bat = self._bat
        for vcluster in range(header.clusters):
            entry = bat[MAP_OFFSET + vcluster]
            if not entry:
                continue
            if header.version == 1 and entry % per_cluster:
                raise damaged(self.path, f"BAT entry {vcluster} (sector {entry}) is not cluster-aligned")
            offset = self._offset(entry)
            if offset < header.first_block:
                raise damaged(self.path, f"BAT entry {vcluster} points into the header")
            if offset + self.cluster > self.file_size:
                raise damaged(self.path, f"BAT entry {vcluster} points beyond the end of the file")
            index = offset // self.cluster
            if seen[index >> 3] & (1 << (index & 7)):
                raise damaged(self.path, f"BAT entry {vcluster} maps a cluster that another entry maps")
            seen[index >> 3] |= 1 << (index & 7)

    def locate(self, vcluster: int) -> int | None:
        if vcluster >= self.header.clusters:
            return None  # a parent made before the disk grew
        entry = self._bat[MAP_OFFSET + vcluster]
        return self._offset(entry) if entry else None

    def close(self) -> None:
        if self.fd >= 0:
            self._bat.release()
            self._map.close()
        super().close()


class RawDelta(Delta):
    """A "Plain" base image: the disk itself."""

    def __init__(self, path: Path, cluster: int) -> None:
        self.cluster = cluster
        super().__init__(path)

    def _open(self) -> None:
        if self.file_size % SECTOR:
            raise damaged(self.path, f"a raw image of {self.file_size} bytes is not whole sectors")
        self.size = self.file_size

    def locate(self, vcluster: int) -> int | None:
        offset = vcluster * self.cluster
        return offset if offset < self.file_size else None
