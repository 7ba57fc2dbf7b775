"""Templates unpacked once per pool, then shared by every CT made from them.

A tree is named after the archive and its size and mtime, so a rebuilt template gets a new
tree while CTs on the old one keep working. It is unpacked into a partial name and renamed
into place, so a crash never leaves a tree that looks complete but is not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pyvz.errors import ExitCode
from pyvz.run import run
from pyvz.storage.base import remove_path
from pyvz.storage.btrfs import create_subvolume, delete_subvolume, is_subvolume, set_readonly
from pyvz.storage.pool import is_btrfs

TREES_DIR = ".templates"


def tree_path(archive: Path, pool_dir: Path, snapshottable: bool = True) -> Path:
    stat = archive.stat()
    stamp = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    name = archive.name.split(".tar")[0]
    return pool_dir / TREES_DIR / f"{name}@{stamp}{'' if snapshottable else '.dir'}"


def unpacked_tree(archive: Path, pool_dir: Path, snapshottable: bool = True) -> Path:
    """The tree for `archive` in this pool, unpacking it the first time. Caller holds the pool lock.

    On a btrfs pool a snapshottable tree is a subvolume (btrfs CTs are snapshots of it). An
    overlay's lower tree must not be one: btrfs numbers inodes per subvolume, and overlayfs
    over layers of one filesystem passes those numbers through, so a lower file and an
    upper file would share an inode number (tar and rsync -H then see hard links that are
    not there). It is a plain directory beside the CTs' upper layers instead."""
    tree = tree_path(archive, pool_dir, snapshottable)
    if tree.is_dir():
        return tree
    tree.parent.mkdir(mode=0o755, exist_ok=True)
    os.chmod(tree.parent, 0o755)  # unprivileged CTs must be able to traverse to their lower tree
    use_btrfs = snapshottable and is_btrfs(pool_dir)
    for stale in tree.parent.glob(".*.partial"):
        delete_subvolume(stale) if is_subvolume(stale) else remove_path(stale)
    partial = tree.with_name(f".{tree.name}.partial")
    if use_btrfs:
        create_subvolume(partial)
    else:
        partial.mkdir()
    os.chmod(partial, 0o755)
    run(
        ["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(partial)],
        error_code=ExitCode.BAD_TEMPLATE,
    )
    if use_btrfs:
        set_readonly(partial, True)  # CT snapshots are writable; the shared tree never is
    os.rename(partial, tree)
    return tree
