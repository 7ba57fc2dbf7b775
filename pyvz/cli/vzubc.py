"""vzubc: the beancounters of running CTs, read from the host.

The human view has vzubc's columns (held and maxheld with how close they are to the barrier
and the limit, barrier, limit, failcnt); `--proc` prints the /proc/user_beancounters text
that monitoring scripts parse. Beancounters whose limit this kernel does not enforce are
marked, never shown as if they were.
"""

from __future__ import annotations

import os
import sys

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError
from pyvz.resources.beancounters import IN_PAGES, Beancounter, remember
from pyvz.units import UNLIMITED

RULE = "-" * 66
HEADER = "             | HELD Bar% Lim%| MAXH Bar% Lim%| BAR | LIM | FAIL"
RED, YELLOW, RESET = "\033[31m", "\033[33m", "\033[0m"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzubc", description="Show user beancounters of running CTs.", add_help=False
    )
    parser.add_argument("--help", action="help", help="show this help")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show unlimited beancounters")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show beancounters near their limits")
    parser.add_argument(
        "-qh", "--quiet-held", dest="quiet_held", action="store_true", help="-q, judging held only"
    )
    parser.add_argument(
        "-qm", "--quiet-maxheld", dest="quiet_maxheld", action="store_true", help="-q, judging maxheld only"
    )
    parser.add_argument(
        "-qp",
        "--quiet-percent",
        dest="percent",
        type=int,
        default=90,
        metavar="PCT",
        help="-q threshold (90)",
    )
    parser.add_argument("-r", "--relative", action="store_true", help="failcnt since the previous -r/-i run")
    parser.add_argument("-i", "--incremental", action="store_true", help="add held and failcnt deltas")
    parser.add_argument(
        "-c", "--color", action="store_true", help="highlight failures and values near limits"
    )
    parser.add_argument("-w", "--watch", action="store_true", help="redisplay every 2 s (watch(1))")
    parser.add_argument("-wd", dest="watch_diff", action="store_true", help="watch, highlighting differences")
    parser.add_argument("-wt", dest="watch_notitle", action="store_true", help="watch, without its title")
    parser.add_argument("-wn", dest="watch_interval", metavar="SEC", help="watch interval")
    parser.add_argument("--proc", action="store_true", help="print the /proc/user_beancounters text")
    parser.add_argument("ctids", nargs="*", metavar="CTID", help="CT ids or names (default: all running)")
    return parser


def human(value: int | None, scale: int) -> str:
    """vzubc's short form: pages in bytes, then K/M/G; zero and unlimited are '-'."""
    if value is None:
        return "n/a"
    if value == 0 or value >= UNLIMITED:
        return "-"
    number = float(value * scale)
    suffixes = ("", "K", "M", "G", "T", "P")
    for index, suffix in enumerate(suffixes):
        shown = f"{number:.1f}" if suffix and number < 9.95 else f"{number:.0f}"
        # Round first, then decide: 1048575 bytes is 1.0M, not 1024K.
        if float(shown) < 1024 or index == len(suffixes) - 1:
            return f"{int(number)}" if not suffix else f"{shown}{suffix}"
        number /= 1024
    return str(value)


def percent(value: int | None, bound: int) -> str:
    if value is None or not value or bound >= UNLIMITED or bound == 0:
        return "-"
    return f"{value * 100 // bound}%"


