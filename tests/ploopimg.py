"""ploop images for tests, written from the format's description (no ploop tool exists here).

A disk is built as a raw file first: a GPT with one partition one cluster in (as ploop lays
it out) holding an ext4 filesystem made by mkfs.ext4 -d from a directory tree. That raw disk
is then cut into ploop1 deltas: an expanded image holds only the clusters that are not all
zeros, in shuffled order (so a reader that assumes identity mapping fails); a preallocated one
holds every cluster in order; a delta on top holds only the clusters that changed.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
SECTOR = 512
CLUSTER = MiB
TOP_GUID = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
NONE_GUID = "{00000000-0000-0000-0000-000000000000}"
SIGNATURES = {1: b"WithoutFreeSpace", 2: b"WithouFreSpacExt"}
LINUX_FS_GUID = uuid.UUID("0fc63daf-8483-4772-8e79-3d47d8e47de4").bytes_le


def new_guid() -> str:
    return "{" + str(uuid.uuid4()) + "}"


# --- raw disks ------------------------------------------------------------------------------


def gpt(disk_size: int, start: int, end: int) -> tuple[bytes, bytes, int]:
    """(LBA 0-33, last 33 LBAs, where those go) of a GPT with one Linux partition [start, end)."""
    sectors = disk_size // SECTOR
    entry = struct.pack(
        "<16s16sQQQ", LINUX_FS_GUID, uuid.uuid4().bytes_le, start // SECTOR, end // SECTOR - 1, 0
    )
    entry += "ploop".encode("utf-16-le").ljust(72, b"\0")
    entries = entry.ljust(128 * 128, b"\0")
    disk_guid = uuid.uuid4().bytes_le

    def header(my_lba: int, alternate: int, entries_lba: int) -> bytes:
        fields = [b"EFI PART", 0x10000, 92, 0, 0, my_lba, alternate, 34, sectors - 34, disk_guid, entries_lba]
        fields += [128, 128, zlib.crc32(entries)]
        raw = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        crc = zlib.crc32(raw)
        return (raw[:16] + struct.pack("<I", crc) + raw[20:]).ljust(SECTOR, b"\0")

    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack(
        "<BBBBBBBBII", 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, min(sectors - 1, 0xFFFFFFFF)
    )
    mbr[510:512] = b"\x55\xaa"
    primary = bytes(mbr) + header(1, sectors - 1, 2) + entries
    backup = entries + header(sectors - 1, 1, sectors - 33)
    return primary, backup, disk_size - len(backup)


def partition_span(disk_size: int, cluster: int = CLUSTER) -> tuple[int, int]:
    """[start, end) of ploop's one partition: from one cluster in to the last whole cluster but one."""
    end = (disk_size - cluster) // cluster * cluster
    return cluster, end


def make_ext4(fs_image: Path, size: int, tree: Path | None) -> None:
    with open(fs_image, "wb") as handle:
        handle.truncate(size)
    argv = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", "-L", "ploopct"]
    if tree is not None:
        argv += ["-d", str(tree)]
    subprocess.run([*argv, str(fs_image)], check=True, capture_output=True)


def embed(disk: Path, disk_size: int, fs_image: Path, cluster: int = CLUSTER) -> None:
    """Write a raw GPT disk of `disk_size` bytes with `fs_image` in its partition (holes kept)."""
    start, end = partition_span(disk_size, cluster)
    assert fs_image.stat().st_size <= end - start
    primary, backup, backup_at = gpt(disk_size, start, end)
    with open(disk, "wb") as out:
        out.truncate(disk_size)
        out.write(primary)
        out.seek(backup_at)
        out.write(backup)
        with open(fs_image, "rb") as src:
            offset = 0
            while chunk := src.read(MiB):
                if chunk.count(0) != len(chunk):
                    out.seek(start + offset)
                    out.write(chunk)
                offset += len(chunk)


