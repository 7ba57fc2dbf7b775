"""Snapshots and clones on real CTs, on both layouts: the seeds' upgrade rollback, snapshots
of a CT that is writing, clones running next to their source, and what bad input leaves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot
from tests.integration.test_network import netns, start_in, vzctl_in  # noqa: F401 (a fixture)

pytestmark = pytest.mark.root

LAYOUTS = ["btrfs", "dir"]
UUID_RE = re.compile(r"\{([0-9a-f-]{36})\}")


def snapshot_ids(vzroot: VzRoot, ctid: str = "101") -> list[str]:
    return UUID_RE.findall(vzroot.ok("snapshot-list", ctid, "-H", "-o", "uuid"))


def take(vzroot: VzRoot, ctid: str = "101", *args: str) -> str:
    out = vzroot.ok("snapshot", ctid, *args)
    found = UUID_RE.search(out)
    assert found, out
    return found.group(1)


def conf(vzroot: VzRoot, ctid: str) -> str:
    return (vzroot.conf_dir / f"{ctid}.conf").read_text()


def in_ct(vzroot: VzRoot, ctid: str, command: str) -> str:
    done = vzroot.vzctl("exec", ctid, command)
    assert done.code == 0, f"{command}: {done.err}"
    return done.out


def free_bytes(path: Path) -> int:
    subprocess.run(["sync"], check=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def snapshot_dir(vzroot: VzRoot, ctid: str) -> Path:
    return vzroot.private_dir / f".{ctid}.snapshots"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_upgrade_rollback(vzroot: VzRoot, layout: str) -> None:
    """The seed's scenario: snapshot before an upgrade, break things, switch back."""
    vzroot.ok("create", "101", "--layout", layout, "--hostname", "before.example")
    vzroot.ok("start", "101")
    in_ct(vzroot, "101", "echo upgrade-A > /root/A")
    before_conf = conf(vzroot, "101")
    good = take(vzroot, "101", "--name", "before-upgrade", "--description", "known good")
    # The "upgrade": a big new file B, A deleted, the config changed.
    in_ct(vzroot, "101", "dd if=/dev/urandom of=/root/B bs=1M count=64 2>/dev/null; rm /root/A")
    vzroot.ok("set", "101", "--hostname", "after.example", "--save")
    broken = take(vzroot, "101", "--name", "after-upgrade")
    listing = vzroot.ok("snapshot-list", "101")
    assert listing.splitlines()[0].split() == ["PARENT_UUID", "C", "UUID", "DATE", "NAME"]
    rows = {UUID_RE.findall(line)[-1]: line for line in listing.splitlines()[1:]}
    assert "before-upgrade" in rows[good] and "* {" not in rows[good]
    assert f"{{{good}}} * {{{broken}}}" in rows[broken]  # the later one grew from the first

    out = vzroot.ok("snapshot-switch", "101", "--id", good)
    assert "Switched to snapshot" in out
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    assert in_ct(vzroot, "101", "cat /root/A").strip() == "upgrade-A"
    assert in_ct(vzroot, "101", "ls /root").split() == ["A"]
    assert conf(vzroot, "101") == before_conf
    assert in_ct(vzroot, "101", "hostname").strip() == "before.example"
    assert f"* {{{good}}}" in vzroot.ok("snapshot-list", "101", "-o", "current,uuid")

    # B now lives only in the other snapshot: deleting it gives the space back at once.
    free_before = free_bytes(vzroot.private_dir)
    vzroot.ok("snapshot-delete", "101", "--id", broken)
    gained = free_bytes(vzroot.private_dir) - free_before
    assert gained > 48 << 20, f"only {gained} bytes came back"
    assert snapshot_ids(vzroot) == [good]
    assert not (snapshot_dir(vzroot, "101") / broken).exists()
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"  # no downtime


