"""pyvz.rootview: host-side file access that can never leave the CT's root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.rootview import RootView

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="chown to other ids needs root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    return root


@pytest.fixture
def decoy(tmp_path: Path) -> Path:
    """A host file outside the CT root that nothing may touch."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("host secret\n")
    return secret


def make_view(root: Path) -> RootView:
    # Files are chowned to uid_base + owner; basing on our own ids works with and without root.
    return RootView(root, os.geteuid(), os.getegid())


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_write_and_read_text(root: Path) -> None:
    view = make_view(root)
    view.write_text("/etc/hostname", "ct\n")
    assert (root / "etc/hostname").read_text() == "ct\n"
    assert view.read_text("/etc/hostname") == "ct\n"
    assert view.read_text("etc/hostname") == "ct\n"  # a leading / is optional
    assert view.exists("/etc/hostname")
    assert not view.exists("/etc/nothing")
    assert view.read_or_empty("/etc/nothing") == ""
    assert view.read_or_empty("/no/such/dir/file") == ""


def test_write_text_sets_mode_and_creates_parents(root: Path) -> None:
    view = make_view(root)
    view.write_text("/var/lib/misc/state", "x", mode=0o600)
    target = root / "var/lib/misc/state"
    assert target.read_text() == "x"
    assert target.stat().st_mode & 0o777 == 0o600
    assert view.mode_of("/var/lib/misc/state") == 0o600
    assert (root / "var/lib").stat().st_mode & 0o777 == 0o755
    assert view.mode_of("/var/lib/misc/none") is None
    assert [p.name for p in (root / "var/lib/misc").iterdir()] == ["state"]


