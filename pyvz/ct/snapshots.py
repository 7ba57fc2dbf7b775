"""vzctl snapshot, snapshot-list, -switch, -delete, -mount and -umount.

A CT's snapshots live beside its private area (Area.snapshots), one directory per snapshot
holding the driver's copy of the CT's files (`fs`) and the CT's config (`ve.conf`). The list
itself, with each snapshot's parent and which one the CT's present state grew from, is one
JSON index written atomically; a snapshot is built under a partial name and enters the
index only when complete, and leaves the index before its files are deleted. Whatever a
kill -9 leaves behind is not in the index and is removed by the next snapshot command.

A running CT is frozen for the moment its files are snapshotted, so the files are what a
power cut at that instant would have left, with every write whole; while it is frozen CRIU
saves its memory and processes too (`dump` beside `fs`), and snapshot-switch resumes the CT
from them. Where CRIU cannot (not installed, a CT started by an older pyvz), pyvz says so and
the snapshot holds files and config only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from pyvz.atomic import write_atomic
from pyvz.ct.container import Container
from pyvz.ct.freeze import freeze_and_kill, frozen
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.storage.base import Area, StorageDriver, remove_path
from pyvz.storage.mounts import is_mountpoint
from pyvz.storage.mounts import umount as umount_snapshot

INDEX = "snapshots.json"
FIELDS = ("parent_uuid", "current", "uuid", "date", "name", "desc")
DEFAULT_FIELDS = ("parent_uuid", "current", "uuid", "date", "name")
NO_MEMORY_STATE = "it holds no memory state (taken of a stopped CT, or with --skip-suspend or no CRIU)"
_UUID_RE = re.compile(r"(\{)?([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})(?(1)\})")


# What each snapshot command fails with (vzctl 4.x, include/vzerror.h); errors that mean the
# same for every command (locked, no such CT, bad syntax) keep their own codes.
FAILURE_CODES = {
    "snapshot": ExitCode.CREATE_SNAPSHOT,
    "snapshot-switch": ExitCode.SWITCH_SNAPSHOT,
    "snapshot-delete": ExitCode.DELETE_SNAPSHOT,
    "snapshot-mount": ExitCode.MOUNT_SNAPSHOT,
    "snapshot-umount": ExitCode.UMOUNT_SNAPSHOT,
    "snapshot-list": ExitCode.LIST_SNAPSHOT,
}
_OWN_CODES = frozenset(
    {ExitCode.LOCKED, ExitCode.NO_CT_CONFIG, ExitCode.INVALID_PARAMETER_SYNTAX, ExitCode.NO_PRIVATE}
)


@contextmanager
def failing_as(command: str) -> Iterator[None]:
    """Run a snapshot command: its failures exit with vzctl's code for that command."""
    try:
        yield
    except VzError as err:
        if err.code in _OWN_CODES or not isinstance(err.code, ExitCode):
            raise
        raise VzError(FAILURE_CODES[command], err.message) from None


def parse_uuid(text: str) -> str:
    """A snapshot id as vzctl takes it, with or without braces; kept lowercase, bare."""
    match = _UUID_RE.fullmatch(text.strip())
    if not match:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid snapshot id {text!r} (want a UUID)")
    return match.group(2).lower()


