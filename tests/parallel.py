"""What lets tests run in parallel (pytest-xdist workers, or two test runs on one machine).

- ``new_root_dir()``: a directory for a throwaway PYVZ_ROOT whose tag cannot clash with
  that of any other live test root on the machine. Host interface names carry only the
  tag's last 3 hex digits (15 characters is all a name may have), so two roots picked at
  random would clash once in 4096 pairs; a byte-range lock per suffix makes it never.
- ``unique_name(prefix)``: a machine-wide unique name (network namespaces, scratch files),
  with this process's pid in it, so the end-of-run check can find what a worker left.
- ``host_share(exclusive)``: a fair reader-writer lock over the whole machine. Every test
  holds it shared; a test marked ``alone`` holds it exclusively, so no other test runs
  meanwhile (it restarts the host's LXCFS, or it measures a rate that other load skews).
- ``shared_dir(factory)``: one directory for the whole run, seen by every worker; session
  fixtures that build something once keep it there, under ``built_once()``.
- ``leftovers()``: what the roots and names registered by this run still hold on the host
  (mounts, loop devices, cgroups, nft tables, LXC monitors, network namespaces); the
  controller checks it once every worker has finished.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

LOCK_DIR = Path("/run/lock")
_TAGS = LOCK_DIR / "pyvz-test-tags.lock"  # one byte per 3-hex tag suffix (4096 bytes)
_GATE = "pyvz-test-alone.gate"  # in LOCK_DIR, machine-wide: LXCFS and the CPUs are
_ALONE = "pyvz-test-alone.lock"
_REGISTRY = "pyvz-registry"  # in the run's shared directory: the roots and names of this run

_claimed: dict[int, Path] = {}  # tag suffix -> root, claimed by this process
_tags_fd: int | None = None  # kept open: closing any fd of the file drops its POSIX locks
_names = itertools.count(1)
_registry: Path | None = None


def worker() -> str | None:
    """The xdist worker's id (gw0, gw1, ...), or None in a run without workers."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    """The run's directory that every worker sees: xdist puts each worker's basetemp in the
    controller's (…/pytest-N/popen-gw0); without workers, the run's own basetemp."""
    base = factory.getbasetemp()
    return base.parent if worker() else base


def set_registry(directory: Path) -> None:
    global _registry
    _registry = directory / _REGISTRY
    _registry.mkdir(exist_ok=True)


def _register(kind: str, value: str) -> None:
    if _registry is not None:
        # O_APPEND: lines from several workers never interleave.
        with open(_registry / kind, "a") as out:
            out.write(value + "\n")


def _tag(root: Path) -> str:
    """pyvz.paths.Paths(root).tag, without importing pyvz here."""
    return f"pyvz-{zlib.crc32(os.fsencode(root)):08x}"


def new_root_dir(prefix: str = "pyvz-test-") -> Path:
    """A fresh 0755 directory in /tmp for a PYVZ_ROOT; give it back with release_root_dir()."""
    global _tags_fd
    if _tags_fd is None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        _tags_fd = os.open(_TAGS, os.O_RDWR | os.O_CREAT, 0o644)
    for _attempt in range(256):
        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        suffix = int(_tag(root)[-3:], 16)
        if suffix not in _claimed:
            try:
                fcntl.lockf(_tags_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, suffix)
            except OSError:
                pass  # another process's live root has it
            else:
                _claimed[suffix] = root
                root.chmod(0o755)
                _register("roots", str(root))
                return root
        root.rmdir()
    raise RuntimeError("no free test root tag: 256 tries clashed with live roots")


def release_root_dir(root: Path) -> None:
    """After the root is cleaned up: its tag suffix may be used again."""
    suffix = int(_tag(root)[-3:], 16)
    if _claimed.get(suffix) == root and _tags_fd is not None:
        del _claimed[suffix]
        fcntl.lockf(_tags_fd, fcntl.LOCK_UN, 1, suffix)


def unique_name(prefix: str) -> str:
    """PREFIX-PID-N: unique on the machine while this process lives. Not for interface
    names (15 characters): those live in a namespace of the test's own, or come from a tag."""
    name = f"{prefix}-{os.getpid()}-{next(_names)}"
    _register("names", name)
    return name


