"""pyvz.cli.vzctl: OpenVZ's command line, with syntax errors as one line and exit code 20."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvz.cli.common import run_tool
from pyvz.cli.vzctl import _options, build_parser, dispatch, parse_argv
from pyvz.errors import ExitCode, VzError
from pyvz.log import setup
from pyvz.params import for_command


@pytest.fixture
def isolated_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A PYVZ_ROOT with nothing in it, and the global log closed again afterwards."""
    monkeypatch.setenv("PYVZ_ROOT", str(tmp_path))
    try:
        yield tmp_path
    finally:
        setup("pyvz", None)


def syntax_error(argv: list[str]) -> VzError:
    with pytest.raises(VzError) as caught:
        parse_argv(argv)
    return caught.value


def test_global_flag_and_create_options() -> None:
    ns = build_parser().parse_args(["--quiet", "create", "101", "--hostname", "x"])
    assert ns.quiet is True
    assert ns.verbose is False
    assert ns.command == "create"
    assert ns.ctid == "101"
    assert ns.hostname == "x"
    assert ns.ostemplate is None


def test_every_param_option_is_accepted() -> None:
    for command in ("create", "set"):
        for param in for_command(command):
            for option in param.options:
                ns = build_parser().parse_args([command, "101", option, "value"])
                expected = ["value"] if param.multi else "value"  # repeatable options collect a list
                assert getattr(ns, param.name) == expected, option


def test_repeated_options_are_joined() -> None:
    ns = build_parser().parse_args(["set", "101", "--nameserver", "10.0.0.1", "--nameserver", "10.0.0.2"])
    assert _options(ns, "set")["nameserver"] == "10.0.0.1 10.0.0.2"


def test_set_flags() -> None:
    ns = build_parser().parse_args(["set", "web", "--onboot", "yes", "--save", "--setmode", "restart"])
    assert (ns.ctid, ns.onboot, ns.save, ns.setmode) == ("web", "yes", True, "restart")


def test_delete_is_an_alias_of_destroy() -> None:
    assert build_parser().parse_args(["delete", "101"]).ctid == "101"


def test_exec_keeps_options_of_the_command() -> None:
    ns = build_parser().parse_args(["exec", "101", "ls", "-l", "/"])
    assert ns.command == "exec"
    assert ns.ctid == "101"
    assert ns.args == ["ls", "-l", "/"]
    ns = build_parser().parse_args(["exec2", "101", "sh", "-c", "exit 3", "--quiet"])
    assert ns.args == ["sh", "-c", "exit 3", "--quiet"]
    assert ns.quiet is False  # after the command it belongs to the command


def test_enter_exec_and_console_tty() -> None:
    assert build_parser().parse_args(["enter", "101", "--exec", "id", "-u"]).exec_args == ["id", "-u"]
    assert build_parser().parse_args(["console", "101"]).tty == 0
    assert build_parser().parse_args(["console", "101", "2"]).tty == 2


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # vzctl reads create's, set's and the snapshot commands' options with getopt_long:
        # an unknown option, one without its value or an ambiguous prefix is 21 there
        (["create", "101", "--bogus"], 21),
        (["create", "101", "--hostname"], 21),
        (["create", "101", "--onboot", "yes"], 21),  # a `set` option
        (["set", "101", "--num", "5"], 21),  # --numproc, --numfile, ...
        (["set", "101", "--setmode", "sometimes"], 21),
        (["snapshot", "101", "--bogus"], 21),
        # everything else is 20
        (["--bogus", "status", "101"], 20),
        (["start", "101", "--bogus"], 20),
        (["stop", "101", "--bogus"], 20),
        (["console", "101", "tty1"], 21),  # "Invalid tty number: tty1"
        (["snapshot-switch", "101"], 20),  # "Invalid syntax: snapshot id is missing"
        (["create"], 21),  # "CT ID missing"
        ([], 20),
    ],
)
def test_bad_option_is_one_line_with_vzctls_code(argv: list[str], code: int) -> None:
    err = syntax_error(argv)
    assert int(err.code) == code
    assert "\n" not in err.message
    # getopt_long's own words where vzctl has getopt say it, else argparse's and a pointer to help
    vzctl_own = ("CT ID missing", "Invalid tty number: tty1", "Invalid syntax: snapshot id is missing")
    assert err.message.startswith("vzctl: ") or err.message in vzctl_own or "--help" in err.message


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["set", "101", "--bogus", "1"], 21, "vzctl: unrecognized option '--bogus'"),
        (["create", "101", "--hostname"], 21, "vzctl: option '--hostname' requires an argument"),
        (["set", "101", "-z", "1"], 21, "vzctl: invalid option -- 'z'"),
        (
            ["set", "101", "--numf", "5"],
            21,
            "vzctl: option '--numf' is ambiguous; possibilities: '--numflock' '--numfile'",
        ),
        (["start", "101", "--bogus"], 20, "vzctl: unrecognized option '--bogus'"),
        (["suspend", "101", "--bogus"], 20, "vzctl: unrecognized option '--bogus'"),  # an alias
        (["start", "101", "extra", "words"], 20, "Invalid extra arguments: extra words "),
        (["set", "101", "--save", "extra"], 20, "Invalid extra arguments: extra "),
        (["stop"], 21, "CT ID missing"),
    ],
)
def test_bad_option_in_getopts_words(argv: list[str], code: int, message: str) -> None:
    """What glibc's getopt_long prints for vzctl (its argv[0] is "vzctl"), and vzctl's codes."""
    err = syntax_error(argv)
    assert (int(err.code), err.message) == (code, message)


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["set", "101", "--numpr", "300"], "numproc", "300"),  # getopt_long takes a prefix
        (["set", "101", "-p", "300"], "numproc", "300"),  # and vzctl's one-letter UBC forms
        (["set", "101", "-k", "1M", "-l", "2", "-f", "3", "-t", "4"], "numpty", "4"),
        (["set", "101", "-i", "5", "-b", "6", "-e", "7", "-n", "8", "-x", "9"], "dcachesize", "9"),
        (["set", "101", "--name", ""], "name", ""),
        (["start", "101", "--wai"], "wait", True),
    ],
)
def test_vzctl_option_forms(argv: list[str], dest: str, value: object) -> None:
    assert getattr(parse_argv(argv), dest) == value


