"""Old OpenVZ forms read without root: precreated template listings, old archive packings,
and vzdump's bare --compress."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.backup import legacy
from pyvz.cli.vzdump import _bare_compress
from pyvz.errors import VzError
from pyvz.templates import precreated
from pyvz.templates.download import parse_repos

APACHE = """<html><body><h1>Index of /template/precreated</h1><ul>
<li><a href="/template/"> Parent Directory</a></li>
<li><a href="centos-6-x86_64.tar.gz">centos-6-x86_64.tar.gz</a></li>
<li><a href="centos-6-x86_64.tar.gz.asc">centos-6-x86_64.tar.gz.asc</a></li>
<li><a href="./debian-7.0-x86_64-minimal.tar.xz">debian-7.0-x86_64-minimal.tar.xz</a></li>
<li><a href="debian-7.0-x86_64-minimal.tar.gz">debian-7.0-x86_64-minimal.tar.gz</a></li>
<li><a href="http://elsewhere.invalid/evil.tar.gz">evil</a></li>
<li><a href="../escape.tar.gz">up</a></li>
<li><a href="ubuntu-14.04-x86%5F64.tar.gz">ubuntu</a></li>
<li><a href="README">README</a></li>
</ul></body></html>"""


def test_http_listing_gives_the_templates_of_that_directory() -> None:
    entries = precreated.parse_listing(APACHE)
    assert [(e.name, e.archive) for e in entries] == [
        ("centos-6-x86_64", "centos-6-x86_64.tar.gz"),
        ("debian-7.0-x86_64-minimal", "debian-7.0-x86_64-minimal.tar.gz"),  # .tar.gz preferred
        ("ubuntu-14.04-x86_64", "ubuntu-14.04-x86_64.tar.gz"),
    ]
    centos = entries[0]
    assert (centos.distribution, centos.version, centos.architecture, centos.size) == (
        "centos",
        "6",
        "amd64",
        -1,
    )
    assert centos.precreated and centos.signature == "centos-6-x86_64.tar.gz.asc"


def test_plain_directory_listing_and_paths_as_repositories(tmp_path: Path) -> None:
    (tmp_path / "suse-42-x86.tar.xz").write_bytes(b"x" * 10)
    (tmp_path / "suse-42-x86.tar.xz.asc").write_bytes(b"sig")
    (tmp_path / "notes.txt").write_text("")
    (entry,) = precreated.list_directory(tmp_path)
    assert (entry.name, entry.size, entry.architecture) == ("suse-42-x86", 10, "i386")
    (plain, url) = parse_repos(f"{tmp_path} web=http://127.0.0.1:1/t", tmp_path / "download.conf")
    assert plain.url == tmp_path.as_uri() + "/" and url.url == "http://127.0.0.1:1/t/"


def test_packing_is_found_from_the_first_bytes(tmp_path: Path) -> None:
    lzo = tmp_path / "a.tgz"  # a misleading name: the bytes decide
    lzo.write_bytes(b"\x89LZO\x00\r\n\x1a\n" + bytes(600))
    assert legacy.packing_of(lzo).name == "lzop"
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello" * 200)
    with pytest.raises(VzError, match="not a tar archive"):
        legacy.packing_of(junk)


def test_bare_compress_is_the_old_gzip() -> None:
    choices = ["zstd", "gzip", "lzo", "none"]
    assert _bare_compress(["--compress", "101"], choices) == ["--compress=gzip", "101"]
    assert _bare_compress(["--compress", "lzo", "101"], choices) == ["--compress", "lzo", "101"]
    assert _bare_compress(["101", "--compress"], choices) == ["101", "--compress=gzip"]
    assert _bare_compress(["--compress", "none", "101"], choices) == ["--compress", "none", "101"]
    assert _bare_compress(["--compress=zstd", "101"], choices) == ["--compress=zstd", "101"]


def test_openvz_download_conf_is_read_as_vztmpl_dl_read_it(tmp_path: Path) -> None:
    from pyvz.paths import Paths
    from pyvz.templates import download

    paths = Paths(tmp_path)
    paths.etc_vz.mkdir(parents=True)
    paths.vz_conf.write_text('VE_LAYOUT=simfs\nTMPL_REPO_PREFIX="http://127.0.0.1:9/openvz"\n')
    # vz.conf alone: TEMPLATE_REPOS defaults to the prefix; signatures still checked.
    found = download.settings(paths)
    assert found.repos == [download.Repo("repo1", "http://127.0.0.1:9/openvz/")] and found.gpg_check
    (paths.etc_vz / "download.conf").write_text(
        "# as an old host had it\n"
        'UPDATE_TEMPLATE="no"\n'
        'CHECK_TEMPLATE_SIG="no"\n'
        "QUIET=yes\n"
        'TMPL_REPO_PREFIX="file:///srv/mirror"\n'
        'TEMPLATE_REPOS="${TMPL_REPO_PREFIX}"\n'
        'TEMPLATE_REPOS="${TEMPLATE_REPOS} ${TMPL_REPO_PREFIX}/beta/"\n'
        'TEMPLATE_REPOS="$TEMPLATE_REPOS $UNSET_THING/srv/old"\n'
        'SOMETHING_ELSE="kept"\n'
    )
    found = download.settings(paths)
    assert [repo.url for repo in found.repos] == [
        "file:///srv/mirror/",
        "file:///srv/mirror/beta/",
        "file:///srv/old/",  # an unset variable is empty, as in the shell
    ]
    assert found.gpg_check is False  # CHECK_TEMPLATE_SIG="no", said so at each download
    assert found.unused == ("UPDATE_TEMPLATE", "QUIET")
    text = (paths.etc_vz / "download.conf").read_text()
    (paths.etc_vz / "download.conf").write_text(text + "GPG_CHECK=yes\n")
    assert download.settings(paths).gpg_check is True  # pyvz's own key wins
    (paths.etc_vz / "download.conf").write_text('CHECK_TEMPLATE_SIG="perhaps"\n')
    with pytest.raises(VzError, match="download.conf: CHECK_TEMPLATE_SIG must be yes or no"):
        download.settings(paths)
