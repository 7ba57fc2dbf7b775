"""pyvz-lxcfs-heal: give every running pyvz CT (of every root) the files of the LXCFS that
has just started, in place of those of the one that is gone.

lxcfs.service runs it after each start (ExecStartPost in tools/lxcfs-pyvz.conf, installed
by `make install`), so a `systemctl restart lxcfs` or an upgrade of the package does not
leave the running CTs reading a dead FUSE connection. It waits for LXCFS's mount to answer,
since systemd runs it as soon as lxcfs has forked, and never starts LXCFS itself: that is
the service manager's job there.
"""

from __future__ import annotations

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser


def _seconds(text: str) -> float:
    from pyvz.errors import ExitCode, VzError

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 600:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"--wait: expected 0 to 600 seconds, got {text!r}")
    return value


def dispatch(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="pyvz-lxcfs-heal",
        description="Bind the running LXCFS's files into the running CTs whose LXCFS files are stale.",
    )
    parser.add_argument(
        "--wait", type=_seconds, default=10.0, metavar="SECONDS", help="how long to wait for LXCFS (10)"
    )
    parser.add_argument("--quiet", action="store_true", help="print errors and warnings only")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    ns = parser.parse_args(argv)
    from pyvz.errors import ExitCode, VzError
    from pyvz.runtime import lxcfs

    current = lxcfs.wait_up(ns.wait)
    if current is None:
        raise VzError(ExitCode.SYSTEM_ERROR, f"LXCFS does not answer at {lxcfs.LXCFS_DIR}: nothing healed")
    from pyvz.log import log

    count = lxcfs.heal_now(current)
    log.info(f"LXCFS's files bound in again in {count} running CT(s)")
    return 0


def main() -> None:
    exit_now(run_tool("pyvz-lxcfs-heal", dispatch))


if __name__ == "__main__":
    main()
