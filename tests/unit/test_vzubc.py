"""vzubc against vzctl 4.11's vzubc, byte for byte.

The inputs (fixtures/vzubc/ubc-*.txt) are /proc/user_beancounters text in the OpenVZ kernel's
layout: CT 101 near and over its limits, CT 102 mostly unlimited, the host (0). The expected
outputs beside them are what vzctl 4.11's vzubc script printed for them (its awk program,
run by gawk as on an OpenVZ host), one file per option set; -r and -i run twice against one
store directory, the first run on ubc-1.txt, the second on ubc-2.txt (failures added, held
changed). The row and header formats are also spelled out below from the script's printf
formats, so a fixture cannot drift alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.cli import vzubc
from pyvz.resources.beancounters import Beancounter, proc_text
from pyvz.resources.ubcreport import Options, human, ratio, report
from pyvz.units import UNLIMITED

FIXTURES = Path(__file__).parent / "fixtures" / "vzubc"
UBC_1, UBC_2 = FIXTURES / "ubc-1.txt", FIXTURES / "ubc-2.txt"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYVZ_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


def vzubc_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = vzubc.dispatch(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---- one run per option set ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("default", []),
        ("verbose", ["-v"]),
        ("quiet", ["-q"]),
        ("quiet-ratios", ["-q", "-qh", "0.3", "-qm", "0.95"]),
        ("quiet-percent", ["-q", "-qh", "90", "-qm", "99"]),  # over 1: a percentage
        ("color", ["-c"]),
        ("color-quiet", ["-c", "-q", "-qh", "0.9"]),
        ("ctids", ["102", "0"]),
    ],
)
def test_one_run(root: Path, capsys: pytest.CaptureFixture[str], name: str, args: list[str]) -> None:
    code, out, err = vzubc_run(capsys, *args, "-f", str(UBC_1))
    assert (code, err) == (0, "")
    assert out == fixture(f"{name}.out")


# ---- two runs sharing a store: relative and incremental ------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("relative", ["-r"]),
        ("incremental", ["-i"]),
        ("relative-incremental-quiet", ["-r", "-i", "-q"]),
        ("relative-new-failures", ["-r", "-q", "-qh", "2", "-qm", "2"]),  # the man page: 2 is 2%
        ("verbose-incremental-color", ["-v", "-i", "-c", "101"]),
    ],
)
def test_two_runs(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, args: list[str]
) -> None:
    store = tmp_path / "store"
    for run, source in ((1, UBC_1), (2, UBC_2)):
        code, out, err = vzubc_run(capsys, "-rd", str(store), *args, "-f", str(source))
        assert (code, err) == (0, ""), f"run {run}"
        assert out == fixture(f"{name}-{run}.out"), f"run {run}"
    assert oct(store.stat().st_mode & 0o777) == "0o700"


def test_store_files_are_the_scripts(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    vzubc_run(capsys, "-r", "-i", "-v", "-rd", str(store), "-f", str(UBC_1))
    # One number each, as the script's `print`: failcnt only where it is above 0.
    assert (store / "ubc.101.numproc.failcnt").read_text() == "3\n"
    assert (store / "ubc.101.numothersock.failcnt").read_text() == "2\n"
    assert not (store / "ubc.101.kmemsize.failcnt").exists()
    assert (store / "ubc.101.physpages.held").read_text() == "77003\n"
    assert (store / "ubc.0.numproc.held").read_text() == "212\n"
    assert oct((store / "ubc.101.numproc.failcnt").stat().st_mode & 0o777) == "0o600"
    # -rc clears the failcnt files, -ic the held ones, of the store named before them.
    vzubc_run(capsys, "-rd", str(store), "-rc", "-f", str(UBC_1))
    assert not list(store.glob("*.failcnt")) and list(store.glob("*.held"))
    vzubc_run(capsys, "-ic", "-rd", str(store), "-f", str(UBC_1))  # the default store, not this
    assert list(store.glob("*.held"))
    vzubc_run(capsys, "-rd", str(store), "-ic", "-f", str(UBC_1))
    assert os.listdir(store) == []


def test_relative_counts_again_after_a_restart(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    vzubc_run(capsys, "-r", "-rd", str(store), "-f", str(UBC_2))  # saved: numproc failcnt 11
    code, out, _ = vzubc_run(capsys, "-r", "-rd", str(store), "101", "-f", str(UBC_1))  # now 3
    assert code == 0
    numproc = [line for line in out.splitlines() if line.startswith("      numproc|")]
    assert numproc == [row("numproc", "118 ", "49%", "49%", "240 ", "100%", "100%", "240 ", "240 ", "3 ")]


# ---- the formats, from the script's printf and awk functions --------------------------------


def row(name: str, *cells: str, delta: str = "") -> str:
    """One beancounter line: the script's "%13s|%5s%s %5s %5s|%5s %5s %5s|%5s|%5s| %5s"."""
    held, held_b, held_l, maxheld, max_b, max_l, barrier, limit, failcnt = cells
    return "%13s|%5s%s %5s %5s|%5s %5s %5s|%5s|%5s| %5s" % (
        name,
        held,
        delta,
        held_b,
        held_l,
        maxheld,
        max_b,
        max_l,
        barrier,
        limit,
        failcnt,
    )


