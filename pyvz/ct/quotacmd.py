"""vzctl quotaon, quotaoff and quotainit, as vzctl 4.11 has them: what it did by running
vzquota with the CT's DISKSPACE, DISKINODES, QUOTATIME and QUOTAUGIDLIMIT, done here on
pyvz's own quota (pyvz.ct.quota). vzquota's messages are shown as vzctl showed them, in
vzquota's own form; vzctl's are its own.

One difference: vzctl refused these commands (exit 64) for a CT with no DISKINODES. pyvz's
samples set none, as btrfs has no inode quota, so no DISKINODES is no inode limit here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvz.ct.quota import Changes, CtQuota, Level, Limits, limits_from_config
from pyvz.errors import ExitCode, QuotaExit, VzError
from pyvz.log import log
from pyvz.params import DISK_QUOTA, DISKSPACE, LAYOUT, PRIVATE, QUOTAUGIDLIMIT, Layout

if TYPE_CHECKING:
    from pyvz.host import Host

_NAMES = {Level.ERROR: "error", Level.WARNING: "warning", Level.NOTE: "warning"}
_FAILED = {"quotaon": ExitCode.DQ_ON, "quotaoff": ExitCode.DQ_OFF, "quotainit": ExitCode.DQ_INIT}


def vzquota_line(level: Level, text: str) -> str:
    """A vzquota message as vzquota prints it (its error() ends every line itself)."""
    name = {Level.INFO: "info", Level.DEBUG: "debug"}.get(level, _NAMES.get(level, "warning"))
    body = text + "\n" if level is Level.ERROR or not text.endswith("\n") else text
    return f"vzquota : ({name}) {body}"


def _say(level: Level, text: str) -> None:
    """What vzctl's run of vzquota showed: vzquota's errors and warnings (its default level)."""
    if level is Level.NOTE:
        log.warning(text.rstrip("\n"))
    elif level <= Level.WARNING:
        log.note(vzquota_line(level, text).rstrip("\n"))


def _vzquota(step: Callable[[], None]) -> int:
    """Run one vzquota step; its exit code, as vzctl saw it."""
    try:
        step()
    except VzError as err:
        if not isinstance(err.code, QuotaExit):
            raise
        if err.message:
            _say(Level.ERROR, err.message)
        return int(err.code)
    return 0


def quota_command(host: Host, ctid: int, command: str) -> int:
    from pyvz.ct.container import Container

    ct = Container(host, ctid)
    cfg = ct.config
    failed = _FAILED[command]
    if cfg.get(DISK_QUOTA) is False:
        log.info("Disk quota is not enabled, skipping operation")
        return int(failed)
    if (cfg.get(LAYOUT) or Layout.BTRFS) is Layout.PLOOP:
        log.info("CT is on ploop, disk quota is obsoleted, skipping operation")
        return 0
    with host.ct_lock(ctid):
        try:
            quota = CtQuota(host, ctid, _say)
        except VzError as err:
            if err.code is not QuotaExit.NOTRUN:
                raise
            if command == "quotaoff":  # nothing runs, which is what off asks for
                log.info(err.message)
                return 0
            raise VzError(failed, err.message) from None
        if command == "quotaoff":
            code = _vzquota(quota.off)
            if code and code != QuotaExit.NOTRUN:
                log.note(f"vzquota off failed [{code}]")
                return int(failed)
            return 0
        if cfg.get(PRIVATE) is None:
            raise VzError(ExitCode.VE_PRIVATE_NOTSET, "Not enough parameters, private not set")
        if cfg.get(DISKSPACE) is None:
            raise VzError(ExitCode.DISKSPACE_NOT_SET, "Not enough parameters, diskspace quota not set")
        limits = limits_from_config(ct)
        ugid = cfg.get(QUOTAUGIDLIMIT) or 0
        if command == "quotainit":
            return _init(quota, limits, ugid)
        if quota.load(quota.counts()) is None:
            log.info("Initializing quota ...")
            if code := _init(quota, limits, ugid):
                return code
        changes = Changes(limits._asdict(), ugid_on=ugid > 0, ugid_limit=ugid or None)
        code = _vzquota(lambda: quota.on(changes))
        if code == QuotaExit.RUN:  # running already: vzctl sets the limits instead
            code = _vzquota(lambda: quota.setlimit(changes))
            if code:
                log.note(f"vzquota setlimit failed [{code}]")
                return int(ExitCode.DISKQUOTA_SET)
        elif code:
            log.note(f"vzquota on failed [{code}]")
            return int(failed)
    return 0


def _init(quota: CtQuota, limits: Limits, ugid: int) -> int:
    code = _vzquota(lambda: quota.init(limits, ugid > 0, ugid, quota.area.private))
    if code:
        log.note(f"vzquota init failed [{code}]")
        return int(ExitCode.DQ_INIT)
    return 0
