"""The parsing and LXC lines of what a CT may touch (pyvz/runtime/access.py), no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.runtime import access, lxcfs
from pyvz.runtime.access import Device


def test_devnodes_parse_merge_and_format_as_vzctl_writes_them() -> None:
    old = access.parse_devnodes("net/tun:rw fuse:r")
    assert access.format_devnodes(old) == "net/tun:rw fuse:r"
    new = access.parse_devnodes("/dev/fuse:none ppp:wr")  # /dev/ prefix, perms in any order
    merged = access.merge_devices(old, new)
    assert access.format_devnodes(merged) == "net/tun:rw ppp:rw"


@pytest.mark.parametrize("text", ["net/tun", "net/tun:x", "../etc/passwd:rw", "a b:rw", ":rw", "net//tun:rw"])
def test_bad_devnodes_are_refused(text: str) -> None:
    with pytest.raises(VzError) as caught:
        access.parse_devnodes(text)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_devices_by_number() -> None:
    devices = access.parse_devices("c:10:200:rw b:8:all:r")
    assert [d.rule() for d in devices] == ["c 10:200 rw", "b 8:* r"]
    assert access.format_devices(devices) == "c:10:200:rw b:8:all:r"
    assert (
        access.format_devices(access.merge_devices(devices, access.parse_devices("b:8:all:none")))
        == "c:10:200:rw"
    )
    for bad in ("c:7:0:rw", "x:1:3:rw", "c:10:two:rw", "c:10:200", "c:99999:0:r"):
        with pytest.raises(VzError):
            access.parse_devices(bad)


def test_device_lines_deny_everything_else_and_bind_the_cts_own_node(tmp_path: Path) -> None:
    tun = Device("c", 10, 200, "rw", "net/tun")
    lines = access.device_lines(
        [tun, Device("c", 1, 3, "", "null")], "lxc.cgroup", {tun: tmp_path / "c10:200"}
    )
    assert lines[0] == "lxc.cgroup.devices.deny = a"
    assert "lxc.cgroup.devices.allow = c 10:200 rw" in lines
    assert [line for line in lines if "c 1:3 " in line] == [
        "lxc.cgroup.devices.allow = c 1:3 rwm"
    ]  # none: no rule
    assert (
        lines[-1]
        == f"lxc.mount.entry = {tmp_path / 'c10:200'} dev/net/tun none bind,optional,create=file 0 0"
    )


def test_capabilities() -> None:
    caps = access.parse_capabilities("net_admin:off,CAP_CHOWN:on")
    assert access.format_capabilities(caps) == "CHOWN:on NET_ADMIN:off"  # vzctl's order and case
    assert access.capability_lines(caps) == ["lxc.cap.drop = net_admin"]
    merged = access.merge_switches(caps, access.parse_capabilities("net_admin:on"))
    assert access.capability_lines(merged) == []
    refused, notes = access.capability_problems(access.parse_capabilities("sys_module:on ve_admin:on"), True)
    assert refused and "kernel" in refused[0]
    assert any("OpenVZ" in note for note in notes)
    refused, notes = access.capability_problems(access.parse_capabilities("sys_time:on"), False)
    assert not refused and "no effect" in notes[0]
    with pytest.raises(VzError):
        access.parse_capabilities("warp_drive:on")


def test_features_and_netfilter() -> None:
    features = access.parse_features("nfs:on,bridge:off ppp:on")
    assert access.format_features(features) == "nfs:on ppp:on bridge:off"
    notes = access.feature_problems(features)
    assert any(note.startswith("feature nfs:") for note in notes)
    assert any("bridge:off cannot be enforced" in note for note in notes)
    with pytest.raises(VzError):
        access.parse_features("fly:on")
    assert access.parse_netfilter("disabled") == "disabled"
    with pytest.raises(VzError):
        access.parse_netfilter("some")
    assert "acts as full" in access.netfilter_problem("stateful")
    assert access.netfilter_problem("full") == ""


def test_seccomp_denies_netfilter_only_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "common.seccomp"
    base.write_text("2\ndenylist\n[all]\nkexec_load errno 1\n")
    monkeypatch.setattr(access, "LXC_SECCOMP", base)
    assert access.seccomp_profile("full") == base.read_text()
    disabled = access.seccomp_profile("disabled")
    assert disabled.startswith(base.read_text())
    assert "socket errno 1 [0,16,SCMP_CMP_EQ][2,12,SCMP_CMP_EQ]" in disabled


def test_lxcfs_views_and_lines() -> None:
    every = {view.target for view in lxcfs.views(True)}
    assert {"proc/meminfo", "proc/cpuinfo", "proc/uptime", "sys/devices/system/cpu"} <= every
    assert "proc/meminfo" not in {view.target for view in lxcfs.views(False)}
    lines = lxcfs.lxc_lines(lxcfs.views(True))
    assert all(line.startswith("lxc.mount.entry = /var/lib/lxcfs/") for line in lines)
    assert "lxc.hook.mount =" in lxcfs.CLEAR_PACKAGE_HOOKS
