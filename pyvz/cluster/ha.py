"""HA: a dead host's HA CTs start on the standby holding their newest replica.

Who knows what (all in etcd, see keys.py):
- /pyvz/ha/<CTID> says where an HA CT (HA_ENABLE=yes) belongs and whether it should run:
  {ctid, host, prio, state, from, since, tried, reason}. Its host's agent writes it
  (publish_records, after each publication): state "started" while it runs, "stopped"
  when the admin stopped it (HA then leaves it alone). It has no lease: it outlives its host.
- A standby's publication lists the replicas it holds ({ctid, taken, size, ram}), and its
  capacity.
- The CTID's reservation names the host that owns the CT (namespace.py).

The leader (elected among the agents through etcd, attached to its lease) looks every
TICK seconds. A host whose record is gone (its lease expired) is dead to it; once it has
been dead for FENCE_MARGIN seconds (the time the host itself takes, at worst, to stop these
CTs if it is only cut off: fence.py), each of its started HA CTs, highest HA_PRIO first,
goes to the live standby holding the newest replica that fits its free memory and disk.
That decision is one etcd transaction: the HA record says {host: standby, state:
recovering} and the CT's reservations (CTID, name, addresses) become the standby's, only
if the dead host's record is still absent and nothing changed meanwhile. The standby's own
HA thread then promotes the replica (pyvz.migrate.promote: the CT, its addresses announced
by start) and says "started"; a standby that cannot says "failed", and the leader tries
the next one.

A host that comes back finds what it fenced (fence.py): a CT it still owns is started
again; one that another host took over is stale and stays stopped (vzctl start refuses it,
the agent says so once). The promoted CT replicates to its old host from then on.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from pyvz.cluster import keys
from pyvz.cluster.etcd import (
    Election,
    Etcd,
    KeyValue,
    absent,
    delete_op,
    mod_revision_is,
    put_op,
    value_is,
)
from pyvz.cluster.namespace import value as reservation_value
from pyvz.errors import ClusterExit, VzError
from pyvz.log import log

if TYPE_CHECKING:
    from pyvz.cluster.agent import Agent
    from pyvz.host import Host

TICK = 0.5  # seconds between two looks of the HA thread
ROLE = "ha"


class HaRecord(NamedTuple):
    ctid: int
    host: str
    prio: int
    state: str  # started | stopped | recovering | failed
    source: str  # the host it is recovered from (recovering/failed)
    source_address: str  # that host's address (the CT replicates back to it)
    address: str  # the address of `host`, as its agent wrote it
    tried: tuple[str, ...]  # standbys that failed to start it
    reason: str
    kv: KeyValue

    @classmethod
    def of(cls, kv: KeyValue) -> HaRecord | None:
        raw = kv.json()
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                int(raw["ctid"]),
                str(raw["host"]),
                int(raw.get("prio", 0)),
                str(raw.get("state", "started")),
                str(raw.get("from", "")),
                str(raw.get("from_address", "")),
                str(raw.get("address", "")),
                tuple(str(t) for t in raw.get("tried", ())),
                str(raw.get("reason", "")),
                kv,
            )
        except (KeyError, TypeError, ValueError):
            return None


def record_value(ctid: int, host: str, prio: int, state: str, **extra: Any) -> str:
    return json.dumps(
        {"ctid": ctid, "host": host, "prio": prio, "state": state, "since": round(time.time(), 3), **extra}
    )


def ha_settings(own: dict[str, str] | Any) -> tuple[bool, int]:
    """(HA_ENABLE, HA_PRIO) of a CT's own config."""
    enabled = (own.get("HA_ENABLE") or "no").lower() == "yes"
    try:
        prio = int(own.get("HA_PRIO") or 0)
    except ValueError:
        prio = 0
    return enabled, prio


# ---- the owner's part: this host's HA records --------------------------------------------


