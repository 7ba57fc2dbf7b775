"""`/metrics`: every CT of a root and the host, in the Prometheus text format (0.0.4).

Everything comes from where vzlist and vzubc get it: the CT's config, its cgroup (through
the v1/v2 abstraction in pyvz.resources.cgroups), the beancounters (pyvz.resources
.beancounters, the same numbers as /proc/user_beancounters), the storage driver's quota
count (vzlist's diskspace) and the CT's own network namespace. No command runs per CT, and
each file is read once per scrape. docs/metrics.md says what each name means; a name never
changes meaning, so a new meaning is a new name.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

from pyvz.api.exposition import Family, labels, number
from pyvz.errors import VzError
from pyvz.host import Host
from pyvz.listing import Record, records
from pyvz.net.traffic import ct_traffic
from pyvz.params import DISABLED, DISKSPACE, ONBOOT, PRIVATE
from pyvz.paths import Paths
from pyvz.resources import beancounters
from pyvz.resources.capacity import parse_meminfo
from pyvz.resources.cgroups import CgroupTree
from pyvz.resources.limits import host_cpus
from pyvz.runtime.lxc import LxcRuntime
from pyvz.units import UNLIMITED

STATES = ("running", "mounted", "suspended", "stopped")  # vzlist's status column
_STATE_LABELS = {state: labels([("state", state)]) for state in STATES}


class Metric(NamedTuple):
    name: str
    kind: str  # gauge, counter
    labels: tuple[str, ...]  # besides ctid and name, for the per-CT ones
    unit: str
    help: str
    source: str


CT = ("ctid", "name")
METRICS: tuple[Metric, ...] = (
    Metric("pyvz_ct_info", "gauge", (*CT, "hostname", "ostemplate", "layout"), "1",
           "Always 1: the CT's host name, OS template and storage layout as labels.",
           "CTID.conf: HOSTNAME, OSTEMPLATE, VE_LAYOUT"),
    Metric("pyvz_ct_up", "gauge", CT, "1/0",
           "1 when the CT is running, else 0.", "cgroup pids.current (vzlist's status)"),
    Metric("pyvz_ct_state", "gauge", (*CT, "state"), "1/0",
           "1 for the CT's status (running, mounted, suspended, stopped), 0 for the other three.",
           "vzlist's status: cgroup, mount table, dump directory"),
    Metric("pyvz_ct_onboot", "gauge", CT, "1/0",
           "1 when vzctl boot starts the CT with the host (ONBOOT=yes, DISABLED not yes), else 0.",
           "CTID.conf / vz.conf: ONBOOT, DISABLED"),
    Metric("pyvz_ct_uptime_seconds", "gauge", CT, "seconds",
           "Seconds since the running CT's init started.", "/proc/PID/stat of the CT's init"),
    Metric("pyvz_ct_cpu_seconds_total", "counter", CT, "seconds",
           "CPU time used by the running CT's processes since it started.",
           "v1 cpuacct.usage; v2 cpu.stat usage_usec"),
    Metric("pyvz_ct_memory_used_bytes", "gauge", CT, "bytes",
           "Memory the running CT's cgroup is charged for (physpages held, in bytes).",
           "v1 memory.usage_in_bytes; v2 memory.current"),
    Metric("pyvz_ct_memory_limit_bytes", "gauge", CT, "bytes",
           "The memory limit the kernel holds the running CT to; +Inf for none.",
           "v1 memory.limit_in_bytes; v2 memory.max"),
    Metric("pyvz_ct_swap_used_bytes", "gauge", CT, "bytes",
           "Swap the running CT uses (where the kernel accounts swap).",
           "v1 memory.memsw.usage_in_bytes - memory.usage_in_bytes; v2 memory.swap.current"),
    Metric("pyvz_ct_swap_limit_bytes", "gauge", CT, "bytes",
           "The swap limit on top of memory the kernel holds the running CT to; +Inf for none.",
           "v1 memory.memsw.limit_in_bytes - memory.limit_in_bytes; v2 memory.swap.max"),
    Metric("pyvz_ct_pids", "gauge", CT, "tasks",
           "Tasks in the running CT.", "pids.current"),
    Metric("pyvz_ct_pids_limit", "gauge", CT, "tasks",
           "The task limit the kernel holds the running CT to; +Inf for none.", "pids.max"),
    Metric("pyvz_ct_beancounter_held", "gauge", (*CT, "resource"), "the resource's",
           "Beancounter held, in the resource's OpenVZ unit (pages, bytes or items), where counted.",
           "pyvz.resources.beancounters (vzubc, /proc/user_beancounters)"),
    Metric("pyvz_ct_beancounter_maxheld", "gauge", (*CT, "resource"), "the resource's",
           "Beancounter maxheld since the CT started, in the resource's unit, where counted.",
           "pyvz.resources.beancounters"),
    Metric("pyvz_ct_beancounter_barrier", "gauge", (*CT, "resource"), "the resource's",
           "Beancounter barrier as configured, in the resource's unit; +Inf for unlimited.",
           "CTID.conf / vz.conf (the beancounter parameter)"),
    Metric("pyvz_ct_beancounter_limit", "gauge", (*CT, "resource"), "the resource's",
           "Beancounter limit as configured, in the resource's unit; +Inf for unlimited.",
           "CTID.conf / vz.conf (the beancounter parameter)"),
    Metric("pyvz_ct_beancounter_failcnt_total", "counter", (*CT, "resource"), "refusals",
           "Beancounter failcnt: times the kernel refused the CT this resource since it started.",
           "pyvz.resources.beancounters"),
    Metric("pyvz_ct_disk_used_bytes", "gauge", CT, "bytes",
           "Disk space counted against the CT's quota (vzlist's diskspace), where the layout counts it.",
           "the storage driver's quota count (btrfs: the qgroup's referenced bytes, sysfs)"),
    Metric("pyvz_ct_disk_softlimit_bytes", "gauge", CT, "bytes",
           "DISKSPACE barrier (vzlist's diskspace.s); +Inf for none.", "CTID.conf / vz.conf: DISKSPACE"),
    Metric("pyvz_ct_disk_limit_bytes", "gauge", CT, "bytes",
           "DISKSPACE limit (vzlist's diskspace.h); +Inf for none.", "CTID.conf / vz.conf: DISKSPACE"),
    Metric("pyvz_ct_network_receive_bytes_total", "counter", (*CT, "interface"), "bytes",
           "Bytes received on an interface of the running CT.", "/proc/PID/net/dev in the CT's netns"),
    Metric("pyvz_ct_network_transmit_bytes_total", "counter", (*CT, "interface"), "bytes",
           "Bytes sent on an interface of the running CT.", "/proc/PID/net/dev in the CT's netns"),
    Metric("pyvz_ct_network_receive_packets_total", "counter", (*CT, "interface"), "packets",
           "Packets received on an interface of the running CT.", "/proc/PID/net/dev in the CT's netns"),
    Metric("pyvz_ct_network_transmit_packets_total", "counter", (*CT, "interface"), "packets",
           "Packets sent on an interface of the running CT.", "/proc/PID/net/dev in the CT's netns"),
    Metric("pyvz_ct_blkio_read_bytes_total", "counter", (*CT, "device"), "bytes",
           "Bytes the running CT read from a block device.",
           "v1 blkio.throttle.io_service_bytes_recursive; v2 io.stat rbytes"),
    Metric("pyvz_ct_blkio_write_bytes_total", "counter", (*CT, "device"), "bytes",
           "Bytes the running CT wrote to a block device.",
           "v1 blkio.throttle.io_service_bytes_recursive; v2 io.stat wbytes"),
    Metric("pyvz_ct_blkio_reads_total", "counter", (*CT, "device"), "operations",
           "Read operations of the running CT on a block device.",
           "v1 blkio.throttle.io_serviced_recursive; v2 io.stat rios"),
    Metric("pyvz_ct_blkio_writes_total", "counter", (*CT, "device"), "operations",
           "Write operations of the running CT on a block device.",
           "v1 blkio.throttle.io_serviced_recursive; v2 io.stat wios"),
    Metric("pyvz_cts", "gauge", ("state",), "CTs",
           "CTs of this root by status (running, mounted, suspended, stopped).", "as pyvz_ct_state"),
    Metric("pyvz_host_cpus", "gauge", (), "CPUs", "Online CPUs of the host.",
           "/sys/devices/system/cpu/online"),
    Metric("pyvz_host_memory_total_bytes", "gauge", (), "bytes", "The host's RAM.", "/proc/meminfo MemTotal"),
    Metric("pyvz_host_memory_available_bytes", "gauge", (), "bytes",
           "RAM available to new work without swapping.", "/proc/meminfo MemAvailable"),
    Metric("pyvz_host_swap_total_bytes", "gauge", (), "bytes", "The host's swap.", "/proc/meminfo SwapTotal"),
    Metric("pyvz_host_swap_free_bytes", "gauge", (), "bytes", "Unused swap.", "/proc/meminfo SwapFree"),
    Metric("pyvz_scrape_ct_errors", "gauge", (), "CTs",
           "CTs this scrape could not read (destroyed meanwhile, an unreadable config).", "this scrape"),
    Metric("pyvz_scrape_duration_seconds", "gauge", (), "seconds",
           "How long this scrape took to collect.", "this scrape"),
)  # fmt: skip
NAMES = frozenset(metric.name for metric in METRICS)


def _bound(value: int) -> float:
    """A configured barrier or limit: OpenVZ's LONG_MAX is no limit at all."""
    return math.inf if value >= UNLIMITED else float(value)


