"""The per-host cluster agent (`vzcluster agent`, unit pyvz-cluster-agent.service).

It holds this host's lease (LEASE_TTL seconds, renewed every TTL/3 by a thread of its own,
so a slow publication never delays a renewal) and publishes the host under
/pyvz/hosts/<name>, attached to that lease: when the agent dies or the host is cut off,
etcd drops the record once the TTL has passed, and every other host sees it gone.

The record (JSON) holds the host's CTs (ctid, name, hostname, status, ip: the vzlist view,
from pyvz.listing), its capacity (CPUs, RAM, disk) and health (load, etcd reachable). It is
written at start, then every PUBLISH_INTERVAL seconds.

Later loops (replication schedules, HA) plug in as `Agent.loops`: callables run after each
publication in the agent's main thread, with the agent at hand (its lease id, `lease_valid`
for self-fencing, its own etcd client). A failing loop is logged and does not stop the agent.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyvz.cluster import fence, keys
from pyvz.cluster.etcd import Etcd
from pyvz.cluster.ha import HaThread, replicas_held
from pyvz.cluster.member import agent_pid_file, running_pid
from pyvz.cluster.settings import Settings
from pyvz.errors import ClusterExit, VzError
from pyvz.host import Host
from pyvz.log import log

Loop = Callable[["Agent"], None]


def default_loops() -> list[Loop]:
    """The loops every agent runs after each publication. Replication and HA add theirs here
    (each a function of the agent, quick, raising nothing it cannot live with)."""
    from pyvz.cluster.ha import publish_records
    from pyvz.cluster.namespace import reconcile

    return [reconcile, publish_records]


def ct_entries(host: Host) -> list[dict[str, Any]]:
    """This host's CTs as vzlist sees them (a CT whose private area is gone is left out)."""
    from pyvz.cluster.fence import load_fenced
    from pyvz.cluster.ha import ha_settings
    from pyvz.listing import records

    fenced = load_fenced(host.paths)
    entries = []
    for record in records(host):
        status = record.status
        if status is None:
            continue
        ha, prio = ha_settings(record.own)
        entry = {
            "ctid": record.ctid,
            "name": record.name,
            "hostname": record.raw("HOSTNAME"),
            "status": status,
            "numproc": record.nproc,
            "ip": [word.split("/")[0] for word in (record.ip or "").split()],
            "ha": ha,
            "ha_prio": prio,
        }
        if record.ctid in fenced:
            entry["fenced"] = "stale" if fenced[record.ctid].get("stale") else "fenced"
        entries.append(entry)
    return entries


def capacity(host: Host) -> dict[str, Any]:
    from pyvz.resources.capacity import disk_capacity, host_capacity, parse_meminfo
    from pyvz.storage.mounts import is_mountpoint

    cap = host_capacity()
    try:
        available = parse_meminfo(Path("/proc/meminfo").read_text()).get("MemAvailable", 0)
    except OSError:
        available = 0
    private_dir = host.paths.lib_vz / "private"
    probe = private_dir if private_dir.exists() else host.paths.root
    stat = os.statvfs(probe)
    return {
        "cpus": cap.cpus,
        "ram": cap.ram,
        "ram_available": available,
        "swap": cap.swap,
        "disk": disk_capacity(private_dir, host.setting("POOL_SIZE")),
        "disk_free": stat.f_bavail * stat.f_frsize if is_mountpoint(probe) or probe.exists() else 0,
    }


