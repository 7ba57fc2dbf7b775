"""`vzmigrate --from HOST CTID`: a CT pulled from an OpenVZ host into pyvz.

The OpenVZ host is a test host (its own netns) whose second sshd (port 2200) runs chrooted in
a tree laid out like an OpenVZ host: /etc/vz/vz.conf (vzctl 4.11's stock keys) and
conf/CTID.conf, /vz/private/CTID holding a busybox tree taken from a pyvz simfs CT, and the
machine's /usr (sh, rsync, tar) bound in read-only. Its `vzctl` is VZCTL below: a small shell
script that answers status, start, stop, set --disabled, exec and destroy as vzctl 4.11 does
(output lines and exit codes), keeping the running state in /vz/standin/CTID.pid. A running
CT there is one process of the CT's own busybox, chrooted into its private area, that
appends a tick to /var/log/ticks every 0.1 s; its stop writes /var/log/shutdown, as a CT's
own shutdown would. That sshd runs in a private mount namespace: nothing of the tree is
mounted on the machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Done
from tests.integration.test_openvz_host import STOCK_VZ_CONF, ct_conf
from tests.testhosts import TestHost, host_network

pytestmark = pytest.mark.root

PORT = 2200
VZCTL = r"""#!/bin/sh
# A test's stand-in for vzctl 4.11 on an OpenVZ host (see the test module's docstring).
STATE=/vz/standin
mkdir -p "$STATE" /vz/lock
while [ $# -gt 0 ]; do case "$1" in --quiet|--verbose|--skiplock) shift ;; *) break ;; esac; done
cmd=$1; id=$2; shift 2
conf=/etc/vz/conf/$id.conf
priv=/vz/private/$id
pidf=$STATE/$id.pid
echo "$cmd $id $*" >> "$STATE/log"
running() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
lock() { echo $$ > "/vz/lock/$id.lck"; }
unlock() { rm -f "/vz/lock/$id.lck"; }
case $cmd in
status)
    if [ -f "$conf" ] && [ -d "$priv" ]; then e=exist; else e=deleted; fi
    if running; then echo "CTID $id $e mounted running"; else echo "CTID $id $e unmounted down"; fi ;;
start)
    [ -d "$priv" ] || { echo "Container private area $priv does not exist" >&2; exit 43; }
    if grep -q '^DISABLED="yes"' "$conf" && [ "$1" != --force ]; then
        echo "Container start disabled" >&2; exit 105
    fi
    if running; then echo "Container is already running" >&2; exit 32; fi
    lock
    echo "Starting container..."
    setsid chroot "$priv" /bin/sh -c 'mkdir -p /var/log; n=0
        while :; do n=$((n+1)); echo "tick $n" >> /var/log/ticks; sleep 0.1; done' \
        </dev/null >/dev/null 2>&1 &
    echo $! > "$pidf"
    unlock
    echo "Container start in progress..." ;;
stop)
    if ! running; then echo "Unable to stop: container is not running" >&2; exit 0; fi
    lock
    echo "Stopping container ..."
    pid=$(cat "$pidf"); kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "shut down" >> "$priv/var/log/shutdown"
    late=$STATE/$id.shutdown-writes  # a test asks for this many bytes written at the stop
    [ -f "$late" ] && head -c "$(cat "$late")" /dev/urandom > "$priv/var/log/late"
    rm -f "$pidf"
    unlock
    echo "Container was stopped"; echo "Container is unmounted" ;;
set)
    [ -f "$conf" ] || { echo "Container config file does not exist" >&2; exit 3; }
    value=
    while [ $# -gt 0 ]; do
        case "$1" in
        --disabled) value=$2; shift 2 ;;
        --save) shift ;;
        *) echo "stand-in: unsupported option $1" >&2; exit 21 ;;
        esac
    done
    sed -i '/^DISABLED=/d' "$conf"; echo "DISABLED=\"$value\"" >> "$conf"
    echo "Saved parameters for CT $id" ;;
exec)
    running || { echo "Container is not running" >&2; exit 31; }
    chroot "$priv" /bin/sh -c "$*" ;;
