"""/metrics on a real running busybox CT: it shows up with its limits and its counters, and
a beancounter refusal inside the CT (forks past --numproc) shows in the very next scrape."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyvz.api.metrics import render
from pyvz.paths import Paths
from tests.conftest import VzRoot

pytestmark = pytest.mark.root

MiB = 1024 * 1024
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(vzroot: VzRoot) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(render(Paths(vzroot.root))):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, **wanted: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == metric and set(wanted.items()) <= ls]
    assert len(found) == 1, f"{metric}{wanted}: {len(found)} samples"
    return found[0]


def test_a_running_ct_and_a_failcnt_rise_in_the_next_scrape(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--name", "web", "--hostname", "web.example")
    vzroot.ok(
        "set", "101", "--ram", "128M", "--numproc", "30", "--diskspace", "1G", "--onboot", "yes", "--save"
    )
    vzroot.ok("create", "102")
    vzroot.ok("set", "102", "--onboot", "no", "--save")
    vzroot.ok("start", "101")
    ct = {"ctid": "101", "name": "web"}
    numproc = {**ct, "resource": "numproc"}

    first = scrape(vzroot)
    assert value(first, "pyvz_ct_up", **ct) == 1
    assert value(first, "pyvz_ct_state", state="running", **ct) == 1
    assert value(first, "pyvz_ct_info", hostname="web.example", **ct) == 1
    assert value(first, "pyvz_ct_onboot", **ct) == 1
    assert value(first, "pyvz_ct_memory_limit_bytes", **ct) == 128 * MiB
    assert 0 < value(first, "pyvz_ct_memory_used_bytes", **ct) < 128 * MiB
    assert value(first, "pyvz_ct_pids_limit", **ct) == 30
    assert value(first, "pyvz_ct_beancounter_limit", **numproc) == 30
    assert value(first, "pyvz_ct_beancounter_failcnt_total", **numproc) == 0
    assert value(first, "pyvz_ct_disk_limit_bytes", **ct) == 1024 * MiB
    assert value(first, "pyvz_ct_disk_used_bytes", **ct) > 0
    assert value(first, "pyvz_ct_uptime_seconds", **ct) >= 0
    assert value(first, "pyvz_ct_up", ctid="102") == 0
    assert value(first, "pyvz_ct_onboot", ctid="102") == 0
    assert value(first, "pyvz_cts", state="running") == 1
    assert value(first, "pyvz_cts", state="stopped") == 1
    assert value(first, "pyvz_scrape_ct_errors") == 0
    assert value(first, "pyvz_ct_beancounter_barrier", resource="kmemsize", **ct) == math.inf

    # Traffic on lo and a direct write to the CT's disk, for the network and I/O counters;
    # then forks past the limit (30 tasks), refused and counted, and waited out (a builtin:
    # no fork needed while the CT is full).
    vzroot.vzctl(
        "exec", "101",
        "ip link set lo up; ping -c 3 -W 1 127.0.0.1 >/dev/null; "
        "dd if=/dev/zero of=/io-test bs=1M count=4 oflag=direct 2>/dev/null; "
        "for i in $(seq 40); do sleep 2 & done 2>/dev/null; wait; true",
        timeout=60,
    )  # fmt: skip
    second = scrape(vzroot)
    assert value(second, "pyvz_ct_beancounter_failcnt_total", **numproc) > 0
    assert value(second, "pyvz_ct_cpu_seconds_total", **ct) > value(first, "pyvz_ct_cpu_seconds_total", **ct)
    assert value(second, "pyvz_ct_network_receive_packets_total", interface="lo", **ct) >= 3
    assert value(second, "pyvz_ct_network_transmit_bytes_total", interface="lo", **ct) > 0
    written = [
        v for (n, ls), v in second.items() if n == "pyvz_ct_blkio_write_bytes_total" and ("ctid", "101") in ls
    ]
    assert sum(written) >= 4 * MiB, written

    vzroot.ok("stop", "--fast", "101")
    third = scrape(vzroot)
    assert value(third, "pyvz_ct_up", **ct) == 0
    assert value(third, "pyvz_ct_onboot", **ct) == 1  # what the ONBOOT alert looks for
    assert not [n for (n, ls) in third if ("ctid", "101") in ls and n.startswith("pyvz_ct_beancounter")]
