"""One read-only file whose bytes a Python function supplies, served over FUSE.

This is how a ploop disk becomes a file a loop device can sit on where the kernel has no
device-mapper (nor nbd, nor ublk): the FUSE protocol is spoken on /dev/fuse directly, so no
FUSE library is needed. The mount is read-only, the file's mode is 0400 and every request
that could change anything is refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.run import run

FILE_NAME = "disk"
_ROOT, _FILE = 1, 2
_IN = struct.Struct("<IIQQIIIHH")  # fuse_in_header
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr
_INIT_IN = struct.Struct("<IIII")
_READ_IN = struct.Struct("<QQI")
MAX_READ = 1 << 20
_BUFFER = MAX_READ + 4096

# Opcodes (linux/fuse.h).
LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, FLUSH, INIT = 1, 2, 3, 14, 15, 17, 18, 25, 26
OPENDIR, READDIR, RELEASEDIR, ACCESS, DESTROY, BATCH_FORGET = 27, 28, 29, 34, 38, 42
_NO_REPLY = {FORGET, BATCH_FORGET, 36}  # 36: INTERRUPT
FUSE_ASYNC_READ, FUSE_MAX_PAGES = 1 << 0, 1 << 22
FOPEN_KEEP_CACHE = 1 << 1
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8


def _attr(node: int, size: int) -> bytes:
    mode = stat.S_IFDIR | 0o500 if node == _ROOT else stat.S_IFREG | 0o400
    nlink = 2 if node == _ROOT else 1
    blocks = (size + 511) // 512 if node == _FILE else 0
    return _ATTR.pack(
        node, size if node == _FILE else 0, blocks, 0, 0, 0, 0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0
    )


class _Server:
    def __init__(self, fd: int, size: int, read: Callable[[int, int], bytes]) -> None:
        self.fd = fd
        self.size = size
        self.read = read
        self.failure: BaseException | None = None

    def serve(self) -> None:
        """Answer requests until the mount goes. It never stops early: a request left
        unanswered would hang whoever made it (the loop device, the mount) in the kernel."""
        while True:
            try:
                request = os.read(self.fd, _BUFFER)
            except OSError as err:
                if err.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                    continue  # ENOENT: the kernel dropped an interrupted request
                if err.errno not in (errno.ENODEV, errno.EBADF):
                    self.failure = err
                return  # unmounted (ENODEV), or the owner closed the device
            if not request:
                return
            try:
                self._handle(request)
            except Exception as err:  # reported by the owner when the mount goes
                self.failure = err
                with suppress(OSError):
                    self._reply(_IN.unpack_from(request)[2], errno.EIO)

    def _reply(self, unique: int, error: int = 0, payload: bytes = b"") -> None:
        try:
            os.write(self.fd, _OUT.pack(_OUT.size + len(payload), -error, unique) + payload)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV):  # the request was interrupted, or we unmounted
                raise

    def _handle(self, request: bytes) -> None:
        _length, opcode, unique, node, *_ids = _IN.unpack_from(request)
        body = request[_IN.size :]
        if opcode in _NO_REPLY:
            return
        if opcode == INIT:
            major, minor, readahead, flags = _INIT_IN.unpack_from(body)
            wanted = flags & (FUSE_ASYNC_READ | FUSE_MAX_PAGES)
            out = struct.pack(
                "<IIIIHHIIHH", 7, min(minor, 31), readahead, wanted, 16, 12, 4096, 1, MAX_READ // 4096, 0
            )
            self._reply(unique, 0, out + bytes(64 - len(out)))
        elif opcode == LOOKUP:
            if node == _ROOT and body.rstrip(b"\0") == FILE_NAME.encode():
                self._reply(
                    unique, 0, struct.pack("<QQQQII", _FILE, 0, 3600, 3600, 0, 0) + _attr(_FILE, self.size)
                )
            else:
                self._reply(unique, errno.ENOENT)
        elif opcode == GETATTR:
            self._reply(unique, 0, struct.pack("<QII", 3600, 0, 0) + _attr(node, self.size))
        elif opcode == OPEN:
            (open_flags,) = struct.unpack_from("<I", body)
            if node != _FILE or open_flags & os.O_ACCMODE != os.O_RDONLY:
                self._reply(unique, errno.EROFS if node == _FILE else errno.EISDIR)
            else:
                self._reply(unique, 0, struct.pack("<QIi", 0, FOPEN_KEEP_CACHE, 0))
        elif opcode == READ:
            _fh, offset, size = _READ_IN.unpack_from(body)
            if node != _FILE:
                self._reply(unique, errno.EISDIR)
                return
            data = self.read(offset, min(size, MAX_READ)) if offset < self.size else b""
            self._reply(unique, 0, data)
        elif opcode in (RELEASE, FLUSH, RELEASEDIR):
            self._reply(unique)
        elif opcode == STATFS:
            self._reply(unique, 0, struct.pack("<QQQQQIIII", 0, 0, 0, 1, 0, 4096, 255, 4096, 0) + bytes(24))
        elif opcode == DESTROY:
            self._reply(unique)
        else:
            self._reply(unique, errno.ENOSYS)


def _mount(fd: int, target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"pyvz-ploop", os.fsencode(target), b"fuse.pyvz-ploop", flags, options) != 0:
        code = ctypes.get_errno()
        raise VzError(ExitCode.MOUNT_IMAGE, f"cannot mount a FUSE file at {target}: {os.strerror(code)}")


@contextmanager
def served(directory: Path, size: int, read: Callable[[int, int], bytes]) -> Iterator[Path]:
    """Serve a `size`-byte read-only file at directory/disk while the block runs.

    `read(offset, length)` runs in a server thread. The mount goes when the block ends, however it ends."""
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise VzError(ExitCode.PLOOP_UNSUP, f"cannot open /dev/fuse: {err.strerror}") from None
    server = _Server(fd, size, read)
    thread = threading.Thread(target=server.serve, name="pyvz-ploop-fuse", daemon=True)
    try:
        _mount(fd, directory)
        try:
            thread.start()  # not before: /dev/fuse refuses reads (EPERM) until it is mounted
            yield directory / FILE_NAME
        finally:
            _unmount(directory)
    finally:
        if thread.is_alive():
            thread.join(timeout=5)  # an unmounted connection ends the thread's read at once
        os.close(fd)
    if server.failure is not None:
        raise VzError(ExitCode.MOUNT_IMAGE, f"reading the ploop disk failed: {server.failure}")


def _unmount(directory: Path) -> None:
    for _attempt in range(50):
        if run(["umount", str(directory)], check=False).returncode == 0:
            return
        threading.Event().wait(0.1)  # a loop device that is going away still holds the file
    run(["umount", "-l", str(directory)], check=False, error_code=ExitCode.UMOUNT_IMAGE)
