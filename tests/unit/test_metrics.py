"""/metrics: render() over a fake root and fake cgroupfs trees (v1 and v2), parsed back with
Prometheus's own text parser (prometheus_client); label escaping; the docs, the alert rules
and the Grafana dashboard checked against the names render() exports."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pyvz.api import metrics
from pyvz.api.exposition import Family, label_value, labels, number
from pyvz.net.traffic import parse_net_dev
from pyvz.params import PAGE
from pyvz.paths import Paths
from pyvz.resources.cgroups import CgroupTree, CgroupV1, CgroupV2, InForce, IoCount, detect
from pyvz.rootinit import init_root

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
ODD_NAME = 'we"b\\1'  # a name as a hand-edited CTID.conf may hold it: vzctl --name refuses it
ODD_HOSTNAME = 'h"o\\st'

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name -> type, and every sample by (name, labels); the parser raises on bad text."""
    kinds: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return kinds, samples


def value(samples: Samples, metric: str, **wanted: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == metric and set(wanted.items()) <= ls]
    assert len(found) == 1, f"{metric}{wanted}: {len(found)} samples"
    return found[0]


# ---- a fake root: 101 running (odd name and host name), 102 stopped, 103 with no private ----


def make_root(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "root")
    init_root(paths)
    common = 'VE_PRIVATE="/var/lib/vz/private/$VEID"\nVE_ROOT="/var/lib/vz/root/$VEID"\nVE_LAYOUT="dir"\n'
    escaped_name = ODD_NAME.replace("\\", "\\\\").replace('"', '\\"')
    escaped_host = ODD_HOSTNAME.replace("\\", "\\\\").replace('"', '\\"')
    write(
        paths.conf_file(101),
        common + f'NAME="{escaped_name}"\nHOSTNAME="{escaped_host}"\nONBOOT="yes"\n'
        'OSTEMPLATE="busybox"\nPHYSPAGES="0:65536"\nNUMPROC="40:40"\nDISKSPACE="1048576:2097152"\n',
    )
    os.symlink("../conf/101.conf", paths.name_link(ODD_NAME))
    write(paths.conf_file(102), common + 'ONBOOT="yes"\nDISABLED="no"\n')
    write(paths.conf_file(103), common + 'ONBOOT="no"\n')
    for ctid in (101, 102):
        (paths.lib_vz / "private" / str(ctid)).mkdir(parents=True)
    return paths


def fake_v1(mount: Path, relative: str, memory_failcnt: int = 3) -> CgroupTree:
    mem = mount / "memory" / relative
    write(mount / "memory/memory.memsw.limit_in_bytes", "")
    write(mem / "memory.usage_in_bytes", f"{50 * MiB}\n")
    write(mem / "memory.max_usage_in_bytes", f"{60 * MiB}\n")
    write(mem / "memory.limit_in_bytes", f"{256 * MiB}\n")
    write(mem / "memory.failcnt", f"{memory_failcnt}\n")
    write(mem / "memory.memsw.usage_in_bytes", f"{52 * MiB}\n")
    write(mem / "memory.memsw.limit_in_bytes", "9223372036854771712\n")  # v1's "none"
    write(mem / "memory.memsw.failcnt", "0\n")
    write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    write(mem / "memory.stat", "total_shmem 8192\n")
    write(mem / "cgroup.procs", "")
    write(mount / "pids" / relative / "pids.current", "7\n")
    write(mount / "pids" / relative / "pids.max", "40\n")
    write(mount / "pids" / relative / "pids.events", "max 2\n")
    write(mount / "cpuacct" / relative / "cpuacct.usage", "1500000000\n")
    blkio = mount / "blkio" / relative
    write(
        blkio / "blkio.throttle.io_service_bytes_recursive",
        "7:0 Read 4096\n7:0 Write 8192\n7:0 Sync 0\n7:0 Total 12288\n8:0 Read 0\n8:0 Write 0\nTotal 12288\n",
    )
    write(blkio / "blkio.throttle.io_serviced_recursive", "7:0 Read 1\n7:0 Write 2\n7:0 Total 3\nTotal 3\n")
    tree = detect(mount)
    assert isinstance(tree, CgroupV1)
    return tree