@contextmanager
def host_share(exclusive: bool = False, where: Path = LOCK_DIR) -> Iterator[None]:
    """Shared: other shared holders may run. Exclusive: nobody else. Fair: a waiting
    exclusive holder takes the gate, so no new shared holder slips in ahead of it."""
    where.mkdir(parents=True, exist_ok=True)
    with open(where / _GATE, "a") as gate, open(where / _ALONE, "a") as lock:
        if exclusive:
            fcntl.flock(gate, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # closing the files drops the locks


def built_once(directory: Path, build: Callable[[Path], None]) -> Path:
    """`directory`, filled by `build(directory)` by whichever worker comes first; the
    others wait for it. A failed build fails them too, with its message, instead of being
    tried again by each."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    done = directory.with_name(directory.name + ".done")
    failed = directory.with_name(directory.name + ".failed")
    with open(directory.with_name(directory.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists() and not failed.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            try:
                build(directory)
            except BaseException as err:
                failed.write_text(f"{type(err).__name__}: {err}")
                raise
            done.touch()
    if failed.exists():
        pytest.fail(f"building {directory.name} failed in another worker: {failed.read_text()}")
    return directory


# ---- the end-of-run check ------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _out(*argv: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout


class Leftovers(NamedTuple):
    said: list[str]  # one line for each thing left
    roots: list[Path]  # roots that still hold something
    netns: list[str]
    files: list[Path]
    pids: list[int]


def leftovers(directory: Path) -> Leftovers:
    """What the roots and names registered in the run's `directory` still hold on the host."""
    registry = directory / _REGISTRY
    roots = _lines(registry / "roots")
    names = _lines(registry / "names")
    left = Leftovers([], [], [], [], [])
    if not roots and not names:
        return left
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    loops = _out("losetup", "-n", "-O", "NAME,BACK-FILE").splitlines()
    tables = _out("nft", "list", "tables").splitlines()
    hierarchies = [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()] + [Path("/sys/fs/cgroup")]
    for root in roots:
        tag = _tag(Path(root))
        said = [f"root directory {root}"] if os.path.lexists(root) else []
        said += [f"mount {m}" for m in mounts if m == root or m.startswith(root + "/")]
        said += [f"loop device {line.strip()}" for line in loops if f" {root}/" in line]
        said += [f"nft {line.strip()}" for line in tables if f" {tag.replace('-', '_')}_" in line]
        said += [f"cgroup {h / tag}" for h in hierarchies if (h / tag).is_dir()]
        if said:
            left.said.extend(said)
            left.roots.append(Path(root))
    for line in _out("ip", "netns", "list").splitlines():
        netns = line.split()[0] if line.strip() else ""
        if any(netns == n or netns.startswith(n + "-") for n in names):
            left.said.append(f"network namespace {netns}")
            left.netns.append(netns)
    for entry in Path("/tmp").iterdir():
        if any(entry.name.startswith(n + "-") for n in names):
            left.said.append(f"file {entry}")
            left.files.append(entry)
    patterns = [*(re.escape(r + "/") for r in roots), *(re.escape(n) + r"(?!\d)" for n in names)]
    mine = re.compile("|".join(patterns))
    for line in _out("ps", "-eo", "pid=,args=").splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit() and int(pid) != os.getpid() and mine.search(args):
            left.said.append(f"process {pid} {args.strip()}")
            left.pids.append(int(pid))
    return left


def remove(left: Leftovers, cleanup_root: Callable[[Path], None]) -> None:
    """Take away what leftovers() found, as far as it goes."""
    for root in left.roots:
        try:
            cleanup_root(root)
        except Exception as err:  # the next one still gets its turn
            print(f"cleaning up {root}: {err}")
    for netns in left.netns:
        for member in _out("ip", "netns", "pids", netns).split():
            _kill(int(member))
        _out("ip", "netns", "delete", netns)
    for stray in left.pids:
        _kill(stray)
    for entry in left.files:
        _out("rm", "-rf", "--one-file-system", str(entry))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
