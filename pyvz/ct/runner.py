"""vzctl run: one command in a fresh CT (an O(1) snapshot of a template, a CT or one of its
snapshots), with the caller's terminal or pipes, its exit code, and with --rm nothing left.

The steps are the ones the other commands take (create or clone, start, an lxc-attach as
exec's, stop, destroy); what is run's own is the owner record (ct/runowner.py), which
makes a `vzctl run` killed with -9 cost no more than a CT until the next run or boot, and
the supervision of the command: SIGINT, SIGTERM and SIGHUP to vzctl run are handed to the
command, and the CT is cleaned up after it whatever it did.

Without --boot the CT's own init does not run: LXC's small init holds the CT (see
LxcRuntime.start) and the command is its only work, which is what a build wants and
takes no boot time; --boot starts the CT's init and, for systemd, waits until it has
booted, for commands that need the CT's services.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log, set_ctid
from pyvz.params import BY_NAME, IPADD, NETIF_ADD, OSTEMPLATE, parse_options

if TYPE_CHECKING:
    from pyvz.ct.container import Container

TIMED_OUT = 124  # as coreutils' timeout(1) exits
HOLD = ("/bin/sleep", "2147483647")  # PID 2 of a CT that is not booted, under LXC's init
STOP_GRACE = 10.0  # seconds a signalled or timed-out command has before it is killed
CLEANUP_LOCK_WAIT = 30.0  # seconds for a `vzctl` command on the CT to finish first
_WORKDIR = 'mkdir -p -- "$1" && cd -- "$1" || exit 8; shift; exec "$@"'


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP before the command runs: unwound as Ctrl-C is, then cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class Request:
    command: list[str]
    remove: bool = False
    source: str | None = None  # --from CT or CT:SNAPSHOT-UUID
    options: dict[str, str] = field(default_factory=dict)  # create's parameters, as text
    network_none: bool = False
    user: str | None = None
    workdir: str = "/"
    env: list[str] = field(default_factory=list)
    timeout: float | None = None
    boot: bool = False
    quiet: bool = False


def check(request: Request) -> None:
    """The syntax, before anything is touched."""
    if not request.command:
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX, "no command given: vzctl run [OPTIONS] -- COMMAND..."
        )
    options = request.options
    if request.source is not None and OSTEMPLATE.name in options:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "--ostemplate and --from cannot both be given")
    if request.source is not None:
        given = sorted(
            f"--{n}"
            for n in options
            if "clone" not in BY_NAME[n].commands and "set" not in BY_NAME[n].commands
        )
        if given:
            raise VzError(
                ExitCode.INVALID_PARAMETER_SYNTAX,
                f"--from makes the CT from another CT: {', '.join(given)} cannot be given with it",
            )
    if request.network_none and (IPADD.name in options or NETIF_ADD.name in options):
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX, "--network none cannot be given with --ipadd or --netif_add"
        )
    if request.timeout is not None and not request.timeout > 0:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"--timeout must be a number of seconds above 0, not {request.timeout:g}",
        )
    if not request.workdir.startswith("/"):
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"--workdir must be an absolute path in the CT, not {request.workdir!r}",
        )
    for item in request.env:
        name, equals, _value = item.partition("=")
        if not equals or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"--env wants NAME=VALUE, not {item!r}")
    parse_options(options)


def _source(host: Host, text: str) -> tuple[int, str | None]:
    """--from's CT (a CTID or name) and snapshot, which must exist."""
    from pyvz.config import resolve_ctid

    ct_text, _colon, snapshot = text.partition(":")
    ctid = resolve_ctid(host.paths, ct_text)
    if not host.paths.conf_file(ctid).exists():
        raise VzError(ExitCode.NO_CT_CONFIG, f"--from {text}: CT {ctid} does not exist")
    return ctid, snapshot or None


