"""tests/parallel.py, what lets the suite run in several workers: claimed root tags, the
host-wide lock that `alone` tests take, and things built once for every worker."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from pyvz.paths import Paths
from tests import parallel

needs_lock_dir = pytest.mark.skipif(
    not os.access(parallel.LOCK_DIR, os.W_OK), reason=f"{parallel.LOCK_DIR} is not writable"
)


def _claim_in_child(root: str, answer: multiprocessing.Queue[str]) -> None:
    """In another process: try to take the tag suffix `root` has (parallel's own lock)."""
    import fcntl

    fd = os.open(parallel._TAGS, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(parallel._tag(Path(root))[-3:], 16))
    except OSError:
        answer.put("refused")
    else:
        answer.put("taken")


@needs_lock_dir
def test_live_roots_never_share_a_tag_suffix() -> None:
    roots = [parallel.new_root_dir("pyvz-unit-") for _ in range(200)]
    try:
        assert len({Paths(r).tag[-3:] for r in roots}) == len(roots)  # what interface names carry
        assert all(parallel._tag(r) == Paths(r).tag for r in roots)
        assert all(r.stat().st_mode & 0o777 == 0o755 for r in roots)
        answer: multiprocessing.Queue[str] = multiprocessing.Queue()
        child = multiprocessing.Process(target=_claim_in_child, args=(str(roots[0]), answer))
        child.start()
        child.join(10)
        assert answer.get(timeout=10) == "refused"  # held for as long as the root lives
        parallel.release_root_dir(roots[0])
        child = multiprocessing.Process(target=_claim_in_child, args=(str(roots[0]), answer))
        child.start()
        child.join(10)
        assert answer.get(timeout=10) == "taken"  # and free again once given back
    finally:
        for root in roots:
            parallel.release_root_dir(root)
            root.rmdir()


def _hold(exclusive: bool, log: Path, started: multiprocessing.Event, go: multiprocessing.Event) -> None:
    with parallel.host_share(exclusive=exclusive, where=log.parent):  # not the run's own lock
        with log.open("a") as out:
            out.write(f"{'alone' if exclusive else 'shared'} in\n")
        started.set()
        go.wait(10)
        with log.open("a") as out:
            out.write(f"{'alone' if exclusive else 'shared'} out\n")


def test_an_alone_test_waits_for_the_others_and_then_runs_by_itself(tmp_path: Path) -> None:
    log = tmp_path / "log"
    events = [multiprocessing.Event() for _ in range(6)]
    shared = multiprocessing.Process(target=_hold, args=(False, log, events[0], events[1]))
    shared.start()
    assert events[0].wait(10)
    alone = multiprocessing.Process(target=_hold, args=(True, log, events[2], events[3]))
    alone.start()
    assert not events[2].wait(0.5)  # the shared holder is still in
    late = multiprocessing.Process(target=_hold, args=(False, log, events[4], events[5]))
    late.start()
    assert not events[4].wait(0.5)  # nor does a newcomer get ahead of the waiting alone test
    events[1].set()
    assert events[2].wait(10)
    assert not events[4].wait(0.5)  # alone means alone
    events[3].set()
    assert events[4].wait(10)
    events[5].set()
    for process in (shared, alone, late):
        process.join(10)
    assert log.read_text().splitlines() == [
        "shared in",
        "shared out",
        "alone in",
        "alone out",
        "shared in",
        "shared out",
    ]


def _build_once(directory: str) -> None:
    def build(target: Path) -> None:
        with (Path(directory).parent / "builds").open("a") as out:
            out.write(f"{os.getpid()}\n")
        (target / "made").write_text("yes\n")

    made = parallel.built_once(Path(directory), build)
    assert (made / "made").read_text() == "yes\n"


def test_built_once_builds_once_for_every_process(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_build_once, args=(str(tmp_path / "thing"),)) for _ in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(30)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    assert len((tmp_path / "builds").read_text().splitlines()) == 1


def test_a_failed_build_fails_the_others_with_its_message(tmp_path: Path) -> None:
    def broken(target: Path) -> None:
        raise RuntimeError("mirror unreachable")

    with pytest.raises(RuntimeError, match="mirror unreachable"):
        parallel.built_once(tmp_path / "thing", broken)
    with pytest.raises(pytest.fail.Exception, match="mirror unreachable"):
        parallel.built_once(tmp_path / "thing", lambda target: None)


def test_unique_names_differ_and_name_this_process() -> None:
    names = {parallel.unique_name("pyvz-unit") for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith(f"pyvz-unit-{os.getpid()}-") for name in names)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
