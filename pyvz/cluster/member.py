"""This host's etcd member: its command line, and starting and stopping it.

Where systemd runs and the root is / it is the unit pyvz-etcd.service (tools/), whose
ExecStart is `vzcluster etcd`; elsewhere (no systemd, or a test root inside a test host's
network namespace) `vzcluster etcd` runs as a daemon of its own. Either way that process
supervises etcd: it restarts a member that died (after 1, 2, 4 … 30 s) and stops it on TERM.

The member listens on this host's NODE_ADDRESS only (clients on CLIENT_PORT, peers on
PEER_PORT), over TLS both ways with the cluster CA, and keeps its data in ETCD_DATA_DIR.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyvz.cluster.etcd import Etcd
from pyvz.cluster.settings import Settings
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import daemon, run

UNIT = "pyvz-etcd.service"
AGENT_UNIT = "pyvz-cluster-agent.service"
START_TIMEOUT = 30.0


def etcd_binary() -> str:
    found = shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise VzError(
            ExitCode.SYSTEM_ERROR, "etcd is not installed (Debian's etcd-server; run `make install`)"
        )
    return found


def argv(settings: Settings) -> list[str]:
    """etcd's command line for this host's member."""
    directory = settings.cert_dir
    ca = str(directory / "ca.crt")
    return [
        etcd_binary(),
        "--name", settings.name,
        "--data-dir", str(settings.data_dir),
        "--listen-client-urls", settings.client_url,
        "--advertise-client-urls", settings.client_url,
        "--listen-peer-urls", settings.peer_url,
        "--initial-advertise-peer-urls", settings.peer_url,
        "--initial-cluster", settings.initial_cluster,
        "--initial-cluster-state", settings.initial_state,
        "--initial-cluster-token", settings.cluster,
        "--cert-file", str(directory / "server.crt"),
        "--key-file", str(directory / "server.key"),
        "--client-cert-auth", "--trusted-ca-file", ca,
        "--peer-cert-file", str(directory / "peer.crt"),
        "--peer-key-file", str(directory / "peer.key"),
        "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
        # Only the data that matters to pyvz: a small store, compacted hourly.
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
        "--quota-backend-bytes", str(2 << 30),
        "--logger", "zap", "--log-outputs", "stderr",
    ]  # fmt: skip


def etcd_env() -> dict[str, str]:
    """The environment etcd runs in: ours without ETCD_* variables (etcd reads those as
    flags, and 3.5 refuses one that a command-line flag also sets)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}


def pid_file(paths: Paths) -> Path:
    return paths.run_dir / "etcd.pid"


def log_file(paths: Paths) -> Path:
    return paths.root / "var/log/pyvz-etcd.log"


def use_systemd(paths: Paths) -> bool:
    """systemd units exist for the machine's own root only, and only where systemd runs."""
    return paths.root == Path("/") and Path("/run/systemd/system").is_dir()


def self_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvz.cli.vzcluster", *args]


def running_pid(path: Path) -> int | None:
    """The pid in a pid file, if that process still runs (not a zombie) and is vzcluster's
    (a pid reused by something else after a kill -9 is not ours)."""
    try:
        pid = int(path.read_text().split()[0])
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") or b"vzcluster" not in cmdline else pid


def start(settings: Settings) -> None:
    """Start this host's member (through systemd or as a supervised daemon) and wait until it
    answers. A member that is started already is left alone."""
    paths = settings.paths
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if use_systemd(paths):
        run(["systemctl", "enable", "--now", UNIT], timeout=60, error_code=ExitCode.SYSTEM_ERROR)
    elif running_pid(pid_file(paths)) is None:
        daemon(self_argv("etcd"), log_file(paths))
    wait_ready(settings)


def wait_ready(settings: Settings, timeout: float = START_TIMEOUT) -> None:
    """Until this host's member answers its own status (a learner, or a member of a cluster
    without quorum, answers that too)."""
    deadline = time.monotonic() + timeout
    client = Etcd([settings.client_url], settings.tls, 2.0)
    last = ""
    try:
        while time.monotonic() < deadline:
            try:
                client.status(settings.client_url)
                return
            except VzError as err:
                last = err.message
            gone = not use_systemd(settings.paths) and running_pid(pid_file(settings.paths)) is None
            if gone and time.monotonic() > deadline - timeout + 5:
                break  # its supervisor wrote no pid file in 5 s, or has exited since
            time.sleep(0.2)
    finally:
        client.close()
    tail = _log_tail(log_file(settings.paths))
    raise VzError(ClusterExit.MEMBER, f"the etcd member did not come up ({last or 'it exited'}){tail}")


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines[-40:]):
        if '"level":"fatal"' in line or '"level":"error"' in line or "error" in line.lower():
            return f": {line.strip()[:300]}"
    return ""


def stop(paths: Paths) -> None:
    """Stop this host's member (and its supervisor); nothing happens if it is not running."""
    if use_systemd(paths):
        run(["systemctl", "disable", "--now", UNIT], check=False, timeout=60)
        return
    pid = running_pid(pid_file(paths))
    if pid is None:
        pid_file(paths).unlink(missing_ok=True)  # a supervisor killed -9 left it
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while running_pid(pid_file(paths)) == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(pid_file(paths)) == pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pid_file(paths).unlink(missing_ok=True)


def supervise(settings: Settings) -> int:
    """`vzcluster etcd`: run the member, restart it when it dies, stop it on TERM or INT."""
    paths = settings.paths
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    other = running_pid(pid_file(paths))
    if other is not None and other != os.getpid():
        raise VzError(ClusterExit.MEMBER, f"this host's etcd member runs already (pid {other})")
    pid_file(paths).write_text(f"{os.getpid()}\n")
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = 1.0
    try:
        while not stopping:
            started = time.monotonic()
            # A supervised child is waited for here, for as long as it lives: not run()'s job.
            child = subprocess.Popen(argv(settings), stdin=subprocess.DEVNULL, env=etcd_env())
            code = child.wait()
            if stopping:
                break
            if time.monotonic() - started > 60:
                backoff = 1.0
            print(
                f"vzcluster: etcd exited ({code}); restarting in {backoff:g} s", file=sys.stderr, flush=True
            )
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
            backoff = min(backoff * 2, 30.0)
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if running_pid(pid_file(paths)) == os.getpid():
            pid_file(paths).unlink(missing_ok=True)
    return 0


# ---- the agent's process ------------------------------------------------------------------


def agent_pid_file(paths: Paths) -> Path:
    return paths.run_dir / "cluster-agent.pid"


def agent_log_file(paths: Paths) -> Path:
    return paths.root / "var/log/pyvz-cluster-agent.log"


def start_agent(paths: Paths) -> None:
    if use_systemd(paths):
        run(["systemctl", "enable", "--now", AGENT_UNIT], timeout=60)
    elif running_pid(agent_pid_file(paths)) is None:
        daemon(self_argv("agent"), agent_log_file(paths))


def stop_agent(paths: Paths) -> None:
    if use_systemd(paths):
        run(["systemctl", "disable", "--now", AGENT_UNIT], check=False, timeout=60)
        return
    pid = running_pid(agent_pid_file(paths))
    if pid is None:
        agent_pid_file(paths).unlink(missing_ok=True)  # an agent killed -9 left it
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while running_pid(agent_pid_file(paths)) == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid(agent_pid_file(paths)) == pid:
        os.kill(pid, signal.SIGKILL)
    agent_pid_file(paths).unlink(missing_ok=True)
