"""vzmigrate's sending side: move a CT to another host over one SSH session.

A stopped CT goes as it is: its snapshots as a chain of btrfs send streams (each against the
one before, so they arrive as snapshots and share their blocks), then its files against the
last of them. A running CT is copied while it runs, in rounds (a full stream, then each
round only what changed since the one before, until the change stops shrinking), and only
then stopped (restart migration) or checkpointed with CRIU (--online); the last round is the
short one, and its time is the CT's downtime. The destination starts (or restores) it.

Never two, never none: the CT on this host is taken apart only after the destination says
the CT runs there (or, for a stopped CT, is there). Until it answers, a guard process
starts the CT here again if vzmigrate dies; once the final request is out, the CT stays
stopped here with a marker (etc/vz/conf/CTID.migrating) that `vzctl start` honours until
`vzmigrate --resolve` has asked the destination where the CT is.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from pyvz import faults
from pyvz.atomic import write_atomic
from pyvz.config import remove_name_links_to
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.host import Host, cpu_flags
from pyvz.log import log
from pyvz.migrate import keys
from pyvz.migrate.wire import VERSION, Wire
from pyvz.params import IPADD, NAME, Layout
from pyvz.progress import Progress
from pyvz.run import if_we_die, piped
from pyvz.storage.base import Area, remove_with_subvolumes

MAX_ROUNDS = 6
SMALL_DELTA = 4 << 20  # a delta this small is not worth another round
_DEST_RE = re.compile(r"^(?:root@)?[A-Za-z0-9][A-Za-z0-9.:_-]*$")
ACTIONS = ("premount", "mount", "umount", "postumount", "start", "stop")


class Options(NamedTuple):
    destination: str
    ctid: int
    remove_area: bool = True
    keep_dst: bool = False
    online: bool = False
    nodeps: frozenset[str] = frozenset()
    ssh_options: tuple[str, ...] = ()
    times: bool = False


def check_destination(text: str) -> str:
    if not _DEST_RE.match(text):
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"bad destination {text!r} (want a host name or address)"
        )
    return text.removeprefix("root@")


def marker(host: Host, ctid: int) -> Path:
    return host.paths.conf_dir / f"{ctid}.migrating"


class Timer:
    """Per-phase times for --times, and the CT's downtime."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []
        self.downtime: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases.append((name, time.monotonic() - started))

    def table(self) -> list[str]:
        lines = [f"{'phase':<28} {'seconds':>8}"]
        lines += [f"{name:<28} {seconds:>8.3f}" for name, seconds in self.phases]
        if self.downtime is not None:
            lines.append(f"{'downtime':<28} {self.downtime:>8.3f}")
        return lines


def ssh_argv(host: Host, destination: str, options: tuple[str, ...]) -> list[str]:
    key = keys.ensure_key(host.paths)
    return [
        "ssh",
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
        *options,
        *_cipher(options),
        "-T",
        f"root@{destination}",
        "pyvz-migrate",  # sshd runs the key's forced command whatever this says
    ]


def _cipher(options: tuple[str, ...]) -> list[str]:
    """AES-GCM first where the CPU has AES instructions: ssh then carries ~30% more than
    with its default ChaCha20 here (310 vs 240 MB/s), and a live move's memory travels
    while the CT is down. ssh keeps the first value it sees, so --ssh's choice comes first."""
    chosen = any(o == "-c" or re.match(r"(-o)?\s*ciphers\s*[= ]", o, re.I) for o in options)
    return [] if chosen or "aes" not in cpu_flags() else ["-o", "Ciphers=^aes128-gcm@openssh.com"]


@contextmanager
def session(host: Host, destination: str, options: tuple[str, ...]) -> Iterator[Wire]:
    argv = ssh_argv(host, destination, options)
    pipe = piped(argv, "rw", error_code=MigrateExit.CONNECT)
    wire: Wire | None = None
    try:
        with pipe:
            wire = Wire(pipe.read_fd, pipe.write_fd, destination)
            wire.start_pinging()  # the receiver gives up on a sender it does not hear from
            try:
                yield wire
                wire.send({"op": "bye"})
            finally:
                wire.stop_pinging()
            pipe.close_input()
    except VzError as err:
        # Before any answer, ssh's own last word says why (no route, key refused...);
        # after one, the error is about the migration and says what to do.
        why = (getattr(pipe, "error_text", "") or "").strip().splitlines()
        if err.code == MigrateExit.CONNECT and why and (wire is None or not wire.heard):
            raise VzError(MigrateExit.CONNECT, f"cannot talk to {destination}: {why[-1]}") from None
        raise


