"""Checking a `btrfs send` stream from another host before `btrfs receive` acts on it.

`btrfs receive` trusts its stream: it finds a SNAPSHOT's parent and a CLONE's source by UUID
anywhere on the filesystem, creates as many subvolumes as the stream names, and joins every
path to the subvolume's directory as it comes. A migration stream comes from another host's
root, so the receiver relays it through a StreamChecker, which reads the commands as they
pass and refuses the stream at the first one that could reach outside the one subvolume it
is meant to create:

- the first command is SUBVOL or SNAPSHOT with the expected name, and no other follows;
- a SNAPSHOT's parent and a CLONE's source are subvolumes this transfer brought (or, for a
  CLONE, the subvolume being received);
- every path `btrfs receive` joins to the subvolume is relative, without '..', '.' or empty
  components and without NUL; only the commands that set the subvolume root's own
  attributes (UTIMES, CHOWN, CHMOD, [REMOVE_|SET_]XATTR, FILEATTR) may name it by "";
- command and attribute numbers are those of the stream's version, and nothing follows END.

Two things the stream cannot show, the receiver must see to:

- where a path leads once symlinks in the tree are followed: `btrfs receive` must run with
  --chroot in a directory holding only this transfer's subvolumes (a CLONE source in one of
  them is opened from outside the chroot, but every walk up from it stops at the chroot);
- which subvolume a UUID finds: receive looks parents and clone sources up by *received*
  UUID, which the sender chose. A stream claiming the received UUID of a CT migrated here
  earlier would make "this transfer's subvolume" find that CT in the next stream, so the
  UUID a stream claims must be new to the pool: pass every subvolume's UUID and received
  UUID (`btrfs subvolume list -uR`) as `taken_uuids`.

The relay calls feed() on each chunk *before* it forwards the chunk: receive acts on a
command only once it holds all of it, and every command that ends in a chunk has been checked
when feed() returns. Data is not copied: WRITE payloads are skipped over, only paths and UUIDs
are kept, and a command split between chunks is followed attribute by attribute.

Format: btrfs-progs Documentation/dev/dev-send-stream.rst and kernel-shared/send.h.
"""

from __future__ import annotations

import os
import struct
import uuid as uuidlib
from collections.abc import Iterable
from enum import IntEnum
from typing import NoReturn

from pyvz.errors import ExitCode, VzError

MAGIC = b"btrfs-stream\0"
VERSIONS = (1, 2)
# No kernel command comes near this (v1 ≤ 64 KiB, v2 ≤ 192 KiB); receive allocates whatever a
# header announces, so a forged 4 GiB length is refused here rather than there.
MAX_COMMAND = 16 << 20


class Cmd(IntEnum):
    UNSPEC = 0
    SUBVOL = 1
    SNAPSHOT = 2
    MKFILE = 3
    MKDIR = 4
    MKNOD = 5
    MKFIFO = 6
    MKSOCK = 7
    SYMLINK = 8
    RENAME = 9
    LINK = 10
    UNLINK = 11
    RMDIR = 12
    SET_XATTR = 13
    REMOVE_XATTR = 14
    WRITE = 15
    CLONE = 16
    TRUNCATE = 17
    CHMOD = 18
    CHOWN = 19
    UTIMES = 20
    END = 21
    UPDATE_EXTENT = 22
    FALLOCATE = 23  # v2 from here on
    FILEATTR = 24
    ENCODED_WRITE = 25


class Attr(IntEnum):
    UUID = 1
    CTRANSID = 2
    INO = 3
    SIZE = 4
    MODE = 5
    UID = 6
    GID = 7
    RDEV = 8
    CTIME = 9
    MTIME = 10
    ATIME = 11
    OTIME = 12
    XATTR_NAME = 13
    XATTR_DATA = 14
    PATH = 15
    PATH_TO = 16
    PATH_LINK = 17
    FILE_OFFSET = 18
    DATA = 19
    CLONE_UUID = 20
    CLONE_CTRANSID = 21
    CLONE_PATH = 22
    CLONE_OFFSET = 23
    CLONE_LEN = 24
    FALLOCATE_MODE = 25  # v2 from here on
    FILEATTR = 26
    UNENCODED_FILE_LEN = 27
    UNENCODED_LEN = 28
    UNENCODED_OFFSET = 29
    COMPRESSION = 30
    ENCRYPTION = 31


