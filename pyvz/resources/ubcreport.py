"""vzubc's report: /proc/user_beancounters text in, vzubc 4.11's layout out, byte for byte.

vzctl's vzubc is a shell script around one awk program, and admins diff, grep and watch its
output, so this module follows awk's rules where they show: numbers are doubles (an
unlimited 9223372036854775807 and anything that rounds to it are the same), a percentage
is picked between two formats by comparing its text with "10" as strings (so 1.5% prints
"2%", 5.7% prints "5%"), and the values remembered for -r/-i live in one variable each that
keeps the last value read (a beancounter with no saved file is compared with the previous
one's), and a field that is missing or not a number is text, compared as text (a missing
barrier is awk's division by zero: exit 2, right there). gawk is the reference, as on the
RHEL-family hosts OpenVZ ran on. Each store file is read once per run: awk keeps reading an
open file, which only matters for a name listed twice for one CT (no kernel does that).
The files in the store directory (ubc.BCID.NAME.failcnt / .held, one number each)
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


# A value as awk holds it: a number, or text that does not look like one (a missing field
# is ""), which awk compares as text and reads as its numeric prefix in arithmetic.
Value = float | str


def value(text: str) -> Value:
    return number(text) if looks_numeric(text) else text


def num(item: Value | None) -> float:
    return item if isinstance(item, float) else number(item)


def awk_str(item: Value) -> str:
    """A value as awk turns it into text: integers as integers, other numbers %.6g."""
    if isinstance(item, str):
        return item
    if math.isfinite(item) and item == int(item):
        return str(int(item))
    return f"{item:.6g}"


def compare(a: Value, b: Value) -> int:
    """awk's comparison: numbers as numbers, anything with text in it as text."""
    if isinstance(a, float) and isinstance(b, float):
        return (a > b) - (a < b)
    left, right = awk_str(a), awk_str(b)
    return (left > right) - (left < right)


def _unset_or_unlimited(item: Value) -> bool:
    return compare(item, _LONG_MAX) == 0 or compare(item, _INT_MAX) == 0


def hides_barrier(barrier: int) -> bool:
    """Whether the report, without -v (and -i), hides a row with this barrier: vzubc then
    need not read that counter at all."""
    return _unset_or_unlimited(float(barrier))


def human(resource: str, item: Value) -> str:
    """A value in vzubc's short form: pages in bytes, then K, M, G...; 0 and unlimited '- '."""
    if compare(item, 0.0) == 0 or _unset_or_unlimited(item):
        return "- "
    if not math.isfinite(num(item)):
        return awk_str(num(item))  # awk would divide an overflowed value by 1024 forever
    unit = 0
    if resource.endswith("pages"):
        item, unit = num(item) * 4, 1  # a page is 4 KiB
    while compare(item, 1024.0) >= 0:
        item, unit = num(item) / 1024, unit + 1
    suffix = " KMGTPEZY"[unit] if unit < 9 else ""
    shown = num(item)
    return (f"{shown:.3g}" if compare(item, 100.0) < 0 else f"{int(shown)}") + suffix


def ratio(part: Value, whole: Value) -> str:
    """part/whole in percent, as vzubc prints it ('- ' when it is zero or has no bound).

    ZeroDivisionError: `whole` is text (a missing field), which awk divides by as 0."""
    if compare(whole, 0.0) == 0 or _unset_or_unlimited(whole):
        return "- "
    text = f"{num(part) / num(whole) * 100:.1f}"
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
    """The awk program's `exit`: its END block still runs."""

    def __init__(self, code: int) -> None:
        self.code = code


class _Fatal(Exception):
    """What makes awk itself stop at once (no END block), exit 2."""


