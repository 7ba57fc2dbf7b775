"""The events stream, as server-sent events or a websocket: each event once, as it
happens, only for the CTs in the caller's scope."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from pyvz.api.calls import Call

KEEPALIVE = 15.0  # seconds between comments on an idle SSE stream


def _filter(call: Call) -> Any:
    grant, daemon = call.grant, call.daemon
    kinds = {k for k in (call.query("types") or "").split(",") if k}

    def wants(event: dict[str, Any]) -> bool:
        if kinds and event["type"] not in kinds:
            return False
        ctid = event.get("ctid")
        if ctid is None:
            return grant.everything
        return grant.covers(ctid, daemon._name_of(ctid))

    return wants


async def event_stream(call: Call) -> web.StreamResponse:
    subscriber = call.daemon.bus.subscribe(_filter(call))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(call.request)
    try:
        await response.write(b": pyvz events\n\n")
        while True:
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), timeout=KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            data = json.dumps(event, ensure_ascii=False)
            await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        call.daemon.bus.unsubscribe(subscriber)
    return response


async def event_socket(call: Call) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(call.request)
    subscriber = call.daemon.bus.subscribe(_filter(call))

    async def pump() -> None:
        while True:
            event = await subscriber.queue.get()
            if event is None:
                break
            await ws.send_str(json.dumps(event, ensure_ascii=False))
        await ws.close()

    task = asyncio.get_running_loop().create_task(pump())
    try:
        async for _message in ws:
            pass  # the client only listens
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
            await task
        call.daemon.bus.unsubscribe(subscriber)
    return ws
