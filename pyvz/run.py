"""The only way pyvz runs an external command."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvz.errors import ExitCode, MigrateExit, VzError

if TYPE_CHECKING:
    import subprocess

DEFAULT_TIMEOUT = 300.0
_KILL_GRACE = 5.0
_SLICE = 0.2  # seconds: how often supervised() looks at its clocks


class Result(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


_sealed = False


def _seal_inherited() -> None:
    """Mark every descriptor this process inherited (beyond stdio) close-on-exec, once.
    lxc-attach passes whatever it is given on into the CT, where a stray host descriptor
    is a leak and stops CRIU from checkpointing the processes that hold it."""
    global _sealed
    if _sealed:
        return
    _sealed = True
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own descriptor, closed by now


def _spawn(argv: tuple[str, ...], env: dict[str, str], **options: object) -> int:
    _seal_inherited()
    try:
        return os.posix_spawnp(argv[0], argv, env, **options)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise VzError(ExitCode.SYSTEM_ERROR, f"{argv[0]} is not installed (run `make install`)") from None
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot run {argv[0]}: {err.strerror}") from None


def _run_spawned(
    argv: tuple[str, ...], env: dict[str, str], capture: bool, timeout: float | None
) -> tuple[int, str, str]:
    """A command with no input: output into memory files, waited for through a pidfd.

    This is most of what pyvz runs (mount, btrfs, lxc-start ...), and doing it without the
    subprocess module saves ~7 ms of import on every vzctl command. The command gets its own
    session, so a timeout or Ctrl-C can kill everything it started.
    """
    import select

    outputs = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("stdout", "stderr")] if capture else []
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    ]
    actions += [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in zip(outputs, (1, 2), strict=False)]
    # Ctrl-C must not land between the spawn and the code that kills the child on Ctrl-C:
    # it is held back until the child is known (the child itself starts with none blocked).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    pidfd = -1
    try:
        try:
            pid = _spawn(argv, env, file_actions=actions, setsid=True, setsigmask=[])
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        try:
            pidfd = os.pidfd_open(pid)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held-back Ctrl-C lands here
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else int(timeout * 1000)):
                _kill_group(pid, signal.SIGTERM)
                if not poller.poll(int(_KILL_GRACE * 1000)):
                    _kill_group(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise VzError(ExitCode.SYSTEM_ERROR, f"`{shlex.join(argv)}` timed out after {timeout:g} s")
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            _kill_group(pid, signal.SIGKILL)  # Ctrl-C: do not leave it running behind us
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            raise
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        _pid, status = os.waitpid(pid, 0)
        texts = []
        for fd in outputs:
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            texts.append(b"".join(chunks).decode(errors="replace"))
    finally:
        for fd in outputs:
            os.close(fd)
    stdout, stderr = texts if texts else ("", "")
    return os.waitstatus_to_exitcode(status), stdout, stderr


class if_we_die:  # lower case: it reads as `with if_we_die([...]):`
    """Run `argv` if this process dies inside the block, kill -9 included; not if the block
    ends, however it ends (the caller's own finally handles exceptions and Ctrl-C).

    A guard `sh` in its own session reads a pipe from us: we write a line when the block
    ends; a dead process closes the pipe with nothing written, and the guard runs argv."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(argv)
        self.guard = -1
        self.write_end = -1

    def __enter__(self) -> None:
        read_end, self.write_end = os.pipe()
        env = {**os.environ, "LANG": "C.UTF-8"}
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_DUP2, read_end, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        argv = ("sh", "-c", 'read -r _ || exec "$@"', "sh", *self.argv)
        try:
            self.guard = _spawn(argv, env, file_actions=actions, setsid=True, setsigmask=[])
        except BaseException:
            os.close(self.write_end)
            raise
        finally:
            os.close(read_end)

    def __exit__(self, *exc: object) -> None:
        os.write(self.write_end, b"done\n")
        os.close(self.write_end)
        os.waitpid(self.guard, 0)


def daemon(argv: Sequence[str], log_file: Path) -> None:
    """Start a long-lived service that outlives us: `setsid -f` forks it off in a session
    of its own (so no zombie is left to us and no terminal reaches it), stdin /dev/null,
    stdout and stderr appended to log_file. Whether it came up is the caller's check."""
    argv = ("setsid", "-f", *argv)
    env = {**os.environ, "LANG": "C.UTF-8"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), flags, 0o640),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = _spawn(argv, env, file_actions=actions, setsid=True, setsigmask=[])
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot start `{shlex.join(argv[2:])}`; see {log_file}")


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _run_attached(argv: tuple[str, ...], env: dict[str, str], check: bool, error_code: ExitCode) -> Result:
    """An interactive command on our terminal, waited for with no time limit."""
    pid = _spawn(argv, env)
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


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def supervised(
    argv: Sequence[str],
    *,
    forward: Callable[[int, int], None],
    timeout: float | None = None,
    grace: float = _KILL_GRACE,
    own_group: bool = True,
) -> tuple[int, bool]:
    """A command on our stdio that we watch over (vzctl run's command in its CT). SIGINT,
    SIGTERM and SIGHUP to us are not our death: `forward(pid, signum)` hands each to what
    the command `pid` runs, and if it has not ended `grace` seconds later (or at the same
    signal a second time) SIGKILL follows. At `timeout` seconds the same: SIGTERM, then
    SIGKILL. Returns its exit code and whether the time ran out. `own_group`: it is put in
    a process group of its own, so that a terminal's Ctrl-C reaches us alone and is handed
    on once; not for a command that reads the terminal (it must be in the foreground)."""
    import select
    import time

    argv = tuple(argv)
    env = dict(os.environ, LANG="C.UTF-8")
    env.pop("LC_ALL", None)
    pid = -1
    seen: list[int] = []
    kill_at: list[float] = []  # when the signalled command is killed if it has not ended

    def on_signal(signum: int, _frame: object) -> None:
        if pid < 0:
            return
        if signum in seen:
            forward(pid, signal.SIGKILL)
            return
        seen.append(signum)
        forward(pid, signum)
        kill_at.append(time.monotonic() + grace)

    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(FORWARDED))
    previous = {signum: signal.signal(signum, on_signal) for signum in FORWARDED}
    pidfd = -1
    try:
        options: dict[str, object] = {"setsigmask": []}
        if own_group:
            options["setpgroup"] = 0
        pid = _spawn(argv, env, **options)
        pidfd = os.pidfd_open(pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held-back signal lands here
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        while True:
            # In slices: a signal's handler may set a kill time while we wait (poll is
            # resumed after a handler with the time it had left, PEP 475).
            ends = [t for t in (deadline, *kill_at) if t is not None]
            left = min(ends) - time.monotonic() if ends else _SLICE
            if poller.poll(max(0, int(min(left, _SLICE) * 1000) + 1)):
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                timed_out, deadline = True, None
                forward(pid, signal.SIGTERM)
                kill_at.append(now + grace)
            if kill_at and now >= min(kill_at):
                forward(pid, signal.SIGKILL)
                kill_at.clear()
        _pid, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), timed_out
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pidfd >= 0:
            os.close(pidfd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    if input is None and not inherit_stdio:
        code, stdout, stderr = _run_spawned(argv, full_env, capture, timeout)
        return _checked(Result(argv, code, stdout, stderr), check, error_code)
    import subprocess  # not needed by interactive commands, which are timed most

    _seal_inherited()

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
    return _checked(Result(argv, proc.returncode, stdout or "", stderr or ""), check, error_code)


def _checked(result: Result, check: bool, error_code: ExitCode) -> Result:
    if check and result.returncode != 0:
        detail = _tail(result.stderr) or _tail(result.stdout)
        raise VzError(
            error_code,
            f"`{shlex.join(result.argv)}` failed ({_describe_status(result.returncode)})"
            + (f": {detail}" if detail else ""),
        )
    return result


# Commands started by pipeline() die with us (kill -9 included), so no orphaned tar keeps a
# temporary snapshot busy or an archive growing.
_DIE_WITH_US = ("setpriv", "--pdeathsig", "KILL", "--")


def pipeline(
    stages: Sequence[Sequence[str]],
    *,
    stdout: int | None = None,
    relay: Callable[[int], None] | None = None,
    error_code: ExitCode = ExitCode.SYSTEM_ERROR,
) -> None:
    """Run `a | b | c` from argument lists (no shell): the first reads /dev/null, the last
    writes to the fd `stdout` (default /dev/null).

    With `relay`, Python copies the data between the last two stages (or out of a lone
    stage) and calls relay(bytes) after each chunk, for progress and rate limits; without it
    the stages are connected directly and Python only waits. Ctrl-C or any error kills every
    stage, and so does our own death (kill -9). A failure names the stage that caused it
    (not one that only lost its reader) with its stderr tail.
    """
    argvs = [tuple(argv) for argv in stages]
    count = len(argvs)
    env = dict(os.environ, LANG="C.UTF-8")
    env.pop("LC_ALL", None)
    errors = [os.memfd_create(f"stderr{i}", os.MFD_CLOEXEC) for i in range(count)]
    opened: list[int] = []  # fds of ours to close once every stage has its copies
    pids: list[int] = []
    relayed: tuple[int, int] | None = None
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        ins = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)]
        opened.append(ins[0])
        sink = stdout
        if sink is None:
            sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            opened.append(sink)
        outs: list[int] = []
        relay_link = count - 1 if count > 1 else 1  # link k feeds stage k; link `count` the sink
        for link in range(1, count + 1):
            if relay is not None and link == relay_link:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                opened += [read_end, write_end]
                outs.append(write_end)
                if link == count:
                    relayed = (read_end, sink)
                else:
                    next_read, next_write = os.pipe2(os.O_CLOEXEC)
                    opened += [next_read, next_write]
                    ins.append(next_read)
                    relayed = (read_end, next_write)
            elif link == count:
                outs.append(sink)
            else:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                opened += [read_end, write_end]
                outs.append(write_end)
                ins.append(read_end)
        for index, argv in enumerate(argvs):
            actions: list[tuple[int, ...]] = [
                (os.POSIX_SPAWN_DUP2, ins[index], 0),
                (os.POSIX_SPAWN_DUP2, outs[index], 1),
                (os.POSIX_SPAWN_DUP2, errors[index], 2),
            ]
            pids.append(
                _spawn(
                    (*_DIE_WITH_US, *argv),
                    env,
                    file_actions=actions,
                    setsid=True,
                    setsigmask=[],
                    setsigdef=[signal.SIGPIPE],  # a stage whose reader is gone ends, as in a shell
                )
            )
        keep = set(relayed) if relayed is not None else set()
        for fd in opened:
            if fd not in keep:
                os.close(fd)
        opened = [fd for fd in opened if fd in keep]
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held-back Ctrl-C lands here
        if relayed is not None and relay is not None:
            reader, writer = relayed
            while chunk := os.read(reader, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(writer, view) :]
                relay(len(chunk))
            for fd in opened:
                os.close(fd)
            opened = []
        statuses = []
        for pid in list(pids):
            statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
            pids.remove(pid)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        for pid in pids:
            _kill_group(pid, signal.SIGKILL)
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for fd in opened + errors:
            os.close(fd)
        raise
    texts = []
    for fd in errors:
        os.lseek(fd, 0, os.SEEK_SET)
        texts.append(os.read(fd, 1 << 16).decode(errors="replace"))
        os.close(fd)
    failed = [(argv, code, text) for argv, code, text in zip(argvs, statuses, texts, strict=True) if code]
    if not failed:
        return
    # A stage that died of SIGPIPE (or said "Broken pipe") only lost its reader: the cause is
    # elsewhere. If every failure looks like that, the first one is reported.
    lost_reader = (-signal.SIGPIPE, 128 + signal.SIGPIPE)  # killed by it, or a shell saying so
    causes = [f for f in failed if f[1] not in lost_reader and "broken pipe" not in f[2].lower()]
    argv, code, text = (causes or failed)[0]
    detail = _tail(text)
    raise VzError(
        error_code,
        f"`{shlex.join(argv)}` failed ({_describe_status(code)})" + (f": {detail}" if detail else ""),
    )


