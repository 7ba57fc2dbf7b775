"""argparse, adapted to vzctl's conventions. Imported only by commands that have options."""

from __future__ import annotations

import argparse
import difflib
import re
from typing import NoReturn

from pyvz.errors import ExitCode, VzError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and vzctl's exit code 20.

    `option_code`: the code for an unknown option or an option without its value, where
    vzctl's command reads its options with getopt_long and says 21 for those (set,
    create, the snapshot commands); a missing required argument stays 20."""

    option_code = ExitCode.INVALID_PARAMETER_SYNTAX
    commands: dict[str, ArgumentParser]  # a parser with subcommands: their parsers by name
    getopt_words = False  # say a bad option as glibc's getopt_long does (vzctl's commands)

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:  # a typo: name the closest choice rather than listing them all
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "choose from " + ", ".join(choices)
            if self.prog == "vzctl":  # vzctl's words first, which scripts may look for
                tail = f" (did you mean {close[0]!r}?)" if close else ""
                raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"Bad command: {match.group(1)}{tail}")
            message = f"invalid choice {match.group(1)!r}: {hint}"
        if self.prog.split()[0] == "vzctl":
            vzctl_words = _vzctl_words(message)
            if vzctl_words is not None:
                raise VzError(*vzctl_words)
        code = ExitCode.INVALID_PARAMETER_SYNTAX
        getopt_error = ("unrecognized arguments", "ambiguous option", "expected one", "invalid choice")
        if any(what in message for what in getopt_error):
            code = self.option_code
        if self.getopt_words:
            words = getopt_words(self.prog.split()[0], message)
            if words is not None:
                if words.startswith("Invalid extra arguments"):
                    code = ExitCode.INVALID_PARAMETER_SYNTAX  # vzctl: after its options are read
                raise VzError(code, words)
        raise VzError(code, f"{message} (see {self.prog} --help)")


def _vzctl_words(message: str) -> tuple[ExitCode, str] | None:
    """What vzctl 4.11 says itself (vzctl-actions.c) where argparse would say its own."""
    if re.match(r"the following arguments are required: --id/--uuid", message):
        return ExitCode.INVALID_PARAMETER_SYNTAX, "Invalid syntax: snapshot id is missing"
    match = re.fullmatch(r"argument TTYNUM: invalid int value: '(.*)'", message)
    if match:
        return ExitCode.INVALID_PARAMETER_VALUE, f"Invalid tty number: {match.group(1)}"
    return None


def getopt_words(prog: str, message: str) -> str | None:
    """argparse's complaint in the words glibc's getopt_long prints for it, or None."""
    match = re.fullmatch(r"unrecognized arguments: (.*)", message)
    if match:
        extra = match.group(1).split(" ")
        first = extra[0]
        if first.startswith("--"):
            return f"{prog}: unrecognized option '{first}'"
        if first.startswith("-") and len(first) > 1:
            return f"{prog}: invalid option -- '{first[1]}'"
        return "Invalid extra arguments: " + "".join(f"{word} " for word in extra)
    match = re.fullmatch(r"argument ([^ :/]+)(?:/[^ :]+)*: expected one argument", message)
    if match:
        return f"{prog}: option '{match.group(1)}' requires an argument"
    match = re.fullmatch(r"ambiguous option: (\S+?)(?:=\S*)? could match (.*)", message)
    if match:
        possible = " ".join(f"'{option}'" for option in match.group(2).split(", "))
        return f"{prog}: option '{match.group(1)}' is ambiguous; possibilities: {possible}"
    return None
