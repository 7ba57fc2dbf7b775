"""vzcfgvalidate: check a CT config or sample for UBC consistency, and repair it.

The classic OpenVZ rules between beancounters (see `check`), at vzctl's three levels: Error,
Warning and Recommendation. -r repairs in place, -i asks before each repair; the file keeps
its comments, order and unknown lines and is written atomically. Exit status, as vzctl's:
0 when valid (after repairs), 2 when an Error or Warning remains.

pyvz adds one thing: every parameter that is set but that this kernel does not enforce is
named, so nobody mistakes a saved value for a limit.
"""

from __future__ import annotations

import sys

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.resources.validate import (
    ERROR,
    FAILED,
    RECOMMENDATION,
    Finding,
    check,
    is_vswap,
    not_enforced_notes,
    parse_values,
)
from pyvz.units import BarrierLimit


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzcfgvalidate", description="Check a CT config for UBC consistency.", add_help=False
    )
    parser.add_argument("-h", "--help", action="help", help="show this help")
    parser.add_argument("-r", dest="repair", action="store_true", help="repair the file")
    parser.add_argument("-i", dest="ask", action="store_true", help="repair, asking before each change")
    parser.add_argument(
        "-v", dest="vswap", choices=("yes", "no"), metavar="yes|no", help="treat as VSwap config (auto)"
    )
    parser.add_argument("file", metavar="FILE", help="CTID.conf or ve-NAME.conf-sample")
    return parser


def _ask(finding: Finding) -> bool:
    while True:
        print(f"{finding.fix} (y/n) [y] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=sys.stderr)
            return False
        if answer.strip() in ("", "y", "yes"):
            return True
        if answer.strip() in ("n", "no"):
            return False


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pathlib import Path

    from pyvz.config import ConfigFile
    from pyvz.host import Host
    from pyvz.params import PAGE
    from pyvz.resources.capacity import host_capacity

    conf = ConfigFile.load(Path(ns.file))
    values, bad = parse_values(conf)
    cap = host_capacity()
    vswap = ns.vswap == "yes" if ns.vswap else is_vswap(values)

    def decide(finding: Finding) -> bool:
        print(f"{finding.level}: {finding.message}", flush=True)
        if finding.fix is None or not (ns.repair or ns.ask):
            return False
        if ns.ask:
            return _ask(finding)
        print(finding.fix)
        return True

    for message in bad:
        print(f"{ERROR}: {message}")
    original = dict(values)
    findings = check(values, vswap, cap.ram // PAGE, cap.swap // PAGE, decide)
    changed = {name: value for name, value in values.items() if original.get(name) != value}
    for name, (barrier, limit) in changed.items():
        conf.set(name.upper(), str(BarrierLimit(barrier, limit)))  # as vzctl writes it
    if changed:
        conf.write()  # line by line: comments and unknown lines stay; atomic
    for note in not_enforced_notes(conf, Host().runtime.cgroups.enforces):
        print(note)
    failed = bool(bad) or any(f.level != RECOMMENDATION and not f.fixed for f in findings)
    if failed:
        return FAILED
    print("Validation completed: success")
    return 0


def main() -> None:
    exit_now(run_tool("vzcfgvalidate", dispatch))


if __name__ == "__main__":
    main()