def new_uuid() -> str:
    """A random (version 4) UUID, without the uuid module's import cost (~6 ms a command)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def shown(uuid: str) -> str:
    return f"{{{uuid}}}" if uuid else ""


class Snapshot(NamedTuple):
    uuid: str
    parent: str  # "" for the first one
    date: str  # local time, "YYYY-MM-DD HH:MM:SS" as vzctl prints it
    name: str
    desc: str


class Store:
    """One CT's snapshots on disk."""

    def __init__(self, area: Area) -> None:
        self.dir = area.snapshots

    def _index(self) -> tuple[str, list[Snapshot]]:
        try:
            data = json.loads((self.dir / INDEX).read_text())
        except FileNotFoundError:
            return "", []
        return data.get("current", ""), [Snapshot(**entry) for entry in data["snapshots"]]

    def _write(self, current: str, snapshots: list[Snapshot]) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        data = {"current": current, "snapshots": [s._asdict() for s in snapshots]}
        write_atomic(self.dir / INDEX, json.dumps(data, indent=1) + "\n", mode=0o600)

    @property
    def current(self) -> str:
        return self._index()[0]

    def all(self) -> list[Snapshot]:
        return self._index()[1]

    def get(self, uuid: str) -> Snapshot:
        for snapshot in self.all():
            if snapshot.uuid == uuid:
                return snapshot
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Unable to find snapshot by uuid {shown(uuid)}")

    def files(self, uuid: str) -> Path:
        return self.dir / uuid / "fs"

    def config(self, uuid: str) -> Path:
        return self.dir / uuid / "ve.conf"

    def memory(self, uuid: str) -> Path:
        """The CRIU dump of the CT's processes taken with the snapshot, if it was running."""
        return self.dir / uuid / "dump"

    def mount_record(self, uuid: str) -> Path:
        return self.dir / uuid / "mounted"

    def add(self, snapshot: Snapshot) -> None:
        """A new snapshot, which the CT's present state now grows from."""
        self._write(snapshot.uuid, [*self.all(), snapshot])

    def set_current(self, uuid: str) -> None:
        self._write(uuid, self.all())

    def remove(self, uuid: str) -> None:
        """Drop a snapshot from the index: its children and the CT's present state now grow
        from its parent (the history ploop's merge would have kept)."""
        current, snapshots = self._index()
        gone = next(s for s in snapshots if s.uuid == uuid)
        kept = [s._replace(parent=gone.parent) if s.parent == uuid else s for s in snapshots if s != gone]
        self._write(gone.parent if current == uuid else current, kept)

    def sweep(self, driver: StorageDriver) -> None:
        """Remove what an interrupted command left: directories the index does not name."""
        if not self.dir.is_dir():
            return
        known = {s.uuid for s in self.all()}
        for entry in self.dir.iterdir():
            if entry.name != INDEX and entry.name not in known and not entry.name.startswith(f".{INDEX}"):
                if (entry / "fs").exists():
                    driver.delete_snapshot(entry / "fs")
                remove_path(entry)


@contextmanager
def _locked(ct: Container) -> Iterator[tuple[Area, StorageDriver, Store]]:
    with ct.host.ct_lock(ct.ctid):
        if ct.paths.conf_file(ct.ctid).with_suffix(".rebuilding").exists():  # a killed rebuild's
            from pyvz.ct import rebuild

            rebuild.finish_interrupted(ct)
        area = ct.require_exists()
        driver = ct.driver()
        store = Store(area)
        store.sweep(driver)
        yield area, driver, store


def take(
    ct: Container,
    uuid: str | None = None,
    name: str = "",
    desc: str = "",
    skip_suspend: bool = False,
    skip_config: bool = False,
) -> str:
    """vzctl snapshot: returns the new snapshot's id."""
    uuid = parse_uuid(uuid) if uuid else new_uuid()
    with _locked(ct) as (area, driver, store):
        take_locked(ct, area, driver, store, uuid, name, desc, skip_suspend, skip_config)
    return uuid


