"""A terminal in a CT over a websocket: `vzctl enter` (a root shell) or `vzctl console`,
run on a real pty. Binary frames carry the terminal's bytes both ways; a text frame
`{"resize": [COLUMNS, ROWS]}` sets the window size."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import struct
import subprocess
import termios

from aiohttp import WSMsgType, web

from pyvz.api.calls import Call
from pyvz.api.operations import tool_argv
from pyvz.events import ACTOR_ENV
from pyvz.paths import ROOT_ENV


def _resize(fd: int, columns: int, rows: int) -> None:
    columns, rows = max(1, min(columns, 1000)), max(1, min(rows, 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


async def console_socket(call: Call) -> web.StreamResponse:
    assert call.ctid is not None
    command = ["enter", str(call.ctid)] if call.query("shell") == "1" else ["console", str(call.ctid)]
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1024 * 1024)
    await ws.prepare(call.request)
    master, slave = os.openpty()
    _resize(master, 80, 24)
    env = {
        **os.environ,
        ROOT_ENV: str(call.daemon.paths.root),
        ACTOR_ENV: call.actor,
        "TERM": "xterm-256color",
    }
    # setsid -c makes the pty the command's controlling terminal, as a login would.
    process = subprocess.Popen(
        ["setsid", "-c", *tool_argv("vzctl", command)],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    call.daemon.audit.write(actor=call.actor, request=f"console {' '.join(command)}", ctid=call.ctid)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            loop.remove_reader(master)
        output.put_nowait(chunk)

    loop.add_reader(master, readable)

    async def to_client() -> None:
        while True:
            chunk = await output.get()
            if not chunk:
                break
            await ws.send_bytes(chunk)
        await ws.close()

    sender = loop.create_task(to_client())
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                os.write(master, message.data)
            elif message.type == WSMsgType.TEXT:
                with contextlib.suppress(ValueError, TypeError, KeyError, IndexError, OSError):
                    control = json.loads(message.data)
                    if "resize" in control:
                        _resize(master, int(control["resize"][0]), int(control["resize"][1]))
                    elif "data" in control:
                        os.write(master, str(control["data"]).encode())
    finally:
        loop.remove_reader(master)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGHUP)
            try:
                await asyncio.to_thread(process.wait, 5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait)
        os.close(master)
    return ws
