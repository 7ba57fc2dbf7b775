"""Template recipes: a small declarative TOML file per template.

A recipe names the distribution, suite and architecture, the variant and packages, files to
add or overwrite (`[files]`) or to add lines to (`[append]`), commands to run in the new
system (`post_install`) and systemd units to mask (`mask`). The template is named after the
file. Recipes are looked up as a path, then in $ROOT/etc/vz/recipes/, then among those that
ship with pyvz. Everything is checked before anything is built.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths

BUILT_IN = Path(__file__).parent / "recipes"
VARIANTS = ("minbase", "buildd", "important", "required", "standard")


class Recipe(NamedTuple):
    name: str
    distribution: str
    version: str
    suite: str
    architecture: str
    variant: str
    packages: tuple[str, ...]
    files: dict[str, str]
    append: dict[str, str]
    post_install: tuple[str, ...]
    mask: tuple[str, ...]
    source: Path


_FIELDS: dict[str, tuple[type, bool]] = {  # key: (type, required)
    "distribution": (str, True),
    "version": (str, True),
    "suite": (str, True),
    "architecture": (str, True),
    "variant": (str, False),
    "packages": (list, False),
    "files": (dict, False),
    "append": (dict, False),
    "post_install": (list, False),
    "mask": (list, False),
}


def _bad(source: Path, message: str) -> VzError:
    return VzError(ExitCode.INVALID_CONFIG, f"recipe {source}: {message}")


def find(paths: Paths, name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    for directory in (paths.etc_vz / "recipes", BUILT_IN):
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = sorted(
        {p.stem for d in (paths.etc_vz / "recipes", BUILT_IN) if d.is_dir() for p in d.glob("*.toml")}
    )
    raise VzError(
        ExitCode.OSTEMPLATE_NOT_FOUND, f"no recipe {name_or_path!r} (known: {', '.join(known) or 'none'})"
    )


def _strings(source: Path, key: str, value: list[Any], pattern: str) -> tuple[str, ...]:
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(pattern, item):
            raise _bad(source, f"{key}: {item!r} is not valid")
    return tuple(value)


def _file_map(source: Path, key: str, value: dict[str, Any]) -> dict[str, str]:
    for target, content in value.items():
        if not isinstance(content, str) or not target.startswith("/") or ".." in target.split("/"):
            raise _bad(source, f"[{key}] {target!r}: needs an absolute path and a text value")
    return dict(value)


def load(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise _bad(path, f"syntax error: {err}") from None
    except OSError as err:
        raise _bad(path, err.strerror or str(err)) from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _bad(path, f"unknown key {unknown[0]!r} (known: {', '.join(_FIELDS)})")
    for key, (kind, required) in _FIELDS.items():
        if required and key not in data:
            raise _bad(path, f"missing {key!r}")
        if key in data and not isinstance(data[key], kind):
            raise _bad(path, f"{key!r} must be a {kind.__name__}")
    variant = data.get("variant", "minbase")
    if variant not in VARIANTS:
        raise _bad(path, f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    for key in ("distribution", "suite", "architecture", "version"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+_-]*", data[key]):
            raise _bad(path, f"{key} {data[key]!r} is not valid")
    return Recipe(
        name=path.stem,
        distribution=data["distribution"],
        version=data["version"],
        suite=data["suite"],
        architecture=data["architecture"],
        variant=variant,
        # Debian package names (policy 5.6.1), optionally with =version or :arch.
        packages=_strings(
            path, "packages", data.get("packages", []), r"[a-z0-9][a-z0-9+.-]+([:=][\w.+~:-]+)?"
        ),
        files=_file_map(path, "files", data.get("files", {})),
        append=_file_map(path, "append", data.get("append", {})),
        post_install=_strings(path, "post_install", data.get("post_install", []), r"(?s).+"),
        mask=_strings(
            path, "mask", data.get("mask", []), r"[\w@:.\\-]+\.(service|mount|socket|timer|target|path)"
        ),
        source=path,
    )
