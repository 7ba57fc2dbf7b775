"""vzps: the host's ps with a CTID column, and `-E CTID` for one CT's processes only.

Every ps option is handed to procps's ps as it is (docs/host-tools.md says how the CTID
column is added); vzps takes only `-E CTID` for itself, which may be repeated. `-E 0`
keeps the host's own processes: nothing that runs in any pyvz CT, of any root. A CT of
another pyvz root than PYVZ_ROOT's is `TAG:CTID` in the column and after -E.
"""

from __future__ import annotations

import os
import shutil
import sys

from pyvz.cli.common import exit_now, run_tool


def split_selection(argv: list[str]) -> tuple[list[str], list[str]]:
    """(-E values, the rest for ps): `-E N`, `-EN`, `--ctid N`, `--ctid=N`."""
    chosen, rest, at = [], [], 0
    while at < len(argv):
        word = argv[at]
        if word in ("-E", "--ctid"):
            if at + 1 >= len(argv):
                from pyvz.errors import ExitCode, VzError

                raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"option {word} requires a CTID")
            chosen.append(argv[at + 1])
            at += 2
            continue
        if word.startswith("-E") and len(word) > 2:
            chosen.append(word[2:])
        elif word.startswith("--ctid="):
            chosen.append(word.split("=", 1)[1])
        else:
            rest.append(word)
        at += 1
    return chosen, rest


def dispatch(argv: list[str]) -> int:
    from pyvz.hostps import annotate, build
    from pyvz.paths import Paths
    from pyvz.resources.ctprocs import selector
    from pyvz.run import run

    values, ps_args = split_selection(argv)
    tag = Paths.from_env().tag
    selected = [selector(value, tag) for value in values] if values else None
    cmd = build(ps_args, every=selected is not None)
    env = {}
    if sys.stdout.isatty():  # ps fits a terminal's width; leave room for the CTID column
        env["COLUMNS"] = str(max(20, shutil.get_terminal_size().columns - 6))
    done = run(["ps", *cmd.args], check=False, env=env)
    sys.stderr.write(done.stderr)
    if done.returncode != 0 and not done.stdout:
        return done.returncode  # ps refused the options and has said why
    shown = annotate(cmd, done.stdout, selected, tag)
    sys.stdout.write(shown.text)
    if done.returncode != 0:
        return done.returncode
    # As ps says 1 when it selects nothing, so does vzps when the CT selection leaves nothing.
    return 1 if selected is not None and shown.rows == 0 else 0


def main() -> None:
    os.environ.pop("PS_FORMAT", None)  # ps's own default format would hide the PID column
    exit_now(run_tool("vzps", dispatch))


if __name__ == "__main__":
    main()
