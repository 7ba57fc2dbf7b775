"""pyvz.distro: hostname and user files inside a CT root, and picking the handler."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from pyvz.distro.base import FIRST_USER_ID, Distro
from pyvz.distro.registry import Busybox, Debian, detect, os_release_ids
from pyvz.errors import ExitCode, VzError
from pyvz.rootview import RootView

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="set_password chowns shadow and home dirs")

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
shadow:x:42:
alice:x:1000:
nogroup:x:65534:
"""
SHADOW = """\
root:!:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
alice:$6$oldsalt$oldhash:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ct"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/shadow").write_text(SHADOW)
    os.chmod(root / "etc/shadow", 0o640)
    if IS_ROOT:
        os.chown(root / "etc/shadow", 0, 42)
    return root


def view_of(root: Path) -> RootView:
    return RootView(root, os.geteuid(), os.getegid())


def shadow_entry(root: Path, user: str) -> list[str]:
    for line in (root / "etc/shadow").read_text().splitlines():
        if line.split(":")[0] == user:
            return line.split(":")
    raise AssertionError(f"{user} not in shadow")


def verifies(password: str, hashed: str) -> bool:
    return crypt.crypt(password, hashed) == hashed


# ---- hostname ------------------------------------------------------------------------------


def test_set_hostname_writes_hostname_and_hosts(root: Path) -> None:
    (root / "etc/hosts").write_text(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost\n# my hosts\n10.0.0.5 db.internal db\n"
    )
    Distro().set_hostname(view_of(root), "web.example.com")
    assert (root / "etc/hostname").read_text() == "web.example.com\n"
    assert (root / "etc/hosts").read_text() == (
        "127.0.0.1 localhost\n"
        "::1 localhost ip6-localhost\n"
        "# my hosts\n"
        "10.0.0.5 db.internal db\n"
        "127.0.1.1 web.example.com web\n"
    )


def test_set_hostname_replaces_the_old_127_0_1_1_line(root: Path) -> None:
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n127.0.1.1 old.example old\n")
    view = view_of(root)
    Distro().set_hostname(view, "new")
    Distro().set_hostname(view, "newer")
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert [line for line in hosts if line.startswith("127.0.1.1")] == ["127.0.1.1 newer"]
    assert "old" not in " ".join(hosts)
    assert hosts[:2] == ["127.0.0.1 localhost", "::1 localhost"]
    assert (root / "etc/hostname").read_text() == "newer\n"


def test_set_hostname_without_hosts_file_adds_loopback_lines(root: Path) -> None:
    Distro().set_hostname(view_of(root), "box")
    assert (root / "etc/hosts").read_text() == (
        "127.0.0.1 localhost.localdomain localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 box\n"
    )


def test_set_hostname_twice_is_stable(root: Path) -> None:
    view = view_of(root)
    Distro().set_hostname(view, "web.example.com")
    first = (root / "etc/hosts").read_text()
    inode = (root / "etc/hosts").stat().st_ino
    Distro().set_hostname(view, "web.example.com")
    assert (root / "etc/hosts").read_text() == first
    assert (root / "etc/hosts").stat().st_ino == inode  # unchanged content: not rewritten


def test_set_hostname_does_not_follow_a_hostile_symlink(root: Path, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text("host file\n")
    os.symlink(str(decoy), root / "etc/hosts")
    os.symlink("/etc/shadow", root / "etc/hostname")
    Distro().set_hostname(view_of(root), "web")
    assert decoy.read_text() == "host file\n"
    assert (root / "etc/shadow").read_text() == SHADOW
    assert (root / "etc/hostname").read_text() == "web\n"
    assert "127.0.1.1 web" in (root / "etc/hosts").read_text()


def test_hostname_command() -> None:
    assert Distro().hostname_command("web") == ("hostname", "web")


# ---- passwords -----------------------------------------------------------------------------


@needs_root
def test_set_password_creates_a_missing_user(root: Path) -> None:
    created = Distro().set_password(view_of(root), "bob", "s3cret pw")
    assert created is True
    passwd = (root / "etc/passwd").read_text()
    assert passwd == PASSWD + "bob:x:1001:1001::/home/bob:/bin/sh\n"
    assert (root / "etc/group").read_text() == GROUP + "bob:x:1001:\n"
    entry = shadow_entry(root, "bob")
    assert len(entry) == 9
    assert entry[1].startswith("$6$")
    assert verifies("s3cret pw", entry[1])
    assert not verifies("wrong", entry[1])
    assert int(entry[2]) > 19000  # last change: today, in days since the epoch
    home = root / "home/bob"
    assert home.is_dir()
    assert home.stat().st_mode & 0o777 == 0o750
    assert (home.stat().st_uid, home.stat().st_gid) == (1001, 1001)
    # shadow keeps its mode and group
    st = (root / "etc/shadow").stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, 42)


@needs_root
def test_set_password_skips_ids_used_by_users_or_groups(root: Path) -> None:
    (root / "etc/group").write_text(GROUP + "staff:x:1001:\n")
    Distro().set_password(view_of(root), "bob", "pw")
    assert "bob:x:1002:1002::/home/bob:/bin/sh" in (root / "etc/passwd").read_text()
    assert FIRST_USER_ID == 1000


@needs_root
def test_set_password_uses_bash_when_present(root: Path) -> None:
    (root / "bin").mkdir()
    (root / "bin/bash").write_text("")
    Distro().set_password(view_of(root), "bob", "pw")
    assert (root / "etc/passwd").read_text().endswith("bob:x:1001:1001::/home/bob:/bin/bash\n")


@needs_root
def test_set_password_updates_only_that_users_shadow_line(root: Path) -> None:
    created = Distro().set_password(view_of(root), "alice", "new password")
    assert created is False
    assert (root / "etc/passwd").read_text() == PASSWD
    assert (root / "etc/group").read_text() == GROUP
    assert not (root / "home").exists()
    old = SHADOW.splitlines()
    new = (root / "etc/shadow").read_text().splitlines()
    assert len(new) == len(old)
    for before, after in zip(old, new, strict=True):
        if before.startswith("alice:"):
            fields = after.split(":")
            assert fields[0] == "alice"
            assert verifies("new password", fields[1])
            assert fields[3:] == before.split(":")[3:]  # min/max/warn... kept
        else:
            assert after == before


@needs_root
def test_set_password_pads_a_short_shadow_line(root: Path) -> None:
    (root / "etc/shadow").write_text("root:!\n")
    Distro().set_password(view_of(root), "root", "toor")
    fields = shadow_entry(root, "root")
    assert len(fields) == 9
    assert verifies("toor", fields[1])


@needs_root
def test_set_password_adds_a_missing_shadow_line(root: Path) -> None:
    (root / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
    assert Distro().set_password(view_of(root), "alice", "pw") is False
    lines = (root / "etc/shadow").read_text().splitlines()
    assert lines[0] == "root:!:19000:0:99999:7:::"
    assert lines[1].startswith("alice:$6$")
    assert verifies("pw", lines[1].split(":")[1])


@needs_root
def test_set_password_with_gshadow_appends_group(root: Path) -> None:
    (root / "etc/gshadow").write_text("root:*::\nshadow:*::\n")
    (root / "etc/gshadow").chmod(0o640)
    Distro().set_password(view_of(root), "bob", "pw")
    assert (root / "etc/gshadow").read_text() == "root:*::\nshadow:*::\nbob:!::\n"
    # The file keeps its mode, and its group stays the shadow group.
    assert (root / "etc/gshadow").stat().st_mode & 0o777 == 0o640


@needs_root
def test_set_password_keeps_gshadow_group(root: Path) -> None:
    (root / "etc/gshadow").write_text("root:*::\nshadow:*::\n")
    os.chmod(root / "etc/gshadow", 0o640)
    os.chown(root / "etc/gshadow", 0, 42)
    Distro().set_password(view_of(root), "bob", "pw")
    assert (root / "etc/gshadow").stat().st_gid == 42


@needs_root
def test_set_password_keeps_shadow_mode_0000(root: Path) -> None:
    os.chmod(root / "etc/shadow", 0)
    Distro().set_password(view_of(root), "alice", "pw")
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0


def test_set_password_without_passwd_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    with pytest.raises(VzError) as caught:
        Distro().set_password(view_of(tmp_path), "root", "pw")
    assert caught.value.code == ExitCode.CHANGE_PASSWORD
    assert list((tmp_path / "etc").iterdir()) == []


# ---- detect --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("os_release", "expected"),
    [
        ('NAME="BusyBox"\nID=busybox\nVERSION_ID="1.35.0"\n', Busybox),
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n', Debian),
        ('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n', Debian),
        ('NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n', Debian),
        ('ID="debian"\n', Debian),
        ('NAME="CentOS Stream"\nID="centos"\nID_LIKE="rhel fedora"\n', Distro),
        ('NAME="Alpine"\nID=alpine\n', Distro),
        ("", Distro),
        ("ID_LIKE=debian_not\nVERSION_ID=debian\n", Distro),
    ],
)
def test_detect(tmp_path: Path, os_release: str, expected: type[Distro]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(os_release)
    assert type(detect(view_of(tmp_path))) is expected


def test_detect_without_os_release_is_generic(tmp_path: Path) -> None:
    handler = detect(view_of(tmp_path))
    assert type(handler) is Distro
    assert handler.name == "generic"


def test_detect_falls_back_to_usr_lib_os_release(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text("ID=debian\n")
    assert type(detect(view_of(tmp_path))) is Debian


def test_detect_follows_the_usual_os_release_symlink(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/os-release").write_text("ID=busybox\n")
    os.symlink("../usr/lib/os-release", tmp_path / "etc/os-release")
    assert type(detect(view_of(tmp_path))) is Busybox


def test_os_release_ids_in_order(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID_LIKE="ubuntu debian"\nID=pop\n')
    assert os_release_ids(view_of(tmp_path)) == ["pop", "ubuntu", "debian"]


def test_detect_single_quoted_id(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID='debian'\n")
    assert type(detect(view_of(tmp_path))) is Debian


def test_handlers_differ_in_halt_signal() -> None:
    assert Busybox.halt_signal == "SIGUSR2"
    assert Debian.halt_signal == "SIGRTMIN+3"
    assert Distro.halt_signal == "SIGPWR"
    assert {Busybox.name, Debian.name, Distro.name} == {"busybox", "debian", "generic"}
    assert Busybox.boot_probe is not None and re.search("boot-complete", " ".join(Busybox.boot_probe))


def test_the_templates_manifest_picks_the_handler_before_os_release(tmp_path: Path) -> None:
    from pyvz.distro.registry import Debian, detect

    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc/os-release").write_text("ID=somethingelse\n")
    view = RootView(tmp_path, os.geteuid(), os.getegid())
    assert isinstance(detect(view, "debian"), Debian)
    assert type(detect(view)).__name__ == "Distro"
