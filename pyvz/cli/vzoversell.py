"""vzoversell: do the RAM and swap limits of all CTs add up to more than the host has?

One line per CT (running or not: a stopped CT's limits are promised all the same) with RAM
and swap used, peak, limit and failures; then the totals against the host's RAM, swap and
RAM+swap, and whether the host is oversold. Flags as vzctl's (see capacity.sold).
"""

from __future__ import annotations

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser

FLAGS = {
    "R": "non-VSwap CT, RAM limit guessed as half of privvmpages",
    "U": "no RAM limit, not counted in the totals",
    "S": "no swap limit, not counted in the total swap",
    "f": "RAM failcnt > 0 (the CT hit its RAM limit), see vzubc",
    "F": "another beancounter's failcnt > 0, see vzubc",
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzoversell",
        description="Check whether the CTs' RAM and swap oversell the host.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="help", help="show this help")
    return parser


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def dispatch(argv: list[str]) -> int:
    build_parser().parse_args(argv)
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.params import PAGE
    from pyvz.resources.capacity import host_capacity, human, oversell, sold

    cap = host_capacity()
    print("           --------- RAM ---------  -------- Swap ---------  Flags")
    print("            used  peak limit fails   used  peak limit fails")
    total = [0] * 8
    flags_seen = ""
    for record in records(Host()):
        if record.config is None:
            continue
        counters = record.beancounters if record.running else None
        ct = sold(record.config, counters)
        ram, swap = record.beancounter("physpages"), record.beancounter("swappages")
        values = [
            (ram.held or 0) * PAGE,
            (ram.maxheld or 0) * PAGE,
            ct.ram,
            ram.failcnt or 0,
            (swap.held or 0) * PAGE,
            (swap.maxheld or 0) * PAGE,
            ct.swap,
            swap.failcnt or 0,
        ]
        total = [a + b for a, b in zip(total, values, strict=True)]
        flags_seen += ct.flags
        print((f"{record.ctid:>10} " + line(values) + f"  {ct.flags}").rstrip())
    print("           ----- ----- ----- -----  ----- ----- ----- -----")
    print(" TOTAL     " + line(total))
    print()
    ram_pct = oversell(total[2], cap.ram)
    swap_pct = oversell(total[6], cap.swap)
    both_pct = oversell(total[2] + total[6], cap.ram + cap.swap)
    for label, available, allocated, pct in (
        ("RAM", cap.ram, total[2], ram_pct),
        ("Swap", cap.swap, total[6], swap_pct),
        ("RAM+Swap", cap.ram + cap.swap, total[2] + total[6], both_pct),
    ):
        print(
            f"{label:<10} available: {human(available):>5}  allocated: {human(allocated):>5}  "
            f"oversell: {percent(pct)}"
        )
    if flags_seen:
        print("\nFlags:")
        for flag, meaning in FLAGS.items():
            if flag in flags_seen:
                print(f"  {flag}: {meaning}")
    print()
    if both_pct is not None and both_pct > 100:
        print(f"The host is oversold: the CTs may use {percent(both_pct)} of its RAM+swap.")
    elif ram_pct is not None and ram_pct > 100:
        print(
            f"RAM is oversold ({percent(ram_pct)}), RAM+swap is not: the CTs fit only if some of them swap."
        )
    else:
        print(f"The host is not oversold: the CTs may use {percent(both_pct)} of its RAM+swap.")
    return 0


def line(values: list[int]) -> str:
    """used peak limit fails, for RAM then swap (bytes; failures as counts)."""
    from pyvz.resources.capacity import human

    cells = [human(v) if i % 4 != 3 else (str(v) if v else "-") for i, v in enumerate(values)]
    return " ".join(f"{c:>5}" for c in cells[:4]) + "  " + " ".join(f"{c:>5}" for c in cells[4:])


def main() -> None:
    exit_now(run_tool("vzoversell", dispatch))


if __name__ == "__main__":
    main()
