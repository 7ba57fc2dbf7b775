"""vzctl: perform operations on a container, with OpenVZ's syntax and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvz import __version__
from pyvz.cli.common import exit_now, run_tool
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import set_ctid
from pyvz.params import SetMode, for_command

if TYPE_CHECKING:
    import argparse

    from pyvz.cli.parser import ArgumentParser
    from pyvz.ct.container import Container


def _add_params(parser: argparse.ArgumentParser, command: str) -> None:
    for param in for_command(command):
        if param.bare is not None:  # a flag that may also be given a value (--ephemeral [no])
            parser.add_argument(
                *param.options,
                dest=param.name,
                metavar=param.metavar,
                help=param.help,
                nargs="?",
                const=param.bare,
            )
            continue
        action = "append" if param.multi else "store"
        parser.add_argument(
            *param.options, dest=param.name, metavar=param.metavar, help=param.help, action=action
        )


GLOBAL_FLAGS = ("--quiet", "--verbose", "--skiplock", "--debug")


class Command(NamedTuple):
    """One vzctl command: its help, and the on/off flags it takes after the CTID."""

    help: str
    flags: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = ()


_WAIT = ("--wait", "wait until the CT has booted")
_FORCE = ("--force", "start even if DISABLED=yes")
_FAST = ("--fast", "kill at once, no clean shutdown")
_SKIP_SETUP = ("--skip_ve_setup", "do not write hostname, addresses and DNS into the CT's files")
_SKIP_FSCK = ("--skip-fsck", "accepted; pyvz's layouts need no fsck before a start")
_SKIP_REMOUNT = ("--skip-remount", "accepted; a running CT's files are never remounted")
_SKIP_UMOUNT = ("--skip-umount", "leave the CT's files mounted at VE_ROOT after it stops")
_SKIP_ARP = ("--skip_arpdetect", "accepted; pyvz does not probe for address conflicts by ARP")

COMMANDS: dict[str, Command] = {
    "create": Command("create a CT"),
    "destroy": Command("delete a CT and its files", aliases=("delete",)),
    "start": Command("start a CT", (_WAIT, _FORCE, _SKIP_SETUP, _SKIP_FSCK, _SKIP_REMOUNT)),
    "stop": Command("stop a CT", (_FAST, _SKIP_UMOUNT)),
    "restart": Command(
        "stop, then start a CT", (_WAIT, _FORCE, _FAST, _SKIP_SETUP, _SKIP_FSCK, _SKIP_REMOUNT, _SKIP_UMOUNT)
    ),
    "status": Command("print CT status"),
    "mount": Command("mount a CT's files at VE_ROOT"),
    "umount": Command("unmount a CT's files"),
    "set": Command(
        "change CT parameters",
        (
            ("--save", "store the parameters in the CT config"),
            ("--reset_ub", "apply the config's resource limits to the running CT again (nothing else)"),
            ("--force", "allow a --bindmount_add of a host path that is refused otherwise"),
            _SKIP_ARP,
            ("--offline-resize", "with --diskspace: accepted (only a ploop image is resized offline)"),
            ("--offline", "the same as --offline-resize"),
        ),
    ),
    "exec": Command("run a command in a CT (exit 8 if it fails)"),
    "exec2": Command("run a command in a CT, return its exit code"),
    "exec3": Command("run a program in a CT without a shell, return its exit code"),
    "enter": Command("open a root shell in a CT"),
    "runscript": Command("run a host script inside a CT"),
    "console": Command("attach to a CT console (Esc . detaches)"),
    "boot": Command("start all CTs with ONBOOT=yes, in BOOTORDER"),
    "run": Command(
        "run a command in a fresh CT, return its exit code (docs/run.md)",
        (
            ("--rm", "destroy the CT at the end, whatever happens"),
            ("--boot", "start the CT's own init (systemd: until booted) before the command"),
        ),
    ),
    "snapshot": Command(
        "snapshot a CT's files and config (a running CT is frozen for the instant it takes)",
        (
            ("--skip-suspend", "do not freeze a running CT (files being written may be torn)"),
            ("--skip-config", "do not save the CT config with the snapshot"),
        ),
    ),
    "snapshot-list": Command("list a CT's snapshots"),
    "snapshot-switch": Command(
        "roll a CT back to a snapshot (a running CT is restarted from it)",
        (
            _SKIP_ARP,
            ("--skip-resume", "leave the CT stopped"),
            ("--must-resume", "fail rather than restart a running CT (no memory state is saved)"),
            ("--skip-config", "keep the CT's present config"),
        ),
    ),
    "snapshot-delete": Command("delete a snapshot; its space is free when this returns"),
    "snapshot-mount": Command("mount a snapshot read-only"),
    "snapshot-umount": Command("unmount a snapshot"),
    "clone": Command("make a new CT from a CT or from one of its snapshots"),
    "convert": Command("move a stopped CT's files into another layout (ploop images are read)"),
    "rebuild": Command(
        "a fresh system from a template or recipe; config, data and --keep paths stay (ct/rebuild.py)"
    ),
    "compact": Command("give a ploop image's unused space back (other layouts need no compacting)"),
    "quotaon": Command("turn the disk quota on: DISKSPACE's hard limit on the CT's btrfs qgroup"),
    "quotaoff": Command("turn the disk quota off: no limit on the qgroup (usage is still counted)"),
    "quotainit": Command("count the CT's disk usage afresh and save its quota limits (quota stays off)"),
    "chkpnt": Command(
        "save a running CT's memory and processes to a dump and stop it",
        (
            ("--suspend", "only freeze the CT"),
            ("--dump", "dump the frozen CT; it stays frozen"),
            ("--kill", "stop the frozen CT whose dump was taken"),
            ("--resume", "thaw the frozen CT"),
            _SKIP_ARP,
        ),
        aliases=("suspend",),
    ),
    "restore": Command(
        "bring a CT back from its dump: the same processes, files and connections",
        (
            ("--undump", "restore the processes frozen"),
            ("--kill", "stop the undumped CT"),
            ("--resume", "thaw the undumped CT"),
            _SKIP_ARP,
            _SKIP_REMOUNT,
            _SKIP_FSCK,
        ),
        aliases=("resume",),
    ),
    "recover": Command(
        "make a CT of the newest replica this standby holds of it, and start it",
        (
            ("--force", "the CT's own host is down and stays down: I vouch for it (outside a cluster)"),
            ("--skip-start", "leave the recovered CT stopped"),
        ),
    ),
}
NO_CTID = frozenset({"boot", "run"})
ALIASES = {alias: name for name, cmd in COMMANDS.items() for alias in cmd.aliases}
# Commands read without argparse (see _fast_parse): only on/off flags, or a command line.
PASS_THROUGH = frozenset({"exec", "exec2", "exec3"})
FLAGS_ONLY = frozenset(
    {"destroy", "start", "stop", "restart", "status", "mount", "umount", "compact", "recover"}
)
# vzctl reads these commands' options with getopt_long (its parse_opt): an unknown option
# or one without its value is exit 21 there, not 20.
GETOPT_COMMANDS = frozenset(
    {"create", "set", "snapshot", "snapshot-switch", "snapshot-delete", "snapshot-mount", "snapshot-umount"}
)
WITH_DUMPFILE = frozenset({"chkpnt", "restore"})  # on/off flags and --dumpfile PATH


def build_parser(only: str | None = None) -> ArgumentParser:
    """The vzctl parser; with `only`, just that command's part (building all costs ~10 ms)."""
    import argparse

    from pyvz.cli.parser import ArgumentParser

    only = ALIASES.get(only, only) if only else None
    parser = ArgumentParser(prog="vzctl", description="Perform operations on a container.")
    parser.commands = {}
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--skiplock", action="store_true", help="do not take the CT lock")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version=f"vzctl (pyvz) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name, command in COMMANDS.items():
        if only is not None and only != name:
            continue
        # getopt_long, as vzctl reads options, takes any unambiguous prefix (--numpr).
        p = sub.add_parser(
            name, help=command.help, aliases=list(command.aliases), allow_abbrev=name not in PASS_THROUGH
        )
        if name in GETOPT_COMMANDS:
            p.option_code = ExitCode.INVALID_PARAMETER_VALUE
        p.getopt_words = True
        parser.commands[name] = p
        if name not in NO_CTID:
            p.add_argument("ctid", metavar="CTID", help="CT id or name")
        for flag, help_text in command.flags:
            p.add_argument(flag, action="store_true", help=help_text)
        _add_snapshot_args(p, name)
        if name in ("create", "set"):
            _add_params(p, name)
        elif name == "run":
            _add_run_args(p)
        if name == "set":
            p.add_argument(
                "--setmode", choices=[m.value for m in SetMode], help="restart if a change needs it"
            )
        elif name in PASS_THROUGH:
            p.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND")
        elif name == "enter":
            p.add_argument("--exec", dest="exec_args", nargs=argparse.REMAINDER, metavar="COMMAND")
        elif name == "runscript":
            p.add_argument("script", type=Path)
        elif name == "console":
            p.add_argument("tty", nargs="?", type=int, default=0, metavar="TTYNUM")
        elif name == "convert":
            p.add_argument(
                "--layout",
                "--ve_layout",
                "--velayout",
                default="btrfs",
                metavar="btrfs|simfs|dir",
                help="the new layout",
            )
    return parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """vzctl run: create's parameters, where the CT comes from, and how the command runs."""
    import argparse

    _add_params(p, "create")
    p.add_argument("--from", dest="source", metavar="CT[:SNAPSHOT]", help="a clone of this CT or snapshot")
    p.add_argument("--network", choices=["none"], help="none: no interface but lo (--from CT's too)")
    p.add_argument("--user", metavar="USER[:GROUP]", help="run the command as this user of the CT")
    p.add_argument("--workdir", default="/", metavar="DIR", help="the command's directory (made if missing)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable")
    p.add_argument("--timeout", metavar="SECONDS", help="stop the command after this long (exit 124)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- COMMAND")


