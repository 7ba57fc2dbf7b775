"""Events: what changed, on which CT, when and by whom, for API clients that follow them.

Two sources feed the bus: pyvzd's own operations, and the datagrams every pyvz command
sends when it lets go of a CT's lock (pyvz/events.py), from the API's children and from a
vzctl typed in a shell alike. On a datagram the watcher reads the CT's state and config
again and publishes the differences. A CT can also change with no command at all (it
halts from inside, its init dies), so the watcher also looks at every CT now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from pyvz.paths import Paths

POLL_EVERY = 2.0  # seconds between looks at every CT
QUEUE_SIZE = 1000  # events a slow client may fall behind before it is cut off


class Subscriber:
    def __init__(self, wants: Callable[[dict[str, Any]], bool]) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self.wants = wants


class Bus:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, wants: Callable[[dict[str, Any]], bool]) -> Subscriber:
        subscriber = Subscriber(wants)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, kind: str, ctid: int | None, actor: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "ctid": ctid, "time": time.time(), "actor": actor, **data}
        for subscriber in list(self.subscribers):
            if not subscriber.wants(event):
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:  # it stopped reading: end its stream rather than grow
                self.subscribers.discard(subscriber)
                with contextlib.suppress(asyncio.QueueFull):
                    subscriber.queue.get_nowait()
                    subscriber.queue.put_nowait(None)
        return event


Snapshot = tuple[str | None, dict[str, str]]  # (status, the CT's own config keys)


class Watcher:
    """Keeps what it last saw of each CT (a cache of the files, not state of its own)."""

    def __init__(
        self,
        paths: Paths,
        bus: Bus,
        look: Callable[[int | None], dict[int, Snapshot]],
        on_poke: Callable[[], None] = lambda: None,
        busy: Callable[[set[int]], set[int]] = lambda ctids: set(),
    ) -> None:
        self.paths = paths
        self.bus = bus
        self.look = look  # reads the CTs' state and config: all of them, or one
        self.on_poke = on_poke  # told at once of every change a command reports
        self.busy = busy  # which of these CTs' locks a command holds now
        self.seen: dict[int, Snapshot] = {}
        self._pending: dict[int, tuple[str, str, float]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._poller: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.seen = await asyncio.to_thread(self.look, None)
        path = self.paths.events_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(os.fspath(path))
        os.chmod(path, 0o622)  # any local command may tell; only pyvzd reads
        loop = asyncio.get_running_loop()
        self._transport, _protocol = await loop.create_datagram_endpoint(lambda: _Datagrams(self), sock=sock)
        self._poller = loop.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.events_socket.unlink()

    def poked(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            ctid = int(message["ctid"])
            actor, command = str(message.get("actor", "?"))[:200], str(message.get("command", ""))[:300]
            when = float(message.get("time", 0.0))
        except (ValueError, KeyError, TypeError):
            return  # anyone local may write here: what is not ours is dropped
        self.on_poke()
        first = ctid not in self._pending
        self._pending[ctid] = (actor, command, when)
        if first:
            asyncio.get_running_loop().create_task(self._check(ctid))

    async def _check(self, ctid: int) -> None:
        async with self._lock:
            actor, command, when = self._pending.pop(ctid, ("?", "", 0.0))
            now = await asyncio.to_thread(self.look, ctid)
            self._compare({ctid: self.seen.get(ctid)}, now, actor, command, when)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_EVERY)
            async with self._lock:
                busy_before = await asyncio.to_thread(self.busy, set(self.seen))
                now = await asyncio.to_thread(self.look, None)
                # A CT a command is changing is left to that command's datagram, which
                # names it as the actor; otherwise the look could catch the change first
                # and put it down to "the CT itself".
                left = busy_before | set(self._pending) | await asyncio.to_thread(self.busy, set(now))
                before: dict[int, Snapshot | None] = {c: s for c, s in self.seen.items() if c not in left}
                self._compare(before, {c: s for c, s in now.items() if c not in left}, "the CT itself", "")

    def _compare(
        self,
        before: dict[int, Snapshot | None],
        now: dict[int, Snapshot],
        actor: str,
        command: str,
        when: float = 0.0,
    ) -> None:
        # changed_at: when the command that made the change let go of the CT (its datagram)
        extra: dict[str, Any] = {"command": command, "changed_at": when} if command else {}
        for ctid in sorted(set(before) | set(now)):
            old, new = before.get(ctid), now.get(ctid)
            if old == new:
                continue
            if new is None:
                self.seen.pop(ctid, None)
                self.bus.publish("ct-deleted", ctid, actor, **extra)
                continue
            self.seen[ctid] = new
            if old is None:
                self.bus.publish("ct-created", ctid, actor, status=new[0], **extra)
                continue
            if old[0] != new[0]:
                self.bus.publish("ct-state", ctid, actor, status=new[0], previous=old[0], **extra)
            if old[1] != new[1]:
                changed = sorted(k for k in set(old[1]) | set(new[1]) if old[1].get(k) != new[1].get(k))
                self.bus.publish("ct-config", ctid, actor, keys=changed, **extra)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.watcher.poked(data)
