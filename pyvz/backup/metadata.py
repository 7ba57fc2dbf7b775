"""What an archive says about itself: ./etc/vzdump/pyvz.json, first in every archive.

Beside it are the CT's config (`vps.conf`, OpenVZ vzdump's name) and its action scripts
(`vps.mount` ...). An incremental archive also holds `stream.btrfs`, the send stream from
its parent's base snapshot to its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from pyvz.errors import ExitCode, VzError

FORMAT = 1
META_DIR = "./etc/vzdump"
META = f"{META_DIR}/pyvz.json"
CONFIG = f"{META_DIR}/vps.conf"
STREAM = f"{META_DIR}/stream.btrfs"
KINDS = ("full", "incremental")


def script_member(action: str) -> str:
    return f"{META_DIR}/vps.{action}"


class SubvolRef(NamedTuple):
    """A btrfs subvolume as send and receive know it."""

    uuid: str
    ctransid: int


@dataclass(frozen=True)
class Metadata:
    ctid: int
    kind: str  # "full" or "incremental"
    mode: str  # stop, suspend or snapshot: how the CT was held still
    layout: str  # the CT's layout when it was backed up
    date: str  # ISO 8601, local time with offset
    archive: str  # the archive's own file name
    hostname: str = ""
    parent: str | None = None  # an incremental's parent archive (file name, same directory)
    base: SubvolRef | None = None  # the base snapshot this archive's state is (btrfs)
    parent_base: SubvolRef | None = None  # an incremental's send parent
    excludes: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()  # action scripts stored as vps.<action>
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def incremental(self) -> bool:
        return self.kind == "incremental"

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("base", "parent_base"):
            ref = getattr(self, key)
            data[key] = ref._asdict() if ref is not None else None
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Metadata:
        """Parse and sanity-check; anything odd is one RESTORE_ERROR naming `where`."""

        def bad(why: str) -> VzError:
            return VzError(ExitCode.RESTORE_ERROR, f"{where}: bad backup metadata ({why})")

        try:
            data = json.loads(text)
        except ValueError as err:
            raise bad(f"not JSON: {err}") from None
        if not isinstance(data, dict):
            raise bad("not an object")
        if data.get("format") != FORMAT:
            raise bad(f"format {data.get('format')!r}, this pyvz reads {FORMAT}")
        try:
            refs = {
                k: SubvolRef(str(v["uuid"]), int(v["ctransid"])) if v else None
                for k, v in (
                    ("base", data.get("base")),
                    ("parent_base", data.get("parent_base")),
                )
            }
            meta = cls(
                ctid=int(data["ctid"]),
                kind=str(data["kind"]),
                mode=str(data["mode"]),
                layout=str(data["layout"]),
                date=str(data["date"]),
                archive=str(data["archive"]),
                hostname=str(data.get("hostname") or ""),
                parent=str(data["parent"]) if data.get("parent") else None,
                base=refs["base"],
                parent_base=refs["parent_base"],
                excludes=tuple(str(x) for x in data.get("excludes") or ()),
                scripts=tuple(str(x) for x in data.get("scripts") or ()),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"missing or malformed field {err}") from None
        if meta.kind not in KINDS:
            raise bad(f"unknown kind {meta.kind!r}")
        if meta.incremental and (meta.parent is None or meta.parent_base is None or meta.base is None):
            raise bad("an incremental archive must name its parent and both base snapshots")
        if any(not s.isidentifier() for s in meta.scripts):
            raise bad("bad action script name")
        return meta
