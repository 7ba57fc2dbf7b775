"""A CT's disk quota as vzquota sees it (quota id = CTID), on pyvz's real disk quota.

What is enforced lives on the filesystem: a btrfs CT's qgroup counts the bytes its subvolume
references and holds one limit on them (vzquota's block hard limit); a simfs CT's project quota
(ext4/xfs) counts blocks and inodes and holds all four of vzquota's limits. What the layout
cannot enforce (btrfs: the soft limit, inode limits; both: per-CT grace times) and the on/off
switch are kept in a small file of pyvz's own (Paths.quota_file), shown back as vzquota shows
them, and said to be not enforced whenever they are set. Without that file a CT whose qgroup has a
limit has a running quota all the same (pyvz sets the limit at create), read from its config.

Messages go through `say(level, text)` with vzquota's own texts, so that the vzquota front end
and vzctl's quota commands (which in OpenVZ ran vzquota) print them each their own way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvz.atomic import write_atomic
from pyvz.errors import QuotaExit, VzError
from pyvz.params import DISKINODES, DISKSPACE, LAYOUT, QUOTATIME, QUOTAUGIDLIMIT, Layout
from pyvz.resources.policy import QUOTA_WHY
from pyvz.storage.base import DiskQuota
from pyvz.units import UNLIMITED, BarrierLimit

if TYPE_CHECKING:
    from pyvz.ct.container import Container
    from pyvz.host import Host
    from pyvz.storage.base import Area, QuotaCounts, StorageDriver


class Level(IntEnum):
    """vzquota's message levels: errors and warnings on stderr, the rest on stdout."""

    ERROR = 1
    WARNING = 2
    INFO = 3
    DEBUG = 4
    NOTE = 5  # pyvz's own word on what is not enforced: shown as a warning is


Say = Callable[[Level, str], None]

# Why a layout has no quota here, said in place of vzquota's numbers.
NO_QUOTA = {
    Layout.DIR: "layout dir (overlayfs) has no disk quota",
    Layout.PLOOP: "pyvz runs no ploop CT (vzctl convert copies it into btrfs)",
}
UGID_WHY = QUOTA_WHY["quotaugidlimit"].strip("()")
SIMFS_UGID_WHY = QUOTA_WHY["quotaugidlimit:simfs"].strip("()")


class Limits(NamedTuple):
    """vzquota's limits: blocks are 1K, 0 is no limit; expiry times are in seconds."""

    block_soft: int = 0
    block_hard: int = 0
    inode_soft: int = 0
    inode_hard: int = 0
    block_exptime: int = 0
    inode_exptime: int = 0


@dataclass(frozen=True)
class QuotaFile:
    """What vzquota's quota file held, as pyvz keeps it."""

    on: bool
    limits: Limits = field(default_factory=Limits)
    block_grace: int = 0  # when the soft limit's grace runs out (epoch seconds); 0: not over it
    inode_grace: int = 0
    blocks: int = 0  # usage when last written, 1K blocks
    inodes: int = 0
    ugid_on: bool = False
    ugid_limit: int = 0
    dirty: bool = False  # the usage must be counted again at the next on (setlimit -f)
    saved: bool = field(default=True, compare=False)  # False: made up from the config


@dataclass(frozen=True)
class Changes:
    """What a command line sets: only the given limits, and the -s/-u switches."""

    limits: dict[str, int] = field(default_factory=dict)
    ugid_on: bool | None = None
    ugid_limit: int | None = None

    def apply(self, qf: QuotaFile) -> QuotaFile:
        return replace(
            qf,
            limits=qf.limits._replace(**self.limits),
            ugid_on=qf.ugid_on if self.ugid_on is None else self.ugid_on,
            ugid_limit=qf.ugid_limit if self.ugid_limit is None else self.ugid_limit,
        )


class Status(NamedTuple):
    """One stat/show: the numbers vzquota prints."""

    qf: QuotaFile
    blocks: int
    inodes: int
    block_hard: int  # the limit in force (stat) or saved (show)
    running: bool