def _add_snapshot_args(p: argparse.ArgumentParser, name: str) -> None:
    """What the snapshot commands and clone take besides the CTID and their on/off flags."""
    if name == "snapshot":
        p.add_argument("--id", "--uuid", metavar="UUID", help="the new snapshot's UUID (default: a new one)")
        p.add_argument("--name", dest="snapshot_name", default="", help="a name to show in snapshot-list")
        p.add_argument("--description", default="", help="a description (snapshot-list -o desc)")
    elif name == "snapshot-list":
        p.add_argument("-H", "--no-header", dest="H", action="store_true", help="no header")
        p.add_argument("-o", "--output", metavar="FIELDS", help="uuid,parent_uuid,current,date,name,desc")
        p.add_argument("-u", "--id", "--uuid", dest="id", metavar="UUID", help="only this snapshot")
        p.add_argument("-L", "--list", action="store_true", help="list the field names -o takes")
    elif name in ("snapshot-switch", "snapshot-delete", "snapshot-mount", "snapshot-umount"):
        p.add_argument("--id", "--uuid", required=True, metavar="UUID", help="the snapshot")
        if name == "snapshot-mount":
            p.add_argument("--target", required=True, type=Path, metavar="DIR", help="where to mount it")
    elif name in ("chkpnt", "restore"):
        p.add_argument("--dumpfile", type=Path, metavar="PATH", help="the dump (default DUMPDIR/Dump.CTID)")
        p.add_argument(
            "--flags", metavar="N", help="CPU flags of the destination: only 0 (CRIU checks the CPU itself)"
        )
        p.add_argument(
            "--context",
            metavar="HEX",
            help="the checkpoint context: only the CT's own (0 or its CTID in hex)",
        )
    elif name == "rebuild":
        p.add_argument("--ostemplate", metavar="NAME", help="the template (default: the CT's own)")
        p.add_argument(
            "--recipe", metavar="RECIPE", help="build this recipe now (default: the one the CT was made from)"
        )
        p.add_argument(
            "--keep",
            action="append",
            default=[],
            metavar="PATH",
            help="a path inside the CT to carry over (repeatable; wildcards in its last part)",
        )
    elif name == "clone":
        p.add_argument("target", metavar="NEWCTID", help="the clone's CTID")
        p.add_argument("--snapshot", metavar="UUID", help="clone this snapshot of the CT")
        _add_params(p, "clone")


