"""The migration protocol's framing and the restricted key lines, without hosts."""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.migrate import keys
from pyvz.migrate.wire import CHUNK, MAX_JSON, Lost, Wire
from pyvz.paths import Paths


def pair() -> tuple[Wire, Wire]:
    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    return Wire(a_read, a_write, "b"), Wire(b_read, b_write, "a")


def test_messages_and_data_streams_round_trip() -> None:
    a, b = pair()
    a.send({"op": "hello", "ctid": 101})
    a.send_data(b"x" * 10)
    a.send_data(b"y" * 5)
    a.end_data()
    assert b.receive() == {"op": "hello", "ctid": 101}
    assert b"".join(b.data()) == b"x" * 10 + b"y" * 5
    assert a.sent == 15


def test_a_refusal_carries_its_code_and_kind() -> None:
    a, b = pair()
    b.refuse(VzError(MigrateExit.EXISTS, "CT 101 already exists on this host"))
    with pytest.raises(VzError) as caught:
        a.answer()
    assert caught.value.code == MigrateExit.EXISTS
    assert "CT 101 already exists" in caught.value.message
    b.refuse(VzError(ExitCode.INVALID_CONFIG, "bad"))
    with pytest.raises(VzError) as caught:
        a.answer()
    assert caught.value.code == ExitCode.INVALID_CONFIG


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">cI", b"J", MAX_JSON + 1),  # too big a message
        struct.pack(">cI", b"D", CHUNK + 1),  # too big a chunk
        struct.pack(">cI", b"X", 0),  # unknown frame type
        struct.pack(">cI", b"J", 4) + b"[1] ",  # JSON, but not an object with an op
        struct.pack(">cI", b"J", 3) + b"{x:",  # not JSON
        struct.pack(">cI", b"E", 1),  # an end frame with a payload
    ],
)
def test_a_peer_that_breaks_the_framing_is_dropped(frame: bytes) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, frame)
    os.close(write_end)
    wire = Wire(read_end, os.open(os.devnull, os.O_WRONLY), "peer")
    with pytest.raises(Lost):
        wire.receive()


def test_a_closed_connection_is_lost_not_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    wire = Wire(read_end, os.open(os.devnull, os.O_WRONLY), "peer")
    with pytest.raises(Lost) as caught:
        wire.receive()
    assert caught.value.code == MigrateExit.CONNECT


def _key(kind: str = "ssh-ed25519") -> str:
    name = kind.encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + os.urandom(32)
    return f"{kind} {base64.b64encode(blob).decode()} someone@host"


def test_authorize_writes_a_restricted_forced_command_line(tmp_path: Path) -> None:
    target = tmp_path / "ssh/authorized_keys"
    target.parent.mkdir()
    target.write_text("ssh-ed25519 AAAAother admin@laptop\n")
    line = _key()
    fingerprint = keys.authorize(Paths(tmp_path / "root"), line, target)
    lines = target.read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAAother admin@laptop"  # other keys are kept
    entry = lines[1]
    assert entry.startswith('restrict,command="env PYVZ_ROOT=')
    assert f"--receive --peer {fingerprint}" in entry
    assert line.split()[1] in entry.split()
    assert (target.stat().st_mode & 0o777) == 0o600
    keys.authorize(Paths(tmp_path / "root"), line, target)  # again: replaced, not doubled
    assert len(target.read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ssh-ed25519 not-base64!!",
        _key("ssh-rsa").replace("ssh-rsa", "ssh-ed25519", 1),  # data of another type
        'command="sh" ' + _key(),  # options are ours to set
    ],
    # Fixed ids: the keys are random, and xdist's workers must all collect the same names.
    ids=["empty", "type-only", "short-dss", "not-base64", "data-of-another-type", "options"],
)
def test_a_bad_key_line_is_refused(tmp_path: Path, line: str) -> None:
    target = tmp_path / "authorized_keys"
    with pytest.raises(VzError) as caught:
        keys.authorize(Paths(tmp_path), line, target)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert not target.exists()


def test_fingerprints_are_checked() -> None:
    good = keys.parse_public(_key())[2]
    assert keys.check_fingerprint(good) == good
    for bad in ("SHA256:x", "MD5:aa", good + "; rm -rf /", ""):
        with pytest.raises(VzError):
            keys.check_fingerprint(bad)
