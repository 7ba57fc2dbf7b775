"""vzubc's report: /proc/user_beancounters text in, vzubc 4.11's layout out, byte for byte.

vzctl's vzubc is a shell script around one awk program, and admins diff, grep and watch its
output, so this module follows awk's rules where they show: numbers are doubles (an
unlimited 9223372036854775807 and anything that rounds to it are the same), a percentage
is picked between two formats by comparing its text with "10" as strings (so 1.5% prints
"2%", 5.7% prints "5%"), and the values remembered for -r/-i live in one variable each that
keeps the last value read (a beancounter with no saved file is compared with the previous
one's). The files in the store directory (ubc.BCID.NAME.failcnt / .held, one number each)
are the script's, so a store written by OpenVZ's vzubc reads here and the other way round.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pyvz.atomic import write_atomic

# Colours as vzubc prints them: header, normal, warning (near a limit), error (a failure).
C_HEADER, C_NORMAL, C_WARNING, C_ERROR = "\033[1;32m", "\033[0;39m", "\033[1;33m", "\033[1;31m"
_LONG_MAX = float(9223372036854775807)  # a double, as awk holds it: 2**63
_INT_MAX = 2147483647.0
_RULE = "-" * 68
_INC_RULE = "-" * 7

_NUMBER_PREFIX = re.compile(r"[ \t\n]*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NUMERIC = re.compile(r"[ \t\n]*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[ \t\n]*")


def number(text: str | None) -> float:
    """awk's string-to-number: the longest numeric prefix, 0 without one (None: unset)."""
    if text is None:
        return 0.0
    match = _NUMBER_PREFIX.match(text)
    return float(match.group()) if match else 0.0


def looks_numeric(text: str) -> bool:
    """Input that awk compares as a number (elsewhere it compares the text)."""
    return _NUMERIC.fullmatch(text) is not None


def awk_str(value: float) -> str:
    """A number as awk prints it in a string: integers as integers, others %.6g."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:.6g}"


def _unset_or_unlimited(value: float) -> bool:
    return value in (_LONG_MAX, _INT_MAX)


def human(resource: str, value: float) -> str:
    """A value in vzubc's short form: pages in bytes, then K, M, G...; 0 and unlimited '- '."""
    if value == 0 or _unset_or_unlimited(value):
        return "- "
    if not math.isfinite(value):
        return awk_str(value)  # awk would divide an overflowed value by 1024 forever
    unit = 0
    if resource.endswith("pages"):
        value, unit = value * 4, 1  # a page is 4 KiB
    while value >= 1024:
        value, unit = value / 1024, unit + 1
    suffix = " KMGTPEZY"[unit] if unit < 9 else ""
    return (f"{value:.3g}" if value < 100 else f"{int(value)}") + suffix


def ratio(part: float, whole: float) -> str:
    """part/whole in percent, as vzubc prints it ('- ' when it is zero or has no bound)."""
    if whole == 0 or _unset_or_unlimited(whole):
        return "- "
    text = f"{part / whole * 100:.1f}"
    if not math.isfinite(float(text)):
        return f"{text}%"
    # The script compares this text with 10 as strings, so only 0.x and 1.x take one
    # significant digit; everything else is truncated to an integer.
    shown = f"{float(text):.1g}" if text < "10" else f"{int(float(text))}"
    return "- " if shown == "0" else f"{shown}%"


@dataclass(frozen=True)
class Options:
    quiet: bool = False
    verbose: bool = False
    held_ratio: str = "0.5"  # -qh/-qm as given: awk decides how to read them
    maxheld_ratio: str = "0.8"
    relative: bool = False
    incremental: bool = False
    color: bool = False
    store: Path = Path("/tmp/vzubc.store")
    ctids: tuple[str, ...] = ()  # CTIDs as words; none: every CT in the input


@dataclass
class Result:
    out: str
    err: str
    code: int


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _threshold(text: str) -> float | str:
    return number(text) if looks_numeric(text) else text


def _greater(a: float | str, b: float | str) -> bool:
    """awk's `a > b`: numbers compare as numbers, anything with a string as text."""
    if isinstance(a, float) and isinstance(b, float):
        return a > b
    return (awk_str(a) if isinstance(a, float) else a) > (awk_str(b) if isinstance(b, float) else b)


