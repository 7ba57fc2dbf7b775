"""pyvz.paths: every location derived from one root."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.paths import Paths


def test_locations_under_the_root(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert paths.vz_conf == tmp_path / "etc/vz/vz.conf"
    assert paths.conf_file(101) == tmp_path / "etc/vz/conf/101.conf"
    assert paths.sample_file("basic") == tmp_path / "etc/vz/conf/ve-basic.conf-sample"
    assert paths.action_script(101, "mount") == tmp_path / "etc/vz/conf/101.mount"
    assert paths.action_script("vps", "umount") == tmp_path / "etc/vz/conf/vps.umount"
    assert paths.name_link("web") == tmp_path / "etc/vz/names/web"
    assert paths.lock_dir == tmp_path / "var/lib/vz/lock"
    assert paths.template_cache == tmp_path / "var/lib/vz/template/cache"
    assert paths.log_file == tmp_path / "var/log/vzctl.log"


def test_host_maps_config_paths_into_the_root(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert paths.host("/var/lib/vz/private/101") == tmp_path / "var/lib/vz/private/101"
    assert paths.host("relative/x") == tmp_path / "relative/x"
    assert Paths(Path("/")).host("/var/lib/vz") == Path("/var/lib/vz")


def test_tag_differs_per_root(tmp_path: Path) -> None:
    assert Paths(Path("/")).tag == "pyvz"
    one, two = Paths(tmp_path / "a").tag, Paths(tmp_path / "b").tag
    assert one != two
    assert one.startswith("pyvz-") and len(one) == len("pyvz-") + 8
    assert Paths(tmp_path / "a").tag == one  # stable


def test_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYVZ_ROOT", str(tmp_path / "sub" / ".."))
    assert Paths.from_env().root == tmp_path.resolve()
    monkeypatch.setenv("PYVZ_ROOT", "")
    assert Paths.from_env().root == Path("/")
    monkeypatch.delenv("PYVZ_ROOT")
    assert Paths.from_env().root == Path("/")
