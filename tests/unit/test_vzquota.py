"""vzquota's text and command line. The expected lines are written out from vzquota's printf
formats (src/stat.c: "%11s %14s  %14s %14s %8s", "%11s %14llu%c %14llu %14llu %8s", the batch
"%14llu %14llu %14llu %14lu %14lu", the -t part) and its time rules (src/common.c)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.cli.quotatext import grace_left, parse_time, rounded, status_lines, ugid_lines
from pyvz.cli.vzquota import main_args, parse_command
from pyvz.ct.quota import Level, Limits, QuotaFile, Status, blocks_of, count_inodes
from pyvz.ct.quotacmd import vzquota_line
from pyvz.errors import QuotaExit, VzError

NOW = 1_700_000_000


def status(blocks: int, inodes: int, **kw: int) -> Status:
    limits = Limits(
        kw.get("bsoft", 51200), kw.get("bhard", 61440), kw.get("isoft", 0), kw.get("ihard", 0), 600, 600
    )
    qf = QuotaFile(True, limits, block_grace=kw.get("bgrace", 0), inode_grace=kw.get("igrace", 0))
    return Status(qf, blocks, inodes, limits.block_hard, True)


def test_stat_table_as_vzquota_prints_it() -> None:
    assert status_lines(status(2112, 305), batch=False, now=NOW) == [
        "   resource          usage       softlimit      hardlimit    grace",
        "  1k-blocks           2112           51200          61440         ",
        "     inodes            305               0              0         ",
    ]


def test_over_the_soft_limit_is_starred_with_the_grace_left() -> None:
    st = status(52000, 1200, isoft=1000, ihard=2000, bgrace=NOW + 3 * 3600, igrace=NOW - 1)
    assert status_lines(st, batch=False, now=NOW)[1:] == [
        "  1k-blocks          52000*          51200          61440    03:00",
        "     inodes           1200*           1000           2000     none",
    ]
    two_days = status(52000, 0, bgrace=NOW + 2 * 86400 + 5)
    assert status_lines(two_days, batch=False, now=NOW)[1].endswith("    2days")


def test_a_grace_is_not_shown_under_the_soft_limit() -> None:
    st = status(100, 0, bgrace=NOW + 60)  # vzquota zeroes btime when usage <= softlimit
    assert status_lines(st, batch=True, now=NOW)[0].split()[3] == "0"


def test_batch_mode_lines() -> None:
    st = status(52000, 1200, isoft=1000, ihard=2000, bgrace=NOW + 60, igrace=NOW + 120)
    assert status_lines(st, batch=True, now=NOW) == [
        "         52000          51200          61440     1700000060            600",
        "          1200           1000           2000     1700000120            600",
    ]


def test_user_group_part() -> None:
    st = status(1, 1)
    assert ugid_lines(st, batch=False, force=False) == [
        "User/group quota: off,inactive",
        "Ugids: loaded 0, total 0, limit 0",
        "Ugid limit was exceeded: no",
        "",
        "User/group grace times and quotafile flags:",
        " type block_exp_time inode_exp_time  dqi_flags",
        " user                                       0h",
        "group                                       0h",
    ]
    assert ugid_lines(st, batch=False, force=True)[0] == "User/group quota: -,inactive"
    assert ugid_lines(st, batch=True, force=True) == [
        "-1 0",
        "0 0 0",
        "0",
        " user 0 0         0h",
        "group 0 0         0h",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600", 600),
        ("  600", 600),
        ("1:00", 60),
        ("1:00:00", 3600),
        ("2:03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("7D", 7 * 86400),
        ("01w", 7 * 86400),
        ("3m", 90 * 86400),
        ("1y", 365 * 86400),
        ("2h", 7200),
        ("1:60", None),  # seconds must be below a minute
        ("24:00:00", None),
        ("1:2:3:4:5", None),
        ("1::2", None),
        ("x", None),
        ("5q", None),
        ("d", None),
        ("", None),
        ("1.5", None),
    ],
)
def test_time_arguments(text: str, seconds: int | None) -> None:
    assert parse_time(text) == seconds


def test_time_rounding() -> None:
    assert rounded(29) == "00:00"
    assert rounded(30) == "00:01"
    assert rounded(3 * 3600 + 59 * 60 + 40) == "04:00"
    assert rounded(86400) == "1days"
    assert grace_left(0, NOW) == ""
    assert grace_left(NOW, NOW) == "none"


def test_blocks_round_up() -> None:
    assert [blocks_of(n) for n in (0, 1, 1024, 1025)] == [0, 1, 1, 2]


def test_messages_in_vzquota_form() -> None:
    assert vzquota_line(Level.ERROR, "Quota is not running for id 101") == (
        "vzquota : (error) Quota is not running for id 101\n"
    )
    # vzquota's error() ends the line itself, after a text that may end in one already
    assert vzquota_line(Level.ERROR, "Quota accounting is off, try vzquota show id\n").endswith("id\n\n")
    assert vzquota_line(Level.WARNING, "Quota is running for id 5 already\n") == (
        "vzquota : (warning) Quota is running for id 5 already\n"
    )
    assert vzquota_line(Level.INFO, "x\n") == "vzquota : (info) x\n"


def test_options_as_getopt_reads_them() -> None:
    opts = parse_command("setlimit", ["101", "--block-soft", "10", "-B20", "-e", "1h", "--inode-hardlimit=7"])
    assert opts.ctid == 101
    assert opts.limits == {"block_soft": 10, "block_hard": 20, "block_exptime": 3600, "inode_hard": 7}
    opts = parse_command("on", ["7", "-s", "1", "-u", "50", "-f", "--nocheck", "-p", "/x"])
    assert (opts.ugid_on, opts.ugid_limit, opts.path) == (True, 50, Path("/x"))
    assert {"-f", "nocheck"} <= opts.flags
    assert "-t" in parse_command("stat", ["7", "-t"]).flags


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus", "101"],
        ["stat"],
        ["stat", "x101"],
        ["stat", "-t", "101"],  # the quota id comes first
        ["stat", "101", "--bogus"],
        ["stat", "101", "-b", "1"],  # stat takes no limits
        ["setlimit", "101", "-b", "ten"],
        ["setlimit", "101", "-i", str(2**32)],
        ["setlimit", "101", "-e", "5q"],
        ["on", "101", "-s", "2"],
        ["stat", "101", "-c", "/var/vzquota/quota.101", "-R"],
        ["stat", "101", "-c", "/var/vzquota/quota.101"],
    ],
)
def test_bad_command_lines_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(VzError) as err:
        parse_command(argv[0], argv[1:])
    assert err.value.code is QuotaExit.USAGE
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "101", "-b", "1", "-B", "2"],  # init needs -p and every limit
        ["setlimit", "101"],  # nothing to set
        ["-x", "stat", "101"],
        [],
    ],
)
def test_usage_errors_exit_2_before_touching_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_args(argv) == 2
    err = capsys.readouterr().err
    if argv:
        assert len(err.strip().splitlines()) == 1, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_args(["-V"]) == 0
    assert capsys.readouterr().out.startswith("vzquota (pyvz) ")


def test_inodes_are_counted_once_per_hard_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a").write_text("a")
    os.link(tmp_path / "d/a", tmp_path / "d/b")
    (tmp_path / "c").write_text("c")
    os.symlink("c", tmp_path / "l")
    assert count_inodes(tmp_path) == 5  # the top, d, a (= b), c, l
