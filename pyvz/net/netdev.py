"""NETDEV: host network interfaces moved into a CT while it runs (vzctl's --netdev_add),
and given back to the host before it stops. A virtual interface left in a dying network
namespace would be destroyed with it; a physical one would come back unconfigured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.params import NETDEV
from pyvz.run import run

if TYPE_CHECKING:
    from pyvz.ct.container import Container


def _monitor_pid(ct: Container) -> int:
    runtime = ct.host.runtime
    procs = runtime.cgroups.procs(runtime.cgroups_of(ct.ctid).monitor)
    if not procs:
        raise VzError(
            ExitCode.NETDEV_ERROR, f"cannot find CT {ct.ctid}'s monitor to give its interfaces back"
        )
    return procs[0]


def move_in(ct: Container, names: tuple[str, ...], strict: bool) -> None:
    """Into the running CT, from the network namespace it was started in."""
    prefix = ct.host.runtime.netns_prefix(ct.ctid)
    pid = ct.init_pid()
    for name in names:
        done = run([*prefix, "ip", "link", "set", "dev", name, "netns", str(pid)], check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no such interface"])[-1]
            problem = f"cannot move network device {name} into CT {ct.ctid}: {why}"
            if strict:
                raise VzError(ExitCode.NETDEV_ERROR, problem)
            log.warning(problem)


def move_out(ct: Container, names: tuple[str, ...], strict: bool) -> None:
    """Back to the namespace of the CT's monitor (the one it was started in)."""
    if not names:
        return
    target = _monitor_pid(ct)
    inside = ["nsenter", f"--net=/proc/{ct.init_pid()}/ns/net", "--"]
    for name in names:
        done = run([*inside, "ip", "link", "set", "dev", name, "netns", str(target)], check=False)
        if done.returncode != 0:
            problem = f"cannot give network device {name} back to the host: {done.stderr.strip()}"
            if strict:
                raise VzError(ExitCode.NETDEV_ERROR, problem)
            log.warning(problem)


def move_live(ct: Container, add: tuple[str, ...], delete: tuple[str, ...]) -> None:
    move_out(ct, delete, strict=True)
    have = ct.config.get(NETDEV) or ()
    move_in(ct, tuple(name for name in add if name not in have), strict=True)
