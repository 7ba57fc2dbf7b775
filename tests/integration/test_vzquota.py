"""vzquota and vzctl quotaon/quotaoff/quotainit on a real btrfs CT: what `btrfs qgroup show`
reports, what the CT can write, and vzquota's numbers against the qgroup's."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import Done, VzRoot

pytestmark = pytest.mark.root

WRITE_60M = "dd if=/dev/zero of=/root/big bs=1M count=60 2>&1 && sync"


def vzquota(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vzquota", *args)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def qgroup(vzroot: VzRoot, ctid: str = "101") -> tuple[int, str]:
    """(referenced bytes, max referenced) of the CT's own qgroup, as `btrfs qgroup show` says."""
    path = vzroot.private_dir / ctid
    subprocess.run(["btrfs", "filesystem", "sync", str(path)], check=True)
    ident = subprocess.run(
        ["btrfs", "inspect-internal", "rootid", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    out = subprocess.run(
        ["btrfs", "qgroup", "show", "-re", "--raw", str(path)], check=True, capture_output=True, text=True
    ).stdout
    for row in out.splitlines():
        fields = row.split()
        if fields and fields[0] == f"0/{ident}":
            return int(fields[1]), fields[3]
    raise AssertionError(f"no qgroup 0/{ident} in:\n{out}")


def write_until(vzroot: VzRoot, succeeds: bool) -> Done:
    """The 60 MB write, retried a little: btrfs qgroup accounting can lag a transaction."""
    deadline = time.monotonic() + 10
    while True:
        vzroot.vzctl("exec", "101", "rm -f /root/big; sync")
        done = vzroot.vzctl("exec2", "101", WRITE_60M)
        if (done.code == 0) == succeeds or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def test_quotaoff_quotaon_quotainit_change_the_qgroup_and_what_the_ct_can_write(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--diskspace", "30M")
    vzroot.ok("start", "101")
    assert qgroup(vzroot)[1] == str(30 << 20)
    full = write_until(vzroot, succeeds=False)
    assert full.code != 0 and "quota exceeded" in full.out.lower(), full

    done = vzroot.vzctl("quotaoff", "101")
    assert done.code == 0, done
    assert qgroup(vzroot)[1] == "none"
    assert write_until(vzroot, succeeds=True).code == 0
    assert vzroot.ok("exec", "101", "stat -c %s /root/big").strip() == str(60 << 20)
    stat = vzquota(vzroot, "stat", "101")
    assert stat.code == 6 and lines(stat.err) == [
        "vzquota : (error) Quota accounting is off, try vzquota show id"
    ]

    vzroot.ok("exec", "101", "rm -f /root/big; sync")
    done = vzroot.vzctl("quotainit", "101")
    assert done.code == 0, done
    assert qgroup(vzroot)[1] == "none"  # init counts and saves; the quota stays off, as vzquota's

    done = vzroot.vzctl("quotaon", "101")
    assert done.code == 0, done
    assert qgroup(vzroot)[1] == str(30 << 20)
    full = write_until(vzroot, succeeds=False)
    assert full.code != 0 and "quota exceeded" in full.out.lower(), full

    # init of a running quota is refused, as vzquota refused it (vzctl: 61)
    done = vzroot.vzctl("quotainit", "101")
    assert done.code == 61
    assert lines(done.err) == ["vzquota : (error) Quota is running, stop it first", "vzquota init failed [5]"]
    # on over a running quota sets the config's limits instead, and succeeds
    done = vzroot.vzctl("quotaon", "101")
    assert done.code == 0 and "Quota is running for id 101 already" in done.err, done
    vzroot.ok("stop", "--fast", "101")


def test_vzquota_stat_numbers_are_the_qgroups(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--diskspace", "50M:60M")
    private = vzroot.private_dir / "101"
    (private / "root/ten").write_bytes(b"x" * (10 << 20))
    stat = vzquota(vzroot, "stat", "101")
    assert stat.code == 0, stat
    referenced, limit = qgroup(vzroot)
    header, blocks, inodes = stat.out.splitlines()
    assert header == "   resource          usage       softlimit      hardlimit    grace"
    assert blocks.split() == ["1k-blocks", str((referenced + 1023) // 1024), "51200", str(int(limit) // 1024)]
    found = subprocess.run(
        ["find", str(private), "-xdev", "-printf", "%i\\n"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert inodes.split() == ["inodes", str(len(set(found))), "0", "0"]
    batch = vzquota(vzroot, "-b", "stat", "101")
    assert batch.out.split()[:3] == [str((referenced + 1023) // 1024), "51200", str(60 * 1024)]
    # the soft limit is kept and shown, and said to be not enforced where it is set
    done = vzquota(vzroot, "setlimit", "101", "-b", "40000", "-i", "100", "-I", "200")
    assert done.code == 0, done
    assert lines(done.err) == [
        f"vzquota : (warning) inode_hard_limit [200] < inode_current_usage [{inodes.split()[1]}]",
        "vzquota : (warning) saved, not enforced for id 101: the block soft limit, inode limits (btrfs has "
        "no inode quota); a btrfs qgroup has one limit, the block hard limit",
    ]
    plain = vzquota(vzroot, "stat", "101").out.splitlines()
    assert plain[1].split()[2:4] == ["40000", "61440"]
    assert plain[2].split()[1][-1] == "*" and plain[2].split()[2:4] == ["100", "200"]  # over the inode limit
    assert qgroup(vzroot)[1] == str(60 << 20)  # the hard limit was not touched
    refused = vzquota(vzroot, "setlimit", "101", "-B", "20480")
    assert refused.code == 2 and lines(refused.err) == [
        "vzquota : (error) block_hard_limit [20480] < block_soft_limit [40000]"
    ]
    assert qgroup(vzroot)[1] == str(60 << 20)
    done = vzquota(vzroot, "setlimit", "101", "-b", "10000", "-B", "20480")
    assert done.code == 0 and qgroup(vzroot)[1] == str(20 << 20), done
    shown = vzquota(vzroot, "show", "101")
    assert shown.code == 0 and "Quota is running" in shown.err
    assert shown.out.splitlines()[1].split()[2:4] == ["10000", "20480"]


def test_off_drop_and_the_exit_codes_scripts_test(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--diskspace", "30M")
    assert vzquota(vzroot, "off", "101").code == 0
    assert qgroup(vzroot)[1] == "none"
    again = vzquota(vzroot, "off", "101")
    assert again.code == 6 and lines(again.err) == ["vzquota : (error) Quota is not running for id 101"]
    assert vzroot.vzctl("quotaoff", "101").code == 0  # vzctl takes "not running" as done
    shown = vzquota(vzroot, "show", "101")
    assert shown.code == 0 and shown.out.splitlines()[1].split()[3] == str(30 * 1024)
    assert vzquota(vzroot, "drop", "101").code == 0
    gone = vzquota(vzroot, "stat", "101")
    assert gone.code == 11
    assert lines(gone.err) == [
        "vzquota : (error) Can't open quota file for id 101, maybe you need to reinitialize quota: "
        "No such file or directory"
    ]
    # vzctl quotaon initializes a quota that has no file, then turns it on
    done = vzroot.vzctl("quotaon", "101")
    assert done.code == 0 and "Initializing quota ..." in done.out, done
    assert qgroup(vzroot)[1] == str(30 << 20)
    running = vzquota(vzroot, "on", "101")
    assert running.code == 5 and lines(running.err) == [
        "vzquota : (warning) Quota is running for id 101 already"
    ]
    assert vzquota(vzroot, "drop", "101").code == 5
    assert vzquota(vzroot, "-q", "drop", "101").err == ""
    saved = vzroot.root / "var/lib/vz/quota/101.json"
    assert saved.exists()
    vzroot.ok("destroy", "101")
    assert not saved.exists()  # a new CT 101 starts with no limits of the old one


def test_bad_input_is_one_line_and_the_right_code(vzroot: VzRoot) -> None:
    unknown = vzquota(vzroot, "stat", "999")
    assert unknown.code == 11 and len(lines(unknown.err)) == 1
    for argv, code in (
        (("stat", "101", "--bogus"), 2),
        (("bogus", "101"), 2),
        (("setlimit", "101", "-e", "1q"), 2),
    ):
        done = vzquota(vzroot, *argv)
        assert done.code == code and len(lines(done.err)) == 1, (argv, done)
    done = vzroot.vzctl("quotaon", "999")
    assert done.code == 14 and len(lines(done.err)) == 1, done
    vzroot.ok("create", "102", "--layout", "dir")
    stat = vzquota(vzroot, "stat", "102")
    assert stat.code == 6
    assert lines(stat.err) == [
        "vzquota : (error) Quota accounting is not available for id 102: "
        "layout dir (overlayfs) has no disk quota"
    ]
    on = vzroot.vzctl("quotaon", "102")
    assert on.code == 60 and len(lines(on.err)) == 1, on
    assert vzroot.vzctl("quotaoff", "102").code == 0
    (vzroot.conf_dir / "102.conf").write_text(
        (vzroot.conf_dir / "102.conf").read_text() + 'DISK_QUOTA="no"\n'
    )
    skipped = vzroot.vzctl("quotaon", "102")
    assert skipped.code == 60 and skipped.out.strip() == "Disk quota is not enabled, skipping operation"


def test_diskquota_no_means_no_limit_and_yes_brings_it_back(vzroot: VzRoot) -> None:
    """DISK_QUOTA is enforced, not only saved: `no` leaves the CT without a qgroup limit."""
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--diskquota", "no", "--diskspace", "1G")
    assert qgroup(vzroot)[1] == "none"
    vzroot.ok("set", "101", "--diskquota", "yes", "--save")
    assert qgroup(vzroot)[1] != "none"
    vzroot.ok("set", "101", "--diskquota", "no", "--save")
    assert qgroup(vzroot)[1] == "none"
