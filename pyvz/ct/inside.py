"""Running things inside a CT: exec, exec2, enter, runscript and console."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.run import run

if TYPE_CHECKING:
    import subprocess

LOGIN_SHELL = "[ -x /bin/bash ] && exec /bin/bash -l; exec /bin/sh -l"
ESCAPE = b"\x1b"
DETACH = b"."


def _command(args: Sequence[str]) -> list[str]:
    if list(args) == ["-"]:
        return ["/bin/sh"]  # commands come on our stdin, like vzctl exec CTID -
    return ["/bin/sh", "-c", " ".join(args)]


def require_running(host: Host, ctid: int) -> None:
    if not host.runtime.is_running(ctid):
        raise VzError(ExitCode.NOT_RUNNING, "Container is not running")


def lxcfs_refresh() -> None:
    """A restarted LXCFS's files, given to the running CTs before we go into one (one stat
    and one readlink when nothing changed)."""
    from pyvz.runtime import lxcfsmark

    if not lxcfsmark.unchanged():
        from pyvz.runtime import lxcfs

        lxcfs.refresh()


def exec_in(host: Host, ctid: int, args: Sequence[str], shell: bool = True) -> int:
    """Run a command in the CT with our stdio; returns its exit code. `shell=False`
    (exec3): the words are the program and its arguments, with no shell between."""
    if not args:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "No command line given for exec")
    require_running(host, ctid)
    lxcfs_refresh()
    command = _command(args) if shell else list(args)
    argv = host.runtime.attach_argv(ctid, command, own_session=not os.isatty(0))
    return run(argv, check=False, inherit_stdio=True, timeout=None).returncode


def enter(host: Host, ctid: int, command: Sequence[str] | None) -> int:
    require_running(host, ctid)
    lxcfs_refresh()
    script = LOGIN_SHELL if not command else f"{' '.join(command)}; {LOGIN_SHELL}"
    argv = host.runtime.attach_argv(ctid, ["/bin/sh", "-c", script])
    log.info(f"entered into CT {ctid}")
    code = run(argv, check=False, inherit_stdio=True, timeout=None).returncode
    log.info(f"exited from CT {ctid}")
    return code


def runscript(host: Host, ctid: int, script: Path) -> int:
    """Feed a host script to the CT's shell; its output is ours, its exit code is returned.
    A stopped CT is mounted and the script runs in its environment with no init, as
    vzctl's runscript does it (no host-side network: routes and proxies come with a start)."""
    try:
        text = script.read_text()
    except OSError as err:
        raise VzError(ExitCode.NO_SCRIPT, f"cannot read script {script}: {err.strerror}") from None
    if not host.runtime.is_running(ctid):
        from pyvz.ct.container import Container

        return Container(host, ctid).run_script_stopped(text)
    argv = host.runtime.attach_argv(ctid, ["/bin/sh", "-s"], own_session=True)
    return run(argv, check=False, input=text, capture=False, timeout=None).returncode


def console(host: Host, ctid: int, tty_number: int) -> int:
    """A login prompt in the CT on a new pty; Esc then '.' detaches (and logs out)."""
    import signal
    import subprocess
    import termios
    import tty

    require_running(host, ctid)
    if tty_number:
        log.info(
            f"CTs have no ttys of their own (they could not be checkpointed): tty {tty_number} "
            "is a new login session like the console"
        )
    argv = host.runtime.console_argv(ctid)
    master, slave = os.openpty()
    # setsid -c: lxc-attach gives the CT a pty only if ours is its controlling terminal.
    proc = subprocess.Popen(["setsid", "-c", *argv], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    log.info("Attached to CT console. Press Esc . to detach")
    try:
        if saved is not None:
            tty.setraw(stdin)
        _pump(stdin, master, proc)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        os.close(master)
    sys.stdout.write("\r\nDetached from CT console\r\n")
    sys.stdout.flush()
    return 0


def _pump(stdin: int, master: int, proc: subprocess.Popen[bytes]) -> None:
    import select

    escape_pending = False
    while proc.poll() is None:
        ready, _w, _x = select.select([stdin, master], [], [], 0.2)
        if master in ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            os.write(sys.stdout.fileno(), data)
        if stdin in ready:
            data = os.read(stdin, 1024)
            if not data:
                return
            out = bytearray()
            for byte in data:
                char = bytes([byte])
                if escape_pending:
                    escape_pending = False
                    if char == DETACH:
                        if out:
                            os.write(master, bytes(out))
                        return
                    out += ESCAPE
                if char == ESCAPE:
                    escape_pending = True
                    continue
                out += char
            if out:
                os.write(master, bytes(out))
