"""The LXC runtime: render a CT's LXC config and drive it with LXC's C tools.

Containers are started with `lxc-start -d`, so each CT's monitor is LXC's small C process
and not a fork of Python (about 0.4 MB against 5 MB of private memory per CT). State and
process counts come from the CT's cgroup; commands that must talk to the monitor's abstract
unix socket are run in the network namespace the CT was started from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.resources.cgroups import CgroupTree, CtCgroups, detect
from pyvz.run import run
from pyvz.storage.idmap import IdMap

LXC_SHARE = Path("/usr/share/lxc/config")
CT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# setsid(1) from busybox or util-linux: with no fork (lxc-attach's child leads no process
# group), so the command's exit status is still ours; CTs without it run the command as is.
_OWN_SESSION = 'if command -v setsid >/dev/null 2>&1; then exec setsid "$@"; fi; exec "$@"'


_LOGIN = "if command -v login >/dev/null 2>&1; then exec login; fi; exec /bin/sh -l"


class RuntimeSpec(NamedTuple):
    ctid: int
    rootfs: Path
    rootfs_options: str
    idmap: IdMap
    hostname: str
    halt_signal: str
    cgroups: CtCgroups
    limits: tuple[str, ...] = ()  # LXC config lines that set the CT's cgroup limits
    network: tuple[str, ...] = ("lxc.net.0.type = empty",)  # LXC config lines of its interfaces
    access: tuple[str, ...] = ()  # LXCFS views, devices, capabilities, seccomp (ct/devices.py)
    hooks: tuple[str, ...] = ()  # pyvz's own LXC hooks (an ephemeral CT's post-stop, ct/ephemeral.py)


def _apparmor_lines() -> list[str]:
    """LXC's generated profile where the host runs AppArmor; no line at all where it does not
    (CRIU's restore refuses a CT whose config names a profile the host cannot load)."""
    enabled = Path("/sys/module/apparmor/parameters/enabled")
    try:
        if enabled.read_text().strip() == "Y" and Path("/sbin/apparmor_parser").exists():
            return ["lxc.apparmor.profile = generated"]
    except OSError:
        pass
    return []


def render_config(spec: RuntimeSpec, log_file: Path) -> str:
    lines = [
        f"# Written by pyvz at each start from CT {spec.ctid}'s config; edits here are lost.",
        f"lxc.uts.name = {spec.hostname}",
        f"lxc.rootfs.path = dir:{spec.rootfs}",
    ]
    if spec.rootfs_options:
        lines.append(f"lxc.rootfs.options = {spec.rootfs_options}")
    lines.append(f"lxc.include = {LXC_SHARE / 'common.conf'}")
    if not spec.idmap.privileged:
        lines += [
            f"lxc.include = {LXC_SHARE / 'userns.conf'}",
            f"lxc.idmap = u 0 {spec.idmap.uid} {spec.idmap.size}",
            f"lxc.idmap = g 0 {spec.idmap.gid} {spec.idmap.size}",
        ]
    lines += [
        *_apparmor_lines(),
        *spec.network,
        f"lxc.signal.halt = {spec.halt_signal}",
        # No console and no ttys: CRIU cannot checkpoint a CT holding pty masters LXC owns,
        # and each pty counts against the host's kernel.pty.max (1021 CTs with three each).
        "lxc.tty.max = 0",
        "lxc.console.path = none",
        "lxc.cgroup.relative = 0",
        f"lxc.cgroup.dir.container = {spec.cgroups.container}",
        f"lxc.cgroup.dir.monitor = {spec.cgroups.monitor}",
        # The CT gets its cgroup namespace one level down, so it cannot lift its own limits.
        "lxc.cgroup.dir.container.inner = ns",
        f"lxc.log.file = {log_file}",
        "lxc.log.level = WARN",
        *spec.limits,
        *spec.access,
        *spec.hooks,
    ]
    return "\n".join(lines) + "\n"


class LxcRuntime:
    def __init__(self, paths: Paths, cgroups: CgroupTree | None = None) -> None:
        self.paths = paths
        self.lxcpath = paths.lxc_dir
        self.cgroups = cgroups or detect()

    def ct_dir(self, ctid: int) -> Path:
        return self.lxcpath / str(ctid)

    def beancounter_state(self, ctid: int) -> Path:
        return self.ct_dir(ctid) / "beancounters.json"

    def config_path(self, ctid: int) -> Path:
        return self.ct_dir(ctid) / "config"

    def log_file(self, ctid: int) -> Path:
        return self.ct_dir(ctid) / "lxc.log"

    def _base(self, tool: str, ctid: int) -> list[str]:
        return [tool, "-P", str(self.lxcpath), "-n", str(ctid)]

    def cgroups_of(self, ctid: int) -> CtCgroups:
        return CtCgroups.of(self.paths.tag, ctid)

    # ---- state ---------------------------------------------------------------------------

    def nproc(self, ctid: int) -> int:
        return self.cgroups.nproc(self.cgroups_of(ctid).container)

    def is_running(self, ctid: int) -> bool:
        return self.nproc(ctid) > 0

    def netns_prefix(self, ctid: int) -> list[str]:
        """nsenter into the monitor's network namespace when it differs from ours."""
        monitor = self.cgroups.procs(self.cgroups_of(ctid).monitor)
        if not monitor:
            return []
        try:
            theirs = os.stat(f"/proc/{monitor[0]}/ns/net").st_ino
            ours = os.stat("/proc/self/ns/net").st_ino
        except FileNotFoundError:
            return []
        return [] if theirs == ours else ["nsenter", f"--net=/proc/{monitor[0]}/ns/net", "--"]

    def foreign_netns(self, ctid: int) -> int | None:
        """An fd on the network namespace the running CT's monitor is in, if it is not ours:
        a CT stopped to be started again (restart, snapshot-switch) goes back there."""
        prefix = self.netns_prefix(ctid)
        if not prefix:
            return None
        try:
            return os.open(prefix[1].removeprefix("--net="), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    # ---- lifecycle -----------------------------------------------------------------------

    def _prepare(self, spec: RuntimeSpec) -> None:
        """Write the CT's LXC config and clear what a crashed start or restore left."""
        if not self.cgroups.available():
            raise VzError(
                ExitCode.SYSTEM_ERROR,
                f"no cgroup hierarchy is mounted at {self.cgroups.mount} here (under `ip netns exec`? "
                "use `nsenter --net=/run/netns/NAME` instead): refusing to start a CT without limits",
            )
        directory = self.ct_dir(spec.ctid)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.lxcpath, 0o755)
        log_file = self.log_file(spec.ctid)
        config = render_config(spec, log_file)
        config_path = self.config_path(spec.ctid)
        if not config_path.exists() or config_path.read_text() != config:
            write_atomic(config_path, config)
        # A crashed start can leave empty cgroups behind; LXC will not reuse a fixed dir.
        self._clear_cgroups(spec.ctid)
        log_file.unlink(missing_ok=True)

    def _clear_cgroups(self, ctid: int) -> None:
        cgroups = self.cgroups_of(ctid)
        self.cgroups.remove(cgroups.container)
        self.cgroups.remove(cgroups.monitor)

    def start(self, spec: RuntimeSpec, hold: Sequence[str] = ()) -> None:
        """Start the CT's init; with `hold`, LXC's own small init (lxc-execute's, from a
        memfd: nothing is put into the CT's files) runs that command as PID 2 instead, and
        the CT runs until it ends or is stopped (vzctl run without --boot)."""
        self._prepare(spec)
        if hold:
            argv = self._base("lxc-execute", spec.ctid) + ["-d", "--", *hold]
        else:
            argv = self._base("lxc-start", spec.ctid) + ["-d"]
        result = run(argv, check=False, timeout=120)
        if result.returncode != 0:
            self._clear_cgroups(spec.ctid)
            why = self._why(spec.ctid) or result.stderr.strip().splitlines()[0:1]
            raise VzError(ExitCode.ENVCREATE_ERROR, f"unable to start CT {spec.ctid}: {'; '.join(why)}")

    def execute(self, spec: RuntimeSpec, command: Sequence[str], input: str) -> int:
        """Run `command` in a stopped CT's environment (its root, namespaces, ids and
        limits) instead of its init, with `input` on its stdin and our stdout and stderr;
        the CT is down again when it returns its exit code. lxc-execute puts LXC's own
        small init (init.lxc.static, bind-mounted from the host) as PID 1 before it."""
        self._prepare(spec)
        try:
            argv = self._base("lxc-execute", spec.ctid) + ["--", *command]
            return run(argv, check=False, input=input, capture=False, timeout=None).returncode
        finally:
            self._clear_cgroups(spec.ctid)

    def _action_env(
        self, ctid: int, host_network: str = "", thaw: bool = True, record: str = "", owners: str = ""
    ) -> dict[str, str]:
        """Write the CT's CRIU action script for one dump or restore (pyvz/runtime/criu.py
        says what it does); the environment that makes the criu shim pass it."""
        from pyvz.runtime.criu import action_script

        container = self.cgroups_of(ctid).container
        path = self.ct_dir(ctid) / "criu-action"
        errors = self._action_errors(ctid)
        errors.unlink(missing_ok=True)
        freezer, probe = self.cgroups.freezer(container), self.cgroups.frozen_probe(container)
        script = action_script(freezer, probe, errors, host_network, thaw, record, owners)
        write_atomic(path, script, mode=0o700, durable=False)
        return {"PYVZ_CRIU_ACTION": str(path)}

    def _action_errors(self, ctid: int) -> Path:
        return self.ct_dir(ctid) / "criu-action.err"

    def checkpoint(self, ctid: int, images: Path, env: Mapping[str, str], stop: bool) -> None:
        """CRIU-dump the running CT into `images`; `stop`: the CT's processes end after it.
        The dump records the CT as frozen (see criu.ACTION_SCRIPT), so a restore of it
        thaws it after; a failed one leaves it frozen for the caller to thaw."""
        from pyvz.runtime import cgowners

        argv = self.netns_prefix(ctid) + self._base("lxc-checkpoint", ctid) + ["-D", str(images)]
        dirs = self.cgroups.dirs(self.cgroups_of(ctid).container)
        record = cgowners.record_command(dirs, images / cgowners.RECORD)
        env = {**env, **self._action_env(ctid, record=record)}
        result = run(argv + (["-s"] if stop else []), check=False, timeout=600, env=env)
        if result.returncode != 0:
            from pyvz.runtime.criu import log_tail

            self._keep_log(ctid, images, "dump.log")
            why = log_tail(images, "dump.log") or result.stderr.strip()
            raise VzError(ExitCode.CHKPNT_ERROR, f"unable to checkpoint CT {ctid}: {why}")

    def _keep_log(self, ctid: int, images: Path, name: str) -> None:
        """CRIU's log of a failed dump or restore, kept beside LXC's (the images may go)."""
        import shutil

        try:
            shutil.copyfile(images / name, self.ct_dir(ctid) / f"criu-{name}")
        except OSError:
            pass

    def restore(
        self,
        spec: RuntimeSpec,
        images: Path,
        env: Mapping[str, str],
        host_network: str = "",
        thaw: bool = True,
    ) -> None:
        """Bring the CT's processes back from `images`, with an LXC monitor as a start gives.
        `host_network` (shell) runs before they go on; `thaw` False leaves them frozen."""
        from pyvz.runtime import cgowners

        self._prepare(spec)
        argv = self._base("lxc-checkpoint", spec.ctid) + ["-r", "-d", "-D", str(images)]
        hierarchies = self.cgroups.dirs("")  # the cgroup root: one per hierarchy
        owners = cgowners.restore_commands(images, hierarchies, spec.cgroups.container, spec.idmap)
        env = {**env, **self._action_env(spec.ctid, host_network, thaw, owners=owners)}
        result = run(argv, check=False, timeout=600, env=env)
        if result.returncode != 0 or not self.is_running(spec.ctid):
            from pyvz.runtime.criu import log_tail

            self._clear_cgroups(spec.ctid)
            self._keep_log(spec.ctid, images, "restore.log")
            text = self._action_failure(spec.ctid, images) or log_tail(images, "restore.log")
            text = text or "; ".join(self._why(spec.ctid) or [result.stderr.strip()])
            raise VzError(ExitCode.RESTORE_ERROR, f"unable to restore CT {spec.ctid}: {text}")

    def _action_failure(self, ctid: int, images: Path) -> str:
        """What the action script's host network setup said, if that is what failed."""
        try:
            if "post-restore script" not in (images / "restore.log").read_text(errors="replace"):
                return ""
            lines = self._action_errors(ctid).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f"the host side of its network: {lines[-1]}" if lines else ""

    def _why(self, ctid: int) -> list[str]:
        try:
            lines = self.log_file(ctid).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.split(" - ", 1)[-1] for line in lines if " ERROR " in line][:3]

    def stop(self, ctid: int, timeout: int, kill: bool) -> bool:
        """Stop the CT: its halt signal to its init, and the kill if it has not halted within
        `timeout` seconds; the kill at once with `kill`. True if it halted by itself."""
        container = self.cgroups_of(ctid).container
        if self.cgroups.is_frozen(container):
            # A frozen task acts on no signal until it is thawed: a kill is sent first, so
            # that the CT's processes run not one instruction more; a clean stop thaws.
            if kill:
                import signal

                for pid in self.cgroups.procs(container):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.cgroups.thaw_below(container)
        argv = self.netns_prefix(ctid) + self._base("lxc-stop", ctid)
        halted = False
        if not kill:  # --nokill: lxc-stop fails when the time is up, and the kill is ours
            result = run(argv + ["-t", str(timeout), "--nokill"], check=False, timeout=timeout + 30)
            halted = result.returncode == 0 or not self.is_running(ctid)
        if not halted:
            result = run(argv + ["-k"], check=False, timeout=30)
        if result.returncode != 0 and self.is_running(ctid):
            raise VzError(ExitCode.STOP_ERROR, f"unable to stop CT {ctid}: {result.stderr.strip()}")
        self.wait_stopped(ctid, 10.0)
        return halted
        # LXC removes the CT's cgroups as it stops; start() clears any a crash left.

    def wait_stopped(self, ctid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_running(ctid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def attach_argv(
        self,
        ctid: int,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
        ids: tuple[int, int] | None = None,
    ) -> list[str]:
        """lxc-attach argv. `own_session`: the command leads a session of its own inside the
        CT. Without it, what it leaves running stays in lxc-attach's session, whose leader
        is outside the CT, and CRIU cannot checkpoint the CT. Not for commands on a
        terminal: a new session has no controlling terminal. `ids`: the CT's uid and gid
        to run it as (lxc-attach sets no supplementary groups)."""
        if own_session:
            command = ["/bin/sh", "-c", _OWN_SESSION, "sh", *command]
        argv = self.netns_prefix(ctid) + self._base("lxc-attach", ctid) + ["--clear-env"]
        if ids is not None:
            argv += ["-u", str(ids[0]), "-g", str(ids[1])]
        variables = {"PATH": CT_PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root"}
        term = os.environ.get("TERM")
        if term:
            variables["TERM"] = term
        variables.update(env or {})
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        return argv + ["--", *command]

    def console_argv(self, ctid: int) -> list[str]:
        """A login prompt on a new pty in the CT (CTs have no console pty of their own:
        CRIU cannot checkpoint one LXC holds)."""
        return self.attach_argv(ctid, ["/bin/sh", "-c", _LOGIN])

    def forget(self, ctid: int) -> None:
        """Remove the LXC side of a CT (its generated config and log)."""
        import shutil

        shutil.rmtree(self.ct_dir(ctid), ignore_errors=True)
        self._clear_cgroups(ctid)


def enter_netns(fd: int) -> None:
    """Move this process into the network namespace `fd` (what nsenter --net does)."""
    import ctypes

    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, clone_newnet) != 0:
        raise VzError(
            ExitCode.SYSTEM_ERROR,
            f"cannot enter the CT's network namespace: {os.strerror(ctypes.get_errno())}",
        )
