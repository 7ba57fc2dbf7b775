"""snapshot-delete's promise, "the space is free when it returns", on the real btrfs pool,
by each way pyvz has to wait for the kernel's cleaner: the 6.13+ ioctl and btrfs-progs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

sys.path.insert(0, str(REPO))
from pyvz.storage import btrfs  # noqa: E402


def free_bytes(path: Path) -> int:
    """What statfs says now: no sync first (a commit would free what a delete left pinned)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _ioctl(parent: Path, ident: int) -> None:
    if not btrfs.wait_cleaned(parent, ident):
        pytest.skip(f"this kernel ({os.uname().release}) has no BTRFS_IOC_SUBVOL_SYNC_WAIT")


WAYS: dict[str, Callable[[Path, int], None]] = {"ioctl": _ioctl, "btrfs-progs": btrfs.wait_cleaned_by_progs}


@pytest.mark.parametrize("way", WAYS)
def test_space_is_free_when_the_wait_returns(vzroot: VzRoot, way: str) -> None:
    vzroot.ok("create", "101")  # the pool exists from here on
    parent = vzroot.private_dir
    victim = parent / "reclaim-victim"
    btrfs.create_subvolume(victim)
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={victim}/data", "bs=1M", "count=96", "conv=fsync", "status=none"],
        check=True,
    )
    subprocess.run(["sync"], check=True)
    before = free_bytes(parent)
    ident = btrfs.subvolume_id(victim)
    btrfs.delete_subvolume(victim)
    btrfs.dir_ioctl(parent, btrfs._IOC_SYNC)
    WAYS[way](parent, ident)
    gained = free_bytes(parent) - before
    assert gained > 80 << 20, f"only {gained} bytes were free when the wait returned"
    # The subvolume is gone for the kernel too: waiting again says so at once.
    assert btrfs.wait_cleaned(parent, ident) in (True, False)


def test_waiting_for_a_live_subvolume_is_an_error(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    ident = btrfs.subvolume_id(vzroot.private_dir / "101")
    from pyvz.errors import VzError

    try:
        done = btrfs.wait_cleaned(vzroot.private_dir, ident)
    except VzError as err:
        assert "cannot wait for subvolume" in err.message
    else:
        assert done is False, "a kernel with the ioctl must refuse to wait for a live subvolume"


def test_a_snapshot_holding_only_its_root_node_needs_no_wait(vzroot: VzRoot) -> None:
    """A snapshot that shares every block but its root node frees nothing more when the
    cleaner is done; one that holds data of its own does, and is waited for."""
    vzroot.ok("create", "101")
    parent = vzroot.private_dir
    source = parent / "101"
    shared = parent / "shared-snap"
    btrfs.snapshot(source, shared, readonly=True)
    assert btrfs.holds_only_its_root_node(shared)
    own = parent / "own-data"
    btrfs.create_subvolume(own)
    subprocess.run(["dd", "if=/dev/urandom", f"of={own}/data", "bs=1M", "count=8", "status=none"], check=True)
    assert not btrfs.holds_only_its_root_node(own)
    before = free_bytes(parent)
    btrfs.delete_and_reclaim(own)  # waits for the cleaner
    assert free_bytes(parent) - before > 6 << 20
    btrfs.delete_and_reclaim(shared)  # does not: nothing of it but its root node is its own
    assert not shared.exists()
