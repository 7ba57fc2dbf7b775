"""vzctl: perform operations on a container, with OpenVZ's syntax and exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyvz import __version__
from pyvz.cli.common import ArgumentParser, exit_now, run_tool
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import set_ctid
from pyvz.params import SetMode, for_command


def _add_params(parser: argparse.ArgumentParser, command: str) -> None:
    for param in for_command(command):
        parser.add_argument(*param.options, dest=param.name, metavar=param.metavar, help=param.help)


GLOBAL_FLAGS = ("--quiet", "--verbose", "--skiplock", "--debug")
COMMANDS = frozenset(
    "create destroy delete start stop restart status mount umount set exec exec2 enter "
    "runscript console boot".split()
)


def build_parser(only: str | None = None) -> ArgumentParser:
    """The vzctl parser; with `only`, just that command's part (building all costs ~10 ms)."""
    parser = ArgumentParser(prog="vzctl", description="Perform operations on a container.")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--skiplock", action="store_true", help="do not take the CT lock")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version=f"vzctl (pyvz) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    class _Skip:
        """Stands in for the parsers of commands not being run."""

        def add_argument(self, *args: Any, **kwargs: Any) -> None:
            return None

    def command(name: str, help_text: str, aliases: tuple[str, ...] = ()) -> Any:
        if only is not None and only != name and only not in aliases:
            return _Skip()
        p = sub.add_parser(name, help=help_text, aliases=list(aliases))
        if name != "boot":
            p.add_argument("ctid", metavar="CTID", help="CT id or name")
        return p

    _add_params(command("create", "create a CT"), "create")
    command("destroy", "delete a CT and its files", ("delete",))
    p = command("start", "start a CT")
    p.add_argument("--wait", action="store_true", help="wait until the CT has booted")
    p.add_argument("--force", action="store_true", help="start even if DISABLED=yes")
    p = command("stop", "stop a CT")
    p.add_argument("--fast", action="store_true", help="kill at once, no clean shutdown")
    p = command("restart", "stop, then start a CT")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--fast", action="store_true")
    command("status", "print CT status")
    command("mount", "mount a CT's files at VE_ROOT")
    command("umount", "unmount a CT's files")
    p = command("set", "change CT parameters")
    _add_params(p, "set")
    p.add_argument("--save", action="store_true", help="store the parameters in the CT config")
    p.add_argument(
        "--setmode", choices=[m.value for m in SetMode], help="restart the CT if a change needs it"
    )
    p = command("exec", "run a command in a CT (exit 8 if it fails)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = command("exec2", "run a command in a CT, return its exit code")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = command("enter", "open a root shell in a CT")
    p.add_argument("--exec", dest="exec_args", nargs=argparse.REMAINDER, metavar="COMMAND")
    p = command("runscript", "run a host script inside a CT")
    p.add_argument("script", type=Path)
    p = command("console", "attach to a CT console (Esc . detaches)")
    p.add_argument("tty", nargs="?", type=int, default=0, metavar="TTYNUM")
    command("boot", "start all CTs with ONBOOT=yes, in BOOTORDER")
    return parser


def _options(ns: argparse.Namespace, command: str) -> dict[str, str]:
    return {p.name: getattr(ns, p.name) for p in for_command(command) if getattr(ns, p.name) is not None}


def dispatch(argv: list[str]) -> int:
    words = [a for a in argv if a not in GLOBAL_FLAGS]
    only = words[0] if words and words[0] in COMMANDS else None
    ns = build_parser(only).parse_args(argv)
    from pyvz.config import resolve_ctid

    host = Host(skiplock=ns.skiplock)
    command: str = ns.command
    if command == "boot":
        from pyvz.ct.boot import boot

        return boot(host)
    if command == "create":
        from pyvz.params import parse_ctid

        ctid = parse_ctid(ns.ctid)
    else:
        ctid = resolve_ctid(host.paths, ns.ctid)
    set_ctid(ctid)
    return _run(host, command, ctid, ns)


def _run(host: Host, command: str, ctid: int, ns: argparse.Namespace) -> int:
    if command in ("exec", "exec2", "enter", "runscript", "console"):
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
            if command in ("stop", "restart") and not (command == "restart" and not ct.is_running()):
                ct.stop(fast=ns.fast)
            if command in ("start", "restart"):
                ct.start(wait=ns.wait, force=ns.force)
            elif command == "mount":
                ct.mount(explicit=True)
            elif command == "umount":
                ct.umount(explicit=True)
    elif command == "set":
        from pyvz.ct.setparams import set_params

        set_params(host, ctid, _options(ns, "set"), ns.save, SetMode(ns.setmode) if ns.setmode else None)
    else:  # pragma: no cover - argparse only lets known commands through
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unknown command {command}")
    return 0


def _inside(host: Host, command: str, ctid: int, ns: argparse.Namespace) -> int:
    """Commands that run something in a running CT; they need no storage or distro code."""
    from pyvz.ct import inside

    if command in ("exec", "exec2"):
        code = inside.exec_in(host, ctid, ns.args)
        if command == "exec2":
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
