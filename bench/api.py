"""pyvzd, the API daemon (issue 13), against the CLI it stands beside.

api-list     GET /api/v1/cts (every vzlist field, 200 CTs, 50 running) over one kept-alive
             HTTPS connection, against `vzlist -a -j`, alternately; p50 and p99 of each.
api-start    POST /api/v1/cts/N/start?wait=60 (until the operation ends) against `vzctl start N`,
             alternately; each ended untimed with `vzctl stop --fast`.
api-event    the time from a CT's change (the moment the command that made it let go of the
             CT's lock, as its datagram says) to its event reaching a client of /api/v1/events.
api-clients  100 concurrent clients, each listing the 200 CTs again and again for 30 s: every
             answer must be a 200; p99 of the answers' times.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from bench.harness import REPO, VZCTL, VZLIST, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context

START_CT = 9901
CLIENTS = 100
CLIENT_SECONDS = 30.0
LIST_SAMPLES = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """pyvzd on the bench root, with an admin token."""

    def __init__(self, ctx: Context) -> None:
        self.vz = ctx.vz
        self.port = _free_port()
        python = [sys.executable, "-m", "pyvz.cli.pyvzd"]
        made = self.vz.run(
            [*python, "token", "add", f"bench-{os.getpid()}-{time.time_ns()}", "--role", "admin"]
        )
        self.token = made.stdout.strip()
        printed = self.vz.run([*python, "fingerprint"]).stdout.strip()
        self.fingerprint = bytes.fromhex(printed.replace(":", ""))
        self.process = subprocess.Popen(
            [*python, "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=self.vz.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pyvzd did not listen")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rss_mb(self) -> float:
        from pathlib import Path

        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _session(daemon: Daemon, connections: int = 1) -> Any:
    import aiohttp

    pinned = aiohttp.Fingerprint(daemon.fingerprint)  # the self-signed certificate, pinned
    return aiohttp.ClientSession(
        headers=daemon.headers, connector=aiohttp.TCPConnector(ssl=pinned, limit=connections)
    )


def bench_api_list(ctx: Context) -> list[Row]:
    from bench.cases import FLEET_SIZE, _fleet

    running = _fleet(ctx)
    daemon = Daemon(ctx)
    try:
        ours, theirs, count = asyncio.run(_list_alternately(ctx, daemon))
    finally:
        daemon.stop()
    if count != FLEET_SIZE:
        raise RuntimeError(f"the API listed {count} CTs, expected {FLEET_SIZE}")
    notes = {
        "pyvz": "GET /api/v1/cts (HTTPS, kept alive)",
        "peer": f"{VZLIST} -a -j",
        "pyvz_p99_ms": _percentile(ours, 0.99) * 1000,
        "peer_p99_ms": _percentile(theirs, 0.99) * 1000,
    }
    label = f"list {FLEET_SIZE} CTs ({len(running)} running) over the API vs vzlist -a -j"
    return [Row(label + " (p50)", "ratio", "p50 ≤ the CLI's", ours, theirs, limit=1.0, notes=notes)]


async def _list_alternately(ctx: Context, daemon: Daemon) -> tuple[list[float], list[float], int]:
    ours: list[float] = []
    theirs: list[float] = []
    count = 0
    async with _session(daemon) as session:
        for index in range(LIST_SAMPLES):
            start = time.perf_counter()
            async with session.get(daemon.url + "/api/v1/cts") as response:
                body = await response.read()
            ours.append(time.perf_counter() - start)
            count = len(json.loads(body))
            theirs.append(await asyncio.to_thread(ctx.vz.timed, [VZLIST, "-a", "-j"]))
            if (index + 1) % 10 == 0:
                log(
                    f"api-list {index + 1}/{LIST_SAMPLES}: "
                    f"api {ours[-1] * 1000:.1f} ms, cli {theirs[-1] * 1000:.1f} ms"
                )
    return ours, theirs, count


def bench_api_start(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(START_CT)
    vz.vzctl("create", ct)
    daemon = Daemon(ctx)
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_open(daemon))

    def over_api() -> float:
        async def once() -> float:
            start = time.perf_counter()
            async with session.post(f"{daemon.url}/api/v1/cts/{ct}/start?wait=60") as response:
                op = await response.json()
            elapsed = time.perf_counter() - start
            if op["status"] != "success":
                raise RuntimeError(f"start over the API: {op}")
            return elapsed

        elapsed = loop.run_until_complete(once())
        vz.vzctl("stop", "--fast", ct)
        return elapsed

    def by_cli() -> float:
        elapsed = vz.timed([VZCTL, "start", ct])
        vz.vzctl("stop", "--fast", ct)
        return elapsed

    try:
        over_api(), by_cli()  # warm-up
        a, b = alternate(ctx.n.start, over_api, by_cli, "api-start")
    finally:
        loop.run_until_complete(session.close())
        loop.close()
        daemon.stop()
        vz.settle(START_CT)
        vz.vzctl("destroy", ct)
    notes = {"pyvz": f"POST /api/v1/cts/{ct}/start?wait=60", "peer": f"{VZCTL} start {ct}"}
    return [Row("start a CT over the API (until the operation ends) vs vzctl start", "diff",
                "≤ CLI + 20 ms", a, b, limit=20.0, notes=notes)]  # fmt: skip


async def _open(daemon: Daemon) -> Any:
    return _session(daemon)


def bench_api_event(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(START_CT + 1)
    vz.vzctl("create", ct)
    daemon = Daemon(ctx)
    try:
        delays = asyncio.run(_event_delays(ctx, daemon, ct))
    finally:
        daemon.stop()
        vz.vzctl("destroy", ct)
    notes = {"change": f"vzctl set {ct} --description N --save", "samples": len(delays)}
    return [Row("a CT's change to its event reaching a client (SSE)", "abs", "≤ 100 ms", delays,
                limit=0.1, notes=notes)]  # fmt: skip


async def _event_delays(ctx: Context, daemon: Daemon, ct: str) -> list[float]:
    delays: list[float] = []
    async with (
        _session(daemon) as session,
        session.get(daemon.url + "/api/v1/events?types=ct-config") as stream,
    ):
        for index in range(ctx.n.start):
            command = asyncio.create_task(asyncio.to_thread(
                ctx.vz.vzctl, "set", ct, "--description", f"event {index}", "--save"
            ))  # fmt: skip
            while True:
                line = await asyncio.wait_for(stream.content.readline(), timeout=30)
                if not line:
                    raise RuntimeError(f"the event stream ended (HTTP {stream.status})")
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event.get("changed_at"):
                        delays.append(time.time() - event["changed_at"])
                        break
            await command
    return delays


def bench_api_clients(ctx: Context) -> list[Row]:
    from bench.cases import FLEET_SIZE, _fleet

    _fleet(ctx)
    daemon = Daemon(ctx)
    try:
        times, errors = asyncio.run(_many_clients(daemon))
        rss = daemon.rss_mb()
    finally:
        daemon.stop()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(times) + len(errors)} answers were errors: {errors[:3]}")
    notes = {"clients": CLIENTS, "seconds": CLIENT_SECONDS, "answers": len(times),
             "p50_ms": _percentile(times, 0.5) * 1000, "daemon_rss_mb": rss}  # fmt: skip
    label = f"{CLIENTS} concurrent clients listing {FLEET_SIZE} CTs for {CLIENT_SECONDS:.0f} s (p99)"
    return [Row(label, "abs", "no errors, p99 ≤ 250 ms", [_percentile(times, 0.99)], limit=0.25, notes=notes)]


async def _many_clients(daemon: Daemon) -> tuple[list[float], list[str]]:
    times: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + CLIENT_SECONDS
    async with _session(daemon, CLIENTS) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    async with session.get(daemon.url + "/api/v1/cts") as response:
                        await response.read()
                        if response.status != 200:
                            errors.append(f"HTTP {response.status}")
                            continue
                except Exception as err:
                    errors.append(repr(err))
                    continue
                times.append(time.perf_counter() - start)

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    log(f"api-clients: {len(times)} answers, {len(errors)} errors")
    return times, errors
