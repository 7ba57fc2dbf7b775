"""A CT's id range: CT uid/gid 0..65535 shown as host uid..uid+65535."""

from __future__ import annotations

from typing import NamedTuple

ID_RANGE = 65536


class IdMap(NamedTuple):
    """CT uid/gid 0..65535 map to host uid..uid+65535 (gid likewise)."""

    uid: int
    gid: int
    size: int = ID_RANGE

    @property
    def privileged(self) -> bool:
        return self.uid == 0 and self.gid == 0