def _thresholds(options: Options) -> tuple[float, float]:
    held, maxheld = value(options.held_ratio), value(options.maxheld_ratio)
    # A ratio over 1 is a percentage (-qh 80 is -qh 0.8).
    if compare(held, 1.0) > 0:
        held = num(held) / 100
    if compare(maxheld, 1.0) > 0:
        maxheld = num(maxheld) / 100
    if compare(held, maxheld) > 0:
        held = maxheld  # held past the maxheld threshold would hide nothing more
    return num(held), num(maxheld)


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
        """The next line of `path`, None at its end or if it cannot be read. Once opened, awk
        keeps reading the same stream (a value saved later in the run is not seen); an open
        that failed is tried again next time."""
        if path not in self._readers:
            try:
                with open(path) as handle:
                    lines = handle.read().split("\n")
            except OSError:
                return None
            if lines[-1] == "":
                lines.pop()  # the final newline ends a line, it starts none
            self._readers[path] = lines[::-1]
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
        held, maxheld, barrier, limit = (value(t) for t in self.values[:4])
        failcnt: Value = value(failcnt_text)
        assert self.bcid is not None
        if self.bcid < 0 and (o.relative or o.incremental):
            self.err.append("Error: can not use relative/incremental modes: BCID is unknown\n")
            raise _Exit(1)
        new_failcnt = failcnt
        store = f"{o.store}/ubc.{awk_str(self.bcid)}.{name}"
        failcnt_file = store + ".failcnt"
        if o.relative and compare(failcnt, 0.0) > 0:
            line = self._getline(failcnt_file)
            self.old_failcnt = line if line is not None else self.old_failcnt
            if self.old_failcnt is not None and compare(value(self.old_failcnt), 0.0) > 0:
                failcnt = num(failcnt) - num(value(self.old_failcnt))
            if compare(failcnt, 0.0) < 0:
                failcnt = new_failcnt  # the counter started again (the CT restarted)
        save_held, change, held_delta = False, 0.0, ""
        if o.incremental:
            held_delta, save_held = " " * 7, True
            held_file = store + ".held"
            line = self._getline(held_file)
            self.old_held = line if line is not None else self.old_held
            old = self.old_held
            if old is None or compare(value(old), 0.0) >= 0:  # never read: 0
                change = num(held) - (0.0 if old is None else num(value(old)))
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
        try:
            held_cells = (
                f"{human(name, held):>5}{held_delta} {ratio(held, barrier):>5} {ratio(held, limit):>5}"
            )
            maxheld_cells = (
                f"{human(name, maxheld):>5} {ratio(maxheld, barrier):>5} {ratio(maxheld, limit):>5}"
            )
        except ZeroDivisionError:
            raise _Fatal(f"{name}: a barrier or limit is missing or not a number") from None
        bounds = f"{human(name, barrier):>5}|{human(name, limit):>5}"
        self.out.append(
            f"{name:>13}|{held_cells}|{maxheld_cells}|{bounds}| {human('', failcnt):>5}\n{normal}"
        )
        if o.relative and compare(new_failcnt, 0.0) > 0:
            self._save(failcnt_file, failcnt_text)
        if save_held:
            self._save(held_file, held_text)
        self.name = ""

    def _importance(self, held: Value, maxheld: Value, barrier: Value, limit: Value, failcnt: Value) -> int:
        """2: a failure or over the barrier; 1: past the -qh/-qm thresholds; 0: neither."""
        if compare(failcnt, 0.0) > 0:
            return 2
        if compare(barrier, 0.0) == 0:
            barrier = limit
        if compare(held, barrier) > 0:
            return 2
        if compare(held, num(barrier) * self.qheld) > 0 or compare(maxheld, num(barrier) * self.qmaxheld) > 0:
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
    number_of = 0
    try:
        for line in lines:
            number_of += 1
            state.line(line)
    except _Exit as stop:
        code = stop.code
    except _Fatal as fatal:  # awk stops where it is: no END block
        state.err.append(f"vzubc: input line {number_of}: {fatal}\n")
        return Result("".join(state.out), "".join(state.err), 2)
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