def _options(ns: argparse.Namespace, command: str) -> dict[str, str]:
    """Option values as text, keyed by parameter name; repeated options joined by spaces."""
    values = {}
    for param in for_command(command):
        value = getattr(ns, param.name)
        if value is not None:
            values[param.name] = " ".join(value) if param.multi else value
    return values


def _dest(flag: str) -> str:
    """argparse's attribute for a flag: --skip-umount is ns.skip_umount."""
    return flag[2:].replace("-", "_")


def _fast_parse(argv: list[str]) -> argparse.Namespace | None:
    """Read `[flags] COMMAND CTID [--flag...]` (or `exec CTID words...`) without argparse,
    which costs ~8 ms a run. Anything it does not fully understand (help, typos, a missing
    CTID) returns None and goes to argparse, so the two always agree."""
    import types

    values: dict[str, object] = {flag[2:]: False for flag in GLOBAL_FLAGS}
    index = 0
    while index < len(argv) and argv[index] in GLOBAL_FLAGS:
        values[argv[index][2:]] = True
        index += 1
    if index >= len(argv):
        return None
    name = ALIASES.get(argv[index], argv[index])
    rest = argv[index + 1 :]
    if name in PASS_THROUGH:
        if len(rest) < 2 or rest[0].startswith("-"):
            return None
        return types.SimpleNamespace(command=name, ctid=rest[0], args=rest[1:], **values)  # type: ignore[return-value]
    if name not in FLAGS_ONLY and name not in WITH_DUMPFILE:
        return None
    known = {flag for flag, _help in COMMANDS[name].flags}
    values.update({_dest(flag): False for flag in known})
    if name in WITH_DUMPFILE:
        values.update(dumpfile=None, flags=None, context=None)
        if "--dumpfile" in rest:
            at = rest.index("--dumpfile")
            if at + 1 >= len(rest) or rest[at + 1].startswith("-"):
                return None
            values["dumpfile"] = Path(rest[at + 1])
            rest = rest[:at] + rest[at + 2 :]
    words = [word for word in rest if word not in known]
    if len(words) != 1 or words[0].startswith("-"):
        return None
    values.update({_dest(flag): True for flag in rest if flag in known})
    return types.SimpleNamespace(command=name, ctid=words[0], **values)  # type: ignore[return-value]


