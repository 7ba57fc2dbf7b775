"""vzdump: back CTs up into portable archives, full or incremental.

Modes (a CT that is not running is always backed up in stop mode, and vzdump says so):

- stop: the CT is stopped cleanly, a temporary snapshot of its files is taken and it is
  started again at once; the archive is written from the snapshot. Downtime: a stop and a
  start. The CT's processes start afresh, so nothing is in flight in the files.
- suspend: the CT is frozen (cgroup freezer) for the whole time the archive is written,
  and thawed after. No restart, but the CT does nothing meanwhile.
- snapshot (default): the CT is frozen only for the instant a temporary snapshot is taken
  and runs on while the archive is written from it. The files are what a power cut at that
  instant would have left, with every write whole.

A temporary snapshot lives in the CT's backup area (Area.backups), never in the user's
snapshot list, and is read through the driver's snapshot mount, which shows owners as the
CT sees them on both layouts. On btrfs it is kept afterwards as the CT's backup base: the
next --incremental sends only what changed since (`btrfs send -p BASE NEW`). Whatever a
killed run left there (a snapshot, a mount, a partial archive) is removed by the next one;
the freezer's guard thaws a CT even when vzdump is killed with SIGKILL.

A hook script (--script) is run as `HOOK PHASE [MODE CTID]` for the phases job-start,
backup-start, pre-stop, pre-restart, post-restart, backup-end, backup-abort, log-end and
job-end, with DUMPDIR, HOSTNAME, TARFILE, TARGET, LOGFILE and VMTYPE=openvz set, as
vzdump's hooks are. A hook that fails aborts the backup.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TextIO, cast

from pyvz.atomic import write_atomic
from pyvz.backup import excludes as excl
from pyvz.backup import mail, stream
from pyvz.backup.archive import ArchiveName, Compression, archives_of, partial_leftovers, to_prune
from pyvz.backup.layouts import for_layout
from pyvz.backup.metadata import CONFIG, META, META_DIR, STREAM, Metadata, SubvolRef, script_member
from pyvz.ct.container import Container
from pyvz.ct.freeze import frozen
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log, set_ctid
from pyvz.params import HOSTNAME, Layout
from pyvz.run import if_we_die, pipeline, run
from pyvz.scripts import CT_ACTIONS, HOST_ACTIONS
from pyvz.storage.base import Area, StorageDriver, remove_path
from pyvz.storage.mounts import umount_tree

BASE = "base"  # the kept snapshot, in Area.backups
VZCTL = (sys.executable, "-m", "pyvz.cli.vzctl")
BASE_RECORD = "base.json"
RUN_PREFIX = ".run-"  # a run's temporary snapshot, mount and staging
OLD_PREFIX = ".old-"  # a base on its way out


class Mode(StrEnum):
    STOP = "stop"
    SUSPEND = "suspend"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class DumpOptions:
    mode: Mode = Mode.SNAPSHOT
    compression: Compression = Compression.ZSTD
    dumpdir: Path | None = None
    maxfiles: int | None = None
    prune_days: int | None = None
    exclude_paths: tuple[str, ...] = ()
    stdexcludes: bool = False
    bwlimit: int | None = None  # KiB/s of the uncompressed stream
    script: Path | None = None
    incremental: bool = False
    tmpdir: Path | None = None  # metadata staging, exclude lists, incremental send streams
    stopwait: int | None = None  # minutes a stop-mode CT gets to stop before it is killed
    lockwait: int | None = None  # minutes to wait for the CT's lock (default: none)
    size: int | None = None  # MB of an LVM snapshot (old vzdump): nothing to size here
    mailto: tuple[str, ...] = ()

    @property
    def patterns(self) -> tuple[str, ...]:
        return self.exclude_paths + (excl.STD_EXCLUDES if self.stdexcludes else ())


def resolve_dumpdir(host: Host, given: Path | None) -> Path:
    if given is not None:
        return given.resolve()
    configured = host.setting("DUMPDIR")
    return host.paths.host(configured) if configured else host.paths.dump_dir


class Hook:
    """The --script hook, run with vzdump's arguments and environment."""

    def __init__(self, script: Path | None, dumpdir: Path) -> None:
        self.script = script
        self.env = {"DUMPDIR": str(dumpdir), "VMTYPE": "openvz"}

    def __call__(self, phase: str, mode: str | None = None, ctid: int | None = None) -> None:
        if self.script is None:
            return
        argv = [str(self.script), phase, *([mode, str(ctid)] if mode is not None else [])]
        result = run(argv, check=False, env=self.env, timeout=None)
        if result.returncode != 0:
            detail = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
            raise VzError(
                ExitCode.ACTIONSCRIPT_ERROR, f"hook script {self.script} failed in {phase}: {detail[0]}"
            )

    def quietly(self, phase: str, mode: str, ctid: int) -> None:
        """For backup-abort: a failing hook must not hide the error that got us here."""
        try:
            self(phase, mode, ctid)
        except VzError as err:
            log.warning(err.message)


