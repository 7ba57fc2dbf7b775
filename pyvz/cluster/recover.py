"""`vzctl recover CT` in a cluster: the CT's host must be gone, and is waited out.

Outside a cluster nothing can tell whether the CT's host is down for good, and the admin
says so with --force. In one, the cluster can: the host that owns the CT (its CTID's
reservation) holds no lease, or recover refuses. Then it waits FENCE_MARGIN seconds: a host
that is only cut off has stopped the CT by then (fence.py), as the HA leader waits before it
acts. The CT's reservations (and its HA record) become this host's in one transaction, on
condition that the old host is still without a lease and nobody took them meanwhile, and
only then is the replica promoted.
"""

from __future__ import annotations

import time

from pyvz.cluster import keys
from pyvz.cluster.etcd import absent, mod_revision_is, put_op, value_is
from pyvz.cluster.ha import HaRecord, record_value
from pyvz.cluster.namespace import value as reservation_value
from pyvz.errors import ClusterExit, VzError
from pyvz.log import log
from pyvz.paths import Paths


def take_over(paths: Paths, ctid: int) -> str:
    """Make CT `ctid` this host's in the cluster, once its old host is known gone; returns
    the old host's address ('' if none held it), for the replicas to go back to."""
    from pyvz.cluster.settings import load

    settings = load(paths)
    me = settings.name
    mine = reservation_value(me, ctid)
    with settings.client() as etcd:
        owner = etcd.get(keys.ctid(ctid))
        held = owner.json() if owner is not None else None
        old = str(held.get("host", "")) if isinstance(held, dict) else ""
        ha_kv = etcd.get(keys.ha(ctid))
        rec = HaRecord.of(ha_kv) if ha_kv is not None else None
        if owner is None or old == me:
            return ""  # nobody else holds it (or an earlier recover here already took it)
        if etcd.get(keys.host(old)) is not None:
            raise VzError(
                ClusterExit.TAKEN,
                f"CT {ctid} belongs to host {old}, which is alive (it holds its lease): "
                f"move the CT with vzmigrate instead",
            )
        margin = settings.fence_margin
        log.info(
            f"Host {old} holds no lease: waiting {margin} s, by which it has stopped CT {ctid} "
            "if it is only cut off (fencing)"
        )
        time.sleep(margin)
        theirs = reservation_value(old, ctid).encode()
        moved = [kv.key for kv in etcd.range(keys.RESERVATIONS) if kv.value == theirs]
        compare = [absent(keys.host(old)), *(value_is(key, theirs) for key in moved)]
        then = [put_op(key, mine) for key in moved]
        if rec is not None and ha_kv is not None:
            compare.append(mod_revision_is(ha_kv.key, ha_kv.mod_revision))
            value = record_value(ctid, me, rec.prio, "started", address=settings.address)
            then.append(put_op(ha_kv.key, value))
        if not etcd.txn(compare, then).succeeded:
            raise VzError(
                ClusterExit.TAKEN,
                f"CT {ctid} changed hands meanwhile (host {old} is back, or the HA leader or another "
                "host took it): nothing was done here",
            )
        address = rec.address if rec is not None and rec.host == old else ""
        if not address:
            member = etcd.get(keys.member(old))
            found = member.json() if member is not None else None
            address = str(found.get("address", "")) if isinstance(found, dict) else ""
        return address or old
