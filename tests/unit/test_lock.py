"""pyvz.lock: OpenVZ's lock files (a link(2)ed "PID\\nSTATUS\\n" file), shared with vzctl."""

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


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not pyvz (stands in for vzctl holding its lock)."""
    proc = subprocess.Popen(["sleep", "60"])
    # Popen returns once the new program's memory is in place, a moment before execve has
    # written its arguments there: until then /proc/PID/cmdline reads empty.
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def refused(path: Path, what: str = "CT 101", wait: float = 0.0) -> VzError:
    """The error a second Lock on `path` gets."""
    with pytest.raises(VzError) as caught, Lock(path, what, wait):
        pytest.fail("got a lock that is held")
    return caught.value


def test_the_lock_file_is_openvzs_and_goes_with_the_lock(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"):
        lines = lock_path.read_text().splitlines()
        assert lines[0] == str(os.getpid())  # vzctl reads the PID from the first line
        assert lines[1].startswith("pyvz ")
    assert not lock_path.exists()  # no empty lock file is left behind
    assert os.listdir(lock_path.parent) == []  # nor a temporary one


def test_second_lock_fails_with_locked(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"):
        err = refused(lock_path)
    assert err.code == ExitCode.LOCKED
    assert "CT 101 is locked" in err.message
    assert f"pid {os.getpid()}" in err.message  # says who holds it


def test_lock_released_when_body_raises(lock_path: Path) -> None:
    with pytest.raises(RuntimeError), Lock(lock_path, "CT 101"):
        raise RuntimeError("boom")
    assert not lock_path.exists()
    with Lock(lock_path, "CT 101"):
        pass


def test_locks_on_different_paths_are_independent(tmp_path: Path) -> None:
    with Lock(tmp_path / "101.lck", "CT 101"), Lock(tmp_path / "102.lck", "CT 102") as other:
        assert other.mine is not None


def test_lock_held_by_another_process(lock_path: Path, holder: subprocess.Popen[str]) -> None:
    err = refused(lock_path)
    assert err.code == ExitCode.LOCKED
    assert f"pid {holder.pid}" in err.message and "python" in err.message  # and its command


def test_a_vzctl_lock_excludes_pyvz(lock_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    lock_path.parent.mkdir()
    lock_path.write_text(f"{sleeper.pid}\n\n")  # as vzctl 4.11 writes it (an empty status)
    err = refused(lock_path)
    assert f"pid {sleeper.pid} (sleep 60)" in err.message
    assert lock_path.read_text() == f"{sleeper.pid}\n\n"  # left as it was


def test_lock_of_a_killed_process_is_taken_over(lock_path: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert lock_path.exists()  # kill -9 leaves the file: stale now
    with Lock(lock_path, "CT 101"):
        assert lock_path.read_text().splitlines()[0] == str(os.getpid())
    assert not lock_path.exists()


def test_lock_of_a_killed_process_not_yet_reaped_is_taken_over(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    """Killed, but its parent has not waited for it (a zombie, as a receiver is until its
    sshd notices): a zombie holds nothing."""
    os.kill(holder.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{holder.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the holder did not die"
        time.sleep(0.01)
    with Lock(lock_path, "CT 101"):
        assert lock_path.read_text().splitlines()[0] == str(os.getpid())


@pytest.mark.parametrize("text", ["", "garbage\n", "0\n\n", "999999999\n\n"])
def test_stale_or_broken_lock_files_are_taken_over(lock_path: Path, text: str) -> None:
    lock_path.parent.mkdir()
    lock_path.write_text(text)  # an old pyvz's empty file, junk, no process, a dead PID
    with Lock(lock_path, "CT 101"):
        assert lock_path.read_text().splitlines()[0] == str(os.getpid())


def test_a_reused_pid_does_not_keep_a_pyvz_lock(lock_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A pyvz holder killed with -9 whose PID the kernel gave to another process since."""
    lock_path.parent.mkdir()
    lock_path.write_text(f"{sleeper.pid}\npyvz 1 vzctl start 101\n")  # started at tick 1: not it
    with Lock(lock_path, "CT 101"):
        assert lock_path.read_text().splitlines()[0] == str(os.getpid())


def test_temporaries_of_killed_takers_are_swept(lock_path: Path) -> None:
    lock_path.parent.mkdir()
    leftover = lock_path.with_name("101.lckab12cd34")
    leftover.write_text("999999999\npyvz 5 vzctl\n")
    os.utime(leftover, (time.time() - 120, time.time() - 120))  # a taker killed 2 minutes ago
    young = lock_path.with_name("101.lckyoung000")
    young.write_text("")  # a taker between creating its file and writing it: stays
    other = lock_path.with_name("102.lck")
    other.write_text("999999999\n\n")  # another CT's: not this lock's business
    with Lock(lock_path, "CT 101"):
        pass
    assert sorted(os.listdir(lock_path.parent)) == ["101.lckyoung000", "102.lck"]


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
            assert second.mine is not None
            assert first.mine is None
    finally:
        timer.cancel()
        timer.join()


def test_many_takers_at_once_hold_it_one_at_a_time(lock_path: Path) -> None:
    inside = []
    overlaps = []

    def take() -> None:
        with Lock(lock_path, "CT 101", wait=20.0):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(len(inside))
            time.sleep(0.01)
            inside.pop()

    workers = [threading.Thread(target=take) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert overlaps == []
    assert not lock_path.exists()


def test_nolock_never_blocks(lock_path: Path) -> None:
    with Lock(lock_path, "CT 101"), NoLock() as nolock:
        assert isinstance(nolock, NoLock)
