"""tests/parallel.py, what lets the suite run in several workers: claimed root tags, the
host-wide lock that `alone` tests take, and things built once for every worker."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from pyvz.paths import Paths
from tests import parallel
from tests.conftest import REPO

needs_lock_dir = pytest.mark.skipif(
    not os.access(parallel.LOCK_DIR, os.W_OK), reason=f"{parallel.LOCK_DIR} is not writable"
)


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running `script` with tests.parallel imported; a separate process,
    not a fork: the locks are per process, and forking a worker with threads may hang."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom tests import parallel\n" + script,
         *args],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def said(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The child's next line, or None if it says nothing within `timeout`."""
    assert proc.stdout is not None
    ready, _w, _x = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None


CLAIM = """
import fcntl, os
fd = os.open(parallel._TAGS, os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(parallel._tag(Path(sys.argv[1]))[-3:], 16))
except OSError:
    print("refused")
else:
    print("taken")
"""


@needs_lock_dir
def test_live_roots_never_share_a_tag_suffix() -> None:
    roots = [parallel.new_root_dir("pyvz-unit-") for _ in range(200)]
    try:
        assert len({Paths(r).tag[-3:] for r in roots}) == len(roots)  # what interface names carry
        assert all(parallel._tag(r) == Paths(r).tag for r in roots)
        assert all(r.stat().st_mode & 0o777 == 0o755 for r in roots)
        assert child(CLAIM, str(roots[0])).communicate(timeout=30)[0] == "refused\n"  # while it lives
        parallel.release_root_dir(roots[0])
        assert child(CLAIM, str(roots[0])).communicate(timeout=30)[0] == "taken\n"  # given back
    finally:
        for root in roots:
            parallel.release_root_dir(root)
            root.rmdir()


HOLD = """
with parallel.host_share(exclusive=sys.argv[1] == "alone", where=Path(sys.argv[2])):
    print("in", flush=True)
    sys.stdin.readline()
"""


def test_an_alone_test_waits_for_the_others_and_then_runs_by_itself(tmp_path: Path) -> None:
    # A lock directory of its own: the run's lock is held by this very test (shared).
    shared = child(HOLD, "shared", str(tmp_path))
    assert said(shared, 30) == "in"
    alone = child(HOLD, "alone", str(tmp_path))
    assert said(alone, 1) is None  # the shared holder is still in
    late = child(HOLD, "shared", str(tmp_path))
    assert said(late, 1) is None  # nor does a newcomer get ahead of the waiting alone holder
    shared.communicate("\n", timeout=30)
    assert said(alone, 30) == "in"
    assert said(late, 1) is None  # alone means alone
    alone.communicate("\n", timeout=30)
    assert said(late, 30) == "in"
    late.communicate("\n", timeout=30)
    assert [p.returncode for p in (shared, alone, late)] == [0, 0, 0]


BUILD = """
def build(target):
    with (target.parent / "builds").open("a") as out:
        out.write("built\\n")
    (target / "made").write_text("yes")
print((parallel.built_once(Path(sys.argv[1]), build) / "made").read_text())
"""


def test_built_once_builds_once_for_every_process(tmp_path: Path) -> None:
    workers = [child(BUILD, str(tmp_path / "thing")) for _ in range(4)]
    assert [w.communicate(timeout=60)[0] for w in workers] == ["yes\n"] * 4
    assert (tmp_path / "builds").read_text() == "built\n"


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
