"""tools/build-criu: reading the host's apt config, choosing a source, checking what apt fetched,
and the fast path (fake criu binaries, fake apt-get; nothing here installs or downloads)."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("build_criu", str(REPO / "tools/build-criu"))
    spec = importlib.util.spec_from_loader("build_criu", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_criu"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


bc = load()

HOST_SOURCES = """\
Types: deb
# a comment between fields
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

INLINE_KEY = """\
Types: deb
URIs: http://vendor.invalid/apt
Suites: trixie
Components: main
Enabled: no

Types: deb deb-src
URIs: http://mirror.invalid/debian http://other.invalid/debian
Suites: trixie trixie-updates
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----
"""


def test_picks_the_host_release_entry_and_writes_a_deb_src_entry_for_a_newer_suite() -> None:
    archive = bc.pick_archive(bc.parse_deb822(HOST_SOURCES), "bookworm")
    assert archive.uris == ("http://mirror.invalid/debian",)
    assert bc.private_sources(archive, "sid") == (
        "Types: deb-src\n"
        "URIs: http://mirror.invalid/debian\n"
        "Suites: sid\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def test_an_inline_key_survives_the_round_trip_and_disabled_entries_are_skipped() -> None:
    archive = bc.pick_archive(bc.parse_deb822(INLINE_KEY), "trixie")
    assert archive.uris[0] == "http://mirror.invalid/debian"
    again = bc.parse_deb822(bc.private_sources(archive, "sid"))
    assert again[0].signed_by == archive.signed_by
    assert "\n mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w\n" in archive.signed_by
    assert again[0].types == ("deb-src",) and again[0].suites == ("sid",)


def test_one_line_sources_with_options_and_comments() -> None:
    text = (
        "# deb http://old.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/d.gpg] http://mirror.invalid/debian bookworm main # x\n"
        "deb http://mirror.invalid/debian-security bookworm-security main\n"
    )
    sources = bc.parse_one_line(text)
    assert len(sources) == 2
    archive = bc.pick_archive(sources, "bookworm")
    assert archive.signed_by == "/etc/apt/keyrings/d.gpg"
    assert archive.components == ("main",)


def test_host_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.invalid/debian bookworm main\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(HOST_SOURCES)
    (tmp_path / "sources.list.d/x.list.disabled").write_text("deb http://b.invalid/ bookworm main\n")
    uris = [s.uris[0] for s in bc.host_sources(tmp_path)]
    assert uris == [
        "http://a.invalid/debian",
        "http://mirror.invalid/debian",
        "http://mirror.invalid/debian-security",
    ]


def test_no_entry_for_the_host_release_is_one_clear_error() -> None:
    only_security = bc.parse_deb822(HOST_SOURCES.split("\n\n")[1])
    with pytest.raises(bc.Fail, match="no entry for 'bookworm main'"):
        bc.pick_archive(only_security, "bookworm")


def test_versions() -> None:
    assert bc.upstream_version("3.17.1-2+deb12u2") == "3.17.1"
    assert bc.upstream_version("1:4.2.1-1") == "4.2.1"
    assert bc.parse_criu_version("Version: 4.2.1\nGitID: v4.2.1\n") == "4.2.1"
    assert bc.parse_criu_version("garbage") is None
    assert bc.version_ge("4.2.1-1", "4.2") and not bc.version_ge("4.1.1-1", "4.2")
    assert not bc.version_ge("4.2~rc1", "4.2")


SHOWSRC = """\
Package: criu
Version: 4.2.1-1
Checksums-Sha256:
 {dsc} 2901 criu_4.2.1-1.dsc
 {orig} 1038700 criu_4.2.1.orig.tar.xz
 e9f797a19f0e7dd66d480bea47f2ef261b3d9aee6bab5059882c0074b1b84d2d 12964 criu_4.2.1-1.debian.tar.xz

Package: criu-other
Version: 9.9-1

Package: criu
Version: 4.1.1-1
"""


def dsc_text(orig_sha: str) -> str:
    return (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        "Format: 3.0 (quilt)\nSource: criu\nVersion: 4.2.1-1\n"
        "Checksums-Sha256:\n"
        f" {orig_sha} 1038700 criu_4.2.1.orig.tar.xz\n"
        " e9f797a19f0e7dd66d480bea47f2ef261b3d9aee6bab5059882c0074b1b84d2d 12964 criu_4.2.1-1.debian.tar.xz\n"
        "\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n-----END PGP SIGNATURE-----\n"
    )


def test_showsrc_records_and_the_dsc_orig_entry() -> None:
    records = bc.parse_showsrc(SHOWSRC.format(dsc="a" * 64, orig="b" * 64))
    assert [r.version for r in records] == ["4.2.1-1", "4.1.1-1"]
    assert records[0].sha256["criu_4.2.1-1.dsc"] == "a" * 64
    assert bc.orig_tarball(dsc_text("c" * 64)) == ("criu_4.2.1.orig.tar.xz", "c" * 64)


class FakeApt:
    def __init__(self, per_suite: dict[str, list[str] | Exception]) -> None:
        self.per_suite = per_suite
        self.asked: list[str] = []

    def use(self, archive: object, suite: str) -> list[object]:
        self.asked.append(suite)
        answer = self.per_suite[suite]
        if isinstance(answer, Exception):
            raise answer
        return [bc.SourceRecord(v, {}) for v in answer]


def test_find_source_takes_the_newest_suite_that_has_4_2() -> None:
    apt = FakeApt({"sid": ["4.2.1-1", "4.3-1", "4.1-1"], "testing": ["4.2.1-1"]})
    suite, record = bc.find_source(apt, None)
    assert (suite, record.version, apt.asked) == ("sid", "4.3-1", ["sid"])

    apt = FakeApt({"sid": bc.Fail("apt-get update failed"), "testing": ["4.2.1-1"]})
    assert bc.find_source(apt, None)[0] == "testing"


def test_find_source_fails_in_one_line_naming_what_each_suite_has() -> None:
    apt = FakeApt({"sid": ["4.1.1-1"], "testing": []})
    with pytest.raises(bc.Fail) as caught:
        bc.find_source(apt, None)
    assert str(caught.value) == "no Debian suite offers criu >= 4.2 (sid: criu 4.1.1-1; testing: criu absent)"


def fake_apt_get(bin_dir: Path, orig: bytes, dsc: str) -> None:
    """An apt-get that fetches the .dsc and the orig tarball and then fails on the .debian.tar.xz,
    as the mirror does."""
    (bin_dir / "orig").write_bytes(orig)
    (bin_dir / "dsc").write_text(dsc)
    script = bin_dir / "apt-get"
    script.write_text(
        "#!/bin/sh\n"
        f"cp {bin_dir}/dsc criu_4.2.1-1.dsc\n"
        f"cp {bin_dir}/orig criu_4.2.1.orig.tar.xz\n"
        "echo 'E: Failed to fetch criu_4.2.1-1.debian.tar.xz  404  Not Found' >&2\n"
        "exit 100\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize("tampered", [False, True])
def test_fetch_orig_tolerates_the_404_and_checks_the_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampered: bool
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    orig = b"upstream tarball"
    dsc = dsc_text(hashlib.sha256(orig).hexdigest())
    fake_apt_get(bin_dir, orig + (b"!" if tampered else b""), dsc)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    record = bc.SourceRecord("4.2.1-1", {"criu_4.2.1-1.dsc": hashlib.sha256(dsc.encode()).hexdigest()})
    apt = bc.PrivateApt(tmp_path / "apt")
    if tampered:
        with pytest.raises(bc.Fail, match="criu_4.2.1.orig.tar.xz has sha256 .* refusing to build it"):
            bc.fetch_orig(apt, record, tmp_path / "src")
    else:
        assert bc.fetch_orig(apt, record, tmp_path / "src").read_bytes() == orig


def fake_criu(prefix: Path, version: str, check_ok: bool) -> Path:
    binary = prefix / "sbin/criu"
    binary.parent.mkdir(parents=True, exist_ok=True)
    check = 'echo "Looks good."' if check_ok else 'echo "Error (criu/kerndat.c:1): no soft-dirty" >&2; exit 1'
    binary.write_text(
        f'#!/bin/sh\ncase "$1" in\n--version) echo "Version: {version}";;\ncheck) {check};;\nesac\n'
    )
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


@pytest.fixture
def no_apt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records whether provide() went past the fast path (its first step after it asks apt)."""
    asked: list[str] = []

    def candidate_version(package: str, *_: object) -> str | None:
        asked.append(package)
        raise bc.Fail("stop here")

    monkeypatch.setattr(bc, "candidate_version", candidate_version)
    return asked


def test_a_good_criu_is_left_alone(tmp_path: Path, no_apt: list[str]) -> None:
    fake_criu(tmp_path, "4.2.1", check_ok=True)
    bc.provide(tmp_path, force=False)
    assert no_apt == []


@pytest.mark.parametrize("version", ["3.17.1", "4.1.1"])
def test_an_old_criu_is_replaced(tmp_path: Path, no_apt: list[str], version: str) -> None:
    fake_criu(tmp_path, version, check_ok=True)
    with pytest.raises(bc.Fail, match="stop here"):
        bc.provide(tmp_path, force=False)
    assert no_apt == ["criu"]


def test_our_own_build_failing_criu_check_warns_instead_of_building_again(
    tmp_path: Path, no_apt: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    binary = fake_criu(tmp_path, "4.2.1", check_ok=False)
    # Without a stamp the failing binary may be someone else's: we try to do better.
    with pytest.raises(bc.Fail, match="stop here"):
        bc.provide(tmp_path, force=False)
    stamp = bc.stamp_path(tmp_path)
    stamp.parent.mkdir(parents=True)
    stamp.write_text(bc.stamp_text(binary, "4.2.1", "test"))
    no_apt.clear()
    bc.provide(tmp_path, force=False)
    assert no_apt == []
    assert (
        "fails 'criu check' on this kernel (Error (criu/kerndat.c:1): no soft-dirty)"
        in capsys.readouterr().err
    )
    # A different binary at the same place is not the one the stamp vouches for.
    binary.write_text(binary.read_text() + "# changed\n")
    with pytest.raises(bc.Fail, match="stop here"):
        bc.provide(tmp_path, force=False)


def test_what_the_build_line_says_about_the_host() -> None:
    old = bc.Probe(Path("/usr/sbin/criu"), "3.17.1", False, "")
    assert bc.host_criu_says(old, "3.17.1-2+deb12u2") == "the host's criu 3.17.1 is too old for this kernel"
    assert bc.host_criu_says(None, "4.1.1-1") == "the host's criu 4.1.1 is too old for this kernel"
    assert bc.host_criu_says(None, None) == "the host has no criu"
    broken = bc.Probe(Path("/usr/sbin/criu"), "4.2.1", False, "Error: x")
    assert bc.host_criu_says(broken, None) == "the host's criu 4.2.1 fails 'criu check': Error: x"


def test_a_new_enough_criu_in_the_host_suite_is_installed_with_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done: list[object] = []
    monkeypatch.setattr(bc, "installed_criu", lambda prefix: None)
    monkeypatch.setattr(bc, "candidate_version", lambda package, *_: "4.3-1")
    monkeypatch.setattr(bc, "apt_install", lambda packages: done.append(("apt", list(packages))))
    monkeypatch.setattr(bc, "finish", lambda binary, prefix, origin: done.append(("finish", binary, origin)))
    monkeypatch.setattr(bc, "os_codename", lambda: done.append("build") or "forky")
    monkeypatch.setattr(bc, "host_sources", lambda: [])
    bc.provide(None, force=False)
    assert done == [("apt", ["criu"]), ("finish", Path("/usr/sbin/criu"), "apt criu 4.3-1")]
    assert capsys.readouterr().out == "Installing Debian's criu 4.3-1 (the host has no criu)\n"
    # An explicit prefix means "build it there": apt cannot install into one.
    done.clear()
    with pytest.raises(bc.Fail, match="no entry for 'forky main'"):
        bc.provide(tmp_path, force=False)
    assert done == ["build"]
