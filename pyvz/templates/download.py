"""Downloading templates from repositories: vztmpl-dl, and vzctl create for a missing template.

Repositories are listed in $ROOT/etc/vz/download.conf (OpenVZ KEY="value" format):

    TEMPLATE_REPOS="main=https://templates.example/pyvz/ local=file:///srv/templates/"
    KEYRING=/etc/vz/trusted.gpg
    GPG_CHECK=yes

TEMPLATE_REPOS is a space-separated list of NAME=URL (or a bare URL, or a plain directory
path); the first repository listing a template wins. A repository without index.json is
taken for a directory of OpenVZ precreated templates (pyvz.templates.precreated).

OpenVZ's vztmpl-dl sourced vz.conf and then download.conf, so an old host's settings are
read the same way: vz.conf's keys first, download.conf's after them, line by line, with
`$TMPL_REPO_PREFIX` and `$TEMPLATE_REPOS` (also `${...}`) in TEMPLATE_REPOS and
TMPL_REPO_PREFIX replaced by what the lines before set (`TEMPLATE_REPOS="${TEMPLATE_REPOS}
${TMPL_REPO_PREFIX}/beta/"`). TEMPLATE_REPOS defaults to TMPL_REPO_PREFIX, as it did there,
and CHECK_TEMPLATE_SIG stands for GPG_CHECK when that is not set (but unset means yes here:
pyvz checks signatures unless told not to). vztmpl-dl's other keys (UPDATE_TEMPLATE,
QUIET, TMPL_SUFFIXES, GPG_KEY, IGNORE_ERRORS) and unknown ones are left alone: read, said by
--config, not used.

An archive is downloaded into a staging directory inside the cache (.NAME.partial-PID),
checked against index.json and its manifest (size, sha256) and against its GPG signature,
and only then installed (pyvz.templates.cache.install renames the archive in last).
Whatever fails or is interrupted, the cache is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.paths import Paths
from pyvz.progress import Progress
from pyvz.templates import cache, gpg
from pyvz.templates.manifest import Manifest, path_for
from pyvz.templates.repository import INDEX, IndexEntry, parse_index

CONF_NAME = "download.conf"
TIMEOUT = 30.0  # seconds without progress before a download is given up
SCHEMES = ("http", "https", "file")
_SMALL_LIMIT = 16 << 20  # index.json, manifests and signatures are far smaller than this
_BLOCK = 1 << 16
_REPO_NAME_RE = re.compile(r"([A-Za-z0-9_.-]+)=(.+)")
_PARTIAL_RE = re.compile(r"\..+\.partial-(\d+)")


class Repo(NamedTuple):
    name: str
    url: str  # always ends with "/"

    def url_of(self, filename: str) -> str:
        return self.url + quote(filename)

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class Settings(NamedTuple):
    repos: list[Repo]
    gpg_check: bool
    source: Path
    unused: tuple[str, ...] = ()  # OpenVZ vztmpl-dl keys set there that pyvz does not use


class Missing(VzError):
    """The server answered that the file is not there (HTTP 404, or no such file)."""


class Found(NamedTuple):
    repo: Repo
    entry: IndexEntry


def parse_repos(text: str, source: Path) -> list[Repo]:
    repos: list[Repo] = []
    for number, word in enumerate(text.split(), 1):
        match = _REPO_NAME_RE.fullmatch(word)
        name, url = (match.group(1), match.group(2)) if match else (f"repo{number}", word)
        if url.startswith("/"):  # a plain directory
            url = Path(url).as_uri()
        scheme = urlsplit(url).scheme
        if scheme not in SCHEMES:
            raise VzError(
                ExitCode.INVALID_CONFIG,
                f"{source}: TEMPLATE_REPOS: {word!r} is not NAME=URL with an http, https or file URL "
                "or a directory path",
            )
        repos.append(Repo(name, url if url.endswith("/") else url + "/"))
    return repos


_EXPANDED = ("TMPL_REPO_PREFIX", "TEMPLATE_REPOS")
_OPENVZ_UNUSED = ("UPDATE_TEMPLATE", "QUIET", "TMPL_SUFFIXES", "GPG_KEY", "IGNORE_ERRORS")
_VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _expand(value: str, known: dict[str, str]) -> str:
    """$NAME and ${NAME} as the shell that sourced the file saw them (unset: empty)."""
    return _VARIABLE_RE.sub(lambda m: known.get(m.group(1) or m.group(2), ""), value)


def settings(paths: Paths) -> Settings:
    """download.conf over vz.conf; no repository configured means none, and signature
    checks on."""
    from pyvz.config import ConfigFile

    source = paths.etc_vz / CONF_NAME
    values: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for path in (paths.vz_conf, source):
        if not path.exists():
            continue
        for key, value in ConfigFile.load(path, missing=ExitCode.INVALID_CONFIG).assignments():
            values[key] = _expand(value, values) if key in _EXPANDED else value
            origin[key] = path
    if "TEMPLATE_REPOS" not in values and values.get("TMPL_REPO_PREFIX"):
        values["TEMPLATE_REPOS"] = values["TMPL_REPO_PREFIX"]
    key = "GPG_CHECK" if "GPG_CHECK" in values or "CHECK_TEMPLATE_SIG" not in values else "CHECK_TEMPLATE_SIG"
    check = (values.get(key) or "yes").lower()
    if check not in ("yes", "no"):
        where = origin.get(key, source)
        raise VzError(ExitCode.INVALID_CONFIG, f"{where}: {key} must be yes or no, not {check!r}")
    unused = tuple(name for name in _OPENVZ_UNUSED if name in values)
    repos = parse_repos(values.get("TEMPLATE_REPOS") or "", origin.get("TEMPLATE_REPOS", source))
    return Settings(repos, check == "yes", source, unused)


# ---- fetching ---------------------------------------------------------------------------


def _why(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    if isinstance(reason, BaseException):
        err = reason
    elif isinstance(reason, str) and reason:
        return reason
    if isinstance(err, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _open(url: str) -> IO[bytes]:
    import http.client
    import urllib.error
    import urllib.request

    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        err.close()
        kind = Missing if err.code in (404, 410) else VzError
        raise kind(ExitCode.SYSTEM_ERROR, f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        kind = Missing if isinstance(err.reason, FileNotFoundError) else VzError
        raise kind(ExitCode.SYSTEM_ERROR, f"cannot download {url}: {_why(err)}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot download {url}: {_why(err)}") from None
    return response


def _read(response: IO[bytes], url: str, amount: int) -> bytes:
    import http.client

    try:
        return response.read(amount)
    except (OSError, http.client.HTTPException) as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"download of {url} failed: {_why(err)}") from None


def fetch_small(url: str) -> bytes:
    """A whole small file (an index, a manifest, a signature)."""
    with _open(url) as response:
        data = _read(response, url, _SMALL_LIMIT + 1)
    if len(data) > _SMALL_LIMIT:
        raise VzError(
            ExitCode.BAD_TEMPLATE, f"{url} is larger than {_SMALL_LIMIT >> 20} MiB: not a repository file"
        )
    return data


def _download(url: str, target: Path, size: int | None, label: str) -> str:
    """Stream `url` into `target`, exactly `size` bytes when it is known; returns the sha256."""
    digest = hashlib.sha256()
    done = 0
    progress = Progress(label, size)
    try:
        with _open(url) as response, open(target, "wb") as out:
            while True:
                block = _read(response, url, _BLOCK if size is None else min(_BLOCK, size - done + 1))
                if not block:
                    break
                done += len(block)
                if size is not None and done > size:
                    raise VzError(
                        ExitCode.BAD_TEMPLATE, f"{url} is larger than the {size} bytes index.json gives"
                    )
                digest.update(block)
                out.write(block)
                progress.update(done)
            out.flush()
            os.fsync(out.fileno())
    finally:
        progress.close()
    if size is not None and done < size:
        raise VzError(
            ExitCode.BAD_TEMPLATE, f"download of {url} stopped after {done} of {size} bytes (truncated)"
        )
    return digest.hexdigest()


# ---- repositories -----------------------------------------------------------------------


def remote_index(repo: Repo) -> list[IndexEntry]:
    url = repo.url_of(INDEX)
    try:
        text = fetch_small(url).decode("utf-8", errors="replace")
    except Missing as missing:
        entries = _precreated(repo)
        if not entries:  # neither kind of repository: say both
            raise VzError(
                missing.code,
                f"{missing.message}, and {repo.url} lists no OpenVZ precreated templates "
                "(NAME.tar.gz or NAME.tar.xz) either",
            ) from None
        return entries
    return parse_index(text, url)


def _precreated(repo: Repo) -> list[IndexEntry]:
    """A repository without index.json: OpenVZ's directory of precreated templates."""
    from pyvz.templates import precreated

    parts = urlsplit(repo.url)
    if parts.scheme == "file":
        directory = Path(unquote(parts.path))
        if not directory.is_dir():
            raise VzError(
                ExitCode.SYSTEM_ERROR, f"template repository {repo}: {directory} is not a directory"
            )
        return precreated.list_directory(directory)
    return precreated.parse_listing(fetch_small(repo.url).decode("utf-8", errors="replace"))