def parse_argv(argv: list[str]) -> argparse.Namespace:
    """vzctl's command line, read the quick way where it can be (see _fast_parse)."""
    ns = _fast_parse(argv)
    if ns is not None:
        return ns
    words = [a for a in argv if a not in GLOBAL_FLAGS]
    first = ALIASES.get(words[0], words[0]) if words else None
    if first in COMMANDS and first not in NO_CTID and len(words) == 1:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "CT ID missing")
    parser = build_parser(first if first in COMMANDS else None)
    ns, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's parser, with the command's code
        parser.commands[ALIASES.get(ns.command, ns.command)].error(
            f"unrecognized arguments: {' '.join(extra)}"
        )
    return ns


# The commands vzctl runs without a CTID.conf (its main()); destroy is pyvz's too, so that
# it can clean up a half-made CT (ct/create.py says vzctl's words when nothing is there).
WITHOUT_CONFIG = frozenset({"create", "status", "set", "destroy", "delete", "recover"})


def dispatch(argv: list[str]) -> int:
    ns = parse_argv(argv)
    host = Host(skiplock=ns.skiplock)
    command: str = ns.command
    if command == "boot":
        from pyvz.ct.boot import boot

        return boot(host)
    if command == "run":
        return _run_command(host, ns)
    ctid = _ctid(host, ns.ctid, command)
    set_ctid(ctid)
    if command not in WITHOUT_CONFIG and not host.paths.conf_file(ctid).exists():
        raise VzError(ExitCode.NO_CT_CONFIG, "Container config file does not exist")
    return _run(host, command, ctid, ns)


def _ctid(host: Host, text: str, command: str) -> int:
    """The CTID word as vzctl reads it: a number, or a name a CT has (create: a number)."""
    from pyvz.config import resolve_ctid
    from pyvz.params import MIN_CTID, parse_ctid

    if command == "recover" and not (text.isascii() and text.isdigit()):
        from pyvz.migrate.replicas import ReplicaStore

        replica = ReplicaStore(host).by_name(text)  # the CT's name, as its replica knows it
        if replica is not None:
            return replica.ctid
    try:
        return parse_ctid(text) if command in ("create", "recover") else resolve_ctid(host.paths, text)
    except VzError:
        if text.isascii() and text.isdigit() and int(text) < MIN_CTID:
            raise  # pyvz's own rule (ids up to 100 are the system's) says why
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Bad CT ID {text}") from None