def run_ct(host: Host, request: Request) -> int:
    """The whole of vzctl run; returns the command's exit code (124: --timeout ran out)."""
    check(request)
    source = _source(host, request.source) if request.source is not None else None
    from pyvz.ct import runowner

    runowner.sweep(host)  # what killed runs left
    ctid = runowner.claim(host, request.remove)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        set_ctid(ctid)
        _make(host, ctid, request, source)
        from pyvz.ct.container import Container

        ct = Container(host, ctid)
        with host.ct_lock(ctid):
            ct.start(wait=request.boot, hold=() if request.boot else HOLD)
        code = _command(host, ct, request)
    except Interrupted as err:
        log.error(f"CT {ctid}: signal {err.signum} before the command ran; cleaning up")
        code = 128 + err.signum
    except KeyboardInterrupt:
        log.error(f"CT {ctid}: interrupted before the command ran; cleaning up")
        code = 128 + signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _cleanup(host, ctid, request)
    return code


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _make(host: Host, ctid: int, request: Request, source: tuple[int, str | None] | None) -> None:
    options = request.options
    if source is None:
        from pyvz.ct.create import create

        create(host, ctid, options)
        what = f"template {options.get(OSTEMPLATE.name) or host.setting('DEF_OSTEMPLATE')}"
    else:
        from pyvz.ct.clone import clone

        source_ctid, snapshot = source
        cloned = {n: v for n, v in options.items() if "clone" in BY_NAME[n].commands}
        clone(host, source_ctid, ctid, cloned, snapshot)
        changes = {n: v for n, v in options.items() if n not in cloned}
        if request.network_none and host.paths.conf_file(ctid).exists():
            from pyvz.config import ConfigFile

            if ConfigFile.load(host.paths.conf_file(ctid)).get("NETIF"):
                changes["netif_del"] = "all"
        if changes:
            from pyvz.ct.setparams import set_params

            set_params(host, ctid, changes, True, None)
        what = f"snapshot {snapshot} of CT {source_ctid}" if snapshot else f"CT {source_ctid}"
    if not request.quiet:
        log.note(f"vzctl run: CT {ctid} from {what}{', removed at the end' if request.remove else ''}")


def _ids(ct: Container, user: str) -> tuple[int, int, str, str]:
    """uid, gid, home and name of NAME|UID[:GROUP|GID] in the CT's own /etc/passwd and
    /etc/group (read through the CT's root, never the host's)."""
    from pyvz.distro.base import find_account, find_group

    name, _colon, group = user.partition(":")
    view = ct.view()
    account = find_account(view, name, by_uid=True)
    if account is None and not name.isdigit():
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"--user {user}: no user {name!r} in the CT's /etc/passwd"
        )
    uid, gid, home, login = (
        (account.uid, account.gid, account.home, account.name)
        if account
        else (int(name), int(name), "/", name)
    )
    if group:
        found = find_group(view, group)
        if found is None and not group.isdigit():
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"--user {user}: no group {group!r} in the CT's /etc/group"
            )
        gid = found if found is not None else int(group)
    return uid, gid, home, login


def _command(host: Host, ct: Container, request: Request) -> int:
    from pyvz.ct.inside import lxcfs_refresh
    from pyvz.run import supervised

    env: dict[str, str] = {}
    ids = None
    if request.user is not None:
        uid, gid, home, login = _ids(ct, request.user)
        ids = (uid, gid)
        env.update(HOME=home, USER=login, LOGNAME=login)
    for item in request.env:
        name, _equals, value = item.partition("=")
        env[name] = value
    terminal = os.isatty(0)
    command = ["/bin/sh", "-c", _WORKDIR, "sh", request.workdir, *request.command]
    lxcfs_refresh()
    argv = host.runtime.attach_argv(ct.ctid, command, env=env, own_session=not terminal, ids=ids)
    code, timed_out = supervised(
        argv, forward=_forward, timeout=request.timeout, grace=STOP_GRACE, own_group=not terminal
    )
    if timed_out:
        log.error(f"CT {ct.ctid}: the command ran out of time (--timeout {request.timeout:g})")
        return TIMED_OUT
    return code


def _forward(attach: int, signum: int) -> None:
    """A signal to the command lxc-attach runs in the CT (its child, which leads a process
    group of its own there); to lxc-attach itself while it has none yet."""
    try:
        children = Path(f"/proc/{attach}/task/{attach}/children").read_text().split()
    except OSError:
        children = []
    for pid in [int(c) for c in children] or [attach]:
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _cleanup(host: Host, ctid: int, request: Request) -> None:
    """Stop the CT, destroy it with --rm, drop the owner record; Ctrl-C and SIGTERM wait
    until this is done (a second vzctl run or boot would do it otherwise)."""
    from pyvz.ct import runowner

    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with host.ct_lock(ctid, wait=CLEANUP_LOCK_WAIT):
            # A kept CT that was booted is shut down cleanly; the rest need no clean stop.
            fast = request.remove or not request.boot
            runowner.finish(host, ctid, request.remove, "the command has ended", fast=fast)
        if not request.remove and host.paths.conf_file(ctid).exists() and not request.quiet:
            log.note(f"vzctl run: CT {ctid} is kept, stopped (vzctl start {ctid}; vzctl destroy {ctid})")
    except VzError as err:
        log.error(f"CT {ctid} was not cleaned up ({err.message}); the next vzctl run or boot does it")
    finally:
        for signum, handler in ignored.items():
            signal.signal(signum, handler)
        set_ctid(None)