class Sender:
    def __init__(self, host: Host, opts: Options) -> None:
        self.host = host
        self.opts = opts
        self.ct = Container(host, opts.ctid)
        self.timer = Timer()
        self.progress = Progress()
        self.sent: list[Path] = []  # read-only subvolumes sent, in order (the next one's parent)

    # ---- the whole move --------------------------------------------------------------------

    def run(self) -> None:
        ct, opts = self.ct, self.opts
        with self.host.ct_lock(ct.ctid):
            if marker(self.host, ct.ctid).exists():
                raise VzError(
                    MigrateExit.LOCKED,
                    f"CT {ct.ctid} is being handed over already: `vzmigrate --resolve DEST {ct.ctid}`",
                )
            try:
                area = ct.require_exists()
            except VzError as err:
                raise VzError(MigrateExit.NOTEXIST, err.message) from None
            layout = ct.driver().layout
            running = ct.is_running()
            online = opts.online and running
            if opts.online and not running:
                log.info(f"CT {ct.ctid} is stopped: it is moved as it is, no checkpoint needed")
            if online:
                from pyvz.ct import checkpoint

                checkpoint.require_dumpable(ct)
            work = area.migrating
            remove_with_subvolumes(work)
            work.mkdir(mode=0o700)
            try:
                with session(self.host, opts.destination, opts.ssh_options) as wire:
                    self._move(wire, area, layout, running, online, work)
            finally:
                remove_with_subvolumes(work)
        if opts.times or log.verbose:
            for line in self.timer.table():
                log.info(line)

    def _move(self, wire: Wire, area: Area, layout: Layout, running: bool, online: bool, work: Path) -> None:
        ct, opts = self.ct, self.opts
        cfg = ct.config
        with self.timer.phase("checks"):
            reply = wire.call(
                {
                    "op": "hello",
                    "version": VERSION,
                    "ctid": ct.ctid,
                    "name": cfg.get(NAME),
                    "addresses": list(_addresses(ct)),
                    "layout": str(layout),
                    "bytes": _size(ct, area),
                    "online": online,
                }
            )
            if online and "cpu_check" not in opts.nodeps and "cpu" not in opts.nodeps:
                missing = cpu_flags() - set(reply.get("cpu_flags") or ())
                if missing:
                    raise VzError(
                        MigrateExit.UNSUP_CPU,
                        f"{opts.destination}'s CPU lacks {', '.join(sorted(missing)[:8])}: the CT's "
                        "processes could crash there (--nodeps=cpu_check to go anyway)",
                    )
            accepted = wire.call(self._config(area, online))
            if accepted.get("kept_aside"):
                log.warning(
                    f"{opts.destination} keeps the CT's host-side scripts aside (not run): "
                    f"{', '.join(accepted['kept_aside'])} (MIGRATE_HOST_SCRIPTS=yes in its vz.conf "
                    "allows them)"
                )
        from pyvz.ct.snapshots import Store

        store = Store(area)
        snapshots = store.all()
        if layout == Layout.BTRFS:
            with self.timer.phase("snapshots"):
                for snapshot in snapshots:
                    self._send_subvolume(wire, store.files(snapshot.uuid), work, f"snap-{snapshot.uuid}")
            files = self._rounds(wire, area, work, running, online)
        else:
            files = "files"
        commit = {
            "op": "commit",
            "snapshots": [s._asdict() for s in snapshots],
            "current": store.current,
            "files": files,
            "start": running,
        }
        self._hand_over(wire, area, layout, running, online, work, commit)

    def _config(self, area: Area, online: bool) -> dict[str, object]:
        from pyvz.ct.snapshots import Store

        ct = self.ct
        scripts = {}
        for action in ACTIONS:
            path = self.host.paths.action_script(ct.ctid, action)
            if path.is_file():
                scripts[action] = path.read_text()
        store = Store(area)
        configs = {
            s.uuid: store.config(s.uuid).read_text() for s in store.all() if store.config(s.uuid).exists()
        }
        return {
            "op": "config",
            "text": ct.conf_file().render(),
            "addresses": list(_addresses(ct)),
            "scripts": scripts,
            "snapshot_configs": configs,
            "keep_ids": online,
        }

    # ---- files -------------------------------------------------------------------------------

    def _send_subvolume(self, wire: Wire, source: Path, work: Path, name: str) -> int:
        """A read-only snapshot of `source` named `name`, sent against the last one sent."""
        from pyvz.storage.btrfs import snapshot

        target = work / name
        snapshot(source, target, readonly=True)
        argv = ["btrfs", "send", "-q"]
        if self.sent:
            argv += ["-p", str(self.sent[-1])]
        wire.send({"op": "stream", "kind": "btrfs", "name": name})
        self.progress.start(name)
        with piped([*argv, str(target)], "r", error_code=MigrateExit.COPY) as send:
            count = wire.send_fd(send.read_fd, self.progress.add)
        self.progress.close()
        wire.answer()
        self.sent.append(target)
        log.debug(f"sent {name}: {count} bytes")
        return count

    def _rounds(self, wire: Wire, area: Area, work: Path, running: bool, online: bool) -> str:
        """Pre-copy while the CT runs; returns the name of the last round sent."""
        if not running:
            with self.timer.phase("copy"):
                self._send_subvolume(wire, area.private, work, "round-1")
            return "round-1"
        previous: int | None = None
        for number in range(1, MAX_ROUNDS + 1):
            with self.timer.phase(f"pre-copy round {number}"):
                count = self._send_subvolume(wire, area.private, work, f"round-{number}")
            log.info(f"Pre-copy round {number}: {count / 1048576:.1f} MB")
            faults.point(self.host.paths, "precopy")
            if count < SMALL_DELTA or (previous is not None and count > previous * 0.7):
                break
            previous = count
        return f"round-{number}"

    # ---- the hand-over -------------------------------------------------------------------------

    def _hand_over(
        self,
        wire: Wire,
        area: Area,
        layout: Layout,
        running: bool,
        online: bool,
        work: Path,
        commit: dict[str, object],
    ) -> None:
        from pyvz.ct import checkpoint

        ct, opts = self.ct, self.opts
        restart_here = [sys.executable, "-m", "pyvz.cli.vzctl", "start", str(ct.ctid)]
        stopped_at = time.monotonic()
        with if_we_die(restart_here if running else ["true"]):
            try:
                if running:
                    stopped_at = time.monotonic()
                    with self.timer.phase("checkpoint" if online else "stop"):
                        if online:
                            # Into the CT's own dump: until the hand-over is settled it is
                            # `suspended` here, and any `vzctl start` resumes it.
                            checkpoint.chkpnt(ct, None, lock=False, quick=True)
                        else:
                            ct.stop()
                faults.point(self.host.paths, "frozen")
                with self.timer.phase("final copy"):
                    if layout == Layout.BTRFS and running:
                        commit["files"] = "final"
                        self._send_subvolume(wire, area.private, work, "final")
                    elif layout == Layout.DIR:
                        self._send_tar(wire, area.private, "files")
                    if online:
                        self._send_tar(wire, checkpoint.default_dump(self.host, ct.ctid), "dump")
                faults.point(self.host.paths, "final")
            except BaseException:
                self._restart_here(running)
                raise
            # From here the destination may have the CT: never start it here on a guess.
            write_atomic(marker(self.host, ct.ctid), json.dumps({"to": opts.destination, "running": running}))
        resolve = [*_self_argv(), "--resolve", *_ssh_args(opts.ssh_options), opts.destination, str(ct.ctid)]
        with if_we_die(resolve):
            with self.timer.phase("restore" if online else "start" if running else "commit"):
                try:
                    reply = wire.call(commit)
                except VzError as err:
                    if isinstance(err.code, MigrateExit) and err.code == MigrateExit.CONNECT:
                        raise VzError(
                            MigrateExit.CONNECT,
                            f"{err.message}; CT {ct.ctid} stays stopped here until "
                            f"`vzmigrate --resolve {opts.destination} {ct.ctid}` finds out where it is",
                        ) from None
                    # The destination refused: it does not have the CT. It runs here again.
                    marker(self.host, ct.ctid).unlink(missing_ok=True)
                    self._restart_here(running)
                    raise
            if running:
                self.timer.downtime = time.monotonic() - stopped_at
                log.info(f"CT {ct.ctid} was down for {self.timer.downtime:.2f} s")
            faults.point(self.host.paths, "handover")
            self._retire(area)
        log.info(
            f"CT {ct.ctid} is on {opts.destination} now" + (" and running" if reply.get("running") else "")
        )

    def _restart_here(self, running: bool) -> None:
        """The move failed: the CT runs here again as it did (from its dump after a
        checkpoint). The caller re-raises the failure; this one's own is logged."""
        if not running or self.ct.is_running():
            return
        log.info(f"Starting CT {self.ct.ctid} here again")
        try:
            self.ct.start()
            return
        except VzError as err:
            if err.code != ExitCode.RESTORE_ERROR:
                log.error(f"CT {self.ct.ctid} could not be started here again: {err.message}")
                return
            log.error(f"CT {self.ct.ctid}'s processes could not be restored here either: {err.message}")
        # Never none: booted afresh is better than not running at all; the dump is kept aside.
        from pyvz.ct import checkpoint

        dump = checkpoint.default_dump(self.host, self.ct.ctid)
        kept = dump.with_name(f"{dump.name}.failed")
        remove_with_subvolumes(kept)
        if dump.exists():
            os.rename(dump, kept)
        try:
            self.ct.start()
            log.warning(f"CT {self.ct.ctid} was booted afresh here (its dump is kept in {kept})")
        except VzError as err:
            log.error(f"CT {self.ct.ctid} could not be started here again: {err.message}")

    def _send_tar(self, wire: Wire, directory: Path, name: str) -> None:
        argv = ["tar", "-C", str(directory), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
        argv += ["--sparse", "-cf", "-", "."]
        wire.send({"op": "stream", "kind": "tar", "name": name})
        self.progress.start(name)
        with piped(argv, "r", error_code=MigrateExit.COPY) as tar:
            wire.send_fd(tar.read_fd, self.progress.add)
        self.progress.close()
        wire.answer()

    def _retire(self, area: Area) -> None:
        """The CT is on the destination: here it stops counting, now."""
        from pyvz.ct.create import destroy

        ct = self.ct
        conf = self.host.paths.conf_file(ct.ctid)
        if self.opts.remove_area:
            destroy(self.host, ct.ctid, lock=False, handed_to=self.opts.destination)  # its firewall table too
        else:
            from pyvz.cluster import namespace
            from pyvz.net.firewall import remove

            namespace.hand_over(
                self.host.paths,
                ct.ctid,
                namespace.of_config(ct.ctid, ct.conf_file().items()),
                self.opts.destination,
            )

            # A live move's checkpoint left the table here until now (checkpoint.chkpnt's `quick`).
            remove(ct.firewall_table())
            os.replace(conf, conf.with_name(conf.name + ".migrated"))
            remove_name_links_to(self.host.paths, ct.ctid)
            log.info(f"The private area stays here ({area.private}); the config is {conf}.migrated")
        marker(self.host, ct.ctid).unlink(missing_ok=True)


def _addresses(ct: Container) -> tuple[str, ...]:
    addresses: tuple[str, ...] | None = ct.config.get(IPADD)
    return addresses or ()


def _size(ct: Container, area: Area) -> int:
    usage = ct.driver().usage(area)
    if usage is not None:
        return usage
    total = 0
    for top, _dirs, files in os.walk(area.private):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _self_argv() -> list[str]:
    return [sys.executable, "-m", "pyvz.cli.vzmigrate"]


def _ssh_args(options: tuple[str, ...]) -> list[str]:
    import shlex

    return [f"--ssh={shlex.join(options)}"] if options else []


def resolve(host: Host, destination: str, ctid: int, options: tuple[str, ...]) -> None:
    """After an interrupted hand-over: ask the destination whether the CT arrived, and make
    this host agree (take it apart here, or start it here again)."""
    path = marker(host, ctid)
    with host.ct_lock(ctid):
        if not path.exists():
            log.info(f"CT {ctid} is not being handed over; nothing to resolve")
            return
        state = json.loads(path.read_text())
        with session(host, destination, options) as wire:
            arrived = bool(wire.call({"op": "status", "ctid": ctid}).get("arrived"))
        ct = Container(host, ctid)
        if arrived:
            log.info(f"CT {ctid} arrived at {destination}: taking it apart here")
            from pyvz.ct.create import destroy

            destroy(host, ctid, lock=False, handed_to=destination)
        else:
            log.info(f"CT {ctid} did not arrive at {destination}: it stays here")
            path.unlink()
            if state.get("running") and not ct.is_running():
                ct.start()
        path.unlink(missing_ok=True)
