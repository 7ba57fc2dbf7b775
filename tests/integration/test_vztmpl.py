"""vztmpl: list, import, export, remove, sign, verify, trust, publish, build and recipes.

The material is real: GPG keys made in a throwaway GNUPGHOME and the embedded busybox
template, built once and imported under the name tiny-1.0 (so that a missing template is
never quietly rebuilt, as the name `busybox` would be).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, Done, VzRoot, throwaway_root
from tests.gpgkeys import export_public, gpg, new_key, throwaway_home

pytestmark = pytest.mark.root

NAME = "tiny-1.0"
ARCHIVE = f"{NAME}.tar.zst"
MANIFEST = f"{NAME}.manifest.json"
SIGNED_FILES = sorted([ARCHIVE, f"{ARCHIVE}.asc", MANIFEST])
UNSIGNED_FILES = sorted([ARCHIVE, MANIFEST])
RECIPES = ["debian-12-x86_64", "debian-12-x86_64-minimal", "debian-13-x86_64-minimal"]


@dataclass
class Material:
    """Built once per module."""

    home: Path  # GNUPGHOME holding the secret keys; only `vztmpl sign` sees it
    empty_home: Path  # GNUPGHOME for every other command: nothing in it to trust by accident
    key: str  # the publisher's key
    stranger: str  # a key no root trusts
    public_key: Path  # the publisher's public key, armored
    archive: Path  # the busybox template as tiny-1.0.tar.zst, with nothing beside it
    other: Path  # a different small, valid archive


@pytest.fixture(scope="module")
def material() -> Iterator[Material]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.templates import busybox

    work = Path(tempfile.mkdtemp(prefix="pyvz-vztmpl-", dir="/tmp"))
    with throwaway_home() as home, throwaway_home() as empty_home:
        try:
            key = new_key(home, "publisher@example.invalid")
            stranger = new_key(home, "stranger@example.invalid")
            public_key = work / "publisher.asc"
            public_key.write_text(export_public(home, key))
            (work / "material").mkdir()
            archive = work / "material" / ARCHIVE
            shutil.move(busybox.build(Paths(work / "build")), archive)
            tree = work / "other-tree"
            tree.mkdir()
            (tree / "hello").write_text("hello\n")
            other = work / "other.tar.zst"
            subprocess.run(["tar", "--zstd", "-cf", str(other), "-C", str(tree), "."], check=True)
            yield Material(home, empty_home, key, stranger, public_key, archive, other)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def second_root(vzroot: VzRoot) -> Iterator[VzRoot]:
    """Another host: a second throwaway PYVZ_ROOT, next to `vzroot`."""
    with throwaway_root(pool_size=None) as root:
        yield root


def vztmpl(vz: VzRoot, material: Material, *args: str, sign: bool = False) -> Done:
    """Run vztmpl in the root; only with `sign` does it see the GNUPGHOME with the secret keys."""
    env = {**vz.env, "GNUPGHOME": str(material.home if sign else material.empty_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "pyvz.cli.vztmpl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


def ok(vz: VzRoot, material: Material, *args: str, sign: bool = False) -> str:
    done = vztmpl(vz, material, *args, sign=sign)
    assert done.code == 0, f"vztmpl {' '.join(args)} -> {done.code}: {done.err}{done.out}"
    assert done.err == "", done.err
    return done.out


def one_error_line(done: Done, code: int | None = None, unchecked: bool = False) -> str:
    """The one `Error:` line on stderr (after --no-gpg-check's own WARNING, if `unchecked`)."""
    assert done.code != 0, done.out
    if code is not None:
        assert done.code == code, (done.code, done.err)
    lines = done.err.splitlines()
    if unchecked:
        assert lines[0].startswith("WARNING:") and "--no-gpg-check" in lines[0], done.err
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.err
    return lines[0]


def cache_dir(vz: VzRoot) -> Path:
    return vz.root / "var/lib/vz/template/cache"


def cache_files(vz: VzRoot) -> list[str]:
    """Everything in the cache, hidden files (partial copies) included."""
    cache = cache_dir(vz)
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def listed(vz: VzRoot, material: Material) -> dict[str, list[str]]:
    """`vztmpl list` as NAME -> [distribution, version, arch, size, signed, built]."""
    header, *rows = ok(vz, material, "list").splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "ARCH", "SIZE", "SIGNED", "BUILT"]
    table = {}
    for row in rows:
        name, *cells = row.split()
        assert len(cells) == 6, row
        table[name] = cells
    return table