def header(bcid: str, inc: bool, rel: bool) -> list[str]:
    """The script's three header lines (its prepare_header() formats)."""
    extra = "-------" if inc else ""
    return [
        "-" * 68 + extra,
        "CT %-10s| HELD%s  Bar%%  Lim%%| MAXH  Bar%%  Lim%%| BAR | LIM |%cFAIL"
        % (bcid, "  +/-  " if inc else "", "+" if rel else " "),
        "-------------+-" + extra + "----------------+-----------------+-----+-----+------",
    ]


def test_layout_against_the_printf_formats() -> None:
    lines = fixture("default.out").splitlines()
    rule = "-" * 68
    assert lines[:3] == header("101", inc=False, rel=False)
    assert lines[-1] == rule
    # 14503156 bytes is 13.8M; 14503156/14372700 is 100.9%, shown as an integer.
    kmemsize = ("13.8M", "100%", "98%", "19.4M", "141%", "137%", "13.7M", "14.1M", "- ")
    assert lines[3] == row("kmemsize", *kmemsize)
    # Pages are 4 KiB: 77003 pages are 300M; a barrier of 0 is '-'.
    assert row("physpages", "300M", "- ", "58%", "512M", "- ", "100%", "- ", "512M", "- ") in lines
    # 15592/2097152 is 0.7%, the one-digit form: awk compares "0.7" with 10 as strings.
    assert row("othersockbuf", "15.2K", "1%", "0.7%", "127K", "11%", "6%", "1.07M", "2M", "- ") in lines
    # One blank line between two CTs, and their own header.
    second = lines.index(header("102", inc=False, rel=False)[1])
    assert lines[second - 2 : second] == ["", rule]


def test_incremental_and_relative_headers() -> None:
    lines = fixture("relative-incremental-quiet-2.out").splitlines()
    assert lines[:3] == header("101", inc=True, rel=True)
    assert len(lines[0]) == 75
    # numproc failcnt went from 3 to 11: +FAIL shows 8; physpages held fell by 1000 pages.
    numproc = ("118 ", "49%", "49%", "240 ", "100%", "100%", "240 ", "240 ", "8 ")
    assert row("numproc", *numproc, delta=" " * 7) in lines  # held unchanged: a blank +/-
    physpages = ("296M", "- ", "58%", "512M", "- ", "100%", "- ", "512M", "- ")
    assert row("physpages", *physpages, delta="%7s" % "-3.91M") in lines


def test_color_codes() -> None:
    text = fixture("color-quiet.out")
    green, normal, yellow, red = "\033[1;32m", "\033[0;39m", "\033[1;33m", "\033[1;31m"
    assert text.startswith(green + "-" * 68 + "\n")
    lines = text.split("\n")
    assert lines[2].endswith(normal)  # the header ends in the normal colour
    assert lines[-2:] == [normal + "-" * 68, ""]  # the last row's normal colour, then the rule
    # Every row starts in its own colour, after the normal colour that ended the row before.
    assert all(line.startswith((normal + red, normal + yellow, normal + normal)) for line in lines[4:-2])
    # A row: its colour, the row, newline, then the normal colour (the script's format + c_n).
    assert f"\n{normal}{yellow}    physpages|" in text
    assert f"\n{normal}{red}      numproc|" in text  # failcnt 3