def raw_disk(disk: Path, disk_size: int, tree: Path | None) -> Path:
    """A raw disk with an ext4 filesystem of `tree`'s files; returns the filesystem's own image."""
    start, end = partition_span(disk_size)
    fs_image = disk.with_suffix(".fs")
    make_ext4(fs_image, end - start, tree)
    embed(disk, disk_size, fs_image)
    return fs_image


def clusters_of(disk: Path, cluster: int = CLUSTER) -> list[bytes]:
    with open(disk, "rb") as handle:
        return list(iter(lambda: handle.read(cluster), b""))


# --- ploop images ----------------------------------------------------------------------------


def write_delta(
    path: Path,
    clusters: Sequence[bytes],
    include: Iterable[int],
    *,
    version: int = 2,
    cluster: int = CLUSTER,
    shuffle: bool = True,
    size: int | None = None,
    in_use: bool = False,
) -> None:
    """A ploop1 image of a disk whose clusters are `clusters`, holding those in `include`."""
    count = len(clusters)
    size = count * cluster if size is None else size
    header_clusters = -(-(16 + count) * 4 // cluster)
    chosen = sorted(set(include))
    order = list(chosen)
    if shuffle:
        random.Random(len(chosen)).shuffle(order)
    bat = [0] * count
    with open(path, "wb") as out:
        for position, index in enumerate(order):
            physical = header_clusters + position
            bat[index] = physical * (cluster // SECTOR) if version == 1 else physical
            out.seek(physical * cluster)
            out.write(clusters[index].ljust(cluster, b"\0"))
        out.truncate((header_clusters + len(order)) * cluster)
        sectors = cluster // SECTOR
        size_sectors = size // SECTOR
        header = struct.pack(
            "<16sIIIIIQIIIQ",
            SIGNATURES[version],
            2,  # PRL_IMAGE_COMPRESSED
            16,  # heads
            max(1, size_sectors // (16 * sectors)),  # cylinders
            sectors,
            count,
            size_sectors,
            0x746F6E59 if in_use else 0,
            header_clusters * sectors,
            0,
            0,
        )
        out.seek(0)
        out.write(header + struct.pack(f"<{count}I", *bat))


def descriptor(
    images: Sequence[tuple[str, str]],
    *,
    size: int,
    cluster: int = CLUSTER,
    preallocated: bool = False,
    plain: bool = False,
    top: str | None = None,
    parents: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    """DiskDescriptor.xml text for images (GUID, file name) listed base first."""
    guids = [guid for guid, _file in images]
    parents = parents or {guid: (guids[i - 1] if i else NONE_GUID) for i, guid in enumerate(guids)}
    image_xml = "".join(
        f"      <Image>\n        <GUID>{guid}</GUID>\n"
        f"        <Type>{'Plain' if plain else 'Compressed'}</Type>\n"
        f"        <File>{file}</File>\n      </Image>\n"
        for guid, file in images
    )
    shots = "".join(
        f"    <Shot>\n      <GUID>{guid}</GUID>\n      <ParentGUID>{parent}</ParentGUID>\n    </Shot>\n"
        for guid, parent in parents.items()
    )
    sectors = size // SECTOR
    return (
        '<?xml version="1.0"?>\n<Parallels_disk_image>\n  <Disk_Parameters>\n'
        f"    <Disk_size>{sectors}</Disk_size>\n    <Cylinders>{sectors // (16 * 2048)}</Cylinders>\n"
        f"    <Heads>16</Heads>\n    <Sectors>2048</Sectors>\n    <Padding>0</Padding>\n{extra}"
        "  </Disk_Parameters>\n  <StorageData>\n    <Storage>\n      <Start>0</Start>\n"
        f"      <End>{sectors}</End>\n      <Blocksize>{cluster // SECTOR}</Blocksize>\n"
        + ("      <Preallocated>1</Preallocated>\n" if preallocated else "")
        + image_xml
        + "    </Storage>\n  </StorageData>\n  <Snapshots>\n"
        + f"    <TopGUID>{top or guids[-1]}</TopGUID>\n"
        + shots
        + "  </Snapshots>\n</Parallels_disk_image>\n"
    )


@dataclass
class PloopCT:
    private: Path
    expected: Path  # the raw disk the top snapshot must read as

    @property
    def hdd(self) -> Path:
        return self.private / "root.hdd"

    def images(self) -> list[Path]:
        return sorted(self.hdd.iterdir())


def ploop_ct(
    private: Path,
    disk: Path,
    *,
    version: int = 2,
    preallocated: bool = False,
    base: Path | None = None,
    cluster: int = CLUSTER,
) -> PloopCT:
    """An OpenVZ private area (private/root.hdd/...) whose disk reads as raw `disk`.

    With `base`, two deltas: root.hdd is the expanded image of raw disk `base`, and the top
    delta holds only the clusters where `disk` differs from it (a changed cluster that became
    all zeros is still stored: an absent one would show the base's)."""
    hdd = private / "root.hdd"
    hdd.mkdir(parents=True)
    top = clusters_of(disk, cluster)
    size = disk.stat().st_size
    if base is None:
        everything = range(len(top))
        wanted = everything if preallocated else [i for i, c in enumerate(top) if c.count(0) != len(c)]
        write_delta(hdd / "root.hdd", top, wanted, version=version, cluster=cluster, shuffle=not preallocated)
        images = [(TOP_GUID, "root.hdd")]
    else:
        below = clusters_of(base, cluster)
        assert len(below) == len(top)
        base_guid = new_guid()
        write_delta(hdd / "root.hdd", below, [i for i, c in enumerate(below) if c.count(0) != len(c)],
                    version=version, cluster=cluster)  # fmt: skip
        changed = [i for i in range(len(top)) if top[i] != below[i]]
        assert changed, "the top delta must override something"
        write_delta(hdd / f"root.hdd.{base_guid}", top, changed, version=version, cluster=cluster)
        images = [(base_guid, "root.hdd"), (TOP_GUID, f"root.hdd.{base_guid}")]
    (hdd / "DiskDescriptor.xml").write_text(
        descriptor(images, size=size, cluster=cluster, preallocated=preallocated)
    )
    return PloopCT(private, disk)


# --- the files inside ------------------------------------------------------------------------


def populate(tree: Path, *, as_root: bool) -> None:
    """Files of several kinds: owners, modes, xattrs, hard links, a sparse file, a symlink."""
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("ploopct\n")
    secret = tree / "etc/shadow"
    secret.write_text("root:*:19000:0:99999:7:::\n")
    secret.chmod(0o640)
    (tree / "home/user").mkdir(parents=True)
    (tree / "home/user/notes.txt").write_bytes(os.urandom(300_000))
    os.link(tree / "home/user/notes.txt", tree / "home/user/notes.link")
    sparse = tree / "var/lib/sparse.img"
    sparse.parent.mkdir(parents=True)
    with open(sparse, "wb") as handle:
        handle.write(b"start")
        handle.seek(20 * MiB)
        handle.write(b"end")
    os.setxattr(tree / "etc/hostname", "user.origin", b"openvz")
    (tree / "bin").mkdir()
    script = tree / "bin/hello"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o4755)
    os.symlink("../etc/hostname", tree / "bin/hostname-link")
    (tree / "tmp").mkdir(mode=0o1777)
    (tree / "tmp").chmod(0o1777)
    if as_root:
        os.chown(tree / "home/user", 1000, 1000)
        os.chown(tree / "home/user/notes.txt", 1000, 1000)
        os.chown(secret, 0, 42)
        os.chown(script, 0, 0)
        script.chmod(0o4755)  # after chown, which clears set-uid
        os.mkfifo(tree / "tmp/fifo")
        os.mknod(tree / "tmp/null", 0o20666, os.makedev(1, 3))


def copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", "--sparse=always", f"{src}/.", str(dst)], check=True)


def shutil_available(*tools: str) -> bool:
    return all(shutil.which(tool) for tool in tools)
