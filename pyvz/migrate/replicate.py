"""vzreplicate's sending side: keep a replica of a CT on standby hosts, incrementally.

A run to one standby goes over the migration transport (one SSH session with this host's
migration key, the standby's forced `vzmigrate --receive`, see replica_receiver.py):

1. `replicate`: the standby says which snapshot of ours its replica was received from
   (its received UUID), or that it has none.
2. A read-only snapshot of the CT's private area is taken (the CT frozen for that instant
   if it runs, as vzdump's snapshot mode does), in Area.replicating/HOST/new/fs.
3. Its config and action scripts go, then `btrfs send -p PARENT new/fs`, PARENT being the
   snapshot the standby's replica came from (kept in HOST/base/fs), or a full stream when
   there is none: the first run, or the two ends no longer agree (said so, and recorded).
4. `commit`: the standby swaps the new replica in, in one step; only once it says so does
   new/fs become base/fs here.

Whatever breaks off (a kill of either side, a cut link, a refusal), the standby keeps its
previous replica, and the two ends still agree on a parent: if this side died after the
standby committed but before it moved new to base, the standby names new's UUID in step 1
and new becomes the parent. A failed run is retried a bounded number of times with growing
pauses once it had got through to the standby (vz.conf REPLICATE_RETRIES, default 2, and
REPLICATE_RETRY_DELAY, default 5 s, doubling), and recorded for `vzreplicate status` and for
`--due`'s backoff. Only the btrfs layout is replicated: a dir/overlay CT is refused in one
line (`vzctl convert` it first).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pyvz import faults
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.host import Host
from pyvz.lock import Lock
from pyvz.log import log
from pyvz.migrate import replication_record as records
from pyvz.migrate.replication_record import Good, HostRecord, Last
from pyvz.migrate.sender import ACTIONS, _size, check_destination, session
from pyvz.migrate.wire import VERSION, Wire
from pyvz.params import REPLICATE, REPLICATE_INTERVAL, Layout
from pyvz.run import piped
from pyvz.storage.base import Area, remove_with_subvolumes
from pyvz.units import human_size

DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = 5.0
# The CT's lock is held for an instant only (the snapshot), but a start or a stop may hold
# it for a while: a run waits for it rather than fail on a CT that is busy for a moment.
LOCK_WAIT = 60.0


@dataclass(frozen=True)
class RunResult:
    """One run of one CT to one standby host, as `vzreplicate run` reports it."""

    ctid: int
    target: str
    ok: bool
    kind: str  # "full" or "incremental" ("" if it failed before it knew)
    sent: int  # bytes of the stream
    size: int  # bytes of the CT's files
    attempts: int
    seconds: float
    error: str | None = None
    code: ExitCode | MigrateExit | None = None
    note: str | None = None


class _Attempt:
    """What one attempt got to, for the record and for whether a retry may help."""

    def __init__(self) -> None:
        self.heard = False  # the standby answered `replicate`
        self.kind = ""
        self.sent = 0
        self.size = 0
        self.note: str | None = None
        self.taken = 0.0  # when the snapshot sent was taken
        self.uuid = ""  # its UUID, once the standby holds it


def _uuid(path: Path) -> str | None:
    from pyvz.backup.subvol import info

    try:
        return info(path).uuid if path.exists() else None
    except VzError:
        return None


class _Run:
    """One attempt of CT `ctid` to `target`."""

    def __init__(self, host: Host, ctid: int, target: str, ssh_options: tuple[str, ...]) -> None:
        self.host = host
        self.ct = Container(host, ctid)
        self.target = target
        self.ssh_options = ssh_options
        self.attempt = _Attempt()
        self._last = time.monotonic()

    def run(self) -> None:
        ct = self.ct
        with ct.host.ct_lock(ct.ctid, wait=LOCK_WAIT):
            area = self._check()
        self._mark("checks")
        with session(self.host, self.target, self.ssh_options) as wire:
            reply = wire.call(
                {
                    "op": "replicate",
                    "version": VERSION,
                    "ctid": ct.ctid,
                    "source": _source_name(self.host),
                    "layout": str(Layout.BTRFS),
                }
            )
            self.attempt.heard = True
            self._mark("connect")
            parent = reply.get("parent")
            self._send(wire, area, parent if isinstance(parent, str) else None)
        self._mark("bye")

    def _mark(self, phase: str) -> None:
        """--verbose: how long each phase took (the fixed costs of a run are what an
        incremental run of a CT that barely changed is made of)."""
        now = time.monotonic()
        log.debug(f"{self.target}: {phase} {now - self._last:.3f} s")
        self._last = now

    def _check(self) -> Area:
        ct = self.ct
        try:
            area = ct.require_exists()
        except VzError as err:
            raise VzError(ExitCode.NO_CT_CONFIG, err.message) from None
        layout = ct.driver().layout
        if layout != Layout.BTRFS:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"CT {ct.ctid} has layout {layout}: only btrfs CTs are replicated "
                "(`vzctl convert CT --layout btrfs` first)",
            )
        return area

    def _send(self, wire: Wire, area: Area, standby_has: str | None) -> None:
        attempt = self.attempt
        work = area.replicating / self.target
        base, new = work / "base", work / "new"
        work.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            parent = self._parent(base, new, standby_has)
            remove_with_subvolumes(new)
            new.mkdir(mode=0o700)
            taken = self._stream(wire, area, parent, new)
            self._mark("stream")
        except BaseException:
            # The standby has not been asked to commit: this snapshot is nobody's parent.
            remove_with_subvolumes(new)
            for empty in (work, area.replicating):
                try:
                    empty.rmdir()
                except OSError:
                    pass
            raise
        wire.call({"op": "commit", "taken": taken, "size": attempt.size})
        self._mark("commit")
        faults.point(self.host.paths, "replicate-sent")
        attempt.taken = taken
        # The standby holds it now: it is the parent of the next run.
        remove_with_subvolumes(base)
        os.rename(new, base)
        attempt.uuid = _uuid(base / "fs") or ""

    def _stream(self, wire: Wire, area: Area, parent: Path | None, new: Path) -> float:
        """The snapshot, config and stream of a run; when the snapshot was taken."""
        ct, attempt = self.ct, self.attempt
        with self.host.ct_lock(ct.ctid, wait=LOCK_WAIT):
            self._check()
            config = ct.conf_file().render()
            scripts = {}
            for action in ACTIONS:
                path = self.host.paths.action_script(ct.ctid, action)
                if path.is_file():
                    scripts[action] = path.read_text()
            taken = time.time()
            self._snapshot(area, new / "fs")
            attempt.size = self._size(area, parent is None)
        self._mark("snapshot")
        wire.call({"op": "config", "text": config, "scripts": scripts})
        self._mark("config")
        attempt.kind = "incremental" if parent is not None else "full"
        wire.send(
            {
                "op": "stream",
                "kind": "btrfs",
                "name": "fs",
                "incremental": parent is not None,
                "bytes": attempt.size,
            }
        )
        argv = ["btrfs", "send", "-q"]
        if parent is not None:
            argv += ["-p", str(parent)]

        def sent(count: int) -> None:
            attempt.sent += count
            faults.point(self.host.paths, "replicate-sending")

        with piped([*argv, str(new / "fs")], "r", error_code=MigrateExit.COPY) as send:
            wire.send_fd(send.read_fd, sent)
        wire.answer()
        return taken

    def _parent(self, base: Path, new: Path, standby_has: str | None) -> Path | None:
        """The snapshot here that the standby's replica was received from, if any."""
        attempt = self.attempt
        if standby_has is None:
            if base.exists():
                attempt.note = f"{self.target} holds no replica of CT {self.ct.ctid} any more: a full send"
                log.info(attempt.note)
            remove_with_subvolumes(base)
            return None
        if _uuid(base / "fs") == standby_has:
            return base / "fs"
        if _uuid(new / "fs") == standby_has:
            # The run before was committed there, but this side died before it knew.
            remove_with_subvolumes(base)
            os.rename(new, base)
            return base / "fs"
        attempt.note = (
            f"the replica on {self.target} and the snapshots here do not match "
            f"(this host's record of CT {self.ct.ctid} was lost or changed): a full send"
        )
        log.info(attempt.note)
        remove_with_subvolumes(base)
        return None

    def _size(self, area: Area, full: bool) -> int:
        """The CT's bytes: its qgroup's count; without quotas a walk over its files, but
        only for a full run (the standby checks its free space against it), else the
        last good run's figure."""
        usage = self.ct.driver().usage(area)
        if usage is not None or full:
            return usage if usage is not None else _size(self.ct, area)
        good = records.load(self.host.paths, self.ct.ctid).get(self.target)
        return good.good.size if good is not None and good.good is not None else 0

    def _snapshot(self, area: Area, target: Path) -> None:
        from pyvz.storage.btrfs import snapshot

        ct = self.ct
        if not ct.is_running():
            snapshot(area.private, target, readonly=True)
            return
        from pyvz.ct.freeze import frozen

        cgroup = self.host.runtime.cgroups_of(ct.ctid).container
        with frozen(self.host.runtime.cgroups, cgroup, f"CT {ct.ctid}"):
            snapshot(area.private, target, readonly=True)


