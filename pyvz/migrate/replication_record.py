"""What the sending host remembers of its replication runs: one JSON file per CT
(Paths.replication_record), with, per standby host, its newest good replica and the last
run's result. `vzreplicate status` reads it; `vzreplicate run --due` decides from it which
CTs are due. Written atomically under the CT's replication lock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyvz.atomic import write_atomic
from pyvz.paths import Paths


@dataclass(frozen=True)
class Good:
    """The newest replica a standby confirmed it holds."""

    taken: float  # when its snapshot was taken here (the age of its data)
    finished: float  # when the standby confirmed it
    uuid: str  # the snapshot's UUID (the parent of the next incremental run)
    size: int  # bytes of the CT's files then
    sent: int  # bytes of the stream that made it
    incremental: bool


@dataclass(frozen=True)
class Last:
    """The last run to that standby, good or failed."""

    started: float
    finished: float
    ok: bool
    attempts: int
    kind: str  # "full", "incremental" or "" (failed before it knew)
    sent: int  # bytes of its stream (for a failed run: as far as it got)
    error: str | None = None
    code: int | None = None
    note: str | None = None  # why a run that could have been incremental was full


@dataclass(frozen=True)
class HostRecord:
    good: Good | None
    last: Last | None
    failures: int = 0  # failed runs in a row
    next_try: float = 0.0  # --due waits until then after a failure (backoff)


def _good(raw: Any) -> Good | None:
    return Good(**raw) if isinstance(raw, dict) else None


def _last(raw: Any) -> Last | None:
    return Last(**raw) if isinstance(raw, dict) else None


def load(paths: Paths, ctid: int) -> dict[str, HostRecord]:
    """Per standby host, what is known of it (empty if the CT was never replicated)."""
    path = paths.replication_record(ctid)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: as if never replicated (the next run sends in full)
    hosts = raw.get("hosts") if isinstance(raw, dict) else None
    found = {}
    for name, entry in (hosts or {}).items():
        if not isinstance(entry, dict):
            continue
        try:
            found[str(name)] = HostRecord(
                good=_good(entry.get("good")),
                last=_last(entry.get("last")),
                failures=int(entry.get("failures") or 0),
                next_try=float(entry.get("next_try") or 0.0),
            )
        except (TypeError, ValueError):
            continue
    return found


def save(paths: Paths, ctid: int, records: dict[str, HostRecord]) -> None:
    path = paths.replication_record(ctid)
    if not records:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    body = {"ctid": ctid, "hosts": {name: asdict(record) for name, record in sorted(records.items())}}
    write_atomic(path, json.dumps(body, indent=1) + "\n", mode=0o600)


def recorded_ctids(paths: Paths) -> list[int]:
    directory: Path = paths.replication_dir
    try:
        names = [p.name for p in directory.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())