def _run(host: Host, command: str, ctid: int, ns: argparse.Namespace) -> int:
    if command in ("exec", "exec2", "exec3", "enter", "runscript", "console"):
        return _inside(host, command, ctid, ns)
    from pyvz.ct.container import Container

    ct = Container(host, ctid)
    if command == "create":
        from pyvz.ct.create import create

        create(host, ctid, _options(ns, "create"))
    elif command in ("destroy", "delete"):
        from pyvz.ct.create import destroy

        destroy(host, ctid)
    elif command == "status":
        print(ct.status().line(ctid))
    elif command in ("start", "stop", "restart", "mount", "umount"):
        with host.ct_lock(ctid):
            if command == "stop" and ct.has_config() and not ct.is_running():
                from pyvz.ct.ephemeral import destroy_if_down
                from pyvz.log import log

                log.note("Unable to stop: container is not running")  # and 0, as vzctl
                destroy_if_down(host, ctid)  # an ephemeral CT a power cut stopped
                return 0
            if command in ("stop", "restart") and not (command == "restart" and not ct.is_running()):
                ct.stop(fast=ns.fast, keep_mounted=ns.skip_umount and command == "stop")
            if command == "stop":
                from pyvz.ct.ephemeral import destroy_if_down

                destroy_if_down(host, ctid)
            if command in ("start", "restart"):
                ct.start(wait=ns.wait, force=ns.force, skip_setup=ns.skip_ve_setup)
            elif command == "mount":
                ct.mount(explicit=True)
            elif command == "umount":
                ct.umount(explicit=True)
    elif command.startswith("snapshot"):
        _snapshot(ct, command, ns)
    elif command in ("chkpnt", "suspend", "restore", "resume"):
        _checkpoint(ct, ALIASES.get(command, command), ns)
    elif command == "recover":
        _recover(host, ctid, ns)
    elif command == "clone":
        from pyvz.ct.clone import clone
        from pyvz.params import parse_ctid

        clone(host, ctid, parse_ctid(ns.target), _options(ns, "clone"), ns.snapshot)
    elif command == "rebuild":
        from pyvz.ct.rebuild import rebuild

        given = {"ostemplate": ns.ostemplate, "recipe": ns.recipe}
        rebuild(host, ctid, {k: v for k, v in given.items() if v is not None}, ns.keep)
    elif command == "convert":
        from pyvz.ct.convert import convert, parse_target

        convert(host, ctid, parse_target(ns.layout))
    elif command == "compact":
        from pyvz.ct.compact import compact

        compact(ct)
    elif command.startswith("quota"):
        from pyvz.ct.quotacmd import quota_command

        return quota_command(host, ctid, command)
    elif command == "set":
        from pyvz.ct.setparams import set_params

        if ns.offline_resize or ns.offline:
            from pyvz.ct.setparams import offline_resize

            offline_resize(ct, "diskspace" in _options(ns, "set"))
        if ns.reset_ub:
            from pyvz.ct.setparams import reset_ub

            reset_ub(host, ctid, bool(_options(ns, "set")) or ns.save)
        else:
            setmode = SetMode(ns.setmode) if ns.setmode else None
            set_params(host, ctid, _options(ns, "set"), ns.save, setmode, force=ns.force)
    else:  # pragma: no cover - argparse only lets known commands through
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unknown command {command}")
    return 0


def _run_command(host: Host, ns: argparse.Namespace) -> int:
    """vzctl run; its own messages go to stderr, stdout is the command's alone."""
    from pyvz.ct.runner import Request, run_ct
    from pyvz.log import log

    args = list(ns.args)
    if args[:1] == ["--"]:
        args = args[1:]
    timeout = None
    if ns.timeout is not None:
        try:
            timeout = float(ns.timeout)
        except ValueError:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"--timeout wants seconds, not {ns.timeout!r}"
            ) from None
    log.info_to_stderr = True
    log.quiet = log.quiet or not log.verbose  # create's and start's steps only with --verbose
    request = Request(
        command=args,
        remove=ns.rm,
        source=ns.source,
        options=_options(ns, "create"),
        network_none=ns.network == "none",
        user=ns.user,
        workdir=ns.workdir,
        env=ns.env,
        timeout=timeout,
        boot=ns.boot,
        quiet=ns.quiet,
    )
    return run_ct(host, request)