def vzdump(host: Host, ctids: list[int], opts: DumpOptions) -> list[Path]:
    """Back up each CT in turn; one failing does not stop the others. Returns the archives."""
    excl.compile_patterns(opts.patterns)  # a bad regex is refused before anything happens
    if opts.tmpdir is not None and not opts.tmpdir.is_dir():
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"--tmpdir {opts.tmpdir} is not a directory")
    dumpdir = resolve_dumpdir(host, opts.dumpdir)
    try:
        dumpdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VzError(
            ExitCode.CHKPNT_ERROR, f"cannot create dump directory {dumpdir}: {err.strerror}"
        ) from None
    if opts.size is not None:
        log.info(
            f"--size {opts.size}: vzdump's snapshots here are btrfs snapshots or overlay copies, "
            "which need no size set aside; ignored"
        )
    hook = Hook(opts.script, dumpdir)
    hook("job-start")
    made: list[Path] = []
    failures: list[VzError] = []
    outcomes: list[mail.Outcome] = []
    try:
        for ctid in ctids:
            set_ctid(ctid)
            started = time.monotonic()
            try:
                made.append(_dump_one(host, ctid, opts, dumpdir, hook))
                took = time.monotonic() - started
                outcomes.append(mail.Outcome(ctid, True, took, made[-1], "", _log_of(made[-1])))
            except VzError as err:
                took = time.monotonic() - started
                outcomes.append(mail.Outcome(ctid, False, took, None, err.message, None))
                if len(ctids) == 1:
                    raise
                log.error(f"backup of CT {ctid} failed: {err.message}")
                failures.append(err)
            finally:
                set_ctid(None)
    finally:
        interrupted = sys.exc_info()[0] is KeyboardInterrupt
        if not interrupted:
            hook("job-end")
        if opts.mailto and not interrupted:
            mail.send(host.setting("SENDMAIL") or mail.DEFAULT_SENDMAIL, opts.mailto, outcomes)
    if failures:
        raise VzError(failures[0].code, f"{len(failures)} of {len(ctids)} backups failed (see above)")
    return made


def _log_of(archive: Path) -> Path | None:
    name = ArchiveName.parse(archive.name)
    return archive.with_name(name.log_name) if name is not None else None


def sweep(area: Area, driver: StorageDriver, dumpdir: Path, ctid: int) -> None:
    """Remove what an interrupted vzdump of this CT left: we hold its lock, so it is stale."""
    if area.backups.is_dir():
        for entry in area.backups.iterdir():
            if entry.name.startswith((RUN_PREFIX, OLD_PREFIX)):
                umount_tree(entry)
                if (entry / "fs").exists():
                    for_layout(driver.layout).drop(driver, entry / "fs")
                remove_path(entry)
    for leftover in partial_leftovers(dumpdir, ctid):
        leftover.unlink(missing_ok=True)