def test_read_missing_file_raises(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_view(root).read_text("/etc/missing")


def test_read_follows_symlinks_inside_the_root(root: Path) -> None:
    (root / "etc/real").write_text("real\n")
    os.symlink("/etc/real", root / "etc/absolute")
    os.symlink("real", root / "etc/relative")
    os.symlink("../etc/./real", root / "etc/dotted")
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=x\n")
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    view = make_view(root)
    for name in ("absolute", "relative", "dotted", "real"):
        assert view.read_text(f"/etc/{name}") == "real\n"
    assert view.read_text("/etc/os-release") == "ID=x\n"


def test_final_symlink_to_ct_shadow_is_replaced_not_followed(root: Path) -> None:
    (root / "etc/shadow").write_text("root:!:19000::::::\n")
    os.symlink("/etc/shadow", root / "etc/hostname")
    view = make_view(root)
    view.write_text("/etc/hostname", "ct\n")
    assert not (root / "etc/hostname").is_symlink()
    assert (root / "etc/hostname").read_text() == "ct\n"
    assert (root / "etc/shadow").read_text() == "root:!:19000::::::\n"


def test_absolute_symlink_to_host_path_resolves_inside_root(root: Path, decoy: Path) -> None:
    # The link names the real host path of the decoy; inside the CT that path does not exist.
    os.symlink(str(decoy), root / "etc/hostname")
    view = make_view(root)
    assert view.read_or_empty("/etc/hostname") == ""
    assert not view.exists("/etc/hostname")
    view.write_text("/etc/hostname", "ct\n")
    assert decoy.read_text() == "host secret\n"
    assert (root / "etc/hostname").read_text() == "ct\n"


def test_directory_symlink_to_host_path_stays_inside_root(root: Path, decoy: Path) -> None:
    before = snapshot(decoy.parent)
    os.symlink(str(decoy.parent), root / "etc/data")  # absolute, names the host dir
    os.symlink("/outside", root / "etc/out")  # absolute, CT-relative
    os.symlink("../../../../../../outside", root / "etc/up")  # relative, climbing out
    view = make_view(root)
    view.write_text("/etc/data/secret", "a\n")
    view.write_text("/etc/out/secret", "b\n")
    view.write_text("/etc/up/secret", "c\n")
    view.mkdir("/etc/out/newdir")
    assert snapshot(decoy.parent) == before
    assert sorted(p.name for p in decoy.parent.iterdir()) == ["secret"]
    assert (root / str(decoy).lstrip("/")).read_text() == "a\n"
    assert (root / "outside/secret").read_text() == "c\n"  # "b" then "c" went to the same place
    assert (root / "outside/newdir").is_dir()


def test_dotdot_cannot_escape_the_root(root: Path, decoy: Path) -> None:
    view = make_view(root)
    before = snapshot(decoy.parent)
    view.write_text("/../../outside/secret", "x\n")
    view.write_text("../outside/../outside/secret2", "y\n")
    view.write_text("/etc/../../../../outside/secret3", "z\n")
    assert snapshot(decoy.parent) == before
    assert (root / "outside/secret").read_text() == "x\n"
    assert (root / "outside/secret2").read_text() == "y\n"
    assert (root / "outside/secret3").read_text() == "z\n"
    assert view.read_text("/../../../outside/secret") == "x\n"


def test_dotdot_in_symlink_target_cannot_escape(root: Path, decoy: Path) -> None:
    os.symlink("../../outside/secret", root / "etc/passwd")
    view = make_view(root)
    assert view.read_or_empty("/etc/passwd") == ""
    (root / "outside").mkdir()
    (root / "outside/secret").write_text("ct file\n")
    assert view.read_text("/etc/passwd") == "ct file\n"
    assert decoy.read_text() == "host secret\n"


def test_symlink_loop_in_directory_is_an_error(root: Path) -> None:
    os.symlink("loop/x", root / "etc/loop")
    with pytest.raises(VzError) as caught:
        make_view(root).write_text("/etc/loop/file", "x")
    assert caught.value.code == ExitCode.SYSTEM_ERROR
    assert "too many symlinks" in caught.value.message


def test_symlink_loop_in_last_component_is_a_vzerror(root: Path) -> None:
    os.symlink("hostname", root / "etc/hostname")
    with pytest.raises((VzError, OSError)):
        make_view(root).read_text("/etc/hostname")


def test_write_replaces_a_looping_last_symlink(root: Path) -> None:
    os.symlink("hostname", root / "etc/hostname")
    make_view(root).write_text("/etc/hostname", "ct\n")
    assert (root / "etc/hostname").read_text() == "ct\n"


def test_write_through_file_as_directory_fails(root: Path) -> None:
    (root / "etc/file").write_text("")
    with pytest.raises(NotADirectoryError):
        make_view(root).write_text("/etc/file/sub", "x")
    assert make_view(root).read_or_empty("/etc/file/sub") == ""


def test_unchanged_write_is_a_noop(root: Path) -> None:
    view = make_view(root)
    view.write_text("/etc/hosts", "127.0.0.1 localhost\n")
    target = root / "etc/hosts"
    first = target.stat()
    view.write_text("/etc/hosts", "127.0.0.1 localhost\n")
    again = target.stat()
    assert (again.st_ino, again.st_mtime_ns, again.st_ctime_ns) == (
        first.st_ino,
        first.st_mtime_ns,
        first.st_ctime_ns,
    )
    # while a real change replaces the file (a new inode)
    view.write_text("/etc/hosts", "127.0.0.1 localhost ct\n")
    assert target.stat().st_ino != first.st_ino
    assert target.read_text() == "127.0.0.1 localhost ct\n"


def test_mode_change_alone_rewrites(root: Path) -> None:
    view = make_view(root)
    view.write_text("/etc/x", "same")
    view.write_text("/etc/x", "same", mode=0o600)
    assert (root / "etc/x").stat().st_mode & 0o777 == 0o600


def test_no_temp_files_left(root: Path) -> None:
    view = make_view(root)
    for text in ("a", "b", "b"):
        view.write_text("/etc/motd", text)
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["motd"]


def test_mkdir(root: Path) -> None:
    view = make_view(root)
    view.mkdir("/home/user", 0o750)
    assert (root / "home/user").is_dir()
    assert (root / "home/user").stat().st_mode & 0o777 == 0o750
    (root / "home/user/keep").write_text("k")
    view.mkdir("/home/user", 0o700)  # exists: left alone
    assert (root / "home/user/keep").read_text() == "k"
    assert (root / "home/user").stat().st_mode & 0o777 == 0o750


@needs_root
def test_ownership_is_shifted_by_the_id_base(root: Path) -> None:
    view = RootView(root, uid_base=100000, gid_base=200000)
    view.write_text("/etc/shadow", "x\n", mode=0o640, owner=(0, 42))
    view.write_text("/home/bob/.profile", "p\n", owner=(1000, 1000))
    view.mkdir("/home/alice", 0o750, owner=(1001, 1002))
    st = (root / "etc/shadow").stat()
    assert (st.st_uid, st.st_gid) == (100000, 200042)
    st = (root / "home/bob/.profile").stat()
    assert (st.st_uid, st.st_gid) == (101000, 201000)
    st = (root / "home/bob").stat()  # created on the way: CT root owns it
    assert (st.st_uid, st.st_gid) == (100000, 200000)
    st = (root / "home/alice").stat()
    assert (st.st_uid, st.st_gid) == (101001, 201002)


@needs_root
def test_owner_change_alone_rewrites(root: Path) -> None:
    view = RootView(root, uid_base=100000, gid_base=100000)
    view.write_text("/etc/x", "same")
    view.write_text("/etc/x", "same", owner=(0, 42))
    st = (root / "etc/x").stat()
    assert (st.st_uid, st.st_gid) == (100000, 100042)
    # and a view with a different base sees a different owner, so it rewrites too
    RootView(root).write_text("/etc/x", "same", owner=(0, 42))
    st = (root / "etc/x").stat()
    assert (st.st_uid, st.st_gid) == (0, 42)