@pytest.mark.parametrize(
    ("resource", "value", "text"),
    [
        ("numproc", 0, "- "),
        ("numproc", UNLIMITED, "- "),
        ("numproc", UNLIMITED - 1, "- "),  # the same double as unlimited
        ("numproc", 2147483647, "- "),
        ("numproc", 99, "99 "),
        ("numproc", 100, "100 "),
        ("numproc", 1023, "1023 "),
        ("numproc", 1024, "1K"),
        ("numproc", 1536, "1.5K"),
        ("numproc", 102399, "100K"),  # %.3g rounds 99.999 up
        ("numproc", 102400, "100K"),
        ("numproc", 1048575, "1023K"),  # %d truncates
        ("physpages", 1, "4K"),
        ("physpages", 65536, "256M"),
        ("kmemsize", 3 << 50, "3P"),
        ("kmemsize", 1 << 70, "1Z"),
    ],
)
def test_human(resource: str, value: int, text: str) -> None:
    assert human(resource, float(value)) == text


@pytest.mark.parametrize(
    ("part", "whole", "text"),
    [
        (1, 0, "- "),
        (1, UNLIMITED, "- "),
        (1, 2147483647, "- "),
        (0, 100, "- "),
        (4, 10000, "- "),  # 0.04%: "0.0", then "0"
        (5, 1000, "0.5%"),
        (15, 1000, "2%"),  # 1.5%: %.1g
        (19, 1000, "2%"),
        (57, 1000, "5%"),  # 5.7%: "5.7" > "10" as text, so %d
        (99, 1000, "9%"),
        (1, 10, "10%"),
        (3, 2, "150%"),
    ],
)
def test_ratio(part: int, whole: int, text: str) -> None:
    assert ratio(float(part), float(whole)) == text


# ---- input the script refuses --------------------------------------------------------------


