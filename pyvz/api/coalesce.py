"""Identical reads that arrive together share one reading of the files.

A hundred clients asking for the CT list at once would otherwise each read 200 configs
and cgroups, one after another. Here a request joins the next reading that starts after it
arrived (never one already under way, which might miss a change made just before the
request): every answer is as fresh as its own reading would have been, and the work is
done once per wave instead of once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any


class SharedReads:
    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._next: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, read: Callable[[], Any]) -> Any:
        """`read()` (run in a thread), or the result of one that starts after this call."""
        loop = asyncio.get_running_loop()
        if key not in self._running:
            self._running[key] = loop.create_task(self._read(key, read))
            return await asyncio.shield(self._running[key])
        if key not in self._next:
            self._next[key] = loop.create_task(self._after(key, self._running[key], read))
        return await asyncio.shield(self._next[key])

    async def _read(self, key: Hashable, read: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(read)
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]

    async def _after(self, key: Hashable, earlier: asyncio.Future[Any], read: Callable[[], Any]) -> Any:
        await asyncio.wait([earlier])
        task = asyncio.current_task()
        assert task is not None
        if self._next.get(key) is task:
            del self._next[key]
        self._running[key] = task
        return await self._read(key, read)
