"""OpenVZ precreated templates: a plain directory of NAME.tar.gz + NAME.tar.gz.asc, used as a
TEMPLATE_REPOS entry by its path and through a web server's directory listing on 127.0.0.1;
vztmpl-dl --list-all and --config; and a Debian 12 template made the way OpenVZ's were (a
tar.gz of the root filesystem, uid 0 owners: here pyvz's own mmdebstrap build, repacked),
signed, downloaded and booted to systemd's `running`."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEBIAN_RECIPE, Done, VzRoot
from tests.gpgkeys import export_public, gpg, kill_agents, new_key, throwaway_home

pytestmark = pytest.mark.root


@dataclass
class Keys:
    home: Path
    trusted: str
    untrusted: str
    public: Path  # the trusted key's public half


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with throwaway_home() as home:
        trusted = new_key(home, "openvz@example.invalid")
        untrusted = new_key(home, "stranger@example.invalid")
        public = tmp_path_factory.mktemp("keys") / "trusted.asc"
        public.write_text(export_public(home, trusted))
        yield Keys(home, trusted, untrusted, public)
        kill_agents(home)


def sign(keys: Keys, archive: Path, key: str) -> None:
    gpg(
        keys.home,
        "--yes",
        "--armor",
        "--local-user",
        key,
        "--detach-sign",
        "--output",
        f"{archive}.asc",
        str(archive),
    )


def repack_gz(source: Path, target: Path) -> Path:
    """An OpenVZ-style precreated template: the same root filesystem as a plain tar.gz."""
    with open(target, "wb") as out:
        unzstd = subprocess.Popen(["zstd", "-dcq", str(source)], stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-1", "-c"], stdin=unzstd.stdout, stdout=out, check=True)
        assert unzstd.stdout is not None
        unzstd.stdout.close()
        assert unzstd.wait() == 0
    return target


def configure(vzroot: VzRoot, keys: Keys, repos: str) -> None:
    from pyvz.paths import Paths
    from pyvz.templates import cache
    from pyvz.templates import gpg as pyvz_gpg

    paths = Paths(vzroot.root)
    (paths.etc_vz / "download.conf").write_text(f'TEMPLATE_REPOS="{repos}"\n')
    pyvz_gpg.trust(keys.public, cache.keyring(paths))


def dl(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vztmpl_dl", *args)


def cache_names(vzroot: VzRoot) -> list[str]:
    folder = vzroot.root / "var/lib/vz/template/cache"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def precreated(tmp_path: Path, keys: Keys) -> Path:
    """A directory as download.openvz.org's precreated/ was: a signed template, one signed by
    a key this host does not trust, and one with no signature at all."""
    from pyvz.paths import Paths
    from pyvz.templates import busybox

    archive = busybox.build(Paths(tmp_path / "build"))
    repo = tmp_path / "precreated"
    repo.mkdir()
    for name, key in (
        ("tiny-1.0-x86_64", keys.trusted),
        ("stranger-1.0-x86_64", keys.untrusted),
        ("bare-1.0", None),
    ):
        target = repack_gz(archive, repo / f"{name}.tar.gz")
        if key is not None:
            sign(keys, target, key)
    (repo / "README").write_text("not a template\n")
    return repo


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_index(precreated: Path) -> Iterator[str]:
    """The directory served by a plain web server (its own HTML listing; no index.json)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(precreated)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_precreated_directory_and_http_index(
    vzroot: VzRoot, keys: Keys, precreated: Path, http_index: str
) -> None:
    configure(vzroot, keys, f"web={http_index} {precreated}")
    listed = dl(vzroot, "--list-remote", "-H")
    assert listed.code == 0, listed.err
    names = [line.split()[0] for line in listed.out.splitlines()]
    assert names == ["bare-1.0", "stranger-1.0-x86_64", "tiny-1.0-x86_64"]
    assert all(line.split()[-1] == "web" for line in listed.out.splitlines())  # the first repo wins

    before = cache_names(vzroot)
    for name, why in (("stranger-1.0-x86_64", "not trusted"), ("bare-1.0", "no signature")):
        done = dl(vzroot, name)
        lines = done.err.strip().splitlines()
        assert done.code != 0 and len(lines) == 1 and why in lines[0], done.err
        assert cache_names(vzroot) == before

    done = dl(vzroot, "tiny-1.0-x86_64")
    assert done.code == 0, done.err
    assert {"tiny-1.0-x86_64.tar.gz", "tiny-1.0-x86_64.tar.gz.asc", "tiny-1.0-x86_64.manifest.json"} <= set(
        cache_names(vzroot)
    )
    assert "Signature of tiny-1.0-x86_64.tar.gz is good" in done.err + done.out

    # Only the plain directory now: the same templates, sizes known.
    configure(vzroot, keys, f"old={precreated}")
    every = dl(vzroot, "--list-all", "-H").out.splitlines()
    rows = {line.split()[0]: line for line in every}
    assert {"bare-1.0", "stranger-1.0-x86_64", "tiny-1.0-x86_64"} <= set(rows)
    assert rows["tiny-1.0-x86_64"].endswith("cache, old") and rows["bare-1.0"].endswith("old")
    config = dl(vzroot, "--config")
    assert config.code == 0 and f"old {precreated.as_uri()}/" in config.out
    assert "(GPG_CHECK): yes" in config.out

    vzroot.ok("create", "170", "--ostemplate", "tiny-1.0-x86_64")
    vzroot.ok("start", "170")
    try:
        assert vzroot.ok("exec", "170", "echo up").strip() == "up"
    finally:
        vzroot.ok("stop", "170")


