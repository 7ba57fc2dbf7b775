"""argparse, adapted to vzctl's conventions. Imported only by commands that have options."""

from __future__ import annotations

import argparse
import difflib
import re
from typing import NoReturn

from pyvz.errors import ExitCode, VzError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and vzctl's exit code 20."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:  # a typo: name the closest choice rather than listing them all
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(match.group(1), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "choose from " + ", ".join(choices)
            message = f"invalid choice {match.group(1)!r}: {hint}"
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"{message} (see {self.prog} --help)")