# (last command, last attribute) of each version; receive ignores unknown commands, so a
# number it would skip could be anything a later btrfs-progs gives a meaning to.
_LIMITS = {1: (Cmd.UPDATE_EXTENT, Attr.CLONE_LEN), 2: (Cmd.ENCODED_WRITE, Attr.ENCRYPTION)}

# Plain ints for the per-command paths: reading a member off an IntEnum runs Python code.
_SUBVOL, _SNAPSHOT, _END = int(Cmd.SUBVOL), int(Cmd.SNAPSHOT), int(Cmd.END)
_LINK, _CLONE = int(Cmd.LINK), int(Cmd.CLONE)
_UUID, _PATH, _PATH_TO, _PATH_LINK = int(Attr.UUID), int(Attr.PATH), int(Attr.PATH_TO), int(Attr.PATH_LINK)
_DATA, _CLONE_UUID, _CLONE_PATH = int(Attr.DATA), int(Attr.CLONE_UUID), int(Attr.CLONE_PATH)
# The attributes whose values are looked at; everything else (file data, xattr values,
# times, modes) is skipped over. Receive keeps the last of repeated attributes, so these must
# come once: a second PATH after the checked one would be the one acted on.
_KEEP = frozenset({_UUID, _PATH, _PATH_TO, _PATH_LINK, _CLONE_UUID, _CLONE_PATH})
# The commands _command looks at beyond their PATH.
_SPECIAL = frozenset({_SUBVOL, _SNAPSHOT, _END, _LINK, _CLONE})
# Real streams name the subvolume root as "" to set its owner, mode, times and xattrs.
_ROOT_OK = frozenset(
    int(c) for c in (Cmd.UTIMES, Cmd.CHOWN, Cmd.CHMOD, Cmd.SET_XATTR, Cmd.REMOVE_XATTR, Cmd.FILEATTR)
)

_HEADER = struct.Struct("<IHI")  # len, cmd, crc32c
_TLV = struct.Struct("<HH")  # type, len

# Parser states.
_S_MAGIC, _S_CMD, _S_TYPE, _S_LEN, _S_KEEP, _S_SKIP, _S_DONE = range(7)


def _show(value: bytes) -> str:
    text = value[:100].decode("utf-8", "backslashreplace")
    return repr(text + ("..." if len(value) > 100 else ""))


def _plain(path: bytes) -> bool:
    """A quick yes for the usual non-empty path: no '/.', '//' or NUL in it, no '/' or '.' at
    either end. A no only means _path_problem must look closer. find() and `0 in` rather than
    `b"x" in`: bytes.__contains__ first tries its argument as an int, and that failing costs."""
    return (
        path.find(b"/.") < 0
        and path.find(b"//") < 0
        and 0 not in path
        and path[0] not in b"/."
        and path[-1] != 0x2F
    )


def _path_problem(path: bytes) -> str | None:
    """Why `path` could lead outside the directory receive joins it to, or None."""
    if _plain(path):
        return None
    if 0 in path:
        # receive copies the value as a C string: whatever follows the NUL is not what it uses
        return "contains a NUL byte"
    if path.startswith(b"/"):
        return "is absolute"
    framed = b"/" + path + b"/"
    if framed.find(b"/../") >= 0:
        return "has a '..' component"
    if framed.find(b"//") >= 0 or framed.find(b"/./") >= 0:
        return "has an empty or '.' component"
    return None


def _uuid_set(texts: Iterable[str]) -> set[bytes]:
    found = set()
    for text in texts:
        if text:
            try:
                found.add(uuidlib.UUID(text).bytes)
            except ValueError:
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad subvolume UUID {text!r}") from None
    return found


def _cmd_name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return str(cmd)


def _attr_name(attr: int) -> str:
    try:
        return Attr(attr).name
    except ValueError:
        return str(attr)


