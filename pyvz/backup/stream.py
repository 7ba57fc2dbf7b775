"""Writing, reading and checking archive files: tar, a compressor, and the pipe between.

Writing goes through run.pipeline: `tar -c | zstd -T0 > partial` with nothing of ours in the
data path, unless progress is shown (on a terminal) or --bwlimit is set, when Python relays
the uncompressed stream. The file is renamed to its real name only when complete and synced.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyvz.atomic import fsync_dir
from pyvz.backup.archive import Compression, compression_of
from pyvz.backup.metadata import META, STREAM, Metadata
from pyvz.errors import ExitCode, VzError
from pyvz.run import pipeline, run

# Owners as numbers (the CT's ids), every xattr (security.capability, user.*), POSIX ACLs.
TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")


def create_argv(
    staging: Path,
    members: Sequence[str],
    tree: Path | None,
    excludes: Sequence[str],
    exclude_file: Path | None,
    hard_links: bool = True,
) -> list[str]:
    """tar -c of the metadata members of `staging` first, then all of `tree` at ./;
    without `hard_links`, every name is archived as a file of its own."""
    argv = ["tar", "-c", "-f", "-", *TAR_FLAGS, "--sparse", *([] if hard_links else ["--hard-dereference"])]
    argv += ["-C", str(staging), *members]
    if tree is not None:
        argv += ["-C", str(tree), "--anchored", *(f"--exclude={e}" for e in excludes)]
        if exclude_file is not None:
            argv.append(f"--exclude-from={exclude_file}")
        argv.append(".")
    return argv


class Meter:
    """Relayed-byte accounting: a rate limit, and progress on stderr when it is a terminal."""

    def __init__(self, total: int | None, bwlimit_kbps: int | None, show: bool) -> None:
        self.total = total
        self.limit = bwlimit_kbps * 1024 if bwlimit_kbps else None
        self.show = show
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.limit is not None:
            ahead = self.done / self.limit - (now - self.started)
            if ahead > 0:
                time.sleep(ahead)
                now = time.monotonic()
        if self.show and now - self.shown >= 0.5:
            self.shown = now
            sys.stderr.write("\r" + self.line(now) + "\033[K")
            sys.stderr.flush()

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-6)
        total = f" / ~{_mib(self.total)}" if self.total else ""
        return f"  {_mib(self.done)}{total} read, {_mib(rate)}/s"

    def finish(self) -> None:
        if self.show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _mib(count: float) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def write(tar_argv: Sequence[str], compression: Compression, final: Path, meter: Meter | None) -> int:
    """Write the archive at `final` (via its partial name); returns its size."""
    partial = final.with_name(f".{final.name}.partial")
    stages = [list(tar_argv)]
    if compression.compressor is not None:
        stages.append(list(compression.compressor))
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            with _flushing(fd):
                pipeline(stages, stdout=fd, relay=meter, error_code=ExitCode.CHKPNT_ERROR)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
            if meter is not None:
                meter.finish()
        os.rename(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    return size


@contextmanager
def _flushing(fd: int, every: float = 0.5) -> Iterator[None]:
    """Write the file out while it is being written, so the fsync before the rename has only
    the tail left to do (at the end it would stall for the whole archive)."""
    import threading

    done = threading.Event()

    def flush() -> None:
        while not done.wait(every):
            try:
                os.fdatasync(fd)
            except OSError:
                return

    worker = threading.Thread(target=flush, name="flush", daemon=True)
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join()


def member_argv(archive: Path, member: str) -> list[str]:
    """tar printing one member to stdout, stopping as soon as it has it."""
    return [
        "tar",
        "-x",
        "-O",
        "--occurrence",
        *compression_of(archive).tar_option,
        "-f",
        str(archive),
        member,
    ]


def read_member(archive: Path, member: str) -> str:
    result = run(member_argv(archive, member), check=False, timeout=None)
    if result.returncode != 0:
        raise VzError(
            ExitCode.RESTORE_ERROR,
            f"{archive.name} has no readable {member.lstrip('./')}: not a pyvz backup, or damaged "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no detail'})",
        )
    return result.stdout


def metadata(archive: Path) -> Metadata:
    """The archive's metadata, read from the front of it (the rest is not read)."""
    if not archive.is_file():
        raise VzError(ExitCode.RESTORE_ERROR, f"archive {archive} not found")
    return Metadata.from_json(read_member(archive, META), archive.name)


def extract(archive: Path, target: Path) -> None:
    """Unpack a full archive's tree into `target`, leaving the metadata out."""
    argv = [
        "tar", "-x", *compression_of(archive).tar_option, "-f", str(archive), *TAR_FLAGS,
        "--same-permissions", "--same-owner", "-C", str(target), "--anchored", "--exclude=./etc/vzdump",
    ]  # fmt: skip
    pipeline([argv], error_code=ExitCode.RESTORE_ERROR)


def check(archive: Path) -> None:
    """Read the whole archive: the decompressor's checksums, then tar's own listing."""
    compression = compression_of(archive)
    if compression.tester is not None:
        pipeline([[*compression.tester, str(archive)]], error_code=ExitCode.RESTORE_ERROR)
    pipeline([["tar", "-t", *compression.tar_option, "-f", str(archive)]], error_code=ExitCode.RESTORE_ERROR)


def has_stream(archive: Path) -> bool:
    listing = run(
        ["tar", "-t", "--occurrence", *compression_of(archive).tar_option, "-f", str(archive), STREAM],
        check=False,
        timeout=None,
    )
    return listing.returncode == 0 and STREAM in listing.stdout


def chain(archive: Path) -> list[tuple[Path, Metadata]]:
    """The archives a restore of `archive` needs, full backup first; each must be present in
    the same directory and be the one its child was sent against."""
    found = [(archive, metadata(archive))]
    while found[-1][1].incremental:
        child_path, child = found[-1]
        assert child.parent is not None
        parent_path = child_path.with_name(child.parent)
        if not parent_path.is_file():
            raise VzError(
                ExitCode.RESTORE_ERROR,
                f"{child_path.name} is incremental and its parent archive {child.parent} is missing "
                f"from {child_path.parent}",
            )
        parent = metadata(parent_path)
        if parent.base != child.parent_base or parent.ctid != child.ctid:
            raise VzError(
                ExitCode.RESTORE_ERROR,
                f"{parent_path.name} is not the backup {child_path.name} was made against "
                "(its base snapshot differs)",
            )
        if len(found) > 10000:
            raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name}: the chain of parents loops")
        found.append((parent_path, parent))
    return list(reversed(found))


def verify(archive: Path) -> Metadata:
    """vzdump --verify: everything short of restoring."""
    meta = metadata(archive)
    links = chain(archive)
    check(archive)
    if meta.incremental and not has_stream(archive):
        raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name} is incremental but holds no send stream")
    del links
    return meta
