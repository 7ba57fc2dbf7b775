"""StreamChecker: streams built here break each rule once and are fed whole, a byte at a time
and in random splits; as root, real `btrfs send` streams from a loop-file btrfs pass (full,
incremental, reflinked copies, protocol 1 and 2, compressed data), arrive through
`btrfs receive --chroot`, and the checker's speed on a 200 MB stream is printed."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import subprocess
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.migrate.sendstream import MAGIC, MAX_COMMAND, Attr, Cmd, StreamChecker

NEW = uuidlib.UUID("11111111-2222-4333-8444-555555555555")  # the subvolume a stream creates
PARENT = uuidlib.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")  # one this transfer brought
FOREIGN = uuidlib.UUID("99999999-8888-4777-8666-555555555555")  # another CT's, never allowed

# ---- a small encoder (btrfs-progs Documentation/dev/dev-send-stream.rst) -------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC = _crc_table()


def crc32c(data: bytes) -> int:
    """btrfs's: Castagnoli, seed 0, no final inversion (so `btrfs receive` takes our streams)."""
    crc = 0
    for byte in data:
        crc = _CRC[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def tlv(attr: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("<HH", attr, len(raw)) + raw


def u64(attr: int, value: int) -> bytes:
    return tlv(attr, struct.pack("<Q", value))


def data(payload: bytes, version: int) -> bytes:
    """The DATA attribute: sized in v1, in v2 a bare type running to the end of the command."""
    return tlv(Attr.DATA, payload) if version == 1 else struct.pack("<H", Attr.DATA) + payload


def command(cmd: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    crc = crc32c(struct.pack("<IHI", len(body), cmd, 0) + body)
    return struct.pack("<IHI", len(body), cmd, crc) + body


def header(version: int = 1) -> bytes:
    return MAGIC + struct.pack("<I", version)


def stream(*commands: bytes, version: int = 1) -> bytes:
    return header(version) + b"".join(commands)


def subvol(name: str = "101", own: uuidlib.UUID = NEW) -> bytes:
    return command(Cmd.SUBVOL, tlv(Attr.PATH, name), tlv(Attr.UUID, own.bytes), u64(Attr.CTRANSID, 7))


def snapshot(parent: uuidlib.UUID, name: str = "101", own: uuidlib.UUID = NEW) -> bytes:
    return command(
        Cmd.SNAPSHOT,
        tlv(Attr.PATH, name),
        tlv(Attr.UUID, own.bytes),
        u64(Attr.CTRANSID, 9),
        tlv(Attr.CLONE_UUID, parent.bytes),
        u64(Attr.CLONE_CTRANSID, 7),
    )


def on(cmd: int, path: str | bytes, *attrs: bytes) -> bytes:
    return command(cmd, tlv(Attr.PATH, path), *attrs)


def write(path: str, payload: bytes, version: int = 1, offset: int = 0) -> bytes:
    return on(Cmd.WRITE, path, u64(Attr.FILE_OFFSET, offset), data(payload, version))


def clone(path: str, source: uuidlib.UUID, source_path: str = "etc/passwd") -> bytes:
    return on(
        Cmd.CLONE,
        path,
        u64(Attr.FILE_OFFSET, 0),
        u64(Attr.CLONE_LEN, 4096),
        tlv(Attr.CLONE_UUID, source.bytes),
        u64(Attr.CLONE_CTRANSID, 7),
        tlv(Attr.CLONE_PATH, source_path),
        u64(Attr.CLONE_OFFSET, 0),
    )


def end() -> bytes:
    return command(Cmd.END)


def utimes(path: str) -> bytes:
    times = [tlv(a, struct.pack("<QI", 1700000000, 0)) for a in (Attr.ATIME, Attr.MTIME, Attr.CTIME)]
    return on(Cmd.UTIMES, path, *times)


def body(version: int = 1) -> list[bytes]:
    """What a real full stream holds after its SUBVOL, as the kernel orders it."""
    ino = [u64(Attr.INO, 257)]
    cmds = [
        on(Cmd.SET_XATTR, "", tlv(Attr.XATTR_NAME, "user.root"), tlv(Attr.XATTR_DATA, b"1")),
        on(Cmd.CHOWN, "", u64(Attr.UID, 100000), u64(Attr.GID, 100000)),
        on(Cmd.CHMOD, "", u64(Attr.MODE, 0o755)),
        on(Cmd.MKDIR, "o257-7-0", *ino),
        on(Cmd.RENAME, "o257-7-0", tlv(Attr.PATH_TO, "etc")),
        on(Cmd.MKFILE, "o258-7-0", *ino),
        on(Cmd.RENAME, "o258-7-0", tlv(Attr.PATH_TO, "etc/passwd")),
        write("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n" * 200, version),
        on(Cmd.MKFILE, "o259-7-0", *ino),
        on(Cmd.RENAME, "o259-7-0", tlv(Attr.PATH_TO, "etc/passwd-")),
        clone("etc/passwd-", NEW),  # a reflinked copy within the subvolume itself
        on(Cmd.LINK, "etc/passwd.hard", tlv(Attr.PATH_LINK, "etc/passwd")),
        # a symlink's target is only its text: it may point anywhere
        on(Cmd.SYMLINK, "etc/localtime", *ino, tlv(Attr.PATH_LINK, "/usr/share/zoneinfo/UTC")),
        on(Cmd.SYMLINK, "etc/up", *ino, tlv(Attr.PATH_LINK, "../../../..")),
        on(Cmd.MKFIFO, "etc/.fifo", *ino),
        on(Cmd.MKNOD, "etc/null", *ino, u64(Attr.MODE, 0o20666), u64(Attr.RDEV, 0x103)),
        on(Cmd.TRUNCATE, "etc/passwd", u64(Attr.SIZE, 8192)),
        on(Cmd.REMOVE_XATTR, "", tlv(Attr.XATTR_NAME, "user.old")),
        utimes(""),
        utimes("etc"),
    ]
    if version >= 2:
        cmds += [
            on(Cmd.FALLOCATE, "etc/passwd", tlv(Attr.FALLOCATE_MODE, b"\0\0\0\0"), u64(Attr.SIZE, 1)),
            on(
                Cmd.ENCODED_WRITE,
                "etc/passwd",
                u64(Attr.FILE_OFFSET, 0),
                u64(Attr.UNENCODED_FILE_LEN, 4096),
                u64(Attr.UNENCODED_LEN, 4096),
                u64(Attr.UNENCODED_OFFSET, 0),
                tlv(Attr.COMPRESSION, b"\1\0\0\0"),
                data(os.urandom(3000), version),
            ),
            on(Cmd.FILEATTR, "", u64(Attr.FILEATTR, 0)),
        ]
    return cmds


def full(version: int = 1) -> bytes:
    return stream(subvol(), *body(version), end(), version=version)


def incremental(version: int = 1) -> bytes:
    return stream(
        snapshot(PARENT),
        on(Cmd.UNLINK, "etc/passwd.hard"),
        on(Cmd.RMDIR, "var/tmp"),
        clone("etc/passwd-", PARENT, "etc/passwd"),  # from the parent: extents shared with it
        write("etc/passwd", b"x" * 70, version, offset=4096),
        on(Cmd.UPDATE_EXTENT, "etc/shadow", u64(Attr.FILE_OFFSET, 0), u64(Attr.SIZE, 4096)),
        utimes(""),
        end(),
        version=version,
    )


# ---- feeding --------------------------------------------------------------------------------

MODES = ["whole", "bytewise", "random"]


def pieces(raw: bytes, mode: str, seed: int = 0) -> Iterator[bytes]:
    if mode == "whole":
        yield raw
    elif mode == "bytewise":
        yield from (raw[i : i + 1] for i in range(len(raw)))
    else:
        rng = random.Random(seed)
        pos = 0
        while pos < len(raw):
            step = rng.choice([0, 1, 2, 3, 5, 9, 10, 11, 17, 64, 200, 4096])
            yield raw[pos : pos + step]
            pos += step


def check(
    raw: bytes,
    allowed: set[str] | None = None,
    name: str = "101",
    mode: str = "whole",
    taken: set[str] | None = None,
) -> StreamChecker:
    checker = StreamChecker(name, allowed or set(), taken or set())
    for piece in pieces(raw, mode):
        checker.feed(piece)
    checker.finish()
    return checker


def refused(raw: bytes, allowed: set[str] | None = None, mode: str = "whole") -> str:
    with pytest.raises(VzError) as err:
        check(raw, allowed, mode=mode)
    assert err.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert "\n" not in err.value.message
    return err.value.message


# ---- valid streams --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", [1, 2])
def test_full_stream_passes(version: int, mode: str) -> None:
    checker = check(full(version), mode=mode)
    assert checker.uuid == str(NEW)
    assert checker.parent_uuid is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", [1, 2])
def test_incremental_stream_passes(version: int, mode: str) -> None:
    checker = check(incremental(version), {str(PARENT)}, mode=mode)
    assert (checker.uuid, checker.parent_uuid) == (str(NEW), str(PARENT))


@pytest.mark.parametrize("version", [1, 2])
def test_every_split_in_two_and_random_splits(version: int) -> None:
    raw = full(version)
    for cut in range(len(raw) + 1):
        checker = StreamChecker("101", set())
        checker.feed(raw[:cut])
        checker.feed(raw[cut:])
        checker.finish()
        assert checker.uuid == str(NEW)
    for seed in range(50):
        checker = StreamChecker("101", set())
        for piece in pieces(raw, "random", seed):
            checker.feed(piece)
        checker.finish()
        assert checker.uuid == str(NEW)


@pytest.mark.parametrize("mode", MODES)
def test_file_data_is_not_read_as_attributes(mode: str) -> None:
    # Payloads that look like a PATH "../x" are data: v2's DATA runs to the end of its
    # command, v1's has a length; either way nothing in it is parsed.
    fake = tlv(Attr.PATH, "../x") + tlv(Attr.PATH_TO, "/etc")
    for version in (1, 2):
        raw = stream(subvol(), write("f", fake * 3, version), end(), version=version)
        assert check(raw, mode=mode).uuid == str(NEW)


def test_big_writes_across_chunks() -> None:
    payload = os.urandom(65000)
    for version in (1, 2):
        raw = stream(
            subvol(), *(write("f", payload, version, i << 16) for i in range(40)), end(), version=version
        )
        for size in (1000, 4096, 65536, 65546, 1 << 20):
            checker = StreamChecker("101", set())
            for pos in range(0, len(raw), size):
                checker.feed(raw[pos : pos + size])
            checker.finish()
            assert checker.uuid == str(NEW)
        with pytest.raises(VzError, match="ends inside a command"):
            check(raw[:-20000], mode="random")


def test_clone_sources_own_and_allowed() -> None:
    raw = stream(subvol(), clone("a", NEW), clone("b", PARENT, "usr/lib/x.so"), end())
    assert check(raw, {str(PARENT)}).uuid == str(NEW)
    assert f"CLONE copies from {PARENT}" in refused(raw)


def test_a_uuid_already_on_the_pool_cannot_be_claimed() -> None:
    # The parent is on the pool too: only the stream's own UUID must be new.
    assert check(incremental(), {str(PARENT)}, taken={str(PARENT), str(FOREIGN)}).uuid == str(NEW)
    for raw in (full(), incremental()):
        with pytest.raises(VzError, match=f"claims UUID {NEW}, which a subvolume here already has"):
            check(raw, {str(PARENT)}, taken={str(NEW).upper()})


def test_allowed_uuids_are_read_as_uuids() -> None:
    # Any spelling Python's uuid reads; empty strings (streams that were no subvolume) ignored.
    spelled = "{" + str(PARENT).upper() + "}"
    assert check(incremental(), {spelled, ""}).parent_uuid == str(PARENT)
    with pytest.raises(VzError, match="bad subvolume UUID"):
        StreamChecker("101", {"not-a-uuid"})


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_bad_expected_names(name: str) -> None:
    with pytest.raises(VzError, match="bad subvolume name"):
        StreamChecker(name, set())


def test_uuid_unknown_until_the_subvolume_command() -> None:
    checker = StreamChecker("101", set())
    checker.feed(header() + subvol()[:-1])
    with pytest.raises(VzError, match="has not named its subvolume yet"):
        _ = checker.uuid
    checker.feed(subvol()[-1:])
    assert checker.uuid == str(NEW) and checker.parent_uuid is None


def test_refusal_sticks() -> None:
    checker = StreamChecker("101", set())
    with pytest.raises(VzError) as first:
        checker.feed(stream(subvol("102")))
    with pytest.raises(VzError) as again:
        checker.feed(end())
    assert again.value.message == first.value.message
    with pytest.raises(VzError) as again:
        checker.finish()
    assert again.value.message == first.value.message


# ---- each rule broken -----------------------------------------------------------------------

START = [subvol()]
MKFILE = Cmd.MKFILE
INO = u64(Attr.INO, 300)

# (id, commands after the header, the allowed UUIDs, what the message says). The bad
# command is always the last one before END (which is added), so the refusal must come no
# later than that command's last byte: before the relay forwards it.
BAD: list[tuple[str, list[bytes], set[str], str]] = [
    ("wrong-name", [subvol("102")], set(), "creates subvolume '102', not '101'"),
    ("name-below", [subvol("x/101")], set(), "creates subvolume 'x/101'"),
    ("name-with-nul", [subvol("101\0")], set(), "creates subvolume '101\\x00'"),
    ("mkdir-first", [on(Cmd.MKDIR, "a", INO)], set(), "begins with MKDIR"),
    ("end-first", [end()], set(), "begins with END"),
    ("second-subvol", [*START, on(MKFILE, "a", INO), subvol(own=PARENT)], set(), "a second subvolume '101'"),
    ("second-snapshot", [*START, snapshot(NEW, "102")], {str(NEW)}, "a second subvolume '102'"),
    ("foreign-parent", [snapshot(FOREIGN)], {str(PARENT)}, f"snapshot of {FOREIGN}, a subvolume this"),
    ("foreign-clone", [*START, clone("a", FOREIGN)], {str(PARENT)}, f"CLONE copies from {FOREIGN}"),
    ("parent-not-own-clone", [*START, clone("a", PARENT)], set(), f"CLONE copies from {PARENT}"),
    ("dotdot", [*START, on(MKFILE, "../x", INO)], set(), "MKFILE's path '../x' has a '..' component"),
    ("dotdot-inside", [*START, on(Cmd.WRITE, "a/../../x")], set(), "has a '..' component"),
    ("dotdot-alone", [*START, on(Cmd.RMDIR, "..")], set(), "RMDIR's path '..' has a '..'"),
    ("absolute", [*START, on(Cmd.TRUNCATE, "/etc/passwd")], set(), "'/etc/passwd' is absolute"),
    ("absolute-root-cmd", [*START, utimes("/")], set(), "UTIMES's path '/' is absolute"),
    ("dot-component", [*START, on(MKFILE, "a/./b", INO)], set(), "has an empty or '.' component"),
    ("empty-component", [*START, on(MKFILE, "a//b", INO)], set(), "has an empty or '.' component"),
    ("trailing-slash", [*START, on(MKFILE, "a/", INO)], set(), "has an empty or '.' component"),
    ("nul", [*START, on(MKFILE, b"a\0/../../x", INO)], set(), "contains a NUL byte"),
    ("empty-mkfile", [*START, on(MKFILE, "", INO)], set(), "MKFILE's path is empty"),
    ("empty-write", [*START, write("", b"x")], set(), "WRITE's path is empty"),
    ("empty-rename", [*START, on(Cmd.RENAME, "", tlv(Attr.PATH_TO, "x"))], set(), "RENAME's path is empty"),
    (
        "rename-out",
        [*START, on(Cmd.RENAME, "a", tlv(Attr.PATH_TO, "../a"))],
        set(),
        "RENAME's path_to '../a'",
    ),
    ("rename-to-empty", [*START, on(Cmd.RENAME, "a", tlv(Attr.PATH_TO, ""))], set(), "path_to is empty"),
    (
        "link-from-outside",
        [*START, on(Cmd.LINK, "a", tlv(Attr.PATH_LINK, "../102/etc/shadow"))],
        set(),
        "LINK's path_link '../102/etc/shadow' has a '..'",
    ),
    ("link-no-source", [*START, on(Cmd.LINK, "a")], set(), "LINK's path_link is missing"),
    ("clone-path-out", [*START, clone("a", NEW, "../../etc/shadow")], set(), "CLONE's clone_path '../../etc"),
    (
        "clone-no-path",
        [*START, on(Cmd.CLONE, "a", tlv(Attr.CLONE_UUID, NEW.bytes))],
        set(),
        "CLONE has no clone_path",
    ),
    ("clone-no-uuid", [*START, on(Cmd.CLONE, "a", tlv(Attr.CLONE_PATH, "b"))], set(), "no valid clone_uuid"),
    (
        "snapshot-short-uuid",
        [
            command(
                Cmd.SNAPSHOT,
                tlv(Attr.PATH, "101"),
                tlv(Attr.UUID, NEW.bytes),
                tlv(Attr.CLONE_UUID, b"x" * 15),
            )
        ],
        set(),
        "SNAPSHOT has no valid clone_uuid",
    ),
    ("subvol-no-uuid", [command(Cmd.SUBVOL, tlv(Attr.PATH, "101"))], set(), "SUBVOL has no valid uuid"),
    ("no-path", [*START, command(MKFILE, INO)], set(), "MKFILE has no path"),
    # receive acts on the last of repeated attributes: a second PATH would slip past
    ("path-twice", [*START, on(MKFILE, "a", tlv(Attr.PATH, "../a"))], set(), "MKFILE has PATH twice"),
    (
        "path-after-v1-data",
        [*START, on(Cmd.WRITE, "a", tlv(Attr.DATA, b"xyz"), tlv(Attr.PATH, "../a"))],
        set(),
        "WRITE has PATH twice",
    ),
    (
        "unknown-command",
        [*START, command(30, tlv(Attr.PATH, "a"))],
        set(),
        "command 30 is not one a version 1",
    ),
    ("command-0", [*START, command(0)], set(), "command UNSPEC is not one"),
    ("v2-command-in-v1", [*START, on(Cmd.FALLOCATE, "a")], set(), "command FALLOCATE is not one a version 1"),
    ("unknown-attr", [*START, on(MKFILE, "a", tlv(40, b""))], set(), "attribute of unknown type 40"),
    ("attr-0", [*START, on(MKFILE, "a", tlv(0, b""))], set(), "attribute of unknown type 0"),
    ("v2-attr-in-v1", [*START, on(MKFILE, "a", u64(Attr.FILEATTR, 0))], set(), "unknown type 26"),
    (
        "attr-overrun",
        [*START, command(MKFILE, struct.pack("<HH", Attr.PATH, 10) + b"abc")],
        set(),
        "MKFILE's PATH runs past the command",
    ),
    (
        "attr-header-cut-1",
        [*START, command(MKFILE, tlv(Attr.PATH, "a"), b"\x03")],
        set(),
        "inside an attribute",
    ),
    ("attr-header-cut-3", [*START, command(MKFILE, tlv(Attr.PATH, "a"), b"\x03\0\x08")], set(), "inside an"),
]


def forged(cmds: list[bytes]) -> tuple[bytes, int]:
    raw = header() + b"".join(cmds)
    return raw + end(), len(raw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("cmds", "allowed", "says"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_rule_broken(cmds: list[bytes], allowed: set[str], says: str, mode: str) -> None:
    raw, bad_end = forged(cmds)
    assert says in refused(raw, allowed, mode)
    # Refused before the relay could forward the bad command's last byte.
    checker = StreamChecker("101", allowed)
    for i in range(len(raw)):
        try:
            checker.feed(raw[i : i + 1])
        except VzError:
            assert i < bad_end
            break
    else:
        pytest.fail("never refused")


def test_huge_command_refused_on_its_header() -> None:
    raw = header() + subvol() + struct.pack("<IHI", MAX_COMMAND + 1, Cmd.WRITE, 0)
    checker = StreamChecker("101", set())
    with pytest.raises(VzError, match="claims 16777217 bytes"):
        checker.feed(raw)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("tail", "says"),
    [(b"x", "data follows the END command"), (full(), "data follows the END command")],
    ids=["garbage", "second-stream"],
)
def test_nothing_after_end(tail: bytes, says: str, mode: str) -> None:
    assert says in refused(full() + tail, mode=mode)


CUT = [
    ("empty", b"", "ends before its header is complete"),
    ("header-cut", MAGIC[:5], "ends before its header is complete"),
    ("header-only", header(), "creates no subvolume"),
    ("no-end", stream(subvol(), on(MKFILE, "a", INO)), "ends without its END command"),
    ("cut-in-end", full()[:-5], "ends inside a command"),
    ("cut-in-data", stream(subvol(), write("a", b"x" * 1000))[:-100], "ends inside a command"),
    ("cut-after-attr-header", stream(subvol(), write("a", b"x" * 1000))[:-1000], "ends inside a command"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("raw", "says"), [c[1:] for c in CUT], ids=[c[0] for c in CUT])
def test_cut_short(raw: bytes, says: str, mode: str) -> None:
    assert says in refused(raw, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("start", "says"),
    [
        (b"btrfs-streaX\0" + struct.pack("<I", 1), "not a btrfs send stream"),
        (b"btrfs-stream\0\0\0\0\0", "stream version 0 is not supported"),
        (header(3), "stream version 3 is not supported"),
        (b"\0" * 17, "not a btrfs send stream"),
    ],
    ids=["magic", "version-0", "version-3", "zeros"],
)
def test_bad_header(start: bytes, says: str, mode: str) -> None:
    assert says in refused(start + subvol() + end(), mode=mode)


# ---- real streams (root) ----------------------------------------------------------------------


def sh(*argv: str | Path, stdin: int | None = None, stdout: int | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        stdin=stdin,
        stdout=stdout or subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    assert done.returncode == 0, f"{argv}: {done.stderr.decode()}"
    return done.stdout.decode() if done.stdout is not None else ""


@pytest.fixture
def btrfs_mnt(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("btrfs-progs is not installed")
    image = tmp_path / "pool.img"
    with image.open("wb") as f:
        f.truncate(300 << 20)
    sh("mkfs.btrfs", "-q", image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # compress: so that send --compressed-data has extents to send as they are (ENCODED_WRITE)
    sh("mount", "-o", "loop,compress=zstd", image, mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)  # -o loop: the loop device goes too
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def subvol_uuid(path: Path, field: str = "UUID") -> str:
    for line in sh("btrfs", "subvolume", "show", path).splitlines():
        key, _, value = line.strip().partition(":")
        if key == field:
            return value.strip()
    raise AssertionError(f"no {field} in btrfs subvolume show {path}")


def send(out: Path, *args: str | Path) -> bytes:
    with out.open("wb") as f:
        sh("btrfs", "send", "-q", *args, stdout=f.fileno())
    return out.read_bytes()


def dump_commands(raw: Path) -> list[str]:
    with raw.open("rb") as f:
        listing = sh("btrfs", "receive", "--dump", stdin=f.fileno())
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def make_tree(ct: Path) -> None:
    (ct / "etc").mkdir()
    (ct / "usr/lib/deep/er").mkdir(parents=True)
    (ct / "var").mkdir()
    (ct / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (ct / "usr/lib/deep/er/lib.so").write_bytes(os.urandom(256 << 10))
    (ct / "usr/lib/link").symlink_to("deep/er/lib.so")
    (ct / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    os.link(ct / "etc/passwd", ct / "etc/passwd.hard")
    os.setxattr(ct / "etc/passwd", "user.test", b"1")
    os.setxattr(ct, "user.root", b"1")  # on the subvolume root: a SET_XATTR of ""
    with (ct / "var/sparse").open("wb") as f:
        f.truncate(10 << 20)
        f.seek(5 << 20)
        f.write(b"x")
    os.mkfifo(ct / "var/fifo")
    os.chown(ct, 100000, 100000)  # as an idmapped CT's root: a CHOWN of ""
    sh("cp", "--reflink=always", ct / "usr/lib/deep/er/lib.so", ct / "usr/lib/copy.so")


def change_tree(ct: Path) -> None:
    with (ct / "etc/passwd").open("a") as f:
        f.write("daemon:x:1:1::/:/bin/false\n")
    (ct / "etc/passwd.hard").unlink()
    (ct / "usr/lib/link").rename(ct / "usr/lib/link2")
    (ct / "var/sparse").chmod(0o600)
    os.truncate(ct / "var/sparse", 1 << 20)
    os.removexattr(ct, "user.root")
    (ct / "new").mkdir()
    sh("cp", "--reflink=always", ct / "usr/lib/deep/er/lib.so", ct / "new/lib-copy.so")
    (ct / "new/data").write_bytes(b"compressible " * 50000)


@pytest.mark.root
def test_real_streams(btrfs_mnt: Path, tmp_path: Path) -> None:
    ct = btrfs_mnt / "ct"
    sh("btrfs", "subvolume", "create", ct)
    make_tree(ct)
    sh("btrfs", "subvolume", "snapshot", "-r", ct, btrfs_mnt / "s1")
    change_tree(ct)
    sh("btrfs", "subvolume", "snapshot", "-r", ct, btrfs_mnt / "s2")
    s1, s2 = subvol_uuid(btrfs_mnt / "s1"), subvol_uuid(btrfs_mnt / "s2")
    assert subvol_uuid(btrfs_mnt / "s2", "Parent UUID") == subvol_uuid(ct)

    flavours = {"v1": ["--proto", "1"], "v2": ["--proto", "2"], "compressed": ["--compressed-data"]}
    seen: set[str] = set()
    for flavour, flags in flavours.items():
        full_path, incr_path = tmp_path / f"full-{flavour}", tmp_path / f"incr-{flavour}"
        full_raw = send(full_path, *flags, btrfs_mnt / "s1")
        incr_raw = send(incr_path, *flags, "-p", btrfs_mnt / "s1", btrfs_mnt / "s2")
        assert full_raw[13] == (1 if flavour == "v1" else 2)
        seen |= set(dump_commands(full_path)) | set(dump_commands(incr_path))
        for mode in ("whole", "random"):
            checker = check(full_raw, name="s1", mode=mode)
            assert (checker.uuid, checker.parent_uuid) == (s1, None)
            checker = check(incr_raw, {s1}, name="s2", mode=mode)
            assert (checker.uuid, checker.parent_uuid) == (s2, s1)
        with pytest.raises(VzError, match=f"snapshot of {s1}, a subvolume this transfer did not bring"):
            check(incr_raw, {s2}, name="s2")
        with pytest.raises(VzError, match="creates subvolume 's2', not 'other'"):
            check(incr_raw, {s1}, name="other")
    # the commands these streams were meant to exercise did appear
    assert {"clone", "link", "symlink", "set_xattr", "remove_xattr", "encoded_write", "truncate"} <= seen

    # End to end, as the receiver does it: each chunk checked before it goes on to
    # `btrfs receive -e -C` in a directory of its own; the parent is found by received UUID.
    recv = btrfs_mnt / "recv"
    recv.mkdir()
    received: dict[str, str] = {}
    for name, raw in (("s1", tmp_path / "full-v1"), ("s2", tmp_path / "incr-v1")):
        checker = StreamChecker(name, set(received.values()))
        receive = subprocess.Popen(
            ["btrfs", "receive", "-q", "-e", "-C", str(recv)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert receive.stdin is not None
        with raw.open("rb") as f:
            while chunk := f.read(1 << 20):
                checker.feed(chunk)
                receive.stdin.write(chunk)
        checker.finish()
        receive.stdin.close()
        assert receive.wait() == 0, receive.stderr.read() if receive.stderr else ""
        received[name] = checker.uuid
        assert subvol_uuid(recv / name, "Received UUID") == checker.uuid
    for path in ("etc/passwd", "new/lib-copy.so", "new/data", "usr/lib/copy.so"):
        assert _digest(recv / "s2" / path) == _digest(btrfs_mnt / "s2" / path), path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relay(raw: bytes, checker: StreamChecker, into: Path) -> None:
    """The receiver's way: check, then hand to `btrfs receive -e -C`."""
    checker.feed(raw)
    checker.finish()
    done = subprocess.run(["btrfs", "receive", "-q", "-e", "-C", str(into)], input=raw, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def pool_uuids(mnt: Path) -> set[str]:
    """Every subvolume's UUID and received UUID."""
    words = sh("btrfs", "subvolume", "list", "-uR", mnt).split()
    return {
        words[i + 1] for i, w in enumerate(words) if w in ("uuid", "received_uuid") and words[i + 1] != "-"
    }


@pytest.mark.root
def test_a_claimed_uuid_would_reach_another_ct(btrfs_mnt: Path) -> None:
    # CT 102 arrived earlier: its subvolume has the sender's UUID as its received UUID.
    sh("btrfs", "subvolume", "create", btrfs_mnt / "src")
    (btrfs_mnt / "src/secret").write_text("CT 102's\n")
    sh("btrfs", "subvolume", "snapshot", "-r", btrfs_mnt / "src", btrfs_mnt / "src.snap")
    (btrfs_mnt / "private").mkdir()
    raw = send(btrfs_mnt.parent / "ct102", btrfs_mnt / "src.snap")
    relay(raw, StreamChecker("src.snap", set()), btrfs_mnt / "private")
    victim = uuidlib.UUID(subvol_uuid(btrfs_mnt / "private/src.snap", "Received UUID"))

    # A hostile sender's first stream claims that UUID, its second is a "snapshot" of it.
    claim = stream(subvol("a", victim), end())
    steal = stream(snapshot(victim, "b", uuidlib.uuid4()), end())
    # Negative control: with the UUID rules alone both pass, and receive finds CT 102.
    (btrfs_mnt / "evil").mkdir()
    first = StreamChecker("a", set())
    relay(claim, first, btrfs_mnt / "evil")
    relay(steal, StreamChecker("b", {first.uuid}), btrfs_mnt / "evil")
    assert (btrfs_mnt / "evil/b/secret").read_text() == "CT 102's\n"
    # With the pool's UUIDs taken, the claim is refused at its first command.
    checker = StreamChecker("a", set(), pool_uuids(btrfs_mnt))
    with pytest.raises(VzError, match=f"claims UUID {victim}, which a subvolume here already has"):
        checker.feed(claim[: len(header()) + len(subvol("a", victim))])


@pytest.mark.root
def test_throughput_on_a_real_stream(
    btrfs_mnt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = btrfs_mnt / "ct"
    sh("btrfs", "subvolume", "create", ct)
    rng = random.Random(1)
    text = b"".join(b"%08d compressible, like most of a CT's big files\n" % i for i in range(20000))
    # A CT's mix: thousands of small files (random, so compression leaves them as they are)
    # and a few big ones (compressible: the 300 MB pool holds them in a fraction of that).
    for d in range(60):
        (ct / f"usr/d{d}").mkdir(parents=True)
        for f in range(100):
            (ct / f"usr/d{d}/f{f}.so").write_bytes(os.urandom(min(int(rng.expovariate(1 / 12000)), 1 << 20)))
    with (ct / "big").open("wb") as out:
        for _ in range((130 << 20) // len(text)):
            out.write(text)
    sh("btrfs", "subvolume", "snapshot", "-r", ct, btrfs_mnt / "s1")
    raw = send(tmp_path / "stream", btrfs_mnt / "s1")
    assert len(raw) > 180 << 20
    for size in (1 << 20, 1 << 16):
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        best = float("inf")
        for _ in range(3):
            checker = StreamChecker("s1", set())
            started = time.perf_counter()
            for chunk in chunks:
                checker.feed(chunk)
            checker.finish()
            best = min(best, time.perf_counter() - started)
        with capsys.disabled():
            print(
                f"\nStreamChecker: {len(raw) / best / 1e6:.0f} MB/s on a {len(raw) >> 20} MiB"
                f" stream, {size >> 10} KiB chunks"
            )
