"""Where pyvz keeps things in etcd: the one place that spells the key layout (docs/cluster.md
shows it). Every value is JSON.

/pyvz/members/<host>          {name, address, client_url, peer_url, member_id, joined}:
                              written by init/join, deleted by leave; no lease (a dead
                              host stays a member, its lease shows it dead)
/pyvz/hosts/<host>            {name, address, pid, lease, ttl, updated, cts: [...],
                              capacity: {...}, health: {...}}: the agent's publication,
                              attached to its lease, so it vanishes when the agent stops
                              renewing it
/pyvz/leader/<role>           the elected host's name (Election), attached to its lease
/pyvz/reservations/ctid/<N>   reserve() keys for the CT namespace, one per CTID, name and
/pyvz/reservations/name/<NAME>  address: value owner_value(host, ...) (for the helpers who
/pyvz/reservations/ip/<ADDR>    build create/clone/migrate on them)
/pyvz/ha/<CTID>               {ctid, host, prio, state, ...}: where an HA CT (HA_ENABLE=yes)
                              belongs and whether it should run (pyvz.cluster.ha); no
                              lease: it outlives its host, which is the point
"""

from __future__ import annotations

ROOT = "/pyvz/"
MEMBERS = ROOT + "members/"
HOSTS = ROOT + "hosts/"
LEADER = ROOT + "leader/"
RESERVATIONS = ROOT + "reservations/"
HA = ROOT + "ha/"


def member(name: str) -> str:
    return MEMBERS + name


def host(name: str) -> str:
    return HOSTS + name


def leader(role: str) -> str:
    return LEADER + role


def ctid(ctid: int) -> str:
    return f"{RESERVATIONS}ctid/{ctid}"


def ct_name(name: str) -> str:
    return f"{RESERVATIONS}name/{name}"


def ip(address: str) -> str:
    return f"{RESERVATIONS}ip/{address}"


def ha(ctid: int) -> str:
    return f"{HA}{ctid}"
