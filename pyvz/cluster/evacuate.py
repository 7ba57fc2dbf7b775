"""`vzcluster evacuate` and `vzcluster restore`: empty a host onto the others, and bring its
CTs back (issue 14, item 4).

evacuate runs on the host to empty. It moves every CT, higher BOOTORDER first (the order
`vzctl boot` starts them), with vzmigrate's own sender: a running CT live (CRIU) where it
can be dumped, else by a restart migration; a stopped one as it is. Each goes to the alive
host (by the agents' publications) with the most memory left once what was sent there is
counted. The plan is kept in $ROOT/var/lib/vz/evacuation.json (written atomically after
every CT) and in etcd (/pyvz/evacuations/<host>), so an evacuation that is interrupted
(Ctrl-C, kill -9, a cut cable) is resumed by running it again: a CT whose hand-over was
interrupted is settled first (vzmigrate --resolve), a CT already gone is not moved twice.

restore runs on each host that took CTs: it moves those that came from HOST back to it
(`vzcluster restore HOST`), and is as resumable, since a CT that is back is not here any
more. Both need the hosts' migration keys trusted both ways (vzmigrate --authorize).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pyvz.atomic import write_atomic
from pyvz.cluster import keys, settings
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.paths import Paths


def plan_path(paths: Paths) -> Path:
    return paths.lib_vz / "evacuation.json"


def evacuation_key(host: str) -> str:
    return f"{keys.ROOT}evacuations/{host}"


def _alive_hosts(conf: settings.Settings, only: list[str] | None) -> dict[str, dict[str, Any]]:
    """The other hosts whose agents publish now (their lease lives), by name."""
    with conf.client() as etcd:
        published = [found.json() for found in etcd.range(keys.HOSTS)]
    hosts = {
        str(p["name"]): p
        for p in published
        if isinstance(p, dict) and p.get("name") != conf.name and p.get("address")
    }
    if only is not None:
        unknown = [name for name in only if name not in hosts]
        if unknown:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"not an alive host of the cluster: {', '.join(unknown)} (vzcluster nodes lists them)",
            )
        hosts = {name: hosts[name] for name in only}
    if not hosts:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, "no other alive host to move CTs to (vzcluster nodes)"
        )
    return hosts


def _memory(host: Host, ctid: int) -> int:
    """Bytes a CT will need where it goes: what it holds now, 0 for a stopped one."""
    usage = host.runtime.cgroups.usage(host.runtime.cgroups_of(ctid).container).get("physpages")
    return usage.held or 0 if usage is not None else 0


def _order(host: Host) -> list[int]:
    from pyvz.listing import records
    from pyvz.params import BOOTORDER

    found = [r for r in records(host) if r.status is not None]
    return [r.ctid for r in sorted(found, key=lambda r: (-(r.value(BOOTORDER) or 0), r.ctid))]


def _save(paths: Paths, conf: settings.Settings, plan: dict[str, Any]) -> None:
    write_atomic(plan_path(paths), json.dumps(plan, indent=1, sort_keys=True))
    try:
        with conf.client() as etcd:
            etcd.put(evacuation_key(conf.name), json.dumps(plan, sort_keys=True))
    except VzError as err:  # the local file is what resumes; etcd only shows it to the others
        log.warning(f"the evacuation's state is not in etcd ({err.message})")


def evacuate(paths: Paths, target: str | None, only: list[str] | None, ssh_options: tuple[str, ...]) -> int:
    conf = settings.load(paths)
    if target is not None and target != conf.name:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"this host is {conf.name}: run `vzcluster evacuate` on {target} (its CTs move from there)",
        )
    host = Host(paths)
    try:
        plan: dict[str, Any] = json.loads(plan_path(paths).read_text())
        log.info(f"Resuming the evacuation of {conf.name} begun at {time.ctime(plan['started'])}")
    except (OSError, ValueError, KeyError):
        plan = {"host": conf.name, "started": int(time.time()), "to": {}, "done": [], "state": "running"}
    hosts = _alive_hosts(conf, only)
    free = {name: int((p.get("capacity") or {}).get("ram_available") or 0) for name, p in hosts.items()}
    ctids = _order(host)
    for number, ctid in enumerate(ctids, 1):
        if str(ctid) in plan["to"] and plan["to"][str(ctid)] in hosts:
            chosen = plan["to"][str(ctid)]  # planned before an interruption: the same place
        else:
            chosen = max(free, key=lambda name: free[name])
        free[chosen] -= _memory(host, ctid)
        plan["to"][str(ctid)] = chosen
        _save(paths, conf, plan)
        log.info(f"Evacuating CT {ctid} to {chosen} ({number} of {len(ctids)})")
        _move(host, ctid, str(hosts[chosen]["address"]), ssh_options)
        plan["done"].append(ctid)
        _save(paths, conf, plan)
    left = _order(host)
    if left:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"CTs still here: {left}; run it again")
    plan["state"] = "done"
    _save(paths, conf, plan)
    plan_path(paths).unlink(missing_ok=True)
    log.info(f"{conf.name} is empty: {len(plan['done'])} CTs moved")
    return 0


def restore(paths: Paths, source: str, ssh_options: tuple[str, ...]) -> int:
    """Move the CTs that evacuate sent here from `source` back to it."""
    conf = settings.load(paths)
    with conf.client() as etcd:
        found = etcd.get(evacuation_key(source))
        published = etcd.get(keys.host(source))
    plan = found.json() if found is not None else None
    if not isinstance(plan, dict):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"no evacuation of {source} is known")
    record = published.json() if published is not None else None
    if not isinstance(record, dict) or not record.get("address"):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{source} is not alive (vzcluster nodes)")
    host = Host(paths)
    here = set(_order(host))
    ours = [int(ctid) for ctid, name in plan.get("to", {}).items() if name == conf.name and int(ctid) in here]
    for ctid in ours:
        log.info(f"Moving CT {ctid} back to {source}")
        _move(host, ctid, str(record["address"]), ssh_options)
    log.info(f"{len(ours)} CTs moved back to {source}")
    return 0


def _move(host: Host, ctid: int, address: str, ssh_options: tuple[str, ...]) -> None:
    """One CT to `address`: live if it runs and can be dumped, else by a restart migration;
    an interrupted hand-over of it settled first."""
    from pyvz.ct.container import Container
    from pyvz.migrate import sender

    if sender.marker(host, ctid).exists():
        sender.resolve(host, address, ctid, ssh_options)
        if not Container(host, ctid).has_config():
            return  # it had arrived
    running = Container(host, ctid).is_running()
    opts = sender.Options(destination=address, ctid=ctid, online=running, ssh_options=ssh_options)
    try:
        sender.Sender(host, opts).run()
    except VzError as err:
        ct = Container(host, ctid)
        if not (running and ct.has_config() and ct.is_running() and not sender.marker(host, ctid).exists()):
            raise
        log.info(f"CT {ctid} cannot move live ({err.message}): moving it by a restart")
        sender.Sender(host, opts._replace(online=False)).run()
