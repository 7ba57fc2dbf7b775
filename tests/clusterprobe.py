"""Run inside a test host (``python -m tests.clusterprobe ...``, from the repo): a reservation
through pyvz's etcd client, with this host's cluster.conf, as create will make one.

  reserve KEY [KEY...] [--at UNIX_TIME]   exit 0: all reserved; 172: one is taken (printed);
                                          any other VzError: its code, its one line on stderr
  lead                                    make this host's member the etcd leader (etcd's
                                          MoveLeader, asked of the leader); exit 0 once it is
"""

from __future__ import annotations

import sys
import time

from pyvz.cluster.etcd import Etcd, owner_value, reserve
from pyvz.cluster.settings import Settings, load
from pyvz.errors import ClusterExit, VzError
from pyvz.paths import Paths


def main(argv: list[str]) -> int:
    command, *rest = argv
    start = None
    if "--at" in rest:
        at = rest.index("--at")
        start = float(rest[at + 1])
        del rest[at : at + 2]
    settings = load(Paths.from_env())
    if command == "lead" and not rest:
        try:
            return lead(settings)
        except VzError as err:
            print(err.message, file=sys.stderr)
            return int(err.code)
    if command != "reserve" or not rest:
        print(__doc__, file=sys.stderr)
        return 2
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


def lead(settings: Settings) -> int:
    with settings.client() as client:
        own = client.status(settings.client_url)
        deadline = time.monotonic() + 30
        while own.leader != own.member_id:
            if time.monotonic() > deadline:
                print(f"{settings.name}'s member did not become the leader", file=sys.stderr)
                return 1
            leader = next((m for m in client.members() if m.id == own.leader), None)
            if leader is not None and leader.client_urls:
                with Etcd(leader.client_urls, settings.tls) as there:
                    try:
                        there.call("/v3/maintenance/transfer-leadership", {"targetID": str(own.member_id)})
                    except VzError:
                        pass  # an election meanwhile: ask the new leader
            time.sleep(0.2)
            own = client.status(settings.client_url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
