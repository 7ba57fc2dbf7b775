"""Shared test helpers: a throwaway PYVZ_ROOT and a way to run the real commands."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture
def vzroot() -> Iterator[VzRoot]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = Path(tempfile.mkdtemp(prefix="pyvz-test-", dir="/tmp"))
    root.chmod(0o755)
    env_root = VzRoot(root)
    os.environ["PYVZ_ROOT"] = str(root)
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.rootinit import init_root

    init_root(Paths(root))
    conf = root / "etc/vz/vz.conf"
    conf.write_text(conf.read_text().replace("POOL_SIZE=auto", 'POOL_SIZE="4G"'))
    try:
        yield env_root
    finally:
        os.environ.pop("PYVZ_ROOT", None)
        _cleanup_root(root)


DEBIAN_RECIPE = "debian-12-x86_64-minimal"


@pytest.fixture(scope="session")
def debian_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Debian 12 minimal template, built once per session (≈ 20 s) in a root of its own;
    every module that boots Debian shares it. Yields that root's template cache."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path_factory.mktemp("debian-build")
    root.chmod(0o755)
    env = VzRoot(root)
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.rootinit import init_root

    init_root(Paths(root))
    done = env.run("vztmpl", "build", DEBIAN_RECIPE, timeout=900)
    assert done.code == 0, done.err + done.out
    try:
        yield root / "var/lib/vz/template/cache"
    finally:
        _cleanup_root(root)
