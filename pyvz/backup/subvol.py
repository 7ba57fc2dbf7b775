"""The btrfs identity an incremental chain hangs on, read and set through ioctls.

`btrfs send -p BASE NEW` names BASE by its UUID and ctransid; `btrfs receive` finds the
matching parent on the receiving side by *received* UUID. A restored full backup is an
ordinary new subvolume, so vzrestore gives it the received UUID of the base it stands for
(what `btrfs receive` itself does for subvolumes it creates) before receiving on top of it.
"""

from __future__ import annotations

import struct
import uuid as uuidlib
from pathlib import Path

from pyvz.backup.metadata import SubvolRef
from pyvz.errors import ExitCode, VzError
from pyvz.storage.btrfs import GET_SUBVOL_INFO, SUBVOL_INFO_SIZE, dir_ioctl

_UUID_AT = 296
_CTRANSID_AT = 344
_SET_RECEIVED_SUBVOL = 0xC0C89425  # _IOWR(0x94, 37, struct btrfs_ioctl_received_subvol_args): 200 bytes
_RECEIVED = "=16sQQQI4xQI4xQ"  # uuid, stransid, rtransid, stime, rtime, flags; then reserved[16]


def info(path: Path) -> SubvolRef:
    """The subvolume's UUID and ctransid (the last transaction that changed it)."""
    args = bytearray(SUBVOL_INFO_SIZE)
    try:
        dir_ioctl(path, GET_SUBVOL_INFO, args)
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot read btrfs subvolume info of {path}: {err}") from None
    uuid = str(uuidlib.UUID(bytes=bytes(args[_UUID_AT : _UUID_AT + 16])))
    (ctransid,) = struct.unpack_from("=Q", args, _CTRANSID_AT)
    return SubvolRef(uuid, int(ctransid))


def set_received(path: Path, ref: SubvolRef) -> None:
    """Mark a writable subvolume as received from `ref` (then make it read-only)."""
    args = bytearray(struct.pack(_RECEIVED, uuidlib.UUID(ref.uuid).bytes, ref.ctransid, 0, 0, 0, 0, 0, 0))
    args += bytes(200 - len(args))
    try:
        dir_ioctl(path, _SET_RECEIVED_SUBVOL, args)
    except OSError as err:
        raise VzError(ExitCode.RESTORE_ERROR, f"cannot set the received UUID of {path}: {err}") from None
