"""What `vzcluster status` and `vzcluster nodes` read from etcd and the local member."""

from __future__ import annotations

from typing import Any, NamedTuple

from pyvz.cluster import keys, member
from pyvz.cluster.etcd import Etcd, Member
from pyvz.cluster.settings import Settings
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.host import Host


class Node(NamedTuple):
    name: str
    address: str
    alive: bool  # its agent's lease holds (its record is in etcd)
    cts: int | None  # None: not known (no record)
    running: int | None
    cpus: int | None
    ram: int | None  # bytes
    disk_free: int | None
    record: dict[str, Any] | None

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "lease": "alive" if self.alive else "expired",
            "cts": self.cts,
            "running": self.running,
            "cpus": self.cpus,
            "ram": self.ram,
            "disk_free": self.disk_free,
            "ct_list": (self.record or {}).get("cts"),
        }


def nodes(client: Etcd, serializable: bool = False) -> list[Node]:
    """Every host of the cluster: the members, and any host publishing without being one.
    `serializable`: the local member's copy, which may be stale (for when there is no quorum)."""
    members = {
        kv.key[len(keys.MEMBERS) :]: kv.json() or {}
        for kv in client.range(keys.MEMBERS, serializable=serializable)
    }
    hosts = {
        kv.key[len(keys.HOSTS) :]: kv.json() or {}
        for kv in client.range(keys.HOSTS, serializable=serializable)
    }
    found = []
    for name in sorted(set(members) | set(hosts)):
        record = hosts.get(name)
        address = str((record or members.get(name) or {}).get("address") or "")
        cts = (record or {}).get("cts")
        cap = (record or {}).get("capacity") or {}
        found.append(
            Node(
                name=name,
                address=address,
                alive=record is not None,
                cts=len(cts) if isinstance(cts, list) else None,
                running=sum(1 for ct in cts if ct.get("status") == "running")
                if isinstance(cts, list)
                else None,
                cpus=cap.get("cpus"),
                ram=cap.get("ram"),
                disk_free=cap.get("disk_free"),
                record=record,
            )
        )
    return found


class Report(NamedTuple):
    lines: list[tuple[str, str]]  # (what, how it is)
    problems: list[tuple[ClusterExit | ExitCode, str]]  # one line each, worst first


def _member_line(one: Member, leader: int) -> str:
    role = "learner" if one.learner else "leader" if one.id == leader else "member"
    return f"{one.name or '(not started)'} {role} {','.join(one.client_urls) or '-'}"


def status(settings: Settings) -> Report:
    lines: list[tuple[str, str]] = [
        ("cluster", settings.cluster),
        ("host", f"{settings.name} {settings.address}"),
    ]
    problems: list[tuple[ClusterExit | ExitCode, str]] = []
    agent = member.running_pid(member.agent_pid_file(settings.paths))
    with settings.client(timeout=min(settings.timeout, 3.0)) as client:
        leader = 0
        etcd_members: list[Member] = []
        if settings.managed:
            try:
                own = client.status(settings.client_url)
                leader = own.leader
                lines.append(("member", f"{own.member_id:x} etcd {own.version} at {settings.client_url}"))
                if own.leader == 0:
                    problems.append(
                        (
                            ClusterExit.NO_QUORUM,
                            f"this host's member knows no leader: {', '.join(own.errors) or 'no quorum'}",
                        )
                    )
            except VzError as err:
                problems.append(
                    (ClusterExit.UNAVAILABLE, f"this host's etcd member does not answer: {err.message}")
                )
        try:
            etcd_members = client.members()
        except VzError as err:
            problems.append(
                (err.code if isinstance(err.code, ClusterExit) else ClusterExit.UNAVAILABLE, err.message)
            )
        answering = 0  # voting members this host reaches
        for one in etcd_members:
            seen = None
            for endpoint in one.client_urls:
                try:
                    seen = client.status(endpoint, timeout=1.5)
                    break
                except VzError:
                    continue
            if seen is not None:
                answering += 0 if one.learner else 1
                leader = leader or seen.leader
            elif not one.learner:
                said = f"etcd member {one.name or one.id} ({','.join(one.client_urls)}) does not answer"
                problems.append((ClusterExit.UNAVAILABLE, said))
        for one in etcd_members:
            lines.append(("etcd", _member_line(one, leader)))
        chief = next((m for m in etcd_members if m.id == leader), None)
        lines.append(("leader", f"{chief.name} (etcd)" if chief else "none known (etcd)"))
        try:
            for kv in client.range(keys.LEADER, serializable=True):
                lines.append(("leader", f"{kv.text} ({kv.key[len(keys.LEADER) :]})"))
        except VzError:
            pass  # said above: etcd does not answer
        voters = [m for m in etcd_members if not m.learner]
        if voters:
            quorum = answering > len(voters) // 2 and leader != 0
            counted = f"{answering} of {len(voters)} etcd members answer here"
            lines.append(("quorum", f"{'yes' if quorum else 'NO'}: {counted}, {len(voters) // 2 + 1} needed"))
            if not quorum:
                said = f"no quorum: {counted}; nothing can be reserved or decided until more are back"
                problems.insert(0, (ClusterExit.NO_QUORUM, said))
        lease = "-"
        try:
            record = client.get(keys.host(settings.name), serializable=True)
            if record is None:
                problems.append(
                    (
                        ClusterExit.UNAVAILABLE,
                        f"{keys.host(settings.name)} is not published: this host's lease has expired",
                    )
                )
                lease = "expired"
            else:
                lease_id = record.lease
                try:
                    left = client.time_to_live(lease_id)
                    lease = f"{lease_id:x}, {left} s left of {settings.ttl} s" if left >= 0 else "expired"
                except VzError:
                    lease = f"{lease_id:x} (its time left is unknown without quorum)"
        except VzError as err:
            problems.append((ClusterExit.UNAVAILABLE, f"cannot read this host's record: {err.message}"))
        lines.append(("lease", lease))
        lines.append(("agent", f"running (pid {agent})" if agent else "not running"))
        if agent is None:
            problems.append(
                (ClusterExit.UNAVAILABLE, "the cluster agent is not running (vzcluster agent, or its unit)")
            )
        _ha_lines(settings, client, lines, problems)
    return Report(lines, problems)


def _ha_lines(
    settings: Settings,
    client: Etcd,
    lines: list[tuple[str, str]],
    problems: list[tuple[ClusterExit | ExitCode, str]],
) -> None:
    """The fencing watchdog, what it fenced, and where the cluster's HA CTs belong."""
    from pyvz.cluster import fence
    from pyvz.cluster.ha import HaRecord

    watchdog = fence.running_watchdog(settings.paths)
    said = f"watchdog running (pid {watchdog})" if watchdog else "watchdog not running"
    lines.append(("fencing", f"{said}, margin {settings.fence_margin} s"))
    for ctid, entry in sorted(fence.load_fenced(settings.paths).items()):
        how = f"stale: runs on {entry.get('now_on', '?')}" if entry.get("stale") else "waits for the lease"
        lines.append(("fenced", f"CT {ctid} ({how})"))
    if watchdog is None and fence.protected(Host(settings.paths)):
        problems.append(
            (ClusterExit.UNAVAILABLE, "HA or replicated CTs run here, but no fencing watchdog watches them")
        )
    try:
        records = [r for kv in client.range(keys.HA, serializable=True) if (r := HaRecord.of(kv))]
    except VzError:
        return  # said above: etcd does not answer
    for rec in records:
        lines.append(("ha", f"CT {rec.ctid} prio {rec.prio} {rec.state} on {rec.host}"))