def test_unknown_command_is_syntax_error_on_one_line() -> None:
    err = syntax_error(["bogus", "101"])
    assert err.code == ExitCode.INVALID_PARAMETER_SYNTAX
    assert "\n" not in err.message
    assert err.message == "Bad command: bogus"  # vzctl's words; no command is close to it
    assert syntax_error(["strat", "101"]).message == "Bad command: strat (did you mean 'start'?)"


def test_build_parser_for_one_command_parses_the_same() -> None:
    argv = ["create", "101", "--hostname", "x", "--diskspace", "1G"]
    assert vars(build_parser("create").parse_args(argv)) == vars(build_parser().parse_args(argv))
    assert build_parser("delete").parse_args(["delete", "101"]).command == "delete"


def test_dispatch_rejects_reserved_ctid_before_touching_anything(isolated_root: Path) -> None:
    with pytest.raises(VzError) as caught:
        dispatch(["create", "100", "--hostname", "x"])
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert list(isolated_root.iterdir()) == []


def test_dispatch_unknown_command_says_bad_command(isolated_root: Path) -> None:
    with pytest.raises(VzError) as caught:
        dispatch(["bogus", "101"])
    assert caught.value.code == ExitCode.INVALID_PARAMETER_SYNTAX
    assert caught.value.message == "Bad command: bogus"


def test_run_tool_maps_errors_to_exit_codes(isolated_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool("vzctl", dispatch, ["create", "101", "--bogus"]) == 21
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err == "vzctl: unrecognized option '--bogus'\n"  # no "Error: ": vzctl's logger adds none

    # A name no CT has is a bad CT ID to vzctl (its get_veid_by_name finds none).
    assert run_tool("vzctl", dispatch, ["status", "nosuchname"]) == int(ExitCode.INVALID_PARAMETER_VALUE)
    assert capsys.readouterr().err == "Bad CT ID nosuchname\n"

    log = (isolated_root / "var/log/vzctl.log").read_text()
    assert "vzctl : vzctl: unrecognized option '--bogus'" in log


@pytest.mark.parametrize(
    "argv",
    [
        ["chkpnt", "101"],
        ["suspend", "101", "--dumpfile", "/tmp/d"],
        ["chkpnt", "101", "--suspend"],
        ["--quiet", "chkpnt", "--dump", "101"],
        ["restore", "101", "--undump", "--dumpfile", "x"],
        ["resume", "101"],
        ["restore", "--resume", "101"],
    ],
)
def test_the_fast_reading_of_chkpnt_and_restore_agrees_with_argparse(argv: list[str]) -> None:
    from pyvz.cli.vzctl import ALIASES, _fast_parse

    fast = _fast_parse(argv)
    assert fast is not None
    slow = build_parser().parse_args(argv)
    assert ALIASES.get(fast.command, fast.command) == ALIASES.get(slow.command, slow.command)
    for key in ("ctid", "dumpfile", "quiet", "suspend", "dump", "kill", "resume"):
        if hasattr(slow, key):
            assert getattr(fast, key) == getattr(slow, key), key
    if hasattr(slow, "undump"):
        assert fast.undump == slow.undump


@pytest.mark.parametrize("argv", [["chkpnt", "101", "--dumpfile"], ["chkpnt", "--dumpfile", "--dump", "101"]])
def test_what_the_fast_reading_does_not_understand_goes_to_argparse(argv: list[str]) -> None:
    from pyvz.cli.vzctl import _fast_parse

    assert _fast_parse(argv) is None
