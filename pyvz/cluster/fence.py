"""Self-fencing: a host that cannot renew its lease stops the CTs another host may start.

Why: once a host's lease expires, the HA leader (pyvz.cluster.ha) starts the host's HA CTs
elsewhere, and `vzctl recover` may start a replicated CT on a standby. If the host is only
cut off, not dead, its copies must be gone by then, or a CT answers from two hosts. Like
Proxmox's watchdog-based fencing, the host does it itself: its lease is known to live until
`deadline` (the last renewal's send time + TTL: never later than etcd's own expiry), and
the leader waits the lease out plus FENCE_MARGIN seconds before it acts. So at the deadline
every protected CT here is frozen and killed (pyvz.ct.freeze.freeze_and_kill), with the
whole margin to do it in.

Protected: a running CT with HA_ENABLE=yes or standby hosts (REPLICATE): those are the ones
that may be started elsewhere. Others keep running.

The watchdog is its own process (`vzcluster fence`, started by the agent, pid
in run/pyvz/fence.pid), so that a kill -9 of the agent does not take the fencing with it:
the agent writes the deadline (run/pyvz/fence.json, CLOCK_MONOTONIC seconds) after each
renewal, and the watchdog acts on the last one it read. The file's removal (a clean stop
of an agent that leaves nothing to protect) ends the watchdog.

When no quorum can exist anywhere (a majority of etcd's members is down, and this host
knows it: their hosts answer a TCP connect to the member's port with a refusal), nobody can
take the CTs over, and fencing them would only stop service: the watchdog holds off, and
checks again every POLL seconds, for as long as that stays so. Anything else (members that
accept connections, a dead agent, members out of reach) may be a quorum deciding without
this host, and the CTs are fenced. When the lost members come back, etcd's new leader
extends every lease by its TTL (from its election, which follows the member's return), so
the watchdog gives the agent one TTL from the moment it sees a quorum possible again: a
live agent renews in that time, a dead one's CTs are fenced before their lease expires, and
the HA leader waits the margin on top of that.

Fenced CTs are listed in var/lib/vz/fenced.json: `vzctl start` refuses them (the CT may run
elsewhere by now); the agent starts them again once the host is back and still owns them,
and marks them stale when another host took them over (they then stay stopped).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.paths import Paths

POLL = 0.2  # seconds between two looks at the deadline
PROBE_TIMEOUT = 1.0


def deadline_file(paths: Paths) -> Path:
    return paths.run_dir / "fence.json"


def pid_file(paths: Paths) -> Path:
    return paths.run_dir / "fence.pid"


def fenced_file(paths: Paths) -> Path:
    return paths.lib_vz / "fenced.json"


# ---- the agent's side -------------------------------------------------------------------


def arm(paths: Paths, deadline: float) -> None:
    """The lease is known to live until `deadline` (time.monotonic())."""
    write_atomic(deadline_file(paths), json.dumps({"deadline": deadline, "agent": os.getpid()}) + "\n")


def disarm(paths: Paths) -> None:
    deadline_file(paths).unlink(missing_ok=True)


def read_deadline(paths: Paths) -> float | None:
    try:
        return float(json.loads(deadline_file(paths).read_text())["deadline"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return 0.0  # unreadable: as good as expired


# ---- what is fenced ---------------------------------------------------------------------


def load_fenced(paths: Paths) -> dict[int, dict[str, Any]]:
    try:
        raw = json.loads(fenced_file(paths).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning(f"{fenced_file(paths)} is unreadable: taken as empty")
        return {}
    found: dict[int, dict[str, Any]] = {}
    if isinstance(raw, dict):
        for key, entry in raw.items():
            if key.isdigit() and isinstance(entry, dict):
                found[int(key)] = entry
    return found


def save_fenced(paths: Paths, entries: dict[int, dict[str, Any]]) -> None:
    if not entries:
        fenced_file(paths).unlink(missing_ok=True)
        return
    text = json.dumps({str(k): v for k, v in sorted(entries.items())}, indent=1, sort_keys=True)
    write_atomic(fenced_file(paths), text + "\n")


def refuse_start(paths: Paths, ctid: int) -> None:
    """`vzctl start` of a fenced CT: it may run on another host now."""
    if not fenced_file(paths).exists():
        return
    entry = load_fenced(paths).get(ctid)
    if entry is None:
        return
    if entry.get("stale"):
        raise VzError(
            ExitCode.RUNNING,
            f"CT {ctid} runs on host {entry.get('now_on', '?')} since this host was cut off: this copy "
            "is stale and stays stopped (destroy it, or migrate the CT back)",
        )
    raise VzError(
        ExitCode.RUNNING,
        f"CT {ctid} was stopped when this host lost its cluster (fencing): it may run elsewhere by "
        "now; the cluster agent starts it again here once the host is back and still owns it",
    )


def protected(host: Host) -> list[int]:
    """Running CTs that another host may start: HA ones and replicated ones."""
    from pyvz.listing import records

    found = []
    for record in records(host):
        if record.status != "running":
            continue
        ha = (record.raw("HA_ENABLE") or "no").lower() == "yes"
        if ha or (record.raw("REPLICATE") or "").strip():
            found.append(record.ctid)
    return found


def fence(host: Host, ctids: list[int], why: str) -> list[int]:
    """Freeze and kill each CT (in parallel), recording it as fenced; those stopped."""
    if not ctids:
        return []
    from pyvz.ct.container import Container
    from pyvz.ct.freeze import freeze_and_kill

    def one(ctid: int) -> int | None:
        try:
            with host.ct_lock(ctid, wait=2.0):
                ct = Container(host, ctid)
                if ct.is_running():
                    freeze_and_kill(ct)
            return ctid
        except VzError as err:
            log.error(f"cannot fence CT {ctid}: {err.message}")
        except Exception as err:  # one CT's trouble must not keep the others running
            log.error(f"cannot fence CT {ctid}: {type(err).__name__}: {err}")
        return None

    entries = load_fenced(host.paths)
    for ctid in ctids:  # recorded first: a start between the kill and the record is refused
        entries.setdefault(ctid, {"at": round(time.time(), 3), "why": why})
    save_fenced(host.paths, entries)
    with ThreadPoolExecutor(max_workers=min(8, len(ctids))) as pool:
        stopped = [ctid for ctid in pool.map(one, ctids) if ctid is not None]
    for ctid in stopped:
        log.warning(f"Fenced CT {ctid}: {why}")
    return stopped


# ---- can a quorum exist at all? ---------------------------------------------------------


def _member_down(endpoint: str) -> bool:
    """Whether the endpoint's host is known to run no member: it refuses the connection."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=PROBE_TIMEOUT):
            return False  # a member answers: it may be part of a quorum
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # out of reach: it may well be part of a quorum without us


