"""Real distributions from recipes: Debian built with mmdebstrap from the host's apt sources
(about 20 s), then booted unprivileged under systemd."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import DEBIAN_RECIPE as RECIPE
from tests.conftest import VzRoot

pytestmark = pytest.mark.root

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


def cache_files(vzroot: VzRoot) -> list[str]:
    cache = vzroot.root / "var/lib/vz/template/cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture(scope="module")
def built(debian_template: Path) -> Path:
    """The template, built once per test session (tests/conftest.py)."""
    return debian_template


def install_built(built: Path, vzroot: VzRoot) -> None:
    cache = vzroot.root / "var/lib/vz/template/cache"
    cache.mkdir(parents=True, exist_ok=True)
    for file in built.iterdir():
        if file.name.startswith(RECIPE):
            shutil.copy2(file, cache / file.name)


def test_manifest_lists_packages_with_versions(built: Path) -> None:
    import json

    manifest = json.loads((built / f"{RECIPE}.manifest.json").read_text())
    assert (manifest["distribution"], manifest["version"], manifest["architecture"]) == (
        "debian",
        "12",
        "amd64",
    )
    assert manifest["packages"]["systemd-sysv"] and manifest["packages"]["iproute2"]
    from pyvz.templates.manifest import sha256_file

    assert manifest["sha256"] == sha256_file(built / f"{RECIPE}.tar.zst")
    assert manifest["recipe"] == f"{RECIPE}.toml"


def test_debian_12_boots_to_running_unprivileged(built: Path, vzroot: VzRoot) -> None:
    install_built(built, vzroot)
    vzroot.ok(
        "create",
        "101",
        "--ostemplate",
        RECIPE,
        "--hostname",
        "deb12.example.org",
        "--nameserver",
        "192.0.2.53",
        "--searchdomain",
        "example.org",
    )
    started = time.monotonic()
    vzroot.ok("start", "101", "--wait")
    # --wait returned once the CT was up, not at its 120 s deadline (which fails the start);
    # how long a boot takes depends on the machine's load, and is no part of this test.
    assert time.monotonic() - started < 60
    assert vzroot.ok("exec", "101", "systemctl is-system-running").strip() == "running"
    release = vzroot.ok("exec", "101", "cat /etc/os-release")
    assert 'VERSION_ID="12"' in release and "ID=debian" in release
    assert vzroot.ok("exec", "101", "hostname").strip() == "deb12.example.org"
    assert vzroot.ok("exec", "101", "cat /etc/resolv.conf") == "search example.org\nnameserver 192.0.2.53\n"
    # Unprivileged: CT root is a high uid on the host.
    uid_map = vzroot.ok("exec", "101", "cat /proc/self/uid_map").split()
    assert uid_map[0] == "0" and int(uid_map[1]) >= 100000
    # A user and password, checked against the CT's own /etc/shadow.
    vzroot.ok("set", "101", "--userpasswd", "alice:s3cret")
    assert vzroot.ok("exec", "101", "id -un alice").strip() == "alice"
    hashed = vzroot.ok("exec", "101", "getent shadow alice").split(":")[1]
    assert crypt.crypt("s3cret", hashed) == hashed
    # Live resolver change, then a clean stop through systemd within STOP_TIMEOUT.
    vzroot.ok("set", "101", "--nameserver", "192.0.2.54", "--save")
    assert "nameserver 192.0.2.54" in vzroot.ok("exec", "101", "cat /etc/resolv.conf")
    vzroot.ok("set", "101", "--stop-timeout", "20", "--save")
    started = time.monotonic()
    vzroot.ok("stop", "101")
    assert time.monotonic() - started < 20
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"


def test_free_nproc_and_uptime_inside_show_the_cts_own(built: Path, vzroot: VzRoot) -> None:
    """procps's free, nproc and uptime read /proc and sysfs, which LXCFS gives the CT."""
    install_built(built, vzroot)
    vzroot.ok("create", "101", "--ostemplate", RECIPE, "--ram", "256M", "--cpus", "1")
    vzroot.ok("set", "101", "--netfilter", "disabled", "--save")
    vzroot.ok("start", "101", "--wait")
    mem = vzroot.ok("exec", "101", "free -m").splitlines()[1].split()
    assert mem[0] == "Mem:" and 250 <= int(mem[1]) <= 256, mem
    assert vzroot.ok("exec", "101", "nproc").strip() == "1"
    up = vzroot.ok("exec", "101", "uptime -p").strip()  # the CT's seconds, not the host's
    assert up in ("up 0 minutes", "up 1 minute"), up
    # --netfilter disabled: no netfilter netlink socket (how nft and iptables-nft talk).
    nfnetlink = "perl -e 'socket(S, 16, 3, 12) or die qq($!\\n); print qq(open\\n)'"
    refused = vzroot.vzctl("exec", "101", nfnetlink)
    assert refused.code != 0 and "Operation not permitted" in refused.out + refused.err
    assert (
        vzroot.ok("exec", "101", "perl -e 'socket(S, 16, 3, 0) or die; print qq(ok)'") == "ok"
    )  # rtnetlink is
    vzroot.ok("set", "101", "--netfilter", "full", "--save")
    vzroot.ok("restart", "101", "--wait")
    assert vzroot.ok("exec", "101", nfnetlink).strip() == "open"
    vzroot.ok("stop", "101")


