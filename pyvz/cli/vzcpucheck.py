"""vzcpucheck: the cpuunits promised to the running CTs against the CPU power of the node.

"Current CPU utilization" is the sum of the cpuunits of the running CTs plus the host's own
share (VE0CPUUNITS in vz.conf, default 1000), as vzctl adds CT 0. "Power of the node" is
the number of online CPUs times 1000: OpenVZ rated a node by its bogomips, which mainline's
scheduler never looks at. cpuunits become relative cgroup CPU weights, so while the
utilization stays within the power, every busy CT gets at least cpuunits / 1000 CPUs; above
it the node is overcommitted and those shares shrink in proportion. The definition lives in
pyvz.resources.capacity (UNITS_PER_CPU).
"""

from __future__ import annotations

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vzcpucheck", description="Show the CPU power of the node and its utilization.", add_help=False
    )
    parser.add_argument("-h", "--help", action="help", help="show this help")
    parser.add_argument("-v", dest="verbose", action="store_true", help="show the cpuunits of each CT")
    return parser


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.resources.capacity import cpuunits, host_capacity, host_units

    host = Host()
    rows = [(0, host_units(host.setting("VE0CPUUNITS")))]
    rows += [(r.ctid, cpuunits(r.config)) for r in records(host) if r.running]
    power = host_capacity().power
    if ns.verbose:
        print("CTID\t\tCPUUNITS")
        print("-" * 25)
        for ctid, units in rows:
            print(f"{ctid}\t\t{units}")
    used = sum(units for _ctid, units in rows)
    print(f"Current CPU utilization: {used}")
    print(f"Power of the node: {power}")
    if used > power:
        print("Warning: hardware node is overcommitted")
    return 0


def main() -> None:
    exit_now(run_tool("vzcpucheck", dispatch))


if __name__ == "__main__":
    main()
