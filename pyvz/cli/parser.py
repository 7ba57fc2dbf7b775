"""argparse, adapted to vzctl's conventions. Imported only by commands that have options."""

from __future__ import annotations

import argparse
from typing import NoReturn

from pyvz.errors import ExitCode, VzError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line and vzctl's exit code 20."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"{message} (see {self.prog} --help)")
