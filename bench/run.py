"""pyvz benchmarks against their peers (`make bench`).

Each benchmark runs pyvz and its peer alternately (A B A B ...) in one throwaway PYVZ_ROOT,
prints a Markdown table of medians, appends the full result to bench/results/ as JSON and
writes the table to bench/results/latest.md. A missed target never fails the run; a crashed
benchmark does (exit 1), after the others have run and the root has been cleaned up.

    bench/run.py [--only create,start,stop,exec,vzlist,memory] [--quick]

How each peer is run (all untimed preparation happens between the timed commands):
  create  `vzctl create N` vs `tar --numeric-owner -xpf ARCHIVE -C fresh-dir`, the dir on the
          same btrfs pool the CTs live on; busybox and a ~200 MB synthetic `big` template.
          Each CT is destroyed and each tar dir removed (then `sync`) between iterations.
  start   `vzctl start N` vs `vzctl mount N; lxc-start -P LXCPATH -n N -d` with the config an
          earlier `vzctl start` wrote; both are ended with `vzctl stop --fast N`.
  stop    `vzctl stop N` vs `lxc-stop -P LXCPATH -n N` (clean), each after an untimed
          `vzctl start N` and 0.3 s for busybox init to come up; `vzctl umount` after the peer.
  exec    `vzctl exec N true` vs `lxc-attach -P LXCPATH -n N --clear-env -- /bin/sh -c true`.
  vzlist  `vzlist -a` vs `lxc-ls -P LXCPATH -f`, 200 CTs of which 50 run; every CT was started
          once so that LXC knows all 200, as vzlist does.
  memory  Private_Clean + Private_Dirty of each running CT's LXC monitor (found through its
          monitor cgroup), in MB per CT; no peer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cases import BENCHMARKS, Context, Iterations
from bench.harness import REPO, BenchRoot, CommandFailed, Row, log, markdown_table

RESULTS = REPO / "bench/results"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description="Benchmark pyvz against its peers.")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ns = parser.parse_args(argv)
    if ns.only:
        names = [n.strip() for n in ns.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        ns.names = [n for n in BENCHMARKS if n in names]  # always in the canonical order
    else:
        ns.names = list(BENCHMARKS)
    return ns


def _machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"

    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "lxc": version(["lxc-start", "--version"]),
        "tar": version(["tar", "--version"]),
        "git": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


class Interrupted(BaseException):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    ns = _parse(argv)
    if os.geteuid() != 0:
        print(
            "bench/run.py needs root (it creates loop devices, btrfs pools and containers)", file=sys.stderr
        )
        return 2
    # Ctrl-C must reach us even when started with SIGINT ignored (as `cmd &` in a script is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    rows: list[Row] = []
    outcomes: dict[str, dict[str, Any]] = {}
    crashed = False
    interrupted: str | None = None
    leftovers: list[str] = []
    vz = BenchRoot()
    log(
        f"root {vz.root} (tag {vz.paths.tag}); running: {', '.join(ns.names)}{' (quick)' if ns.quick else ''}"
    )
    try:
        ctx = Context(vz, Iterations.of(ns.quick))
        for name in ns.names:
            began = time.monotonic()
            try:
                produced = BENCHMARKS[name](ctx)
            except (Exception, subprocess.TimeoutExpired) as err:
                crashed = True
                detail = str(err) if isinstance(err, CommandFailed) else traceback.format_exc()
                log(f"{name}: CRASHED: {detail}")
                outcomes[name] = {"error": detail, "seconds": time.monotonic() - began}
                continue
            rows += produced
            outcomes[name] = {"seconds": time.monotonic() - began, "rows": [r.as_json() for r in produced]}
            log(f"{name}: done in {time.monotonic() - began:.1f} s")
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = type(err).__name__ if isinstance(err, KeyboardInterrupt) else str(err)
        log(f"interrupted ({interrupted}); cleaning up")
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # let cleanup finish
        try:
            log(f"cleaning up {vz.root}")
            leftovers = vz.cleanup()
            for item in leftovers:
                log(f"LEFT BEHIND: {item}")
        finally:
            signal.signal(signal.SIGINT, previous)

    table = markdown_table(rows)
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "quick": ns.quick,
        "benchmarks": ns.names,
        "machine": _machine(),
        "outcomes": outcomes,
        "interrupted": interrupted,
        "leftovers": leftovers,
        "table": table,
    }
    if rows:
        print()
        print(table, end="")
    if interrupted:
        print("\nInterrupted: nothing written to bench/results.")
        return 130
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if rows:
        (RESULTS / "latest.md").write_text(
            f"# pyvz benchmarks, {result['started']}{' (quick)' if ns.quick else ''}\n\n"
            f"Machine: {result['machine']['cpus']} CPUs, Linux {result['machine']['kernel']}, "
            f"{result['machine']['lxc'] and 'LXC ' + result['machine']['lxc']}; "
            f"full results in {out.name}.\n\n{table}"
        )
    print(
        f"\nResults: {out.relative_to(REPO)} (table also in bench/results/latest.md); "
        f"{result['seconds']:.0f} s in all."
    )
    if crashed or leftovers:
        failed = [n for n, o in outcomes.items() if "error" in o]
        print(f"Crashed: {', '.join(failed) or 'none'}; left behind: {len(leftovers)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