def take_locked(
    ct: Container,
    area: Area,
    driver: StorageDriver,
    store: Store,
    uuid: str,
    name: str = "",
    desc: str = "",
    skip_suspend: bool = False,
    skip_config: bool = False,
) -> None:
    """take() for a caller that holds the CT lock (vzctl rebuild)."""
    if any(s.uuid == uuid for s in store.all()):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"snapshot {shown(uuid)} already exists")
    log.info(f"Creating snapshot {shown(uuid)}")
    if driver.copies_data:
        log.info(f"layout {driver.layout}: the snapshot is a full copy of the CT's files")
    partial = store.dir / f".{uuid}.partial"
    partial.mkdir(mode=0o700, parents=True)
    if not skip_config:
        (partial / "ve.conf").write_text(ct.conf_file().render())
    running = ct.is_running()
    if running and not skip_suspend:
        from pyvz.ct import checkpoint

        memory = checkpoint.memory_dumper(ct)
        cgroup = ct.host.runtime.cgroups_of(ct.ctid).container
        with frozen(ct.host.runtime.cgroups, cgroup, f"CT {ct.ctid}"):
            driver.snapshot(area, partial / "fs")
            if memory is not None:
                checkpoint.dump_frozen(ct, partial / "dump", memory)
        if memory is not None:
            log.info("The CT's memory and processes are saved with it")
    else:
        if running:
            log.warning("--skip-suspend: the CT keeps running; files written meanwhile may be torn")
        driver.snapshot(area, partial / "fs")
    partial.rename(store.dir / uuid)
    date = time.strftime("%Y-%m-%d %H:%M:%S")
    store.add(Snapshot(uuid, store.current, date, name, desc))
    log.info(f"Snapshot {shown(uuid)} has been successfully created")


def switch(
    ct: Container, uuid: str, skip_resume: bool = False, must_resume: bool = False, skip_config: bool = False
) -> None:
    """vzctl snapshot-switch: the CT's files (and config) go back to the snapshot's.

    A running CT is frozen and killed first (its state is discarded). With the memory state
    saved in the snapshot the CT is resumed from it, whether it ran or not (--skip-resume
    leaves it stopped). Without, a CT that was running is started afresh, and
    --must-resume refuses rather than do that."""
    from pyvz.ct import checkpoint

    uuid = parse_uuid(uuid)
    with _locked(ct) as (area, driver, store):
        store.get(uuid)
        running = ct.is_running()
        memory = checkpoint.has_dump(store.memory(uuid))
        if must_resume and not memory:
            raise VzError(
                ExitCode.RESTORE_ERROR,
                f"cannot resume CT {ct.ctid} in snapshot {shown(uuid)}: {NO_MEMORY_STATE}; "
                "without --must-resume the CT is started afresh instead",
            )
        _require_unmounted(store, uuid, "switch to")
        log.info(f"Switching to snapshot {shown(uuid)}")
        if running:
            freeze_and_kill(ct)  # its processes are replaced (or discarded) anyway
        elif driver.is_mounted(area):
            ct.umount()
        driver.restore(area, store.files(uuid))
        saved = store.config(uuid)
        if not skip_config and saved.exists():
            write_atomic(ct.paths.conf_file(ct.ctid), saved.read_text())
            ct.reload()
        store.set_current(uuid)
        log.info(f"Switched to snapshot {shown(uuid)}")
        if skip_resume:
            return
        if memory:
            checkpoint.resume_snapshot(ct, store.memory(uuid))
        elif running:
            ct.start()


def delete(ct: Container, uuid: str) -> None:
    """vzctl snapshot-delete: online, and the space is free when it returns."""
    uuid = parse_uuid(uuid)
    with _locked(ct) as (_area, driver, store):
        delete_locked(driver, store, uuid)


def delete_locked(driver: StorageDriver, store: Store, uuid: str) -> None:
    """delete() for a caller that holds the CT lock (vzctl rebuild)."""
    store.get(uuid)
    _require_unmounted(store, uuid, "delete")
    log.info(f"Deleting snapshot {shown(uuid)}")
    store.remove(uuid)  # gone from the list first: a crash from here on leaves litter only
    store.sweep(driver)
    log.info(f"Snapshot {shown(uuid)} has been successfully deleted")


