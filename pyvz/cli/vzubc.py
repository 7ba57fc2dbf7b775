"""vzubc: user beancounters in vzubc 4.11's layout, with its options, messages and exit codes.

Options are read the way vzctl's vzubc script reads them: one at a time, in order (so
`-rd DIR -rc` clears DIR and `-rc -rd DIR` the default store), several letters after one
dash (`-qh`, `-rd`), no option prefixes, every error exit 1 with the usage text on stdout.
The counters are the /proc/user_beancounters text: a file (`-f FILE`, `-` for stdin), or,
since mainline has no such file, the one pyvz makes from its own counters of the running CTs
(`--proc` prints it). A counter this kernel does not keep is 0 in that text, so vzubc prints
'-' for it, as the script does for any zero. docs/resources.md#vzubc has the details.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyvz.cli.common import exit_now, run_tool
from pyvz.paths import Paths
from pyvz.resources.ubcreport import Options, clear, report

USAGE = """\
Usage: vzubc [option ...] [<ctid> ...]

 -w, --watch:
     Redisplay the output under watch(1) until Ctrl-C.
     -wd: highlight what changed between two displays
     -wt: leave out watch's title
     -wn <time>: seconds between two displays
 -q, --quiet:
     Only beancounters that failed or come close to their limits.
     -qh <ratio>: held/barrier ratio that counts as close (default: 0.5)
     -qm <ratio>: maxheld/barrier ratio that counts as close (default: 0.8)
 -v, --verbose:
     Unlimited beancounters too.
 -r, --relative:
     Fail counters as the change since the previous -r run.
     -rc: forget the fail counters saved for -r
     -rd <dir>: where -r and -i keep their data (default: {store})
 -i, --incremental:
     An extra column with the change of held since the previous -i run;
     with -q, beancounters whose held changed are shown too.
     -ic: forget the held values saved for -i
     -id <dir>: the same as -rd
 -c, --color:
     Highlight lines (the --quiet thresholds, and failures); not with --watch.
 -f, --file <file>:
     Read the counters from a file in /proc/user_beancounters format
     (- for stdin); by default, the counters of the running CTs.
     --proc: print that text instead of the table (pyvz's own)

 <ctid>: the ID or name of a CT to show (may be repeated)
"""


@dataclass
class Parsed:
    options: Options
    file: str | None = None
    watch: bool = False
    watch_args: list[str] = field(default_factory=list)
    thresholds: bool = False
    proc: bool = False
    words: list[str] = field(default_factory=list)


class UsageExit(Exception):
    """A message for stderr (none for --help), then the usage on stdout, then `code`."""

    def __init__(self, message: str | None, code: int) -> None:
        self.message, self.code = message, code


def _value(argv: list[str], index: int) -> str:
    # The script tests its unquoted $2, so a value of only blanks is no value either.
    value = argv[index + 1] if index + 1 < len(argv) else ""
    if not value.strip(" \t\n"):
        raise UsageExit(f"Error: option {argv[index]} requires an argument", 1)
    return value


_FLAGS = {
    "-q": "quiet",
    "--quiet": "quiet",
    "-v": "verbose",
    "--verbose": "verbose",
    "-r": "relative",
    "--relative": "relative",
    "-i": "incremental",
    "--incremental": "incremental",
    "-c": "color",
    "--color": "color",
}


def parse(argv: list[str], store: Path) -> Parsed:
    """The command line, word by word; -rc and -ic take effect as they are read."""
    parsed = Parsed(Options(store=store))
    index = 0
    while index < len(argv):
        word, o = argv[index], parsed.options
        if word in _FLAGS:
            flag: dict[str, Any] = {_FLAGS[word]: True}
            parsed.options = replace(o, **flag)
        elif word == "-W":  # the run under watch: do not start watch again
            parsed.watch = False
        elif word in ("-w", "--watch"):
            parsed.watch = True
        elif word in ("-wd", "-wt"):
            parsed.watch = True
            parsed.watch_args.append("-d" if word == "-wd" else "-t")
        elif word == "-wn":
            parsed.watch = True
            parsed.watch_args += ["-n", _value(argv, index)]
            index += 1
        elif word in ("-qh", "-qm"):
            value = _value(argv, index)
            ratio: dict[str, Any] = {"held_ratio" if word == "-qh" else "maxheld_ratio": value}
            parsed.options, parsed.thresholds = replace(o, **ratio), True
            index += 1
        elif word in ("-rc", "-ic"):
            for problem in clear(o.store, "failcnt" if word == "-rc" else "held"):
                print(f"vzubc: {problem}", file=sys.stderr)
        elif word in ("-rd", "-id"):
            parsed.options = replace(o, store=Path(_value(argv, index)))
            index += 1
        elif word in ("-h", "--help"):
            raise UsageExit(None, 0)
        elif word in ("-f", "--file"):
            parsed.file = _value(argv, index)
            index += 1
        elif word == "--proc":
            parsed.proc = True
        elif word.startswith("-"):
            raise UsageExit(f"Unrecognized option: {word}", 1)
        else:
            parsed.words.append(word)
        index += 1
    return parsed


def check(parsed: Parsed) -> None:
    """The script's checks between its options, in its order."""
    o = parsed.options
    if parsed.watch and o.color:
        raise UsageExit("Error: can't use --watch and --color together", 1)
    if parsed.thresholds and not o.color and not o.quiet:
        raise UsageExit("Error: -qh and -qm only make sense with --quiet or --color", 1)
    if o.quiet and o.verbose:
        raise UsageExit("Error: options --quiet and --verbose can't be used together", 1)


def resolve(paths: Paths, words: list[str]) -> tuple[str, ...]:
    """CT names and IDs to CTIDs; what matches no CT is kept as written (and matches none)."""
    from pyvz.config import resolve_ctid
    from pyvz.errors import VzError

    resolved = []
    for word in words:
        try:
            resolved.append(str(resolve_ctid(paths, word)))
        except VzError:
            resolved.append(word)
    return tuple(" ".join(resolved).split())  # the script passes them through `echo`


def prepare_store(store: Path, default: Path) -> str | None:
    """-r/-i need the store directory, writable; a problem as one line, or None."""
    try:
        if not store.is_dir():
            # Only the default's parents are made (a throwaway PYVZ_ROOT may have no tmp/).
            if store == default:
                store.parent.mkdir(parents=True, exist_ok=True)
            store.mkdir(mode=0o700)
        probe = store / "ubc.test"
        probe.touch(mode=0o600)
        probe.unlink()
    except OSError as err:
        return f"vzubc: cannot use {store} for saved values: {err.strerror}"
    return None


def pyvz_counters(paths: Paths, ctids: tuple[str, ...], shown_only: bool = False) -> str:
    """The /proc/user_beancounters text of the running CTs (of `ctids`, if any).

    `shown_only`: only the beancounters the report can show, those with a barrier (without
    -v and -i, vzubc hides a row whose barrier is unlimited), so the kernel files of the
    others are not read: at 2000 CTs without limits that was most of vzubc's time."""
    from pyvz.host import Host
    from pyvz.listing import records
    from pyvz.log import log
    from pyvz.params import UBC_PARAMS, ubc_name
    from pyvz.resources.beancounters import configured, proc_text
    from pyvz.resources.beancounters import read as read_beancounters
    from pyvz.resources.policy import not_enforced, warning
    from pyvz.resources.ubcreport import hides_barrier

    host = Host(paths)
    wanted = [int(word) for word in ctids if word.isascii() and word.isdigit()] if ctids else None
    ubc_keys = [(ubc_name(param), param.key) for param in UBC_PARAMS if param.key]
    runtime = host.runtime
    enforces = runtime.cgroups.enforces  # once: it looks at the hierarchy's files
    found = []
    for record in records(host, wanted):
        if not record.running:
            continue
        cfg = record.config
        # An unset beancounter is unlimited and not enforced: only the set ones are parsed.
        present = [(name, key) for name, key in ubc_keys if cfg is not None and cfg.raw(key)]
        names = None
        if shown_only:
            names = frozenset(n for n, _key in present if not hides_barrier(configured(cfg, n).barrier))
        relative = runtime.cgroups_of(record.ctid).container
        counters = read_beancounters(runtime.cgroups, relative, cfg, record.state_file, names)
        if counters is None:
            continue  # stopped meanwhile
        found.append((record.ctid, counters))
        if cfg is not None:
            unenforced = not_enforced(cfg, [key for _name, key in present], enforces)
            if unenforced:
                log.warning(f"CT {record.ctid}: {warning(unenforced)}")
    return proc_text(found)


def _watch(parsed: Parsed, argv: list[str]) -> int:
    watch = shutil.which("watch")
    if watch is None:
        print("vzubc: -w needs watch(1), which is not installed (Debian package procps)", file=sys.stderr)
        return 1
    me = sys.argv[0]
    myself = (
        [me]
        if os.path.basename(me) == "vzubc" and os.access(me, os.X_OK)
        else [sys.executable, "-m", __name__]
    )
    if __name__ == "__main__":
        myself = [sys.executable, "-m", "pyvz.cli.vzubc"]
    # watch runs its command through sh -c; -W stops the inner run from starting watch again.
    command = shlex.join([*myself, *argv, "-W"])
    sys.stdout.flush()
    os.execv(watch, ["watch", *parsed.watch_args, "--", command])
    return 1  # not reached


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    with open(name, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def dispatch(argv: list[str]) -> int:
    paths = Paths.from_env()
    default_store = paths.host("/tmp/vzubc.store")
    try:
        parsed = parse(argv, default_store)
        check(parsed)
    except UsageExit as stop:
        if stop.message:
            print(stop.message, file=sys.stderr)
        print(USAGE.format(store=default_store), end="")
        return stop.code
    options = replace(parsed.options, ctids=resolve(paths, parsed.words))
    text = None
    if parsed.file is not None and parsed.file != "-":
        try:
            text = _read(parsed.file)
        except OSError as err:
            print(f"vzubc: cannot read {parsed.file}: {err.strerror}", file=sys.stderr)
            return 1
    if options.relative or options.incremental:
        problem = prepare_store(options.store, default_store)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    if parsed.watch:
        return _watch(parsed, argv)
    if text is None:
        shown_only = not (parsed.proc or options.verbose or options.incremental)
        text = _read("-") if parsed.file == "-" else pyvz_counters(paths, options.ctids, shown_only)
    if parsed.proc:
        print(text, end="")
        return 0
    result = report(text, options)
    sys.stdout.write(result.out)
    sys.stderr.write(result.err)
    return result.code


def main() -> None:
    exit_now(run_tool("vzubc", dispatch))


if __name__ == "__main__":
    main()
