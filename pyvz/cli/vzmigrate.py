"""vzmigrate: move a CT to another host, with OpenVZ's syntax and exit codes.

vzmigrate [-r yes|no] [--keep-dst] [--online|--live] [-f|--nodeps[=cpu_check,...]]
          [--ssh="OPTIONS"] [-v] [-t|--times] DESTINATION CTID
vzmigrate --pubkey                      this host's migration key (made on first use)
vzmigrate --authorize "PUBKEY" [--authorized-keys FILE]
                                        let that key send CTs here, and nothing else
vzmigrate --resolve DESTINATION CTID    settle an interrupted hand-over
vzmigrate --from HOST [-r yes|no] [--layout btrfs|simfs] [--ssh=OPTIONS] [--rsync=OPTIONS] CTID
                                        pull a CT from an OpenVZ host (--resolve: settle one)
vzmigrate --receive --peer FINGERPRINT  the receiving end (sshd runs it for the key)
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.cli.common import exit_now, run_tool
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.log import log

if TYPE_CHECKING:
    from argparse import Namespace

    from pyvz.cli.parser import ArgumentParser
    from pyvz.host import Host

# vzctl's codes, as the library raises them, onto vzmigrate's (its man page).
_EXIT: dict[ExitCode, MigrateExit] = {
    ExitCode.INVALID_PARAMETER_SYNTAX: MigrateExit.USAGE,
    ExitCode.INVALID_PARAMETER_VALUE: MigrateExit.USAGE,
    ExitCode.NO_CT_CONFIG: MigrateExit.NOTEXIST,
    ExitCode.NO_PRIVATE: MigrateExit.NOTEXIST,
    ExitCode.LOCKED: MigrateExit.LOCKED,
    ExitCode.IP_INUSE: MigrateExit.IP_INUSE,
    ExitCode.PRIVATE_EXISTS: MigrateExit.EXISTS,
    ExitCode.SET_NAME_ERROR: MigrateExit.APPLY_CONFIG,
    ExitCode.CHKPNT_ERROR: MigrateExit.VE_STOP,
    ExitCode.STOP_ERROR: MigrateExit.VE_STOP,
    ExitCode.RESTORE_ERROR: MigrateExit.VE_START,
    ExitCode.ENVCREATE_ERROR: MigrateExit.VE_START,
    ExitCode.NO_DISK_SPACE: MigrateExit.COPY,
    ExitCode.CANT_CREATE_PRIVATE: MigrateExit.COPY,
    ExitCode.INVALID_CONFIG: MigrateExit.APPLY_CONFIG,
    ExitCode.DISKQUOTA_SET: MigrateExit.QUOTA,
}


def _parser() -> ArgumentParser:
    from pyvz.cli.parser import ArgumentParser

    parser = ArgumentParser(prog="vzmigrate", description="Move a CT to another host.")
    parser.add_argument("-r", "--remove-area", choices=("yes", "no"), default="yes")
    parser.add_argument("--keep-dst", action="store_true", help="accepted; nothing half-made is ever kept")
    parser.add_argument("--online", "--live", dest="online", action="store_true", help="live migration")
    parser.add_argument("-f", "--nodeps", nargs="?", const="all", default="", metavar="CHECKS")
    parser.add_argument("--ssh", default="", metavar="OPTIONS", help="more ssh options")
    parser.add_argument("-v", action="count", default=0, dest="verbose")
    parser.add_argument("-t", "--times", action="store_true", help="print how long each phase took")
    parser.add_argument("--pubkey", action="store_true")
    parser.add_argument("--authorize", metavar="PUBKEY")
    parser.add_argument("--authorized-keys", type=Path, metavar="FILE")
    parser.add_argument("--resolve", action="store_true")
    parser.add_argument("--receive", action="store_true")
    parser.add_argument("--peer", metavar="FINGERPRINT")
    parser.add_argument("--from", dest="source", metavar="HOST", help="pull CTID from this OpenVZ host")
    parser.add_argument("--layout", choices=("btrfs", "simfs"), help="the pulled CT's layout here")
    parser.add_argument("--rsync", default="", metavar="OPTIONS", help="more rsync options (--from)")
    parser.add_argument("destination", nargs="?")
    parser.add_argument("ctid", nargs="?", metavar="CTID")
    return parser


def dispatch(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    from pyvz.host import Host

    host = Host()
    if ns.receive:
        from pyvz.migrate.receiver import serve

        if not ns.peer:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "--receive needs --peer")
        return serve(ns.peer)
    from pyvz.migrate import keys

    if ns.pubkey:
        print(keys.public_line(host.paths))
        return 0
    if ns.authorize:
        target = ns.authorized_keys or keys.default_authorized_keys(
            host.paths, host.setting("MIGRATE_AUTHORIZED_KEYS")
        )
        fingerprint = keys.authorize(host.paths, ns.authorize, target)
        log.info(f"key {fingerprint} may now migrate CTs to this host, and do nothing else ({target})")
        return 0
    if ns.source:
        return _pull(host, ns)
    if not ns.destination or not ns.ctid:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "usage: vzmigrate [options] DESTINATION CTID")
    from pyvz.config import resolve_ctid
    from pyvz.migrate import sender

    destination = sender.check_destination(ns.destination)
    try:
        ctid = resolve_ctid(host.paths, ns.ctid)
    except VzError as err:
        raise VzError(MigrateExit.NOTEXIST, err.message) from None
    ssh_options = tuple(shlex.split(ns.ssh))
    if ns.resolve:
        sender.resolve(host, destination, ctid, ssh_options)
        return 0
    if ns.keep_dst:
        log.info("--keep-dst: pyvz never keeps a half-made CT on the destination; nothing to keep")
    nodeps = frozenset(c.strip() for c in ns.nodeps.split(",") if c.strip())
    opts = sender.Options(
        destination=destination,
        ctid=ctid,
        remove_area=ns.remove_area == "yes",
        online=ns.online,
        nodeps=nodeps,
        ssh_options=ssh_options,
        times=ns.times or ns.verbose > 0,
    )
    sender.Sender(host, opts).run()
    return 0


def _pull(host: Host, ns: Namespace) -> int:
    from pyvz.migrate import openvz, pull
    from pyvz.params import Layout, parse_ctid

    if not ns.destination or ns.ctid:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "usage: vzmigrate --from HOST [options] CTID")
    if ns.online:
        raise VzError(
            MigrateExit.UNSUP_CPT_VER,
            "no live migration from OpenVZ: its kernel's checkpoint images cannot be restored on "
            "mainline Linux; without --online the CT is stopped there and started here",
        )
    opts = pull.Options(
        source=openvz.check_host(ns.source),
        ctid=parse_ctid(ns.destination),
        remove_area=ns.remove_area == "yes",
        layout=Layout(ns.layout) if ns.layout else None,
        ssh_options=tuple(shlex.split(ns.ssh)),
        rsync_options=tuple(shlex.split(ns.rsync)),
    )
    if ns.resolve:
        pull.resolve(host, opts)
    else:
        pull.pull(host, opts)
    return 0


def _mapped(argv: list[str]) -> int:
    try:
        return dispatch(argv)
    except VzError as err:
        if isinstance(err.code, ExitCode):
            raise VzError(_EXIT.get(err.code, MigrateExit.COPY), err.message) from None
        raise


def main() -> None:
    exit_now(run_tool("vzmigrate", _mapped, sys.argv[1:]))


if __name__ == "__main__":
    main()
