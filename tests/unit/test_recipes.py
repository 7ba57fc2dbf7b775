"""Recipes, host apt sources and the build hook: all checked without building anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.templates.builder import hook_script
from pyvz.templates.recipe import BUILT_IN, find, load
from pyvz.templates.sources import for_suite, host_sources

GOOD = 'distribution = "debian"\nversion = "12"\nsuite = "bookworm"\narchitecture = "amd64"\n'


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_recipes_load() -> None:
    names = {path.stem for path in BUILT_IN.glob("*.toml")}
    assert {"debian-12-x86_64-minimal", "debian-12-x86_64", "debian-13-x86_64-minimal"} <= names
    full = load(BUILT_IN / "debian-12-x86_64.toml")
    assert {"openssh-server", "ca-certificates", "less", "systemd-sysv"} <= set(full.packages)
    assert "sys-kernel-debug.mount" in full.mask
    assert load(BUILT_IN / "debian-13-x86_64-minimal.toml").suite == "trixie"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("distribution = \n", "syntax"),
        (GOOD + "packges = []\n", "packges"),
        (GOOD.replace('suite = "bookworm"\n', ""), "suite"),
        (GOOD + 'packages = ["Bad_Name"]\n', "Bad_Name"),
        (GOOD + 'variant = "huge"\n', "variant"),
        (GOOD + '[files]\n"etc/relative" = "x"\n', "absolute"),
        (GOOD + '[files]\n"/etc/../../escape" = "x"\n', "absolute"),
        (GOOD + 'mask = ["not a unit"]\n', "mask"),
        (GOOD + "packages = 3\n", "list"),
    ],
)
def test_bad_recipes_are_refused_with_a_reason(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(VzError) as caught:
        load(write(tmp_path, text))
    assert caught.value.code == ExitCode.INVALID_CONFIG
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_find_prefers_a_path_then_the_roots_recipes(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "root")
    own = paths.etc_vz / "recipes" / "debian-12-x86_64-minimal.toml"
    own.parent.mkdir(parents=True)
    own.write_text(GOOD)
    assert find(paths, "debian-12-x86_64-minimal") == own
    assert find(paths, "debian-13-x86_64-minimal") == BUILT_IN / "debian-13-x86_64-minimal.toml"
    explicit = write(tmp_path, GOOD, "mine.toml")
    assert find(paths, str(explicit)) == explicit
    with pytest.raises(VzError) as caught:
        find(paths, "no-such-recipe")
    assert caught.value.code == ExitCode.OSTEMPLATE_NOT_FOUND


def test_sources_come_from_the_hosts_apt_configuration(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    (apt / "sources.list").write_text("# deb http://old.invalid/debian bookworm main\n")
    assert [s.uri for s in host_sources(apt)] == [
        "http://mirror.invalid/debian",
        "http://mirror.invalid/debian-security",
    ]
    text = for_suite("trixie", apt)
    assert "URIs: http://mirror.invalid/debian\nSuites: trixie trixie-updates\n" in text
    assert "URIs: http://mirror.invalid/debian-security\nSuites: trixie-security\n" in text
    assert "old.invalid" not in text


def test_one_line_sources_work_too(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    apt.mkdir()
    (apt / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://m.invalid/debian bookworm main contrib\n"
    )
    assert "URIs: http://m.invalid/debian\nSuites: bookworm bookworm-updates\n" in for_suite("bookworm", apt)


def test_no_apt_sources_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VzError) as caught:
        for_suite("bookworm", tmp_path)
    assert "host's own mirror" in str(caught.value)


def test_hook_writes_files_masks_and_runs_scripts(tmp_path: Path) -> None:
    recipe = load(
        write(
            tmp_path,
            GOOD
            + 'mask = ["sys-kernel-debug.mount"]\npost_install = ["echo hi > /x"]\n'
            + '[files]\n"/etc/motd" = "welcome\\n"\n[append]\n"/etc/issue" = "more\\n"\n',
        )
    )
    stage = tmp_path / "stage"
    stage.mkdir()
    script = hook_script(recipe, stage)
    assert 'ln -sfn /dev/null "$root/etc/systemd/system/"sys-kernel-debug.mount' in script
    assert (stage / "file-0").read_text() == "welcome\n"
    assert (stage / "append-0").read_text() == "more\n"
    assert (stage / "post-0.sh").read_text() == "set -e\necho hi > /x\n"
    assert "dpkg-query" in script


def test_rebuild_keep_paths_are_checked_before_anything() -> None:
    from pyvz.ct.rebuild import parse_keep

    assert parse_keep("/root/.ssh/") == "/root/.ssh"
    assert parse_keep("/etc//ssh/./ssh_host_*") == "/etc/ssh/ssh_host_*"
    for bad, words in (
        ("root/.ssh", "absolute"),
        ("/etc/../../x", "`..`"),
        ("/", "whole /"),
        ("/e*c/ssh", "last part"),
        ("/etc/a\nb", "control"),
    ):
        with pytest.raises(VzError) as caught:
            parse_keep(bad)
        assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE and words in caught.value.message


def test_recipe_option_takes_a_name_or_a_toml_path() -> None:
    from pyvz.params import parse_recipe

    assert parse_recipe("web") == "web" and parse_recipe("/srv/r/web.toml") == "/srv/r/web.toml"
    for bad in ("/srv/r/web", "a b", '/x/"y.toml'):
        with pytest.raises(VzError):
            parse_recipe(bad)