def replication_lock(host: Host, ctid: int) -> Lock:
    """One run of a CT at a time (to all its standbys, one after the other). Not the CT's
    own lock: that is held only for the instant of the snapshot, so that a long full send
    blocks no `vzctl` command."""
    return Lock(host.lock_dir / f"replicate-{ctid}.lck", f"replication of CT {ctid}")


def _retries(host: Host) -> tuple[int, float]:
    try:
        retries = int(host.setting("REPLICATE_RETRIES") or DEFAULT_RETRIES)
        delay = float(host.setting("REPLICATE_RETRY_DELAY") or DEFAULT_RETRY_DELAY)
    except ValueError:
        raise VzError(
            ExitCode.INVALID_CONFIG, "vz.conf: REPLICATE_RETRIES/REPLICATE_RETRY_DELAY must be numbers"
        ) from None
    return max(0, min(retries, 10)), max(0.0, delay)


def ssh_options(host: Host, given: Sequence[str] | None) -> tuple[str, ...]:
    """--ssh's options, or vz.conf's REPLICATE_SSH (for runs a timer starts); and with
    REPLICATE_SSH_PERSIST=DURATION, one SSH connection per standby kept open that long
    after a run and reused by the next (ssh's ControlMaster): an incremental run of a CT
    that barely changed is mostly the SSH handshake. Off by default: it leaves an ssh
    process per standby running between runs."""
    import shlex

    options = tuple(given) if given is not None else tuple(shlex.split(host.setting("REPLICATE_SSH") or ""))
    persist = host.setting("REPLICATE_SSH_PERSIST")
    if not persist or persist in ("0", "no"):
        return options
    from pyvz.units import parse_duration

    try:
        seconds = parse_duration(persist, "REPLICATE_SSH_PERSIST")
    except VzError as err:
        raise VzError(ExitCode.INVALID_CONFIG, f"vz.conf: {err.message}") from None
    sockets = host.paths.run_dir / "ssh"
    sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(sockets, 0o700)  # the sockets open sessions with the migration key: root's only
    return (
        *options,
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={sockets}/%C",
        "-o",
        f"ControlPersist={seconds}",
    )


