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
