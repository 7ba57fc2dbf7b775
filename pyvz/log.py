"""Messages: to the terminal (unless --quiet) and, always, to vzctl.log.

Library code says what happens through `log`; only the CLI decides where it goes. This is
a few lines rather than the logging module, which alone costs ~8 ms of start-up per command.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

# NOTE: on stderr without a prefix, where vzctl says something there and still succeeds.
DEBUG, INFO, WARNING, NOTE, ERROR = 10, 20, 30, 35, 40
_PREFIX = {WARNING: "WARNING: ", ERROR: "Error: "}
# The tools whose OpenVZ originals print through vzctl's logger (src/lib/logger.c), which adds
# no prefix: each message carries its own words ("Unable to ...", "Error: ..."), so ours do too.
# The others (vzubc, vzdump, vzmigrate, vztmpl-dl... scripts in OpenVZ) keep "Error: ".
BARE_TOOLS = frozenset({"vzctl", "vzlist"})


class Log:
    def __init__(self) -> None:
        self.tool = "pyvz"
        self.quiet = False
        self.verbose = False
        self.file: TextIO | None = None
        self.ctid = ""
        self.prefixes = _PREFIX
        self.info_to_stderr = False  # vzctl run: stdout is the command's alone

    def emit(self, level: int, message: str) -> None:
        prefix = self.prefixes.get(level, "")
        if level >= WARNING:
            print(prefix + message, file=sys.stderr, flush=True)
        elif level < INFO:
            # --verbose's extra lines go to stderr: what a command prints on stdout (status,
            # exec's output) stays what scripts parse, verbose or not.
            if self.verbose and not self.quiet:
                print(message, file=sys.stderr, flush=True)
        elif not self.quiet:
            print(message, file=sys.stderr if self.info_to_stderr else sys.stdout, flush=True)
        if self.file is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.file.write(f"{stamp} {self.tool} : {self.ctid}{prefix}{message}\n")
            self.file.flush()

    def debug(self, message: str) -> None:
        self.emit(DEBUG, message)

    def info(self, message: str) -> None:
        self.emit(INFO, message)

    def warning(self, message: str) -> None:
        self.emit(WARNING, message)

    def note(self, message: str) -> None:
        self.emit(NOTE, message)

    def error(self, message: str) -> None:
        self.emit(ERROR, message)


log = Log()


def set_ctid(ctid: int | None) -> None:
    log.ctid = f"CT {ctid} : " if ctid is not None else ""


def setup(tool: str, log_file: Path | None, quiet: bool = False, verbose: int = 0) -> None:
    log.tool, log.quiet, log.verbose = tool, quiet, bool(verbose)
    log.prefixes = {WARNING: _PREFIX[WARNING]} if tool in BARE_TOOLS else _PREFIX
    if log.file is not None:
        log.file.close()
        log.file = None
    if log_file is None:
        return
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError:
        return  # an unwritable log must not stop the command
    log.file = os.fdopen(fd, "a")