def _fresh_name(dumpdir: Path, ctid: int, compression: Compression) -> ArchiveName:
    while True:
        name = ArchiveName(ctid, datetime.now().replace(microsecond=0), compression)
        taken = {a.stem for a in archives_of(dumpdir, ctid)}
        if name.stem not in taken and not (dumpdir / name.log_name).exists():
            return name
        time.sleep(0.2)  # two backups of one CT within a second: names have second resolution


class _Tee(io.TextIOBase):
    def __init__(self, *files: TextIO) -> None:
        self.files = files

    def write(self, text: str) -> int:
        for handle in self.files:
            handle.write(text)
        return len(text)

    def flush(self) -> None:
        for handle in self.files:
            handle.flush()


@contextmanager
def _logging_to(path: Path) -> Iterator[TextIO]:
    """Everything logged meanwhile also goes to the archive's own log file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    own = os.fdopen(fd, "a")
    previous = log.file
    log.file = cast(TextIO, _Tee(*(f for f in (previous, own) if f is not None)))
    try:
        yield own
    finally:
        log.file = previous
        own.close()


def _dump_one(host: Host, ctid: int, opts: DumpOptions, dumpdir: Path, hook: Hook) -> Path:
    ct = Container(host, ctid)
    with host.ct_lock(ctid, wait=60.0 * (opts.lockwait or 0)):
        area = ct.require_exists()
        driver = ct.driver()
        sweep(area, driver, dumpdir, ctid)
        name = _fresh_name(dumpdir, ctid, opts.compression)
        archive = dumpdir / name.name
        logfile = dumpdir / name.log_name
        hook.env.update(
            TARFILE=str(archive),
            TARGET=str(archive),
            LOGFILE=str(logfile),
            HOSTNAME=ct.config.get(HOSTNAME) or "",
        )
        mode = opts.mode
        with _logging_to(logfile) as own_log:
            try:
                mode = _backup(ct, area, driver, opts, dumpdir, name, hook)
            except BaseException as err:
                own_log.write(f"Error: {err}\n" if isinstance(err, VzError) else "Error: interrupted\n")
                sweep(area, driver, dumpdir, ctid)  # the temporary snapshot, its mount, the partial
                hook.quietly("backup-abort", mode, ctid)
                raise
        hook("log-end", mode, ctid)
    if opts.maxfiles is not None or opts.prune_days is not None:
        prune(dumpdir, ctid, opts.maxfiles, opts.prune_days)
    return archive


def _backup(
    ct: Container,
    area: Area,
    driver: StorageDriver,
    opts: DumpOptions,
    dumpdir: Path,
    name: ArchiveName,
    hook: Hook,
) -> Mode:
    started = time.monotonic()
    ctid = ct.ctid
    layout = driver.layout
    keeps_base = for_layout(layout).keeps_base
    running = ct.is_running()
    mode = opts.mode if running else Mode.STOP
    if not running and opts.mode is not Mode.STOP:
        log.info(f"CT {ctid} is not running: backing it up in stop mode")
    parent = _parent(area, dumpdir, opts, layout) if opts.incremental else None
    kind = "incremental" if parent else "full"
    log.info(f"Starting {kind} backup of CT {ctid} ({mode} mode, layout {layout}) to {dumpdir / name.name}")
    hook("backup-start", mode, ctid)
    area.backups.mkdir(mode=0o700, exist_ok=True)
    work = area.backups / f"{RUN_PREFIX}{os.getpid()}"
    work.mkdir(mode=0o700)
    snap, mnt = work / "fs", work / "mnt"
    cgroup = ct.host.runtime.cgroups_of(ctid).container
    what = f"CT {ctid}"
    with ExitStack() as held:
        scratch = work
        if opts.tmpdir is not None:
            scratch = Path(tempfile.mkdtemp(prefix=f"vzdump-{ctid}-", dir=opts.tmpdir))
            held.callback(remove_path, scratch)
        staging = scratch / "meta"
        if running and mode is Mode.STOP:
            hook("pre-stop", mode, ctid)
            # Killed between the stop and the start, vzdump would leave the CT down: the
            # guard starts it again then.
            with if_we_die([*VZCTL, "--quiet", "start", str(ctid)]):
                ct.stop(timeout=None if opts.stopwait is None else 60 * opts.stopwait)
                try:
                    driver.snapshot(area, snap)
                finally:
                    hook("pre-restart", mode, ctid)
                    ct.start()
            hook("post-restart", mode, ctid)
        elif running and mode is Mode.SNAPSHOT:
            hook("pre-stop", mode, ctid)
            with frozen(ct.host.runtime.cgroups, cgroup, what):
                driver.snapshot(area, snap)
                hook("pre-restart", mode, ctid)
            hook("post-restart", mode, ctid)
        elif running:  # suspend: frozen until the archive is written
            hook("pre-stop", mode, ctid)
            held.callback(hook, "post-restart", mode, ctid)
            held.enter_context(frozen(ct.host.runtime.cgroups, cgroup, what))
            held.callback(hook, "pre-restart", mode, ctid)
            driver.snapshot(area, snap)
        else:
            driver.snapshot(area, snap)
        from pyvz.backup import subvol

        base = subvol.info(snap) if keeps_base else None
        meta = Metadata(
            ctid=ctid,
            kind=kind,
            mode=str(mode),
            layout=str(layout),
            date=datetime.now().astimezone().isoformat(timespec="seconds"),
            archive=name.name,
            hostname=ct.config.get(HOSTNAME) or "",
            parent=parent[0] if parent else None,
            base=base,
            parent_base=parent[1] if parent else None,
            excludes=opts.patterns,
            scripts=tuple(
                a for a in (*HOST_ACTIONS, *CT_ACTIONS) if ct.paths.action_script(ctid, a).is_file()
            ),
        )
        members = _stage(ct, staging, meta)
        if parent:
            streamfile = staging / STREAM
            pipeline(
                [
                    [
                        "btrfs",
                        "-q",
                        "send",
                        "-p",
                        str(area.backups / BASE / "fs"),
                        "-f",
                        str(streamfile),
                        str(snap),
                    ]
                ],
                error_code=ExitCode.CHKPNT_ERROR,
            )
            members.append(STREAM)
            argv = stream.create_argv(staging, members, None, (), None)
            size = stream.write(argv, opts.compression, dumpdir / name.name, _meter(None, opts))
        elif not running and not driver.is_mounted(area) and for_layout(layout).in_place:
            # Nothing can change it: starting or mounting the CT waits for the lock we hold, so
            # its files are the snapshot's, and reading them in place finds them in the cache.
            exclude_file = _exclude_file(scratch, area.private, opts.patterns)
            argv = stream.create_argv(staging, members, area.private, (excl.RESERVED,), exclude_file)
            size = stream.write(argv, opts.compression, dumpdir / name.name, _meter(driver.usage(area), opts))
        else:
            mnt.mkdir()
            driver.mount_snapshot(area, snap, mnt)
            try:
                exclude_file = _exclude_file(scratch, mnt, opts.patterns)
                argv = stream.create_argv(
                    staging,
                    members,
                    mnt,
                    (excl.RESERVED,),
                    exclude_file,
                    for_layout(layout).unique_inodes(area),
                )
                size = stream.write(
                    argv, opts.compression, dumpdir / name.name, _meter(driver.usage(area), opts)
                )
            finally:
                umount_tree(mnt)
    if keeps_base:
        assert base is not None
        _keep_base(area, driver, work, name.name, dumpdir, base, opts.patterns)
    else:
        for_layout(layout).drop(driver, snap)
        remove_path(work)
    elapsed = time.monotonic() - started
    log.info(f"Backup of CT {ctid} finished in {elapsed:.1f} s: {dumpdir / name.name} ({size} bytes)")
    hook("backup-end", mode, ctid)
    return mode


def _meter(total: int | None, opts: DumpOptions) -> stream.Meter | None:
    show = sys.stderr.isatty() and not log.quiet
    return stream.Meter(total, opts.bwlimit, show) if show or opts.bwlimit else None


def _stage(ct: Container, staging: Path, meta: Metadata) -> list[str]:
    """The metadata members, written under `staging`; their names, metadata first."""
    folder = staging / META_DIR
    folder.mkdir(parents=True)
    (staging / META).write_text(meta.to_json())
    (staging / CONFIG).write_text(ct.conf_file().render())
    members = [META, CONFIG]
    for action in meta.scripts:
        source = ct.paths.action_script(ct.ctid, action)
        target = staging / script_member(action)
        target.write_bytes(source.read_bytes())
        os.chmod(target, source.stat().st_mode & 0o7777)
        members.append(script_member(action))
    return members


def _exclude_file(work: Path, tree: Path, patterns: tuple[str, ...]) -> Path | None:
    compiled = excl.compile_patterns(patterns)
    if not compiled:
        return None
    lines = []
    for member in excl.excluded_members(tree, compiled):
        if "\n" in member:
            log.warning(f"cannot exclude {member!r}: its name holds a newline")
            continue
        lines.append(excl.as_tar_pattern(member))
    path = work / "excludes"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _parent(area: Area, dumpdir: Path, opts: DumpOptions, layout: Layout) -> tuple[str, SubvolRef]:
    """The archive and base snapshot an incremental backup builds on."""
    if not for_layout(layout).keeps_base:
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"--incremental needs layout btrfs (a send stream against the last backup's snapshot); "
            f"this CT has layout {layout}: run vzdump without --incremental",
        )
    if opts.patterns:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            "--incremental cannot leave paths out (a send stream holds every change): "
            "drop --exclude-path/--stdexcludes",
        )
    try:
        record = json.loads((area.backups / BASE / BASE_RECORD).read_text())
        ref = SubvolRef(str(record["uuid"]), int(record["ctransid"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            "no earlier backup to build on: run a full vzdump first, then --incremental",
        ) from None
    last = str(record["archive"])
    if Path(record.get("dumpdir", "")) != dumpdir or not (dumpdir / last).is_file():
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"the last backup of this CT ({last}) is not in {dumpdir}: run a full vzdump there first",
        )
    if record.get("excludes"):
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"the last backup ({last}) left paths out, so nothing can build on it: run a full vzdump "
            "without --exclude-path/--stdexcludes first",
        )
    return last, ref


def _keep_base(
    area: Area,
    driver: StorageDriver,
    work: Path,
    archive: str,
    dumpdir: Path,
    base: SubvolRef,
    patterns: tuple[str, ...],
) -> None:
    """The run's snapshot becomes the CT's backup base; the previous base goes."""
    for leftover in ("mnt", "meta", "excludes"):
        remove_path(work / leftover)
    record = {"archive": archive, "dumpdir": str(dumpdir), "excludes": list(patterns), **base._asdict()}
    write_atomic(work / BASE_RECORD, json.dumps(record) + "\n", mode=0o600)
    current = area.backups / BASE
    old = area.backups / f"{OLD_PREFIX}{os.getpid()}"
    if current.exists():
        os.rename(current, old)
    os.rename(work, current)
    if old.exists():
        for_layout(driver.layout).drop(driver, old / "fs")
        remove_path(old)


def prune(dumpdir: Path, ctid: int, maxfiles: int | None, max_days: int | None) -> None:
    archives = archives_of(dumpdir, ctid)
    parents: dict[str, str | None] = {}
    for archive in archives:
        try:
            parents[archive.name] = stream.metadata(dumpdir / archive.name).parent
        except VzError:
            parents[archive.name] = None  # not ours, or damaged: nothing builds on it
    for archive in to_prune(archives, parents, datetime.now(), maxfiles, max_days):
        (dumpdir / archive.name).unlink(missing_ok=True)
        (dumpdir / archive.log_name).unlink(missing_ok=True)
        log.info(f"Pruned old backup {archive.name}")