destroy)
    if running; then echo "Container is currently running. Stop it first." >&2; exit 41; fi
    echo "Destroying container private area: $priv"
    rm -rf "$priv"; mv "$conf" "$conf.destroyed"
    echo "Container private area was destroyed" ;;
*)
    echo "stand-in: no command $cmd" >&2; exit 20 ;;
esac
"""


@dataclass
class OpenVZ:
    """The stand-in OpenVZ host: `tree` is what its sessions see as /."""

    host: TestHost
    tree: Path
    sshd: subprocess.Popen[bytes]
    port: int = PORT

    @property
    def conf_dir(self) -> Path:
        return self.tree / "etcvz/conf"

    def private(self, ctid: int) -> Path:
        return self.tree / f"vz/private/{ctid}"

    def vzctl(self, *args: str) -> Done:
        """vzctl there, over its sshd, as the puller reaches it."""
        argv = [*self.host.enter, "ssh", *ssh_options(self.host, self.port), f"root@{self.host.address}"]
        proc = subprocess.run(
            [*argv, shlex.join(["vzctl", *args])], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def running(self, ctid: int) -> bool:
        done = self.vzctl("status", str(ctid))
        assert done.code == 0, done
        return done.out.split()[4] == "running"

    def disabled(self, ctid: int) -> bool:
        conf = self.conf_dir / f"{ctid}.conf"
        return conf.exists() and 'DISABLED="yes"' in conf.read_text()

    def sessions(self) -> list[int]:
        """PIDs of the sshd processes serving a connection now."""
        children = Path(f"/proc/{self.sshd.pid}/task/{self.sshd.pid}/children").read_text().split()
        return [int(pid) for pid in children]


def ssh_options(host: TestHost, port: int = PORT) -> list[str]:
    return [*host.ssh_options, "-p", str(port), "-o", "ConnectTimeout=3"]


SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def path_without(tree: Path, hidden: tuple[str, ...]) -> str:
    """A PATH for the host's sessions with `hidden` left out: /opt/path, links to every
    command of /usr/bin and /usr/sbin (the machine's, bound in) but those."""
    if not hidden:
        return SYSTEM_PATH
    bin_dir = tree / "opt/path"
    bin_dir.mkdir(parents=True)
    for directory in ("/usr/sbin", "/usr/bin"):
        for name in os.listdir(directory):
            if name not in hidden and not (bin_dir / name).is_symlink():
                (bin_dir / name).symlink_to(f"{directory}/{name}")
    return "/opt/path"


@contextmanager
def openvz_host(
    host: TestHost, busybox: Path, port: int = PORT, hidden: tuple[str, ...] = ()
) -> Iterator[OpenVZ]:
    """`hidden`: commands the host does not have (not on its sessions' PATH)."""
    tree = Path(tempfile.mkdtemp(prefix="pyvzt-ovz-", dir="/tmp"))
    tree.chmod(0o755)
    with ExitStack() as stack:
        stack.callback(_remove_tree, tree)
        for sub in ("usr", "etc", "dev", "proc", "tmp", "run", "root", "opt/vz/bin", "etcvz/conf"):
            (tree / sub).mkdir(parents=True)
        for sub in ("private", "lock", "dump", "root", "standin"):
            (tree / "vz" / sub).mkdir(parents=True)
        for top in ("bin", "sbin", "lib", "lib32", "lib64"):
            if Path(f"/{top}").is_symlink():
                os.symlink(os.readlink(f"/{top}"), tree / top)
        (tree / "etcvz/vz.conf").write_text(STOCK_VZ_CONF.replace("VE_LAYOUT=ploop", "VE_LAYOUT=simfs"))
        vzctl = tree / "opt/vz/bin/vzctl"
        vzctl.write_text(VZCTL)
        vzctl.chmod(0o755)
        (tree / "template").symlink_to(busybox)  # only for the test's own copying
        host_dir = host.authorized_keys.parent
        key = host_dir / "ssh_host_ed25519_key"
        known = next(o.split("=", 1)[1] for o in host.ssh_options if o.startswith("UserKnownHostsFile="))
        with open(known, "a") as out:
            out.write(f"[{host.address}]:{port} {(host_dir / 'ssh_host_ed25519_key.pub').read_text()}")
        config = host_dir / f"sshd_openvz{port}_config"
        pid_file = host_dir / f"sshd_openvz{port}.pid"
        log = host_dir / f"sshd_openvz{port}.log"
        search = path_without(tree, hidden)
        config.write_text(
            f"ListenAddress {host.address}\nPort {port}\nAddressFamily inet\nHostKey {key}\n"
            f"PidFile {pid_file}\nAuthorizedKeysFile {host.authorized_keys}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nPrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\n"
            f"SetEnv PATH=/opt/vz/bin:{search} LANG=C.UTF-8 SHLVL=1\n"
        )
        script = (
            f"set -e; for d in usr etc dev tmp run; do mount --rbind /$d {tree}/$d; done; "
            f"mount --bind {tree}/etcvz {tree}/etc/vz; mount -t proc proc {tree}/proc; "
            f"exec chroot {tree} /usr/sbin/sshd -D -f {config} -E {log}"
        )
        sshd = subprocess.Popen(
            [*host.enter, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(_stop, sshd, tree)
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
            assert sshd.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        yield OpenVZ(host, tree, sshd, port)


def _stop(sshd: subprocess.Popen[bytes], tree: Path) -> None:
    for pid_file in (tree / "vz/standin").glob("*.pid"):  # the stand-in's CT processes
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    sshd.kill()
    sshd.wait()


def _remove_tree(tree: Path) -> None:
    # The mounts were in the sshd's own mount namespace: here these are empty directories.
    subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=False)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[OpenVZ, TestHost]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with host_network(2) as (a, b), ExitStack() as stack:
        done = b.vzctl("create", "900", "--layout", "simfs")
        assert done.code == 0, done
        busybox = b.root.root / "var/lib/vz/busybox-tree"
        subprocess.run(["cp", "-a", str(b.root.root / "var/lib/vz/private/900"), str(busybox)], check=True)
        assert b.vzctl("destroy", "900").code == 0
        yield stack.enter_context(openvz_host(a, busybox)), b


# ---- helpers -----------------------------------------------------------------------------


def make_ct(
    ovz: OpenVZ, ctid: int, *, extra: str = "", running: bool = False, private_line: str = ""
) -> Path:
    """CT `ctid` on the OpenVZ host, as vzctl 4.11 leaves a simfs CT."""
    private = ovz.private(ctid)
    subprocess.run(["cp", "-a", f"{ovz.tree / 'template'}/.", str(private)], check=True)
    conf = ct_conf("simfs", f'HOSTNAME="ct{ctid}"\n' + extra)
    if private_line:
        conf = conf.replace('VE_PRIVATE="/vz/private/$VEID"', private_line)
    (ovz.conf_dir / f"{ctid}.conf").write_text(conf)
    if running:
        done = ovz.vzctl("start", str(ctid))
        assert done.code == 0, done
        assert ovz.running(ctid)
    return private


def listing(tree: Path) -> dict[str, tuple[object, ...]]:
    """Every entry's type, mode, owner, size, content hash, link target, device, xattrs and
    hard-link group."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for top, dirs, files in os.walk(tree):
        for name in [*dirs, *files, *([] if top != str(tree) else ["."])]:
            path = os.path.join(top, name) if name != "." else str(tree)
            st = os.lstat(path)
            digest: object = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                digest = (digest, st.st_blocks * 512 < st.st_size)  # and whether it has holes
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            xattrs = () if stat.S_ISLNK(st.st_mode) else tuple(sorted(os.listxattr(path)))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, []).append(os.path.relpath(path, tree))
            dev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
            found[os.path.relpath(path, tree)] = (
                st.st_mode, st.st_uid, st.st_gid, 0 if stat.S_ISDIR(st.st_mode) else st.st_size,
                digest, link, dev, xattrs,
            )  # fmt: skip
    for names in inodes.values():  # hard links: which names share an inode
        for name in names:
            found[name] += (tuple(sorted(names)),)
    return found


def populate(private: Path) -> None:
    """Files of the kinds a CT has: other owners, set-uid, hard links, xattrs, holes, /dev."""
    home = private / "home/user"
    home.mkdir(parents=True)
    (home / "notes").write_bytes(os.urandom(200_000))
    os.link(home / "notes", home / "notes.link")
    os.chown(home, 1000, 1000)
    os.chown(home / "notes", 1000, 1001)
    os.setxattr(home / "notes", "user.origin", b"openvz")
    with open(private / "var-sparse", "wb") as handle:
        handle.write(b"start")
        handle.seek(8 << 20)
        handle.write(b"end")
    tool = private / "bin/su-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (private / "dev").mkdir(exist_ok=True)
    if not (private / "dev/null").exists():
        os.mknod(private / "dev/null", 0o20666, os.makedev(1, 3))


def vzmigrate(host: TestHost, *args: str, timeout: float = 120) -> Done:
    return host.run([sys.executable, "-m", "pyvz.cli.vzmigrate", *args], timeout=timeout)


def pull_args(ovz: OpenVZ, ctid: int, *args: str, ssh: str = "") -> list[str]:
    options = f"{shlex.join(ssh_options(ovz.host, ovz.port))} {ssh}".strip()
    return ["--from", ovz.host.address, f"--ssh={options}", *args, str(ctid)]


def pull(ovz: OpenVZ, b: TestHost, ctid: int, *args: str) -> Done:
    return vzmigrate(b, *pull_args(ovz, ctid, *args))


def local_private(b: TestHost, ctid: int) -> Path:
    return b.root.root / f"var/lib/vz/private/{ctid}"


def status_here(b: TestHost, ctid: int) -> str:
    return b.vzctl("status", str(ctid)).out.strip()


def nothing_here(b: TestHost, ctid: int) -> None:
    """No trace of the CT on the pyvz host: no config, private area, staging or journal."""
    conf_dir = b.root.root / "etc/vz/conf"
    assert not (conf_dir / f"{ctid}.conf").exists()
    assert not (conf_dir / f"{ctid}.pulling").exists()
    private_dir = b.root.root / "var/lib/vz/private"
    assert not [p.name for p in private_dir.iterdir() if re.fullmatch(rf"\.?{ctid}(\..*)?", p.name)]


def drop_here(b: TestHost, ctid: int) -> None:
    b.vzctl("stop", str(ctid), "--fast")
    b.vzctl("destroy", str(ctid))


def exactly_one_runs(ovz: OpenVZ, b: TestHost, ctid: int) -> str:
    """Where the CT runs: "there" or "here", and never both or neither."""
    there = ovz.running(ctid)
    here = status_here(b, ctid).endswith("running")
    assert there != here, f"CT {ctid}: running there {there}, here {here}"
    return "there" if there else "here"


# ---- moves -------------------------------------------------------------------------------


def test_a_stopped_ct_arrives_whole_and_starts_here(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    private = make_ct(ovz, 201, extra='NAME="web"\n')
    populate(private)
    before = listing(private)
    done = pull(ovz, b, 201, "--layout", "simfs")
    assert done.code == 0, done
    assert status_here(b, 201) == "CTID 201 exist unmounted down"
    assert listing(local_private(b, 201)) == before  # bytes, owners, modes, links, holes, xattrs
    conf = (b.root.root / "etc/vz/conf/201.conf").read_text()
    assert 'VE_LAYOUT="simfs"' in conf and "DISABLED" not in conf
    assert 'VE_PRIVATE="/var/lib/vz/private/$VEID"' in conf  # this host's, as vz.conf says
    assert os.readlink(b.root.root / "etc/vz/names/web") == "../conf/201.conf"
    # -r yes (OpenVZ's default): gone there, as vzctl destroy leaves it.
    assert ovz.vzctl("status", "201").out.strip() == "CTID 201 deleted unmounted down"
    assert (ovz.conf_dir / "201.conf.destroyed").exists()
    done = b.vzctl("start", "201")
    assert done.code == 0, done
    assert b.vzctl("exec", "201", "cat /home/user/notes | wc -c").out.strip() == "200000"
    assert not (b.root.root / "etc/vz/conf/201.pulling").exists()
    drop_here(b, 201)


def test_a_running_ct_moves_with_what_it_wrote_meanwhile(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    private = make_ct(ovz, 202, running=True)
    (private / "big").write_bytes(os.urandom(30 << 20))
    (ovz.tree / "vz/standin/202.shutdown-writes").write_text("300000")  # written after the pre-copy
    done = pull(ovz, b, 202, "-r", "no")
    assert done.code == 0, done
    assert "Syncing private (while the CT runs)" in done.out
    assert status_here(b, 202) == "CTID 202 exist mounted running"
    assert not ovz.running(202)
    # -r no: kept there, stopped, disabled, its config renamed as OpenVZ's vzmigrate does.
    assert not (ovz.conf_dir / "202.conf").exists()
    assert 'DISABLED="yes"' in (ovz.conf_dir / "202.conf.migrated").read_text()
    here = local_private(b, 202)
    for name in ("big", "var/log/ticks", "var/log/shutdown", "var/log/late"):
        assert (here / name).read_bytes() == (private / name).read_bytes(), name
    assert len((here / "var/log/ticks").read_text().splitlines()) > 1
    assert (b.root.root / "etc/vz/conf/202.conf").read_text().count("VE_LAYOUT") == 1
    drop_here(b, 202)


@pytest.fixture(scope="module")
def without_rsync(hosts: tuple[OpenVZ, TestHost]) -> Iterator[tuple[OpenVZ, TestHost]]:
    """A second OpenVZ host on the same machine (port 2201) whose sessions have no rsync."""
    ovz, b = hosts
    busybox = Path(os.readlink(ovz.tree / "template"))
    with openvz_host(ovz.host, busybox, port=PORT + 1, hidden=("rsync",)) as bare:
        yield bare, b


def test_without_rsync_there_a_stopped_ct_comes_whole_with_tar(
    without_rsync: tuple[OpenVZ, TestHost],
) -> None:
    ovz, b = without_rsync
    probe = subprocess.run(
        [
            *ovz.host.enter,
            "ssh",
            *ssh_options(ovz.host, ovz.port),
            f"root@{ovz.host.address}",
            "command -v rsync",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and probe.stdout == "", probe  # that host has no rsync
    private = make_ct(ovz, 205, extra='NAME="bare"\n')
    populate(private)
    os.setxattr(private / "home/user", "trusted.overlay", b"a trusted one")  # not only user.*
    before = listing(private)
    done = pull(ovz, b, 205, "--layout", "simfs")
    assert done.code == 0, done
    assert f"{ovz.host.address} has no rsync: the files come with tar" in done.out
    assert listing(local_private(b, 205)) == before  # bytes, owners, modes, links, holes, xattrs
    assert ovz.vzctl("status", "205").out.strip() == "CTID 205 deleted unmounted down"
    done = b.vzctl("start", "205")
    assert done.code == 0, done
    assert b.vzctl("exec", "205", "cat /home/user/notes | wc -c").out.strip() == "200000"
    drop_here(b, 205)


def test_without_rsync_there_a_running_ct_moves_with_tar_after_its_stop(
    without_rsync: tuple[OpenVZ, TestHost],
) -> None:
    ovz, b = without_rsync
    private = make_ct(ovz, 206, running=True)
    (ovz.tree / "vz/standin/206.shutdown-writes").write_text("300000")  # written at the stop
    done = pull(ovz, b, 206, "-r", "no")
    assert done.code == 0, done
    assert "Syncing private (while the CT runs)" not in done.out  # no pre-copy without rsync
    assert status_here(b, 206) == "CTID 206 exist mounted running"
    assert not ovz.running(206)
    here = local_private(b, 206)
    for name in ("var/log/ticks", "var/log/shutdown", "var/log/late"):
        assert (here / name).read_bytes() == (private / name).read_bytes(), name
    drop_here(b, 206)


# ---- faults: never two, never none -------------------------------------------------------


class Pull:
    """vzmigrate --from in the background, its output read as it comes."""

    def __init__(self, ovz: OpenVZ, b: TestHost, ctid: int, *args: str, ssh: str = "") -> None:
        argv = [*b.enter, sys.executable, "-m", "pyvz.cli.vzmigrate", *pull_args(ovz, ctid, *args, ssh=ssh)]
        self.proc = subprocess.Popen(
            argv,
            env=b.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_point(self, name: str) -> int:
        deadline = time.monotonic() + 60
        while not (match := re.search(rf"fault point {name} reached \(pid (\d+)\)", "".join(self.err))):
            assert self.proc.poll() is None, f"ended ({self.proc.returncode}): {''.join(self.err)}"
            assert time.monotonic() < deadline, f"point {name} not reached: {''.join(self.err)}"
            time.sleep(0.02)
        return int(match[1])

    def finish(self) -> int:
        code = self.proc.wait(timeout=120)
        self.reader.join(10)
        return code


def settled(b: TestHost, ctid: int) -> None:
    """Wait for the guard's `--resolve` to finish (the journal goes)."""
    journal = b.root.root / f"etc/vz/conf/{ctid}.pulling"
    deadline = time.monotonic() + 60
    while journal.exists():
        assert time.monotonic() < deadline, journal.read_text()
        time.sleep(0.05)
    lock = b.root.root / f"var/lib/vz/lock/{ctid}.lck"
    while lock.exists():  # the guard's lock goes last
        assert time.monotonic() < deadline
        time.sleep(0.05)


GOES_BACK = ("pull-disabled", "pull-precopy", "pull-stopped")
GOES_ON = ("pull-copied", "pull-committed", "pull-started", "pull-retire")


def test_kill_9_at_each_step_leaves_it_running_in_one_place(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    fault = b.root.root / "var/lib/vz/.fault-point"
    for number, point in enumerate(GOES_BACK + GOES_ON):
        ctid = 210 + number
        make_ct(ovz, ctid, running=True)
        fault.write_text(f"{point}\n")
        move = Pull(ovz, b, ctid)
        pid = move.wait_point(point)
        fault.unlink()  # the guard's --resolve must not stop there too
        os.kill(pid, signal.SIGKILL)
        move.finish()
        settled(b, ctid)
        where = exactly_one_runs(ovz, b, ctid)
        if point in GOES_BACK:
            assert where == "there", point
            assert not ovz.disabled(ctid), point
            nothing_here(b, ctid)
        else:
            assert where == "here", point
            assert not (ovz.conf_dir / f"{ctid}.conf").exists(), point  # retired: destroyed
            assert (ovz.conf_dir / f"{ctid}.conf.destroyed").exists(), point
            drop_here(b, ctid)


def test_a_session_killed_in_the_pre_copy_gives_the_ct_back(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    private = make_ct(ovz, 220, running=True)
    (private / "big").write_bytes(os.urandom(20 << 20))
    before = set(ovz.sessions())
    move = Pull(ovz, b, 220, "--rsync=--bwlimit=4000")  # ~5 s for the pre-copy
    deadline = time.monotonic() + 30
    while True:  # the rsync's session: the one that lasts
        log = (ovz.tree / "vz/standin/log").read_text()
        sessions = [pid for pid in ovz.sessions() if pid not in before]
        if "set 220 --disabled yes" in log and sessions:
            time.sleep(0.5)
            if sessions[0] in ovz.sessions():
                break
        assert time.monotonic() < deadline and move.proc.poll() is None, "".join(move.err)
        time.sleep(0.05)
    os.kill(sessions[0], signal.SIGKILL)  # its sshd: the connection drops
    code = move.finish()
    assert code in (4, 6), "".join(move.err)
    assert exactly_one_runs(ovz, b, 220) == "there"
    assert not ovz.disabled(220)
    nothing_here(b, 220)


def test_a_cut_link_after_the_stop_is_settled_by_resolve(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    make_ct(ovz, 221, running=True)
    (ovz.tree / "vz/standin/221.shutdown-writes").write_text(str(20 << 20))  # a slow last sync
    alive = "-o ServerAliveInterval=1 -o ServerAliveCountMax=2"
    move = Pull(ovz, b, 221, "--rsync=--bwlimit=4000", ssh=alive)
    deadline = time.monotonic() + 30
    while "stop 221" not in (ovz.tree / "vz/standin/log").read_text():
        assert time.monotonic() < deadline and move.proc.poll() is None, "".join(move.err)
        time.sleep(0.05)
    time.sleep(0.5)
    ovz.host.cut()
    try:
        code = move.finish()
        assert code == 4, "".join(move.err)
        assert "--resolve 221" in "".join(move.err)
        # Stopped there, not started here: down until the link is back (a half copy can't run).
        assert status_here(b, 221) == "CTID 221 deleted unmounted down"
        assert (b.root.root / "etc/vz/conf/221.pulling").exists()
    finally:
        ovz.host.restore()
    done = vzmigrate(b, *pull_args(ovz, 221, "--resolve"))
    assert done.code == 0, done
    assert exactly_one_runs(ovz, b, 221) == "there"
    assert not ovz.disabled(221)
    nothing_here(b, 221)
    done = pull(ovz, b, 221)  # and it can be pulled for real afterwards
    assert done.code == 0, done
    assert exactly_one_runs(ovz, b, 221) == "here"
    drop_here(b, 221)


# ---- bad input from the OpenVZ host ---------------------------------------------------------


def refused(ovz: OpenVZ, b: TestHost, ctid: int, pattern: str) -> None:
    done = pull(ovz, b, ctid)
    assert done.code == 15, done
    assert len(done.err.strip().splitlines()) == 1, done.err
    assert re.search(pattern, done.err), done.err
    nothing_here(b, ctid)
    assert not ovz.disabled(ctid)


def test_bad_input_from_the_openvz_host_is_refused(hosts: tuple[OpenVZ, TestHost]) -> None:
    ovz, b = hosts
    make_ct(ovz, 230, private_line='VE_PRIVATE="../../etc"')
    refused(ovz, b, 230, r"VE_PRIVATE='\.\./\.\./etc' is not a plain absolute path")
    (ovz.conf_dir / "231.conf").write_text(ct_conf("simfs"))
    os.symlink("/etc", ovz.private(231))  # its private area leads out of /vz/private
    refused(ovz, b, 231, r"private area /vz/private/231 is a symbolic link")
    private = make_ct(ovz, 232)
    os.mknod(private / "dev/sda", 0o60600, os.makedev(8, 0))
    refused(ovz, b, 232, r"holds dev/sda, a block device 8:0 that a CT may not have")
    assert ovz.vzctl("status", "232").out.strip() == "CTID 232 exist unmounted down"


def test_a_ploop_ct_arrives_read_from_its_image(hosts: tuple[OpenVZ, TestHost], tmp_path: Path) -> None:
    from tests import ploopimg

    ovz, b = hosts
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", f"{ovz.tree / 'template'}/.", str(tree)], check=True)
    populate(tree)
    ploopimg.raw_disk(tmp_path / "disk.raw", 64 << 20, tree)
    ploopimg.ploop_ct(ovz.private(240), tmp_path / "disk.raw")
    (ovz.conf_dir / "240.conf").write_text(ct_conf("ploop"))
    done = pull(ovz, b, 240)
    assert done.code == 0, done
    assert 'VE_LAYOUT="btrfs"' in (b.root.root / "etc/vz/conf/240.conf").read_text()
    arrived = listing(local_private(b, 240))
    arrived = {k: v for k, v in arrived.items() if k != "." and not k.startswith("lost+found")}
    assert arrived == {k: v for k, v in listing(tree).items() if k != "."}
    done = b.vzctl("start", "240")
    assert done.code == 0, done
    assert b.vzctl("exec", "240", "cat /home/user/notes | wc -c").out.strip() == "200000"
    drop_here(b, 240)
