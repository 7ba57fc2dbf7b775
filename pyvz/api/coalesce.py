"""Identical reads that arrive together share one reading of the files.

A hundred clients asking for the CT list at once would otherwise each read 200 configs
and cgroups, one after another. A request joins a reading already under way if no command
has changed a CT since that reading began (every command that changes a CT tells the
daemon when it lets go of the CT's lock, and each such datagram moves `generation`);
otherwise it joins the next reading, which starts after it arrived. So whatever a command
changed before a request arrived is in its answer, as if it had read the files itself,
and the work is done once per wave instead of once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any


class SharedReads:
    def __init__(self) -> None:
        self.generation = 0  # moved by every change a command reports
        self._running: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}
        self._next: dict[Hashable, asyncio.Future[Any]] = {}

    def changed(self) -> None:
        self.generation += 1

    async def get(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """`read()` (run in a thread), or the result of one that sees what this would."""
        loop = asyncio.get_running_loop()
        running = self._running.get(key)
        if running is None:
            first = loop.create_task(self._read(key, read))
            self._running[key] = (self.generation, first)
            return await asyncio.shield(first)
        started_at, task = running
        if started_at == self.generation:
            return await asyncio.shield(task)
        if key not in self._next:
            self._next[key] = loop.create_task(self._after(key, task, read))
        return await asyncio.shield(self._next[key])

    async def _read(self, key: Hashable, read: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(read)
        finally:
            running = self._running.get(key)
            if running is not None and running[1] is asyncio.current_task():
                del self._running[key]

    async def _after(self, key: Hashable, earlier: asyncio.Future[Any], read: Callable[[], Any]) -> Any:
        await asyncio.wait([earlier])
        task = asyncio.current_task()
        assert task is not None
        if self._next.get(key) is task:
            del self._next[key]
        self._running[key] = (self.generation, task)
        return await self._read(key, read)