def _recover(host: Host, ctid: int, ns: argparse.Namespace) -> None:
    """In a cluster, the cluster tells whether the CT's host is gone, and its fencing is
    waited out (pyvz.cluster.recover); without one, nothing can, so the admin says so
    (--force)."""
    from pyvz.cluster import namespace
    from pyvz.migrate.promote import promote
    from pyvz.migrate.replicas import ReplicaStore

    if host.paths.conf_file(ctid).exists():  # first: a recover run twice says what happened
        raise VzError(ExitCode.PRIVATE_EXISTS, f"CT {ctid} already exists on this host")
    replica = ReplicaStore(host).get(ctid)
    if replica is None:
        raise VzError(ExitCode.NO_PRIVATE, f"this host holds no replica of CT {ctid}")
    if namespace.clustered(host.paths):
        from pyvz.cluster.recover import take_over

        came_from = take_over(host.paths, ctid)
        promote(host, ctid, start=not ns.skip_start, reserve=not came_from, came_from=came_from)
        return
    if not ns.force:
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX,
            f"CT {ctid} would start here from its replica from {replica.source}: if that host still "
            "runs it, it would answer twice; when it is down and stays down, say so with --force",
        )
    promote(host, ctid, start=not ns.skip_start)


def _snapshot(ct: Container, command: str, ns: argparse.Namespace) -> None:
    from pyvz.ct import snapshots

    # Bad values are 21, as vzctl says when it reads its options; then the command's own code.
    if ns.id:
        snapshots.parse_uuid(ns.id)
    if command == "snapshot-list" and ns.list:
        print(snapshots.field_names())
        return
    fields = snapshots.parse_fields(ns.output) if command == "snapshot-list" else ()
    with snapshots.failing_as(command):
        _snapshot_command(ct, command, ns, fields)


def _snapshot_command(ct: Container, command: str, ns: argparse.Namespace, fields: tuple[str, ...]) -> None:
    from pyvz.ct import snapshots

    if command == "snapshot":
        snapshots.take(ct, ns.id, ns.snapshot_name, ns.description, ns.skip_suspend, ns.skip_config)
    elif command == "snapshot-list":
        for line in snapshots.listing(ct, fields, header=not ns.H, only=ns.id):
            print(line)
    elif command == "snapshot-switch":
        snapshots.switch(ct, ns.id, ns.skip_resume, ns.must_resume, ns.skip_config)
    elif command == "snapshot-delete":
        snapshots.delete(ct, ns.id)
    elif command == "snapshot-mount":
        snapshots.mount(ct, ns.id, ns.target)
    else:
        snapshots.umount(ct, ns.id)


def _checkpoint(ct: Container, command: str, ns: argparse.Namespace) -> None:
    from pyvz.ct import checkpoint

    stages = {stage.value for stage in checkpoint.Stage}
    flags = [
        flag[2:] for flag, _help in COMMANDS[command].flags if flag[2:] in stages and getattr(ns, flag[2:])
    ]
    if len(flags) > 1:
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX,
            f"only one of --{' --'.join(flags)} may be given (they are stages of one {command})",
        )
    stage = checkpoint.Stage(flags[0]) if flags else None
    checkpoint.check_cpt_options(ct.ctid, command, ns.flags, ns.context)
    if command == "chkpnt":
        checkpoint.chkpnt(ct, ns.dumpfile, stage)
    else:
        checkpoint.restore(ct, ns.dumpfile, stage)


def _inside(host: Host, command: str, ctid: int, ns: argparse.Namespace) -> int:
    """Commands that run something in a running CT; they need no storage or distro code."""
    from pyvz.ct import inside

    if command in ("exec", "exec2", "exec3"):
        try:
            code = inside.exec_in(host, ctid, ns.args, shell=command != "exec3")
        except VzError as err:
            if command != "exec":
                raise
            # vzctl's exec says why and exits 8 for any failure, its own or the command's.
            raise VzError(ExitCode.COMMAND_EXECUTION_ERROR, err.message) from None
        if command != "exec":
            return code
        return int(ExitCode.COMMAND_EXECUTION_ERROR) if code else 0
    if command == "enter":
        return inside.enter(host, ctid, ns.exec_args)
    if command == "runscript":
        return inside.runscript(host, ctid, ns.script)
    return inside.console(host, ctid, ns.tty)


def main() -> None:
    exit_now(run_tool("vzctl", dispatch))


if __name__ == "__main__":
    main()
