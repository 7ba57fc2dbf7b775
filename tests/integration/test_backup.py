"""vzdump and vzrestore with real busybox CTs: round trips in every mode and onto both
layouts, incremental chains, bad archives, a killed vzdump, and the options.

Trees are compared as the CT sees them: path, type, mode, owner, size, content, link target
and xattrs, with a sparse file that must stay sparse.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvz.paths import Paths
from pyvz.resources.cgroups import CtCgroups, detect
from tests.conftest import REPO, Done, VzRoot

pytestmark = pytest.mark.root

SPARSE_SIZE = 64 << 20


# ---- helpers ------------------------------------------------------------------------------


def vzdump(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vzdump", *args)


def vzrestore(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vzrestore", *args)


def ok(done: Done) -> str:
    assert done.code == 0, f"exit {done.code}: {done.err}{done.out}"
    return done.out


def dumpdir(vzroot: VzRoot) -> Path:
    return vzroot.root / "var/lib/vz/dump"


def archives(vzroot: VzRoot, ctid: str = "101", where: Path | None = None) -> list[Path]:
    folder = where or dumpdir(vzroot)
    pattern = re.compile(rf"vzdump-{ctid}-\d{{4}}_\d\d_\d\d-\d\d_\d\d_\d\d\.tar(\.zst|\.gz)?")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def private(vzroot: VzRoot, ctid: str) -> Path:
    return vzroot.private_dir / ctid


def local_uid(vzroot: VzRoot, ctid: str) -> int:
    match = re.search(r'^LOCAL_UID="?(\d+)', (vzroot.conf_dir / f"{ctid}.conf").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def populate(tree: Path) -> None:
    """Files of every kind, owned as the CT sees them (a btrfs private area)."""
    data = tree / "data"
    data.mkdir()
    (data / "text.txt").write_text("hello backup\n" * 100)
    os.chown(data / "text.txt", 1000, 1001)
    os.setxattr(data / "text.txt", "user.colour", b"blue")
    secret = data / "secret"
    secret.mkdir(mode=0o700)
    os.chmod(secret, 0o700)
    os.chown(secret, 33, 33)
    (secret / "key").write_bytes(os.urandom(4096))
    os.chmod(secret / "key", 0o600)
    (data / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(data / "setuid", 0o4755)
    os.symlink("text.txt", data / "link")
    os.symlink("/nowhere", data / "dangling")
    os.lchown(data / "dangling", 7, 7)
    with open(data / "sparse", "wb") as handle:
        handle.write(b"start")
        handle.seek(SPARSE_SIZE - 3)
        handle.write(b"end")
    os.link(data / "text.txt", data / "hardlink")
    (data / "empty").touch()
    os.setxattr(data, "user.dir", b"attr on a directory")


def walk(top: Path, uid_offset: int = 0) -> dict[str, tuple[object, ...]]:
    """Everything about a tree that a restore must keep (not times, not directory sizes)."""

    def shifted(ident: int) -> int:
        return ident - uid_offset if uid_offset <= ident < uid_offset + 65536 else ident

    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(top):
        for name in ["", *dirs, *files]:
            path = os.path.join(directory, name) if name else directory
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            content: object = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            try:
                names = sorted(os.listxattr(path, follow_symlinks=False))
                xattrs = tuple(
                    (n, os.getxattr(path, n, follow_symlinks=False))
                    for n in names
                    if not n.startswith("trusted.")
                )
            except OSError:
                xattrs = ()
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            found[rel] = (
                kind,
                stat.S_IMODE(st.st_mode),
                shifted(st.st_uid),
                shifted(st.st_gid),
                size,
                content,
                xattrs,
            )
    return found


RUNTIME = re.compile(r"(var/run|run|var/log|tmp)/.+")  # what a running busybox writes meanwhile


def assert_same(original: dict[str, tuple[object, ...]], restored: dict[str, tuple[object, ...]]) -> None:
    original = {p: v for p, v in original.items() if not RUNTIME.fullmatch(p)}
    restored = {p: v for p, v in restored.items() if not RUNTIME.fullmatch(p)}
    missing = sorted(set(original) - set(restored))
    extra = sorted(set(restored) - set(original))
    assert not missing and not extra, f"missing {missing[:10]}, extra {extra[:10]}"
    differ = [(p, original[p], restored[p]) for p in original if original[p] != restored[p]]
    assert not differ, f"{len(differ)} entries differ, first: {differ[:3]}"


def assert_sparse(path: Path) -> None:
    st = os.stat(path)
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < 1 << 20, f"{path} takes {st.st_blocks * 512} bytes: no longer sparse"


def ct_view(vzroot: VzRoot, ctid: str) -> dict[str, tuple[object, ...]]:
    """The CT's files as it sees them, whatever its layout (mounting a dir-layout CT)."""
    conf = (vzroot.conf_dir / f"{ctid}.conf").read_text()
    if 'VE_LAYOUT="dir"' not in conf:
        return walk(private(vzroot, ctid))
    vzroot.ok("mount", ctid)
    try:
        return walk(vzroot.root / "var/lib/vz/root" / ctid, local_uid(vzroot, ctid))
    finally:
        vzroot.ok("umount", ctid)