def _as_number(value: float | str) -> float:
    return value if isinstance(value, float) else number(value)


def _thresholds(options: Options) -> tuple[float, float]:
    held, maxheld = _threshold(options.held_ratio), _threshold(options.maxheld_ratio)
    # A ratio over 1 is a percentage (-qh 80 is -qh 0.8).
    if _greater(held, 1.0):
        held = _as_number(held) / 100
    if _greater(maxheld, 1.0):
        maxheld = _as_number(maxheld) / 100
    if _greater(held, maxheld):
        held = maxheld  # held past the maxheld threshold would hide nothing more
    return _as_number(held), _as_number(maxheld)


class _Report:
    """The awk program's state, one input line at a time."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.qheld, self.qmaxheld = _thresholds(options)
        self.wanted = " " + " ".join(options.ctids) + " "
        self.out: list[str] = []
        self.err: list[str] = []
        self.bcid: float | None = None  # None until a "BCID:" line: the header says "CT" only
        self.header = self._header()
        self.bcid = -1.0
        self.skip = False
        self.printed = False
        self.name = ""
        self.values: list[str] = []
        # The script's oldfc and o_held: one variable each, kept between beancounters.
        self.old_failcnt: str | None = None
        self.old_held: str | None = None
        self._readers: dict[str, list[str]] = {}

    def _header(self) -> str:
        o = self.o
        bcid = "" if self.bcid is None else awk_str(self.bcid)
        inc = _INC_RULE if o.incremental else ""
        color = (C_HEADER, C_NORMAL) if o.color else ("", "")
        return (
            f"{color[0]}{_RULE}{inc}\n"
            f"CT {bcid:<10}| HELD{'  +/-  ' if o.incremental else ''}  Bar%  Lim%| MAXH  Bar%  Lim%"
            f"| BAR | LIM |{'+' if o.relative else ' '}FAIL\n"
            f"-------------+-{inc}----------------+-----------------+-----+-----+------{color[1]}"
        )

    def line(self, text: str) -> None:
        stripped = text.strip(" \t\n")
        fields = re.split(r"[ \t\n]+", stripped) if stripped else []

        def nth(index: int) -> str:
            return fields[index - 1] if 0 < index <= len(fields) else ""

        if text.startswith("Version: "):
            if nth(2) != "2.5":
                self.err.append(f"Error: unknown version: {nth(2)}\n")
                raise _Exit(1)
            return
        if re.match(r"[\t ]*uid ", text):
            return
        if re.match(r"[\t ]*dummy", text):
            self.name = ""
            return
        if re.match(r"[\t ]*[0-9]+:", text):
            self.header = ""
            value = number(nth(1))
            self.bcid = float(math.trunc(value)) if math.isfinite(value) else value
            if self.wanted.strip(" ") and f" {awk_str(self.bcid)} " not in self.wanted:
                self.skip = True
                return
            self.skip = False
            self.header = self._header()
            self.name, self.values = nth(2), [nth(i) for i in range(3, 8)]
        if re.match(r"[\t ]*[a-z]+", text):
            self.name, self.values = nth(1), [nth(i) for i in range(2, 7)]
        if self.name and not self.skip:
            self._row()

    def _getline(self, path: str) -> str | None:
        """The next line of `path` (awk keeps a file open once read), None at its end."""
        if path not in self._readers:
            try:
                with open(path) as handle:
                    self._readers[path] = handle.read().split("\n")[::-1]
            except OSError:
                self._readers[path] = []
            if self._readers[path][:1] == [""]:
                self._readers[path].pop(0)  # the final newline ends a line, it starts none
        lines = self._readers[path]
        return lines.pop() if lines else None

    def _save(self, path: str, text: str) -> None:
        try:
            write_atomic(Path(path), text + "\n", mode=0o600, durable=False)
        except OSError as err:
            self.err.append(f"vzubc: can not write {path}: {err.strerror}\n")
            raise _Exit(2) from None

    def _row(self) -> None:
        o, name = self.o, self.name
        held_text, maxheld_text, barrier_text, limit_text, failcnt_text = self.values
        held, maxheld = number(held_text), number(maxheld_text)
        barrier, limit, failcnt = number(barrier_text), number(limit_text), number(failcnt_text)
        assert self.bcid is not None
        if self.bcid < 0 and (o.relative or o.incremental):
            self.err.append("Error: can not use relative/incremental modes: BCID is unknown\n")
            raise _Exit(1)
        new_failcnt = failcnt
        store = f"{o.store}/ubc.{awk_str(self.bcid)}.{name}"
        failcnt_file = store + ".failcnt"
        if o.relative and failcnt > 0:
            line = self._getline(failcnt_file)
            self.old_failcnt = line if line is not None else self.old_failcnt
            if number(self.old_failcnt) > 0:
                failcnt -= number(self.old_failcnt)
            if failcnt < 0:
                failcnt = new_failcnt  # the counter started again (the CT restarted)
        save_held, change, held_delta = False, 0.0, ""
        if o.incremental:
            held_delta, save_held = " " * 7, True
            held_file = store + ".held"
            line = self._getline(held_file)
            self.old_held = line if line is not None else self.old_held
            old = self.old_held
            if old is None or (number(old) >= 0 if looks_numeric(old) else old >= "0"):
                change = held - number(old)
                sign = "-" if change < 0 else "+"
                change = abs(change)
                if change:
                    held_delta = f"{sign + human(name, change):>7}"
                else:
                    save_held = False
        importance = self._importance(held, maxheld, barrier, limit, failcnt)
        hidden = (o.quiet and not importance) or (not o.verbose and _unset_or_unlimited(barrier))
        if hidden and change == 0:
            self.name = ""
            return
        if self.header:
            if self.printed:
                self.out.append("\n")
            self.out.append(self.header + "\n")
            self.printed, self.header = True, ""
        normal = C_NORMAL if o.color else ""
        if o.color:
            self.out.append((C_NORMAL, C_WARNING, C_ERROR)[importance])
        self.out.append(
            f"{name:>13}|{human(name, held):>5}{held_delta} {ratio(held, barrier):>5} {ratio(held, limit):>5}"
            f"|{human(name, maxheld):>5} {ratio(maxheld, barrier):>5} {ratio(maxheld, limit):>5}"
            f"|{human(name, barrier):>5}|{human(name, limit):>5}| {human('', failcnt):>5}\n{normal}"
        )
        if o.relative and new_failcnt > 0:
            self._save(failcnt_file, failcnt_text)
        if save_held:
            self._save(held_file, held_text)
        self.name = ""

    def _importance(self, held: float, maxheld: float, barrier: float, limit: float, failcnt: float) -> int:
        """2: a failure or over the barrier; 1: past the -qh/-qm thresholds; 0: neither."""
        if failcnt > 0:
            return 2
        if barrier == 0:
            barrier = limit
        if held > barrier:
            return 2
        if held > barrier * self.qheld or maxheld > barrier * self.qmaxheld:
            return 1
        return 0

    def end(self) -> None:
        if self.printed:
            self.out.append(_RULE + (_INC_RULE if self.o.incremental else "") + "\n")


def report(text: str, options: Options) -> Result:
    """vzubc's output for /proc/user_beancounters `text`; -r/-i read and update the store."""
    state = _Report(options)
    code = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        for line in lines:
            state.line(line)
    except _Exit as stop:
        code = stop.code
    state.end()  # awk runs its END block after an exit too
    return Result("".join(state.out), "".join(state.err), code)


def clear(store: Path, kind: str) -> list[str]:
    """-rc / -ic: remove the saved ubc.*.failcnt or ubc.*.held files; what could not be."""
    failed = []
    try:
        entries = os.listdir(store)
    except OSError:
        return []
    for entry in sorted(entries):
        if entry.startswith("ubc.") and entry.endswith(f".{kind}"):
            try:
                os.unlink(store / entry)
            except FileNotFoundError:
                pass
            except OSError as err:
                failed.append(f"cannot remove {store / entry}: {err.strerror}")
    return failed
