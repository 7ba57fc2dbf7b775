"""One namespace for a cluster: a CTID, a CT name or an address is held by one CT on one
host, reserved in etcd in the same transaction that lets a CT come into being.

Where a host is in no cluster (no ready cluster.conf) none of this runs, and nothing of it
is imported. Where it is, every CT that is created, cloned, restored or pulled from an
OpenVZ host reserves its CTID, name and addresses first (pyvz.cluster.etcd.reserve: all or
none), and gives them back if the command fails; `vzctl set` reserves the name and
addresses it adds before it changes anything, and gives back those it removed; `vzctl
destroy` gives back what the CT held. A reservation's value names its host and CT, so the
same command run again (after a kill -9, say) finds its own reservation and goes on.

A host cut off from the cluster's quorum refuses all of these with one line: it cannot know
whether another host took the name meanwhile. The CTs it runs keep running.

A migrated CT keeps its reservations: the receiving host's agent takes them over once the
host that held them no longer lists the CT (reconcile(), run by the agent after each
publication), and a host gives back what it holds for a CT that no host lists any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyvz.cluster import keys
from pyvz.errors import ClusterExit, VzError
from pyvz.log import log
from pyvz.paths import Paths

if TYPE_CHECKING:
    from pyvz.cluster.agent import Agent
    from pyvz.cluster.etcd import Etcd
    from pyvz.cluster.settings import Settings


def clustered(paths: Paths) -> bool:
    """Whether this host is a ready member (a stat where it is not: vzctl create and clone
    ask, and the etcd client's imports would cost them more than the rest)."""
    if not (paths.etc_vz / "cluster.conf").exists():
        return False
    from pyvz.cluster import settings

    return settings.ready(paths)


def _ours(paths: Paths, ctid: int) -> tuple[Settings, str]:
    """This host's cluster settings, and the value its reservations for CT `ctid` hold."""
    from pyvz.cluster import settings

    conf = settings.load(paths)
    return conf, value(conf.name, ctid)


def value(host: str, ctid: int) -> str:
    """What a reservation holds: the same for the same CT on the same host, whoever asks."""
    return json.dumps({"ctid": ctid, "host": host}, sort_keys=True)


def wanted(ctid: int, name: str | None, addresses: Iterable[str]) -> dict[str, str]:
    """The keys a CT with this name and these addresses (IP_ADDRESS words) holds, each with
    a short description for messages."""
    found = {keys.ctid(ctid): f"CTID {ctid}"}
    if name:
        found[keys.ct_name(name)] = f"name {name!r}"
    for word in addresses:
        address = word.split("/")[0]
        if address and address not in ("0.0.0.0", "::"):
            found[keys.ip(address)] = f"address {address}"
    return found


def of_config(ctid: int, own: Mapping[str, str]) -> dict[str, str]:
    """The keys a CT holds by its CTID.conf (NAME, IP_ADDRESS)."""
    return wanted(ctid, own.get("NAME") or None, (own.get("IP_ADDRESS") or "").split())


def _cut_off(err: VzError, what: str) -> VzError:
    return VzError(
        err.code,
        f"this host cannot reach its cluster's quorum ({err.message}): no CT can be {what} here "
        "until it is back (CTs that run keep running)",
    )


def _holder(etcd: Etcd, key: str) -> str:
    found = etcd.get(key)
    if found is None:
        return "someone"
    try:
        held: Any = json.loads(found.value)
        return f"CT {held['ctid']} on host {held['host']}"
    except (ValueError, KeyError, TypeError):
        return "someone"


def reserve_keys(paths: Paths, ctid: int, wanted_keys: Mapping[str, str], what: str) -> list[str]:
    """Reserve `wanted_keys` (key -> description) for CT `ctid` of this host, all or none;
    returns the keys, to be given back with release_keys() if the change fails."""
    if not wanted_keys or not clustered(paths):
        return []
    from pyvz.cluster.etcd import reserve

    conf, mine = _ours(paths, ctid)
    with conf.client() as etcd:
        try:
            taken = reserve(etcd, dict.fromkeys(wanted_keys, mine))
        except VzError as err:
            if err.code in (ClusterExit.UNAVAILABLE, ClusterExit.NO_QUORUM):
                raise _cut_off(err, what) from None
            raise
        if taken is not None:
            raise VzError(
                ClusterExit.TAKEN,
                f"{wanted_keys[taken]} is already used in the cluster ({_holder(etcd, taken)})",
            )
    return list(wanted_keys)


def release_keys(paths: Paths, ctid: int, held: Iterable[str]) -> None:
    """Give back what CT `ctid` of this host holds of `held`; a cluster out of reach only
    delays it (the agent gives back what no host lists)."""
    held = list(held)
    if not held or not clustered(paths):
        return
    from pyvz.cluster.etcd import release

    conf, mine = _ours(paths, ctid)
    try:
        with conf.client() as etcd:
            release(etcd, dict.fromkeys(held, mine))
    except VzError as err:
        log.warning(
            f"the cluster keeps CT {ctid}'s reservations for now ({err.message}); its agent gives them back"
        )


def hand_over(paths: Paths, ctid: int, held: Iterable[str], destination: str) -> None:
    """CT `ctid` now lives at `destination` (a migration's host name or address): what this
    host holds for it becomes that host's, in one transaction (held by the source, never
    free in between, so the source cannot hand the CTID out again). A destination that is no
    member of the cluster gets nothing: the keys go. A cluster out of reach only delays it:
    the destination's agent takes them over once this host lists the CT no more."""
    held = list(held)
    if not held or not clustered(paths):
        return
    from pyvz.cluster.etcd import delete_op, put_op, value_is

    conf, mine = _ours(paths, ctid)
    try:
        with conf.client() as etcd:
            # The members' records (vzcluster join writes them), else the agents' publications.
            members = [found.json() for prefix in (keys.MEMBERS, keys.HOSTS) for found in etcd.range(prefix)]
            names = [
                str(m["name"])
                for m in members
                if isinstance(m, dict) and destination in (m.get("name"), m.get("address"))
            ]
            for key in held:  # each on its own: a key this host never held is left alone
                then = [put_op(key, value(names[0], ctid))] if names else [delete_op(key)]
                etcd.txn([value_is(key, mine)], then)
    except VzError as err:
        log.warning(
            f"CT {ctid}'s reservations stay with this host for now ({err.message}); "
            f"{destination}'s agent takes them over"
        )


@contextmanager
def reserved(
    paths: Paths, ctid: int, name: str | None, addresses: Iterable[str], what: str
) -> Iterator[None]:
    """The CT's CTID, name and addresses reserved for the block; given back if it fails."""
    held = reserve_keys(paths, ctid, wanted(ctid, name, addresses), what)
    try:
        yield
    except BaseException:
        release_keys(paths, ctid, held)
        raise


def check_may_start(paths: Paths, ctid: int, protected: bool, ha_prio: int | None) -> None:
    """A CT that another host may start (HA, or replicated) starts here only while this
    host owns it and its agent holds a lease (else HA would start it elsewhere too), and
    not while it is fenced (fence.py). Elsewhere, nothing is asked. An HA CT (`ha_prio`
    given) is marked started in its HA record now, not at the agent's next publication:
    from this moment on, HA brings it back if this host dies."""
    if not protected or not clustered(paths):
        return
    from pyvz.cluster.fence import refuse_start

    refuse_start(paths, ctid)
    conf, mine = _ours(paths, ctid)
    try:
        with conf.client() as etcd:
            owner = etcd.get(keys.ctid(ctid))
            published = etcd.get(keys.host(conf.name))
            holder = (
                _holder(etcd, keys.ctid(ctid)) if owner is not None and owner.value != mine.encode() else ""
            )
    except VzError as err:
        raise VzError(
            err.code,
            f"CT {ctid} may run on another host (it has HA or standbys), and this host cannot ask "
            f"its cluster ({err.message}): it is not started",
        ) from None
    if holder:
        raise VzError(
            ClusterExit.TAKEN,
            f"CT {ctid} belongs to {holder} now: this copy is stale and stays stopped "
            "(destroy it here, or migrate the CT back)",
        )
    if published is None:
        raise VzError(
            ClusterExit.UNAVAILABLE,
            f"CT {ctid} has HA or standbys, and this host's cluster agent holds no lease (is it "
            "running? `vzcluster agent`): the cluster would start it elsewhere too",
        )
    if ha_prio is not None:
        from pyvz.cluster.ha import mark_started

        try:
            with conf.client() as etcd:
                mark_started(etcd, conf.name, conf.address, ctid, ha_prio)
        except VzError as err:
            log.warning(f"CT {ctid}'s HA record is updated later, by the agent ({err.message})")


# ---- the agent's part ------------------------------------------------------------------

_said: set[str] = set()


def _say_once(problem: str) -> None:
    if problem not in _said:
        _said.add(problem)
        log.warning(problem)


def reconcile(agent: Agent) -> None:
    """Make etcd's reservations agree with the CTs there are: this host's CTs hold theirs
    (absent ones are taken, and those of a CT that came here by migration are taken over
    from the host that no longer lists it), and what this host holds for a CT that no host
    lists is given back."""
    from pyvz.cluster.etcd import absent, delete_op, put_op, value_is

    etcd = agent.client
    me = agent.settings.name
    listers: dict[int, set[str]] = {}  # ctid -> the hosts whose agents list it
    for publication in etcd.range(keys.HOSTS):
        published = publication.json()
        if not isinstance(published, dict):
            continue
        for entry in published.get("cts", []):
            try:
                listers.setdefault(int(entry["ctid"]), set()).add(str(published["name"]))
            except (ValueError, KeyError, TypeError):
                continue
    from pyvz.listing import records

    here = {ct.ctid: ct for ct in records(agent.host) if ct.status is not None}
    reservations = {found.key: found for found in etcd.range(keys.RESERVATIONS)}  # one read for all
    for ctid, ct in here.items():
        mine = value(me, ctid)
        for key in of_config(ctid, ct.own):
            found = reservations.get(key)
            if found is None:
                etcd.txn([absent(key)], [put_op(key, mine)])
                continue
            held = found.json()
            if found.value == mine.encode() or not isinstance(held, dict):
                continue
            holders = listers.get(ctid, set())
            if held.get("ctid") == ctid and me in holders and held.get("host") not in holders:
                # Migrated here: the host that held it lists the CT no more.
                etcd.txn([value_is(key, found.value)], [put_op(key, mine)])
            elif held.get("host") != me:
                _say_once(f"CT {ctid} here and {_holder(etcd, key)} both claim {key}: one must be renamed")
    for found in reservations.values():
        held = found.json()
        if not isinstance(held, dict) or held.get("host") != me:
            continue
        if held.get("ctid") not in here and held.get("ctid") not in listers:
            etcd.txn([value_is(found.key, found.value)], [delete_op(found.key)])