def leftovers(vzroot: VzRoot, ctid: str) -> list[str]:
    found = [p.name for p in vzroot.private_dir.iterdir() if p.name.lstrip(".").split(".")[0] == ctid]
    found += [p.name for p in vzroot.conf_dir.glob(f"{ctid}.*")]
    names = vzroot.root / "etc/vz/names"
    found += [p.name for p in names.iterdir() if os.readlink(p) == f"../conf/{ctid}.conf"]
    real = os.path.realpath(vzroot.root)
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split()[4] for line in handle]
    found += [m for m in mounts if m.startswith(real) and f"/{ctid}" in m]
    return found


def one_line_error(done: Done, code: int) -> str:
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert done.code == code, f"exit {done.code}, want {code}: {done.err}"
    assert len(lines) == 1, f"stderr is not one line: {done.err!r}"
    return lines[0]


@pytest.fixture
def source(vzroot: VzRoot) -> VzRoot:
    """CT 101, populated with every kind of file, running."""
    vzroot.ok("create", "101", "--hostname", "source")
    populate(private(vzroot, "101"))
    vzroot.ok("start", "101")
    return vzroot


# ---- round trips ----------------------------------------------------------------------------


def test_round_trip_in_every_mode_and_onto_both_layouts(source: VzRoot) -> None:
    vzroot = source
    vzroot.ok("set", "101", "--name", "src", "--save")
    for index, mode in enumerate(("stop", "suspend", "snapshot")):
        out = ok(vzdump(vzroot, "--mode", mode, "101"))
        assert f"({mode} mode" in out
        assert "running" in vzroot.ok("status", "101")
        archive = archives(vzroot)[-1]
        log = archive.with_name(archive.name.replace(".tar.zst", ".log"))
        assert "Backup of CT 101 finished" in log.read_text()
        target = str(201 + index)
        ok(vzrestore(vzroot, str(archive), target))
        restored = private(vzroot, target)
        assert not (restored / "etc/vzdump").exists()
        assert_same(walk(private(vzroot, "101")), walk(restored))
        assert_sparse(restored / "data/sparse")
        assert local_uid(vzroot, target) not in (0, local_uid(vzroot, "101"))
        assert 'NAME="src"' not in (vzroot.conf_dir / f"{target}.conf").read_text()  # the name is taken
    vzroot.ok("start", "203")
    assert vzroot.ok("exec", "203", "cat /data/text.txt").startswith("hello backup")
    assert vzroot.ok("exec", "203", "stat -c %u:%g /data/text.txt").strip() == "1000:1001"
    vzroot.ok("stop", "--fast", "203")
    # The other layout: the tree is the overlay's upper layer, in the new CT's id range.
    ok(vzrestore(vzroot, str(archives(vzroot)[-1]), "204", "--layout", "dir"))
    upper = private(vzroot, "204") / "fs/data/text.txt"
    assert os.stat(upper).st_uid == local_uid(vzroot, "204") + 1000
    assert_same(walk(private(vzroot, "101")), ct_view(vzroot, "204"))
    vzroot.ok("start", "204")
    assert vzroot.ok("exec", "204", "stat -c %u:%g /data/text.txt").strip() == "1000:1001"
    vzroot.ok("stop", "--fast", "204")