STOP_HOOK = """\
[Unit]
Description=Writes down that systemd stopped it
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'echo stopped by systemd > /root/stop-hook'
"""
LATE_UNIT = """\
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo started by systemd > /root/late-unit'
"""


def test_a_debian_12_systemd_ct_is_checkpointed_and_restored(built: Path, vzroot: VzRoot) -> None:
    """systemd as init: its watches (/etc/localtime, its cgroups) and its processes survive,
    and so do the owners of its cgroups' files: after the restore it still starts units, and
    `vzctl stop` halts it cleanly, as it does a CT that was never checkpointed."""
    install_built(built, vzroot)
    vzroot.ok("create", "101", "--ostemplate", RECIPE)
    assert not (vzroot.private_dir / "101/etc/localtime").is_symlink()  # see the recipe
    units = vzroot.private_dir / "101/etc/systemd/system"
    (units / "stop-hook.service").write_text(STOP_HOOK)
    (units / "late-unit.service").write_text(LATE_UNIT)
    vzroot.ok("start", "101", "--wait")
    vzroot.ok("exec", "101", "systemctl start stop-hook.service")
    # 64 MB held by a process (minbase has perl but no python3), and its PID. It sleeps in a
    # loop: a checkpoint interrupts a sleep, as a signal does, and a lone sleep returns.
    hog = (
        'perl -e \'$x .= "a" x 1048576 for 1 .. 64; open(F, ">/root/hog.pid"); print F $$; close F; '
        "sleep 1e6 while 1'"
    )
    vzroot.ok("exec", "101", hog + " </dev/null >/dev/null 2>&1 &")
    rss = "grep VmRSS /proc/$(cat /root/hog.pid)/status"
    deadline = time.monotonic() + 30
    while (
        not vzroot.vzctl("exec", "101", rss).out.split()[1:2]
        or int(vzroot.vzctl("exec", "101", rss).out.split()[1]) < 64000
    ):
        assert time.monotonic() < deadline, "the 64 MB process did not come up"
        time.sleep(0.2)
    before = vzroot.ok("exec", "101", "cat /root/hog.pid").strip()
    vzroot.ok("chkpnt", "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down suspended"
    vzroot.ok("start", "101")
    assert vzroot.ok("exec", "101", "cat /root/hog.pid").strip() == before
    assert int(vzroot.ok("exec", "101", rss).split()[1]) >= 64000  # its memory came back
    assert vzroot.ok("exec", "101", "systemctl is-system-running").strip() == "running"
    # A unit started now runs: systemd can move its process into the unit's cgroup (with the
    # owners CRIU leaves, host root's, it could not: "Failed to attach to cgroup").
    ran = vzroot.vzctl("exec", "101", "systemctl start late-unit.service")
    assert ran.code == 0, ran.out + ran.err
    assert vzroot.ok("exec", "101", "cat /root/late-unit") == "started by systemd\n"
    # The stop is systemd's own shutdown: the unit's ExecStop ran, and the CT halted long
    # before its STOP_TIMEOUT, with no kill (vzctl would say "Killing container ...").
    vzroot.ok("set", "101", "--stop-timeout", "60", "--save")
    started = time.monotonic()
    out = vzroot.ok("stop", "101")
    took = time.monotonic() - started
    assert out.splitlines() == ["Stopping container ...", "Container was stopped", "Container is unmounted"]
    assert took < 15, f"vzctl stop took {took:.1f} s"
    assert (vzroot.private_dir / "101/root/stop-hook").read_text() == "stopped by systemd\n"
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"


def test_same_o1_create_for_debian_as_for_busybox(built: Path, vzroot: VzRoot) -> None:
    install_built(built, vzroot)
    vzroot.ok("create", "101", "--ostemplate", RECIPE)  # first create unpacks the tree once
    vzroot.ok("create", "102")  # and busybox's
    timings = {}
    for ctid, template in ((103, RECIPE), (104, "busybox")):
        started = time.monotonic()
        vzroot.ok("create", str(ctid), "--ostemplate", template)
        timings[template] = time.monotonic() - started
    assert timings[RECIPE] < 1.0  # a snapshot, not a 200 MB unpack


def test_bad_recipes_fail_before_touching_the_cache(vzroot: VzRoot, tmp_path: Path) -> None:
    before = cache_files(vzroot)
    syntax = tmp_path / "broken.toml"
    syntax.write_text('distribution = "debian"\nsuite = \n')
    done = vzroot.run("vztmpl", "build", str(syntax))
    assert done.code != 0 and "syntax" in done.err and len(done.err.strip().splitlines()) == 1
    unknown_key = tmp_path / "typo.toml"
    unknown_key.write_text(
        'distribution = "debian"\nversion = "12"\nsuite = "bookworm"\narchitecture = "amd64"\npackges = []\n'
    )
    done = vzroot.run("vztmpl", "build", str(unknown_key))
    assert done.code != 0 and "packges" in done.err
    missing = tmp_path / "nosuchpkg.toml"
    missing.write_text(
        'distribution = "debian"\nversion = "12"\nsuite = "bookworm"\narchitecture = "amd64"\n'
        'packages = ["pyvz-no-such-package"]\n'
    )
    done = vzroot.run("vztmpl", "build", str(missing), timeout=600)
    assert done.code != 0 and "pyvz-no-such-package" in done.err, done.err
    assert len(done.err.strip().splitlines()) == 1
    assert cache_files(vzroot) == before
    leftovers = [p for p in (vzroot.root / "var/lib/vz/template/cache").glob(".*")] if before else []
    assert leftovers == []
    assert not any(
        name.startswith("nosuchpkg") for name in os.listdir(vzroot.root / "var/lib/vz/template/cache")
    )


def test_debian_13_minimal_builds_and_boots(vzroot: VzRoot) -> None:
    done = vzroot.run("vztmpl", "build", "debian-13-x86_64-minimal", timeout=900)
    assert done.code == 0, done.err + done.out
    vzroot.ok("create", "101", "--ostemplate", "debian-13-x86_64-minimal", "--hostname", "trixie")
    vzroot.ok("start", "101", "--wait")
    assert vzroot.ok("exec", "101", "systemctl is-system-running").strip() == "running"
    assert 'VERSION_ID="13"' in vzroot.ok("exec", "101", "cat /etc/os-release")
    vzroot.ok("stop", "101")
