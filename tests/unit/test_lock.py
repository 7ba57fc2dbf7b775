"""pyvz.lock: per-CT flock locks that die with their holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.lock import Lock, NoLock

HOLDER = """\
import sys, time
from pathlib import Path
from pyvz.lock import Lock
lock = Lock(Path(sys.argv[1]), "CT 101").__enter__()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "lock" / "101.lck"


@pytest.fixture
def holder(lock_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock, killed at the end whatever happens."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def refused(path: Path, what: str = "CT 101", wait: float = 0.0) -> VzError:
    """The error a second Lock on `path` gets."""
    with pytest.raises(VzError) as caught, Lock(path, what, wait):
        pytest.fail("got a lock that is held")
    return caught.value


def test_second_lock_fails_with_locked(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"):
        err = refused(lock_path)
    assert err.code == ExitCode.LOCKED
    assert "CT 101 is locked" in err.message
    assert f"pid {os.getpid()}" in err.message  # says who holds it


def test_lock_is_free_again_after_exit(lock_path: Path) -> None:
    first = Lock(lock_path, "CT 101")
    with first:
        assert first.fd is not None
    assert first.fd is None
    with Lock(lock_path, "CT 101") as second:
        assert second.fd is not None
    assert lock_path.read_text() == ""  # no stale holder text left


def test_lock_released_when_body_raises(lock_path: Path) -> None:
    with pytest.raises(RuntimeError), Lock(lock_path, "CT 101"):
        raise RuntimeError("boom")
    with Lock(lock_path, "CT 101"):
        pass
    assert lock_path.read_text() == ""


def test_lock_file_names_the_holder(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"):
        assert lock_path.read_text().startswith(f"pid {os.getpid()}:")
    assert lock_path.stat().st_mode & 0o777 == 0o600


def test_locks_on_different_paths_are_independent(tmp_path: Path) -> None:
    with Lock(tmp_path / "101.lck", "CT 101"), Lock(tmp_path / "102.lck", "CT 102") as other:
        assert other.fd is not None


def test_lock_held_by_another_process(lock_path: Path, holder: subprocess.Popen[str]) -> None:
    err = refused(lock_path)
    assert err.code == ExitCode.LOCKED
    assert f"pid {holder.pid}" in err.message


def test_lock_of_a_killed_process_is_released(lock_path: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    with Lock(lock_path, "CT 101") as lock:
        assert lock.fd is not None
        assert lock_path.read_text().startswith(f"pid {os.getpid()}:")


def test_wait_gives_up_after_the_deadline(lock_path: Path) -> None:
    with Lock(lock_path, "the pyvz root"):
        started = time.monotonic()
        err = refused(lock_path, "the pyvz root", wait=0.3)
        elapsed = time.monotonic() - started
    assert err.code == ExitCode.LOCKED
    assert "the pyvz root is locked" in err.message
    assert 0.3 <= elapsed < 3


def test_wait_gets_the_lock_when_released(lock_path: Path) -> None:
    first = Lock(lock_path, "the pyvz root").__enter__()
    timer = threading.Timer(0.2, first.__exit__, (None, None, None))
    timer.start()
    try:
        with Lock(lock_path, "the pyvz root", wait=5.0) as second:
            assert second.fd is not None
            assert first.fd is None
    finally:
        timer.cancel()
        timer.join()


def test_nolock_never_blocks(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"), NoLock() as nolock:
        assert isinstance(nolock, NoLock)
