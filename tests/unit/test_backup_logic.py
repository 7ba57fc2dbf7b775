"""Backup logic that needs no root: archive names, pruning, excludes, metadata."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pyvz.backup.archive import ArchiveName, Compression, archives_of, compression_of, to_prune
from pyvz.backup.excludes import STD_EXCLUDES, as_tar_pattern, compile_patterns, excluded_members, is_excluded
from pyvz.backup.metadata import Metadata, SubvolRef
from pyvz.errors import ExitCode, VzError

NOW = datetime(2026, 11, 29, 12, 0, 0)


def test_names_round_trip_for_every_compression() -> None:
    for compression, suffix in (
        (Compression.ZSTD, ".tar.zst"),
        (Compression.GZIP, ".tar.gz"),
        (Compression.LZO, ".tar.lzo"),
        (Compression.NONE, ".tar"),
    ):
        name = ArchiveName(101, NOW, compression)
        assert name.name == f"vzdump-101-2026_11_29-12_00_00{suffix}"
        assert name.log_name == "vzdump-101-2026_11_29-12_00_00.log"
        assert ArchiveName.parse(name.name) == name
        assert compression_of(Path(name.name)) is compression
    assert name.partial_name.startswith(".") and ArchiveName.parse(name.partial_name) is None


@pytest.mark.parametrize(
    "name",
    [
        "vzdump-101-2026_11_29-12_00_00.log",
        "vzdump-x-2026_11_29-12_00_00.tar",
        "vzdump-101-2026_13_29-12_00_00.tar",
        "vzdump-101-2026_11_29-12_00_00.tar.zst.partial",
        "other.tar.zst",
    ],
)
def test_other_names_are_not_archives(name: str) -> None:
    assert ArchiveName.parse(name) is None


def test_unknown_suffix_is_refused() -> None:
    with pytest.raises(VzError) as caught:
        compression_of(Path("backup.zip"))
    assert caught.value.code == ExitCode.RESTORE_ERROR


def test_archives_of_lists_one_ct_oldest_first(tmp_path: Path) -> None:
    for ctid, hours in ((101, 2), (101, 1), (102, 3)):
        (tmp_path / ArchiveName(ctid, NOW - timedelta(hours=hours), Compression.ZSTD).name).touch()
    (tmp_path / ".vzdump-101-2026_11_29-12_00_00.tar.zst.partial").touch()
    found = archives_of(tmp_path, 101)
    assert [a.date for a in found] == [NOW - timedelta(hours=2), NOW - timedelta(hours=1)]


def _series(count: int) -> list[ArchiveName]:
    return [ArchiveName(101, NOW - timedelta(days=count - i), Compression.ZSTD) for i in range(count)]


def test_maxfiles_keeps_the_newest() -> None:
    series = _series(5)
    gone = to_prune(series, {}, NOW, maxfiles=2)
    assert gone == series[:3]


def test_prune_days_and_the_newest_always_stays() -> None:
    series = _series(5)  # 5, 4, 3, 2, 1 days old
    assert to_prune(series, {}, NOW, max_days=3) == series[:2]
    assert to_prune(series, {}, NOW, max_days=0) == series[:4]  # never the newest


def test_pruning_keeps_what_a_kept_incremental_needs() -> None:
    series = _series(4)
    names = [a.name for a in series]
    parents = {names[1]: names[0], names[2]: names[1], names[3]: None}
    # Keeping only the newest (a full) lets the whole old chain go...
    assert to_prune(series, parents, NOW, maxfiles=1) == series[:3]
    # ...but keeping the newest incremental keeps its chain down to the full backup.
    parents[names[3]] = names[2]
    assert to_prune(series, parents, NOW, maxfiles=1) == []


def test_std_excludes_are_vzdump_classic_list() -> None:
    patterns = compile_patterns(STD_EXCLUDES)
    for path in ("/var/log/syslog", "/tmp/x", "/var/tmp/y/z", "/var/run/sshd.pid"):
        assert is_excluded(path, patterns), path
    for path in ("/var/log", "/tmp", "/var/run/utmp", "/etc/passwd", "/data/tmp/x"):
        assert not is_excluded(path, patterns), path


def test_bad_regex_is_a_one_line_error() -> None:
    with pytest.raises(VzError) as caught:
        compile_patterns(["/var/(log"])
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE and "\n" not in caught.value.message


def test_excluded_members_prunes_directories(tmp_path: Path) -> None:
    (tmp_path / "var/log/deep").mkdir(parents=True)
    (tmp_path / "var/log/deep/x").touch()
    (tmp_path / "var/log/a").touch()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/file[1]*").touch()
    os.symlink("keep", tmp_path / "tmp")
    found = sorted(excluded_members(tmp_path, compile_patterns(["/var/log/.+", "/keep/file.*", "/tmp"])))
    assert found == ["./keep/file[1]*", "./tmp", "./var/log/a", "./var/log/deep"]
    assert as_tar_pattern("./keep/file[1]*") == r"./keep/file\[1]\*"


def _meta(**changes: object) -> Metadata:
    values: dict[str, object] = dict(
        ctid=101, kind="incremental", mode="snapshot", layout="btrfs", date="2026-11-29T12:00:00+00:00",
        archive="vzdump-101-2026_11_29-12_00_00.tar.zst", parent="vzdump-101-2026_11_28-12_00_00.tar.zst",
        base=SubvolRef("0b7c8a55-8a0e-4b4c-9a53-3c1f4f0f2f11", 42),
        parent_base=SubvolRef("5d0e9f1c-1a2b-4c3d-8e9f-0a1b2c3d4e5f", 17), scripts=("mount",),
    )  # fmt: skip
    values.update(changes)
    return Metadata(**values)  # type: ignore[arg-type]


def test_metadata_round_trips() -> None:
    meta = _meta()
    assert Metadata.from_json(meta.to_json(), "x") == meta


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not JSON"),
        ("[]", "not an object"),
        (re.sub(r'"format": 1', '"format": 9', _meta().to_json()), "format 9"),
        (_meta(kind="weird").to_json(), "unknown kind"),
        (_meta(parent=None).to_json(), "must name its parent"),
        (_meta().to_json().replace('"ctid": 101', '"ctid": "x"'), "malformed"),
        (_meta(scripts=("../evil",)).to_json(), "script"),
    ],
)
def test_bad_metadata_is_refused(text: str, why: str) -> None:
    with pytest.raises(VzError) as caught:
        Metadata.from_json(text, "archive.tar.zst")
    assert caught.value.code == ExitCode.RESTORE_ERROR
    assert why in caught.value.message and "archive.tar.zst" in caught.value.message