def import_unchecked(vz: VzRoot, material: Material, file: Path, *args: str) -> Done:
    done = vztmpl(vz, material, "import", "--no-gpg-check", str(file), *args)
    assert done.code == 0, done.err
    return done


def signed_template(vz: VzRoot, material: Material) -> None:
    """tiny-1.0 in the cache, signed by the publisher, whose key the root trusts."""
    import_unchecked(vz, material, material.archive)
    ok(vz, material, "sign", NAME, "--key", material.key, sign=True)
    ok(vz, material, "trust", str(material.public_key))
    assert set(SIGNED_FILES) <= set(cache_files(vz))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def keyring_fingerprints(keyring: Path, home: Path) -> list[str]:
    listing = gpg(home, "--no-default-keyring", "--keyring", str(keyring), "--with-colons", "--list-keys")
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]


# ---- list, sign, trust, verify ----------------------------------------------------------


def test_list_sign_trust_verify(vzroot: VzRoot, material: Material) -> None:
    assert listed(vzroot, material) == {}
    import_unchecked(vzroot, material, material.archive)
    row = listed(vzroot, material)[NAME]
    assert row[0] == "busybox"  # the distribution, from the archive's own /etc/os-release
    assert row[1][0].isdigit()  # busybox's version
    assert row[3].endswith(("K", "M"))
    assert row[4] == "no"

    unsigned = vztmpl(vzroot, material, "verify", NAME)
    assert "no signature" in one_error_line(unsigned, 47)

    out = ok(vzroot, material, "sign", NAME, "--key", material.key, sign=True)
    assert NAME in out
    signature = cache_dir(vzroot) / f"{ARCHIVE}.asc"
    assert signature.read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    assert cache_files(vzroot) == SIGNED_FILES
    assert listed(vzroot, material)[NAME][4] == "yes"

    untrusting = vztmpl(vzroot, material, "verify", NAME)  # signed, but no key is trusted yet
    assert "vztmpl trust" in one_error_line(untrusting, 47)

    keyring = vzroot.root / "etc/vz/trusted.gpg"
    assert not keyring.exists()
    assert material.key in ok(vzroot, material, "trust", str(material.public_key))
    assert keyring_fingerprints(keyring, material.empty_home) == [material.key]

    out = ok(vzroot, material, "verify", NAME)
    assert "good" in out and material.key in out


def test_verify_fails_when_one_byte_changes(vzroot: VzRoot, material: Material) -> None:
    signed_template(vzroot, material)
    archive = cache_dir(vzroot) / ARCHIVE
    flip_byte(archive)
    line = one_error_line(vztmpl(vzroot, material, "verify", NAME), 47)
    assert ARCHIVE in line and "sha256" in line
    flip_byte(archive)  # the same byte back: good again
    assert material.key in ok(vzroot, material, "verify", NAME)


def test_verify_fails_for_an_untrusted_signer(vzroot: VzRoot, material: Material) -> None:
    signed_template(vzroot, material)
    ok(vzroot, material, "sign", NAME, "--key", material.stranger, sign=True)  # re-signed by a stranger
    line = one_error_line(vztmpl(vzroot, material, "verify", NAME), 47)
    assert "not trusted" in line
    assert cache_files(vzroot) == SIGNED_FILES  # verify changes nothing


def test_sign_with_an_unknown_key_fails_cleanly(vzroot: VzRoot, material: Material) -> None:
    import_unchecked(vzroot, material, material.archive)
    done = vztmpl(vzroot, material, "sign", NAME, "--key", "nobody@example.invalid", sign=True)
    assert "No secret key" in one_error_line(done, 47)
    assert cache_files(vzroot) == UNSIGNED_FILES  # no signature, no partial one


# ---- export and import ------------------------------------------------------------------


