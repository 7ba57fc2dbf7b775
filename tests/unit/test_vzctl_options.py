"""Every command and option of vzctl 4.11 is accepted by pyvz's vzctl.

The list is fixtures/vzctl-4.11-options.txt, written from vzctl 4.11's own option tables (its
header says which), not from pyvz's parameter table: an option pyvz forgets fails here.
Accepted means read as that option: its value lands in the parsed command line, and a flag
changes what is parsed. What pyvz then does with it (apply, or refuse in one line saying
what mainline Linux lacks) is tested with each feature."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pyvz.cli.vzctl import parse_argv
from pyvz.errors import ExitCode, VzError

FIXTURE = Path(__file__).parent / "fixtures" / "vzctl-4.11-options.txt"


class Case(NamedTuple):
    command: str
    option: str
    sample: str

    def argv(self, needed: dict[str, list[str]]) -> list[str]:
        if self.command == "*":
            return [self.option, "status", "101"]
        if self.option == "-":
            return [self.command, "101", *needed.get(self.command, [])]
        if self.option == "ARGS":
            return [self.command, "101", *self.sample.split()]
        value = [] if self.sample == "-" else [self.sample]
        return [self.command, "101", *needed.get(self.command, []), self.option, *value]


def _read() -> tuple[list[Case], dict[str, list[str]]]:
    cases, needed = [], {}
    for line in FIXTURE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        command, option, sample = line.split(None, 2)
        if option == "+":
            needed[command] = sample.split()
        else:
            cases.append(Case(command, option, sample))
    return cases, needed


CASES, NEEDED = _read()


def _values(ns: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(ns).items()}


def _flat(values: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for value in values.values():
        items = value if isinstance(value, list) else [value]
        words += [str(item) for item in items if item is not None]
    return words


def test_the_fixture_holds_what_the_sources_define() -> None:
    """A guard against a truncated fixture: vzctl 4.11's set alone has 84 long options."""
    by_command: dict[str, set[str]] = {}
    for case in CASES:
        by_command.setdefault(case.command, set()).add(case.option)
    assert len({o for o in by_command["set"] if o.startswith("--")}) == 84
    assert {"-k", "-l", "-p", "-f", "-t", "-i", "-b", "-e", "-n", "-x"} <= by_command["set"]
    assert len(by_command["create"]) == 15
    assert by_command["restart"] == by_command["start"] | by_command["stop"]
    assert {"--pci_add", "--pci_del", "--offline-resize", "--root", "--private"} <= by_command["set"]
    for command in ("compact", "exec3", "quotaon", "quotaoff", "quotainit", "snapshot-list", "convert"):
        assert command in by_command


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command} {c.option}")
def test_vzctl_411_option_is_accepted(case: Case) -> None:
    argv = case.argv(NEEDED)
    try:
        ns = parse_argv(argv)
    except VzError as err:  # pragma: no cover - the failure this test is for
        pytest.fail(f"vzctl {' '.join(argv)}: exit {int(err.code)}: {err.message}")
    values = _values(ns)
    if case.option in ("-", "ARGS"):
        assert ns.ctid == "101"
        if case.option == "ARGS":
            words = [*(ns.args if hasattr(ns, "args") else []), *_flat(values)]
            assert case.sample.split()[-1] in words, values
        return
    if case.sample != "-":
        assert case.sample in _flat(values), f"{case.option}'s value is not in {values}"
        return
    # A flag: the same command line without it parses to something else.
    without = parse_argv([word for word in argv if word != case.option])
    assert values != _values(without), f"{case.option} changed nothing in {values}"


def test_an_option_vzctl_does_not_have_is_still_refused() -> None:
    """The test above must be able to fail: an option no vzctl has is not accepted."""
    with pytest.raises(VzError) as caught:
        parse_argv(["set", "101", "--no-such-option", "1"])
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert caught.value.message == "vzctl: unrecognized option '--no-such-option'"


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["create", "101", "--ephemeral"], "yes"),
        (["create", "101", "--ephemeral", "--hostname", "h"], "yes"),
        (["create", "101", "--ephemeral", "no"], "no"),
        (["create", "101"], None),
        (["clone", "101", "102", "--ephemeral"], "yes"),
        (["set", "101", "--ephemeral", "no", "--save"], "no"),
    ],
)
def test_a_flag_parameter_may_be_given_a_value(argv: list[str], value: str | None) -> None:
    """--ephemeral alone is `yes` (the table's `bare`), and takes yes|no as the API sends it."""
    assert parse_argv(argv).ephemeral == value
