"""vzmemcheck: how much of the host's memory the running CTs use and were promised.

Columns as vzctl's: low memory (kernel memory and socket buffers) used and committed, RAM
used, RAM+swap used and committed, allocated memory used, guaranteed and limited; in percent
of the host's total, or with -A in MB followed by the host's totals. Per CT with -v. What the
kernel does not count (allocated memory: mainline keeps no per-cgroup commit charge) is n/a.
pyvz.resources.capacity defines every figure.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser

# (resource, field of its Share) for each column, in vzctl's order.
COLUMNS = (
    ("lowmem", "used"),
    ("lowmem", "limit"),
    ("ram", "used"),
    ("memswap", "used"),
    ("memswap", "limit"),
    ("alloc", "used"),
    ("alloc", "promised"),
    ("alloc", "limit"),
)
LABEL = 11  # width of the CTID / Summary: column


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzmemcheck", description="Show host memory utilisation and commitment.", add_help=False
    )
    parser.add_argument("-h", "--help", action="help", help="show this help")
    parser.add_argument("-v", dest="verbose", action="store_true", help="one line per running CT")
    parser.add_argument("-A", dest="absolute", action="store_true", help="absolute values in MB")
    return parser


def row(values: list[float | None]) -> str:
    return " ".join(f"{'n/a':>7}" if v is None else f"{v:7.2f}" for v in values)


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.resources.capacity import MB, Share, host_capacity, shares

    cap = host_capacity()
    scale: Callable[[int, int], float] = (
        (lambda value, whole: value / MB) if ns.absolute else (lambda value, whole: value * 100 / whole)
    )
    print("Output values in Mbytes" if ns.absolute else "Output values in %")
    pad = " " * (LABEL) if ns.verbose else ""
    print(
        ("CTID       " if ns.verbose else "")
        + " LowMem  LowMem     RAM MemSwap MemSwap   Alloc   Alloc   Alloc"
    )
    print(pad + "   util  commit    util    util  commit    util  commit   limit")
    totals: list[float | None] = [None] * len(COLUMNS)
    for record in records(Host()):
        if not record.running or record.beancounters is None:
            continue
        found: dict[str, Share] = shares(record.config, record.beancounters, cap)
        values: list[float | None] = []
        for index, (key, field) in enumerate(COLUMNS):
            share = found[key]
            amount: int | None = getattr(share, field)
            value = None if amount is None or share.whole <= 0 else scale(amount, share.whole)
            values.append(value)
            if value is not None:
                totals[index] = (totals[index] or 0.0) + value
        if ns.verbose:
            print(f"{record.ctid:<10} " + row(values))
    if ns.verbose:
        print("-" * 74)
    print(("Summary:   " if ns.verbose else "") + row(totals))
    if ns.absolute:
        memswap = cap.ram + cap.swap
        host = [cap.lowmem, cap.lowmem, cap.ram, memswap, memswap, memswap, memswap, memswap]
        print(("Host:      " if ns.verbose else "") + row([value / MB for value in host]))
    return 0


def main() -> None:
    exit_now(run_tool("vzmemcheck", dispatch))


if __name__ == "__main__":
    main()