class StreamChecker:
    """Follows one btrfs send stream and refuses it at the first command that reaches beyond
    the subvolume `expected_name`, with a VzError(INVALID_PARAMETER_VALUE).

    `allowed_uuids` are the subvolumes (by the UUID their own streams gave them) a SNAPSHOT
    may start from and a CLONE may copy extents from; `taken_uuids` are those the stream may
    not claim for its own (the UUIDs and received UUIDs already on the pool). Both in any
    spelling Python's uuid reads; empty strings (for streams that were no subvolume) are
    ignored.
    """

    def __init__(
        self,
        expected_name: str,
        allowed_uuids: Iterable[str],
        taken_uuids: Iterable[str] = (),
    ) -> None:
        name = os.fsencode(expected_name)
        if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad subvolume name {expected_name!r}")
        self._label = expected_name
        self._name = name
        self._allowed = _uuid_set(allowed_uuids)
        self._taken = _uuid_set(taken_uuids)
        self._uuid: bytes | None = None
        self._parent: bytes | None = None
        self._error: str | None = None
        self._v2 = False
        self._max_cmd = 0
        self._max_attr = 0
        self._offset = 0  # stream offset of the next chunk's first byte
        # The parser: which element comes next and how many bytes it takes (for _S_SKIP, how
        # many are left to pass over); _part holds an element split between chunks.
        self._state = _S_MAGIC
        self._need = len(MAGIC) + 4
        self._part = bytearray()
        # The command being followed across chunks.
        self._cmd = 0
        self._cmd_at = 0
        self._left = 0  # bytes of its body after the current element
        self._attr = 0
        self._found: dict[int, bytes] = {}

    # ---- what the stream said ----------------------------------------------------------------

    @property
    def uuid(self) -> str:
        """The UUID the stream gives its subvolume (receive records it as the received UUID)."""
        return str(uuidlib.UUID(bytes=self._named()))

    @property
    def parent_uuid(self) -> str | None:
        """The SNAPSHOT's parent, None for a full stream."""
        self._named()
        return None if self._parent is None else str(uuidlib.UUID(bytes=self._parent))

    def _named(self) -> bytes:
        if self._uuid is None:
            detail = f"btrfs stream {self._label!r} has not named its subvolume yet"
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, detail)
        return self._uuid

    # ---- feeding -----------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Check the next bytes of the stream; raises at the first command that breaks a rule."""
        if self._error is not None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, self._error)
        base = self._offset
        n = len(chunk)
        pos = 0
        while pos < n:
            state = self._state
            if state == _S_CMD and not self._part:
                pos = self._whole_commands(chunk, pos, base)
                if pos >= n:
                    break
                if n - pos >= _HEADER.size:  # the body goes on in the next chunk
                    self._begin(chunk, pos, base + pos)
                    pos += _HEADER.size
                    continue
            elif state == _S_SKIP:
                take = min(self._need, n - pos)
                pos += take
                self._need -= take
                self._left -= take
                if not self._need:
                    self._next_attr()
                continue
            elif state == _S_DONE:
                self._fail(base + pos, "data follows the END command")
            take = min(self._need - len(self._part), n - pos)
            self._part += chunk[pos : pos + take]
            pos += take
            if len(self._part) == self._need:
                piece = bytes(self._part)
                self._part.clear()
                self._element(piece, base + pos - len(piece))
        self._offset = base + n

    def finish(self) -> None:
        """The stream has ended: raises unless it was whole (a subvolume, then END)."""
        if self._error is not None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, self._error)
        if self._state == _S_DONE:
            return
        if self._state == _S_MAGIC:
            self._fail(0, "the stream ends before its header is complete")
        if self._state != _S_CMD or self._part:
            self._fail(self._offset, "the stream ends inside a command")
        if self._uuid is None:
            self._fail(self._offset, "the stream creates no subvolume")
        self._fail(self._offset, "the stream ends without its END command (cut short?)")

    # ---- parsing -----------------------------------------------------------------------------

    def _whole_commands(self, buf: bytes, pos: int, base: int) -> int:
        """Check the commands lying wholly in buf from pos on, in place; return where the first
        one that does not begins (len(buf) after END)."""
        n = len(buf)
        header = _HEADER.unpack_from
        tlv = _TLV.unpack_from
        v2 = self._v2
        max_cmd = self._max_cmd
        max_attr = self._max_attr
        while n - pos >= 10:
            length, cmd, _crc = header(buf, pos)
            at = base + pos
            if not 0 < cmd <= max_cmd or length > MAX_COMMAND:
                self._check_header(cmd, length, at)
            end = pos + 10 + length
            if end > n:
                break
            found: dict[int, bytes] = {}
            p = pos + 10
            while p < end:
                # The same checks, in the same order, as _element's attribute by attribute.
                if end - p >= 4:
                    attr, ln = tlv(buf, p)
                    if attr == _DATA and v2:  # v2: DATA has no length, it runs to the end
                        break
                else:
                    if end - p < 2:
                        self._fail(at, f"{_cmd_name(cmd)} ends inside an attribute header")
                    attr = buf[p] | buf[p + 1] << 8
                    if attr == _DATA and v2:
                        break
                    ln = -1
                if not 0 < attr <= max_attr:
                    self._fail(at, f"{_cmd_name(cmd)} has an attribute of unknown type {attr}")
                if ln < 0:
                    self._fail(at, f"{_cmd_name(cmd)} ends inside an attribute header")
                p += 4 + ln
                if p > end:
                    self._fail(at, f"{_cmd_name(cmd)}'s {_attr_name(attr)} runs past the command")
                if attr in _KEEP:
                    if attr in found:
                        self._fail(at, f"{_cmd_name(cmd)} has {_attr_name(attr)} twice")
                    found[attr] = buf[p - ln : p]
            # Most commands name one plain path: checked here, saving _command's calls.
            path = found.get(_PATH) if len(found) == 1 else None
            if not (path and cmd not in _SPECIAL and self._uuid is not None and _plain(path)):
                self._command(cmd, found, at)
            pos = end
            if self._state == _S_DONE:
                if pos < n:
                    self._fail(base + pos, "data follows the END command")
                return n
        return pos

    def _element(self, piece: bytes, at: int) -> None:
        """One element of the stream, gathered across chunks."""
        state = self._state
        if state == _S_MAGIC:
            if piece[: len(MAGIC)] != MAGIC:
                self._fail(0, "this is not a btrfs send stream (bad magic)")
            version = int.from_bytes(piece[len(MAGIC) :], "little")
            if version not in VERSIONS:
                self._fail(len(MAGIC), f"stream version {version} is not supported (only 1 and 2)")
            self._v2 = version >= 2
            self._max_cmd, self._max_attr = (int(limit) for limit in _LIMITS[version])
            self._state, self._need = _S_CMD, _HEADER.size
        elif state == _S_CMD:
            self._begin(piece, 0, at)
        elif state == _S_TYPE:
            attr = piece[0] | piece[1] << 8
            self._left -= 2
            self._attr = attr
            if attr == _DATA and self._v2:
                self._value(_S_SKIP, self._left)
                return
            if not 0 < attr <= self._max_attr:
                self._fail(self._cmd_at, f"{_cmd_name(self._cmd)} has an attribute of unknown type {attr}")
            if self._left < 2:
                self._fail(self._cmd_at, f"{_cmd_name(self._cmd)} ends inside an attribute header")
            self._state, self._need = _S_LEN, 2
        elif state == _S_LEN:
            ln = piece[0] | piece[1] << 8
            self._left -= 2
            if ln > self._left:
                name = _attr_name(self._attr)
                self._fail(self._cmd_at, f"{_cmd_name(self._cmd)}'s {name} runs past the command")
            if self._attr in _KEEP:
                if self._attr in self._found:
                    name = _attr_name(self._attr)
                    self._fail(self._cmd_at, f"{_cmd_name(self._cmd)} has {name} twice")
                self._value(_S_KEEP, ln)
            else:
                self._value(_S_SKIP, ln)
        else:  # _S_KEEP
            self._left -= len(piece)
            self._found[self._attr] = piece
            self._next_attr()

    def _check_header(self, cmd: int, length: int, at: int) -> None:
        if not 0 < cmd <= self._max_cmd:
            version = 2 if self._v2 else 1
            self._fail(at, f"command {_cmd_name(cmd)} is not one a version {version} stream has")
        if length > MAX_COMMAND:
            self._fail(at, f"{_cmd_name(cmd)} claims {length} bytes, more than any btrfs command")

    def _begin(self, buf: bytes, pos: int, at: int) -> None:
        """A command whose header is here and whose body goes on past this chunk."""
        length, cmd, _crc = _HEADER.unpack_from(buf, pos)
        self._check_header(cmd, length, at)
        self._cmd, self._cmd_at, self._left, self._found = cmd, at, length, {}
        self._next_attr()

    def _value(self, state: int, length: int) -> None:
        if length:
            self._state, self._need = state, length
        else:
            if state == _S_KEEP:
                self._found[self._attr] = b""
            self._next_attr()

    def _next_attr(self) -> None:
        if self._left == 0:
            self._state, self._need = _S_CMD, _HEADER.size
            self._command(self._cmd, self._found, self._cmd_at)
        elif self._left < 2:
            self._fail(self._cmd_at, f"{_cmd_name(self._cmd)} ends inside an attribute header")
        else:
            self._state, self._need = _S_TYPE, 2

    # ---- the rules ---------------------------------------------------------------------------

    def _command(self, cmd: int, found: dict[int, bytes], at: int) -> None:
        """One whole command with the attributes kept from it."""
        if self._uuid is None:
            self._first(cmd, found, at)
            return
        if cmd == _END:
            self._state = _S_DONE
            return
        if cmd in (_SUBVOL, _SNAPSHOT):
            self._fail(at, f"a second subvolume {_show(found.get(_PATH, b''))} (one stream, one subvolume)")
        path = found.get(_PATH)
        if path is None:
            self._fail(at, f"{_cmd_name(cmd)} has no path")
        if path or cmd not in _ROOT_OK:
            self._check_path(cmd, _PATH, path, at)
        if len(found) > 1:
            for attr in (_PATH_TO, _CLONE_PATH):
                other = found.get(attr)
                if other is not None:
                    self._check_path(cmd, attr, other, at)
        if cmd == _LINK:
            # LINK's PATH_LINK is the existing name receive link()s from, a path here;
            # SYMLINK's is only the text the new symlink holds.
            self._check_path(cmd, _PATH_LINK, found.get(_PATH_LINK), at)
        if cmd == _CLONE:
            self._clone(found, at)

    def _first(self, cmd: int, found: dict[int, bytes], at: int) -> None:
        if cmd not in (_SUBVOL, _SNAPSHOT):
            self._fail(at, f"the stream begins with {_cmd_name(cmd)}, not with the subvolume it creates")
        path = found.get(_PATH, b"")
        if path != self._name:
            self._fail(at, f"the stream creates subvolume {_show(path)}, not {self._label!r}")
        own = self._uuid_of(cmd, _UUID, found, at)
        if own in self._taken:
            text = uuidlib.UUID(bytes=own)
            self._fail(at, f"the stream claims UUID {text}, which a subvolume here already has")
        if cmd == _SNAPSHOT:
            parent = self._uuid_of(cmd, _CLONE_UUID, found, at)
            if parent not in self._allowed:
                text = uuidlib.UUID(bytes=parent)
                self._fail(at, f"the stream is a snapshot of {text}, a subvolume this transfer did not bring")
            self._parent = parent
        self._uuid = own

    def _clone(self, found: dict[int, bytes], at: int) -> None:
        source = self._uuid_of(_CLONE, _CLONE_UUID, found, at)
        if _CLONE_PATH not in found:
            self._fail(at, "CLONE has no clone_path")
        if source == self._uuid:
            return  # within the subvolume being received, under receive's chroot
        if source not in self._allowed:
            text = uuidlib.UUID(bytes=source)
            self._fail(at, f"CLONE copies from {text}, a subvolume this transfer did not bring")

    def _uuid_of(self, cmd: int, attr: int, found: dict[int, bytes], at: int) -> bytes:
        value = found.get(attr)
        if value is None or len(value) != 16:
            self._fail(at, f"{_cmd_name(cmd)} has no valid {_attr_name(attr).lower()}")
        return bytes(value)

    def _check_path(self, cmd: int, attr: int, path: bytes | None, at: int) -> None:
        problem: str | None
        if path is None:
            problem = "is missing"
        elif not path:
            problem = "is empty"
        else:
            problem = _path_problem(path)
            if problem is None:
                return
            problem = f"{_show(path)} {problem}"
        self._fail(at, f"{_cmd_name(cmd)}'s {_attr_name(attr).lower()} {problem}")

    def _fail(self, at: int, detail: str) -> NoReturn:
        self._error = f"refused btrfs stream for {self._label!r} at byte {at}: {detail}"
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, self._error)
