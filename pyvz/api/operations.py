"""Background operations: every change the API makes runs as the CLI command that makes it.

An operation is one `vzctl …` (or vzdump, vzrestore, vzmigrate, vztmpl, vztmpl-dl) run as
a child process, as Proxmox runs its tasks in workers. So an API client gets exactly what
the CLI gives: the same validation, locks, files, messages and exit codes; a cancel is
the Ctrl-C the CLI already handles (the CT is left as it was or complete); and a slow
command never blocks the daemon. Operations of one CT run one after another; each child
also waits for the CT's lock (PYVZ_LOCK_WAIT) rather than failing when a vzctl holds it.
Operations are kept in memory for a while after they end; the audit log keeps them for good.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import sysconfig
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyvz
from pyvz.cli.common import RESULT_FD_ENV
from pyvz.events import ACTOR_ENV
from pyvz.host import LOCK_WAIT_ENV
from pyvz.paths import ROOT_ENV, Paths
from pyvz.progress import PROGRESS_FD_ENV

KEEP_FINISHED = 1000  # operations remembered after they end
OUTPUT_LIMIT = 256 * 1024  # bytes of a command's stdout (and of its stderr) kept
LOCK_WAIT = 120  # seconds a command waits for a CT's lock held by someone else
CANCEL_GRACE = 30.0  # seconds from Ctrl-C to a kill

TOOLS = frozenset({"vzctl", "vzdump", "vzrestore", "vzmigrate", "vztmpl", "vztmpl-dl"})


class Status(StrEnum):
    PENDING = "pending"  # waiting for an earlier operation of the same CT
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


def tool_argv(tool: str, args: list[str]) -> list[str]:
    """How to run a pyvz command from this interpreter, as the installed launchers do
    (`python -I -S`, the package and its site-packages put on the path)."""
    module = tool.replace("-", "_")
    paths = [str(Path(pyvz.__file__).resolve().parents[1]), sysconfig.get_paths()["purelib"]]
    boot = (
        f"import sys; sys.path[0:0] = {paths!r}; sys.argv[0] = {tool!r}; "
        f"from pyvz.cli.{module} import main; main()"
    )
    return [sys.executable, "-I", "-S", "-c", boot, *args]


@dataclass
class Operation:
    id: str
    kind: str  # start, stop, create, snapshot, ...
    ctid: int | None
    argv: list[str]  # the command, without the interpreter
    actor: str
    status: Status = Status.PENDING
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    progress: dict[str, Any] | None = None
    exit_code: int | None = None
    message: str | None = None
    stdout: str = ""
    stderr: str = ""
    input: bytes | None = None  # the command's stdin, for exec
    done: asyncio.Event = field(default_factory=asyncio.Event)
    process: asyncio.subprocess.Process | None = None
    cancel_asked: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "ctid": self.ctid,
            "command": " ".join(self.argv),
            "actor": self.actor,
            "status": str(self.status),
            "created": self.created,
            "updated": self.updated,
            "progress": self.progress,
            "result": None
            if self.exit_code is None
            else {
                "exit_code": self.exit_code,
                "message": self.message,
                "stdout": self.stdout,
                "stderr": self.stderr,
            },
        }


Listener = Callable[[Operation], Awaitable[None]]


class Operations:
    def __init__(self, paths: Paths, on_change: Listener) -> None:
        self.paths = paths
        self.on_change = on_change
        self.all: dict[str, Operation] = {}
        self._ct_locks: dict[int | None, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tasks_of_progress: set[asyncio.Task[None]] = set()

    def start(
        self, tool: str, args: list[str], kind: str, ctid: int | None, actor: str, stdin: bytes | None = None
    ) -> Operation:
        assert tool in TOOLS
        op = Operation(uuid.uuid4().hex, kind, ctid, [tool, *args], actor, input=stdin)
        self.all[op.id] = op
        self._forget_old()
        task = asyncio.get_running_loop().create_task(self._run(op))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    def _forget_old(self) -> None:
        finished = [o for o in self.all.values() if o.done.is_set()]
        for op in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.all[op.id]

    async def _changed(self, op: Operation) -> None:
        op.updated = time.time()
        await self.on_change(op)

    async def _run(self, op: Operation) -> None:
        await self._changed(op)
        lock = self._ct_locks.setdefault(op.ctid, asyncio.Lock()) if op.ctid is not None else None
        try:
            if lock is not None:
                await lock.acquire()
            if op.cancel_asked:
                self._finish(op, Status.CANCELLED, 130, "cancelled before it started")
                return
            op.status = Status.RUNNING
            await self._changed(op)
            await self._execute(op)
        except Exception as err:  # the daemon must outlive any one operation
            self._finish(op, Status.FAILURE, 1, f"pyvzd could not run {op.argv[0]}: {err}")
        finally:
            if lock is not None and lock.locked():
                lock.release()
            op.done.set()
            await self._changed(op)

    async def _execute(self, op: Operation) -> None:
        result_r, result_w = os.pipe()
        progress_r, progress_w = os.pipe()
        env = dict(os.environ)
        env.update(
            {
                ROOT_ENV: str(self.paths.root),
                ACTOR_ENV: op.actor,
                LOCK_WAIT_ENV: str(LOCK_WAIT),
                RESULT_FD_ENV: str(result_w),
                PROGRESS_FD_ENV: str(progress_w),
                "LANG": "C.UTF-8",
            }
        )
        loop = asyncio.get_running_loop()
        feed = bytearray()

        def progress_ready() -> None:
            try:
                chunk = os.read(progress_r, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                loop.remove_reader(progress_r)
                return
            feed.extend(chunk)
            *lines, rest = bytes(feed).split(b"\n")
            feed[:] = rest
            for line in lines[-1:]:
                try:
                    op.progress = json.loads(line)
                except ValueError:
                    continue
                told = loop.create_task(self._changed(op))
                self._tasks_of_progress.add(told)
                told.add_done_callback(self._tasks_of_progress.discard)

        os.set_blocking(progress_r, False)
        loop.add_reader(progress_r, progress_ready)
        try:
            op.process = await asyncio.create_subprocess_exec(
                *tool_argv(op.argv[0], op.argv[1:]),
                stdin=asyncio.subprocess.PIPE if op.input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(result_w, progress_w),
                start_new_session=True,  # a cancel's SIGINT reaches the command, not the daemon
            )
        finally:
            os.close(result_w)
            os.close(progress_w)
        try:
            out, err = await op.process.communicate(op.input)
        finally:
            loop.remove_reader(progress_r)
            os.close(progress_r)
            with os.fdopen(result_r, "rb") as result_file:
                reported = result_file.read()
        code = op.process.returncode
        assert code is not None
        op.stdout = out[-OUTPUT_LIMIT:].decode(errors="replace")
        op.stderr = err[-OUTPUT_LIMIT:].decode(errors="replace")
        message = _reported_message(reported)
        if code < 0:
            code, message = 128 - code, message or f"killed by signal {-code}"
        if op.cancel_asked and code != 0:
            self._finish(op, Status.CANCELLED, code, message or "cancelled")
        elif code == 0:
            self._finish(op, Status.SUCCESS, 0, None)
        else:
            self._finish(op, Status.FAILURE, code, message or _last_line(op.stderr))

    def _finish(self, op: Operation, status: Status, code: int, message: str | None) -> None:
        op.status, op.exit_code, op.message = status, code, message

    def cancel(self, op: Operation) -> None:
        """Ctrl-C for a running command (a kill if it has not ended after CANCEL_GRACE);
        a pending one never starts."""
        if op.done.is_set():
            return
        op.cancel_asked = True
        process = op.process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(CANCEL_GRACE, _kill_if_running, process)

    async def shutdown(self) -> None:
        for op in list(self.all.values()):
            self.cancel(op)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CANCEL_GRACE + 5)


def _kill_if_running(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reported_message(raw: bytes) -> str | None:
    for line in reversed(raw.splitlines()):
        try:
            return str(json.loads(line)["message"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _last_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None
