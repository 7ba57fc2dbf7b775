"""`vzlist --cluster`: every CT of every host of the cluster, as the hosts' agents publish
them in etcd (pyvz.cluster.agent.ct_entries), with the host each runs on.

One read of etcd, however many hosts: the view is as fresh as the agents' last
publications (PUBLISH_INTERVAL, 5 s by default). A host whose lease has expired has no
publication, so its CTs are not listed; `vzcluster nodes` names such hosts.
"""

from __future__ import annotations

from typing import Any

from pyvz.cluster import keys, settings
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.resources.beancounters import Beancounter
from pyvz.units import UNLIMITED

# The vzlist fields the agents publish what for (the others need the CT's own host).
FIELDS = ("ctid", "veid", "vpsid", "hostname", "name", "smart_name", "ip", "status", "numproc")


class RemoteCT:
    """A published CT, answering the questions vzlist's fields ask of a record."""

    def __init__(self, host: str, entry: dict[str, Any]) -> None:
        self.host = host
        self.ctid = int(entry["ctid"])
        self.name: str | None = entry.get("name") or None
        self.status: str | None = str(entry.get("status") or "stopped")
        self.running = self.status == "running"
        self.nproc = int(entry.get("numproc") or 0)
        addresses = [str(a) for a in entry.get("ip") or ()]
        # as vzlist keeps them: a running CT's with the kernel list's trailing blank
        self.ip: str | None = (
            "".join(a + " " for a in addresses) if self.running else " ".join(addresses)
        ) or None
        self._hostname: str | None = entry.get("hostname")

    def beancounter(self, name: str) -> Beancounter:
        """What vzlist's numproc field asks of a running CT: its task count, all that is
        published of its beancounters (check_fields lets no other through)."""
        held = self.nproc if name == "numproc" and self.running else None
        return Beancounter(name, held, None, UNLIMITED, UNLIMITED, None)

    def raw(self, key: str) -> str | None:
        return {"HOSTNAME": self._hostname, "NAME": self.name}.get(key)

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ctid": self.ctid,
            "name": self.name,
            "hostname": self._hostname,
            "status": self.status,
            "numproc": self.nproc,
            "ip": (self.ip or "").split(),
        }


def check_fields(names: list[str]) -> None:
    for name in names:
        if name not in FIELDS:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"Field {name} is not in the cluster's view (--cluster shows {', '.join(FIELDS)})",
            )


def cluster_cts(paths: Paths) -> list[RemoteCT]:
    """Every published CT, by CTID and then host."""
    conf = settings.load(paths)
    with conf.client() as etcd:
        publications = etcd.range(keys.HOSTS, serializable=False)
    found = []
    for publication in publications:
        published = publication.json()
        if not isinstance(published, dict):
            continue
        host = str(published.get("name") or publication.key.removeprefix(keys.HOSTS))
        for entry in published.get("cts") or ():
            try:
                found.append(RemoteCT(host, entry))
            except (KeyError, TypeError, ValueError):
                continue  # a publication from another version of pyvz: its other CTs still count
    return sorted(found, key=lambda ct: (ct.ctid, ct.host))
