"""vzctl rebuild on real CTs: a Debian CT made from a recipe, with a bind-mounted data
directory, rebuilt from a newer recipe and rolled back; busybox CTs for --keep, ownership,
layouts, bad input and kill -9 at each step."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Done, VzRoot
from tests.faultpoint import stopped_at
from tests.integration.test_network import netns, ping_from_host, start_in, vzctl_in  # noqa: F401

pytestmark = pytest.mark.root

UUID_RE = re.compile(r"\{([0-9a-f-]{36})\}")
BUILD_TIMEOUT = 900


def inside(vzroot: VzRoot, ctid: str, command: str) -> str:
    done = vzroot.vzctl("exec", ctid, command)
    assert done.code == 0, f"{command}: {done.err}{done.out}"
    return done.out


def snapshots(vzroot: VzRoot, ctid: str = "101") -> list[tuple[str, str]]:
    """(uuid, name) of each snapshot."""
    lines = vzroot.ok("snapshot-list", ctid, "-H", "-o", "uuid,name").splitlines()
    return [(UUID_RE.findall(line)[0], line.split()[-1] if len(line.split()) > 1 else "") for line in lines]


def conf(vzroot: VzRoot, ctid: str = "101") -> bytes:
    return (vzroot.conf_dir / f"{ctid}.conf").read_bytes()


def status(vzroot: VzRoot, ctid: str = "101") -> str:
    return vzroot.ok("status", ctid).strip()


def leftovers(vzroot: VzRoot, ctid: str = "101") -> list[str]:
    """What a rebuild may leave beside the CT: its new tree, driver partials, its journal."""
    found = [p.name for p in vzroot.private_dir.iterdir() if ".rebuild" in p.name or ".partial" in p.name]
    return found + [p.name for p in vzroot.conf_dir.glob(f"{ctid}.rebuilding")]


def one_line(done: Done, code: int) -> str:
    assert done.code == code, done
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1, done.err
    return lines[0]


# ---- the Must-hold scenario: a recipe, a data directory, a newer recipe, a rollback ----------


def _recipe(version: str) -> str:
    sys.path.insert(0, str(REPO))
    from pyvz.templates.recipe import BUILT_IN

    base = (BUILT_IN / "debian-12-x86_64-minimal.toml").read_text()
    assert base.rstrip().splitlines()[-1].startswith('"/etc/')  # [files] is its last table
    return base.rstrip() + f'\n"/etc/version" = "{version}\\n"\n'


def test_recipe_ct_with_data_is_rebuilt_from_a_newer_recipe_and_rolled_back(
    vzroot: VzRoot,
    netns: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    recipes = vzroot.root / "etc/vz/recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "rb.toml").write_text(_recipe("1"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello.txt").write_text("kept data\n")
    os.chown(data, 0, 0)
    data.chmod(0o755)
    done = vzroot.run(
        "vzctl", "create", "101", "--recipe", "rb", "--name", "web", "--ipadd", "10.9.0.2",
        "--netif_add", "eth0", "--bindmount_add", f"{data}:/data", timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    assert done.code == 0, done.err + done.out
    assert 'OSRECIPE="rb"' in conf(vzroot).decode() and 'OSTEMPLATE="rb"' in conf(vzroot).decode()
    start_in(vzroot, netns, "web")
    assert inside(vzroot, "web", "cat /etc/version") == "1\n"
    inside(vzroot, "web", "echo made inside > /data/made.txt && chown 1000:1001 /data/made.txt")
    inside(vzroot, "web", "mkdir -p /root/.ssh && echo key > /root/.ssh/authorized_keys")
    inside(vzroot, "web", "echo old system > /etc/junk")
    owners = "stat -c '%n %u %g %a' /data /data/hello.txt /data/made.txt /root/.ssh/authorized_keys"
    seen_before = inside(vzroot, "web", owners)
    mac_before = inside(vzroot, "web", "cat /sys/class/net/eth0/address")
    config_before = conf(vzroot)
    uid_before = (data / "made.txt").stat().st_uid

    (recipes / "rb.toml").write_text(_recipe("2"))
    done = vzroot.vzctl(
        "rebuild", "web", "--keep", "/root/.ssh", timeout=BUILD_TIMEOUT
    )  # the recipe it remembers
    assert done.code == 0, done.err + done.out
    assert status(vzroot) == "CTID 101 exist mounted running"  # it ran: it runs again
    assert inside(vzroot, "web", "cat /etc/version") == "2\n"  # the system files are new
    assert vzroot.vzctl("exec", "web", "test -e /etc/junk").code != 0
    assert inside(vzroot, "web", "cat /data/hello.txt /data/made.txt") == "kept data\nmade inside\n"
    assert inside(vzroot, "web", owners) == seen_before  # owned as before, as the CT sees it
    assert (data / "made.txt").stat().st_uid == uid_before
    assert conf(vzroot) == config_before  # CTID, name, IP, MAC, id range, bind mount: all as they were
    assert inside(vzroot, "web", "cat /sys/class/net/eth0/address") == mac_before
    assert ping_from_host(netns, "10.9.0.2")  # back in its network namespace, with its address
    listed = vzroot.vzlist("-H", "-o", "ctid,name,ip,osrecipe").out.split()
    assert listed == ["101", "web", "10.9.0.2", "rb"]
    kept = snapshots(vzroot, "web")
    assert [name for _uuid, name in kept] == ["pre-rebuild"]
    assert leftovers(vzroot) == []

    # One command brings the old system back; the data directory is not part of it.
    back = vzctl_in(vzroot, netns, "snapshot-switch", "web", "--id", kept[0][0])
    assert back.returncode == 0, back.stderr
    assert inside(vzroot, "web", "cat /etc/version") == "1\n"
    assert inside(vzroot, "web", "cat /etc/junk") == "old system\n"
    assert inside(vzroot, "web", owners) == seen_before
    assert conf(vzroot) == config_before


# ---- busybox: --keep, ownership, snapshots kept, layouts -----------------------------------


def test_a_stopped_ct_stays_stopped_keeps_paths_and_owns_its_files_as_created(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--name", "box")
    vzroot.ok("start", "101")
    inside(
        vzroot,
        "101",
        "echo a > /etc/ssh_host_a && echo b > /etc/ssh_host_b && chown 1000:1000 /etc/ssh_host_a",
    )
    inside(
        vzroot,
        "101",
        "chmod 600 /etc/ssh_host_b && echo gone > /etc/other && ln -s ssh_host_a /etc/ssh_host_l",
    )
    inside(vzroot, "101", "mkdir -p /root/.ssh && echo key > /root/.ssh/id && chown -R 1000:1000 /root/.ssh")
    wanted = (
        "stat -c '%n %u %g %a %F' /etc/ssh_host_a /etc/ssh_host_b /etc/ssh_host_l /root/.ssh /root/.ssh/id"
    )
    seen = inside(vzroot, "101", wanted)
    vzroot.ok("stop", "101")
    before = conf(vzroot)
    vzroot.ok("snapshot", "101", "--name", "mine")

    keeps = ("--keep", "/etc/ssh_host_*", "--keep", "/root/.ssh", "--keep", "/srv/none")
    first = vzroot.vzctl("rebuild", "box", *keeps)
    assert first.code == 0, first.err
    assert "/srv/none: not in the old system" in first.err and "snapshot-switch 101 --id" in first.out
    vzroot.ok("rebuild", "box", *keeps)  # again: what it keeps is in the system the first one made
    assert status(vzroot) == "CTID 101 exist unmounted down"  # stopped before, stopped after
    assert conf(vzroot) == before
    names = [name for _uuid, name in snapshots(vzroot)]
    assert sorted(names) == ["mine", "pre-rebuild"]  # the second rebuild replaced the first one's
    assert leftovers(vzroot) == []

    vzroot.ok("start", "101")
    assert vzroot.vzctl("exec", "101", "test -e /etc/other").code != 0
    assert inside(vzroot, "101", wanted) == seen  # owners, modes and the symlink, as the CT saw them
    assert inside(vzroot, "101", "cat /etc/ssh_host_a /etc/ssh_host_l /root/.ssh/id") == "a\na\nkey\n"
    # The system files are owned exactly as create makes them: as in a CT just created.
    vzroot.ok("create", "102", "--ostemplate", "busybox")
    vzroot.ok("start", "102")
    listing = "ls -lnR /bin /sbin /usr /lib 2>/dev/null; stat -c '%u %g %a' / /etc /root"
    assert inside(vzroot, "101", listing) == inside(vzroot, "102", listing)
    on_disk = vzroot.private_dir / "101" / "bin"
    assert (on_disk.stat().st_uid, on_disk.stat().st_gid) == (0, 0)  # uid 0 on disk, idmapped at start


def test_rebuild_on_another_template_and_back_with_snapshot_switch(vzroot: VzRoot, tmp_path: Path) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    archive = next((vzroot.root / "var/lib/vz/template/cache").glob("busybox.tar*"))
    copy = tmp_path / f"other{''.join(archive.suffixes)}"
    copy.write_bytes(archive.read_bytes())
    done = vzroot.run("vztmpl", "import", str(copy), "--name", "other", "--no-gpg-check")
    assert done.code == 0, done.err
    vzroot.ok("start", "101")
    inside(vzroot, "101", "echo before > /etc/marker")
    before = conf(vzroot)
    vzroot.ok("rebuild", "101", "--ostemplate", "other")
    assert status(vzroot) == "CTID 101 exist mounted running"
    assert 'OSTEMPLATE="other"' in conf(vzroot).decode()
    assert vzroot.vzctl("exec", "101", "test -e /etc/marker").code != 0
    uuid = snapshots(vzroot)[0][0]
    vzroot.ok("snapshot-switch", "101", "--id", uuid)
    assert inside(vzroot, "101", "cat /etc/marker") == "before\n"
    assert conf(vzroot) == before  # OSTEMPLATE="busybox" again


def test_simfs_is_rebuilt_and_dir_is_refused(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--layout", "simfs")
    vzroot.ok("start", "101")
    inside(vzroot, "101", "echo keep > /root/keep && echo drop > /etc/drop")
    vzroot.ok("rebuild", "101", "--keep", "/root/keep")
    assert inside(vzroot, "101", "cat /root/keep") == "keep\n"
    assert vzroot.vzctl("exec", "101", "test -e /etc/drop").code != 0
    assert leftovers(vzroot) == []
    vzroot.ok("create", "102", "--ostemplate", "busybox", "--layout", "dir")
    before = conf(vzroot, "102")
    line = one_line(vzroot.vzctl("rebuild", "102"), 21)
    assert "layout dir" in line and "convert" in line
    assert conf(vzroot, "102") == before and snapshots(vzroot, "102") == []


# ---- bad input: one line, vzctl's code, nothing changed ------------------------------------


def test_bad_input_changes_nothing(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    vzroot.ok("mount", "101")
    (vzroot.root / "var/lib/vz/root/101/etc/marker").write_text("old\n")
    vzroot.ok("umount", "101")
    before = conf(vzroot)
    cases = [
        (("rebuild", "101", "--ostemplate", "no-such-template"), 91, "no-such-template"),
        (("rebuild", "101", "--recipe", "no-such-recipe"), 91, "no-such-recipe"),
        (("rebuild", "101", "--ostemplate", "busybox", "--recipe", "x"), 20, "--recipe"),
        (("rebuild", "101", "--ostemplate", "bad/name"), 21, "--ostemplate"),
        (("rebuild", "101", "--keep", "etc/ssh"), 21, "--keep"),
        (("rebuild", "101", "--keep", "/etc/../../host"), 21, "`..`"),
        (("rebuild", "101", "--keep", "/"), 21, "--keep"),
        (("rebuild", "999"), 14, "does not exist"),
        (("rebuild", "nosuchname"), 21, "nosuchname"),
    ]
    for args, code, word in cases:
        assert word in one_line(vzroot.vzctl(*args), code), args
    holder = subprocess.Popen(["sleep", "120"])
    try:
        (vzroot.root / "var/lib/vz/lock/101.lck").write_text(f"{holder.pid}\n\n")
        assert "locked" in one_line(vzroot.vzctl("rebuild", "101"), 9)
    finally:
        holder.kill()
        holder.wait()
    assert conf(vzroot) == before
    assert (vzroot.private_dir / "101/etc/marker").read_text() == "old\n"
    assert snapshots(vzroot) == [] and leftovers(vzroot) == []


def quota_limit(vzroot: VzRoot) -> int:
    sys.path.insert(0, str(REPO))
    from pyvz.storage.btrfs import qgroup_dir

    qgroup = qgroup_dir(vzroot.private_dir / "101")
    assert qgroup is not None
    return int((qgroup / "max_referenced").read_text())


# ---- kill -9 (and Ctrl-C) at each step: the old system or the new one, never a mix ----------


@pytest.mark.parametrize(
    "point,how,sweeper,rebuilt",
    [
        ("rebuild-built", signal.SIGKILL, "boot", False),  # the CT still runs: start would refuse
        ("rebuild-snapshotted", signal.SIGKILL, "start", False),
        ("rebuild-swapped", signal.SIGKILL, "boot", True),
        ("rebuild-swapped", signal.SIGKILL, "start", True),
        ("rebuild-built", signal.SIGINT, None, False),
        ("rebuild-snapshotted", signal.SIGINT, None, False),
    ],
)
def test_an_interrupted_rebuild_leaves_the_old_system_or_the_new_one(
    vzroot: VzRoot, point: str, how: signal.Signals, sweeper: str | None, rebuilt: bool
) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--diskspace", "1G")
    vzroot.ok("start", "101")
    inside(vzroot, "101", "echo old > /etc/marker && echo key > /root/key")
    before = conf(vzroot)
    stopped_at(vzroot, point, how, "rebuild", "101", "--keep", "/root/key")
    # Before anything sweeps it, the CT's tree is one whole system: the old one or the new one.
    assert (vzroot.private_dir / "101/etc/marker").exists() is not rebuilt
    assert (vzroot.private_dir / "101/bin/busybox").exists()
    if sweeper == "start":
        vzroot.ok("start", "101")
    elif sweeper == "boot":
        done = vzroot.vzctl("boot")  # the basic sample's ONBOOT=yes: boot starts it too
        assert done.code == 0, done.err
    assert status(vzroot) == "CTID 101 exist mounted running"  # the Ctrl-C'd one was started again
    assert leftovers(vzroot) == []
    assert conf(vzroot) == before
    assert inside(vzroot, "101", "cat /root/key") == "key\n"
    if rebuilt:
        assert vzroot.vzctl("exec", "101", "test -e /etc/marker").code != 0
        assert [name for _uuid, name in snapshots(vzroot)] == ["pre-rebuild"]
        assert quota_limit(vzroot) == 1 << 30  # the new subvolume has the CT's disk quota
    else:
        assert inside(vzroot, "101", "cat /etc/marker") == "old\n"
        assert snapshots(vzroot) == []
    vzroot.ok("rebuild", "101")  # and it can be done (again)
    assert vzroot.vzctl("exec", "101", "test -e /etc/marker").code != 0