def _watch(argv: list[str], ns: object) -> int:
    """Run ourselves under watch(1), without the -w options."""
    import shutil

    watch = shutil.which("watch")
    if watch is None:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "-w needs watch(1) (Debian package procps)")
    rest, words, interval = [], iter(argv), getattr(ns, "watch_interval", None)
    for word in words:
        if word == "-wn":
            next(words, None)
        elif word not in ("-w", "--watch", "-wd", "-wt"):
            rest.append(word)
    command = ["watch"]
    if getattr(ns, "watch_diff", False):
        command.append("-d")
    if getattr(ns, "watch_notitle", False):
        command.append("-t")
    if interval:
        command += ["-n", interval]
    command += ["--", sys.argv[0] if os.path.isabs(sys.argv[0]) else "vzubc", *rest]
    sys.stdout.flush()
    os.execv(watch, command)
    return 0  # not reached


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    if ns.watch or ns.watch_diff or ns.watch_notitle or ns.watch_interval:
        return _watch(argv, ns)
    if not 0 < ns.percent <= 100:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid -qp value {ns.percent} (1..100)")
    from pyvz.config import resolve_ctid
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.log import log

    host = Host()
    wanted = None
    if ns.ctids:
        wanted = []
        for text in ns.ctids:
            try:
                wanted.append(resolve_ctid(host.paths, text))
            except VzError as err:
                log.warning(f"{err.message}; skipped")  # vzubc ignores unknown CTs
    chosen = records(host, wanted)
    for record in chosen if wanted else ():
        if record.config is None:
            log.warning(f"CT {record.ctid} does not exist; skipped")
        elif not record.running:
            log.warning(f"CT {record.ctid} is not running: it has no beancounters")
    running = [r for r in chosen if r.running and r.beancounters is not None]
    if ns.proc:
        print(proc_text([(r.ctid, r.beancounters or []) for r in running]), end="")
        return 0
    enforced = host.runtime.cgroups.enforces
    quiet = ns.quiet or ns.quiet_held or ns.quiet_maxheld
    marked = False
    for record in running:
        counters = record.beancounters or []
        previous = remember(record.state_file, counters) if ns.relative or ns.incremental else {}
        lines = []
        for counter in counters:
            unlimited = counter.barrier >= UNLIMITED and counter.limit >= UNLIMITED
            if unlimited and not ns.verbose and not (counter.failcnt or 0):
                continue
            scale = 4096 if counter.name in IN_PAGES else 1
            was_held, was_fail = previous.get(counter.name, [0, 0]) if previous else [0, 0]
            failcnt = counter.failcnt
            if ns.relative and failcnt is not None:
                failcnt = failcnt - was_fail if counter.name in previous else failcnt
            near = _near(counter.held, counter.maxheld, counter.barrier, counter.limit, ns)
            if quiet and not near and not failcnt:
                continue
            not_enforced = not unlimited and counter.name not in enforced
            marked |= not_enforced
            held, maxheld, barrier, limit = counter.held, counter.maxheld, counter.barrier, counter.limit
            line = (
                f"{counter.name:>13}|"
                f"{human(held, scale):>5} {percent(held, barrier):>4} {percent(held, limit):>4}|"
                f"{human(maxheld, scale):>5} {percent(maxheld, barrier):>4} {percent(maxheld, limit):>4}|"
                f"{human(barrier, scale):>5}|{human(limit, scale):>5}|"
                f"{human(failcnt, 1) if failcnt is not None else 'n/a':>6}"
            )
            if ns.incremental and counter.held is not None:
                line += f" {_delta(counter.held - was_held, scale):>7}"
            if not_enforced:
                line += " *"
            if ns.color and (failcnt or near):
                line = f"{RED if failcnt else YELLOW}{line}{RESET}"
            lines.append(line)
        if quiet and not lines:
            continue
        print(RULE)
        print(f"CT {record.ctid:<10}" + HEADER[13:] + ("   dHELD" if ns.incremental else ""))
        print("-------------+---------------+---------------+-----+-----+------")
        for line in lines:
            print(line)
        print(RULE)
    if marked:
        print("* saved, but not enforced on this kernel (see vzcfgvalidate)")
    return 0


def _near(held: int | None, maxheld: int | None, barrier: int, limit: int, ns: object) -> bool:
    values = []
    if not getattr(ns, "quiet_maxheld", False):
        values.append(held)
    if not getattr(ns, "quiet_held", False):
        values.append(maxheld)
    threshold = getattr(ns, "percent", 90)
    for value in values:
        for bound in (barrier, limit):
            if value and bound < UNLIMITED and value * 100 >= bound * threshold:
                return True
    return False


def _delta(change: int, scale: int) -> str:
    if change == 0:
        return "0"
    return ("+" if change > 0 else "-") + human(abs(change), scale)


def proc_text(cts: list[tuple[int, list[Beancounter]]]) -> str:
    """The exact /proc/user_beancounters layout (Version 2.5), unknown values as 0."""
    columns = ("held", "maxheld", "barrier", "limit", "failcnt")
    lines = ["Version: 2.5", f"{'uid':>10}  {'resource':<12} " + " ".join(f"{c:>20}" for c in columns)]
    for ctid, counters in cts:
        for index, counter in enumerate(counters):
            uid = f"{ctid:>10}:" if index == 0 else " " * 11
            values = (counter.held, counter.maxheld, counter.barrier, counter.limit, counter.failcnt)
            lines.append(f"{uid} {counter.name:<12} " + " ".join(f"{v or 0:>20}" for v in values))
    return "\n".join(lines) + "\n"


def main() -> None:
    exit_now(run_tool("vzubc", dispatch))


if __name__ == "__main__":
    main()
