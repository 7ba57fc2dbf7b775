"""The ploop reader on images this test writes from the format's description (no root)."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.storage import ploop
from pyvz.storage.partition import Filesystem, find_filesystem, partition
from pyvz.storage.ploopdisk import Disk, open_private, parse_descriptor
from tests import ploopimg as pi

CLUSTER = 64 << 10  # small clusters keep these disks small; the integration tests use 1 MiB
COUNT = 40


def random_disk(path: Path, seed: int, zero: frozenset[int] = frozenset({3, 4, 5, 20})) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for index in range(COUNT):
            out.write(bytes(CLUSTER) if index in zero else rng.randbytes(CLUSTER))
    return path


def make_ct(tmp_path: Path, name: str = "ct", **kwargs: object) -> pi.PloopCT:
    disk = random_disk(tmp_path / f"{name}.raw", 1)
    return pi.ploop_ct(tmp_path / name, disk, cluster=CLUSTER, **kwargs)  # type: ignore[arg-type]


def error_of(private: Path, **kwargs: bool) -> VzError:
    with pytest.raises(VzError) as caught:
        open_private(private, **kwargs).close()
    assert "\n" not in caught.value.message
    return caught.value


@pytest.mark.parametrize(
    "variant", [{}, {"preallocated": True}, {"version": 1}, {"version": 1, "preallocated": True}]
)
def test_reads_the_disk_byte_for_byte(tmp_path: Path, variant: dict[str, object]) -> None:
    ct = make_ct(tmp_path, **variant)
    expected = ct.expected.read_bytes()
    image = ct.hdd / "root.hdd"
    header = image.read_bytes()[:64]
    assert header[:16] == (b"WithoutFreeSpace" if variant.get("version") == 1 else b"WithouFreSpacExt")
    if not variant.get("preallocated"):  # expanded: the zero clusters are not stored
        assert image.stat().st_size == (1 + COUNT - 4) * CLUSTER
    with open_private(ct.private) as disk:
        assert disk.size == len(expected)
        assert disk.read(0, disk.size) == expected
        rng = random.Random(7)
        for _ in range(50):  # reads that straddle clusters, at odd offsets
            offset, length = rng.randrange(len(expected)), rng.randrange(1, 3 * CLUSTER)
            assert disk.read(offset, length) == expected[offset : offset + length]
        assert disk.read(len(expected) - 10, 100) == expected[-10:]


def test_top_delta_overrides_the_base(tmp_path: Path) -> None:
    base = random_disk(tmp_path / "base.raw", 1)
    top = bytearray(base.read_bytes())
    top[7 * CLUSTER : 8 * CLUSTER] = os.urandom(CLUSTER)  # changed
    top[9 * CLUSTER : 10 * CLUSTER] = bytes(CLUSTER)  # changed to zeros: still stored in the top
    top[4 * CLUSTER + 100 : 4 * CLUSTER + 200] = b"x" * 100  # was a hole in the base
    (tmp_path / "top.raw").write_bytes(top)
    ct = pi.ploop_ct(tmp_path / "ct", tmp_path / "top.raw", base=base, cluster=CLUSTER)
    images = sorted(ct.hdd.glob("root.hdd*"))
    assert len(images) == 2
    delta = next(p for p in images if p.name != "root.hdd")
    assert delta.stat().st_size == 4 * CLUSTER  # one header cluster and the three changed ones
    with open_private(ct.private) as disk:
        assert len(disk.deltas) == 2
        assert disk.read(0, disk.size) == bytes(top)
        holders = {e.delta for e in disk.extents() if e.start <= 7 * CLUSTER < e.start + e.length}
        assert holders == {0}


def test_the_chain_walks_top_to_base_and_ignores_other_branches(tmp_path: Path) -> None:
    ct = make_ct(tmp_path)
    text = (ct.hdd / "DiskDescriptor.xml").read_text()
    other = pi.new_guid()
    pi.write_delta(ct.hdd / "root.hdd.other", [b"\xff" * CLUSTER] * COUNT, range(COUNT), cluster=CLUSTER)
    text = text.replace(
        "</Storage>",
        f"<Image><GUID>{other}</GUID><Type>Compressed</Type><File>root.hdd.other</File></Image></Storage>",
    ).replace(
        "</Snapshots>", f"<Shot><GUID>{other}</GUID><ParentGUID>{pi.TOP_GUID}</ParentGUID></Shot></Snapshots>"
    )
    (ct.hdd / "DiskDescriptor.xml").write_text(text)
    with open_private(ct.private) as disk:  # TopGUID still names the top: the branch is not read
        assert disk.read(0, disk.size) == ct.expected.read_bytes()


def interpret(table: list[str], files: dict[str, Path], length: int) -> bytes:
    """What a dm device with this table reads as."""
    out = bytearray()
    for line in table:
        start, count, target, *args = line.split()
        assert int(start) * 512 == len(out), "the table has a gap or an overlap"
        if target == "zero":
            out += bytes(int(count) * 512)
        else:
            assert target == "linear"
            with open(files[args[0]], "rb") as handle:
                handle.seek(int(args[1]) * 512)
                out += handle.read(int(count) * 512)
    assert len(out) == length
    return bytes(out)


def test_dm_table_maps_every_sector_to_the_right_image(tmp_path: Path) -> None:
    base = random_disk(tmp_path / "base.raw", 1)
    top = bytearray(base.read_bytes())
    for index in (2, 3, 11, 12, 13, 30):
        top[index * CLUSTER : (index + 1) * CLUSTER] = os.urandom(CLUSTER)
    (tmp_path / "top.raw").write_bytes(top)
    ct = pi.ploop_ct(tmp_path / "ct", tmp_path / "top.raw", base=base, cluster=CLUSTER)
    with open_private(ct.private) as disk:
        fs = Filesystem(CLUSTER + 4096, 30 * CLUSTER, "ext4", False)  # a partition not on a cluster edge
        devices = {i: f"/dev/loop{50 + i}" for i in range(len(disk.deltas))}
        table = list(ploop.dm_table(disk, fs, devices))
        files = {devices[i]: delta.path for i, delta in enumerate(disk.deltas)}
        assert interpret(table, files, fs.size) == bytes(top[fs.offset : fs.offset + fs.size])
        assert any(line.endswith(" zero") for line in table)
        assert len(table) < 30  # runs are merged, not one line per cluster


# --- untrusted input ------------------------------------------------------------------------


def corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def test_truncated_images(tmp_path: Path) -> None:
    ct = make_ct(tmp_path)
    image = ct.hdd / "root.hdd"
    os.truncate(image, 5 * CLUSTER)  # the BAT still maps clusters that are gone now
    assert "beyond the end of the file" in error_of(ct.private).message
    os.truncate(image, 100)
    error = error_of(ct.private)
    assert error.code == ExitCode.MOUNT_IMAGE and "truncated" in error.message
    os.truncate(image, 10)
    assert "too short" in error_of(ct.private).message


@pytest.mark.parametrize(
    ("offset", "data", "words"),
    [
        (0, b"NotAPloopImage!!", "not a ploop image"),
        (16, struct.pack("<I", 7), "image type 7"),
        (28, struct.pack("<I", 100), "cluster size 100 sectors"),
        (28, struct.pack("<I", 1 << 20), "cluster size"),
        (32, struct.pack("<I", 0), "clusters is out of range"),
        (32, struct.pack("<I", 1 << 30), "clusters is out of range"),
        (36, struct.pack("<Q", 1 << 50), "does not fit"),
        (48, struct.pack("<I", 3), "whole number of clusters"),
        (64 + 4 * 6, struct.pack("<I", 0), None),  # an unmapped cluster is fine: it reads as zeros
        (64 + 4 * 6, struct.pack("<I", 0x7FFFFFFF), "beyond the end of the file"),
    ],
)
def test_damaged_headers(tmp_path: Path, offset: int, data: bytes, words: str | None) -> None:
    ct = make_ct(tmp_path)
    corrupt(ct.hdd / "root.hdd", offset, data)
    if words is None:
        with open_private(ct.private) as disk:
            assert disk.read(6 * CLUSTER, CLUSTER) == bytes(CLUSTER)
        return
    error = error_of(ct.private)
    assert error.code == ExitCode.MOUNT_IMAGE
    assert words in error.message and "root.hdd" in error.message


def test_bat_entries_twice_misaligned_or_into_the_header(tmp_path: Path) -> None:
    ct = make_ct(tmp_path)
    image = ct.hdd / "root.hdd"
    bat = struct.unpack_from(f"<{COUNT}I", image.read_bytes(), 64)
    corrupt(image, 64 + 4 * 1, struct.pack("<I", bat[0]))
    assert "another entry maps" in error_of(ct.private).message

    v1 = make_ct(tmp_path, "v1", version=1)
    first = struct.unpack_from("<I", (v1.hdd / "root.hdd").read_bytes(), 64)[0]
    corrupt(v1.hdd / "root.hdd", 64, struct.pack("<I", first + 1))
    assert "not cluster-aligned" in error_of(v1.private).message

    # 9000 slots at 32 KiB clusters need two header clusters; slot 5 then points at the second.
    big = tmp_path / "big/root.hdd"
    big.mkdir(parents=True)
    pi.write_delta(big / "root.hdd", [b"data"] * 9000, [5], cluster=32 << 10)
    (big / "DiskDescriptor.xml").write_text(
        pi.descriptor([(pi.TOP_GUID, "root.hdd")], size=9000 * (32 << 10), cluster=32 << 10)
    )
    with open_private(big.parent) as disk:
        assert disk.read(5 * (32 << 10), 4) == b"data"
    corrupt(big / "root.hdd", 64 + 4 * 5, struct.pack("<I", 1))
    assert "points into the header" in error_of(big.parent).message


def test_an_image_in_use_is_refused_unless_allowed(tmp_path: Path) -> None:
    ct = make_ct(tmp_path)
    corrupt(ct.hdd / "root.hdd", 44, struct.pack("<I", 0x746F6E59))
    error = error_of(ct.private)
    assert error.code == ExitCode.MOUNT_IMAGE and "not closed cleanly" in error.message
    with open_private(ct.private, allow_dirty=True) as disk:
        assert disk.read(0, disk.size) == ct.expected.read_bytes()
    corrupt(ct.hdd / "root.hdd", 52, struct.pack("<I", 2))
    assert "conversion was interrupted" in error_of(ct.private, allow_dirty=True).message


def descriptor_error(tmp_path: Path, edit: str | bytes, old: str = "") -> VzError:
    ct = make_ct(tmp_path)
    path = ct.hdd / "DiskDescriptor.xml"
    text = path.read_text()
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        path.write_text(text.replace(old, edit) if old else edit)
    return error_of(ct.private)


def test_missing_pieces(tmp_path: Path) -> None:
    assert error_of(tmp_path).code == ExitCode.NO_PRIVATE  # no root.hdd
    (tmp_path / "root.hdd").mkdir()
    error = error_of(tmp_path)
    assert error.code == ExitCode.NO_PRIVATE and "DiskDescriptor.xml" in error.message
    ct = make_ct(tmp_path, "gone")
    (ct.hdd / "root.hdd").unlink()
    error = error_of(ct.private)
    assert error.code == ExitCode.NO_PRIVATE and "does not exist" in error.message


@pytest.mark.parametrize(
    ("old", "new", "code", "words"),
    [
        ("", "not xml at all <", ExitCode.MOUNT_IMAGE, "not XML"),
        ("<Padding>0</Padding>", "<Encryption><KeyId>k</KeyId></Encryption>",
         ExitCode.PLOOP_UNSUP, "encrypted"),
        ("<StorageData>", "<StorageData><Volume><Parent>x</Parent></Volume>",
         ExitCode.PLOOP_UNSUP, "volumes"),
        ("<Blocksize>128</Blocksize>", "<Blocksize>100</Blocksize>", ExitCode.MOUNT_IMAGE, "Blocksize 100"),
        ("<Blocksize>128</Blocksize>", "<Blocksize>-1</Blocksize>", ExitCode.MOUNT_IMAGE, "not a number"),
        ("<Blocksize>128</Blocksize>", "<Blocksize>256</Blocksize>",
         ExitCode.MOUNT_IMAGE, "differs from Blocksize"),
        ("<File>root.hdd</File>", "<File>../../etc/passwd</File>", ExitCode.MOUNT_IMAGE, "is outside"),
        ("<File>root.hdd</File>", "<File>/dev/zero</File>", ExitCode.MOUNT_IMAGE, "is outside"),
        ("<File>root.hdd</File>", "<File></File>", ExitCode.MOUNT_IMAGE, "no <File>"),
        ("<TopGUID>{5fbaabe3", "<TopGUID>{6fbaabe3", ExitCode.MOUNT_IMAGE, "not in the snapshot list"),
        ("<TopGUID>{5fbaabe3-6958-40ff-92a7-860e329aab41}", "<TopGUID>junk",
         ExitCode.MOUNT_IMAGE, "not a GUID"),
        ("<Disk_size>", "<Disk_size>9", ExitCode.MOUNT_IMAGE, "larger than the top image"),
        ("<Snapshots>", "<Snapshots><Shot><GUID>{aaaaaaaa-0000-0000-0000-000000000000}</GUID>"
         "<ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>",
         ExitCode.MOUNT_IMAGE, "1 images but 2 snapshots"),
    ],
)  # fmt: skip
def test_damaged_descriptors(tmp_path: Path, old: str, new: str, code: ExitCode, words: str) -> None:
    error = descriptor_error(tmp_path, new, old)
    assert error.code == code and words in error.message


def test_entities_and_giant_descriptors_are_refused(tmp_path: Path) -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert "entities" in descriptor_error(tmp_path / "a", bomb).message
    assert "larger than" in descriptor_error(tmp_path / "b", b" " * (2 << 20)).message


def chain_descriptor(parents: dict[str, str], top: str) -> bytes:
    images = [(guid, f"root.hdd.{guid}") for guid in parents]
    return pi.descriptor(images, size=COUNT * CLUSTER, cluster=CLUSTER, parents=parents, top=top).encode()


def test_snapshot_chains_that_loop_or_break(tmp_path: Path) -> None:
    a, b, c = pi.new_guid(), pi.new_guid(), pi.new_guid()
    path = tmp_path / "DiskDescriptor.xml"
    cyclic = parse_descriptor(path, chain_descriptor({a: b, b: c, c: a}, a))
    with pytest.raises(VzError, match="loops back"):
        cyclic.chain()
    self_parent = parse_descriptor(path, chain_descriptor({a: a}, a))
    with pytest.raises(VzError, match="loops back"):
        self_parent.chain()
    broken = parse_descriptor(path, chain_descriptor({a: b, c: pi.NONE_GUID}, a))
    with pytest.raises(VzError, match="has no image"):
        broken.chain()
    good = parse_descriptor(path, chain_descriptor({a: b, b: pi.NONE_GUID, c: b}, a))
    assert [guid for guid, _file in good.chain()] == [a, b]


def test_random_damage_never_crashes(tmp_path: Path) -> None:
    """Bytes flipped anywhere in the header or BAT: the disk opens and reads, or a VzError
    says what is wrong. Nothing else escapes, and nothing hangs."""
    ct = make_ct(tmp_path)
    image = ct.hdd / "root.hdd"
    pristine = image.read_bytes()
    rng = random.Random(12)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        damaged = bytearray(pristine)
        for _flip in range(rng.randrange(1, 4)):
            damaged[rng.randrange(64 + 4 * COUNT)] = rng.randrange(256)
        image.write_bytes(damaged)
        try:
            with open_private(ct.private) as disk:
                disk.read(0, disk.size)
            outcomes["read"] += 1
        except VzError as err:
            assert err.code in (ExitCode.MOUNT_IMAGE, ExitCode.PLOOP_UNSUP)
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]


# --- the partition -------------------------------------------------------------------------


def test_gpt_partition_and_filesystem(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    pi.raw_disk(disk, 16 * pi.MiB, None)
    data = bytearray(disk.read_bytes())

    def read(offset: int, length: int) -> bytes:
        return bytes(data[offset : offset + length])

    fs = find_filesystem(read, len(data), tmp_path)
    assert fs == Filesystem(pi.MiB, 14 * pi.MiB, "ext4", False)
    superblock = pi.MiB + 1024
    data[superblock + 0x60] |= 0x4  # needs_recovery
    assert find_filesystem(read, len(data), tmp_path).dirty
    data[1024 + 40] ^= 0xFF  # partition 1's last LBA: the entries' checksum no longer holds
    with pytest.raises(VzError, match="entries' checksum"):
        find_filesystem(read, len(data), tmp_path)
    data[1024 + 40] ^= 0xFF
    data[512 + 40] ^= 0xFF  # the header itself
    with pytest.raises(VzError, match="header's checksum"):
        partition(read, len(data), tmp_path)
    data[512:1024] = bytes(512)  # no GPT at all: the filesystem is expected at the start
    with pytest.raises(VzError, match="no ext4 or xfs") as caught:
        find_filesystem(read, len(data), tmp_path)
    assert caught.value.code == ExitCode.MOUNT_IMAGE
    data[0:6] = b"LUKS\xba\xbe"
    with pytest.raises(VzError, match="encrypted") as caught:
        find_filesystem(read, len(data), tmp_path)
    assert caught.value.code == ExitCode.PLOOP_UNSUP


def test_a_disk_without_gpt_has_its_filesystem_at_the_start(tmp_path: Path) -> None:
    fs_image = tmp_path / "fs.raw"
    pi.make_ext4(fs_image, 8 * pi.MiB, None)
    ct = pi.ploop_ct(tmp_path / "ct", fs_image, cluster=CLUSTER)
    with open_private(ct.private) as disk:
        assert find_filesystem(disk.read, disk.size, ct.private) == Filesystem(0, 8 * pi.MiB, "ext4", False)


def test_a_plain_base_image_is_the_disk_itself(tmp_path: Path) -> None:
    hdd = tmp_path / "root.hdd"
    hdd.mkdir()
    raw = random_disk(hdd / "root.hdd", 3)
    (hdd / "DiskDescriptor.xml").write_text(
        pi.descriptor([(pi.TOP_GUID, "root.hdd")], size=COUNT * CLUSTER, cluster=CLUSTER, plain=True)
    )
    with Disk(
        parse_descriptor(hdd / "DiskDescriptor.xml", (hdd / "DiskDescriptor.xml").read_bytes())
    ) as disk:
        assert disk.read(0, disk.size) == raw.read_bytes()