def fake_v2(mount: Path, relative: str, memory_failcnt: int = 3) -> CgroupTree:
    top = mount / relative
    write(mount / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(top / "memory.current", f"{50 * MiB}\n")
    write(top / "memory.peak", f"{60 * MiB}\n")
    write(top / "memory.max", f"{256 * MiB}\n")
    write(top / "memory.events", f"low 0\nhigh 0\nmax {memory_failcnt}\noom 1\noom_kill 1\n")
    write(top / "memory.swap.current", f"{2 * MiB}\n")
    write(top / "memory.swap.max", "max\n")
    write(top / "memory.swap.events", "high 0\nmax 0\nfail 0\n")
    write(top / "memory.stat", "anon 1\nkernel 70000\nsock 0\nshmem 8192\n")
    write(top / "pids.current", "7\n")
    write(top / "pids.max", "40\n")
    write(top / "pids.events", "max 2\n")
    write(top / "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    write(top / "io.stat", "7:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    write(top / "cgroup.procs", "")
    tree = detect(mount)
    assert isinstance(tree, CgroupV2)
    return tree


FAKES: dict[str, Callable[..., CgroupTree]] = {"v1": fake_v1, "v2": fake_v2}


def _device(number: str) -> str:
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{number}"))
    except OSError:
        return number


@pytest.mark.parametrize("version", sorted(FAKES))
def test_render_parses_and_shows_every_ct(tmp_path: Path, version: str) -> None:
    paths = make_root(tmp_path)
    tree = FAKES[version](tmp_path / "cgroup", f"{paths.tag}/101")
    kinds, samples = parse(metrics.render(paths, tree))

    running = {"ctid": "101", "name": ODD_NAME}
    assert value(samples, "pyvz_ct_up", **running) == 1
    assert value(samples, "pyvz_ct_state", state="running", **running) == 1
    assert value(samples, "pyvz_ct_state", state="stopped", **running) == 0
    info = value(samples, "pyvz_ct_info", hostname=ODD_HOSTNAME, ostemplate="busybox", **running)
    assert info == 1
    assert value(samples, "pyvz_ct_onboot", **running) == 1
    assert value(samples, "pyvz_ct_cpu_seconds_total", **running) == pytest.approx(1.5)
    assert value(samples, "pyvz_ct_memory_used_bytes", **running) == 50 * MiB
    assert value(samples, "pyvz_ct_memory_limit_bytes", **running) == 256 * MiB
    assert value(samples, "pyvz_ct_swap_limit_bytes", **running) == math.inf
    assert value(samples, "pyvz_ct_swap_used_bytes", **running) == 2 * MiB
    assert value(samples, "pyvz_ct_pids", **running) == 7
    assert value(samples, "pyvz_ct_pids_limit", **running) == 40
    physpages = {"resource": "physpages", **running}
    assert value(samples, "pyvz_ct_beancounter_held", **physpages) == 50 * MiB // PAGE
    assert value(samples, "pyvz_ct_beancounter_limit", **physpages) == 65536
    assert value(samples, "pyvz_ct_beancounter_barrier", **physpages) == 0
    assert value(samples, "pyvz_ct_beancounter_failcnt_total", **physpages) == 3
    numproc = {"resource": "numproc", **running}
    assert value(samples, "pyvz_ct_beancounter_failcnt_total", **numproc) == 2
    assert value(samples, "pyvz_ct_beancounter_limit", **numproc) == 40
    assert value(samples, "pyvz_ct_beancounter_limit", resource="kmemsize", **running) == math.inf
    assert value(samples, "pyvz_ct_disk_softlimit_bytes", **running) == 1024 * MiB
    assert value(samples, "pyvz_ct_disk_limit_bytes", **running) == 2048 * MiB
    device = {"device": _device("7:0"), **running}
    assert value(samples, "pyvz_ct_blkio_read_bytes_total", **device) == 4096
    assert value(samples, "pyvz_ct_blkio_write_bytes_total", **device) == 8192
    assert value(samples, "pyvz_ct_blkio_reads_total", **device) == 1
    assert value(samples, "pyvz_ct_blkio_writes_total", **device) == 2
    # an idle device is not listed
    assert not [ls for (n, ls) in samples if n == "pyvz_ct_blkio_reads_total" and ("device", "sda") in ls]

    stopped = {"ctid": "102"}
    assert value(samples, "pyvz_ct_up", **stopped) == 0
    assert value(samples, "pyvz_ct_state", state="stopped", **stopped) == 1
    assert value(samples, "pyvz_ct_onboot", **stopped) == 1
    assert value(samples, "pyvz_ct_disk_limit_bytes", **stopped) == math.inf
    # a stopped CT has no cgroup figures, and the CT without a private area is not shown
    assert not [n for (n, ls) in samples if ("ctid", "102") in ls and n.startswith("pyvz_ct_memory")]
    assert not [n for (n, ls) in samples if ("ctid", "103") in ls]
    # a CT without a name has no name label at all
    assert all(key != "name" for (_n, ls) in samples for key, _v in ls if ("ctid", "102") in ls)

    assert value(samples, "pyvz_cts", state="running") == 1
    assert value(samples, "pyvz_cts", state="stopped") == 1
    assert value(samples, "pyvz_cts", state="mounted") == 0
    assert value(samples, "pyvz_scrape_ct_errors") == 0
    assert 0 < value(samples, "pyvz_scrape_duration_seconds") < 5
    assert value(samples, "pyvz_host_memory_total_bytes") > 0
    assert kinds["pyvz_ct_beancounter_failcnt"] == "counter"  # the parser drops _total
    assert kinds["pyvz_ct_memory_used_bytes"] == "gauge"


@pytest.mark.parametrize("version", sorted(FAKES))
def test_a_failcnt_rise_shows_in_the_next_scrape(tmp_path: Path, version: str) -> None:
    paths = make_root(tmp_path)
    relative = f"{paths.tag}/101"
    failcnt = {"ctid": "101", "name": ODD_NAME, "resource": "physpages"}
    FAKES[version](tmp_path / "cgroup", relative, memory_failcnt=3)
    _kinds, before = parse(metrics.render(paths, detect(tmp_path / "cgroup")))
    tree = FAKES[version](tmp_path / "cgroup", relative, memory_failcnt=9)
    _kinds, after = parse(metrics.render(paths, tree))
    assert value(before, "pyvz_ct_beancounter_failcnt_total", **failcnt) == 3
    assert value(after, "pyvz_ct_beancounter_failcnt_total", **failcnt) == 9


def test_v1_io_counting_is_switched_on_in_the_roots_own_cgroup(tmp_path: Path) -> None:
    """v1 counts a cgroup's I/O only on a device with blk-throttle set up: render() writes
    a no-limit rule (0) for the disk under the running CTs' private areas, above the CTs."""
    from pyvz.storage.blockdev import device_of

    paths = make_root(tmp_path)
    tree = fake_v1(tmp_path / "cgroup", f"{paths.tag}/101")
    metrics.render(paths, tree)
    rule = tmp_path / "cgroup/blkio" / paths.tag / "blkio.throttle.read_bps_device"
    device = device_of(paths.lib_vz / "private")
    if device is None:
        assert not rule.exists()  # tmpfs, overlay: no disk, nothing to count on
    else:
        assert rule.read_text() == f"{device.number} 0"


def test_a_ct_that_cannot_be_read_is_counted_and_left_out_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = make_root(tmp_path)
    tree = fake_v2(tmp_path / "cgroup", f"{paths.tag}/101")

    def broken(self: CgroupTree, relative: str) -> float:
        raise OSError("the cgroup went away")

    monkeypatch.setattr(CgroupV2, "cpu_seconds", broken)
    _kinds, samples = parse(metrics.render(paths, tree))
    assert value(samples, "pyvz_scrape_ct_errors") == 1
    assert not [n for (n, ls) in samples if ("ctid", "101") in ls]
    assert value(samples, "pyvz_ct_up", ctid="102") == 0
    assert value(samples, "pyvz_cts", state="running") == 0


def test_an_empty_root_still_names_every_metric(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    init_root(paths)
    text = metrics.render(paths, fake_v2(tmp_path / "cgroup", "nothing"))
    kinds, _samples = parse(text)
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    assert declared == metrics.NAMES


# ---- the format itself -------------------------------------------------------------------


def test_label_values_are_escaped_and_parse_back() -> None:
    nasty = 'a"b\\c\nd'
    assert label_value(nasty) == 'a\\"b\\\\c\\nd'
    family = Family("pyvz_test", "gauge", "help with a \\ and a\nnewline")
    family.add(1, labels([("ctid", "101"), ("name", nasty)]))
    family.add(math.inf, labels([("ctid", "102")]))
    parsed = list(text_string_to_metric_families(family.text()))
    assert parsed[0].documentation == "help with a \\ and a\nnewline"
    assert parsed[0].samples[0].labels == {"ctid": "101", "name": nasty}
    assert parsed[0].samples[1].value == math.inf


def test_numbers() -> None:
    assert number(3) == "3"
    assert number(2.0) == "2"
    assert number(0.25) == "0.25"
    assert number(math.inf) == "+Inf"
    assert number(-math.inf) == "-Inf"
    assert number(math.nan) == "NaN"
    assert number(9.3e18) == "9.3e+18"


# ---- the cgroup readers behind it ------------------------------------------------------------


def test_v1_limits_in_force(tmp_path: Path) -> None:
    tree = fake_v1(tmp_path, "t/101")
    assert tree.in_force("t/101") == InForce(256 * MiB, math.inf, 40)
    write(tmp_path / "memory/t/101/memory.memsw.limit_in_bytes", f"{300 * MiB}\n")
    write(tmp_path / "pids/t/101/pids.max", "max\n")
    assert tree.in_force("t/101") == InForce(256 * MiB, 44 * MiB, math.inf)
    assert tree.in_force("t/missing") == InForce(None, None, None)


def test_v2_limits_cpu_and_io(tmp_path: Path) -> None:
    tree = fake_v2(tmp_path, "t/101")
    assert tree.in_force("t/101") == InForce(256 * MiB, math.inf, 40)
    assert tree.cpu_seconds("t/101") == pytest.approx(1.5)
    write(tmp_path / "t/101/io.stat", "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n7:0 rbytes=x\n")
    assert tree.io_counts("t/101") == [IoCount("8:0", 1, 2, 3, 4)]
    assert tree.cpu_seconds("t/missing") is None
    assert tree.io_counts("t/missing") == []


def test_v1_io_counts_skip_totals_and_idle_devices(tmp_path: Path) -> None:
    tree = fake_v1(tmp_path, "t/101")
    assert tree.io_counts("t/101") == [IoCount("7:0", 4096, 8192, 1, 2)]
    assert tree.cpu_seconds("t/101") == pytest.approx(1.5)


def test_net_dev_parsing() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop "
        "fifo colls carrier compressed\n"
        "    lo:     840      10    0    0    0     0          0         0      840      10    0    0 "
        "   0     0       0          0\n"
        "  eth0: 1234567    1000    0    0    0     0          0         0    76543     900    0    0 "
        "   0     0       0          0\n"
        "garbage line\n"
    )
    links = parse_net_dev(text)
    assert [(t.interface, t.receive_bytes, t.receive_packets, t.transmit_bytes, t.transmit_packets)
            for t in links] == [("lo", 840, 10, 840, 10), ("eth0", 1234567, 1000, 76543, 900)]  # fmt: skip


# ---- docs, alert rules, dashboard ------------------------------------------------------------

# Words in PromQL that are not metric names: functions, keywords, label names, durations.
_PROMQL_WORDS = {
    "increase", "rate", "irate", "sum", "max", "min", "avg", "count", "by", "on", "and", "or",
    "unless", "without", "ignoring", "group_left", "group_right", "topk", "bottomk", "label_values",
    "label_replace", "clamp_min", "clamp_max", "time", "bool", "offset", "delta", "deriv",
    "ctid", "name", "resource", "interface", "device", "state", "hostname", "ostemplate", "layout",
    "instance", "job", "le", "pyvz",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_labels = re.sub(r"\{[^}]*\}", "", without_ranges)
    grouping = r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)"
    without_grouping = re.sub(grouping, "", without_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_grouping))
    return {w for w in words if w.startswith("pyvz_")} | {w for w in words - _PROMQL_WORDS if "_" in w}


def test_docs_describe_every_metric() -> None:
    text = (REPO / "docs/metrics.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(pyvz_\w+)` \| (\w+) \|", text, re.MULTILINE)}
    assert set(rows) == metrics.NAMES
    assert all(rows[m.name] == m.kind for m in metrics.METRICS)


