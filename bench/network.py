"""Network benchmarks (issue 5), inside throwaway network namespaces with no route out:
TCP throughput CT -> CT over routed (venet) addresses vs a plain veth pair between two bare
namespaces, and `vzctl set --ipadd` on a running CT."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bench.harness import VZCTL, Row, alternate, log
from pyvz.net.venet import init_pid
from pyvz.resources.cgroups import CtCgroups, detect

if TYPE_CHECKING:
    from bench.cases import Context

SENDER, RECEIVER = 9401, 9402
SECONDS = 4


@contextmanager
def _netns(*names: str) -> Iterator[None]:
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], check=False)


def _iperf(client_ns: str, server_ns: str, address: str) -> float:
    """Seconds per GB sent over SECONDS of iperf3 (lower is better, like every other row)."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", address])
    try:
        time.sleep(0.3)
        done = subprocess.run(
            ["nsenter", f"--net={client_ns}", "iperf3", "-c", address, "-t", str(SECONDS), "-J"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        server.wait(timeout=30)
    bits = float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
    return 8e9 / bits


def bench_throughput(ctx: Context) -> list[Row]:
    vz = ctx.vz
    routed, left, right = (f"pyvz-bench-{uuid.uuid4().hex[:6]}-{n}" for n in ("ct", "a", "b"))
    with _netns(routed, left, right):
        subprocess.run(
            ["ip", "-n", left, "link", "add", "p0", "type", "veth", "peer", "name", "p1", "netns", right],
            check=True,
        )
        for ns, dev, address in ((left, "p0", "10.98.0.1/24"), (right, "p1", "10.98.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        pids = []
        for ctid, address in ((SENDER, "10.99.0.2"), (RECEIVER, "10.99.0.3")):
            if not vz.paths.conf_file(ctid).exists():
                vz.vzctl("--quiet", "create", str(ctid), "--ipadd", address)
            vz.run(["nsenter", f"--net=/run/netns/{routed}", VZCTL, "--quiet", "start", str(ctid)])
            pid = init_pid(detect().procs(CtCgroups.of(vz.paths.tag, ctid).container))
            assert pid is not None
            pids.append(f"/proc/{pid}/ns/net")
        try:
            time.sleep(1)  # IPv6 and ARP settle
            a, b = alternate(
                7,
                lambda: _iperf(pids[0], pids[1], "10.99.0.3"),
                lambda: _iperf(f"/run/netns/{left}", f"/run/netns/{right}", "10.98.0.2"),
                "throughput",
            )
            ipadd = _ipadd_times(ctx, 10)
        finally:
            for ctid in (SENDER, RECEIVER):
                vz.vzctl("--quiet", "stop", "--fast", str(ctid), check=False)
    log(f"throughput: CT->CT {8 / min(a):.1f} Gbit/s best, veth {8 / min(b):.1f} Gbit/s best")
    return [
        Row(
            "TCP CT->CT over routed IPs vs plain veth between two netns (iperf3, time per GB)",
            "ratio",
            "≤ 1.11× time (≥ 0.9× throughput)",
            a,
            b,
            limit=1 / 0.9,
            notes={
                "how": f"iperf3 -t {SECONDS} run in each CT's network namespace (the host's binary)",
                "pyvz_gbit_s_median": 8 / sorted(a)[len(a) // 2],
                "peer_gbit_s_median": 8 / sorted(b)[len(b) // 2],
            },
        ),
        Row(
            "vzctl set --ipadd on a running CT",
            "abs",
            "≤ 200 ms",
            ipadd,
            limit=0.2,
            notes={"pyvz": f"vzctl set {SENDER} --ipadd 10.99.1.N (then --ipdel, untimed)"},
        ),
    ]


def _ipadd_times(ctx: Context, count: int) -> list[float]:
    times = []
    for index in range(count):
        address = f"10.99.1.{index + 1}"
        times.append(ctx.vz.timed([VZCTL, "--quiet", "set", str(SENDER), "--ipadd", address, "--save"]))
        ctx.vz.vzctl("--quiet", "set", str(SENDER), "--ipdel", address, "--save")
    return times
