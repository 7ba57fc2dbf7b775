"""Tell a listening pyvzd that a command changed a CT.

Every command that changes a CT holds the CT's lock while it does; when it lets go, it
sends one datagram to the root's events socket, if a daemon listens there. The daemon
reads the CT's state and config again and publishes what changed, so a change made by
vzctl reaches API clients at once, and the daemon needs no state of its own. Nothing
waits and nothing fails here: with no daemon, the datagram goes nowhere.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from pyvz.paths import Paths

ACTOR_ENV = "PYVZ_ACTOR"  # set by pyvzd for the commands it runs: who asked, from where


def actor() -> str:
    """Who is changing things: the API's caller, else the local user and command."""
    given = os.environ.get(ACTOR_ENV)
    if given:
        return given
    tool = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else "pyvz"
    return f"{tool} (uid {os.getuid()}, pid {os.getpid()})"


def command_line() -> str:
    """The command as typed, without its first word's directory."""
    words = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else []
    return " ".join(words)[:300]


def poke(paths: Paths, ctid: int) -> None:
    """CT `ctid` may have changed; the daemon finds out what."""
    path = paths.events_socket
    try:
        if not path.is_socket():
            return
    except OSError:
        return
    payload = json.dumps(
        {"ctid": ctid, "time": time.time(), "actor": actor(), "command": command_line()}
    ).encode()
    try:
        with socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        ) as s:
            s.sendto(payload, os.fspath(path))
    except OSError:
        pass  # no daemon, or its queue is full: it reads every CT again when it can