def quorum_possible(endpoints: tuple[str, ...]) -> bool:
    """False only when a majority of etcd's members is known to be down."""
    if not endpoints:
        return True
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        down = list(pool.map(_member_down, endpoints)).count(True)
    return down < len(endpoints) // 2 + 1


# ---- the watchdog process ---------------------------------------------------------------


def watchdog(paths: Paths) -> int:
    from pyvz.cluster.settings import load

    settings = load(paths)
    host = Host(paths)
    pid_file(paths).write_text(f"{os.getpid()}\n")
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    holding = False  # no quorum can exist: nothing is fenced (said once)
    grace = 0.0  # after holding: the agent's time to renew the lease etcd extended
    log.info(f"fencing watchdog for {settings.name}: margin {settings.fence_margin} s")
    try:
        while not stop:
            deadline = read_deadline(paths)
            if deadline is None:
                log.info("fencing watchdog: disarmed by the agent")
                return 0
            now = time.monotonic()
            if now >= max(deadline, grace):
                running = protected(host)
                if not running:
                    pass
                elif not quorum_possible(settings.endpoints):
                    if not holding:
                        holding = True
                        log.warning(
                            "the lease could not be renewed, but no quorum can exist (a majority of "
                            "etcd's members is down): nothing is fenced, no host can take the CTs over"
                        )
                elif holding:
                    holding = False
                    grace = now + settings.ttl
                    log.warning(
                        f"a quorum may exist again: the lease must be renewed within {settings.ttl} s"
                    )
                else:
                    fence(host, running, "this host's lease could not be renewed in time")
            elif now < deadline:
                holding = False  # renewed: the next expiry fences at once, as it must
            time.sleep(POLL)
    finally:
        try:
            if int(pid_file(paths).read_text()) == os.getpid():
                pid_file(paths).unlink()
        except (OSError, ValueError):
            pass
    return 0


def stop_watchdog(paths: Paths) -> None:
    """The host leaves its cluster: no watchdog, nothing fenced any more."""
    disarm(paths)
    pid = running_watchdog(paths)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while running_watchdog(paths) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
    pid_file(paths).unlink(missing_ok=True)
    fenced_file(paths).unlink(missing_ok=True)


def running_watchdog(paths: Paths) -> int | None:
    from pyvz.cluster.member import running_pid

    return running_pid(pid_file(paths))


def ensure_watchdog(paths: Paths) -> int | None:
    """The watchdog's pid, started if it does not run (forked off in a session of its own:
    the agent's death must not take it along)."""
    from pyvz.cluster.member import self_argv
    from pyvz.run import daemon

    pid = running_watchdog(paths)
    if pid is not None:
        return pid
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    daemon(self_argv("fence"), paths.root / "var/log/pyvz-fence.log")
    for _ in range(100):  # until it wrote its pid file (it then watches the deadline)
        pid = running_watchdog(paths)
        if pid is not None:
            return pid
        time.sleep(0.05)
    log.error("the fencing watchdog did not come up (see var/log/pyvz-fence.log)")
    return None
