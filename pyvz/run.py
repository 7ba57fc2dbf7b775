"""The only way pyvz runs an external command."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pyvz.errors import ExitCode, VzError

if TYPE_CHECKING:
    import subprocess

DEFAULT_TIMEOUT = 300.0
_KILL_GRACE = 5.0


class Result(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _run_attached(argv: tuple[str, ...], env: dict[str, str], check: bool, error_code: ExitCode) -> Result:
    """An interactive command on our terminal, waited for with no time limit."""
    try:
        pid = os.posix_spawnp(argv[0], argv, env)
    except FileNotFoundError:
        raise VzError(ExitCode.SYSTEM_ERROR, f"{argv[0]} is not installed (run `make install`)") from None
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot run {argv[0]}: {err.strerror}") from None
    while True:
        try:
            _pid, status = os.waitpid(pid, 0)
            break
        except KeyboardInterrupt:
            continue  # Ctrl-C went to the command too (same terminal); wait for it to end
    code = os.waitstatus_to_exitcode(status)
    if check and code != 0:
        raise VzError(error_code, f"`{shlex.join(argv)}` failed ({_describe_status(code)})")
    return Result(argv, code, "", "")


def _signal(proc: subprocess.Popen[str], signum: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _describe_status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    capture: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    inherit_stdio: bool = False,
    error_code: ExitCode = ExitCode.SYSTEM_ERROR,
) -> Result:
    """Run argv (never a shell string).

    stdin is /dev/null unless `input` is given or `inherit_stdio` hands the caller's terminal
    to the command. On timeout the command gets TERM, then KILL. A failure raises VzError with
    the exact command, its status and the tail of its stderr.
    """
    argv = tuple(argv)
    full_env = dict(os.environ)
    full_env["LANG"] = "C.UTF-8"
    full_env.pop("LC_ALL", None)
    if env:
        full_env.update(env)
    if inherit_stdio and timeout is None:
        return _run_attached(argv, full_env, check, error_code)
    import subprocess  # not needed by interactive commands, which are timed most

    if inherit_stdio:
        stdin: int | None = None
        out: int | None = None
    else:
        stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
        out = subprocess.PIPE if capture else None
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out,
            stderr=out,
            env=full_env,
            text=True,
            # Its own process group, so a timeout can kill what it started too. Interactive
            # commands keep ours: they need the terminal.
            start_new_session=not inherit_stdio,
        )
    except FileNotFoundError:
        raise VzError(ExitCode.SYSTEM_ERROR, f"{argv[0]} is not installed (run `make install`)") from None
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot run {argv[0]}: {err.strerror}") from None
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGTERM, not inherit_stdio)
        try:
            proc.communicate(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, not inherit_stdio)
            proc.communicate()
        raise VzError(ExitCode.SYSTEM_ERROR, f"`{shlex.join(argv)}` timed out after {timeout:g} s") from None
    except BaseException:
        # Ctrl-C: do not leave the child running behind us.
        _signal(proc, signal.SIGKILL, not inherit_stdio)
        proc.wait()
        raise
    result = Result(argv, proc.returncode, stdout or "", stderr or "")
    if check and proc.returncode != 0:
        detail = _tail(result.stderr) or _tail(result.stdout)
        raise VzError(
            error_code,
            f"`{shlex.join(argv)}` failed ({_describe_status(proc.returncode)})"
            + (f": {detail}" if detail else ""),
        )
    return result
