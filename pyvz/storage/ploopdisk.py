"""A ploop disk as its DiskDescriptor.xml describes it, and the top snapshot's view of it.

DiskDescriptor.xml lists the image files (`<StorageData><Storage><Image>`, each a GUID and a
file) and the snapshot tree (`<Snapshots><Shot>`, each a GUID and its ParentGUID, rooted at
the all-zero GUID). The disk as the CT last saw it is `<TopGUID>`'s image over its parent's,
and so on down to the base: a cluster comes from the topmost image that has it, and a cluster
no image has reads as zeros. Snapshots off that chain are other branches and are not read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

from pyvz.errors import ExitCode, VzError
from pyvz.storage.ploopfmt import (
    FLAG_VERSION_CONVERT,
    MAX_CLUSTER,
    MIN_CLUSTER,
    SECTOR,
    Delta,
    PloopDelta,
    RawDelta,
    damaged,
)

DESCRIPTOR = "DiskDescriptor.xml"
TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"  # ploop's fixed GUID for the top delta
NONE_GUID = "{00000000-0000-0000-0000-000000000000}"  # the base image's parent
MAX_DESCRIPTOR = 1 << 20  # a real one is ~1 KB per snapshot
MAX_IMAGES = 4096
_GUID = re.compile(r"\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}")


def _bad(path: Path, what: str) -> VzError:
    return VzError(ExitCode.MOUNT_IMAGE, f"{path} is damaged: {what}")


@dataclass(frozen=True)
class Descriptor:
    path: Path
    size: int | None  # Disk_size, bytes
    cluster: int  # Blocksize, bytes
    preallocated: bool
    raw: bool  # the base image is "Plain": the disk itself, with no ploop header
    images: dict[str, Path]  # GUID -> image file
    parents: dict[str, str]  # snapshot GUID -> its parent's GUID
    top: str

    def chain(self) -> list[tuple[str, Path]]:
        """The images the top snapshot reads, top first; a cycle or a gap is an error."""
        chain: list[tuple[str, Path]] = []
        seen: set[str] = set()
        guid = self.top
        while guid != NONE_GUID:
            if guid in seen:
                raise _bad(self.path, f"the snapshot chain loops back to {guid}")
            seen.add(guid)
            image = self.images.get(guid)
            if image is None:
                raise _bad(self.path, f"snapshot {guid} has no image")
            parent = self.parents.get(guid)
            if parent is None:
                raise _bad(self.path, f"image {guid} is not in the snapshot list")
            chain.append((guid, image))
            guid = parent
        files = [image for _guid, image in chain]
        if len(set(files)) != len(files):
            raise _bad(self.path, "two snapshots of the chain name the same image file")
        return chain


def _text(element: ElementTree.Element | None) -> str | None:
    return None if element is None or element.text is None else element.text.strip()


def _number(path: Path, element: ElementTree.Element | None, name: str) -> int | None:
    text = _text(element)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 20:
        raise _bad(path, f"{name} {text!r} is not a number")
    return int(text)


def _guid(path: Path, text: str | None, what: str) -> str:
    if text is None:
        raise _bad(path, f"{what} is missing")
    guid = text.lower()
    if not _GUID.fullmatch(guid):
        raise _bad(path, f"{what} {text!r} is not a GUID")
    return guid


def _image_file(path: Path, text: str | None) -> Path:
    """An image named by the descriptor: a file in the descriptor's own directory, as ploop
    keeps them. Anything else (another directory, a device) is refused: the descriptor is
    read as untrusted input, and it must not steer reads to other files of the host."""
    if not text:
        raise _bad(path, "an <Image> has no <File>")
    directory = path.parent.resolve()
    file = (directory / text).resolve()
    if file.parent != directory:
        raise _bad(path, f"image file {text!r} is outside {directory}")
    return file


def parse_descriptor(path: Path, data: bytes) -> Descriptor:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _bad(path, "it declares a DTD or entities, which DiskDescriptor.xml never has")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise _bad(path, f"not XML ({err})") from None
    params = root.find("Disk_Parameters")
    if params is None:
        raise _bad(path, "<Disk_Parameters> is missing")
    if params.find("Encryption") is not None:
        raise VzError(ExitCode.PLOOP_UNSUP, f"{path}: the disk is encrypted, which pyvz cannot read")
    size = _number(path, params.find("Disk_size"), "Disk_size")
    data_node = root.find("StorageData")
    if data_node is None:
        raise _bad(path, "<StorageData> is missing")
    if data_node.find("Volume") is not None:
        raise VzError(ExitCode.PLOOP_UNSUP, f"{path}: ploop volumes (<Volume>) are not supported")
    storages = data_node.findall("Storage")
    if len(storages) != 1:
        raise _bad(
            path, f"{len(storages)} <Storage> elements (a disk has one; split disks are not supported)"
        )
    storage = storages[0]
    blocksize = _number(path, storage.find("Blocksize"), "Blocksize")
    if blocksize is None:
        raise _bad(path, "<Blocksize> is missing")
    cluster = blocksize * SECTOR
    if not (MIN_CLUSTER <= cluster <= MAX_CLUSTER) or cluster & (cluster - 1):
        raise _bad(path, f"Blocksize {blocksize} is not a power of two from 64 to 131072 sectors")
    preallocated = _number(path, storage.find("Preallocated"), "Preallocated") or 0
    if preallocated > 1:
        raise _bad(path, f"Preallocated {preallocated} is neither 0 nor 1")
    images: dict[str, Path] = {}
    raw = False
    elements = storage.findall("Image")
    if not elements or len(elements) > MAX_IMAGES:
        raise _bad(path, f"{len(elements)} images (1 to {MAX_IMAGES} expected)")
    for element in elements:
        guid = _guid(path, _text(element.find("GUID")), "an image's GUID")
        if guid in images:
            raise _bad(path, f"image {guid} is listed twice")
        raw = raw or _text(element.find("Type")) == "Plain"
        images[guid] = _image_file(path, _text(element.find("File")))
    if raw and preallocated:
        raise _bad(path, "a Plain image cannot be Preallocated")
    snapshots = root.find("Snapshots")
    if snapshots is None:
        raise _bad(path, "<Snapshots> is missing")
    parents: dict[str, str] = {}
    for shot in snapshots.findall("Shot"):
        guid = _guid(path, _text(shot.find("GUID")), "a snapshot's GUID")
        if guid in parents:
            raise _bad(path, f"snapshot {guid} is listed twice")
        parents[guid] = _guid(path, _text(shot.find("ParentGUID")), f"snapshot {guid}'s ParentGUID")
    top_text = _text(snapshots.find("TopGUID"))
    # ploop's compatibility with old descriptors: one image and no snapshot list means the
    # image is the fixed top GUID's, standing alone.
    if not parents and len(images) == 1:
        only = next(iter(images))
        parents[only] = NONE_GUID
        top_text = top_text or only
    top = _guid(path, top_text or (TOP_GUID if TOP_GUID in parents else None), "<TopGUID>")
    if top not in parents:
        raise _bad(path, f"top snapshot {top} is not in the snapshot list")
    if len(images) != len(parents):
        raise _bad(path, f"{len(images)} images but {len(parents)} snapshots")
    return Descriptor(
        path, None if size is None else size * SECTOR, cluster, bool(preallocated), raw, images, parents, top
    )


def read_descriptor(path: Path) -> Descriptor:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DESCRIPTOR + 1)
    except FileNotFoundError:
        raise VzError(ExitCode.NO_PRIVATE, f"{path} does not exist: not a ploop private area") from None
    except OSError as err:
        raise VzError(ExitCode.MOUNT_IMAGE, f"cannot read {path}: {err.strerror}") from None
    if len(data) > MAX_DESCRIPTOR:
        raise _bad(path, f"larger than {MAX_DESCRIPTOR} bytes")
    return parse_descriptor(path, data)


class Extent(NamedTuple):
    """A run of the virtual disk: `length` bytes at `start` that are `offset` onwards in
    delta number `delta` (top = 0), or zeros when `delta` is None."""

    start: int
    length: int
    delta: int | None
    offset: int


class Disk:
    """The top snapshot's view of a ploop disk, read-only. Close it (or use `with`)."""

    def __init__(self, descriptor: Descriptor, *, allow_dirty: bool = False) -> None:
        self.descriptor = descriptor
        self.cluster = descriptor.cluster
        self.deltas: list[Delta] = []
        try:
            chain = descriptor.chain()
            for index, (_guid, file) in enumerate(chain):
                base = index == len(chain) - 1
                delta = RawDelta(file, self.cluster) if descriptor.raw and base else PloopDelta(file)
                self.deltas.append(delta)
                self._check(delta, allow_dirty)
            self.size = self.deltas[0].size
            if descriptor.size is not None and descriptor.size > self.size:
                raise _bad(
                    descriptor.path, f"Disk_size {descriptor.size} is larger than the top image's disk"
                )
        except BaseException:
            self.close()
            raise

    def _check(self, delta: Delta, allow_dirty: bool) -> None:
        if not isinstance(delta, PloopDelta):
            return
        if delta.cluster != self.cluster:
            raise damaged(delta.path, f"cluster size {delta.cluster} differs from Blocksize {self.cluster}")
        if delta.header.flags & FLAG_VERSION_CONVERT:
            raise damaged(
                delta.path, "a format conversion was interrupted (run `ploop check` on the OpenVZ host)"
            )
        if delta.header.in_use and not allow_dirty:
            raise VzError(
                ExitCode.MOUNT_IMAGE,
                f"ploop image {delta.path} is in use or was not closed cleanly: stop the CT on its "
                "OpenVZ host (or run `ploop check` there) first",
            )

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for delta in self.deltas:
            delta.close()

    def _cluster(self, vcluster: int) -> tuple[int | None, int, int]:
        """(delta, offset, bytes there) for one virtual cluster; (None, 0, 0) for zeros."""
        for index, delta in enumerate(self.deltas):
            offset = delta.locate(vcluster)
            if offset is not None:
                return index, offset, min(self.cluster, delta.file_size - offset)
        return None, 0, 0

    def extents(self, start: int = 0, end: int | None = None) -> Iterator[Extent]:
        """[start, end) of the virtual disk as merged runs, in order."""
        end = self.size if end is None else min(end, self.size)
        run: Extent | None = None
        position = start
        while position < end:
            vcluster, within = divmod(position, self.cluster)
            delta, offset, available = self._cluster(vcluster)
            step = min(self.cluster - within, end - position)
            if delta is not None and within >= available:
                delta = None  # past the end of a short raw base image
            elif delta is not None:
                step = min(step, available - within)
                offset += within
            piece = Extent(position, step, delta, offset if delta is not None else 0)
            if (
                run is not None
                and run.delta == piece.delta
                and (piece.delta is None or run.offset + run.length == piece.offset)
            ):
                run = run._replace(length=run.length + step)
            else:
                if run is not None:
                    yield run
                run = piece
            position += step
        if run is not None:
            yield run

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the virtual disk (fewer at its end)."""
        parts = []
        for extent in self.extents(offset, offset + length):
            if extent.delta is None:
                parts.append(bytes(extent.length))
            else:
                parts.append(self.deltas[extent.delta].pread(extent.length, extent.offset))
        return b"".join(parts)


def open_private(private: Path, *, allow_dirty: bool = False) -> Disk:
    """The ploop disk of an OpenVZ private area (PRIVATE/root.hdd/DiskDescriptor.xml)."""
    directory = private / "root.hdd"
    if not directory.is_dir():
        raise VzError(ExitCode.NO_PRIVATE, f"{private} has no root.hdd directory: not a ploop private area")
    return Disk(read_descriptor(directory / DESCRIPTOR), allow_dirty=allow_dirty)