def publish_records(agent: Agent) -> None:
    """Agent loop: the HA records of this host's CTs say what they are (one range read)."""
    from pyvz.cluster.fence import load_fenced
    from pyvz.listing import records

    etcd, me, address = agent.client, agent.settings.name, agent.settings.address
    fenced = load_fenced(agent.host.paths)
    found = {r.ctid: r for kv in etcd.range(keys.HA) if (r := HaRecord.of(kv)) is not None}
    here = {ct.ctid: ct for ct in records(agent.host) if ct.status is not None}
    for ctid, ct in here.items():
        enabled, prio = ha_settings(ct.own)
        rec = found.get(ctid)
        if not enabled:
            continue
        if ctid in fenced:
            continue  # the return (resume_fenced) decides
        state = "started" if ct.status == "running" else "stopped"
        if rec is None:
            owner = etcd.get(keys.ctid(ctid))
            if owner is None or owner.value == reservation_value(me, ctid).encode():
                etcd.txn(
                    [absent(keys.ha(ctid))],
                    [put_op(keys.ha(ctid), record_value(ctid, me, prio, state, address=address))],
                )
        elif (
            rec.host == me and rec.state in ("started", "stopped") and (rec.state, rec.prio) != (state, prio)
        ):
            then = [put_op(keys.ha(ctid), record_value(ctid, me, prio, state, address=address))]
            etcd.txn([mod_revision_is(rec.kv.key, rec.kv.mod_revision)], then)
    for ctid, rec in found.items():
        if rec.host != me or rec.state in ("recovering", "failed"):
            continue
        current = here.get(ctid)
        if current is None or not ha_settings(current.own)[0]:  # destroyed, moved away, HA turned off
            etcd.txn([mod_revision_is(rec.kv.key, rec.kv.mod_revision)], [delete_op(rec.kv.key)])


def mark_started(etcd: Etcd, me: str, address: str, ctid: int, prio: int) -> None:
    """HA CT `ctid` of this host starts: its record says so (unless another host holds it)."""
    key = keys.ha(ctid)
    found = etcd.get(key)
    rec = HaRecord.of(found) if found is not None else None
    value = record_value(ctid, me, prio, "started", address=address)
    if found is None:
        etcd.txn([absent(key)], [put_op(key, value)])
    elif rec is not None and rec.host == me and rec.state in ("started", "stopped"):
        etcd.txn([mod_revision_is(key, found.mod_revision)], [put_op(key, value)])


def replicas_held(host: Host) -> list[dict[str, Any]]:
    """This standby's replicas, as the leader weighs them."""
    from pyvz.config import ConfigFile
    from pyvz.migrate.replicas import ReplicaStore

    found = []
    for replica in ReplicaStore(host).all():
        ram = 0
        try:
            conf = ConfigFile.parse(replica.config_text, replica.path / "ve.conf")
            ram = _ram_bytes(conf.get("PHYSPAGES") or "")
        except (OSError, VzError):
            pass
        found.append({"ctid": replica.ctid, "taken": replica.taken, "size": replica.size, "ram": ram})
    return found


def _ram_bytes(physpages: str) -> int:
    """PHYSPAGES' limit in bytes (pages of 4 KiB, as vzctl stores it); 0 when unlimited."""
    limit = physpages.split(":")[-1].strip()
    return int(limit) * 4096 if limit.isdigit() and int(limit) < 2**50 else 0


# ---- the HA thread ------------------------------------------------------------------------


