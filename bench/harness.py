"""The benchmark machinery: a throwaway PYVZ_ROOT, timed commands, A/B alternation, rows.

Every command gets PYVZ_ROOT in its environment and stdin from /dev/null, so pyvz and its
peer run under the same conditions. Timing is time.perf_counter around subprocess.run of
the exact command line; everything a benchmark does between measurements is untimed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyvz.paths import Paths  # noqa: E402
from pyvz.rootinit import init_root  # noqa: E402

VENV_BIN = REPO / ".venv/bin"
VZCTL = str(VENV_BIN / "vzctl")
VZLIST = str(VENV_BIN / "vzlist")
POOL_SIZE = "20G"
COMMAND_TIMEOUT = 300.0


class CommandFailed(Exception):
    def __init__(self, argv: Sequence[str], code: int, out: str, err: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.out = out
        self.err = err
        detail = (err.strip() or out.strip())[-1500:]
        super().__init__(f"`{' '.join(self.argv)}` exited with {code}: {detail}")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchRoot:
    """A temporary PYVZ_ROOT with its own loop pool, torn down by cleanup()."""

    def __init__(self) -> None:
        for tool in (VZCTL, VZLIST):
            if not os.access(tool, os.X_OK):
                raise SystemExit(f"{tool} is missing: run `make install` in {REPO}")
        self.root = Path(tempfile.mkdtemp(prefix="pyvz-bench-", dir="/tmp"))
        self.root.chmod(0o755)
        self.paths = Paths(self.root)
        init_root(self.paths)
        conf = self.paths.vz_conf
        conf.write_text(conf.read_text().replace("POOL_SIZE=auto", f'POOL_SIZE="{POOL_SIZE}"'))
        self.env = {**os.environ, "PYVZ_ROOT": str(self.root)}
        self.lxcpath = str(self.paths.lxc_dir)

    # ---- commands ------------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def timed(self, argv: Sequence[str]) -> float:
        """Seconds the command took; a failing command is a crashed benchmark."""
        argv = list(argv)
        start = time.perf_counter()
        proc = subprocess.run(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, proc.stdout, proc.stderr)
        return elapsed

    def vzctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([VZCTL, *args], check=check)

    def lxc(self, tool: str, ctid: int, *args: str) -> list[str]:
        return [tool, "-P", self.lxcpath, "-n", str(ctid), *args]

    # ---- CT state helpers (untimed) ------------------------------------------------------

    def status(self, ctid: int) -> str:
        return self.vzctl("status", str(ctid)).stdout.strip()

    def settle(self, ctid: int) -> None:
        """Bring a CT back to 'exists, stopped, unmounted' whatever a failed step left."""
        line = self.status(ctid)
        if " running" in line:
            self.vzctl("stop", "--fast", str(ctid))
            line = self.status(ctid)
        if " mounted" in line:
            self.vzctl("umount", str(ctid))

    @property
    def private_dir(self) -> Path:
        return self.paths.lib_vz / "private"

    # ---- teardown ------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Stop and remove everything; returns what could not be removed (should be nothing)."""
        from tests.conftest import _cleanup_root

        try:
            _cleanup_root(self.root)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        real = os.path.realpath(self.root)
        found = []
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                target = line.split()[4]
                if target == real or target.startswith(real + "/"):
                    found.append(f"mount {target}")
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        found += [f"loop {line}" for line in loops.splitlines() if real in line]
        tag_dirs = [p for p in Path("/sys/fs/cgroup").glob(f"*/{self.paths.tag}") if p.is_dir()]
        tag_dirs += [p for p in [Path("/sys/fs/cgroup") / self.paths.tag] if p.is_dir()]
        found += [f"cgroup {p}" for p in tag_dirs]
        if self.root.exists():
            found.append(f"directory {self.root}")
        return found


# ---- results -----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. kind: 'diff' (target peer + N ms), 'abs' (absolute), 'ratio'
    (target pyvz/peer ≤ limit), 'growth', 'mem', 'count' (at least `limit` of something)."""

    operation: str
    kind: str
    target: str
    pyvz: list[float]
    peer: list[float] = field(default_factory=list)
    limit: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)
    ceiling: float | None = None  # a 'ratio' row that must also stay under this many seconds

    @property
    def pyvz_median(self) -> float:
        return statistics.median(self.pyvz)

    @property
    def peer_median(self) -> float | None:
        return statistics.median(self.peer) if self.peer else None

    @property
    def ratio(self) -> float | None:
        peer = self.peer_median
        return self.pyvz_median / peer if peer else None

    @property
    def diff_ms(self) -> float | None:
        peer = self.peer_median
        if peer is None or self.kind in ("growth", "mem", "count"):
            return None
        return (self.pyvz_median - peer) * 1000

    @property
    def met(self) -> bool:
        if self.kind == "diff":
            diff = self.diff_ms
            return diff is not None and diff <= self.limit
        if self.kind == "ratio":
            ratio = self.ratio
            under = self.ceiling is None or self.pyvz_median <= self.ceiling
            return ratio is not None and ratio <= self.limit and under
        if self.kind == "growth":
            peer = self.peer_median
            return self.pyvz_median <= self.limit and (peer is None or peer > self.pyvz_median)
        if self.kind == "count":
            return self.pyvz_median >= self.limit
        return self.pyvz_median <= self.limit

    def _value(self, value: float | None) -> str:
        if value is None:
            return "—"
        if self.kind == "growth":
            return f"{value:.2f}×"
        if self.kind == "mem":
            return f"{value:.2f} MB"
        if self.kind == "count":
            return f"{value:.0f}"
        return f"{value * 1000:.1f} ms"

    def cells(self) -> list[str]:
        ratio, diff = self.ratio, self.diff_ms
        if self.kind in ("growth", "mem", "count") or ratio is None or diff is None:
            comparison = "—"
        elif self.kind == "diff":
            comparison = f"{diff:+.1f} ms ({ratio:.2f}×)"
        else:
            comparison = f"{ratio:.2f}× ({diff:+.1f} ms)"
        return [
            self.operation,
            self._value(self.pyvz_median),
            self._value(self.peer_median),
            comparison,
            self.target,
            "yes" if self.met else "**no**",
        ]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            pyvz_median=self.pyvz_median,
            peer_median=self.peer_median,
            ratio=self.ratio,
            diff_ms=self.diff_ms,
            met=self.met,
            unit={"mem": "MB", "growth": "x", "count": "count"}.get(self.kind, "s"),
        )
        return data


HEADER = ["Operation", "pyvz (median)", "Peer (median)", "Ratio / diff", "Target", "Met?"]


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def alternate(
    iterations: int, pyvz: Callable[[], float], peer: Callable[[], float], label: str
) -> tuple[list[float], list[float]]:
    """A B A B ...: each callable does its own untimed preparation and returns one timing."""
    ours: list[float] = []
    theirs: list[float] = []
    for index in range(iterations):
        ours.append(pyvz())
        theirs.append(peer())
        progress = f"{label} {index + 1}/{iterations}"
        log(f"{progress}: pyvz {ours[-1] * 1000:.1f} ms, peer {theirs[-1] * 1000:.1f} ms")
    return ours, theirs