def _require_unmounted(store: Store, uuid: str, action: str) -> None:
    target = _mounted_at(store, uuid)
    if target is not None:
        raise VzError(
            ExitCode.MOUNTED,
            f"snapshot {shown(uuid)} is mounted at {target}: snapshot-umount it before you {action} it",
        )


def _mounted_at(store: Store, uuid: str) -> Path | None:
    try:
        target = Path(store.mount_record(uuid).read_text().strip())
    except FileNotFoundError:
        return None
    return target if is_mountpoint(target) else None


def release_mounts(area: Area) -> None:
    """Unmount every mounted snapshot of a CT (before its snapshots are deleted)."""
    store = Store(area)
    for snapshot in store.all():
        target = _mounted_at(store, snapshot.uuid)
        if target is not None:
            umount_snapshot(target)


def mount(ct: Container, uuid: str, target: Path) -> None:
    """vzctl snapshot-mount: the snapshot, read-only, owners as the CT sees them."""
    uuid = parse_uuid(uuid)
    with _locked(ct) as (area, driver, store):
        store.get(uuid)
        already = _mounted_at(store, uuid)
        if already is not None:
            raise VzError(ExitCode.MOUNTED, f"snapshot {shown(uuid)} is already mounted at {already}")
        target = target.resolve()
        if is_mountpoint(target):
            raise VzError(ExitCode.MOUNTED, f"{target} is already a mount point")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VzError(
                ExitCode.CANT_CREATE_MOUNTPOINT, f"cannot create {target}: {err.strerror}"
            ) from None
        write_atomic(store.mount_record(uuid), f"{target}\n", durable=False)
        driver.mount_snapshot(area, store.files(uuid), target)
        log.info(f"Snapshot {shown(uuid)} is mounted read-only at {target}")


def umount(ct: Container, uuid: str) -> None:
    """vzctl snapshot-umount."""
    uuid = parse_uuid(uuid)
    with _locked(ct) as (_area, _driver, store):
        store.get(uuid)
        target = _mounted_at(store, uuid)
        if target is None:
            store.mount_record(uuid).unlink(missing_ok=True)
            raise VzError(ExitCode.NOT_MOUNTED, f"snapshot {shown(uuid)} is not mounted")
        umount_snapshot(target)
        store.mount_record(uuid).unlink(missing_ok=True)
        log.info(f"Snapshot {shown(uuid)} is unmounted")


def listing(ct: Container, fields: tuple[str, ...], header: bool, only: str | None) -> list[str]:
    """vzctl snapshot-list's lines."""
    return listing_rows(Store(ct.require_exists()), fields, header, only)


def listing_rows(store: Store, fields: tuple[str, ...], header: bool, only: str | None) -> list[str]:
    current, snapshots = store.current, store.all()
    if only is not None:
        wanted = parse_uuid(only)
        snapshots = [store.get(wanted)]
    widths = {"parent_uuid": 38, "current": 1, "uuid": 38, "date": 19, "name": 0, "desc": 0}
    titles = {f: "C" if f == "current" else f.upper() for f in FIELDS}

    def row(cells: list[str]) -> str:
        return " ".join(cell.ljust(widths[f]) for f, cell in zip(fields, cells, strict=True)).rstrip()

    lines = [row([titles[f] for f in fields])] if header else []
    for s in snapshots:
        values = {
            "parent_uuid": shown(s.parent),
            "current": "*" if s.uuid == current else "",
            "uuid": shown(s.uuid),
            "date": s.date,
            "name": s.name,
            "desc": s.desc,
        }
        lines.append(row([values[f] for f in fields]))
    return lines


def field_names() -> str:
    """snapshot-list -L: each field -o takes and its column's title, as vzctl lays them out."""
    return "\n".join(f"{f:<15} {'C' if f == 'current' else f.upper():<15}" for f in FIELDS)


def parse_fields(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_FIELDS
    fields = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,  # vzctl's snapshot-list: 21
            f"unknown snapshot-list field(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {','.join(FIELDS)}",
        )
    return fields