def test_export_then_import_into_another_root(
    vzroot: VzRoot, second_root: VzRoot, material: Material, tmp_path: Path
) -> None:
    signed_template(vzroot, material)
    out = tmp_path / "out.tar.zst"
    ok(vzroot, material, "export", NAME, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.manifest.json",
        "out.tar.zst",
        "out.tar.zst.asc",
    ]
    cache = cache_dir(vzroot)
    assert out.read_bytes() == (cache / ARCHIVE).read_bytes()
    assert (tmp_path / "out.tar.zst.asc").read_bytes() == (cache / f"{ARCHIVE}.asc").read_bytes()
    exported = json.loads((tmp_path / "out.manifest.json").read_text())
    assert exported == json.loads((cache / MANIFEST).read_text())

    refused = vztmpl(second_root, material, "import", str(out))  # the key is not trusted there yet
    assert "vztmpl trust" in one_error_line(refused, 47)
    assert cache_files(second_root) == []

    ok(second_root, material, "trust", str(material.public_key))
    assert "Imported template out" in ok(second_root, material, "import", str(out))
    assert cache_files(second_root) == ["out.manifest.json", "out.tar.zst", "out.tar.zst.asc"]
    row = listed(second_root, material)["out"]
    assert row[0] == "busybox" and row[4] == "yes"
    assert json.loads((cache_dir(second_root) / "out.manifest.json").read_text())["name"] == "out"
    assert material.key in ok(second_root, material, "verify", "out")


def test_import_with_another_name(vzroot: VzRoot, material: Material, tmp_path: Path) -> None:
    signed_template(vzroot, material)
    ok(vzroot, material, "export", NAME, str(tmp_path / ARCHIVE))
    ok(vzroot, material, "import", str(tmp_path / ARCHIVE), "--name", "other-2.0")
    assert cache_files(vzroot) == sorted(
        SIGNED_FILES + ["other-2.0.manifest.json", "other-2.0.tar.zst", "other-2.0.tar.zst.asc"]
    )
    table = listed(vzroot, material)
    assert sorted(table) == sorted([NAME, "other-2.0"])
    assert table["other-2.0"][0] == "busybox" and table["other-2.0"][4] == "yes"
    assert json.loads((cache_dir(vzroot) / "other-2.0.manifest.json").read_text())["name"] == "other-2.0"
    assert material.key in ok(vzroot, material, "verify", "other-2.0")


def test_unsigned_import_needs_no_gpg_check(vzroot: VzRoot, material: Material) -> None:
    refused = vztmpl(vzroot, material, "import", str(material.archive))
    line = one_error_line(refused, 47)
    assert "no signature" in line and f"{ARCHIVE}.asc" in line
    assert cache_files(vzroot) == []

    done = vztmpl(vzroot, material, "import", "--no-gpg-check", str(material.archive))
    assert done.code == 0, done.err
    warnings = done.err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("WARNING:") and "--no-gpg-check" in warnings[0]
    assert f"Imported template {NAME}" in done.out
    assert cache_files(vzroot) == UNSIGNED_FILES
    assert (cache_dir(vzroot) / ARCHIVE).read_bytes() == material.archive.read_bytes()
    assert listed(vzroot, material)[NAME][4] == "no"


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_import_refuses_a_manifest_that_does_not_match(
    vzroot: VzRoot, material: Material, tmp_path: Path, signed: bool
) -> None:
    """A good signature over the archive does not excuse a manifest that disagrees with it."""
    from pyvz.templates.manifest import sha256_file

    archive = tmp_path / ARCHIVE
    shutil.copyfile(material.archive, archive)
    real = sha256_file(archive)
    manifest = {
        "name": NAME,
        "distribution": "busybox",
        "version": "1.0",
        "architecture": "amd64",
        "build_date": "2024-01-01T00:00:00Z",
        "sha256": "0" * 64,
        "size": archive.stat().st_size,
    }
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    args = ["import", str(archive)]
    if signed:
        gpg(material.home, "--local-user", material.key, "--detach-sign", "--armor", str(archive))
        ok(vzroot, material, "trust", str(material.public_key))
    else:
        args.append("--no-gpg-check")
    line = one_error_line(vztmpl(vzroot, material, *args), 47, unchecked=not signed)
    assert "sha256" in line and real in line
    assert cache_files(vzroot) == []


