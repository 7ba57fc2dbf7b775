"""The cluster's one view (issue 14): `vzlist --cluster -a` of 3 hosts x 200 CTs against
`vzlist -a` of one host's 200, alternately, on three test hosts of their own
(tests/testhosts.py, each with its etcd member and its agent publishing its CTs).

Both commands run on host a through the same namespace entry, so what differs is what
each reads: the cluster view is one etcd range of the three agents' publications, the local
one is the host's 200 configs, cgroups and mounts.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from bench.harness import COMMAND_TIMEOUT, CommandFailed, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context
    from tests.testhosts import TestHost

PER_HOST = 200


def _ok(host: TestHost, argv: list[str]) -> str:
    done = host.run(argv, timeout=COMMAND_TIMEOUT)
    if done.code != 0:
        raise CommandFailed([*host.enter, *argv], done.code, done.out, done.err)
    return done.out


def _timed(host: TestHost, argv: list[str], rows: int) -> float:
    started = time.perf_counter()
    out = _ok(host, argv)
    took = time.perf_counter() - started
    if len(out.splitlines()) != rows:
        raise RuntimeError(f"{' '.join(argv)} listed {len(out.splitlines())} CTs, not {rows}")
    return took


def bench_cluster_list(ctx: Context) -> list[Row]:
    from tests.testhosts import host_network

    per_host = 20 if ctx.n.vzlist < 10 else PER_HOST
    with host_network(3, etcd=True) as hosts:
        started = time.monotonic()
        for index, host in enumerate(hosts):
            for number in range(per_host):
                ctid = 1000 * (index + 1) + number
                _ok(host, [sys.executable, "-m", "pyvz.cli.vzctl", "--quiet", "create", str(ctid)])
            log(f"cluster-list: {per_host} CTs on {host.name} ({time.monotonic() - started:.0f} s)")
        agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in hosts]
        try:
            a = hosts[0]
            cluster = [sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-a", "-H"]
            local = [sys.executable, "-m", "pyvz.cli.vzlist", "-a", "-H"]
            deadline = time.monotonic() + 120
            while len(_ok(a, cluster).splitlines()) != 3 * per_host:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agents did not publish every CT within 120 s")
                time.sleep(1)
            ours, theirs = alternate(
                ctx.n.vzlist * 2,
                lambda: _timed(a, cluster, 3 * per_host),
                lambda: _timed(a, local, per_host),
                "cluster-list",
            )
        finally:
            for agent in agents:
                agent.terminate()
            for agent in agents:
                agent.wait(timeout=60)
    notes = {"hosts": 3, "cts_per_host": per_host, "both": "run on host a through its netns entry"}
    label = f"vzlist --cluster -a, 3 hosts x {per_host} CTs, vs vzlist -a of one host's {per_host}"
    return [Row(label, "ratio", "≤ 2×", ours, theirs, limit=2.0, notes=notes)]


def bench_evacuate(ctx: Context) -> list[Row]:
    """`vzcluster evacuate` of a host running 10 busybox CTs onto two others (live moves),
    timed; `vzcluster restore` brings them back, untimed, before the next sample."""
    from tests.integration.test_migrate import ssh_options, trust
    from tests.testhosts import host_network

    count, samples = 10, 2 if ctx.n.vzlist < 10 else 3
    times: list[float] = []
    with host_network(3, etcd=True) as hosts:
        a, b, c = hosts
        for other in (b, c):
            trust(a, other)
            trust(other, a)
        for number in range(count):
            _ok(a, [sys.executable, "-m", "pyvz.cli.vzctl", "--quiet", "create", str(801 + number)])
            _ok(a, [sys.executable, "-m", "pyvz.cli.vzctl", "--quiet", "start", str(801 + number)])
        agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in hosts]
        try:
            time.sleep(8)  # every agent has published (PUBLISH_INTERVAL 5 s)
            for sample in range(samples):
                evacuate = [sys.executable, "-m", "pyvz.cli.vzcluster", "evacuate", f"--ssh={ssh_options(a)}"]
                started = time.perf_counter()
                _ok(a, evacuate)
                times.append(time.perf_counter() - started)
                log(f"evacuate {sample + 1}/{samples}: {times[-1]:.1f} s")
                for other in (b, c):
                    restore = [sys.executable, "-m", "pyvz.cli.vzcluster", "restore", "a"]
                    _ok(other, [*restore, f"--ssh={ssh_options(other)}"])
                time.sleep(6)
        finally:
            for agent in agents:
                agent.terminate()
            for agent in agents:
                agent.wait(timeout=60)
    notes = {"cts": count, "to": "2 hosts", "how": "live (CRIU) moves of running busybox CTs"}
    return [
        Row(
            f"vzcluster evacuate, {count} running busybox CTs",
            "abs",
            "≤ 20 s",
            times,
            limit=20.0,
            notes=notes,
        )
    ]
