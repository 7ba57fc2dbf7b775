"""pyvz.run: the one way to run an external command."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest

import pyvz.run
from pyvz.errors import ExitCode, VzError
from pyvz.run import Result, run


def test_success_returns_output() -> None:
    result = run(["sh", "-c", "echo out; echo err >&2"])
    assert result == Result(("sh", "-c", "echo out; echo err >&2"), 0, "out\n", "err\n")


def test_argv_is_never_a_shell_string(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = run(["echo", f"; touch {marker}", "$(id)", "*"])
    assert result.stdout == f"; touch {marker} $(id) *\n"
    assert not marker.exists()


def test_failure_message_has_command_code_and_stderr_tail() -> None:
    argv = ["sh", "-c", "echo 'first line' >&2; for i in 1 2 3 4 5 6; do echo line$i >&2; done; exit 3"]
    with pytest.raises(VzError) as caught:
        run(argv)
    message = caught.value.message
    assert caught.value.code == ExitCode.SYSTEM_ERROR
    assert shlex.join(argv) in message
    assert "exit code 3" in message
    assert "line6" in message and "line2" in message
    assert "line1" not in message and "| first line" not in message  # only the tail
    assert "\n" not in message


def test_failure_uses_stdout_when_stderr_is_empty() -> None:
    with pytest.raises(VzError, match=r"exit code 1\): only on stdout"):
        run(["sh", "-c", "echo only on stdout; exit 1"])


def test_failure_with_custom_error_code() -> None:
    with pytest.raises(VzError) as caught:
        run(["false"], error_code=ExitCode.BAD_TEMPLATE)
    assert caught.value.code == ExitCode.BAD_TEMPLATE
    assert caught.value.message == "`false` failed (exit code 1)"


def test_killed_by_signal_is_reported() -> None:
    with pytest.raises(VzError, match="killed by signal 9"):
        run(["sh", "-c", "kill -9 $$"])


def test_check_false_returns_the_code() -> None:
    result = run(["sh", "-c", "echo partial; exit 42"], check=False)
    assert result.returncode == 42
    assert result.stdout == "partial\n"
    assert run(["sh", "-c", "kill -9 $$"], check=False).returncode == -9


def test_missing_binary_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only searchable dirs: an unreadable one on PATH turns ENOENT into EACCES (see the xfail below).
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    with pytest.raises(VzError) as caught:
        run(["pyvz-no-such-tool-xyz", "--help"])
    assert caught.value.code == ExitCode.SYSTEM_ERROR
    assert caught.value.message.startswith("pyvz-no-such-tool-xyz is not installed")


def test_unrunnable_binary_is_a_vzerror(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(VzError) as caught:
        run([str(script)])
    assert str(script) in caught.value.message


def test_timeout_kills_the_process_and_raises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(VzError) as caught:
        run(["sh", "-c", f"echo $$ > {shlex.quote(str(pidfile))}; exec sleep 30"], timeout=0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert "timed out after 0.5 s" in caught.value.message
    assert "sleep 30" in caught.value.message
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


def test_timeout_escalates_to_kill(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pyvz.run, "_KILL_GRACE", 0.3)
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(VzError, match="timed out"):
        # ignores TERM; exec keeps it one process so only the grace period is waited for
        run(["sh", "-c", f"trap '' TERM; echo $$ > {shlex.quote(str(pidfile))}; exec sleep 30"], timeout=0.3)
    assert time.monotonic() - started < 5
    assert not Path(f"/proc/{int(pidfile.read_text())}").exists()


def test_timeout_bounds_commands_with_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyvz.run, "_KILL_GRACE", 0.2)
    started = time.monotonic()
    with pytest.raises(VzError, match="timed out"):
        run(["sh", "-c", "sleep 10; true"], timeout=0.3)
    assert time.monotonic() - started < 5  # not held up by the child: it sleeps for 10 s


def test_lang_is_c_utf8_and_lc_all_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("LC_ALL", "fr_FR.UTF-8")
    result = run(["sh", "-c", 'echo "$LANG|${LC_ALL-unset}"'])
    assert result.stdout == "C.UTF-8|unset\n"


def test_env_is_added_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYVZ_TEST_INHERITED", "kept")
    result = run(["sh", "-c", 'echo "$VEID $PYVZ_TEST_INHERITED"'], env={"VEID": "101"})
    assert result.stdout == "101 kept\n"


def test_stdin_is_dev_null_unless_input_given() -> None:
    assert run(["cat"], timeout=10).stdout == ""
    assert run(["readlink", "/proc/self/fd/0"]).stdout.strip() == "/dev/null"
    assert run(["cat"], input="fed\n").stdout == "fed\n"


def test_capture_false_leaves_output_alone(capfd: pytest.CaptureFixture[str]) -> None:
    result = run(["echo", "to the terminal"], capture=False)
    assert result.stdout == ""
    assert capfd.readouterr().out == "to the terminal\n"


def test_argv_tuple_and_list_give_the_same_result() -> None:
    assert run(("echo", "x")).argv == run(["echo", "x"]).argv == ("echo", "x")


def test_does_not_leak_environment_changes() -> None:
    before = dict(os.environ)
    run(["true"], env={"PYVZ_SOMETHING": "1"})
    assert dict(os.environ) == before


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def test_supervised_returns_the_code_and_no_timeout() -> None:
    assert pyvz.run.supervised(["sh", "-c", "exit 3"], forward=_forward) == (3, False)


def test_supervised_timeout_forwards_term_then_kill() -> None:
    # The first command ends on TERM with its own code; the second ignores TERM: KILL follows.
    polite = pyvz.run.supervised(
        ["sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.05; done"], forward=_forward, timeout=0.3
    )
    assert polite == (5, True)
    started = time.monotonic()
    stubborn = pyvz.run.supervised(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], forward=_forward, timeout=0.3, grace=0.3
    )
    assert stubborn == (-9, True)
    assert time.monotonic() - started < 5  # not left waiting for a command that ignores TERM


def test_supervised_hands_our_signals_on() -> None:
    # SIGTERM to us reaches the command (which says so by its code), and we are still alive.
    import signal

    before = signal.getsignal(signal.SIGTERM)
    script = "trap 'exit 7' TERM; kill -TERM $PPID; while :; do sleep 0.05; done"
    assert pyvz.run.supervised(["sh", "-c", script], forward=_forward) == (7, False)
    assert signal.getsignal(signal.SIGTERM) == before  # its handler is gone again