def test_dir_layout_ct_round_trip_and_back_to_btrfs(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--layout", "dir")
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", "mkdir /data && echo x > /data/f && chown 5:6 /data/f && ln -s f /data/l")
    vzroot.ok("exec", "101", "rm /etc/motd 2>/dev/null; rm -f /etc/inittab.bak; rm /bin/ls")
    vzroot.ok("stop", "101")
    out = ok(vzdump(vzroot, "--mode", "snapshot", "101"))
    assert "not running: backing it up in stop mode" in out
    archive = archives(vzroot)[-1]
    original = ct_view(vzroot, "101")
    assert "bin/ls" not in original  # deleted from the template: must stay deleted
    ok(vzrestore(vzroot, str(archive), "201"))  # VE_LAYOUT default: btrfs
    assert_same(original, walk(private(vzroot, "201")))
    ok(vzrestore(vzroot, str(archive), "202", "--layout", "dir"))
    assert_same(original, ct_view(vzroot, "202"))
    inc = vzdump(vzroot, "--incremental", "101")
    assert "needs layout btrfs" in one_line_error(inc, 16)


# ---- incremental -------------------------------------------------------------------------------


def test_incremental_chain_restores_the_final_state(source: VzRoot) -> None:
    vzroot = source
    tree = private(vzroot, "101")
    ok(vzdump(vzroot, "101"))
    steps = [
        lambda: ((tree / "data/new.txt").write_text("one\n"), (tree / "data/empty").unlink()),
        lambda: (
            os.rename(tree / "data/secret", tree / "data/renamed"),
            (tree / "data/text.txt").write_text("changed\n"),
            os.setxattr(tree / "data/new.txt", "user.step", b"2"),
        ),
        lambda: (
            (tree / "data/big").write_bytes(os.urandom(1 << 20)),
            os.chown(tree / "data/new.txt", 4, 5),
            (tree / "data/link").unlink(),
            os.symlink("new.txt", tree / "data/link"),
        ),
    ]
    for step in steps:
        step()
        out = ok(vzdump(vzroot, "--incremental", "101"))
        assert "incremental backup" in out
    chain = archives(vzroot)
    assert len(chain) == 4
    assert chain[-1].stat().st_size < chain[0].stat().st_size
    ok(vzdump(vzroot, "--verify", str(chain[-1])))
    ok(vzrestore(vzroot, str(chain[-1]), "201"))
    final = walk(tree)
    assert_same(final, walk(private(vzroot, "201")))
    assert not [p for p in vzroot.private_dir.iterdir() if "restoring" in p.name]
    ok(vzrestore(vzroot, str(chain[-2]), "202", "--layout", "dir"))  # a middle link, other layout
    view = ct_view(vzroot, "202")
    assert "data/renamed" in view and "data/secret" not in view and "data/big" not in view
    vzroot.ok("start", "201")
    assert vzroot.ok("exec", "201", "cat /data/text.txt") == "changed\n"
    vzroot.ok("stop", "--fast", "201")


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_archives_and_targets_are_refused_leaving_nothing(source: VzRoot) -> None:
    vzroot = source
    with open(private(vzroot, "101") / "data/noise", "wb") as handle:
        handle.write(os.urandom(3 << 20))  # so there is a middle to corrupt
    ok(vzdump(vzroot, "101"))
    (private(vzroot, "101") / "data/more").write_text("more\n")
    ok(vzdump(vzroot, "--incremental", "101"))
    full, incremental = archives(vzroot)
    data = full.read_bytes()
    bad = dumpdir(vzroot) / "bad"
    bad.mkdir()
    truncated = bad / full.name
    truncated.write_bytes(data[: len(data) // 2])
    corrupt_dir = bad / "corrupt"
    corrupt_dir.mkdir()
    corrupt = corrupt_dir / full.name
    middle = len(data) // 2
    corrupt.write_bytes(
        data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
    )
    orphan_dir = bad / "orphan"
    orphan_dir.mkdir()
    orphan = orphan_dir / incremental.name
    orphan.write_bytes(incremental.read_bytes())

    for archive in (truncated, corrupt, orphan):
        line = one_line_error(vzdump(vzroot, "--verify", str(archive)), 17)
        assert archive.name in line or "failed" in line
        line = one_line_error(vzrestore(vzroot, str(archive), "301"), 17)
        assert leftovers(vzroot, "301") == [], line
    assert "missing" in one_line_error(vzrestore(vzroot, str(orphan), "301"), 17)
    assert "damaged or truncated" in one_line_error(vzrestore(vzroot, str(truncated), "301"), 17)

    ok(vzrestore(vzroot, str(full), "201"))
    before = walk(private(vzroot, "201"))
    conf_before = (vzroot.conf_dir / "201.conf").read_text()
    line = one_line_error(vzrestore(vzroot, str(incremental), "201"), 44)
    assert "--force" in line
    assert walk(private(vzroot, "201")) == before
    assert (vzroot.conf_dir / "201.conf").read_text() == conf_before
    vzroot.ok("start", "201")
    one_line_error(vzrestore(vzroot, str(incremental), "201", "--force"), 32)
    vzroot.ok("stop", "201")
    ok(vzrestore(vzroot, str(incremental), "201", "--force"))  # replaced by the newer state
    assert (private(vzroot, "201") / "data/more").read_text() == "more\n"
    assert sorted(leftovers(vzroot, "201")) == ["201", "201.conf"]
    one_line_error(vzrestore(vzroot, str(dumpdir(vzroot) / "nothing.tar.zst"), "301"), 17)


# ---- a killed vzdump -----------------------------------------------------------------------------


def test_vzdump_killed_mid_archive_leaves_ct_running_and_no_archive(source: VzRoot) -> None:
    vzroot = source
    (private(vzroot, "101") / "data/payload").write_bytes(os.urandom(4 << 20))
    cgroup = CtCgroups.of(Paths(vzroot.root.resolve()).tag, 101).container
    for mode in ("suspend", "snapshot"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyvz.cli.vzdump", "--mode", mode, "--bwlimit", "1024", "101"],
            env=vzroot.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not list(dumpdir(vzroot).glob(".vzdump-101-*.partial")):
            assert time.monotonic() < deadline and proc.poll() is None, "vzdump never started writing"
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # the freezer's guard thaws once it sees us gone
        assert "running" in vzroot.ok("status", "101")
        assert not detect().is_frozen(cgroup), f"CT left frozen after a kill in {mode} mode"
        assert archives(vzroot) == []
        vzroot.ok("exec", "101", "true")
    ok(vzdump(vzroot, "101"))
    assert len(archives(vzroot)) == 1
    assert not list(dumpdir(vzroot).glob(".*partial"))
    assert [p.name for p in (vzroot.private_dir / ".101.vzdump").iterdir()] == ["base"]


def test_vzdump_killed_between_stop_and_start_leaves_the_ct_running(source: VzRoot, tmp_path: Path) -> None:
    """Stop mode: a vzdump killed after it stopped the CT (here by its hook, at pre-restart)
    does not leave the CT down: its guard starts it again."""
    vzroot = source
    hook = tmp_path / "killer"
    hook.write_text('#!/bin/sh\n[ "$1" = pre-restart ] && kill -9 $PPID\nexit 0\n')
    hook.chmod(0o755)
    done = vzdump(vzroot, "--mode", "stop", "--script", str(hook), "101")
    assert done.code == -9, done
    deadline = time.monotonic() + 30
    while "running" not in vzroot.ok("status", "101"):
        assert time.monotonic() < deadline, "the CT stayed down after vzdump was killed"
        time.sleep(0.2)
    vzroot.ok("exec", "101", "true")
    ok(vzdump(vzroot, "--mode", "stop", "101"))  # and the next one cleans up and succeeds
    assert len(archives(vzroot)) == 1


def test_progress_is_shown_on_a_terminal_only(source: VzRoot) -> None:
    """On a TTY vzdump redraws one progress line (bytes read, rate); into a pipe it prints none."""
    import pty

    vzroot = source
    (private(vzroot, "101") / "data/payload").write_bytes(os.urandom(3 << 20))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvz.cli.vzdump", "--bwlimit", "2048", "101"],
        env=vzroot.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, seen
    progress = [part for part in seen.decode().split("\r") if "MiB read" in part]
    assert len(progress) >= 2, seen  # redrawn at least twice over ~1.5 s at 2 MB/s
    assert re.search(r"\d+\.\d MiB / ~\d+\.\d MiB read, \d+\.\d MiB/s", progress[-1]), progress[-1]
    piped = vzdump(vzroot, "101")
    assert piped.code == 0 and "MiB read" not in piped.err


# ---- options -------------------------------------------------------------------------------------


def test_options_prune_exclude_compress_hook_verify(source: VzRoot, tmp_path: Path) -> None:
    vzroot = source
    vzroot.ok("set", "101", "--name", "src", "--save")
    tree = private(vzroot, "101")
    (tree / "var/log").mkdir(parents=True, exist_ok=True)
    (tree / "var/log/messages").write_text("log\n")
    (tree / "data/cache").mkdir()
    (tree / "data/cache/junk").write_text("junk\n")
    hook = tmp_path / "hook"
    phases = tmp_path / "phases"
    hook.write_text(f'#!/bin/sh\necho "$* $VMTYPE ${{TARFILE##*/}}" >> {phases}\n')
    hook.chmod(0o755)
    other = tmp_path / "dumps"
    for compress in ("gzip", "none"):
        out = ok(
            vzdump(
                vzroot, "--compress", compress, "--dumpdir", str(other), "--stdexcludes",
                "--exclude-path", "/data/cache(/.*)?", "--script", str(hook), "src",
            )
        )  # fmt: skip
        assert "Backup of CT 101 finished" in out
    made = archives(vzroot, where=other)
    assert [p.suffix for p in made] == [".gz", ".tar"]
    for archive in made:
        assert "OK" in ok(vzdump(vzroot, "--verify", str(archive)))
        listing = subprocess.run(
            ["tar", "-tf", str(archive)], capture_output=True, text=True, check=True
        ).stdout
        names = listing.splitlines()
        assert names[0] == "./etc/vzdump/pyvz.json" and "./etc/vzdump/vps.conf" in names
        assert "./data/text.txt" in names and "./var/log/" in names
        assert "./var/log/messages" not in names and not any(n.startswith("./data/cache") for n in names)
    recorded = phases.read_text().splitlines()
    first = [line.split()[0] for line in recorded[: len(recorded) // 2]]
    assert first == [
        "job-start", "backup-start", "pre-stop", "pre-restart",
        "post-restart", "backup-end", "log-end", "job-end",
    ]  # fmt: skip
    assert recorded[1].startswith("backup-start snapshot 101 openvz vzdump-101-")
    for _ in range(3):
        ok(vzdump(vzroot, "--maxfiles", "2", "101"))
    kept = archives(vzroot)
    assert len(kept) == 2
    assert sorted(p.name for p in dumpdir(vzroot).glob("*.log")) == sorted(
        p.name.replace(".tar.zst", ".log") for p in kept
    )
    failing = tmp_path / "failing"
    failing.write_text('#!/bin/sh\n[ "$1" = backup-start ] && exit 3\nexit 0\n')
    failing.chmod(0o755)
    done = vzdump(vzroot, "--script", str(failing), "101")
    assert done.code == 79 and "backup-start" in done.err
    assert len(archives(vzroot)) == 2
    assert "running" in vzroot.ok("status", "101")
