"""vztop: a top-like view with one row per running CT, redrawn every few seconds.

Columns: CTID, name, processes, CPU % (100 = one CPU), memory held against the CT's RAM
limit (physpages), and the beancounters whose failcnt is above 0 (`name:failcnt`). `-d
SECONDS` between screens (default 3), `-n COUNT` screens then exit, `-b` batch mode: no
screen clearing, one screen after another on stdout, for scripts and tests. The first
screen's CPU % is measured over a fifth of a second.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser

if TYPE_CHECKING:
    from pyvz.resources.ctload import CtLoad

FIRST_INTERVAL = 0.2
CLEAR = "\x1b[H\x1b[2J"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vztop", description="Show the running CTs' load, like top.", add_help=False)
    parser.add_argument("-h", "--help", action="help", help="show this help")
    parser.add_argument("-b", dest="batch", action="store_true", help="batch mode: no screen control")
    parser.add_argument("-d", dest="delay", type=float, default=3.0, help="seconds between screens")
    parser.add_argument(
        "-n", dest="count", type=int, default=0, help="screens to show (default: until Ctrl-C)"
    )
    return parser


def screen(loads: list[CtLoad]) -> str:
    from pyvz.units import human_size

    stamp = time.strftime("%H:%M:%S")
    average = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        f"vztop - {stamp}, {len(loads)} CTs running, load average: {average}",
        f"{'CTID':>10} {'NAME':<16} {'NPROC':>5} {'%CPU':>6} {'MEM':>8} {'LIMIT':>9}  FAILCNT",
    ]
    for load in loads:
        cpu = "-" if load.cpu_percent is None else f"{load.cpu_percent:.1f}"
        memory = "-" if load.memory is None else human_size(load.memory)
        limit = "unlimited" if load.memory_limit is None else human_size(load.memory_limit)
        failed = " ".join(f"{name}:{count}" for name, count in load.failed) or "-"
        name = (load.name or "-")[:16]
        lines.append(f"{load.ctid:>10} {name:<16} {load.nproc:>5} {cpu:>6} {memory:>8} {limit:>9}  {failed}")
    return "\n".join(lines) + "\n"


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.errors import ExitCode, VzError
    from pyvz.host import Host
    from pyvz.resources.ctload import cpu_sample, load, running_ctids

    if ns.delay <= 0 or ns.count < 0:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "-d must be above 0 and -n at least 0")
    host = Host()
    sample = cpu_sample(host, running_ctids(host))
    time.sleep(min(FIRST_INTERVAL, ns.delay))
    shown = 0
    while True:
        rows, sample = load(host, sample)
        text = screen(rows)
        sys.stdout.write(text + "\n" if ns.batch else CLEAR + text)
        sys.stdout.flush()
        shown += 1
        if ns.count and shown >= ns.count:
            return 0
        time.sleep(ns.delay)


def main() -> None:
    exit_now(run_tool("vztop", dispatch))


if __name__ == "__main__":
    main()