def _alert_rules() -> list[dict[str, str]]:
    data = yaml.safe_load((REPO / "docs/prometheus/pyvz-alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_use_only_exported_names() -> None:
    rules = _alert_rules()
    wanted = {"PyvzBeancounterFailcnt", "PyvzDiskNearLimit", "PyvzMemoryNearLimit", "PyvzOnbootCtDown"}
    assert wanted <= {rule["alert"] for rule in rules}
    for rule in rules:
        names = _metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= metrics.NAMES, f"{rule['alert']}: {names - metrics.NAMES}"
    failcnt = next(rule for rule in rules if rule["alert"] == "PyvzBeancounterFailcnt")
    assert "increase(pyvz_ct_beancounter_failcnt_total" in failcnt["expr"]


def test_alert_rules_pass_promtool() -> None:
    """promtool checks the rules, then runs tests/unit/fixtures/pyvz-alerts.test.yml: each
    alert fires on the series that should fire it, with its text, and not on the others."""
    promtool = shutil.which("promtool") or shutil.which("promtool", path=str(REPO / ".venv/bin"))
    if promtool is None:
        pytest.skip("promtool is not installed (tools/fetch-promtool unpacks it from Debian's prometheus)")
    for argv in (
        ["check", "rules", str(REPO / "docs/prometheus/pyvz-alerts.yml")],
        ["test", "rules", str(REPO / "tests/unit/fixtures/pyvz-alerts.test.yml")],
    ):
        done = subprocess.run([promtool, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def test_grafana_dashboard_queries_exported_names() -> None:
    dashboard = json.loads((REPO / "docs/grafana/pyvz-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "ctid" in variables
    assert _metric_names(variables["ctid"]["query"]["query"]) <= metrics.NAMES
    titles, exprs = [], []
    for panel in dashboard["panels"]:
        titles.append(panel["title"].lower())
        exprs += [target["expr"] for target in panel.get("targets", [])]
    for topic in ("cpu", "memory", "failcnt", "network", "disk"):
        assert any(topic in title for title in titles), topic
    assert exprs
    for expr in exprs:
        names = _metric_names(expr)
        assert names and names <= metrics.NAMES, f"{expr}: {names - metrics.NAMES}"
        per_ct = [n for n in names if n.startswith("pyvz_ct_")]
        assert not per_ct or expr.count('ctid=~"$ctid"') == len(re.findall(r"pyvz_ct_\w+\{", expr)), expr