def test_import_refuses_what_is_not_an_archive(vzroot: VzRoot, material: Material, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a template\n")
    line = one_error_line(vztmpl(vzroot, material, "import", "--no-gpg-check", str(text)), 47)
    assert "notes.txt" in line and ".tar.zst" in line

    missing = vztmpl(vzroot, material, "import", "--no-gpg-check", str(tmp_path / "missing.tar.zst"))
    assert "does not exist" in one_error_line(missing, 91)

    escape = vztmpl(vzroot, material, "import", "--no-gpg-check", str(material.archive), "--name", "../x")
    assert "../x" in one_error_line(escape, 21)
    assert cache_files(vzroot) == []
    assert not (vzroot.root / "var/lib/vz/template/x.tar.zst").exists()


def test_import_refuses_a_file_that_is_not_a_tar_archive(
    vzroot: VzRoot, material: Material, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(os.urandom(4096))
    one_error_line(vztmpl(vzroot, material, "import", "--no-gpg-check", str(junk)), 47, unchecked=True)
    assert cache_files(vzroot) == []


def test_import_of_a_file_already_in_the_cache(vzroot: VzRoot, material: Material) -> None:
    """OpenVZ admins drop NAME.tar.zst and its .asc into the cache by hand, then import it."""
    signed_template(vzroot, material)
    (cache_dir(vzroot) / MANIFEST).unlink()  # as if copied in by hand: no manifest yet
    done = vztmpl(vzroot, material, "import", str(cache_dir(vzroot) / ARCHIVE))
    assert done.code == 0, done.err
    assert cache_files(vzroot) == SIGNED_FILES
    assert material.key in ok(vzroot, material, "verify", NAME)


def test_reimport_in_another_format_drops_the_old_signature(
    vzroot: VzRoot, material: Material, tmp_path: Path
) -> None:
    signed_template(vzroot, material)
    gz = tmp_path / f"{NAME}.tar.gz"
    with open(gz, "wb") as handle:
        tar = subprocess.run(["zstd", "-dc", str(material.archive)], capture_output=True, check=True).stdout
        handle.write(subprocess.run(["gzip", "-1"], input=tar, capture_output=True, check=True).stdout)
    gpg(material.home, "--local-user", material.key, "--detach-sign", "--armor", str(gz))
    ok(vzroot, material, "import", str(gz))
    assert cache_files(vzroot) == sorted([f"{NAME}.tar.gz", f"{NAME}.tar.gz.asc", MANIFEST])
    ok(vzroot, material, "remove", NAME)
    assert cache_files(vzroot) == []


def test_export_checks_the_file_name(vzroot: VzRoot, material: Material, tmp_path: Path) -> None:
    signed_template(vzroot, material)
    wrong = vztmpl(vzroot, material, "export", NAME, str(tmp_path / "out.tar.xz"))
    assert ".tar.zst" in one_error_line(wrong, 21)
    missing = vztmpl(vzroot, material, "export", "nosuch", str(tmp_path / "out.tar.zst"))
    one_error_line(missing, 91)
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_missing_directory(vzroot: VzRoot, material: Material, tmp_path: Path) -> None:
    signed_template(vzroot, material)
    done = vztmpl(vzroot, material, "export", NAME, str(tmp_path / "nodir" / "out.tar.zst"))
    one_error_line(done)
    assert not (tmp_path / "nodir").exists()


def test_export_of_an_unsigned_template_leaves_no_stale_signature(
    vzroot: VzRoot, material: Material, tmp_path: Path
) -> None:
    signed_template(vzroot, material)
    out = tmp_path / "out.tar.zst"
    ok(vzroot, material, "export", NAME, str(out))
    import_unchecked(vzroot, material, material.other, "--name", "plain")
    ok(vzroot, material, "export", "plain", str(out))
    assert out.read_bytes() == material.other.read_bytes()
    # The old signature beside it would make the second root list "plain" as signed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.manifest.json", "out.tar.zst"]


# ---- remove -----------------------------------------------------------------------------


def test_remove(vzroot: VzRoot, material: Material) -> None:
    signed_template(vzroot, material)
    import_unchecked(vzroot, material, material.other, "--name", "keep")
    assert f"Removed template {NAME}" in ok(vzroot, material, "remove", NAME)
    assert cache_files(vzroot) == ["keep.manifest.json", "keep.tar.zst"]
    assert sorted(listed(vzroot, material)) == ["keep"]

    again = vztmpl(vzroot, material, "remove", NAME)
    assert NAME in one_error_line(again, 91)
    assert cache_files(vzroot) == ["keep.manifest.json", "keep.tar.zst"]


# ---- publish ----------------------------------------------------------------------------


def test_publish(vzroot: VzRoot, material: Material, tmp_path: Path) -> None:
    from pyvz.templates.manifest import sha256_file

    import_unchecked(vzroot, material, material.other, "--name", "plain")
    nothing = vztmpl(vzroot, material, "publish", str(tmp_path / "empty"))  # nothing is signed yet
    assert "vztmpl sign" in one_error_line(nothing, 91)
    assert not (tmp_path / "empty").exists()

    signed_template(vzroot, material)
    repo = tmp_path / "repo"
    out = ok(vzroot, material, "publish", str(repo))
    assert "Not publishing plain" in out  # signed templates only, by default
    assert sorted(p.name for p in repo.iterdir()) == sorted(SIGNED_FILES + ["index.json"])
    index = json.loads((repo / "index.json").read_text())
    assert index["format"] == 1
    [entry] = index["templates"]
    assert entry["name"] == NAME and entry["archive"] == ARCHIVE and entry["distribution"] == "busybox"
    assert entry["sha256"] == sha256_file(repo / ARCHIVE) == sha256_file(material.archive)
    assert entry["size"] == material.archive.stat().st_size
    assert (repo / f"{ARCHIVE}.asc").read_bytes() == (cache_dir(vzroot) / f"{ARCHIVE}.asc").read_bytes()

    refused = vztmpl(vzroot, material, "publish", str(repo), "plain")
    assert "not signed" in one_error_line(refused, 47)
    assert [t["name"] for t in json.loads((repo / "index.json").read_text())["templates"]] == [NAME]

    ok(vzroot, material, "publish", str(repo), "plain", "--allow-unsigned")
    index = json.loads((repo / "index.json").read_text())
    assert [t["name"] for t in index["templates"]] == ["plain", NAME]  # earlier entries stay listed
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        SIGNED_FILES + ["index.json", "plain.manifest.json", "plain.tar.zst"]
    )


# ---- build and recipes ------------------------------------------------------------------


def test_build_of_an_unknown_recipe(vzroot: VzRoot, material: Material) -> None:
    line = one_error_line(vztmpl(vzroot, material, "build", "no-such-recipe"), 91)
    assert "no-such-recipe" in line and all(name in line for name in RECIPES)
    assert cache_files(vzroot) == []


def test_recipes(vzroot: VzRoot, material: Material) -> None:
    lines = ok(vzroot, material, "recipes").splitlines()
    assert sorted(line.split()[0] for line in lines) == RECIPES
    for line in lines:
        name, path = line.split()
        assert path.endswith(f"/{name}.toml") and Path(path).is_file()


# ---- a CT from an imported template -----------------------------------------------------


def test_create_from_an_imported_template(
    vzroot: VzRoot, second_root: VzRoot, material: Material, tmp_path: Path
) -> None:
    signed_template(second_root, material)
    ok(second_root, material, "export", NAME, str(tmp_path / ARCHIVE))
    ok(vzroot, material, "trust", str(material.public_key))
    ok(vzroot, material, "import", str(tmp_path / ARCHIVE))

    vzroot.ok("create", "101", "--ostemplate", NAME)
    conf = (vzroot.conf_dir / "101.conf").read_text()
    assert f'OSTEMPLATE="{NAME}"' in conf
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    vzroot.ok("start", "101")
    assert "BusyBox" in vzroot.ok("exec", "101", "cat", "/etc/os-release")
    vzroot.ok("stop", "101", "--fast")
    vzroot.ok("destroy", "101")
    assert not (vzroot.conf_dir / "101.conf").exists()
    assert not (vzroot.private_dir / "101").exists()
    assert cache_files(vzroot) == SIGNED_FILES  # the template stays
