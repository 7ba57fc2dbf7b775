"""vzctl's value syntax: K/M/G/T/P suffixes, `unlimited`, `barrier:limit`, yes/no."""

from __future__ import annotations

import re
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError

# OpenVZ writes LONG_MAX for `unlimited`; so do we, so configs stay interchangeable.
UNLIMITED = 9223372036854775807

_SUFFIX = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]?)B?$", re.IGNORECASE)


def bad_value(what: str, text: str, hint: str = "") -> VzError:
    return VzError(
        ExitCode.INVALID_PARAMETER_VALUE,
        f"invalid value for {what}: {text!r}" + (f" ({hint})" if hint else ""),
    )


def parse_size(text: str, unit: int, what: str = "size") -> int:
    """A number in `unit` bytes; a suffixed number is converted from bytes-with-suffix."""
    text = text.strip()
    if text.lower() == "unlimited":
        return UNLIMITED
    match = _SIZE_RE.match(text)
    if not match:
        raise bad_value(what, text, "expected a number with an optional K/M/G/T/P suffix")
    number, suffix = match.group(1), match.group(2).upper()
    if not suffix:
        if "." in number:
            raise bad_value(what, text, "a fraction needs a suffix")
        if int(number) > UNLIMITED:
            raise bad_value(what, text, "too large")
        return int(number)
    value = float(number) * (1024 ** _SUFFIX[suffix])
    result = int(value // unit)
    if result > UNLIMITED:
        raise bad_value(what, text, "too large")
    return result


def format_size(value: int, unit: int) -> str:
    """The shortest exact suffixed form, as people write it (10G rather than 10485760)."""
    if value >= UNLIMITED:
        return "unlimited"
    total = value * unit
    for suffix in ("P", "T", "G", "M", "K"):
        scale = 1024 ** _SUFFIX[suffix]
        if total and total % scale == 0:
            return f"{total // scale}{suffix}"
    return f"{total}"


def human_size(size: int) -> str:
    """A byte count as a person reads it on one line: 512B, 1.5K, 20.0M, 3.2G."""
    value = float(size)
    for suffix in ("B", "K", "M"):
        if value < 1024:
            return f"{value:.0f}{suffix}" if suffix == "B" else f"{value:.1f}{suffix}"
        value /= 1024
    return f"{value:.1f}G"


class BarrierLimit(NamedTuple):
    barrier: int
    limit: int

    def __str__(self) -> str:
        """As vzctl writes it: one number where barrier and limit agree, `unlimited` for
        the largest value."""
        barrier, limit = (show_limit(v) for v in self)
        return barrier if self.barrier == self.limit else f"{barrier}:{limit}"


def show_limit(value: int) -> str:
    """A beancounter value as vzctl shows and writes it."""
    return "unlimited" if value >= UNLIMITED else str(value)


def parse_barrier_limit(text: str, unit: int, what: str) -> BarrierLimit:
    """`value` or `barrier:limit`, each with optional suffix or `unlimited`."""
    parts = text.split(":")
    if len(parts) > 2 or not all(parts):
        raise bad_value(what, text, "expected VALUE or BARRIER:LIMIT")
    barrier = parse_size(parts[0], unit, what)
    limit = parse_size(parts[-1], unit, what)
    if barrier > limit:
        raise bad_value(what, text, "barrier is greater than limit")
    return BarrierLimit(barrier, limit)


def parse_yes_no(text: str, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("yes", "on", "true", "1"):
        return True
    if lowered in ("no", "off", "false", "0"):
        return False
    raise bad_value(what, text, "expected yes or no")


def format_yes_no(value: bool) -> str:
    return "yes" if value else "no"


def parse_int(text: str, what: str, minimum: int = 0, maximum: int = UNLIMITED) -> int:
    text = text.strip()
    if not re.fullmatch(r"-?\d+", text):
        raise bad_value(what, text, "expected a whole number")
    value = int(text)
    if not minimum <= value <= maximum:
        raise bad_value(what, text, f"must be between {minimum} and {maximum}")
    return value
