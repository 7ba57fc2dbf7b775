"""What every front end shares: error reporting, exit codes, logging set-up."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from pyvz.errors import VzError
from pyvz.log import log, set_ctid, setup
from pyvz.paths import Paths


def exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down: a CLI has nothing to clean up, and
    finalising every module costs ~10 ms per command."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


RESULT_FD_ENV = "PYVZ_RESULT_FD"  # pyvzd reads a failed command's code and message here


def _report(err: VzError) -> None:
    """Hand the error to pyvzd as it is, so an API client gets the CLI's code and text."""
    import os

    fd = os.environ.get(RESULT_FD_ENV, "")
    if fd.isdigit():
        import json

        try:
            os.write(int(fd), json.dumps({"code": int(err.code), "message": err.message}).encode() + b"\n")
        except OSError:
            pass


def run_tool(tool: str, body: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a front end: set up logging, map VzError to its exit code, --debug for tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    ours = args[: args.index("--")] if "--" in args else args  # not a command's own words
    debug = "--debug" in ours
    quiet = "--quiet" in ours
    verbose = "--verbose" in ours
    setup(tool, Paths.from_env().log_file, quiet=quiet, verbose=int(verbose))
    log.debug(f"command line: {tool} {' '.join(args)}")
    try:
        return body(args)
    except VzError as err:
        if debug:
            import traceback

            traceback.print_exc()
        if err.stdout:
            log.info(err.message)
        else:
            log.error(err.message)
        _report(err)
        return int(err.code)
    except KeyboardInterrupt:
        log.error("interrupted; the CT is left as it was or complete (run `vzctl status`)")
        return 130
    except BrokenPipeError:
        return 0
    finally:
        set_ctid(None)
