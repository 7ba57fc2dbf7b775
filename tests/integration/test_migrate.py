"""vzmigrate between test hosts (network namespaces with their own root and sshd): offline
with snapshots, restart migration with pre-copy, live migration keeping a TCP connection,
the restricted key, and bad input."""

from __future__ import annotations

import re
import shlex
import sys

import pytest

from tests.conftest import Done
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = pytest.mark.root


def vzmigrate(host: TestHost, *args: str, timeout: float = 300) -> Done:
    return host.run([sys.executable, "-m", "pyvz.cli.vzmigrate", *args], timeout=timeout)


def ssh_options(host: TestHost) -> str:
    """The run's ssh client options without its (unrestricted) client key: vzmigrate must
    get in with the host's own migration key alone."""
    options = list(host.ssh_options)
    while "-i" in options:
        at = options.index("-i")
        del options[at : at + 2]
    return shlex.join(options)


def trust(sender: TestHost, receiver: TestHost) -> str:
    """Authorize sender's migration key on receiver; returns the key line."""
    pubkey = vzmigrate(sender, "--pubkey")
    assert pubkey.code == 0, pubkey
    line = pubkey.out.strip()
    done = vzmigrate(receiver, "--authorize", line, "--authorized-keys", str(receiver.authorized_keys))
    assert done.code == 0, done
    return line


def move(sender: TestHost, receiver: TestHost, ctid: str, *args: str) -> Done:
    return vzmigrate(sender, f"--ssh={ssh_options(sender)}", *args, receiver.address, ctid)


def ok(host: TestHost, *args: str) -> str:
    done = host.vzctl(*args)
    assert done.code == 0, f"vzctl {' '.join(args)} -> {done.code}: {done.err}{done.out}"
    return done.out


def test_a_stopped_ct_with_three_snapshots_arrives_whole(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    ok(a, "create", "101", "--hostname", "mover", "--name", "mover")
    ids = []
    for number in range(3):
        ok(a, "mount", "101")
        (a.root.root / "var/lib/vz/root/101/root").mkdir(exist_ok=True)
        (a.root.root / f"var/lib/vz/root/101/root/file{number}").write_text(f"version {number}\n")
        ok(a, "umount", "101")
        uuid = f"{number + 1}1111111-2222-3333-4444-555555555555"
        ok(a, "snapshot", "101", "--id", uuid, "--name", f"snap{number}", "--description", f"desc {number}")
        ids.append(uuid)
    ok(a, "snapshot-switch", "101", "--id", ids[1])
    before = ok(a, "snapshot-list", "101", "-o", "uuid,parent_uuid,current,name,desc")
    done = move(a, b, "101")
    assert done.code == 0, done
    after = ok(b, "snapshot-list", "101", "-o", "uuid,parent_uuid,current,name,desc")
    assert after == before
    assert ok(b, "status", "101").strip() == "CTID 101 exist unmounted down"
    assert a.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"
    assert not (a.root.conf_dir / "101.conf").exists()
    # The snapshots arrived as snapshots: switching works and gives each one's files back.
    ok(b, "snapshot-switch", "101", "--id", ids[0])
    ok(b, "mount", "101")
    files = sorted(p.name for p in (b.root.root / "var/lib/vz/root/101/root").iterdir())
    assert files == ["file0"]
    ok(b, "umount", "101")
    ok(b, "start", "101")
    assert ok(b, "exec", "101", "hostname").strip() == "mover"
    assert re.search(r"\bmover\b", b.run(["ls", str(b.root.root / "etc/vz/names")]).out)
