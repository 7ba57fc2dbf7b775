"""The replicas a standby host keeps of other hosts' CTs (the receiving side of vzreplicate).

A replica is not a CT: it has no CTID.conf, no name link, no mount point and no LXC object,
so vzlist never lists it, `vzctl boot` never starts it and no CTID command reaches it. It
lives in the directory that holds this host's private areas (Paths.replicas_in), one
directory per CTID:

    .replicas/CTID/replica/     the newest good replica, what `vzctl recover` starts:
                        fs          the CT's files, a read-only subvolume as received
                        ve.conf     the CT's config as its host sent it (checked)
                        scripts.json  its action scripts
                        meta.json   where and when it came from (Replica's fields)
    .replicas/CTID/.incoming/   a run in progress, built the same way
    .replicas/CTID/.promoting   while `vzctl recover` makes a CT of it

A run receives into .incoming and only then swaps it with replica/ in one step
(renameat2 RENAME_EXCHANGE): a kill or a cut link at any moment leaves the previous replica
as it was, and whatever the interrupted run left is swept by the next one. The received
subvolume's received UUID is the source's snapshot UUID: the parent the next incremental
stream names.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyvz.atomic import exchange, fsync_dir, write_atomic
from pyvz.config import CtConfig
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.params import MIN_CTID, PRIVATE, parse_ctid
from pyvz.storage.base import remove_with_subvolumes

CURRENT = "replica"
STAGING = ".incoming"
PROMOTING = ".promoting"
FILES = "fs"
CONFIG = "ve.conf"
SCRIPTS = "scripts.json"
META = "meta.json"


@dataclass(frozen=True)
class Replica:
    """One replica held here: the newest good copy of a CT of another host."""

    ctid: int
    source: str  # the sending host's name, as it gave it
    peer: str  # the fingerprint of the migration key that sent it
    received: float  # when it became the replica here (epoch seconds)
    taken: float  # when the source took the snapshot it holds (the data's age)
    uuid: str  # the source snapshot's UUID: the received UUID of `files`
    size: int  # bytes of the CT's files at the snapshot, as the source counted them
    sent: int  # bytes of the stream of the run that made it
    incremental: bool  # that run sent only the change since the replica before
    name: str | None  # the CT's NAME, if it has one
    path: Path  # the replica's directory

    @property
    def files(self) -> Path:
        return self.path / FILES

    @property
    def config_text(self) -> str:
        return (self.path / CONFIG).read_text()

    @property
    def scripts(self) -> dict[str, str]:
        try:
            loaded = json.loads((self.path / SCRIPTS).read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}

    def as_json(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["path"] = str(self.path)
        return fields


def meta_json(
    *,
    ctid: int,
    source: str,
    peer: str,
    taken: float,
    uuid: str,
    size: int,
    sent: int,
    incremental: bool,
    name: str | None,
) -> str:
    """meta.json of a replica that becomes current now."""
    fields = {
        "ctid": ctid,
        "source": source,
        "peer": peer,
        "received": time.time(),
        "taken": taken,
        "uuid": uuid,
        "size": size,
        "sent": sent,
        "incremental": incremental,
        "name": name,
    }
    return json.dumps(fields, indent=1) + "\n"


def private_dir(host: Host) -> Path:
    """Where this host keeps private areas: VE_PRIVATE's directory (the pool)."""
    defaults = CtConfig.merge(MIN_CTID, host.global_conf.items(), {}, host.paths.vz_conf)
    return host.paths.host(defaults.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET)).parent


class ReplicaStore:
    """The replicas held on this host. Callers hold the CTID's lock (host.ct_lock) for any
    change: the receiver for a whole run, promote and remove for theirs."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.base = host.paths.replicas_in(private_dir(host))

    def dir(self, ctid: int) -> Path:
        return self.base / str(ctid)

    def staging(self, ctid: int) -> Path:
        return self.dir(ctid) / STAGING

    def promoting(self, ctid: int) -> Path:
        return self.dir(ctid) / PROMOTING

    def get(self, ctid: int) -> Replica | None:
        """The newest good replica of CT `ctid`, or None."""
        path = self.dir(ctid) / CURRENT
        try:
            raw = json.loads((path / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise VzError(ExitCode.SYSTEM_ERROR, f"replica of CT {ctid}: unreadable {META}: {err}") from None
        try:
            return Replica(
                ctid=int(raw["ctid"]),
                source=str(raw["source"]),
                peer=str(raw["peer"]),
                received=float(raw["received"]),
                taken=float(raw["taken"]),
                uuid=str(raw["uuid"]),
                size=int(raw["size"]),
                sent=int(raw["sent"]),
                incremental=bool(raw["incremental"]),
                name=str(raw["name"]) if raw.get("name") else None,
                path=path,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise VzError(ExitCode.SYSTEM_ERROR, f"replica of CT {ctid}: bad {META}: {err}") from None

    def all(self) -> list[Replica]:
        """Every replica held here, by CTID."""
        found = []
        try:
            names = os.listdir(self.base)
        except FileNotFoundError:
            return []
        for name in names:
            try:
                ctid = parse_ctid(name)
            except VzError:
                continue
            replica = self.get(ctid)
            if replica is not None:
                found.append(replica)
        return sorted(found, key=lambda r: r.ctid)

    def by_name(self, name: str) -> Replica | None:
        return next((r for r in self.all() if r.name == name), None)

    # ---- changes (under the CTID's lock) --------------------------------------------------------

    def new_staging(self, ctid: int) -> Path:
        """An empty staging directory for a run, after sweeping what an interrupted one left."""
        self.sweep(ctid)
        staging = self.staging(ctid)
        staging.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging.mkdir(mode=0o700)
        return staging

    def sweep(self, ctid: int) -> None:
        """What an interrupted run left: its staging (with a half-received subvolume), or
        after a swap that was not finished, the previous replica it had swapped out."""
        remove_with_subvolumes(self.staging(ctid))

    def commit(self, ctid: int, staged: Path) -> None:
        """Make `staged` (complete: files, config, meta, all synced to disk) the replica, in
        one step."""
        current = self.dir(ctid) / CURRENT
        if current.exists():
            exchange(staged, current)  # the commit point; staged now holds the one before
            fsync_dir(current.parent)
            remove_with_subvolumes(staged)
        else:
            os.rename(staged, current)
            fsync_dir(current.parent)

    def remove(self, ctid: int) -> bool:
        """Drop the replica of `ctid` (and what runs left); whether there was one."""
        directory = self.dir(ctid)
        if not directory.exists():
            return False
        had = (directory / CURRENT / META).exists()
        # Renamed out of the way first: a kill in the middle leaves no half replica behind
        # that reads as good.
        doomed = self.base / f".{ctid}.removing"
        remove_with_subvolumes(doomed)
        os.rename(directory, doomed)
        remove_with_subvolumes(doomed)
        return had

    def sweep_removals(self) -> None:
        """Removals a kill interrupted (see remove)."""
        try:
            names = os.listdir(self.base)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") and name.endswith(".removing"):
                remove_with_subvolumes(self.base / name)


def write_staged(staging: Path, config: str, scripts: dict[str, str]) -> None:
    """Not synced one by one: the commit syncs the whole filesystem before the swap."""
    write_atomic(staging / CONFIG, config, mode=0o600, durable=False)
    write_atomic(staging / SCRIPTS, json.dumps(scripts, indent=1) + "\n", mode=0o600, durable=False)
