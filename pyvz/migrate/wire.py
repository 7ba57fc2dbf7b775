"""The migration protocol's framing, over the pipes of one SSH session.

Everything between two hosts goes through one SSH connection: requests and answers as small
JSON messages, and the CT's data (btrfs send streams, tar streams, CRIU images) as chunks of
one bounded size. A frame is a type byte, a 32-bit big-endian length and the payload:
`J` a JSON object, `D` a chunk of data, `E` the end of a data stream. What arrives is
checked like user input: sizes are bounded, JSON must be an object, and a peer that breaks
the framing gets the session ended.

A side that waits can tell a slow peer from a dead one: the sender pings every few seconds
while it works on its own (a clean stop may take a minute), and the receiver gives up on a
sender it has not heard from for `timeout` seconds, so a sender host that vanished never
leaves the receiver holding the CT's lock.
"""

from __future__ import annotations

import json
import os
import select
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pyvz.errors import ExitCode, MigrateExit, VzError

VERSION = 1
MAX_JSON = 1 << 20  # configs, snapshot lists and scripts fit many times over
CHUNK = 1 << 20
PING_EVERY = 5.0
_HEADER = struct.Struct(">cI")
_PING = b'{"op":"ping"}'

Message = dict[str, Any]


class Lost(VzError):
    """The other side went away (connection cut, process killed) or broke the protocol."""

    def __init__(self, message: str) -> None:
        super().__init__(MigrateExit.CONNECT, message)


class Wire:
    def __init__(self, read_fd: int, write_fd: int, peer: str, timeout: float | None = None) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.peer = peer
        self.timeout = timeout  # seconds without a frame before the peer counts as gone
        self.sent = 0  # data bytes, for progress
        self.heard = False  # whether the peer ever answered (for error messages)
        self.in_stream = False  # between a data stream's first chunk and its end frame
        self._lock = threading.Lock()  # one frame at a time: the pinger writes too
        self._stop_pinging: threading.Event | None = None

    # ---- writing -------------------------------------------------------------------------

    def _write(self, data: bytes | memoryview, more: bytes | memoryview = b"") -> None:
        with self._lock:
            self._write_unlocked(data, more)

    def _write_unlocked(self, data: bytes | memoryview, more: bytes | memoryview = b"") -> None:
        """Write `data` and then `more` (one system call where the pipe takes both)."""
        try:
            if more:
                done = os.writev(self.write_fd, [data, more])
                if done >= len(data):
                    data, more = memoryview(more)[done - len(data) :], b""
                else:
                    data = memoryview(data)[done:]
            for part in (data, more):
                view = memoryview(part)
                while view:
                    view = view[os.write(self.write_fd, view) :]
        except (BrokenPipeError, ConnectionResetError):
            raise Lost(f"the connection to {self.peer} was lost") from None

    def send(self, message: Message) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        if len(payload) > MAX_JSON:
            raise VzError(ExitCode.SYSTEM_ERROR, f"message {message.get('op')} is too large to send")
        self._write(_HEADER.pack(b"J", len(payload)) + payload)

    def send_data(self, chunk: bytes | memoryview) -> None:
        if chunk:
            self._write(_HEADER.pack(b"D", len(chunk)), chunk)
            self.sent += len(chunk)

    def end_data(self) -> None:
        self._write(_HEADER.pack(b"E", 0))

    def send_fd(self, fd: int, progress: Callable[[int], None] | None = None) -> int:
        """Send everything readable from `fd` as one data stream; the bytes it held."""
        total = 0
        while chunk := os.read(fd, CHUNK):
            self.send_data(chunk)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))
        self.end_data()
        return total

    # ---- reading -------------------------------------------------------------------------

    def start_pinging(self) -> None:
        """Ping the peer from a thread whenever PING_EVERY seconds pass (until stop_pinging)."""
        stop = self._stop_pinging = threading.Event()

        def pinger() -> None:
            while not stop.wait(PING_EVERY):
                try:
                    self._write(_HEADER.pack(b"J", len(_PING)) + _PING)
                except VzError:
                    return

        threading.Thread(target=pinger, name="ping", daemon=True).start()

    def stop_pinging(self) -> None:
        if self._stop_pinging is not None:
            self._stop_pinging.set()

    def _read_exact(self, size: int) -> bytes:
        parts = []
        while size:
            if self.timeout is not None and not select.select([self.read_fd], [], [], self.timeout)[0]:
                raise Lost(f"no word from {self.peer} for {self.timeout:g} s: the connection is lost")
            try:
                part = os.read(self.read_fd, min(size, CHUNK))
            except ConnectionResetError:
                part = b""
            if not part:
                raise Lost(f"the connection to {self.peer} was lost")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def _frame(self) -> tuple[bytes, bytes]:
        """The next frame that is not a ping."""
        while True:
            kind, size = _HEADER.unpack(self._read_exact(_HEADER.size))
            if kind == b"J" and size > MAX_JSON or kind == b"D" and size > CHUNK or kind == b"E" and size:
                raise Lost(f"{self.peer} broke the protocol (a {kind!r} frame of {size} bytes)")
            if kind not in (b"J", b"D", b"E"):
                raise Lost(f"{self.peer} broke the protocol (frame type {kind!r})")
            payload = self._read_exact(size) if size else b""
            if kind != b"J" or payload != _PING:
                return kind, payload

    def receive(self) -> Message:
        kind, payload = self._frame()
        if kind != b"J":
            raise Lost(f"{self.peer} sent data where a message was due")
        try:
            message = json.loads(payload)
        except ValueError:
            raise Lost(f"{self.peer} sent a malformed message") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise Lost(f"{self.peer} sent a message without an op")
        return message

    def data(self) -> Iterator[bytes]:
        """The chunks of one data stream, up to its end frame."""
        self.in_stream = True
        while True:
            kind, payload = self._frame()
            if kind == b"E":
                self.in_stream = False
                return
            if kind != b"D":
                raise Lost(f"{self.peer} sent a message inside a data stream")
            yield payload

    def drain(self) -> None:
        """The rest of a data stream a refusal cut short, so that the answer comes in step;
        nothing to read if its end frame was read already."""
        if not self.in_stream:
            return
        try:
            for _chunk in self.data():
                pass
        except VzError:
            pass

    # ---- request / answer ----------------------------------------------------------------

    def call(self, message: Message) -> Message:
        """Send a request and return the answer; a refusal becomes the VzError it names."""
        self.send(message)
        return self.answer()

    def answer(self) -> Message:
        reply = self.receive()
        self.heard = True
        if reply.get("op") != "ok":
            code, text = reply.get("code"), reply.get("error")
            kind = MigrateExit if reply.get("kind") == "migrate" else ExitCode
            known = code if isinstance(code, int) and code in kind._value2member_map_ else None
            raise VzError(
                kind(known) if known is not None else ExitCode.SYSTEM_ERROR,
                f"{self.peer}: {text[:500] if isinstance(text, str) else 'refused'}",
            )
        return reply

    def ok(self, **fields: Any) -> None:
        self.send({"op": "ok", **fields})

    def refuse(self, err: VzError) -> None:
        kind = "migrate" if isinstance(err.code, MigrateExit) else "vzctl"
        self.send({"op": "error", "code": int(err.code), "kind": kind, "error": err.message})
