"""The pure parts of a simfs CT's project quota: which project id a private area gets, the
kernel's structures, and what the config asks of the quota (policy.disk_quota)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.config import CtConfig
from pyvz.resources.policy import access_notes, disk_quota, not_enforced
from pyvz.storage import prjquota
from pyvz.storage.base import DiskQuota
from pyvz.storage.simfs import _pair
from pyvz.units import UNLIMITED, BarrierLimit


def config(**values: str) -> CtConfig:
    return CtConfig.merge(101, {}, values, Path("/dev/null"))


@pytest.mark.parametrize("name", ["101", ".101.partial", ".101.incoming"])
def test_a_private_area_gets_its_ctid_first(name: str) -> None:
    ids = prjquota.candidate_ids(Path("/vz/private") / name)
    assert ids[0] == 101
    assert len(ids) == 9 and len(set(ids)) == 9


def test_the_other_ids_are_stable_above_every_ctid_and_differ_between_roots() -> None:
    one = prjquota.candidate_ids(Path("/a/private/101"))
    assert one == prjquota.candidate_ids(Path("/a/private/101"))
    assert all(1 << 31 <= ident <= (1 << 32) - 2 for ident in one[1:])
    other = prjquota.candidate_ids(Path("/b/private/101"))
    assert other[0] == 101 and not set(one[1:]) & set(other[1:])
    # the partial tree of a CT gets the ids its final tree would (it is renamed into place)
    assert prjquota.candidate_ids(Path("/a/private/.101.partial")) == one


def test_a_name_that_is_no_ctid_gets_derived_ids_only() -> None:
    ids = prjquota.candidate_ids(Path("/srv/ct-web"))
    assert len(ids) == 8 and all(ident >= 1 << 31 for ident in ids)
    assert prjquota.candidate_ids(Path("/srv/0"))[0] >= 1 << 31  # project 0 is nobody's


def test_the_kernel_structures_have_the_kernels_sizes() -> None:
    assert prjquota._DQBLK.size == 72  # struct if_dqblk
    assert prjquota._FSXATTR.size == 28  # struct fsxattr
    packed = prjquota._FSXATTR.pack(prjquota.PROJINHERIT, 0, 0, 101, 0)
    assert packed[12:16] == (101).to_bytes(4, "little")  # fsx_projid, after xflags/extsize/nextents


def test_limits_reach_the_kernel_as_soft_hard_with_0_for_none() -> None:
    assert _pair(None) == (0, 0)
    assert _pair(BarrierLimit(1000, 2000)) == (1000, 2000)
    assert _pair(BarrierLimit(UNLIMITED, UNLIMITED)) == (0, 0)
    assert _pair(BarrierLimit(500, UNLIMITED)) == (500, 0)


def test_disk_quota_holds_diskspace_and_diskinodes_unless_disk_quota_is_no() -> None:
    quota = disk_quota(config(DISKSPACE="1G:2G", DISKINODES="100:200"))
    assert quota == DiskQuota(BarrierLimit(1 << 20, 2 << 20), BarrierLimit(100, 200))
    assert quota.names() == "DISKSPACE, DISKINODES"
    assert disk_quota(config(DISKINODES="100:200")) == DiskQuota(None, BarrierLimit(100, 200))
    assert disk_quota(config(DISKSPACE="1G", DISK_QUOTA="no")) is None
    assert disk_quota(config(CPUUNITS="1000")) is None


def test_diskinodes_is_named_not_enforced_except_on_simfs() -> None:
    # btrfs has no inode quota; a simfs CT's project quota may hold it, and start says where not
    assert not_enforced(config(DISKINODES="100:200"), ["DISKINODES"], frozenset()) == ["diskinodes"]
    simfs = config(DISKINODES="100:200", VE_LAYOUT="simfs")
    assert not_enforced(simfs, ["DISKINODES"], frozenset()) == []


def test_quotaugidlimit_on_simfs_says_what_an_unprivileged_ct_lacks() -> None:
    [note] = access_notes(config(QUOTAUGIDLIMIT="100", VE_LAYOUT="simfs"), ["QUOTAUGIDLIMIT"])
    assert note.startswith("quotaugidlimit: saved, but not enforced (an unprivileged CT cannot set quotas")
    assert "CAP_SYS_ADMIN" in note
    [btrfs] = access_notes(config(QUOTAUGIDLIMIT="100"), ["QUOTAUGIDLIMIT"])
    assert "btrfs subvolume" in btrfs