@pytest.mark.parametrize("layout", LAYOUTS)
def test_snapshots_of_a_writing_ct_are_consistent(vzroot: VzRoot, layout: str) -> None:
    """A writer appends numbered, fsynced lines while 20 snapshots are taken: each snapshot
    holds a prefix of the sequence, with no torn line."""
    vzroot.ok("create", "101", "--layout", layout)
    vzroot.ok("start", "101")
    pad = "x" * 300
    line = f'echo "$i {pad} $i" >> /root/seq; sync /root/seq'
    loop = f"i=0; while [ $i -lt 100000 ]; do i=$((i+1)); {line}; done"
    writer = subprocess.Popen(
        [sys.executable, "-m", "pyvz.cli.vzctl", "exec", "101", loop],
        env=vzroot.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ids = []
        for _ in range(20):
            ids.append(take(vzroot, "101"))
    finally:
        writer.kill()
        writer.wait()
    counts = []
    target = vzroot.root / "snapmnt"
    for uuid in ids:
        vzroot.ok("snapshot-mount", "101", "--id", uuid, "--target", str(target))
        try:
            data = (target / "root/seq").read_text() if (target / "root/seq").exists() else ""
        finally:
            vzroot.ok("snapshot-umount", "101", "--id", uuid)
        assert data == "" or data.endswith("\n"), f"torn last line in {uuid}: {data[-80:]!r}"
        lines = data.splitlines()
        for number, line in enumerate(lines, 1):
            assert line == f"{number} {pad} {number}", f"snapshot {uuid} line {number}: {line[:60]!r}"
        counts.append(len(lines))
    assert counts == sorted(counts), counts  # later snapshots hold longer prefixes
    assert counts[-1] > counts[0], f"the writer made no progress during the snapshots: {counts}"


def test_snapshot_mount_is_read_only_with_the_cts_owners(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--layout", "dir")
    vzroot.ok("start", "101")
    in_ct(vzroot, "101", "mkdir -p /home/u; echo hi > /home/u/f; chown 1000:1001 /home/u/f; rm /bin/vi")
    uuid = take(vzroot)
    target = vzroot.root / "mnt"
    vzroot.ok("snapshot-mount", "101", "--id", uuid, "--target", str(target))
    try:
        st = os.stat(target / "home/u/f")
        assert (st.st_uid, st.st_gid) == (1000, 1001)  # as the CT sees them, not host ids
        assert os.stat(target / "bin/busybox").st_uid == 0
        assert not (target / "bin/vi").exists()  # a deletion in the CT stays deleted
        with pytest.raises(OSError) as err:
            (target / "root/new").write_text("x")
        assert err.value.errno == 30  # EROFS
        again = vzroot.vzctl("snapshot-mount", "101", "--id", uuid, "--target", str(vzroot.root / "m2"))
        assert again.code == 160 and "already mounted" in one_error_line(again.err)
        busy = vzroot.vzctl("snapshot-delete", "101", "--id", uuid)
        assert busy.code == 158 and "snapshot-umount" in one_error_line(busy.err)
    finally:
        vzroot.ok("snapshot-umount", "101", "--id", uuid)
    assert not os.path.ismount(target)
    missing = vzroot.vzctl("snapshot-umount", "101", "--id", uuid)
    assert missing.code == 161  # vzctl: VZCTL_E_UMOUNT_SNAPSHOT


def test_switch_options_and_delete_keeps_the_history(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    first = take(vzroot, "101", "--name", "one")
    vzroot.ok("set", "101", "--hostname", "two.example", "--save")
    second = take(vzroot, "101", "--name", "two", "--skip-config")
    third = take(vzroot, "101", "--name", "three")
    # Deleting the middle one: the third now grows from the first, as a ploop merge leaves it.
    vzroot.ok("snapshot-delete", "101", "--id", second)
    listed = vzroot.ok("snapshot-list", "101", "-H", "-o", "uuid,parent_uuid").splitlines()
    assert listed == [f"{{{first}}}", f"{{{third}}} {{{first}}}"]
    # --skip-config keeps today's config; a stopped CT stays stopped.
    vzroot.ok("start", "101")
    vzroot.ok("snapshot-switch", "101", "--id", first, "--skip-config", "--skip-resume")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    assert 'HOSTNAME="two.example"' in conf(vzroot, "101")
    vzroot.ok("snapshot-switch", "101", "--id", first)
    assert "HOSTNAME" not in conf(vzroot, "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    vzroot.ok("start", "101")
    refused = vzroot.vzctl("snapshot-switch", "101", "--id", third, "--must-resume")
    assert refused.code == 159 and "memory state" in one_error_line(refused.err)
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    # A given --id is used, with or without braces, and only once.
    mine = "0a1b2c3d-0000-4000-8000-000000000001"
    assert take(vzroot, "101", "--id", f"{{{mine}}}") == mine
    twice = vzroot.vzctl("snapshot", "101", "--id", mine)
    assert twice.code == 156 and "already exists" in one_error_line(twice.err)
    only = vzroot.ok("snapshot-list", "101", "--id", mine, "-o", "uuid,name,desc")
    assert only.splitlines()[1:] == [f"{{{mine}}}"]


GONE = "0a1b2c3d-0000-4000-8000-00000000dead"  # no such snapshot


def test_bad_input_is_refused_and_changes_nothing(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    uuid = take(vzroot)
    before = sorted(os.listdir(snapshot_dir(vzroot, "101"))), conf(vzroot, "101")
    cases = [
        (("snapshot-switch", "101", "--id", "not-a-uuid"), 21, "invalid snapshot id"),
        (("snapshot-delete", "101", "--id", GONE), 158, "Unable to find snapshot by uuid"),
        (("snapshot-switch", "101", "--id", GONE), 159, "Unable to find snapshot by uuid"),
        (
            ("snapshot-mount", "101", "--id", GONE, "--target", str(vzroot.root / "m")),
            160,
            "Unable to find snapshot by uuid",
        ),
        (("snapshot-mount", "101", "--id", uuid), 20, "--target"),
        (("snapshot-list", "101", "-o", "uuid,bogus"), 21, "bogus"),
        (("snapshot", "999"), 14, "Container config file does not exist"),
        (("snapshot-switch", "101"), 20, "snapshot id is missing"),
        (("clone", "101", "101"), 21, "itself"),
        (("clone", "101", "abc"), 21, "invalid CTID"),
        (("clone", "101", "102", "--ipadd", "10.1.2.300"), 21, "Bad parameter for --ipadd: 10.1.2.300"),
        (
            ("clone", "101", "102", "--snapshot", "0a1b2c3d-0000-4000-8000-00000000dead"),
            21,
            "Unable to find snapshot",
        ),
    ]
    for args, code, words in cases:
        done = vzroot.vzctl(*args)
        line = one_error_line(done.err)
        assert done.code == code, f"{args}: {done.code} {done.err}"
        assert words in line, f"{args}: {line}"
    assert (sorted(os.listdir(snapshot_dir(vzroot, "101"))), conf(vzroot, "101")) == before
    assert not (vzroot.conf_dir / "102.conf").exists()
    assert sorted(os.listdir(vzroot.private_dir)) == sorted([".101.snapshots", "101", ".templates"])


def test_a_killed_snapshot_leaves_the_ct_thawed_and_the_list_clean(vzroot: VzRoot) -> None:
    """kill -9 while the CT is frozen: the guard thaws it; the next command sweeps the litter."""
    vzroot.ok("create", "101")
    vzroot.ok("start", "101")
    script = (
        "import os, signal, sys\n"
        "from pyvz.ct.freeze import frozen\n"
        "from pyvz.paths import Paths\n"
        "from pyvz.resources.cgroups import CtCgroups, detect\n"
        "tree = detect()\n"
        "group = CtCgroups.of(Paths.from_env().tag, 101).container\n"
        "with frozen(tree, group, 'CT 101'):\n"
        "    print(int(tree.is_frozen(group)), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=vzroot.env, cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -9 and done.stdout.strip() == "1", done
    assert in_ct(vzroot, "101", "echo alive").strip() == "alive"  # exec would hang in a frozen CT
    # A snapshot killed halfway leaves a partial directory that the next command removes.
    litter = snapshot_dir(vzroot, "101") / ".0a1b2c3d-0000-4000-8000-000000000002.partial"
    litter.mkdir(parents=True)
    uuid = take(vzroot)
    assert sorted(os.listdir(snapshot_dir(vzroot, "101"))) == sorted([uuid, "snapshots.json"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clones_are_independent(vzroot: VzRoot, netns: str, layout: str) -> None:  # noqa: F811
    """A clone of a running CT starts next to it, with its own name, hostname, address, MACs
    and id range; a write in one is not seen in the other."""
    vzroot.ok(
        "create", "101", "--layout", layout, "--name", "proto", "--hostname", "proto.example",
        "--ipadd", "10.9.0.2", "--netif_add", "eth0",
    )  # fmt: skip
    start_in(vzroot, netns, "101")
    in_ct(vzroot, "101", "echo from-proto > /root/shared")
    done = vzctl_in(vzroot, netns, "clone", "proto", "102", "--name", "web", "--hostname", "web.example",
                    "--ipadd", "10.9.0.3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    source, copy = conf(vzroot, "101"), conf(vzroot, "102")
    assert 'NAME="web"' in copy and 'HOSTNAME="web.example"' in copy and 'IP_ADDRESS="10.9.0.3"' in copy
    assert os.readlink(vzroot.root / "etc/vz/names/web") == "../conf/102.conf"
    mac = re.compile(r"mac=([0-9A-F:]{17})")
    assert mac.findall(source) and set(mac.findall(source)).isdisjoint(mac.findall(copy))
    uid = re.compile(r'LOCAL_UID="(\d+)"')
    assert uid.findall(source) != uid.findall(copy)
    # The clone's bridge port is not wired (no bridge here): drop it before starting.
    vzroot.ok("set", "102", "--netif_del", "all", "--save")
    vzroot.ok("set", "101", "--netif_del", "all", "--save")
    start_in(vzroot, netns, "102")
    assert in_ct(vzroot, "102", "hostname").strip() == "web.example"
    assert in_ct(vzroot, "101", "hostname").strip() == "proto.example"
    assert "inet 10.9.0.3/32" in in_ct(vzroot, "102", "ip addr show venet0")
    assert "10.9.0.2" not in in_ct(vzroot, "102", "ip addr show venet0")
    assert in_ct(vzroot, "102", "cat /root/shared").strip() == "from-proto"
    in_ct(vzroot, "102", "echo clone-only > /root/mine")
    in_ct(vzroot, "101", "echo proto-only > /root/theirs")
    assert in_ct(vzroot, "101", "ls /root").split() == ["shared", "theirs"]
    assert in_ct(vzroot, "102", "ls /root").split() == ["mine", "shared"]
    # Without --ipadd a clone has no address (the source's are its own); in use: 78.
    taken = vzctl_in(vzroot, netns, "clone", "101", "103", "--ipadd", "10.9.0.2")
    assert taken.returncode == 78, taken.stderr
    assert not (vzroot.conf_dir / "103.conf").exists()
    vzroot.ok("clone", "101", "103")
    assert not re.search(r"^(IP_ADDRESS|NAME)=", conf(vzroot, "103"), re.MULTILINE)
    name_taken = vzroot.vzctl("clone", "101", "104", "--name", "web")
    assert name_taken.code == 131 and not (vzroot.conf_dir / "104.conf").exists()
    exists = vzroot.vzctl("clone", "101", "102")
    assert exists.code == 44
    for ctid in ("101", "102"):
        vzctl_in(vzroot, netns, "stop", "--fast", ctid)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clone_from_a_snapshot_and_destroy_takes_the_snapshots(vzroot: VzRoot, layout: str) -> None:
    vzroot.ok("create", "101", "--layout", layout)
    vzroot.ok("mount", "101")
    root = vzroot.root / "var/lib/vz/root/101"
    (root / "root/old").write_text("old\n")
    uuid = take(vzroot)
    (root / "root/old").unlink()
    (root / "root/new").write_text("new\n")
    vzroot.ok("umount", "101")
    vzroot.ok("clone", "101", "102", "--snapshot", f"{{{uuid}}}")
    vzroot.ok("start", "102")
    assert in_ct(vzroot, "102", "ls /root").split() == ["old"]
    vzroot.ok("stop", "102")
    vzroot.ok("destroy", "101")
    assert not snapshot_dir(vzroot, "101").exists()
    assert not (vzroot.private_dir / "101").exists()
    vzroot.ok("start", "102")
    assert in_ct(vzroot, "102", "cat /root/old").strip() == "old"


def test_dir_layout_inode_numbers_are_unique(vzroot: VzRoot) -> None:
    """The overlay's lower tree and the CT's upper layer share one btrfs subvolume, so no two
    files of a dir CT show the same inode number (tar and rsync -H rely on that)."""
    vzroot.ok("create", "101", "--layout", "dir")
    vzroot.ok("mount", "101")
    root = vzroot.root / "var/lib/vz/root/101"
    for index in range(300):
        (root / "root" / f"f{index}").write_text("x")
    seen: dict[tuple[int, int], str] = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if st.st_nlink == 1:
                assert (st.st_dev, st.st_ino) not in seen, f"{path} and {seen[(st.st_dev, st.st_ino)]}"
                seen[(st.st_dev, st.st_ino)] = path
    assert len(seen) > 300
    vzroot.ok("umount", "101")