def blocks_of(size: int) -> int:
    """Bytes as vzquota's 1K blocks, rounded up (its ker2block)."""
    return (size + 1023) >> 10


def _vz_limit(value: int) -> int:
    return 0 if value >= UNLIMITED else value


def limits_from_config(ct: Container) -> Limits:
    """The limits vzctl hands vzquota: DISKSPACE, DISKINODES and QUOTATIME (for both)."""
    cfg = ct.config
    space = cfg.get(DISKSPACE) or BarrierLimit(UNLIMITED, UNLIMITED)
    inodes = cfg.get(DISKINODES) or BarrierLimit(UNLIMITED, UNLIMITED)
    grace = cfg.get(QUOTATIME) or 0
    return Limits(
        _vz_limit(space.barrier),
        _vz_limit(space.limit),
        _vz_limit(inodes.barrier),
        _vz_limit(inodes.limit),
        grace,
        grace,
    )


def count_inodes(top: Path) -> int:
    """The inodes of a tree, each hard-linked one once, not crossing into other filesystems
    or nested subvolumes (their files are not in the CT's qgroup either)."""
    device = os.lstat(top).st_dev
    seen: set[int] = set()
    count = 1
    pending = [os.fspath(top)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != device:
                    continue
                if st.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                    if st.st_ino in seen:
                        continue
                    seen.add(st.st_ino)
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return count


class CtQuota:
    """One CT's quota. Constructing it checks the CT and its layout."""

    def __init__(self, host: Host, ctid: int, say: Say, now: Callable[[], float] = time.time) -> None:
        from pyvz.ct.container import Container
        from pyvz.storage import pool

        self.ctid, self.say, self.now = ctid, say, now
        self.ugid_why = UGID_WHY
        self.path = host.paths.quota_file(ctid)
        self.ct = Container(host, ctid)
        self.exists = self.ct.has_config()
        if not self.exists:
            return
        layout = self.ct.config.get(LAYOUT) or Layout.BTRFS
        self.driver: StorageDriver = self.ct.driver()
        if not self.driver.has_quota:
            raise VzError(
                QuotaExit.NOTRUN,
                f"Quota accounting is not available for id {ctid}: "
                f"{NO_QUOTA.get(layout, f'layout {layout} has no disk quota')}",
            )
        pool.mount_existing(host.paths)
        self.area: Area = self.ct.area()
        self.ugid_why = SIMFS_UGID_WHY if layout is Layout.SIMFS else UGID_WHY
        if self.area.private.is_dir() and (why := self.driver.quota_missing(self.area)) is not None:
            raise VzError(QuotaExit.NOTRUN, f"Quota accounting is not available for id {ctid}: {why}")
        if not self.area.private.is_dir():
            raise VzError(
                QuotaExit.NOMOUNTPOINT, f"CT {ctid}'s private area {self.area.private} does not exist"
            )

    # ---- the state ---------------------------------------------------------------------------

    def _no_file(self) -> VzError:
        self.say(
            Level.ERROR,
            f"Can't open quota file for id {self.ctid}, maybe you need to reinitialize quota: "
            "No such file or directory",
        )
        return VzError(QuotaExit.NOQUOTAFILE, "")

    def counts(self) -> QuotaCounts | None:
        return self.driver.quota_counts(self.area) if self.exists else None

    def load(self, counts: QuotaCounts | None) -> QuotaFile | None:
        """The quota file; without one, what pyvz's own limit says (None: no quota)."""
        if not self.exists:
            return None
        try:
            data = json.loads(self.path.read_text())
            data["limits"] = Limits(**data["limits"])
            return QuotaFile(**data)
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError) as err:
            raise VzError(QuotaExit.QUOTAFILE, f"quota file {self.path} is damaged ({err})") from None
        if counts is None or counts.limit is None:
            return None
        limits = limits_from_config(self.ct)
        cfg = self.ct.config
        ugid = cfg.get(QUOTAUGIDLIMIT) or 0
        hard = blocks_of(counts.limit)
        if limits.block_hard != hard:  # the qgroup was limited some other way: it is the truth
            limits = limits._replace(block_soft=min(limits.block_soft or hard, hard), block_hard=hard)
        return QuotaFile(True, limits, ugid_on=ugid > 0, ugid_limit=ugid, saved=False)

    def running(self, qf: QuotaFile | None, counts: QuotaCounts | None) -> bool:
        """The quota runs where the filesystem counts for the CT and it was turned on (or a limit is set:
        a limit in force is a running quota, whatever the file says)."""
        if counts is None:
            return False
        return counts.limit is not None or (qf is not None and qf.on)

    def save(self, qf: QuotaFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(qf)
        data.pop("saved")
        data["limits"] = qf.limits._asdict()
        write_atomic(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)

    def measure(self, qf: QuotaFile, counts: QuotaCounts) -> QuotaFile:
        """The file with the present usage, and the grace clocks started or stopped by it."""
        blocks = blocks_of(counts.used)
        inodes = count_inodes(self.area.private) if counts.inodes is None else counts.inodes
        now = int(self.now())
        lim = qf.limits

        def grace(used: int, soft: int, deadline: int, expiry: int) -> int:
            if not soft or used <= soft:
                return 0
            return deadline or now + expiry

        return replace(
            qf,
            blocks=blocks,
            inodes=inodes,
            block_grace=grace(blocks, lim.block_soft, qf.block_grace, lim.block_exptime),
            inode_grace=grace(inodes, lim.inode_soft, qf.inode_grace, lim.inode_exptime),
        )

    # ---- what is not enforced ----------------------------------------------------------------

    def not_enforced(self, qf: QuotaFile) -> None:
        lim = qf.limits
        unenforced = []
        full = self.driver.full_quota
        if lim.block_soft and lim.block_soft != lim.block_hard and not full:
            unenforced.append("the block soft limit")
        if (lim.inode_soft or lim.inode_hard) and not full:
            unenforced.append("inode limits (btrfs has no inode quota)")
        if (lim.block_exptime or lim.inode_exptime) and (lim.block_soft or lim.inode_soft):
            unenforced.append("grace times")
        if unenforced:
            why = (
                "the filesystem keeps one project grace time for every CT"
                if full
                else "a btrfs qgroup has one limit, the block hard limit"
            )
            self.say(Level.NOTE, f"saved, not enforced for id {self.ctid}: {', '.join(unenforced)}; {why}\n")
        if qf.ugid_on and qf.ugid_limit:
            self.say(
                Level.NOTE,
                f"per-user/group quota of id {self.ctid} is saved, not enforced: {self.ugid_why}\n",
            )

    def check_limits(self, qf: QuotaFile, given: Changes | None) -> None:
        """vzquota's sanity checks (`given`: only those of the limits the command line set).
        A 0 limit is no limit, so it is never below the other one or the usage."""
        lim, set_ = qf.limits, (given.limits if given else None)

        def asked(*names: str) -> bool:
            return set_ is None or any(name in set_ for name in names)

        if lim.block_hard and lim.block_hard < lim.block_soft and asked("block_hard", "block_soft"):
            self.say(
                Level.ERROR, f"block_hard_limit [{lim.block_hard}] < block_soft_limit [{lim.block_soft}]\n"
            )
            raise VzError(QuotaExit.USAGE, "")
        if lim.inode_hard and lim.inode_hard < lim.inode_soft and asked("inode_hard", "inode_soft"):
            self.say(
                Level.ERROR, f"inode_hard_limit [{lim.inode_hard}] < inode_soft_limit [{lim.inode_soft}]\n"
            )
            raise VzError(QuotaExit.USAGE, "")
        if lim.block_hard and lim.block_hard < qf.blocks and asked("block_hard"):
            self.say(
                Level.WARNING, f"block_hard_limit [{lim.block_hard}] < block_current_usage [{qf.blocks}]\n"
            )
        elif lim.block_soft and lim.block_soft < qf.blocks and asked("block_soft"):
            self.say(
                Level.WARNING, f"block_soft_limit [{lim.block_soft}] < block_current_usage [{qf.blocks}]\n"
            )
        if lim.inode_hard and lim.inode_hard < qf.inodes and asked("inode_hard"):
            self.say(
                Level.WARNING, f"inode_hard_limit [{lim.inode_hard}] < inode_current_usage [{qf.inodes}]\n"
            )
        elif lim.inode_soft and lim.inode_soft < qf.inodes and asked("inode_soft"):
            self.say(
                Level.WARNING, f"inode_soft_limit [{lim.inode_soft}] < inode_current_usage [{qf.inodes}]\n"
            )

    def enforce(self, qf: QuotaFile) -> None:
        """Put the limits on the CT's files: the block hard limit alone on a qgroup, all four on
        a project quota (0: no limit)."""
        lim = qf.limits
        if not self.driver.full_quota:
            hard = lim.block_hard
            self.driver.set_quota(self.area, DiskQuota(BarrierLimit(hard, hard) if hard else None))
            return

        def pair(soft: int, hard: int) -> BarrierLimit:
            return BarrierLimit(soft or hard or UNLIMITED, hard or UNLIMITED)

        blocks, inodes = pair(lim.block_soft, lim.block_hard), pair(lim.inode_soft, lim.inode_hard)
        self.driver.set_quota(self.area, DiskQuota(blocks, inodes))

    def check_path(self, path: Path | None) -> None:
        """-p names the CT's private area (or its root); pyvz finds it from the CT's config."""
        if path is None:
            return
        wanted = {os.path.realpath(self.area.private), os.path.realpath(self.area.root)}
        if os.path.realpath(path) not in wanted:
            raise VzError(
                QuotaExit.NOMOUNTPOINT,
                f"{path} is not the private area of CT {self.ctid} ({self.area.private})",
            )

    # ---- the commands ------------------------------------------------------------------------

    def stat(self, force: bool = False) -> Status:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None and not force:
            raise self._no_file()
        if qf is None or not self.running(qf, counts) or counts is None:
            self.say(Level.ERROR, "Quota accounting is off, try vzquota show id\n")
            raise VzError(QuotaExit.NOTRUN, "")
        qf = self.measure(qf, counts)
        if not force:
            self.save(qf)
        return Status(qf, qf.blocks, qf.inodes, blocks_of(counts.limit or 0), True)

    def show(self) -> Status:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None:
            self._no_file()
            self.say(Level.ERROR, "Quota file must exist for show command")
            raise VzError(QuotaExit.NOQUOTAFILE, "")
        running = self.running(qf, counts)
        if running:
            self.say(
                Level.WARNING,
                "Quota is running, so data reported from quota file may not reflect current values\n",
            )
        if not qf.saved and counts is not None:
            qf = self.measure(qf, counts)  # nothing was saved: what there is now
        return Status(qf, qf.blocks, qf.inodes, qf.limits.block_hard, running)

    def on(self, changes: Changes, force: bool = False, nocheck: bool = False) -> None:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None:
            raise self._no_file()
        if self.running(qf, counts):
            self.say(Level.WARNING, f"Quota is running for id {self.ctid} already\n")
            raise VzError(QuotaExit.RUN, "")
        qf = changes.apply(qf)
        recount = False
        if qf.on and qf.saved and not nocheck:
            self.say(
                Level.WARNING,
                f"Incorrect quota shutdown for id {self.ctid}, recalculating disk usage\n",
            )
            recount = True
        elif qf.dirty and not nocheck:
            self.say(
                Level.WARNING,
                f"quota usage is invalid for id {self.ctid}, recalculating disk usage...\n",
            )
            recount = True
        elif force:
            self.say(Level.INFO, f"Force quota checking for id {self.ctid}...\n")
            recount = True
        self.driver.recount_quota(self.area, full=recount)
        counts = self.counts()
        if counts is None:
            raise VzError(QuotaExit.VZCALL, f"Quota on for id {self.ctid}: no count is kept for it")
        qf = self.measure(replace(qf, dirty=False), counts)
        self.check_limits(qf, None)
        self.enforce(qf)
        self.save(replace(qf, on=True))
        self.not_enforced(qf)
        self.say(Level.INFO, f"Quota was switched on for id {self.ctid}\n")

    def off(self, force: bool = False) -> None:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None:
            if not force:
                raise self._no_file()
            self.say(
                Level.WARNING,
                f"Force switching quota off for id {self.ctid} (quota file may be inconsistent)\n",
            )
        if not self.running(qf, counts):
            self.say(Level.ERROR, f"Quota is not running for id {self.ctid}")
            if qf is None or force or not qf.on:
                raise VzError(QuotaExit.NOTRUN, "")
            self.say(
                Level.WARNING,
                f"Repairing quota: it was incorrectly marked as running for id {self.ctid}\n",
            )
        else:
            self.driver.set_quota(self.area, None)
            if qf is not None and not qf.on:
                self.say(
                    Level.WARNING,
                    f"Repairing quota: it was incorrectly marked as stopped for id {self.ctid}\n",
                )
        if qf is not None:
            if counts is not None:
                qf = self.measure(qf, counts)
            self.save(replace(qf, on=False))
        self.say(Level.INFO, f"Quota was switched off for id {self.ctid}\n")

    def init(self, limits: Limits, ugid_on: bool, ugid_limit: int, path: Path | None) -> None:
        if not self.exists:
            raise VzError(QuotaExit.NOMOUNTPOINT, f"quota id {self.ctid} is no CT here (no CT config)")
        self.check_path(path)
        counts = self.counts()
        old = self.load(counts)
        if self.running(old, counts):
            self.say(Level.ERROR, "Quota is running, stop it first")
            raise VzError(QuotaExit.RUN, "")
        if old is not None and old.saved:
            self.say(Level.WARNING, "Quota file exists, it will be overwritten\n")
        self.driver.recount_quota(self.area, full=False)
        counts = self.counts()
        if counts is None:
            raise VzError(QuotaExit.VZCALL, f"Quota init for id {self.ctid}: no count is kept for it")
        qf = self.measure(QuotaFile(False, limits, ugid_on=ugid_on, ugid_limit=ugid_limit), counts)
        self.check_limits(qf, None)
        self.save(qf)
        self.say(Level.INFO, f"quota initialization for id {self.ctid} complete\n")

    def drop(self, force: bool = False) -> None:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None:
            raise self._no_file()
        if self.running(qf, counts):
            self.say(Level.WARNING, f"Quota is running for id {self.ctid}\n")
            if not force:
                raise VzError(QuotaExit.RUN, "")
            self.say(Level.WARNING, f"Force quota if {self.ctid} file delete\n")
        self.path.unlink(missing_ok=True)
        self.say(Level.INFO, f"Quota file was deleted for id {self.ctid}\n")

    def setlimit(self, changes: Changes, path: Path | None = None, force: bool = False) -> None:
        counts = self.counts()
        qf = self.load(counts)
        if qf is None:
            raise self._no_file()
        self.check_path(path)
        qf = changes.apply(qf)
        self.check_limits(qf, changes)
        running = self.running(qf, counts)
        if running and counts is not None:
            qf = self.measure(qf, counts)
            if "block_hard" in changes.limits or (self.driver.full_quota and changes.limits):
                self.enforce(qf)
        if force:
            qf = replace(qf, dirty=True)
        self.save(replace(qf, on=qf.on or running))
        self.not_enforced(qf)
        self.say(Level.INFO, f"Quota limits were set for id {self.ctid}\n")

    def require_running(self) -> None:
        """For the per-user/group commands: vzquota's answer where its second level is off."""
        counts = self.counts()
        if not self.running(self.load(counts), counts):
            self.say(Level.ERROR, "Quota accounting is off")
            raise VzError(QuotaExit.NOTRUN, "")
        self.say(Level.ERROR, f"Second level quota accounting is off: {self.ugid_why}")
        raise VzError(QuotaExit.NOTRUN, "")
