"""Several "test hosts" on one machine, for migration tests (vzmigrate between hosts over SSH).

Each host is a network namespace with its own PYVZ_ROOT and its own OpenSSH server. The
hosts are joined through a bridge that lives in one more namespace: one veth pair per host,
``eth0`` inside the host, ``veth-<letter>`` on the bridge. Their addresses come from
198.18.0.0/15 (RFC 2544, for tests) and exist only inside those namespaces. No namespace has
a route out, and nothing is added to the machine's own network namespace, so no packet
of a test can leave the machine.

Use it from an integration test module by loading this module as a plugin::

    from tests.testhosts import HostFactory

    pytest_plugins = ["tests.testhosts"]
    pytestmark = pytest.mark.root

    def test_move(test_hosts: HostFactory) -> None:
        a, b = test_hosts(2)
        a.vzctl("create", "101")
        done = a.ssh(b, "vzlist -H -o ctid")      # runs in b's netns, in b's PYVZ_ROOT
        b.cut()                                  # pull b's cable; b.restore() plugs it back

With ``test_hosts(3, etcd=True)`` every host also runs an etcd member of one cluster,
inside its own namespace: listening on its own address only (clients on 2379, peers on
2380), its data in its own root (var/lib/vz/etcd), TLS with a CA made for the run, and the
host's etc/vz/cluster.conf written as ``vzcluster init``/``join`` would have written it
(NODE_NAME is the host's letter), so pyvz on that host is a cluster member::

    a, b, c = test_hosts(3, etcd=True)
    b.stop_etcd()                 # lose b's member (kill -9); b.start_etcd() brings it back
    agent = a.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"])

The members are killed before the roots are removed, whatever happens in the test; like
every other process in a host's namespace they cannot outlive it.

(``pytest_plugins`` rather than ``from tests.testhosts import test_hosts``: the import
would be shadowed by the test's argument, which ruff reports as F811.)

Every session on a host's sshd gets that host's ``PYVZ_ROOT``, and a ``PATH`` that starts
with the test's own venv, so ``vzctl`` over SSH runs the code under test; root's own
~/.bashrc is not read (``SHLVL=1``), so the machine's shell profile stays out. The run's client
key is authorized on every host; ``authorize()`` adds others. Everything (sshd processes,
whatever else still runs in the namespaces, CTs, roots, namespaces, temporary files) is
removed when the test ends, failed or not; ``host_network()`` is the same as a context
manager.

PYTEST_DONT_REWRITE: a test module imports this module before pytest loads it as a plugin,
too late to rewrite its asserts (it has none), and pytest would warn about that.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from tests import parallel
from tests.conftest import REPO, Done, VzRoot, _cleanup_root

SSHD = "/usr/sbin/sshd"
PREFIX = "pyvzt"
_networks = itertools.count(1)  # several networks in one process get distinct subnets


@dataclass
class TestHost:
    """One host: a network namespace with its own PYVZ_ROOT and sshd on ``address``:22."""

    __test__ = False  # not a test class, even where a test module imports it

    name: str  # "a", "b", ...
    netns: str  # the network namespace, /run/netns/<netns>
    address: str  # IPv4 address of its eth0, only reachable from the other hosts
    root: VzRoot  # its PYVZ_ROOT; root.vzctl() runs in the caller's netns, vzctl() in the host's
    authorized_keys: Path  # its sshd's AuthorizedKeysFile (replace it to trust nobody)
    ssh_options: tuple[str, ...]  # ssh client options of the run: key, known_hosts, batch mode
    bridge_netns: str
    bridge_port: str  # the host's veth end on the bridge, in bridge_netns
    etcd: subprocess.Popen[bytes] | None = field(default=None, repr=False)  # with etcd=True

    @property
    def enter(self) -> list[str]:
        # nsenter switches only the network namespace: `ip netns exec` would mount a fresh
        # /sys and hide the cgroup hierarchies that pyvz needs.
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYVZ_ROOT": str(self.root.root), "LANG": "C.UTF-8"}

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 120) -> Done:
        """Run `argv` inside this host's netns with its PYVZ_ROOT, from the repo."""
        proc = subprocess.run(
            [*self.enter, *argv],
            env=self.env,
            cwd=REPO,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def vzctl(self, *args: str, input: str | None = None, timeout: float = 120) -> Done:
        """vzctl on this host: in its netns (where its CTs' LXC sockets live) and its root."""
        return self.run([sys.executable, "-m", "pyvz.cli.vzctl", *args], input=input, timeout=timeout)

    def authorize(self, pubkey_line: str) -> None:
        """Let the key log in as root on this host."""
        with self.authorized_keys.open("a") as out:
            out.write(pubkey_line.strip() + "\n")

    def ssh_argv(
        self, target: TestHost, *, identity: Path | None = None, connect_timeout: int = 10
    ) -> list[str]:
        """argv of an ssh from this host's netns to `target` as root; append the remote command.

        `identity` replaces the run's client key. ssh keeps the first value it sees for an
        option, so options meant to win must come here, not after the returned argv.
        """
        options = list(self.ssh_options)
        if identity is not None:
            options[options.index("-i") + 1] = str(identity)
        return [
            *self.enter,
            "ssh",
            *options,
            "-o",
            f"ConnectTimeout={connect_timeout}",
            f"root@{target.address}",
        ]

    def ssh(
        self, target: TestHost, command: str, *, identity: Path | None = None, timeout: float = 60
    ) -> Done:
        """Run the shell line `command` on `target`, over SSH from this host."""
        proc = subprocess.run(
            [*self.ssh_argv(target, identity=identity), command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, argv: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` in the background inside this host's netns with its PYVZ_ROOT (it is
        killed with the namespace at the end, if not before); its output is appended to
        `log` (default: var/log/spawned.log in the host's root)."""
        log = log or self.root.root / "var/log/spawned.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(
                [*self.enter, *argv],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    @property
    def etcd_endpoint(self) -> str:
        return f"https://{self.address}:2379"

    def stop_etcd(self) -> None:
        """Kill this host's etcd member (-9: a crash, no goodbye to its peers)."""
        if self.etcd is not None:
            self.etcd.kill()
            self.etcd.wait()
            self.etcd = None

    def start_etcd(self) -> None:
        """(Re)start this host's member from the data it has; returns once it answers."""
        if self.etcd is None:
            self.etcd = _start_member(self)

    def cut(self) -> None:
        """Pull this host's cable: its link to the bridge goes down (the host stays up)."""
        _sh("ip", "-n", self.bridge_netns, "link", "set", self.bridge_port, "down")

    def restore(self) -> None:
        """Plug the cable back in."""
        _sh("ip", "-n", self.bridge_netns, "link", "set", self.bridge_port, "up")


class HostFactory(Protocol):
    def __call__(self, count: int, *, etcd: bool = False, ttl: int = 10) -> list[TestHost]: ...


def new_key(directory: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair without passphrase: (private key file, public key line)."""
    key = directory / name
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{PREFIX}-{name}", "-f", str(key))
    return key, key.with_suffix(".pub").read_text().strip()


@contextmanager
def host_network(count: int, *, etcd: bool = False, ttl: int = 10) -> Iterator[list[TestHost]]:
    """`count` hosts joined through one bridge; all of it is removed on exit. `etcd`: each
    runs a member of one etcd cluster, and is configured as a cluster member with lease
    TTL `ttl` (its agent is not started)."""
    if not 1 <= count <= 26:
        raise ValueError(f"between 1 and 26 test hosts, not {count}")
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: openssh-server is not installed (make install)")
    _sweep_stale()
    seq = next(_networks)
    if seq > 255:
        raise RuntimeError("too many test host networks in one run")
    run_id = parallel.unique_name(PREFIX)  # pyvzt-PID-N: _sweep_stale() reads the PID back
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir="/tmp"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        client_key, client_pub = new_key(tmp, "client")
        known_hosts = tmp / "known_hosts"
        options = (
            "-F", "/dev/null",
            "-i", str(client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
        )  # fmt: skip

        bridge = f"{run_id}-br"
        _add_netns(stack, bridge)
        _sh("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", bridge, "link", "set", "br0", "up")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir

        hosts: list[TestHost] = []
        for index in range(count):
            name = chr(ord("a") + index)
            netns = f"{run_id}-{name}"
            address = f"198.18.{seq}.{index + 1}"
            port = f"veth-{name}"
            _add_netns(stack, netns)
            # Created inside the bridge namespace, with the peer put straight into the host's:
            # neither end ever exists in the machine's own namespace.
            _sh("ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "eth0", "netns", netns)
            _sh("ip", "-n", bridge, "link", "set", port, "master", "br0", "up")
            _sh("ip", "-n", netns, "link", "set", "lo", "up")
            _sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _sh("ip", "-n", netns, "link", "set", "eth0", "up")

            root = parallel.new_root_dir(f"{PREFIX}-{name}-")
            stack.callback(parallel.release_root_dir, root)
            stack.callback(_cleanup_root, root)
            _init_root(root)

            host_dir = tmp / name
            host_dir.mkdir()
            host_key, host_pub = new_key(host_dir, "ssh_host_ed25519_key")
            with known_hosts.open("a") as out:
                out.write(f"{address} {host_pub}\n")
            host = TestHost(
                name=name,
                netns=netns,
                address=address,
                root=VzRoot(root),
                authorized_keys=host_dir / "authorized_keys",
                ssh_options=options,
                bridge_netns=bridge,
                bridge_port=port,
            )
            host.authorize(client_pub)
            _start_sshd(stack, host, host_dir, host_key)
            hosts.append(host)
        if etcd:
            _etcd_cluster(stack, hosts, ttl)
        yield hosts


@pytest.fixture
def test_hosts() -> Iterator[HostFactory]:
    """Factory: `test_hosts(2)` gives hosts a and b (more calls give more, separate networks);
    `test_hosts(3, etcd=True)`: each runs a member of one etcd cluster (see above)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with ExitStack() as stack:

        def make(count: int, *, etcd: bool = False, ttl: int = 10) -> list[TestHost]:
            return stack.enter_context(host_network(count, etcd=etcd, ttl=ttl))

        yield make


def _etcd_cluster(stack: ExitStack, hosts: list[TestHost], ttl: int) -> None:
    """One etcd member per host, bootstrapped together as a static cluster: the files are
    those init/join write (made by pyvz.cluster's own code), the command line is pyvz's."""
    sys.path.insert(0, str(REPO))
    from pyvz.cluster import pki
    from pyvz.cluster.member import etcd_binary
    from pyvz.cluster.settings import cert_dir, save
    from pyvz.paths import Paths

    etcd_binary()  # "not installed" says so, before anything is made
    first = cert_dir(Paths(hosts[0].root.root))
    pki.make_ca(first, "test")
    initial = ",".join(f"{h.name}=https://{h.address}:2380" for h in hosts)
    endpoints = ",".join(h.etcd_endpoint for h in hosts)
    for host in hosts:
        paths = Paths(host.root.root)
        directory = cert_dir(paths)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory != first:
            pki.install_ca(directory, pki.ca_cert(first).read_text())
        pki.issue_all(directory, first, host.name, host.address)
        save(
            paths,
            {
                "CLUSTER_NAME": "test",
                "NODE_NAME": host.name,
                "NODE_ADDRESS": host.address,
                "ENDPOINTS": endpoints,
                "ETCD_MANAGED": "yes",
                "INITIAL_CLUSTER": initial,
                "INITIAL_STATE": "new",
                "LEASE_TTL": str(ttl),
                "STATE": "ready",
            },
        )
    for host in hosts:
        # Registered after the root's cleanup, so it runs before it: no member writes into a
        # root being removed.
        stack.callback(host.stop_etcd)
        host.etcd = _spawn_member(host)
    for host in hosts:
        _wait_member(host)


def _spawn_member(host: TestHost) -> subprocess.Popen[bytes]:
    from pyvz.cluster.member import argv, etcd_env
    from pyvz.cluster.settings import load
    from pyvz.paths import Paths

    settings = load(Paths(host.root.root))
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = host.root.root / "var/log/pyvz-etcd.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            [*host.enter, *argv(settings)],
            env=etcd_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _wait_member(host: TestHost, leader: bool = True) -> None:
    """Until the member answers its status (`leader`: and knows a leader, so its cluster
    has formed; a member restarted while most of its peers are down never will)."""
    want = "c.status(s.client_url).leader" if leader else "c.status(s.client_url)"
    probe = [
        sys.executable,
        "-c",
        "import sys; from pyvz.cluster.settings import load; from pyvz.paths import Paths\n"
        f"s = load(Paths.from_env()); c = s.client(timeout=1.0)\nsys.exit(0 if {want} else 1)",
    ]
    deadline = time.monotonic() + 30
    while host.run(probe, timeout=10).code != 0:
        if host.etcd is None or host.etcd.poll() is not None or time.monotonic() > deadline:
            tail = (host.root.root / "var/log/pyvz-etcd.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"etcd member of test host {host.name} did not start: {tail}")
        time.sleep(0.2)


def _start_member(host: TestHost) -> subprocess.Popen[bytes]:
    proc = _spawn_member(host)
    host.etcd = proc
    _wait_member(host, leader=False)
    return proc


def _sh(*argv: str) -> str:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _init_root(root: Path) -> None:
    """Like the vzroot fixture: an initialized root with a 4G pool."""
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.rootinit import init_root

    init_root(Paths(root))
    conf = root / "etc/vz/vz.conf"
    conf.write_text(conf.read_text().replace("POOL_SIZE=auto", 'POOL_SIZE="4G"'))


def _add_netns(stack: ExitStack, name: str) -> None:
    _sh("ip", "netns", "add", name)
    stack.callback(_delete_netns, name)


def _delete_netns(name: str) -> None:
    """Kill whatever still runs in the namespace (SSH sessions, strays), then delete it."""
    for _ in range(50):
        pids = [int(p) for p in _sh("ip", "netns", "pids", name).split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    _sh("ip", "netns", "delete", name)


def _sweep_stale() -> None:
    """Namespaces left by a test run that was killed (kill -9 skips every cleanup)."""
    for line in _sh("ip", "netns", "list").splitlines():
        match = re.match(rf"({PREFIX}-(\d+)-\d+-\w+)\b", line)
        if match is None:
            continue
        try:
            os.kill(int(match[2]), 0)
        except ProcessLookupError:
            _delete_netns(match[1])


def _start_sshd(stack: ExitStack, host: TestHost, host_dir: Path, host_key: Path) -> None:
    path = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    config = host_dir / "sshd_config"
    pid_file = host_dir / "sshd.pid"
    log = host_dir / "sshd.log"
    config.write_text(
        f"""\
ListenAddress {host.address}
Port 22
AddressFamily inet
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {host.authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The files live under /tmp, which is world-writable.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
LogLevel VERBOSE
Subsystem sftp internal-sftp
# SHLVL=1: bash then skips ~/.bashrc (it reads it for ssh only at level 1), so the
# machine's own root profile (pyenv, cargo) changes neither PATH nor timing.
SetEnv PYVZ_ROOT={host.root.root} PATH={path} LANG=C.UTF-8 SHLVL=1
"""
    )
    proc = subprocess.Popen(
        [*host.enter, SSHD, "-D", "-f", str(config), "-E", str(log)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack.callback(_stop, proc)
    # sshd writes its pid file only once it listens; the file shows up before its line does.
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"sshd for test host {host.name} did not start: {tail}")
        time.sleep(0.01)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