PIPE_SIZE = 1 << 20


def _big_pipe() -> tuple[int, int]:
    """A pipe that holds 1 MB (the default 64 KB makes a GB stream 16000 small reads)."""
    import fcntl

    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: the default works, slower
    return read_end, write_end


class piped:  # lower case: it reads as `with piped([...], "r") as pipe:`
    """Run argv with pipes to it: mode "r" gives `read_fd` (its stdout), "w" `write_fd` (its
    stdin), "rw" both (an ssh session). Leaving the block closes our ends and waits; a
    failure (after the block, or when the block raised) is a VzError with the command's
    stderr. The command dies with us (kill -9 included), like pipeline()'s stages."""

    def __init__(
        self, argv: Sequence[str], mode: str, error_code: ExitCode | MigrateExit = ExitCode.SYSTEM_ERROR
    ) -> None:
        self.argv = tuple(argv)
        self.mode = mode
        self.error_code = error_code
        self.pid = -1
        self.read_fd = -1
        self.write_fd = -1
        self.stderr = -1

    def __enter__(self) -> piped:
        env = dict(os.environ, LANG="C.UTF-8")
        env.pop("LC_ALL", None)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        theirs: list[int] = []
        stdin = stdout = null
        if "w" in self.mode:
            stdin, self.write_fd = _big_pipe()
            theirs.append(stdin)
        if "r" in self.mode:
            self.read_fd, stdout = _big_pipe()
            theirs.append(stdout)
        self.stderr = os.memfd_create("stderr", os.MFD_CLOEXEC)
        actions: list[tuple[int, ...]] = [
            (os.POSIX_SPAWN_DUP2, stdin, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, self.stderr, 2),
        ]
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.pid = _spawn(
                (*_DIE_WITH_US, *self.argv),
                env,
                file_actions=actions,
                setsid=True,
                setsigmask=[],
                setsigdef=[signal.SIGPIPE],
            )
        except BaseException:
            self._close_ours()
            os.close(self.stderr)
            raise
        finally:
            for fd in [*theirs, null]:
                os.close(fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return self

    def _close_ours(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def close_input(self) -> None:
        """End the command's stdin (it sees EOF) and keep reading its output."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self._close_ours()
        if value is not None:
            _kill_group(self.pid, signal.SIGKILL)
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:
            code = 0
        os.lseek(self.stderr, 0, os.SEEK_SET)
        self.error_text = os.read(self.stderr, 1 << 16).decode(errors="replace")
        os.close(self.stderr)
        if value is None and code != 0:
            detail = _tail(self.error_text)
            raise VzError(
                self.error_code,
                f"`{shlex.join(self.argv)}` failed ({_describe_status(code)})"
                + (f": {detail}" if detail else ""),
            )
