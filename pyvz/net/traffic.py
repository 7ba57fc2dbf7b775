"""What a CT's network interfaces have carried: the kernel's counters in its own network
namespace, read from /proc/PID/net/dev of any of its processes (no netlink, no setns)."""

from __future__ import annotations

import os
from typing import NamedTuple

from pyvz.kernelfiles import read_small


class Traffic(NamedTuple):
    interface: str
    receive_bytes: int
    receive_packets: int
    transmit_bytes: int
    transmit_packets: int


def parse_net_dev(text: str) -> list[Traffic]:
    """/proc/net/dev: two header lines, then `name: rx bytes packets errs drop fifo frame
    compressed multicast tx bytes packets ...` per interface."""
    found = []
    for line in text.splitlines()[2:]:
        name, colon, rest = line.partition(":")
        fields = rest.split()
        if not colon or len(fields) < 10:
            continue
        try:
            found.append(
                Traffic(name.strip(), int(fields[0]), int(fields[1]), int(fields[8]), int(fields[9]))
            )
        except ValueError:
            continue
    return found


def ct_traffic(pid: int) -> list[Traffic] | None:
    """Per interface of the network namespace `pid` is in; None when that is not a namespace
    of its own (it is the reader's: a CT that shares the host's network has no counters of
    its own) or the process is gone."""
    try:
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return None
        return parse_net_dev(read_small(f"/proc/{pid}/net/dev"))
    except OSError:
        return None
