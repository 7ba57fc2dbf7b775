"""What a /metrics scrape costs (issue 13), with 500 running busybox CTs in the root.

metrics  pyvz.api.metrics.render() of the whole root, timed by perf_counter in a child
         process that does nothing but scrape (a warm-up, then the timed samples): the
         median is the row. The same child reports its peak RSS (VmHWM of
         /proc/self/status, in KiB) after all of its scrapes, the figure the daemon's
         "≤ 80 MB" stands for (not getrusage's ru_maxrss: Linux carries the parent's peak
         into a child started with vfork, as subprocess starts it, so that said how big
         the benchmark's own process had grown); a second child that only imports the module says how
         much of that is the interpreter and pyvz's code. The CTs are 500 of their own
         (CTIDs 5001-5500); every other running CT of the root is stopped first, so exactly
         500 run, and started again afterwards. No peer: nothing else exports these figures.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any

from bench.harness import REPO, VENV_BIN, CommandFailed, Row, log

if TYPE_CHECKING:
    from bench.cases import Context

FIRST = 5001
COUNT = 500
PY = str(VENV_BIN / "python3")

# The child: scrapes `samples` times after one warm-up, then says what it measured. Run with
# cwd = the repository, so it is this tree's pyvz that scrapes.
_SCRAPER = """
import json, sys, time
from prometheus_client.parser import text_string_to_metric_families
from pyvz.api.metrics import render
from pyvz.paths import Paths
paths = Paths.from_env()
samples = int(sys.argv[1])
render(paths)
times = []
for _ in range(samples):
    started = time.perf_counter()
    text = render(paths)
    times.append(time.perf_counter() - started)
maxrss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
families = list(text_string_to_metric_families(text))
running = [s for f in families if f.name == "pyvz_ct_up" for s in f.samples if s.value == 1]
print(json.dumps({"times": times, "maxrss_kb": maxrss, "bytes": len(text),
                  "samples": sum(len(f.samples) for f in families), "running": len(running)}))
"""
_IMPORT_ONLY = """
import pyvz.api.metrics
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def _child(ctx: Context, code: str, *args: str) -> str:
    done = subprocess.run(
        [PY, "-c", code, *args],
        env=ctx.vz.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scraping child failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _vzctl(ctx: Context, *args: str, check: bool = True) -> str:
    """This tree's vzctl (python -m, cwd = the repository, as the tests run it): the venv's
    launcher imports whichever tree the venv was installed from."""
    done = subprocess.run(
        [PY, "-m", "pyvz.cli.vzctl", "--quiet", *args],
        env=ctx.vz.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and done.returncode != 0:
        raise CommandFailed(["vzctl", *args], done.returncode, done.stdout, done.stderr)
    return done.stdout


def _running(ctx: Context, ctid: int) -> bool:
    return " running" in _vzctl(ctx, "status", str(ctid))


def _running_others(ctx: Context, ours: list[int]) -> list[int]:
    vz = ctx.vz
    names = (p.name[:-5] for p in vz.paths.conf_dir.glob("*.conf"))
    others = sorted(int(n) for n in names if n.isdigit() and int(n) not in ours)
    return [ctid for ctid in others if _running(ctx, ctid)]


def _start_fleet(ctx: Context, ctids: list[int]) -> None:
    vz = ctx.vz
    started = time.monotonic()
    for index, ctid in enumerate(ctids):
        if not vz.paths.conf_file(ctid).exists():
            _vzctl(ctx, "create", str(ctid))
        if (index + 1) % 100 == 0:
            log(f"metrics: created {index + 1}/{len(ctids)} CTs ({time.monotonic() - started:.0f} s)")
    for index, ctid in enumerate(ctids):
        if not _running(ctx, ctid):
            _vzctl(ctx, "start", str(ctid))
        if (index + 1) % 100 == 0:
            log(f"metrics: started {index + 1}/{len(ctids)} CTs ({time.monotonic() - started:.0f} s)")


def bench_metrics(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ours = list(range(FIRST, FIRST + COUNT))
    stopped = _running_others(ctx, ours)
    for ctid in stopped:  # exactly 500 running: the fleet's 50 or 100 would add to them
        _vzctl(ctx, "stop", "--fast", str(ctid))
    try:
        _start_fleet(ctx, ours)
        samples = max(5, ctx.n.vzlist)
        measured: dict[str, Any] = json.loads(_child(ctx, _SCRAPER, str(samples)))
        baseline_kb = int(_child(ctx, _IMPORT_ONLY).strip())
    except BaseException as err:  # said now: the clean-up below takes minutes
        log(f"metrics: failed: {err}")
        raise
    finally:
        log(f"metrics: stopping and destroying CTs {FIRST}-{FIRST + COUNT - 1}")
        for ctid in ours:
            if vz.paths.conf_file(ctid).exists():
                _vzctl(ctx, "stop", "--fast", str(ctid), check=False)
                _vzctl(ctx, "destroy", str(ctid), check=False)
        for ctid in stopped:
            _vzctl(ctx, "start", str(ctid), check=False)
    if measured["running"] != COUNT:
        raise RuntimeError(f"render() showed {measured['running']} running CTs; {COUNT} were started")
    times = measured["times"]
    median_ms = statistics.median(times) * 1000
    log(f"metrics: render() median {median_ms:.0f} ms, maxrss {measured['maxrss_kb']} KiB")
    notes = {
        "what": "pyvz.api.metrics.render(Paths) in a child that only scrapes, after one warm-up",
        "running_cts": measured["running"],
        "samples_per_scrape": measured["samples"],
        "bytes_per_scrape": measured["bytes"],
        "scrapes": samples + 1,
    }
    return [
        Row(f"/metrics render() ({COUNT} running CTs)", "abs", "≤ 500 ms", times, limit=0.5, notes=notes),
        Row(
            f"/metrics: peak RSS of a process doing only scrapes ({COUNT} running CTs)",
            "mem",
            "≤ 80 MB",
            [measured["maxrss_kb"] / 1024],
            limit=80.0,
            notes={
                "metric": "VmHWM of the scraping child (/proc/self/status), after all its scrapes",
                "import_only_mb": baseline_kb / 1024,
                "scrapes": samples + 1,
            },
        ),
    ]