@cache
def _device_name(number: str) -> str:
    """loop0 for 7:0, as the kernel names the block device; the number if it has no name."""
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{number}"))
    except OSError:
        return number


class _Scrape:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.cgroups: CgroupTree = host.runtime.cgroups
        self.families = {m.name: Family(m.name, m.kind, m.help) for m in METRICS}
        self.states = dict.fromkeys(STATES, 0)
        self.errors = 0

    def add(self, name: str, value: float | None, *label_sets: str) -> None:
        if value is not None:
            self.families[name].add(value, *label_sets)

    def guarded(self, record: Record) -> None:
        """One CT's samples, all or none: one that cannot be read is counted, not half-shown."""
        marks = [(family, len(family.lines)) for family in self.families.values()]
        try:
            self.ct(record)
        except (VzError, OSError, ValueError):
            for family, mark in marks:
                del family.lines[mark:]
            self.errors += 1

    def ct(self, record: Record) -> None:
        status = record.status
        if status is None:  # a config with no private area: vzlist does not show it either
            return
        ct = labels([("ctid", str(record.ctid)), *([("name", record.name)] if record.name else [])])
        add = self.add
        info = [  # as vzlist shows them: the CT's own CTID.conf, as written
            ("hostname", record.raw("HOSTNAME") or ""),
            ("ostemplate", record.raw("OSTEMPLATE") or ""),
            ("layout", record.layout),
        ]
        add("pyvz_ct_info", 1, ct, labels(info))
        add("pyvz_ct_up", int(status == "running"), ct)
        for state in STATES:
            add("pyvz_ct_state", int(state == status), ct, _STATE_LABELS[state])
        add("pyvz_ct_onboot", int(bool(record.value(ONBOOT)) and not record.value(DISABLED)), ct)
        used = record.disk_usage
        add("pyvz_ct_disk_used_bytes", None if used is None else used * 1024, ct)
        space = record.value(DISKSPACE)
        add("pyvz_ct_disk_softlimit_bytes", _bound(space.barrier) * 1024 if space else math.inf, ct)
        add("pyvz_ct_disk_limit_bytes", _bound(space.limit) * 1024 if space else math.inf, ct)
        if status == "running":
            self.running(record, ct)
        self.states[status] += 1  # last: a CT that failed half-way is not counted

    def running(self, record: Record, ct: str) -> None:
        add, cgroups = self.add, self.cgroups
        relative = self.host.runtime.cgroups_of(record.ctid).container
        kernel = cgroups.usage(relative)
        counters = beancounters.read(
            cgroups, relative, record.config, record.state_file, kernel=kernel, pids=record.pids
        )
        add("pyvz_ct_uptime_seconds", record.uptime, ct)
        add("pyvz_ct_cpu_seconds_total", cgroups.cpu_seconds(relative), ct)
        memory, swap, tasks = kernel.get("physpages"), kernel.get("swappages"), kernel.get("numproc")
        limits = cgroups.in_force(relative)
        add("pyvz_ct_memory_used_bytes", memory.held if memory else None, ct)
        add("pyvz_ct_memory_limit_bytes", limits.memory, ct)
        add("pyvz_ct_swap_used_bytes", swap.held if swap else None, ct)
        add("pyvz_ct_swap_limit_bytes", limits.swap if swap else None, ct)
        add("pyvz_ct_pids", tasks.held if tasks else None, ct)
        add("pyvz_ct_pids_limit", limits.pids, ct)
        # Five samples per beancounter, twenty beancounters per CT: the bulk of a scrape's
        # lines, so their labels are rendered once per counter rather than once per sample.
        families = self.families
        held, maxheld, barrier, limit, failcnt = (
            families[f"pyvz_ct_beancounter_{what}"].lines
            for what in ("held", "maxheld", "barrier", "limit", "failcnt_total")
        )
        for counter in counters or ():
            braces = f'{{{ct},resource="{counter.name}"}} '
            if counter.held is not None:
                held.append(f"pyvz_ct_beancounter_held{braces}{counter.held}")
            if counter.maxheld is not None:
                maxheld.append(f"pyvz_ct_beancounter_maxheld{braces}{counter.maxheld}")
            barrier.append(f"pyvz_ct_beancounter_barrier{braces}{number(_bound(counter.barrier))}")
            limit.append(f"pyvz_ct_beancounter_limit{braces}{number(_bound(counter.limit))}")
            if counter.failcnt is not None:
                failcnt.append(f"pyvz_ct_beancounter_failcnt_total{braces}{counter.failcnt}")
        pid = record.init_pid
        for link in (ct_traffic(pid) or ()) if pid is not None else ():
            interface = labels([("interface", link.interface)])
            add("pyvz_ct_network_receive_bytes_total", link.receive_bytes, ct, interface)
            add("pyvz_ct_network_transmit_bytes_total", link.transmit_bytes, ct, interface)
            add("pyvz_ct_network_receive_packets_total", link.receive_packets, ct, interface)
            add("pyvz_ct_network_transmit_packets_total", link.transmit_packets, ct, interface)
        for io in cgroups.io_counts(relative):
            device = labels([("device", _device_name(io.device))])
            add("pyvz_ct_blkio_read_bytes_total", io.read_bytes, ct, device)
            add("pyvz_ct_blkio_write_bytes_total", io.write_bytes, ct, device)
            add("pyvz_ct_blkio_reads_total", io.reads, ct, device)
            add("pyvz_ct_blkio_writes_total", io.writes, ct, device)

    def host_totals(self) -> None:
        for state, count in self.states.items():
            self.add("pyvz_cts", count, labels([("state", state)]))
        self.add("pyvz_host_cpus", len(host_cpus()))
        try:
            meminfo = parse_meminfo(Path("/proc/meminfo").read_text())
        except OSError:
            meminfo = {}
        for name, key in (
            ("pyvz_host_memory_total_bytes", "MemTotal"),
            ("pyvz_host_memory_available_bytes", "MemAvailable"),
            ("pyvz_host_swap_total_bytes", "SwapTotal"),
            ("pyvz_host_swap_free_bytes", "SwapFree"),
        ):
            self.add(name, meminfo.get(key))

    def count_io(self, running: Iterable[Record]) -> None:
        """Have the kernel count block I/O on the disks the running CTs' private areas are on
        (cgroup v1 counts only where blk-throttle is set up): one look-up per directory."""
        from pyvz.storage.blockdev import device_of

        parents = {self.host.paths.host(r.value(PRIVATE)).parent for r in running if r.value(PRIVATE)}
        for parent in parents:
            device = device_of(parent)
            if device is not None:
                self.cgroups.count_io(device.number, self.host.paths.tag)

    def text(self) -> str:
        return "".join(family.text() for family in self.families.values())


def render(paths: Paths, cgroups: CgroupTree | None = None) -> str:
    """The /metrics text of every CT of the root `paths` and of the host; `cgroups`: the
    hierarchy to read (default: the host's, as vzctl's)."""
    started = time.perf_counter()
    beancounters.new_reading()
    _device_name.cache_clear()
    host = Host(paths)
    if cgroups is not None:
        host.runtime = LxcRuntime(paths, cgroups)
    scrape = _Scrape(host)
    every = records(host)
    scrape.count_io(r for r in every if r.running)
    for record in every:
        scrape.guarded(record)
    scrape.host_totals()
    scrape.add("pyvz_scrape_ct_errors", scrape.errors)
    scrape.add("pyvz_scrape_duration_seconds", time.perf_counter() - started)
    return scrape.text()