class HaThread:
    """Runs beside the agent's main loop, with its own etcd connection."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.me = agent.settings.name
        self.margin = agent.settings.fence_margin
        self.dead_since: dict[str, float] = {}  # host -> when this leader first saw it dead
        self._said: set[str] = set()
        self.leading = False
        self.thread = threading.Thread(target=self._loop, name="ha", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _say(self, text: str, key: str | None = None) -> None:
        key = key or text
        if key not in self._said:
            self._said.add(key)
            log.warning(text)

    def _loop(self) -> None:
        client = self.agent.settings.client()
        try:
            while not self.agent.stopping.wait(TICK):
                try:
                    if self.tick(client):
                        self._said.discard("quorum")
                    else:
                        self._say(
                            "HA decisions wait: this host's lease could not be renewed (no etcd "
                            "quorum, or etcd out of reach); no CT is moved until it is",
                            "quorum",
                        )
                except VzError as err:
                    if err.code in (ClusterExit.NO_QUORUM, ClusterExit.UNAVAILABLE):
                        self._say(f"HA decisions wait: {err.message}", "quorum")
                    else:
                        log.error(f"HA: {err.message}")
                except Exception as err:  # the thread must outlive any one failure
                    log.error(f"HA: {type(err).__name__}: {err}")
        finally:
            client.close()

    def tick(self, etcd: Etcd) -> bool:
        """One look; False when this host may decide nothing (its lease is not known to live)."""
        agent = self.agent
        if agent.lease == 0 or time.monotonic() >= agent.lease_valid:
            return False
        records = [r for kv in etcd.range(keys.HA) if (r := HaRecord.of(kv)) is not None]
        from pyvz.cluster.fence import fenced_file

        if fenced_file(agent.host.paths).exists():
            self.resume_fenced(etcd)
        for rec in records:
            if rec.host == self.me and rec.state == "recovering":
                self.recover_here(etcd, rec)
        election = Election(etcd, keys.leader(ROLE), self.me, agent.lease)
        leading = election.campaign()
        if leading != self.leading:
            self.leading = leading
            self.dead_since.clear()
            if leading:
                log.info(f"HA: this host ({self.me}) leads")
        if leading:
            self.decide(etcd, records)
        return True

    # ---- the leader ----------------------------------------------------------------------

    def decide(self, etcd: Etcd, records: list[HaRecord]) -> None:
        alive: dict[str, dict[str, Any]] = {}
        for kv in etcd.range(keys.HOSTS):
            published = kv.json()
            if isinstance(published, dict) and "name" in published:
                alive[str(published["name"])] = published
        now = time.monotonic()
        for name in list(self.dead_since):
            if name in alive:
                del self.dead_since[name]
        todo: list[HaRecord] = []
        for rec in records:
            if rec.state == "failed":
                todo.append(rec)
            elif rec.state in ("started", "recovering") and rec.host not in alive:
                since = self.dead_since.setdefault(rec.host, now)
                if now - since >= self.margin:
                    todo.append(rec)
                else:
                    self._say(
                        f"HA: host {rec.host}'s lease has expired: its HA CTs start elsewhere in "
                        f"{self.margin} s (once it has fenced them, if it is only cut off)",
                        f"dead {rec.host} {since}",
                    )
        if not todo:
            return
        reservations = etcd.range(keys.RESERVATIONS)
        taken: dict[str, list[int]] = {}  # standby -> [ram, disk] promised this round
        for rec in sorted(todo, key=lambda r: (-r.prio, r.ctid)):
            target = self._standby(rec, alive, taken)
            if target is None:
                self._say(
                    f"HA: CT {rec.ctid} (of host {rec.host}) cannot start anywhere: no live standby "
                    "holds a replica of it that fits its free memory and disk",
                    f"none {rec.ctid} {rec.kv.mod_revision}",
                )
                continue
            address = str(alive[target].get("address", ""))
            self._assign(etcd, rec, target, address, reservations, rec.host not in alive)

    def _standby(
        self, rec: HaRecord, alive: dict[str, dict[str, Any]], taken: dict[str, list[int]]
    ) -> str | None:
        best: tuple[float, str] | None = None
        for name, published in alive.items():
            if name == rec.host or name in rec.tried:
                continue
            replica = next((r for r in published.get("replicas", []) if r.get("ctid") == rec.ctid), None)
            if replica is None:
                continue
            cap = published.get("capacity", {})
            promised = taken.get(name, [0, 0])
            ram_free = int(cap.get("ram_available", 0)) - promised[0]
            disk_free = int(cap.get("disk_free", 0)) - promised[1]
            if int(replica.get("ram", 0)) > ram_free or int(replica.get("size", 0)) > disk_free:
                continue
            if best is None or float(replica.get("taken", 0)) > best[0]:
                best = (float(replica.get("taken", 0)), name)
        if best is None:
            return None
        published = alive[best[1]]
        replica = next(r for r in published["replicas"] if r.get("ctid") == rec.ctid)
        promised = taken.setdefault(best[1], [0, 0])
        promised[0] += int(replica.get("ram", 0))
        promised[1] += int(replica.get("size", 0))
        return best[1]

    def _assign(
        self, etcd: Etcd, rec: HaRecord, target: str, address: str, reservations: list[KeyValue], dead: bool
    ) -> None:
        held = reservation_value(rec.host, rec.ctid).encode()
        moved = [kv.key for kv in reservations if kv.value == held]
        if keys.ctid(rec.ctid) not in moved:
            # Another host owns the CT now (a manual recover, a migration): its agent says so.
            self._say(f"HA: CT {rec.ctid} is no longer {rec.host}'s: left alone", f"owner {rec.ctid}")
            return
        compare = [mod_revision_is(rec.kv.key, rec.kv.mod_revision)]
        compare += [value_is(key, held) for key in moved]
        if dead:
            compare.append(absent(keys.host(rec.host)))
        if rec.state in ("recovering", "failed") and rec.source:
            source, source_address = rec.source, rec.source_address
        else:
            source, source_address = rec.host, rec.address
        extra = {"from": source, "from_address": source_address, "tried": list(rec.tried), "address": address}
        then = [put_op(rec.kv.key, record_value(rec.ctid, target, rec.prio, "recovering", **extra))]
        then += [put_op(key, reservation_value(target, rec.ctid)) for key in moved]
        if etcd.txn(compare, then).succeeded:
            log.warning(f"HA: CT {rec.ctid} of host {rec.host} starts on {target} from its newest replica")

    # ---- the standby -----------------------------------------------------------------------

    def recover_here(self, etcd: Etcd, rec: HaRecord) -> None:
        from pyvz.ct.container import Container
        from pyvz.migrate.promote import promote

        host = self.agent.host
        ct = Container(host, rec.ctid)
        state, reason = "started", ""
        try:
            if ct.has_config():
                if not ct.is_running():  # made by an earlier try that died before it said so
                    ct.start()
            else:
                came_from = rec.source_address or rec.source
                promote(host, rec.ctid, start=True, reserve=False, came_from=came_from)
        except VzError as err:
            state, reason = "failed", err.message
        except Exception as err:  # say it failed, so that the leader tries the next standby
            state, reason = "failed", f"{type(err).__name__}: {err}"
        extra: dict[str, Any] = {"from": rec.source, "from_address": rec.source_address}
        extra["address"] = self.agent.settings.address
        if state == "failed":
            extra |= {"tried": [*rec.tried, self.me], "reason": reason}
            log.error(f"HA: CT {rec.ctid} could not start here: {reason}")
        else:
            log.warning(f"HA: CT {rec.ctid} of host {rec.source} runs here now")
        then = [put_op(rec.kv.key, record_value(rec.ctid, self.me, rec.prio, state, **extra))]
        etcd.txn([mod_revision_is(rec.kv.key, rec.kv.mod_revision)], then)

    # ---- the host that comes back ----------------------------------------------------------

    def resume_fenced(self, etcd: Etcd) -> None:
        """What this host fenced: started again where it still owns it, else stale."""
        from pyvz.cluster.fence import load_fenced, save_fenced
        from pyvz.ct.container import Container

        paths = self.agent.host.paths
        mine = etcd.get(keys.host(self.me))
        if mine is None or mine.lease != self.agent.lease:
            return  # not published under this lease yet: the leader may still act on us
        entries = load_fenced(paths)
        changed = False
        for ctid, entry in sorted(entries.items()):
            if entry.get("stale"):
                continue
            owner = etcd.get(keys.ctid(ctid))
            ours = reservation_value(self.me, ctid).encode()
            ha = etcd.get(keys.ha(ctid))
            rec = HaRecord.of(ha) if ha is not None else None
            if owner is not None and owner.value == ours and (rec is None or rec.host == self.me):
                # Touched in one transaction with the check, so that no takeover decided
                # on what was read before can commit after it.
                compare = [value_is(owner.key, ours)]
                then = []
                if rec is not None:
                    compare.append(mod_revision_is(rec.kv.key, rec.kv.mod_revision))
                    value = record_value(
                        ctid, self.me, rec.prio, "started", address=self.agent.settings.address
                    )
                    then.append(put_op(rec.kv.key, value))
                if not etcd.txn(compare, then).succeeded:
                    continue
                del entries[ctid]
                save_fenced(paths, entries)
                try:
                    with self.agent.host.ct_lock(ctid, wait=30.0):
                        Container(self.agent.host, ctid).start()
                    log.warning(f"CT {ctid} was fenced while this host was cut off: started again")
                except VzError as err:
                    log.error(
                        f"CT {ctid} was fenced while this host was cut off: cannot start it: {err.message}"
                    )
            else:
                holder = _holder_name(owner) if owner is not None else "no host"
                entry["stale"] = True
                entry["now_on"] = holder
                changed = True
                log.warning(
                    f"CT {ctid} here is a stale copy: it runs on {holder} since this host was cut off; "
                    "it stays stopped (destroy it here, or migrate the CT back)"
                )
        if changed:
            save_fenced(paths, entries)


def _holder_name(kv: KeyValue) -> str:
    held = kv.json()
    return str(held.get("host", "?")) if isinstance(held, dict) else "?"