def test_an_old_hosts_download_conf_and_vz_conf_give_the_repositories(
    vzroot: VzRoot, keys: Keys, precreated: Path, http_index: str
) -> None:
    """download.conf as OpenVZ's vztmpl-dl read it: a mirror prefix, TEMPLATE_REPOS built on
    itself line by line, CHECK_TEMPLATE_SIG, and keys pyvz does not use."""
    from pyvz.paths import Paths
    from pyvz.templates import cache
    from pyvz.templates import gpg as pyvz_gpg

    beta = precreated / "beta"
    beta.mkdir()
    shutil.move(precreated / "tiny-1.0-x86_64.tar.gz", beta / "tiny-2.0-x86_64.tar.gz")
    shutil.move(precreated / "tiny-1.0-x86_64.tar.gz.asc", beta / "tiny-2.0-x86_64.tar.gz.asc")
    paths = Paths(vzroot.root)
    pyvz_gpg.trust(keys.public, cache.keyring(paths))
    (paths.etc_vz / "download.conf").write_text(
        'UPDATE_TEMPLATE="no"\n'
        'CHECK_TEMPLATE_SIG="yes"\n'
        f'TMPL_REPO_PREFIX="{http_index.rstrip("/")}"\n'
        'TEMPLATE_REPOS="${TMPL_REPO_PREFIX}"\n'
        'TEMPLATE_REPOS="${TEMPLATE_REPOS} ${TMPL_REPO_PREFIX}/beta/"\n'
        'A_KEY_OF_SOMEONE_ELSE="left alone"\n'
    )
    listed = dl(vzroot, "--list-remote", "-H")
    assert listed.code == 0, listed.err
    rows = {line.split()[0]: line.split()[-1] for line in listed.out.splitlines()}
    assert rows == {"bare-1.0": "repo1", "stranger-1.0-x86_64": "repo1", "tiny-2.0-x86_64": "repo2"}
    config = dl(vzroot, "--config")
    assert f"repo1 {http_index}" in config.out and f"repo2 {http_index}beta/" in config.out
    assert "(GPG_CHECK): yes" in config.out and "not used by pyvz: UPDATE_TEMPLATE" in config.out
    done = dl(vzroot, "tiny-2.0-x86_64")  # from beta/, its signature checked
    assert done.code == 0, done.err
    assert "Signature of tiny-2.0-x86_64.tar.gz is good" in done.err + done.out
    done = dl(vzroot, "bare-1.0")  # CHECK_TEMPLATE_SIG=yes: no signature, no template
    assert done.code != 0 and "no signature" in done.err

    # No download.conf: vz.conf's TMPL_REPO_PREFIX, a plain directory, is the repository.
    (paths.etc_vz / "download.conf").unlink()
    with open(paths.vz_conf, "a") as out:
        out.write(f'TMPL_REPO_PREFIX="{beta}"\n')
    listed = dl(vzroot, "--list-all", "-H")
    assert listed.code == 0, listed.err
    assert [line.split()[0] for line in listed.out.splitlines() if line.endswith("repo1")] == [
        "tiny-2.0-x86_64"
    ]
    vzroot.ok("create", "172", "--ostemplate", "tiny-2.0-x86_64")
    vzroot.ok("destroy", "172")


def test_openvz_precreated_debian_template_boots(
    vzroot: VzRoot, keys: Keys, debian_template: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "precreated"
    repo.mkdir()
    name = "debian-12.0-x86_64-minimal"
    archive = repack_gz(debian_template / f"{DEBIAN_RECIPE}.tar.zst", repo / f"{name}.tar.gz")
    listing = subprocess.run(["tar", "-tvzf", str(archive), "./etc/passwd"], capture_output=True, text=True)
    assert " root/root " in listing.stdout or " 0/0 " in listing.stdout  # uid-0 owners, as OpenVZ's were
    sign(keys, archive, keys.trusted)
    configure(vzroot, keys, f"file://{repo}")

    done = dl(vzroot, name)
    assert done.code == 0, done.err
    manifest = (vzroot.root / f"var/lib/vz/template/cache/{name}.manifest.json").read_text()
    assert '"distribution": "debian"' in manifest and '"version": "12"' in manifest
    vzroot.ok("create", "171", "--ostemplate", name, "--hostname", "openvz-tmpl")
    started = time.monotonic()
    vzroot.ok("start", "171", "--wait")
    try:
        state = ""
        while time.monotonic() - started < 30:
            state = vzroot.vzctl("exec", "171", "systemctl is-system-running").out.strip()
            if state not in ("starting", "initializing"):
                break
            time.sleep(0.2)
        assert state == "running"
        assert vzroot.ok("exec", "171", "hostname").strip() == "openvz-tmpl"
    finally:
        vzroot.ok("stop", "171")
    shutil.rmtree(repo)
