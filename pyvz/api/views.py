"""What the API reads, read in the daemon itself with the library vzlist and vzctl use:
the files are read afresh on every request, so a change made by vzctl shows at once."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

from pyvz.api.grants import Grant
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.paths import Paths


def _record_json(record: Any, fields: list[Any]) -> dict[str, Any]:
    # Each field gives its value as vzlist -j prints it: joined into one object and parsed
    # once (parsing a hundred fragments per CT was a third of a listing's time).
    text = ",".join(f"{json.dumps(field.name)}:{field.json(record)}" for field in fields)
    found: dict[str, Any] = json.loads("{" + text + "}")
    return found


def _fields(names: str | None) -> list[Any]:
    from pyvz.listing_fields import VZLIST_FIELDS
    from pyvz.listing_output import parse_fields

    if names:
        return list(parse_fields(names, True))
    return [f for f in VZLIST_FIELDS if not f.suffixed]


Listed = list[tuple[int, str | None, dict[str, Any]]]  # (ctid, name, its fields)


def in_scope(listed: Listed, grant: Grant) -> list[dict[str, Any]]:
    """A listing cut to the caller's scope: a CT out of scope is not listed at all."""
    return [fields for ctid, name, fields in listed if grant.covers(ctid, name)]


def list_cts(paths: Paths, query: dict[str, str]) -> Listed:
    """vzlist -a -j, filtered as vzlist filters (-h/-N/-d patterns, running or stopped
    only)."""
    from pyvz.listing import collect, glob_match, ubc_names

    fields = _fields(query.get("fields"))
    state = query.get("state", "all")
    if state not in ("all", "running", "stopped"):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid state {state!r}: all, running or stopped")
    host = Host(paths)
    records = collect(host, None, state != "running", state == "stopped", ubc_names(f.name for f in fields))
    patterns = {k: query[k] for k in ("hostname", "name", "description") if query.get(k)}
    shown = []
    for record in records:
        if record.status is None or (state == "stopped" and record.running):
            continue
        texts = {
            "hostname": record.raw("HOSTNAME"),
            "name": record.name,
            "description": record.raw("DESCRIPTION"),
        }
        if all(texts[k] is not None and glob_match(p, texts[k] or "") for k, p in patterns.items()):
            shown.append((record.ctid, record.name, _record_json(record, fields)))
    return shown


def ct_record(paths: Paths, ctid: int) -> Any:
    from pyvz.listing import records

    return records(Host(paths), [ctid])[0]


def ct_detail(paths: Paths, ctid: int) -> dict[str, Any]:
    """Every vzlist field of one CT, and its own config keys as CTID.conf holds them."""
    record = ct_record(paths, ctid)
    if record.conf_file is None:
        raise VzError(ExitCode.NO_CT_CONFIG, f"CT {ctid}: no config")
    return {**_record_json(record, _fields(None)), "config": record.own}


def ct_status(paths: Paths, ctid: int) -> dict[str, Any]:
    """vzctl status's facts, and its line."""
    from pyvz.ct.container import Container

    status = Container(Host(paths), ctid).status()
    return {"ctid": ctid, "line": status.line(ctid), **status._asdict()}


def snapshots(paths: Paths, ctid: int) -> list[dict[str, Any]]:
    from pyvz.ct.container import Container
    from pyvz.ct.snapshots import Store

    store = Store(Container(Host(paths), ctid).require_exists())
    current = store.current
    return [
        {"uuid": s.uuid, "parent": s.parent or None, "date": s.date, "name": s.name, "description": s.desc}
        | {"current": s.uuid == current}
        for s in store.all()
    ]


def backups(paths: Paths, ctid: int) -> list[dict[str, Any]]:
    from pyvz.backup.archive import archives_of
    from pyvz.backup.dump import resolve_dumpdir

    dumpdir = resolve_dumpdir(Host(paths), None)
    found = []
    for name in archives_of(dumpdir, ctid):
        path = dumpdir / name.name
        try:
            size = path.stat().st_size
        except OSError:
            continue
        found.append({"archive": name.name, "date": name.date.isoformat(), "size": size})
    return found


def templates(paths: Paths) -> list[dict[str, Any]]:
    from pyvz.templates.cache import EMBEDDED, entries

    found: list[dict[str, Any]] = [{"name": EMBEDDED, "embedded": True, "signed": False, "size": None}]
    for entry in entries(paths):
        try:
            size: int | None = entry.archive.stat().st_size
        except OSError:
            size = None
        found.append({"name": entry.name, "embedded": False, "signed": entry.signed, "size": size})
    return found


def recipes(paths: Paths) -> list[dict[str, Any]]:
    from pyvz.templates.recipe import BUILT_IN

    found = []
    for directory, origin in ((paths.etc_vz / "recipes", "local"), (BUILT_IN, "built-in")):
        if directory.is_dir():
            for recipe in sorted(directory.glob("*.toml")):
                found.append({"name": recipe.stem, "origin": origin})
    return found


def host_info(paths: Paths) -> dict[str, Any]:
    """Version, kernel, and what this host can give CTs (CRIU, LXCFS, cgroups)."""
    from pyvz import __version__
    from pyvz.resources.cgroups import CgroupV2, detect

    uname = platform.uname()
    return {
        "version": __version__,
        "api": "v1",
        "root": str(paths.root),
        "kernel": uname.release,
        "architecture": uname.machine,
        "cpus": os.cpu_count(),
        "cgroup": "v2" if isinstance(detect(), CgroupV2) else "v1",
        "features": {"criu": _criu(paths), "lxcfs": _lxcfs()},
    }


def _criu(paths: Paths) -> dict[str, Any]:
    from pyvz.runtime.criu import Criu

    try:
        binary = Criu(paths).require()
    except VzError as err:
        return {"available": False, "why": err.message}
    return {"available": True, "path": str(binary)}


def _lxcfs() -> dict[str, Any]:
    from pyvz.runtime.lxcfs import instance

    pid = instance()
    return {"running": pid is not None, "pid": pid}
