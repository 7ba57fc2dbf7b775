"""Where the filesystem is on a ploop disk, read through the disk itself.

ploop puts a GPT on its disk with one partition starting one cluster in (1 MiB); very old
images have the filesystem right at the start, with no partition table. The GPT is found by
its signature at LBA 1, at 512- or 4096-byte sectors as ploop looks for it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError

GPT_SIGNATURE = b"EFI PART"
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_GPT_ENTRY = struct.Struct("<16s16sQQQ")
MAX_ENTRIES_BYTES = 1 << 20
EXT_MAGIC = 0xEF53
EXT_INCOMPAT_RECOVER = 0x4  # the journal holds transactions that were never replayed
LUKS_MAGIC = b"LUKS\xba\xbe"

Reader = Callable[[int, int], bytes]


class Filesystem(NamedTuple):
    offset: int  # bytes into the disk
    size: int
    fstype: str  # ext4 or xfs
    dirty: bool  # it needs journal recovery, which a read-only mount skips


def _damaged(where: Path, what: str) -> VzError:
    return VzError(ExitCode.MOUNT_IMAGE, f"the disk of {where} is damaged: {what}")


def _gpt_sector_size(read: Reader, where: Path) -> int | None:
    found = [size for size in (512, 1024, 2048, 4096) if read(size, 8) == GPT_SIGNATURE]
    if len(found) > 1:
        raise _damaged(where, "GPT signatures at more than one sector size")
    return found[0] if found else None


def partition(read: Reader, disk_size: int, where: Path) -> tuple[int, int]:
    """(offset, size) of the disk's first partition, or of the whole disk if it has no GPT."""
    sector = _gpt_sector_size(read, where)
    if sector is None:
        return 0, disk_size
    raw = read(sector, _GPT_HEADER.size)
    fields = _GPT_HEADER.unpack(raw)
    header_size, header_crc, my_lba = fields[2], fields[3], fields[5]
    entries_lba, count, entry_size, entries_crc = fields[10:14]
    if not (_GPT_HEADER.size <= header_size <= sector) or my_lba != 1:
        raise _damaged(where, "the GPT header is malformed")
    header = bytearray(read(sector, header_size))
    header[16:20] = bytes(4)
    if zlib.crc32(header) != header_crc:
        raise _damaged(where, "the GPT header's checksum is wrong")
    if entry_size < _GPT_ENTRY.size or entry_size % 8 or count == 0 or count * entry_size > MAX_ENTRIES_BYTES:
        raise _damaged(where, f"a GPT of {count} entries of {entry_size} bytes")
    if (entries_lba + 1) * sector + count * entry_size > disk_size:
        raise _damaged(where, "the GPT entries lie beyond the disk")
    entries = read(entries_lba * sector, count * entry_size)
    if zlib.crc32(entries) != entries_crc:
        raise _damaged(where, "the GPT entries' checksum is wrong")
    kind, _unique, first_lba, last_lba, _attrs = _GPT_ENTRY.unpack_from(entries, 0)
    if kind == bytes(16):
        raise _damaged(where, "the GPT has no first partition")
    start, end = first_lba * sector, (last_lba + 1) * sector
    if first_lba < 1 or end <= start or end > disk_size:
        raise _damaged(where, f"partition 1 (sectors {first_lba}-{last_lba}) lies outside the disk")
    return start, end - start


def find_filesystem(read: Reader, disk_size: int, where: Path) -> Filesystem:
    """The filesystem of the disk's first partition: ext4 (ext2/3 too) or xfs."""
    offset, size = partition(read, disk_size, where)
    if size < 4096:
        raise _damaged(where, f"partition of {size} bytes holds no filesystem")
    head = read(offset, 2048)
    if head.startswith(LUKS_MAGIC):
        raise VzError(
            ExitCode.PLOOP_UNSUP, f"the disk of {where} is encrypted (LUKS), which pyvz cannot read"
        )
    if head.startswith(b"XFSB"):
        return Filesystem(offset, size, "xfs", False)
    if len(head) == 2048 and struct.unpack_from("<H", head, 1024 + 56)[0] == EXT_MAGIC:
        incompat = struct.unpack_from("<I", head, 1024 + 0x60)[0]
        return Filesystem(offset, size, "ext4", bool(incompat & EXT_INCOMPAT_RECOVER))
    raise VzError(ExitCode.MOUNT_IMAGE, f"the disk of {where} holds no ext4 or xfs filesystem pyvz can read")
