"""pyvz.run.pipeline: `a | b` from argument lists, with the failing stage named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.run import pipeline


def _out(tmp_path: Path) -> tuple[int, Path]:
    path = tmp_path / "out"
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), path


def test_stages_are_connected_and_write_the_file(tmp_path: Path) -> None:
    fd, path = _out(tmp_path)
    pipeline([["seq", "1", "100000"], ["gzip", "-1"], ["gzip", "-dc"]], stdout=fd)
    os.close(fd)
    assert path.read_text().splitlines()[-1] == "100000"


@pytest.mark.parametrize("stages", [1, 2])
def test_relay_sees_every_byte(tmp_path: Path, stages: int) -> None:
    seen: list[int] = []
    fd, path = _out(tmp_path)
    argvs = [["seq", "1", "50000"], ["cat"]][:stages]
    pipeline(argvs, stdout=fd, relay=seen.append)
    os.close(fd)
    assert sum(seen) == path.stat().st_size == len("".join(f"{i}\n" for i in range(1, 50001)))


def test_the_cause_is_reported_not_the_stage_that_lost_its_reader() -> None:
    argvs = [["seq", "1", "10000000"], ["sh", "-c", "head -c 10 >/dev/null; echo disk full >&2; exit 3"]]
    with pytest.raises(VzError) as caught:
        pipeline(argvs, error_code=ExitCode.CHKPNT_ERROR)
    assert caught.value.code == ExitCode.CHKPNT_ERROR
    assert "exit code 3" in caught.value.message and "disk full" in caught.value.message
    assert "seq" not in caught.value.message and "\n" not in caught.value.message


def test_a_failing_first_stage_is_reported() -> None:
    with pytest.raises(VzError) as caught:
        pipeline([["sh", "-c", "echo unreadable >&2; exit 2"], ["cat"]])
    assert "unreadable" in caught.value.message and "exit code 2" in caught.value.message


def test_missing_command_is_not_installed() -> None:
    with pytest.raises(VzError) as caught:
        pipeline([["no-such-command-pyvz"]])
    assert "no-such-command-pyvz" in caught.value.message