def test_unknown_version(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "ubc"
    source.write_text(UBC_1.read_text().replace("Version: 2.5", "Version: 2.6"))
    assert vzubc_run(capsys, "-f", str(source)) == (1, "", "Error: unknown version: 2.6\n")


def test_relative_needs_a_bcid(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Inside a CT of some kernels the file has no "CTID:" column.
    source = tmp_path / "ubc"
    source.write_text("Version: 2.5\n  numproc 7 9 100 120 3\n")
    code, out, _ = vzubc_run(capsys, "-f", str(source))
    assert code == 0
    assert out.splitlines()[1].startswith("CT           | HELD")
    code, out, err = vzubc_run(capsys, "-r", "-rd", str(tmp_path / "s"), "-f", str(source))
    assert (code, out) == (1, "")
    assert err == "Error: can not use relative/incremental modes: BCID is unknown\n"


def test_short_lines_as_awk_reads_them(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A missing field is text to awk, not 0: a missing failcnt prints "0 " (not "- "), and a
    # missing barrier is a division by zero, which stops awk at once (exit 2, no last rule).
    source = tmp_path / "ubc"
    source.write_text("Version: 2.5\n 101: numproc 5 6 7 8 9\n numfile 1 2 3 4\n numpty 1 2 3\n")
    code, out, err = vzubc_run(capsys, "-v", "-f", str(source))
    assert code == 2
    assert out.splitlines()[3:] == [
        row("numproc", "5 ", "71%", "62%", "6 ", "85%", "75%", "7 ", "8 ", "9 "),
        row("numfile", "1 ", "33%", "25%", "2 ", "66%", "50%", "3 ", "4 ", "0 "),
    ]
    assert err == "vzubc: input line 4: numpty: a barrier or limit is missing or not a number\n"


def test_stdin(root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(UBC_1.read_text()))
    assert vzubc_run(capsys, "-f", "-") == (0, fixture("default.out"), "")


# ---- options: the script's messages and exit codes -----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x"], "Unrecognized option: -x"),
        (["--quiet-held"], "Unrecognized option: --quiet-held"),  # the script has no long forms of these
        (["--"], "Unrecognized option: --"),
        (["-qh"], "Error: option -qh requires an argument"),
        (["-q", "-qm", " "], "Error: option -qm requires an argument"),
        (["--file"], "Error: option --file requires an argument"),
        (["-rd"], "Error: option -rd requires an argument"),
        (["-wn"], "Error: option -wn requires an argument"),
        (["-w", "-c"], "Error: can't use --watch and --color together"),
        (["-qh", "0.9"], "Error: -qh and -qm only make sense with --quiet or --color"),
        (["-q", "-v"], "Error: options --quiet and --verbose can't be used together"),
    ],
)
def test_bad_options(root: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = vzubc_run(capsys, "-f", str(UBC_1), *args)
    assert code == 1
    assert err == message + "\n"
    assert out.startswith("Usage: vzubc [option ...] [<ctid> ...]\n")  # the usage, on stdout


def test_help(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = vzubc_run(capsys, "-h", "-x")  # read in order: -h wins
    assert (code, err) == (0, "")
    for option in ("-wd", "-wt", "-wn", "-qh", "-qm", "-rc", "-rd", "-ic", "-id", "--file", "--color"):
        assert f" {option}" in out


def test_unreadable_file(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = vzubc_run(capsys, "-f", str(tmp_path / "missing"))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "missing" in err


def test_unusable_store(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "no" / "store"
    code, out, err = vzubc_run(capsys, "-r", "-rd", str(store), "-f", str(UBC_1))
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and str(store) in err
    assert not store.parent.exists()  # -rd DIR: only DIR is made, as mkdir does


def test_default_store_is_under_the_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vzubc_run(capsys, "-i", "-f", str(UBC_1))[0] == 0
    assert (root / "tmp/vzubc.store/ubc.101.numproc.held").read_text() == "118\n"


def test_names_resolve_to_ctids(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "etc/vz/conf").mkdir(parents=True)
    (root / "etc/vz/names").mkdir()
    (root / "etc/vz/conf/102.conf").write_text('NAME="web"\n')
    (root / "etc/vz/names/web").symlink_to("../conf/102.conf")
    by_name = vzubc_run(capsys, "-f", str(UBC_1), "web", "nosuchct")
    assert by_name == vzubc_run(capsys, "-f", str(UBC_1), "102")
    assert "CT 102 " in by_name[1] and "CT 101 " not in by_name[1]
    assert vzubc_run(capsys, "-f", str(UBC_1), "nosuchct") == (0, "", "")  # unknown: ignored


def test_watch_runs_itself_under_watch(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[list[str]] = []
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/watch" if name == "watch" else None)
    monkeypatch.setattr("os.execv", lambda path, argv: called.append([path, *argv]))
    vzubc_run(capsys, "-w", "-wd", "-wn", "5", "-wt", "-q", "101", "-f", str(UBC_1))
    assert called[0][:7] == ["/usr/bin/watch", "watch", "-d", "-n", "5", "-t", "--"]
    assert called[0][7].endswith(f" -m pyvz.cli.vzubc -w -wd -wn 5 -wt -q 101 -f {UBC_1} -W")
    # -W (the run under watch) turns watch off again.
    assert vzubc_run(capsys, "-w", "-f", str(UBC_1), "-W") == (0, fixture("default.out"), "")
    assert len(called) == 1


# ---- pyvz's own counters in that format ------------------------------------------------------


def test_counters_mainline_lacks_show_as_the_script_shows_zero() -> None:
    text = proc_text(
        [
            (
                101,
                [
                    Beancounter("kmemsize", 2752512, 2871296, UNLIMITED, UNLIMITED, 0),
                    Beancounter("numflock", None, None, 100, 110, None),  # not counted here
                    Beancounter("numproc", 7, 9, 100, 120, 2),
                ],
            )
        ]
    )
    out = report(text, Options()).out.splitlines()
    assert out[3:5] == [
        row("numflock", "- ", "- ", "- ", "- ", "- ", "- ", "100 ", "110 ", "- "),
        row("numproc", "7 ", "7%", "5%", "9 ", "9%", "7%", "100 ", "120 ", "2 "),
    ]
