"""vztmpl-dl and vzctl create downloading templates from a repository served on 127.0.0.1.

The material is real: GPG keys made in a throwaway GNUPGHOME, the embedded busybox template
renamed tiny-1.0, signed and published with `repository.publish`, and served over HTTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Done, VzRoot
from tests.gpgkeys import export_public, kill_agents, new_key

pytestmark = pytest.mark.root

NAME = "tiny-1.0"
ARCHIVE = f"{NAME}.tar.zst"
FILES = sorted([ARCHIVE, f"{ARCHIVE}.asc", f"{NAME}.manifest.json"])


@dataclass
class Material:
    """Built once per module: keys, and published repositories to copy from."""

    home: Path  # GNUPGHOME holding every key
    trusted_keys: Path  # the public halves of the two trusted keys
    second_key: str  # trusted, but never signs tiny-1.0
    untrusted_key: str
    signed_repo: Path
    unsigned_repo: Path
    other_build: Path  # a newer tiny-1.0 in a repository of its own, for --update


def _manifest_for(archive: Path) -> Any:
    from pyvz.templates.manifest import Manifest, sha256_file

    return Manifest(
        name=NAME,
        distribution="busybox",
        version="1.0",
        architecture="amd64",
        build_date="2024-01-01T00:00:00Z",
        sha256=sha256_file(archive),
        size=archive.stat().st_size,
    )


def _publisher(base: Path, archive: Path, key: str | None, home: Path, repo: Path) -> None:
    """A second root whose cache holds `archive` as tiny-1.0, published into `repo`."""
    from pyvz.paths import Paths
    from pyvz.templates import gpg, repository
    from pyvz.templates.manifest import path_for, save

    paths = Paths(base)
    paths.template_cache.mkdir(parents=True)
    cached = paths.template_cache / ARCHIVE
    shutil.copyfile(archive, cached)
    save(path_for(paths.template_cache, NAME), _manifest_for(cached))
    if key is not None:
        gpg.sign(cached, key, homedir=home)
    repository.publish(paths, [NAME], repo, allow_unsigned=key is None)


@pytest.fixture(scope="module")
def material() -> Iterator[Material]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from pyvz.paths import Paths
    from pyvz.templates import busybox

    home = Path(tempfile.mkdtemp(prefix="pyvz-gpg-", dir="/tmp"))
    home.chmod(0o700)
    work = Path(tempfile.mkdtemp(prefix="pyvz-dl-", dir="/tmp"))
    try:
        key = new_key(home, "signer@example.invalid")
        second = new_key(home, "second@example.invalid")
        untrusted = new_key(home, "untrusted@example.invalid")
        trusted = work / "trusted.asc"
        trusted.write_text(export_public(home, key, second))
        archive = busybox.build(Paths(work / "build"))
        _publisher(work / "pub-signed", archive, key, home, work / "signed")
        _publisher(work / "pub-unsigned", archive, None, home, work / "unsigned")
        other = work / "other.tar.zst"  # a different (small, valid) build for --update
        (work / "other").mkdir()
        (work / "other/hello").write_text("hello\n")
        subprocess.run(["tar", "--zstd", "-cf", str(other), "-C", str(work / "other"), "."], check=True)
        _publisher(work / "pub-other", other, key, home, work / "other-repo")
        yield Material(
            home, trusted, second, untrusted, work / "signed", work / "unsigned", work / "other-repo"
        )
    finally:
        kill_agents(home)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


class _Handler(SimpleHTTPRequestHandler):
    """Serves the repository. Files named in server.truncate stop halfway after promising
    their full Content-Length; files in server.stall send half, then hang until released."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if name not in self.server.truncate | self.server.stall:
            super().do_GET()
            return
        data = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if name in self.server.stall:
            self.server.release.wait(60)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(directory)))
        self.truncate: set[str] = set()
        self.stall: set[str] = set()
        self.release = threading.Event()


@dataclass
class Served:
    directory: Path
    url: str
    server: _Server

    @property
    def truncate(self) -> set[str]:
        return self.server.truncate

    @property
    def stall(self) -> set[str]:
        return self.server.stall


