"""vzpid: the CT a host process belongs to, in vzctl 4.11's vzpid layout.

`Pid<TAB>CTID<TAB>Name` and one line per PID (`-p` adds the PID inside the CT's PID
namespace as `CT/Pid`); a PID with no process is left out, as the script leaves it out, and
the exit status stays 0. `-` reads the PIDs from stdin. Name is the first word of the Name:
line of /proc/PID/status, as the script's awk takes it. A host process has CTID 0; a CT of
another pyvz root than PYVZ_ROOT's shows as TAG:CTID (docs/host-tools.md).
"""

from __future__ import annotations

import sys

from pyvz.cli.common import exit_now, run_tool

USAGE = "Usage: vzpid [-p] <pid> ...\n       vzpid [-p] -\n"


def line(pid: str, tag: str, with_ns_pid: bool) -> str | None:
    """The output line for one PID argument; None when there is no such process."""
    from pyvz.resources.ctprocs import Gone, label, ns_pid, owner_of, status_name

    if not pid.isdigit() or (len(pid) > 1 and pid.startswith("0")):
        return None  # /proc has no such entry: the script prints nothing for it either
    name = status_name(int(pid))
    try:
        owner = owner_of(int(pid))
    except Gone:
        return None
    if name is None:
        return None
    first = name.split()[0] if name.split() else ""
    ctid = label(owner, tag)
    if with_ns_pid:
        return f"{int(pid)}\t{ns_pid(int(pid)) or 0}\t{ctid}\t{first}"
    return f"{int(pid)}\t{ctid}\t{first}"


def dispatch(argv: list[str]) -> int:
    from pyvz.paths import Paths

    with_ns_pid = bool(argv) and argv[0] == "-p"
    args = argv[1:] if with_ns_pid else argv
    if not args:
        sys.stderr.write(USAGE)
        return 1
    if args == ["-"]:
        args = sys.stdin.read().split()
    elif args == ["-h"]:
        sys.stdout.write(USAGE)
        return 0
    tag = Paths.from_env().tag
    print("Pid\tCT/Pid\tCTID\tName" if with_ns_pid else "Pid\tCTID\tName")
    for pid in args:
        text = line(pid, tag, with_ns_pid)
        if text is not None:
            print(text)
    return 0


def main() -> None:
    exit_now(run_tool("vzpid", dispatch))


if __name__ == "__main__":
    main()