def locate(repos: list[Repo], name: str) -> Found | None:
    """The first repository that lists `name`."""
    for repo in repos:
        for entry in remote_index(repo):
            if entry.name == name:
                return Found(repo, entry)
    return None


def not_found(paths: Paths, name: str, repos: list[Repo]) -> VzError:
    return VzError(
        ExitCode.OSTEMPLATE_NOT_FOUND,
        f"OS template {name!r} is neither in {paths.template_cache} nor in the repositories "
        f"{', '.join(str(repo) for repo in repos)}",
    )


def _sweep(cache_dir: Path) -> None:
    """Remove what a killed download or install left behind (its process is gone)."""
    for entry in cache_dir.iterdir():
        match = _PARTIAL_RE.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def install_from(paths: Paths, found: Found, gpg_check: bool = True) -> Path:
    """Download, check and install one template; the cache is untouched on any failure."""
    repo, entry = found
    cache_dir = paths.template_cache
    cache_dir.mkdir(parents=True, exist_ok=True)
    _sweep(cache_dir)
    had = cache.find(paths, entry.name) is not None
    staging = cache_dir / f".{entry.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    log.info(f"Downloading template {entry.name} from {repo}")
    try:
        manifest: Manifest | None = None
        if not entry.precreated:
            manifest_url = repo.url_of(entry.manifest)
            manifest_text = fetch_small(manifest_url).decode("utf-8", errors="replace")
            manifest = Manifest.from_json(manifest_text, manifest_url)
            if (manifest.sha256, manifest.size) != (entry.sha256, entry.size):
                raise VzError(
                    ExitCode.BAD_TEMPLATE,
                    f"{entry.name}: {INDEX} and {entry.manifest} in {repo.url} disagree on its size "
                    "or sha256",
                )
        elif not gpg_check:
            log.warning(f"{entry.archive} comes with no checksum: nothing at all vouches for it unchecked")
        signature: Path | None = None
        if gpg_check:
            signature = staging / entry.signature
            try:
                signature.write_bytes(fetch_small(repo.url_of(entry.signature)))
            except Missing:
                raise VzError(
                    ExitCode.BAD_TEMPLATE,
                    f"{entry.archive} has no signature in {repo} ({entry.signature} missing); "
                    "vztmpl-dl --no-gpg-check downloads it unchecked",
                ) from None
        archive = staging / entry.archive
        size = None if entry.precreated else entry.size
        sha256 = _download(repo.url_of(entry.archive), archive, size, f"Downloading {entry.archive}")
        if not entry.precreated and sha256 != entry.sha256:
            raise VzError(
                ExitCode.BAD_TEMPLATE,
                f"{entry.archive}: sha256 {sha256} does not match the repository's (tampered or corrupted)",
            )
        if signature is not None:
            signer = gpg.verify(archive, signature, cache.keyring(paths))
            log.info(f"Signature of {entry.archive} is good (key {signer})")
        if manifest is None:
            manifest = _made_manifest(archive, entry)
        installed = cache.install(paths, entry.name, archive, manifest, signature, move=True)
    except BaseException:
        if not had and cache.find(paths, entry.name) is None:
            # install() writes the manifest and signature before the archive: take them back.
            path_for(cache_dir, entry.name).unlink(missing_ok=True)
            for suffix in cache.SUFFIXES:
                gpg.signature_for(cache_dir / f"{entry.name}{suffix}").unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(f"Template {entry.name} is in the cache ({installed.name})")
    return installed


def _made_manifest(archive: Path, entry: IndexEntry) -> Manifest:
    """A precreated template's manifest, from its own os-release and the repository's name."""
    from pyvz.run import run
    from pyvz.templates.importing import made_manifest

    if run(["tar", "-tf", str(archive)], check=False, timeout=None).returncode != 0:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{entry.archive} is not a readable tar archive")
    manifest = made_manifest(archive, entry.name)
    if manifest.architecture == "unknown":
        manifest = manifest._replace(architecture=entry.architecture)
    return manifest


def fetch(paths: Paths, name: str, gpg_check: bool = True) -> Path:
    """Download `name` from the first configured repository that has it."""
    repos = settings(paths).repos
    found = locate(repos, name)
    if found is None:
        raise not_found(paths, name, repos)
    return install_from(paths, found, gpg_check)
