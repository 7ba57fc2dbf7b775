"""vzcluster: this host's membership in a pyvz cluster (etcd v3 underneath; docs/cluster.md).

vzcluster init [--name N] [--listen ADDR] [--cluster NAME] [--ttl S]
               [--client-port P] [--peer-port P]        a new cluster, this host its first member
vzcluster init --endpoints URL[,URL...] --ca F --cert F --key F [--name N] [--listen ADDR]
                                                         use an existing etcd instead
vzcluster join HOST [--name N] [--listen ADDR] [--ssh OPTIONS]
                                                         join the cluster HOST is a member of
vzcluster leave [--force]                                leave it (--force: this side only)
vzcluster status                                         this host's member, lease, leader, quorum
vzcluster nodes [-H] [-j]                                every host: lease, CTs, capacity
vzcluster agent                                          the per-host agent (its unit runs it)
vzcluster etcd                                           this host's supervised etcd member
vzcluster admit                                          the admitting end of join (over SSH)
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.cli.common import exit_now, run_tool
from pyvz.errors import ClusterExit, ExitCode, VzError

if TYPE_CHECKING:
    from argparse import Namespace

    from pyvz.cli.parser import ArgumentParser
    from pyvz.paths import Paths


def _parser() -> ArgumentParser:
    from pyvz.cli.parser import ArgumentParser

    parser = ArgumentParser(prog="vzcluster", description="This host's membership in a pyvz cluster.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    commands.required = True
    init = commands.add_parser("init", help="make a new cluster (or use an existing etcd)")
    join = commands.add_parser("join", help="join the cluster HOST is a member of")
    for sub in (init, join):
        sub.add_argument("--name", help="this host's name in the cluster (default: its short hostname)")
        sub.add_argument("--listen", metavar="ADDR", help="the address its etcd member listens on")
        sub.add_argument("--client-port", type=int, default=2379, metavar="PORT")
        sub.add_argument("--peer-port", type=int, default=2380, metavar="PORT")
    init.add_argument("--cluster", default="pyvz", help="the cluster's name")
    init.add_argument("--ttl", type=int, default=10, help="seconds a host's lease lives (default 10)")
    init.add_argument("--endpoints", metavar="URLS", help="an existing etcd's client URLs")
    init.add_argument("--ca", type=Path, help="its CA certificate (with --endpoints)")
    init.add_argument("--cert", type=Path, help="this host's client certificate (with --endpoints)")
    init.add_argument("--key", type=Path, help="its key (with --endpoints)")
    join.add_argument("host", metavar="HOST", help="a member of the cluster (reached over SSH as root)")
    join.add_argument("--ssh", default="", metavar="OPTIONS", help="more ssh options")
    leave = commands.add_parser("leave", help="leave the cluster")
    leave.add_argument("--force", action="store_true", help="leave even when the cluster cannot be told")
    commands.add_parser("status", help="this host's member, lease, leader and quorum")
    nodes = commands.add_parser("nodes", help="every host of the cluster")
    nodes.add_argument("-H", "--no-header", action="store_true")
    nodes.add_argument("-j", "--json", action="store_true")
    evacuate = commands.add_parser("evacuate", help="move every CT of this host to the others")
    evacuate.add_argument("host", metavar="HOST", nargs="?", help="this host's name (a check)")
    evacuate.add_argument("--to", metavar="HOSTS", help="only to these hosts (comma-separated)")
    restore = commands.add_parser("restore", help="move the CTs evacuated from HOST back to it")
    restore.add_argument("host", metavar="HOST", help="the host that was evacuated")
    for sub in (evacuate, restore):
        sub.add_argument("--ssh", default="", metavar="OPTIONS", help="more ssh options for vzmigrate")
    commands.add_parser("agent", help="run the per-host agent")
    commands.add_parser("etcd", help="run this host's etcd member, supervised")
    commands.add_parser("fence", help="run this host's fencing watchdog (the agent starts it)")
    commands.add_parser("admit", help="the admitting end of a join (reads the request on stdin)")
    for sub in commands.choices.values():
        sub.add_argument("--debug", action="store_true", help="a traceback on errors")
    return parser


def _port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{what} {value} is not a port number")
    return value


def dispatch(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    from pyvz.paths import Paths

    paths = Paths.from_env()
    handler = {
        "init": _init,
        "join": _join,
        "leave": _leave,
        "status": _status,
        "nodes": _nodes,
        "agent": _agent,
        "evacuate": _evacuate,
        "restore": _restore,
        "etcd": _etcd,
        "fence": _fence,
        "admit": _admit,
    }[ns.command]
    return handler(paths, ns)


def _name_and_address(ns: Namespace) -> tuple[str, str]:
    from pyvz.cluster.membership import default_address
    from pyvz.cluster.settings import check_address, check_name, default_name

    name = check_name(ns.name) if ns.name else default_name()
    address = check_address(ns.listen) if ns.listen else default_address()
    _port(ns.client_port, "--client-port")
    _port(ns.peer_port, "--peer-port")
    if ns.client_port == ns.peer_port:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "--client-port and --peer-port must differ")
    return name, address


def _init(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.etcd import TlsFiles
    from pyvz.cluster.membership import init

    if not 2 <= ns.ttl <= 3600:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"--ttl {ns.ttl}: between 2 and 3600 seconds")
    given = [ns.ca, ns.cert, ns.key]
    if ns.endpoints is None and any(given):
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "--ca, --cert and --key go with --endpoints")
    if any(given) and not all(given):
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "give all of --ca, --cert and --key")
    name, address = _name_and_address(ns)
    tls = TlsFiles(ns.ca.resolve(), ns.cert.resolve(), ns.key.resolve()) if all(given) else None
    settings = init(
        paths,
        name,
        address,
        cluster=ns.cluster,
        ttl=ns.ttl,
        client_port=ns.client_port,
        peer_port=ns.peer_port,
        endpoints=ns.endpoints,
        tls=tls,
    )
    del settings  # init says what it made
    return 0


def _join(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.membership import check_host, join

    check_host(ns.host)
    name, address = _name_and_address(ns)
    try:
        options = shlex.split(ns.ssh)
    except ValueError as err:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"--ssh: {err}") from None
    settings = join(
        paths,
        ns.host,
        name,
        address,
        ssh_options=options,
        client_port=ns.client_port,
        peer_port=ns.peer_port,
    )
    del settings
    return 0


def _leave(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.membership import leave

    name = leave(paths, force=ns.force)
    print(f"{name} has left the cluster")
    return 0


def _status(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.settings import load
    from pyvz.cluster.view import status

    report = status(load(paths))
    for what, how in report.lines:
        print(f"{what:<8} {how}")
    for _code, problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return int(report.problems[0][0]) if report.problems else 0


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value = value / 1024  # type: ignore[assignment]
    return str(value)


def _nodes(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.settings import load
    from pyvz.cluster.view import nodes

    code = 0
    with load(paths).client() as client:
        try:
            found = nodes(client)
        except VzError as err:
            if err.code != ClusterExit.NO_QUORUM:
                raise
            # What this host's member last knew is still worth seeing, marked as such.
            found = nodes(client, serializable=True)
            print(f"{err.message}; shown: this host's last view, which may be stale", file=sys.stderr)
            code = int(err.code)
    if ns.json:
        print(json.dumps([node.json() for node in found], indent=2))
        return code
    if not ns.no_header:
        head = ("HOST", "ADDRESS", "LEASE", "CTS", "RUN", "CPUS", "RAM", "DISKFREE")
        print("{:<16} {:<16} {:<8} {:>4} {:>4} {:>4} {:>7} {:>8}".format(*head))
    for node in found:
        print(
            f"{node.name:<16} {node.address or '-':<16} {'alive' if node.alive else 'expired':<8} "
            f"{'-' if node.cts is None else node.cts:>4} {'-' if node.running is None else node.running:>4} "
            f"{'-' if node.cpus is None else node.cpus:>4} {_size(node.ram):>7} {_size(node.disk_free):>8}"
        )
    return code


def _evacuate(paths: Paths, ns: Namespace) -> int:
    import shlex

    from pyvz.cluster.evacuate import evacuate

    only = [name.strip() for name in ns.to.split(",") if name.strip()] if ns.to else None
    return evacuate(paths, ns.host, only, tuple(shlex.split(ns.ssh)))


def _restore(paths: Paths, ns: Namespace) -> int:
    import shlex

    from pyvz.cluster.evacuate import restore

    return restore(paths, ns.host, tuple(shlex.split(ns.ssh)))


def _agent(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.agent import Agent
    from pyvz.cluster.settings import load

    return Agent(load(paths)).run()


def _fence(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.fence import watchdog

    return watchdog(paths)


def _etcd(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.member import supervise
    from pyvz.cluster.settings import load

    settings = load(paths)
    if not settings.managed:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, "this host uses an external etcd: there is no member to run"
        )
    return supervise(settings)


def _admit(paths: Paths, ns: Namespace) -> int:
    from pyvz.cluster.membership import admit

    answer = admit(paths, sys.stdin.read(1 << 20))
    print(json.dumps(answer))
    return 0


def main() -> None:
    exit_now(run_tool("vzcluster", dispatch, sys.argv[1:]))


if __name__ == "__main__":
    main()
