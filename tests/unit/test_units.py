"""pyvz.units: vzctl's value syntax (sizes, barrier:limit, yes/no, integers)."""

from __future__ import annotations

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.units import (
    UNLIMITED,
    BarrierLimit,
    format_size,
    format_yes_no,
    parse_barrier_limit,
    parse_int,
    parse_size,
    parse_yes_no,
)

K = 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("1K", K),
        ("1k", K),
        ("10KB", 10 * K),
        ("1M", K**2),
        ("10G", 10 * K**3),
        ("2T", 2 * K**4),
        ("1P", K**5),
        ("1.5K", 1536),
        ("0.5M", 512 * K),
        (" 7G ", 7 * K**3),
        ("unlimited", UNLIMITED),
        ("UNLIMITED", UNLIMITED),
        (str(UNLIMITED), UNLIMITED),
    ],
)
def test_parse_size_in_bytes(text: str, expected: int) -> None:
    assert parse_size(text, 1) == expected


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("1G", K, K**2),  # 1 GiB in 1 KiB blocks
        ("1M", 4096, 256),  # in 4 KiB pages
        ("1.5K", K, 1),  # fractions of a unit round down
        ("100", K, 100),  # a bare number is already in units
        ("unlimited", K, UNLIMITED),  # unlimited is not scaled
    ],
)
def test_parse_size_converts_suffixed_values_to_the_unit(text: str, unit: int, expected: int) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1E", "1.5", "1..5K", "K", "1 K", "1Q", "0x10", "1,5K"])
def test_parse_size_rejects_bad_input(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_size(text, 1, "diskspace")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert "diskspace" in caught.value.message


def test_parse_size_says_a_fraction_needs_a_suffix() -> None:
    with pytest.raises(VzError, match="fraction needs a suffix"):
        parse_size("1.5", 1)


def test_parse_size_rejects_suffixed_values_beyond_unlimited() -> None:
    with pytest.raises(VzError, match="too large") as caught:
        parse_size("8192P", 1)  # 2**63 bytes
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_parse_size_rejects_unsuffixed_values_beyond_unlimited() -> None:
    with pytest.raises(VzError) as caught:
        parse_size(str(UNLIMITED + 1), 1)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (10 * K**2, K, "10G"),
        (K**2, K, "1G"),
        (1536, 1, "1536"),  # 1.5K has no exact integer suffixed form
        (1536, K, "1536K"),  # 1.5M is not a whole number of M
        (1, K, "1K"),
        (3 * K**5, 1, "3P"),
        (7, 1, "7"),
        (0, K, "0"),
        (UNLIMITED, K, "unlimited"),
        (UNLIMITED, 1, "unlimited"),
    ],
)
def test_format_size(value: int, unit: int, expected: str) -> None:
    assert format_size(value, unit) == expected


@pytest.mark.parametrize("value", [0, 1, 1023, 1024, 1536, 10 * K**2, 5 * K**4, UNLIMITED])
@pytest.mark.parametrize("unit", [1, K])
def test_format_size_round_trips_through_parse_size(value: int, unit: int) -> None:
    assert parse_size(format_size(value, unit), unit) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1G", BarrierLimit(K**2, K**2)),
        ("1G:2G", BarrierLimit(K**2, 2 * K**2)),
        ("1G:unlimited", BarrierLimit(K**2, UNLIMITED)),
        ("unlimited", BarrierLimit(UNLIMITED, UNLIMITED)),
        ("100:200", BarrierLimit(100, 200)),
        ("5M:5M", BarrierLimit(5 * K, 5 * K)),
    ],
)
def test_parse_barrier_limit(text: str, expected: BarrierLimit) -> None:
    assert parse_barrier_limit(text, K, "diskspace") == expected


@pytest.mark.parametrize("text", ["2G:1G", "unlimited:1G", "201:200"])
def test_parse_barrier_limit_rejects_barrier_above_limit(text: str) -> None:
    with pytest.raises(VzError, match="barrier is greater than limit") as caught:
        parse_barrier_limit(text, K, "diskspace")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert "diskspace" in caught.value.message


@pytest.mark.parametrize("text", ["", ":", "1:", ":1", "1:2:3", "1G:x"])
def test_parse_barrier_limit_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_barrier_limit(text, K, "diskspace")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_barrier_limit_str_is_the_config_form() -> None:
    value = BarrierLimit(1048576, 2097152)
    assert str(value) == "1048576:2097152"
    assert parse_barrier_limit(str(value), K, "diskspace") == value


@pytest.mark.parametrize("text", ["yes", "YES", "on", "true", "1", " Yes "])
def test_parse_yes_no_true(text: str) -> None:
    assert parse_yes_no(text, "onboot") is True


@pytest.mark.parametrize("text", ["no", "No", "off", "false", "0", "no\n"])
def test_parse_yes_no_false(text: str) -> None:
    assert parse_yes_no(text, "onboot") is False


@pytest.mark.parametrize("text", ["", "y", "maybe", "2", "yes please"])
def test_parse_yes_no_rejects_other_words(text: str) -> None:
    with pytest.raises(VzError, match="onboot") as caught:
        parse_yes_no(text, "onboot")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_format_yes_no_round_trips() -> None:
    assert format_yes_no(True) == "yes"
    assert format_yes_no(False) == "no"
    assert parse_yes_no(format_yes_no(True), "x") is True
    assert parse_yes_no(format_yes_no(False), "x") is False


def test_parse_int_bounds() -> None:
    assert parse_int(" 42 ", "n") == 42
    assert parse_int("-3", "n", minimum=-5) == -3
    for text in ("4.2", "x", "", "101"):
        with pytest.raises(VzError) as caught:
            parse_int(text, "n", 0, 100)
        assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
