"""Run inside a test host (``python -m tests.clusterprobe ...``, from the repo): a reservation
through pyvz's etcd client, with this host's cluster.conf, as create will make one.

  reserve KEY [KEY...] [--at UNIX_TIME]   exit 0: all reserved; 172: one is taken (printed);
                                          any other VzError: its code, its one line on stderr
"""

from __future__ import annotations

import sys
import time

from pyvz.cluster.etcd import owner_value, reserve
from pyvz.cluster.settings import load
from pyvz.errors import ClusterExit, VzError
from pyvz.paths import Paths


def main(argv: list[str]) -> int:
    command, *rest = argv
    start = None
    if "--at" in rest:
        at = rest.index("--at")
        start = float(rest[at + 1])
        del rest[at : at + 2]
    if command != "reserve" or not rest:
        print(__doc__, file=sys.stderr)
        return 2
    settings = load(Paths.from_env())
    try:
        with settings.client() as client:
            client.revision()  # connected before the start line
            if start is not None:
                time.sleep(max(0.0, start - time.time()))
            taken = reserve(client, {key: owner_value(settings.name) for key in rest})
    except VzError as err:
        print(err.message, file=sys.stderr)
        return int(err.code)
    if taken is not None:
        print(taken)
        return int(ClusterExit.TAKEN)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