def targets_of(host: Host, ctid: int) -> tuple[str, ...]:
    """The CT's REPLICATE hosts."""
    hosts: tuple[str, ...] | None = Container(host, ctid).config.get(REPLICATE)
    return hosts or ()


def replicate(
    host: Host,
    ctid: int,
    targets: Sequence[str] | None = None,
    ssh: Sequence[str] | None = None,
) -> list[RunResult]:
    """Run the replication of CT `ctid` now, to `targets` (default: its REPLICATE hosts).
    Every target is tried (retried) in turn; the results say how each went."""
    ct = Container(host, ctid)
    ct.conf_file()  # one line for an unknown CT, before anything else
    configured = targets_of(host, ctid)
    chosen = tuple(check_destination(t) for t in targets) if targets else configured
    if not chosen:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"CT {ctid} has no standby hosts: `vzctl set {ctid} --replicate HOST --save`, or name one",
        )
    options = ssh_options(host, ssh)
    results = []
    lock = replication_lock(host, ctid)
    try:
        lock.__enter__()
    except VzError as err:
        raise VzError(ExitCode.LOCKED, f"CT {ctid} is being replicated already: {err.message}") from None
    try:
        for target in chosen:
            results.append(_one(host, ctid, target, options, remember=target in configured))
    finally:
        lock.__exit__(None, None, None)
    return results


def _one(host: Host, ctid: int, target: str, options: tuple[str, ...], remember: bool) -> RunResult:
    retries, delay = _retries(host)
    started = time.time()
    attempts = 0
    while True:
        attempts += 1
        run = _Run(host, ctid, target, options)
        try:
            run.run()
            error: VzError | None = None
            break
        except VzError as err:
            error = err
            # Retried only what broke off after the standby had answered (a cut link, a
            # killed receiver): a host that cannot be reached or that refuses will not
            # change its mind in a few seconds; --due comes back to it later.
            transient = run.attempt.heard and err.code in (MigrateExit.CONNECT, MigrateExit.COPY)
            if not transient or attempts > retries:
                break
            pause = delay * 2 ** (attempts - 1)
            log.info(f"CT {ctid} -> {target}: {err.message}; trying again in {pause:g} s")
            time.sleep(pause)
    attempt = run.attempt
    finished = time.time()
    result = RunResult(
        ctid=ctid,
        target=target,
        ok=error is None,
        kind=attempt.kind,
        sent=attempt.sent,
        size=attempt.size,
        attempts=attempts,
        seconds=finished - started,
        error=error.message if error else None,
        code=error.code if error else None,  # type: ignore[arg-type]
        note=attempt.note,
    )
    known = records.load(host.paths, ctid)
    if remember or target in known or error is None:
        _record(host, ctid, target, result, started, attempt, known)
    return result


