"""vzcalc: the share of the host's memory and tasks one CT uses and was promised.

Current is what the kernel counts now (running CTs only), Promised the soft guarantees
(barriers; for RAM+swap under VSwap, the limits themselves), Max the hard limits, each in
percent of the host's total (pyvz.resources.capacity says what counts and how unlimited
values are taken). -v shows the resource lines; the last line is the largest of them.
"""

from __future__ import annotations

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError

ROWS = (
    ("Low Mem", "lowmem"),
    ("Total RAM", "ram"),
    ("Mem + Swap", "memswap"),
    ("Alloc. Mem", "alloc"),
    ("Num. Proc", "numproc"),
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzcalc", description="Show the share of host resources a CT uses.", add_help=False
    )
    parser.add_argument("-h", "--help", action="help", help="show this help")
    parser.add_argument("-v", dest="verbose", action="store_true", help="show every resource")
    parser.add_argument("ctid", metavar="CTID", help="CT id or name")
    return parser


def cell(part: int | None, whole: int) -> str:
    if part is None or whole <= 0:
        return f"{'n/a':>10}"
    return f"{part * 100 / whole:10.2f}"


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.config import resolve_ctid
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.resources.capacity import host_capacity, shares

    host = Host()
    ctid = resolve_ctid(host.paths, ns.ctid)
    record = records(host, [ctid])[0]
    if record.config is None:
        raise VzError(
            ExitCode.NO_CT_CONFIG, f"CT {ctid} does not exist ({host.paths.conf_file(ctid)} not found)"
        )
    found = shares(record.config, record.beancounters, host_capacity())
    print("Resource     Current(%)  Promised(%)  Max(%)")
    best: list[float | None] = [None, None, None]
    for label, key in ROWS:
        share = found[key]
        columns = (share.used, share.promised, share.limit)
        for index, value in enumerate(columns):
            if value is not None and share.whole > 0:
                best[index] = max(best[index] or 0.0, value * 100 / share.whole)
        if ns.verbose:
            print(f"{label:<10} " + " ".join(cell(value, share.whole) for value in columns))
    if ns.verbose:
        print("-" * 44)
    print("Memory     " + " ".join(f"{'n/a':>10}" if v is None else f"{v:10.2f}" for v in best))
    return 0


def main() -> None:
    exit_now(run_tool("vzcalc", dispatch))


if __name__ == "__main__":
    main()
