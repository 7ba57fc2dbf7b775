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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(\d+)([smhdw]?)$")


def parse_duration(text: str, what: str, minimum: int = 0) -> int:
    """A span of time in seconds: plain seconds or N with s, m, h, d or w (`5m`, `90s`, `1h`);
    several parts add up (`1h30m`)."""
    body = text.strip().lower()
    parts = re.findall(r"\d+[smhdw]?", body)
    if not body or "".join(parts) != body or len(parts) > 5:
        raise bad_value(what, text, "expected seconds or N with s, m, h, d or w, such as 5m")
    total = 0
    for part in parts:
        match = _DURATION_RE.match(part)
        assert match is not None
        total += int(match[1]) * _DURATION_UNITS[match[2] or "s"]
    if total < minimum:
        raise bad_value(what, text, f"at least {minimum} s")
    return total


def format_duration(seconds: int) -> str:
    """The shortest exact form with one unit, as people write it: 300 -> 5m, 90 -> 90s."""
    for suffix in ("w", "d", "h", "m"):
        scale = _DURATION_UNITS[suffix]
        if seconds and seconds % scale == 0:
            return f"{seconds // scale}{suffix}"
    return f"{seconds}s"


def human_age(seconds: float) -> str:
    """How long ago, on one short column: 45s, 12m, 3h, 2d."""
    value = max(0, int(seconds))
    for suffix, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= scale * (2 if suffix != "m" else 1):
            return f"{value // scale}{suffix}"
    return f"{value}s"