@pytest.fixture
def served(vzroot: VzRoot, material: Material, tmp_path: Path) -> Iterator[Served]:
    """A copy of the signed repository on http://127.0.0.1:PORT/, configured and trusted in the root."""
    from pyvz.paths import Paths
    from pyvz.templates import cache, gpg

    directory = tmp_path / "repo"
    shutil.copytree(material.signed_repo, directory)
    server = _Server(directory)
    thread = threading.Thread(target=server.serve_forever, name="repo-http", daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        paths = Paths(vzroot.root)
        (paths.etc_vz / "download.conf").write_text(f'TEMPLATE_REPOS="test={url}"\n')
        gpg.trust(material.trusted_keys, cache.keyring(paths))
        yield Served(directory, url, server)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dl(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vztmpl_dl", *args)


def cache_files(vzroot: VzRoot) -> list[str]:
    cache = vzroot.root / "var/lib/vz/template/cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def assert_one_error_line(done: Done) -> str:
    assert done.code != 0, done.out
    lines = done.err.splitlines()
    # vzctl prints its errors bare, as vzctl 4.11's logger does; vztmpl-dl says "Error: "
    assert len(lines) == 1 and lines[0].strip() and not lines[0].startswith("Traceback"), done.err
    return lines[0]


# ---- what works -------------------------------------------------------------------------


def test_list_remote(vzroot: VzRoot, served: Served) -> None:
    done = dl(vzroot, "--list-remote")
    assert done.code == 0, done.err
    header, *rows = done.out.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "ARCH", "SIZE", "BUILT", "REPOSITORY"]
    assert len(rows) == 1
    cells = rows[0].split()
    assert cells == [NAME, "busybox", "1.0", "amd64", cells[4], "2024-01-01T00:00:00Z", "test"]
    assert cells[4].endswith(("K", "M"))
    bare = dl(vzroot, "--list-remote", "-H").out.splitlines()
    assert [line.split() for line in bare] == [cells]
    assert cache_files(vzroot) == []  # listing downloads nothing


def test_download_by_name_then_list_update_orphans(
    vzroot: VzRoot, served: Served, material: Material
) -> None:
    done = dl(vzroot, NAME)
    assert done.code == 0, done.err
    assert done.err == ""
    assert cache_files(vzroot) == FILES
    assert (vzroot.root / "var/lib/vz/template/cache" / ARCHIVE).read_bytes() == (
        served.directory / ARCHIVE
    ).read_bytes()
    assert "already in the cache" in dl(vzroot, NAME).out

    local = dl(vzroot, "--list-local", "-H").out.splitlines()
    assert [line.split()[0] for line in local] == [NAME]
    assert local[0].split()[-1] == "signed"

    # A template that no repository has is an orphan; tiny-1.0 is not.
    cache = vzroot.root / "var/lib/vz/template/cache"
    shutil.copyfile(cache / ARCHIVE, cache / "lonely.tar.zst")
    assert [line.split()[0] for line in dl(vzroot, "--list-orphans", "-H").out.splitlines()] == ["lonely"]

    assert "up to date" in dl(vzroot, "--update", NAME).out
    for item in material.other_build.iterdir():  # the repository now has a newer build
        shutil.copyfile(item, served.directory / item.name)
    done = dl(vzroot, "--update-all")
    assert done.code == 0, done.err
    assert (cache / ARCHIVE).read_bytes() == (material.other_build / ARCHIVE).read_bytes()
    assert "lonely" in done.out  # named as left alone, and left alone
    assert (cache / "lonely.tar.zst").exists()


def test_create_downloads_a_missing_template(vzroot: VzRoot, served: Served) -> None:
    out = vzroot.ok("create", "101", "--ostemplate", NAME)
    assert f"Downloading template {NAME}" in out
    assert [f for f in cache_files(vzroot) if f.startswith(NAME)] == FILES
    vzroot.ok("start", "101")
    done = vzroot.vzctl("exec", "101", "true")
    assert done.code == 0, done.err
    assert "BusyBox" in vzroot.ok("exec", "101", "cat", "/etc/os-release")
    vzroot.ok("stop", "101", "--fast")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"


def test_no_gpg_check_works_on_an_unsigned_repository_and_warns(
    vzroot: VzRoot, served: Served, material: Material
) -> None:
    for item in served.directory.iterdir():
        item.unlink()
    shutil.copytree(material.unsigned_repo, served.directory, dirs_exist_ok=True)
    assert not (served.directory / f"{ARCHIVE}.asc").exists()

    refused = dl(vzroot, NAME)  # checked by default: an unsigned template is refused
    assert "no signature" in assert_one_error_line(refused)
    assert cache_files(vzroot) == []

    done = dl(vzroot, "--no-gpg-check", NAME)
    assert done.code == 0, done.err
    warnings = done.err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("WARNING:") and "--no-gpg-check" in warnings[0]
    assert cache_files(vzroot) == [f"{NAME}.manifest.json", ARCHIVE]


def test_nothing_configured_keeps_error_91(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("create", "101", "--ostemplate", NAME)
    assert done.code == 91
    assert_one_error_line(done)
    assert not (vzroot.conf_dir / "101.conf").exists()


def test_not_in_any_repository(vzroot: VzRoot, served: Served) -> None:
    done = vzroot.vzctl("create", "101", "--ostemplate", "elsewhere-1.0")
    assert done.code == 91
    assert served.url in assert_one_error_line(done)
    assert not (vzroot.conf_dir / "101.conf").exists()
    assert dl(vzroot, "elsewhere-1.0").code == 91


# ---- what must fail, leaving nothing behind ---------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage(kind: str, served: Served, material: Material, tmp_path: Path, vzroot: VzRoot) -> str:
    """Break the served repository; returns a word the error message must contain."""
    from pyvz.templates import gpg
    from pyvz.templates.manifest import sha256_file

    archive = served.directory / ARCHIVE
    index = served.directory / "index.json"
    manifest = served.directory / f"{NAME}.manifest.json"
    if kind == "tampered":
        _flip_byte(archive)
        return "sha256"
    if kind == "tampered-consistent":  # index and manifest rewritten to match: only GPG sees it
        old = sha256_file(archive)
        _flip_byte(archive)
        for meta in (index, manifest):
            meta.write_text(meta.read_text().replace(old, sha256_file(archive)))
        return "BAD signature"
    if kind == "wrong-signature":  # a trusted key's good signature over other data
        other = tmp_path / "other.tar.zst"
        other.write_bytes(b"other data")
        shutil.copyfile(gpg.sign(other, material.second_key, homedir=material.home), f"{archive}.asc")
        return "BAD signature"
    if kind == "unknown-key":
        copy = tmp_path / ARCHIVE
        shutil.copyfile(archive, copy)
        shutil.copyfile(gpg.sign(copy, material.untrusted_key, homedir=material.home), f"{archive}.asc")
        return "not trusted"
    if kind == "wrong-sha256":
        index.write_text(index.read_text().replace(sha256_file(archive), "0" * 64))
        return "sha256"
    if kind == "truncated":
        served.truncate.add(ARCHIVE)
        return "truncated"
    if kind == "truncated-file":  # the file itself is cut, the index keeps the full size
        data = archive.read_bytes()
        archive.write_bytes(data[: len(data) // 2])
        return "truncated"
    if kind == "no-index":
        index.unlink()
        return "HTTP 404"
    if kind == "refused":  # nothing listens on the configured port any more
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        conf = vzroot.root / "etc/vz/download.conf"
        conf.write_text(f'TEMPLATE_REPOS="test=http://127.0.0.1:{port}/"\n')
        return "refused"
    raise AssertionError(kind)


FAILURES = [
    "tampered",
    "tampered-consistent",
    "wrong-signature",
    "unknown-key",
    "wrong-sha256",
    "truncated",
    "truncated-file",
    "no-index",
    "refused",
]


@pytest.mark.parametrize("tool", ["vztmpl-dl", "vzctl create"])
@pytest.mark.parametrize("kind", FAILURES)
def test_bad_download_fails_cleanly(
    vzroot: VzRoot, served: Served, material: Material, tmp_path: Path, kind: str, tool: str
) -> None:
    wanted = _damage(kind, served, material, tmp_path, vzroot)
    create = ("create", "101", "--ostemplate", NAME)
    done = dl(vzroot, NAME) if tool == "vztmpl-dl" else vzroot.vzctl(*create)
    line = assert_one_error_line(done)
    assert wanted in line, line
    assert cache_files(vzroot) == []  # no archive, signature, manifest or partial file
    assert not (vzroot.conf_dir / "101.conf").exists()
    assert not (vzroot.private_dir / "101").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_download_leaves_nothing(vzroot: VzRoot, served: Served, signum: int) -> None:
    """Ctrl-C cleans up at once; after kill -9 the next download sweeps the leftovers."""
    served.stall.add(ARCHIVE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvz.cli.vztmpl_dl", NAME],
        env=vzroot.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`make test &`) ignores
        # SIGINT, the child would inherit that, and Python keeps an ignored SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    staging = vzroot.root / f"var/lib/vz/template/cache/.{NAME}.partial-{proc.pid}"
    try:
        deadline = time.monotonic() + 30
        while not (staging / ARCHIVE).exists() or (staging / ARCHIVE).stat().st_size == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if signum == signal.SIGINT:
        assert proc.returncode == 130, err
        assert len(err.splitlines()) == 1 and err.startswith("Error: interrupted"), err
        assert cache_files(vzroot) == []
        return
    assert cache_files(vzroot) == [staging.name]  # what kill -9 leaves: a hidden staging dir
    assert dl(vzroot, "--list-local", "-H").out == ""
    served.stall.clear()
    done = dl(vzroot, NAME)
    assert done.code == 0, done.err
    assert cache_files(vzroot) == FILES
