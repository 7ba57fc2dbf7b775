"""`vzctl boot`: finish or undo the rebuilds a host reboot cut short, clean up after the
`vzctl run`s it ended, destroy the ephemeral CTs it stopped, then start every CT with
ONBOOT=yes, higher BOOTORDER first."""

from __future__ import annotations

from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log, set_ctid
from pyvz.params import BOOTORDER, DISABLED, ONBOOT


def boot_order(host: Host) -> list[int]:
    chosen: list[tuple[int, int]] = []
    for ctid in host.ctids():
        ct = Container(host, ctid)
        try:
            cfg = ct.config
            if not cfg.get(ONBOOT) or cfg.get(DISABLED):
                continue
            chosen.append((-(cfg.get(BOOTORDER) or 0), ctid))
        except VzError as err:
            log.warning(f"CT {ctid}: {err}")
    return [ctid for _order, ctid in sorted(chosen)]


def boot(host: Host) -> int:
    """Start them all; one CT failing does not stop the others. Returns the first error code."""
    from pyvz.ct import rebuild, runowner
    from pyvz.ct.ephemeral import sweep

    rebuild.sweep(host)  # first: an ephemeral CT's rebuild is finished before it is destroyed
    runowner.sweep(host)  # the CTs of `vzctl run`s that a reboot (or a kill -9) ended
    sweep(host)
    first_error: int = ExitCode.OK
    for ctid in boot_order(host):
        set_ctid(ctid)
        ct = Container(host, ctid)
        if ct.is_running():
            continue
        try:
            with host.ct_lock(ctid):
                ct.start()
        except VzError as err:
            log.error(str(err))
            first_error = first_error or err.code
    set_ctid(None)
    return int(first_error)
