"""Named points in a migration or a conversion where a test can stop a process to kill it
(`kill -9`), or make a step fail.

A root's `var/lib/vz/.fault-point` file names one point; a process of that root reaching it
says so on stderr and waits there to be killed. `NAME:fail` makes the point raise the error
the step after it could raise instead. Without the file (every real host) a point costs one
failed stat.
"""

from __future__ import annotations

import os
import sys
import time

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths

SENDER_POINTS = ("precopy", "frozen", "final", "handover")
RECEIVER_POINTS = ("receiving", "staged", "committed", "started")
# vzreplicate (migrate/replicate.py, migrate/replica_receiver.py)
REPLICATE_SENDER_POINTS = ("replicate-sending", "replicate-sent")
REPLICATE_RECEIVER_POINTS = ("replica-receiving", "replica-staged", "replica-committed")
CONVERT_POINTS = ("convert-built", "convert-swapped")
REBUILD_POINTS = ("rebuild-built", "rebuild-snapshotted", "rebuild-swapped")  # ct/rebuild.py
CLUSTER_POINTS = ("join-admitted", "join-started")  # vzcluster join (cluster/membership.py)
PULL_POINTS = (  # vzmigrate --from (migrate/pull.py)
    "pull-disabled",
    "pull-precopy",
    "pull-stopped",
    "pull-copied",
    "pull-committed",
    "pull-started",
    "pull-retire",
)


def point(paths: Paths, name: str) -> None:
    marker = paths.lib_vz / ".fault-point"
    try:
        wanted = marker.read_text().strip()
    except OSError:
        return
    if wanted == f"{name}:fail":
        raise VzError(ExitCode.RESTORE_ERROR, f"fault point {name}: made to fail")
    if wanted != name:
        return
    sys.stderr.write(f"fault point {name} reached (pid {os.getpid()})\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)
