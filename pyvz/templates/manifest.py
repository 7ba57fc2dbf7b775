"""A template's manifest: what it is and what it holds, next to its archive in the cache.

NAME.manifest.json names the distribution, version and architecture, when it was built, its
packages with versions, and the archive's sha256 and size, so a truncated or swapped archive
is caught before anything is unpacked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError

SUFFIX = ".manifest.json"


class Manifest(NamedTuple):
    name: str
    distribution: str
    version: str
    architecture: str
    build_date: str
    sha256: str
    size: int
    packages: dict[str, str] = {}
    recipe: str = ""
    recipe_sha256: str = ""  # the recipe's text it was built from (create --recipe reuses a match)

    def to_json(self) -> str:
        return json.dumps(self._asdict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Manifest:
        try:
            data: dict[str, Any] = json.loads(text)
            fields = {key: data[key] for key in cls._fields if key in data}
            manifest = cls(**fields)
        except (ValueError, TypeError) as err:
            raise VzError(ExitCode.BAD_TEMPLATE, f"{source}: not a valid template manifest ({err})") from None
        if not isinstance(manifest.sha256, str) or len(manifest.sha256) != 64:
            raise VzError(ExitCode.BAD_TEMPLATE, f"{source}: manifest has no valid sha256")
        return manifest


def path_for(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}{SUFFIX}"


def load(path: Path) -> Manifest | None:
    try:
        return Manifest.from_json(path.read_text(), str(path))
    except FileNotFoundError:
        return None


def save(path: Path, manifest: Manifest) -> None:
    write_atomic(path, manifest.to_json())


def sha256_file(path: Path) -> str:
    import hashlib  # not needed by vzctl start, which reads manifests

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_archive(archive: Path, manifest: Manifest) -> None:
    """The archive is the one the manifest describes: same size, same sha256."""
    size = archive.stat().st_size
    if size != manifest.size:
        raise VzError(
            ExitCode.BAD_TEMPLATE,
            f"{archive.name} is {size} bytes, its manifest says {manifest.size} (truncated or replaced)",
        )
    actual = sha256_file(archive)
    if actual != manifest.sha256:
        raise VzError(ExitCode.BAD_TEMPLATE, f"{archive.name}: sha256 {actual} does not match its manifest")