def _record(
    host: Host,
    ctid: int,
    target: str,
    result: RunResult,
    started: float,
    attempt: _Attempt,
    known: dict[str, HostRecord],
) -> None:
    before = known.get(target, HostRecord(None, None))
    last = Last(
        started=started,
        finished=started + result.seconds,
        ok=result.ok,
        attempts=result.attempts,
        kind=result.kind,
        sent=result.sent,
        error=result.error,
        code=None if result.code is None else int(result.code),
        note=result.note,
    )
    if result.ok:
        good = Good(
            taken=attempt.taken,
            finished=last.finished,
            uuid=attempt.uuid,
            size=result.size,
            sent=result.sent,
            incremental=result.kind == "incremental",
        )
        record = HostRecord(good=good, last=last, failures=0, next_try=0.0)
    else:
        failures = before.failures + 1
        _retries_left, delay = _retries(host)
        interval = _interval(host, ctid)
        backoff = min(interval, max(delay, 1.0) * 2 ** min(failures, 10))
        record = replace(before, last=last, failures=failures, next_try=last.finished + backoff)
    known[target] = record
    records.save(host.paths, ctid, known)


def _interval(host: Host, ctid: int) -> float:
    try:
        value: int | None = Container(host, ctid).config.get(REPLICATE_INTERVAL)
    except VzError:
        value = None
    return float(value or REPLICATE_INTERVAL.default)


def due(host: Host, now: float | None = None) -> list[tuple[int, list[str]]]:
    """The CTs whose interval has passed for some of their standbys, with those standbys."""
    now = time.time() if now is None else now
    found = []
    for ctid in host.ctids():
        try:
            targets = targets_of(host, ctid)
        except VzError as err:
            log.warning(f"CT {ctid}: {err.message}")
            continue
        if not targets:
            continue
        interval = _interval(host, ctid)
        known = records.load(host.paths, ctid)
        waiting = []
        for target in targets:
            record = known.get(target)
            if record is not None and now < record.next_try:
                continue
            if record is None or record.good is None or now - record.good.taken >= interval:
                waiting.append(target)
        if waiting:
            found.append((ctid, waiting))
    return found


def run_due(host: Host, ssh: Sequence[str] | None = None) -> list[RunResult]:
    """One pass over every CT that is due (what a timer or the cluster's agent calls)."""
    results = []
    for ctid, targets in due(host):
        try:
            results += replicate(host, ctid, targets, ssh)
        except VzError as err:
            if err.code == ExitCode.LOCKED:
                log.info(f"CT {ctid}: {err.message}; skipped")
                continue
            failed = RunResult(ctid, ",".join(targets), False, "", 0, 0, 0, 0.0, err.message, err.code)  # type: ignore[arg-type]
            results.append(failed)
    return results


def forget(host: Host, ctid: int, target: str, ssh: Sequence[str] | None = None) -> bool:
    """Drop CT `ctid`'s replica on `target` (asked over the transport: the standby removes
    it only if this host's key sent it) and this side's snapshots and record of it.
    Whether the standby had one."""
    target = check_destination(target)
    with replication_lock(host, ctid):
        with session(host, target, ssh_options(host, ssh)) as wire:
            removed = bool(wire.call({"op": "replicate-remove", "ctid": ctid}).get("removed"))
        ct = Container(host, ctid)
        if ct.has_config():
            remove_with_subvolumes(ct.area().replicating / target)
            try:
                ct.area().replicating.rmdir()
            except OSError:
                pass
        known = records.load(host.paths, ctid)
        known.pop(target, None)
        records.save(host.paths, ctid, known)
    return removed


def describe(result: RunResult) -> str:
    """`vzreplicate run`'s line for a run that went well."""
    tries = f", {result.attempts} attempts" if result.attempts > 1 else ""
    return (
        f"CT {result.ctid} -> {result.target}: {result.kind}, {human_size(result.sent)} sent "
        f"(CT {human_size(result.size)}) in {result.seconds:.1f} s{tries}"
    )


def _source_name(host: Host) -> str:
    """How this host names itself to its standbys: its cluster name in a cluster (what HA
    and `vzcluster` call it), else its hostname."""
    from pyvz.cluster import namespace

    if namespace.clustered(host.paths):
        from pyvz.cluster.settings import load

        return load(host.paths).name
    return socket.gethostname()
