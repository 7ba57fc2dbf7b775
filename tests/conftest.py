"""Shared test helpers: a throwaway PYVZ_ROOT and a way to run the real commands.

Parallel runs: `make test` runs the suite in several pytest-xdist workers at once, and
other test runs may share the machine. A test is parallel-safe by default when it
- makes its roots with the `vzroot` fixture or `throwaway_root()` (never a bare mkdtemp +
  init_root): their tags, and so their cgroups, nft tables and host interface names, never
  clash with another live root's;
- names anything machine-wide (a network namespace, a file in /tmp) with
  `tests.parallel.unique_name(prefix)`; interfaces it makes live in a namespace of its own;
- uses port 0 (the kernel picks) rather than a fixed port in the host's namespace;
- builds expensive things shared by many tests in a session fixture through
  `tests.parallel.built_once(shared_dir(tmp_path_factory) / NAME, build)`, so one worker
  builds and the others wait for it (see `debian_template`);
- is marked `@pytest.mark.alone` if it restarts something every CT uses (the host's
  LXCFS) or measures a rate (CPU share, I/O throughput) that other tests' load would skew:
  it then runs with no other test on the machine. Every other test holds the same lock
  shared (an autouse fixture); never take `host_share()` inside a test, it would deadlock
  against a waiting `alone` test. `make test` runs the `alone` tests after the parallel
  run, so that they need not wait for the other workers' tests to end.
Timings are never asserted, so no test needs to be alone merely to be fast enough; a bound
on a duration says what the behaviour needs (e.g. less than the limited rate would take),
with room for a loaded machine.
At the end of the run, everything the run's roots and names still hold on the host
(mounts, loop devices, cgroups, nft tables, namespaces, processes) fails the run, and is
removed (tests/parallel.py: leftovers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import parallel

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Done:
    code: int
    out: str
    err: str


@dataclass
class VzRoot:
    """A temporary PYVZ_ROOT with its own pool; `vz` runs vzctl/vzlist in it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYVZ_ROOT": str(self.root)}

    def run(self, tool: str, *args: str, input: str | None = None, timeout: float = 120) -> Done:
        argv = [sys.executable, "-m", f"pyvz.cli.{tool}", *args]
        proc = subprocess.run(
            argv, env=self.env, input=input, capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def vzctl(self, *args: str, **kwargs: object) -> Done:
        return self.run("vzctl", *args, **kwargs)  # type: ignore[arg-type]

    def vzlist(self, *args: str) -> Done:
        return self.run("vzlist", *args)

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self.vzctl(*args, input=input)
        assert done.code == 0, f"vzctl {' '.join(args)} -> {done.code}: {done.err}{done.out}"
        return done.out

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc/vz/conf"

    @property
    def private_dir(self) -> Path:
        return self.root / "var/lib/vz/private"

    @property
    def lxc_dir(self) -> Path:
        return self.root / "var/lib/vz/lxc"


def _cleanup_root(root: Path) -> None:
    """Stop and remove everything the root holds, even after a failed test."""
    sys.path.insert(0, str(REPO))
    from pyvz.errors import VzError
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import detect
    from pyvz.runtime.lxc import LxcRuntime
    from pyvz.storage import pool
    from pyvz.storage.mounts import mount_table

    paths = Paths(root)
    lxc_dir = paths.lxc_dir
    runtime = LxcRuntime(paths)
    if lxc_dir.is_dir():
        for entry in lxc_dir.iterdir():
            if entry.name.isdigit():
                try:  # the runtime reaches a CT started from another network namespace too
                    runtime.stop(int(entry.name), 0, kill=True)
                except VzError:
                    pass
    # Whatever still runs in this root's cgroups (a CT whose monitor died) is killed; a
    # frozen task would not die, so everything is thawed first.
    if (detect().freezer(paths.tag)[0]).exists():
        detect().thaw_below(paths.tag)
    for directory in detect().dirs(paths.tag):
        for top, _dirs, _files in os.walk(directory):
            procs = Path(top) / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    real = os.path.realpath(root)
    for target in sorted(
        {m.target for m in mount_table() if m.target.startswith(real + "/")}, key=len, reverse=True
    ):
        if target != os.path.realpath(paths.lib_vz / "private"):
            subprocess.run(["umount", "-l", target], capture_output=True)
    for attempt in range(20):  # a process that just died may hold the pool a moment longer
        try:
            pool.release(paths)
            break
        except VzError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    tree = detect()
    for directory in tree.dirs(paths.tag):
        for sub in sorted(
            (Path(t) for t, _d, _f in os.walk(directory)), key=lambda p: len(p.parts), reverse=True
        ):
            try:
                sub.rmdir()
            except OSError:
                pass
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def throwaway_root(prefix: str = "pyvz-test-", pool_size: str | None = "4G") -> Iterator[VzRoot]:
    """An initialized root in /tmp, with a tag no other live root has; cleaned up after."""
    root = parallel.new_root_dir(prefix)
    try:
        sys.path.insert(0, str(REPO))
        from pyvz.paths import Paths
        from pyvz.rootinit import init_root

        init_root(Paths(root))
        if pool_size is not None:
            conf = root / "etc/vz/vz.conf"
            conf.write_text(conf.read_text().replace("POOL_SIZE=auto", f'POOL_SIZE="{pool_size}"'))
        yield VzRoot(root)
    finally:
        _cleanup_root(root)
        parallel.release_root_dir(root)


@pytest.fixture
def vzroot() -> Iterator[VzRoot]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with throwaway_root() as env_root:
        os.environ["PYVZ_ROOT"] = str(env_root.root)
        try:
            yield env_root
        finally:
            os.environ.pop("PYVZ_ROOT", None)


DEBIAN_RECIPE = "debian-12-x86_64-minimal"


@pytest.fixture(scope="session")
def debian_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian 12 minimal template, built once per run (≈ 20 s) for every worker, in a
    root of its own that is gone again once the files are copied out. Gives a directory
    holding what the template cache held: archive, manifest, checksums."""
    if os.geteuid() != 0:
        pytest.skip("needs root")

    def build(cache: Path) -> None:
        with parallel.host_share(), throwaway_root("pyvz-debian-build-", pool_size=None) as env:
            done = env.run("vztmpl", "build", DEBIAN_RECIPE, timeout=900)
            assert done.code == 0, done.err + done.out
            shutil.copytree(env.root / "var/lib/vz/template/cache", cache, dirs_exist_ok=True)

    return parallel.built_once(parallel.shared_dir(tmp_path_factory) / "debian-template", build)


# ---- parallel runs (tests/parallel.py) -------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Compile pyvz once for the run: the tests start `python -m pyvz.cli.…` thousands of
    times, and where PYTHONDONTWRITEBYTECODE is set, each start would compile every module
    it imports again (≈ 0.1 s of CPU each time)."""
    if parallel.worker() is None:
        import compileall

        compileall.compile_dir(REPO / "pyvz", quiet=2)


@pytest.fixture(scope="session", autouse=True)
def _this_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    """Roots and names made from here on are recorded for the end-of-run check. The first
    worker builds the Debian template first thing, if any test of the run needs it, while
    the others run tests: built on first use, every worker that needs it would wait."""
    parallel.set_registry(parallel.shared_dir(tmp_path_factory))
    items = request.session.items
    if parallel.worker() == "gw0" and any("debian_template" in getattr(i, "fixturenames", ()) for i in items):
        try:
            request.getfixturevalue("debian_template")
        except (Exception, pytest.fail.Exception, pytest.skip.Exception):
            pass  # the tests that use it fail (or skip) with the reason; the others run


@pytest.fixture(autouse=True)
def _share_the_host(request: pytest.FixtureRequest) -> Iterator[None]:
    with parallel.host_share(exclusive=request.node.get_closest_marker("alone") is not None):
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Where the run ends (the xdist controller, once every worker is done, or the one
    process): nothing that this run's tests made may be left on the host."""
    if parallel.worker() is not None:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:  # no test ran, nothing was made
        return
    left = parallel.leftovers(factory.getbasetemp())
    if not left.said:
        return
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", f"the tests left {len(left.said)} things on the host (now removed):", *left.said]
    if report is not None:
        report.write_line("\n".join(lines), red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    parallel.remove(left, _cleanup_root)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