class Agent:
    def __init__(self, settings: Settings, host: Host | None = None) -> None:
        self.settings = settings
        self.host = host or Host(settings.paths)
        self.client = settings.client()
        self.loops: list[Loop] = default_loops()
        self.lease = 0
        self.lease_valid = 0.0  # time.monotonic() until which the lease is known to live
        self.stopping = threading.Event()
        self._renewed = threading.Event()
        self._problem = ""  # the last thing logged as wrong (each is said once)

    # ---- the lease ----------------------------------------------------------------------

    def _say(self, problem: str) -> None:
        if problem and problem != self._problem:
            log.warning(problem)
        elif not problem and self._problem:
            log.info("etcd answers again; the lease is held")
        self._problem = problem

    def _grant(self, client: Etcd, deadline: float) -> None:
        sent = time.monotonic()
        self.lease = client.grant(self.settings.ttl, deadline=deadline)
        self._valid_until(sent + self.settings.ttl)
        self._renewed.set()

    def _valid_until(self, when: float) -> None:
        """The lease lives at least until `when`: the fencing watchdog hears it at once."""
        self.lease_valid = when
        try:
            fence.arm(self.settings.paths, when)
        except OSError as err:  # the watchdog then fences at the last deadline it read
            self._say(f"cannot tell the fencing watchdog the lease's deadline: {err}")

    def _keepalive_loop(self) -> None:
        """Renew every TTL/3; a lease found expired is replaced (and the host republished).

        One try may take a period at most, over every endpoint it tries: when the etcd
        leader's host is cut off, this host's member still forwards the renewal to it until
        it learns of the new leader, and keeps the request waiting for as long as etcd's
        request timeout (7 s with the default election timeout: more than a short TTL), and
        the next endpoint may be the cut-off host itself. Given up on and sent again, a
        renewal reaches the new leader a second or two after the election, well within the
        TTL that the new leader gives every lease afresh."""
        client = self.settings.client()
        period = self.settings.ttl / 3
        try:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    if self.lease == 0:
                        self._grant(client, sent + period)
                    elif client.keepalive(self.lease, deadline=sent + period) > 0:
                        self._valid_until(sent + self.settings.ttl)
                    else:
                        log.warning(f"lease {self.lease:x} had expired; taking a new one")
                        self._grant(client, time.monotonic() + period)
                    self._say("")
                except Exception as err:  # the thread must outlive any one failure
                    said = err.message if isinstance(err, VzError) else f"{type(err).__name__}: {err}"
                    self._say(f"cannot renew the lease: {said}")
                    # Soon again (a refusal is quick: not at once), while the lease may live.
                    self.stopping.wait(0.25)
                    continue
                self.stopping.wait(max(0.0, period - (time.monotonic() - sent)))
        finally:
            client.close()

    # ---- publication --------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        s = self.settings
        load = os.getloadavg()
        return {
            "name": s.name,
            "address": s.address,
            "pid": os.getpid(),
            "lease": str(self.lease),
            "ttl": s.ttl,
            "updated": round(time.time(), 3),
            "cts": ct_entries(self.host),
            "capacity": capacity(self.host),
            "replicas": replicas_held(self.host),
            "health": {"load": [round(x, 2) for x in load], "problem": self._problem or None},
        }

    def publish(self) -> None:
        if self.lease == 0:
            return
        data = json.dumps(self.record(), separators=(",", ":"))
        self.client.put(keys.host(self.settings.name), data, lease=self.lease)

    def sync_endpoints(self) -> None:
        """Keep cluster.conf's ENDPOINTS the members' client URLs, as members come and go."""
        if not self.settings.managed:
            return
        from pyvz.cluster.settings import save

        urls: list[str] = []
        for member in self.client.members():
            urls += [u for u in member.client_urls if u not in urls]
        if urls and tuple(urls) != self.settings.endpoints:
            save(self.settings.paths, {"ENDPOINTS": ",".join(urls)})
            self.settings = self.settings._replace(endpoints=tuple(urls))

    # ---- the process --------------------------------------------------------------------

    def _goodbye(self) -> None:
        """A clean stop. With CTs running that another host may start, the lease is left to
        expire and the watchdog fences them then, unless an agent is back before: a host
        nobody watches must not keep them. Otherwise the record goes now, not after the
        TTL, and so does the watchdog."""
        from pyvz.cluster.fence import protected

        running = protected(self.host)
        if running:
            log.warning(
                f"the agent stops with HA or replicated CTs running ({', '.join(map(str, running))}): "
                "they are fenced when the lease expires, unless the agent is back before"
            )
            return
        fence.disarm(self.settings.paths)
        if self.lease:
            try:
                self.client.revoke(self.lease)
            except VzError as err:
                log.warning(f"could not revoke the lease: {err.message}")

    def run(self) -> int:
        paths = self.settings.paths
        other = running_pid(agent_pid_file(paths))
        if other is not None and other != os.getpid():
            raise VzError(ClusterExit.ALREADY_MEMBER, f"the cluster agent runs already (pid {other})")
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        agent_pid_file(paths).write_text(f"{os.getpid()}\n")

        def on_signal(_signum: int, _frame: object) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if fence.read_deadline(paths) is None:
            # A grace of one TTL for what runs already (vzctl start checked each HA CT's
            # owner with etcd); a deadline left by an earlier agent stands as it is.
            fence.arm(paths, time.monotonic() + self.settings.ttl)
        fence.ensure_watchdog(paths)
        keeper = threading.Thread(target=self._keepalive_loop, name="lease", daemon=True)
        keeper.start()
        ha = HaThread(self)
        ha.start()
        log.info(f"cluster agent for {self.settings.name}: lease TTL {self.settings.ttl} s")
        try:
            lease = 0
            while not self.stopping.is_set():
                self._renewed.wait(1.0)
                self._renewed.clear()
                try:
                    fresh = self.lease != lease
                    lease = self.lease
                    self.publish()
                    if fresh and lease:
                        log.info(f"holding lease {lease:x}; {keys.host(self.settings.name)} published")
                    self.sync_endpoints()
                except VzError as err:
                    self._say(f"cannot publish this host: {err.message}")
                except Exception as err:  # a CT's unreadable state must not end the lease's holder
                    log.error(f"cannot publish this host: {type(err).__name__}: {err}")
                if fence.running_watchdog(paths) is None:
                    log.warning("the fencing watchdog had stopped: started again")
                    fence.ensure_watchdog(paths)
                for loop in self.loops:
                    try:
                        loop(self)
                    except Exception as err:  # one loop's bug must not stop the lease's holder
                        log.error(f"cluster loop {getattr(loop, '__name__', loop)} failed: {err}")
                deadline = time.monotonic() + self.settings.publish_interval
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    if self._renewed.wait(0.5) and self.lease != lease:
                        break  # a new lease: republish now
                    self._renewed.clear()
        finally:
            self.stopping.set()
            keeper.join(timeout=self.settings.timeout + 2)
            ha.join(timeout=self.settings.timeout + 2)
            self._goodbye()
            self.client.close()
            if running_pid(agent_pid_file(paths)) == os.getpid():
                agent_pid_file(paths).unlink(missing_ok=True)
        return 0
