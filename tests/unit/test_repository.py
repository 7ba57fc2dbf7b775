"""The template repository format (index.json), publish, and download.conf; no root needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.templates import cache, download, repository
from pyvz.templates.manifest import Manifest, path_for, save, sha256_file

SHA = "ab" * 32


def _entry(**changes: object) -> repository.IndexEntry:
    entry = repository.IndexEntry("tiny-1.0", "tiny-1.0.tar.zst", 10, SHA, "busybox", "1.36", "amd64", "2024")
    return entry._replace(**changes)


def _index(*templates: object, format: object = 1) -> str:
    return json.dumps({"format": format, "templates": list(templates)})


def _cached(paths: Paths, name: str, data: bytes = b"not really a tarball", signed: bool = True) -> Path:
    paths.template_cache.mkdir(parents=True, exist_ok=True)
    archive = paths.template_cache / f"{name}.tar.zst"
    archive.write_bytes(data)
    manifest = Manifest(
        name, "busybox", "1.36", "amd64", "2024-01-01T00:00:00Z", sha256_file(archive), len(data)
    )
    save(path_for(paths.template_cache, name), manifest)
    if signed:
        (paths.template_cache / f"{name}.tar.zst.asc").write_text("-----BEGIN PGP SIGNATURE-----\n")
    return archive


def test_index_round_trip() -> None:
    entries = [_entry(), _entry(name="other", archive="other.tar.xz", size=0)]
    text = repository.render_index(entries)
    assert json.loads(text)["format"] == 1
    assert repository.parse_index(text, "index.json") == sorted(entries, key=lambda e: e.name)
    assert entries[0].signature == "tiny-1.0.tar.zst.asc"
    assert entries[0].manifest == "tiny-1.0.manifest.json"


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("{not json", "not valid JSON"),
        (_index(format=2), "not a format-1 template index"),
        (json.dumps({"format": 1}), '"templates" must be a list'),
        (_index(_entry(archive="../../etc/passwd")._asdict()), "is not tiny-1.0.tar"),
        (_index(_entry(archive="sub/tiny-1.0.tar.zst")._asdict()), "is not tiny-1.0.tar"),
        (_index(_entry(name="../x", archive="../x.tar")._asdict()), "invalid template name"),
        (_index(_entry(sha256="00")._asdict()), "sha256 is not 64"),
        (_index(_entry(size="10")._asdict()), "size must be an integer"),
        (_index(_entry(size=-1)._asdict()), "negative size"),
        (_index({"name": "tiny-1.0"}), "has no archive"),
        (_index(_entry()._asdict(), _entry()._asdict()), "listed twice"),
    ],
)
def test_index_rejects(text: str, wanted: str) -> None:
    with pytest.raises(VzError) as caught:
        repository.parse_index(text, "http://127.0.0.1/index.json")
    assert caught.value.code == ExitCode.BAD_TEMPLATE
    assert wanted in caught.value.message
    assert "\n" not in caught.value.message


def test_publish_refuses_unsigned(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    _cached(paths, "tiny-1.0", signed=False)
    out = tmp_path / "repo"
    with pytest.raises(VzError) as caught:
        repository.publish(paths, ["tiny-1.0"], out)
    assert caught.value.code == ExitCode.BAD_TEMPLATE
    assert "not signed" in caught.value.message
    with pytest.raises(VzError, match="no signed template"):
        repository.publish(paths, None, out)
    assert not (out / "index.json").exists()
    entries = repository.publish(paths, ["tiny-1.0"], out, allow_unsigned=True)
    assert [e.name for e in entries] == ["tiny-1.0"]
    assert not (out / "tiny-1.0.tar.zst.asc").exists()


def test_publish_writes_a_repository(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    archive = _cached(paths, "tiny-1.0", b"x" * 1000)
    _cached(paths, "unsigned", signed=False)
    out = tmp_path / "repo"
    repository.publish(paths, None, out)  # every signed one: not "unsigned"
    index = repository.load_index(out)
    assert [e.name for e in index] == ["tiny-1.0"]
    assert index[0].size == 1000 and index[0].sha256 == sha256_file(archive)
    assert (out / "tiny-1.0.tar.zst").read_bytes() == archive.read_bytes()
    assert (out / "tiny-1.0.tar.zst.asc").exists()
    assert Manifest.from_json((out / "tiny-1.0.manifest.json").read_text(), "m").sha256 == index[0].sha256
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    # Publishing another one later keeps the first listed.
    _cached(paths, "second", b"y" * 5)
    repository.publish(paths, ["second"], out)
    assert [e.name for e in repository.load_index(out)] == ["second", "tiny-1.0"]


def test_publish_refuses_a_damaged_archive(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    archive = _cached(paths, "tiny-1.0", b"x" * 100)
    archive.write_bytes(b"y" * 100)
    with pytest.raises(VzError, match="does not match its manifest"):
        repository.publish(paths, ["tiny-1.0"], tmp_path / "repo")
    assert not (tmp_path / "repo/index.json").exists()


def test_download_conf(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert download.settings(paths).repos == []
    paths.etc_vz.mkdir(parents=True)
    conf = paths.etc_vz / "download.conf"
    conf.write_text('TEMPLATE_REPOS="main=http://127.0.0.1:8080/t file:///srv/repo/"\nGPG_CHECK=no\n')
    found = download.settings(paths)
    assert found.repos == [
        download.Repo("main", "http://127.0.0.1:8080/t/"),
        download.Repo("repo2", "file:///srv/repo/"),
    ]
    assert found.gpg_check is False
    assert found.repos[0].url_of("a b.tar") == "http://127.0.0.1:8080/t/a%20b.tar"
    conf.write_text('TEMPLATE_REPOS="main=ftp://127.0.0.1/"\n')
    with pytest.raises(VzError) as caught:
        download.settings(paths)
    assert caught.value.code == ExitCode.INVALID_CONFIG
    conf.write_text("GPG_CHECK=maybe\n")
    with pytest.raises(VzError, match="GPG_CHECK must be yes or no"):
        download.settings(paths)


def _file_repo(tmp_path: Path, data: bytes) -> tuple[Paths, download.Repo]:
    publisher = Paths(tmp_path / "publisher")
    _cached(publisher, "tiny-1.0", data)
    repository.publish(publisher, ["tiny-1.0"], tmp_path / "repo")
    client = Paths(tmp_path / "client")
    client.etc_vz.mkdir(parents=True)
    (client.etc_vz / "download.conf").write_text(f'TEMPLATE_REPOS="local=file://{tmp_path}/repo"\n')
    return client, download.settings(client).repos[0]


def _cache_files(paths: Paths) -> list[str]:
    return sorted(os.listdir(paths.template_cache)) if paths.template_cache.exists() else []


def test_download_from_file_url_without_gpg(tmp_path: Path) -> None:
    client, repo = _file_repo(tmp_path, b"z" * 200_000)
    found = download.locate([repo], "tiny-1.0")
    assert found is not None and found.entry.size == 200_000
    assert download.locate([repo], "missing") is None
    archive = download.install_from(client, found, gpg_check=False)
    assert archive.read_bytes() == b"z" * 200_000
    assert _cache_files(client) == ["tiny-1.0.manifest.json", "tiny-1.0.tar.zst"]
    assert cache.find(client, "tiny-1.0") == archive


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "index-sha", "missing"])
def test_failed_download_leaves_nothing(tmp_path: Path, damage: str) -> None:
    client, repo = _file_repo(tmp_path, b"z" * 200_000)
    served = tmp_path / "repo/tiny-1.0.tar.zst"
    if damage == "flip":
        served.write_bytes(b"z" * 100_000 + b"Z" + b"z" * 99_999)
    elif damage == "truncate":
        served.write_bytes(b"z" * 100_000)
    elif damage == "grow":
        served.write_bytes(b"z" * 200_001)
    elif damage == "index-sha":
        index = tmp_path / "repo/index.json"
        index.write_text(index.read_text().replace(sha256_file(served), "0" * 64))
    else:
        served.unlink()
    found = download.locate([repo], "tiny-1.0")
    assert found is not None
    with pytest.raises(VzError) as caught:
        download.install_from(client, found, gpg_check=False)
    assert "\n" not in caught.value.message
    assert caught.value.code == (ExitCode.SYSTEM_ERROR if damage == "missing" else ExitCode.BAD_TEMPLATE)
    assert _cache_files(client) == []


def test_require_names_the_repositories(tmp_path: Path) -> None:
    client, _repo = _file_repo(tmp_path, b"z" * 10)
    with pytest.raises(VzError) as caught:
        cache.require(client, "elsewhere")
    assert caught.value.code == ExitCode.OSTEMPLATE_NOT_FOUND
    assert f"local (file://{tmp_path}/repo/)" in caught.value.message


def test_sweep_removes_what_dead_processes_left(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.template_cache.mkdir(parents=True)
    dead = paths.template_cache / ".tiny.partial-999999999"
    dead.mkdir()
    (dead / "tiny.tar.zst").write_bytes(b"x")
    alive = paths.template_cache / f".tiny.tar.zst.partial-{os.getppid()}"
    alive.write_bytes(b"x")
    download._sweep(paths.template_cache)
    assert _cache_files(paths) == [alive.name]
