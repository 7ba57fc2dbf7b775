"""OpenVZ-format config files (vz.conf, CTID.conf, samples) and the names/ links.

Files are edited line by line so comments, ordering and keys pyvz does not know survive
every write; writes are atomic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, TypeVar

from pyvz.atomic import symlink_atomic, write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.params import Param, parse_ctid, parse_name
from pyvz.paths import Paths

T = TypeVar("T")

_LINE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$")
_VEID_RE = re.compile(r"\$(?:VEID\b|\{VEID\}|CTID\b|\{CTID\})")


def _unquote(raw: str) -> str | None:
    """The value of the text after `KEY=`, None if it is malformed (an unclosed quote).

    As the shell reads it where the two agree: quotes ('...', "..." with \\ escapes)
    are removed, and `#` after a blank starts a comment (OpenVZ's stock vz.conf has
    `NAMESERVER=inherit # Copy from host system's /etc/resolv.conf`). As vzctl reads it
    where a shell would not: the rest of an unquoted line is the value, blanks included."""
    if raw[:1] == '"' and raw.find('"', 1) == len(raw) - 1 and "\\" not in raw:
        return raw[1:-1]  # "plain": how pyvz and vzctl write every value
    out: list[str] = []
    at = 0
    while at < len(raw):
        char = raw[at]
        if char == "'":
            end = raw.find("'", at + 1)
            if end < 0:
                return None
            out.append(raw[at + 1 : end])
            at = end + 1
        elif char == '"':
            at += 1
            while at < len(raw) and raw[at] != '"':
                if raw[at] == "\\" and raw[at + 1 : at + 2] in ('"', "\\", "$", "`"):
                    at += 1
                out.append(raw[at])
                at += 1
            if at >= len(raw):
                return None
            at += 1
        elif char.isspace():
            rest = raw[at:].lstrip()
            if not rest or rest.startswith("#"):
                break
            out.append(char)
            at += 1
        else:
            out.append(char)
            at += 1
    return "".join(out)


def _quote(value: str) -> str:
    # Action scripts source these files: escape what a shell would expand, except $VEID,
    # which OpenVZ configs rely on being expanded.
    escaped = re.sub(r'(["\\`])', r"\\\1", value)
    escaped = re.sub(r"\$(?!VEID\b|\{VEID\}|CTID\b|\{CTID\})", r"\\$", escaped)
    return '"' + escaped + '"'


class _Line:
    __slots__ = ("key", "raw", "value")

    def __init__(self, raw: str, key: str | None = None, value: str | None = None) -> None:
        self.raw = raw
        self.key = key
        self.value = value  # unquoted once, when read or set: listings read every CT's config


class ConfigFile:
    """One KEY="value" file, kept as lines."""

    def __init__(self, path: Path, lines: list[_Line] | None = None) -> None:
        self.path = path
        self.lines = lines or []

    @classmethod
    def parse(cls, text: str, path: Path) -> ConfigFile:
        lines: list[_Line] = []
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                lines.append(_Line(raw))
                continue
            match = _LINE_RE.match(raw)
            value = _unquote(match.group(2)) if match else None
            if not match or value is None:
                raise VzError(
                    ExitCode.INVALID_CONFIG,
                    f'{path}:{number}: malformed line {raw.strip()!r} (expected KEY="value")',
                )
            lines.append(_Line(raw, match.group(1), value))
        return cls(path, lines)

    @classmethod
    def load(cls, path: Path, missing: ExitCode = ExitCode.NO_CT_CONFIG) -> ConfigFile:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise VzError(missing, f"config file {path} not found") from None
        return cls.parse(text, path)

    @staticmethod
    def peek(path: Path, key: str) -> str | None:
        """One key's value, read without parsing the whole file: create looks for LOCAL_UID
        in every CT's config, and at 2000 CTs a full parse of each was half its time. The
        last assignment wins, as in get(); None when the key is unset, its value malformed,
        or the file unreadable (another CT's broken config must not stop a create)."""
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return None
        found = None
        for match in re.finditer(rf"(?m)^[ \t]*{re.escape(key)}=(.*?)[ \t\r]*$", text):
            found = _unquote(match.group(1))
        return found

    def get(self, key: str) -> str | None:
        for line in reversed(self.lines):
            if line.key == key:
                return line.value
        return None

    def set(self, key: str, value: str) -> None:
        if "\n" in value or "\r" in value:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{key}: a value cannot span lines")
        rendered = f"{key}={_quote(value)}"
        for line in reversed(self.lines):
            if line.key == key:
                line.raw, line.value = rendered, value
                return
        self.lines.append(_Line(rendered, key, value))

    def remove(self, key: str) -> None:
        self.lines = [line for line in self.lines if line.key != key]

    def items(self) -> dict[str, str]:
        """Every key with its value, in the order keys first appear; a key set twice has its
        last value, as get() gives. One pass: vzlist and the API read every CT's config."""
        result: dict[str, str] = {}
        for key, value in self.assignments():
            result[key] = value
        return result

    def assignments(self) -> list[tuple[str, str]]:
        """Every KEY=value line in order, repeats included (for files a shell sources,
        where a later line may build on an earlier one)."""
        return [(line.key, line.value) for line in self.lines if line.key and line.value is not None]

    def render(self) -> str:
        return "".join(line.raw + "\n" for line in self.lines)

    def write(self, path: Path | None = None) -> None:
        target = path or self.path
        try:
            write_atomic(target, self.render())
        except OSError as err:
            raise VzError(ExitCode.CONFIG_SAVE_ERROR, f"cannot save {target}: {err.strerror}") from None


def substitute_veid(value: str, ctid: int) -> str:
    return _VEID_RE.sub(str(ctid), value)


class CtConfig(NamedTuple):
    """A CT's effective settings: vz.conf defaults overlaid by CTID.conf, $VEID expanded."""

    ctid: int
    values: Mapping[str, str]
    source: Path

    @classmethod
    def merge(
        cls, ctid: int, global_conf: Mapping[str, str], ct_conf: Mapping[str, str], source: Path
    ) -> CtConfig:
        merged = {k: substitute_veid(v, ctid) for k, v in {**global_conf, **ct_conf}.items()}
        return cls(ctid, merged, source)

    def raw(self, key: str) -> str | None:
        return self.values.get(key)

    def get(self, param: Param[T]) -> T | None:
        assert param.key, f"{param.name} is not stored in configs"
        text = self.values.get(param.key)
        if text is None or text == "":
            return param.default  # type: ignore[no-any-return]
        try:
            return param.parse(text)
        except VzError as err:
            raise VzError(ExitCode.INVALID_CONFIG, f"{self.source}: {param.key}: {err}") from None

    def require(self, param: Param[T], code: ExitCode) -> T:
        value = self.get(param)
        if value is None:
            raise VzError(code, f"{param.key} is not set in {self.source} nor in vz.conf")
        return value


def load_global(paths: Paths) -> ConfigFile:
    return ConfigFile.load(paths.vz_conf, missing=ExitCode.NO_GLOBAL_CONFIG)


def ct_config(paths: Paths, global_conf: ConfigFile, ct_conf: ConfigFile, ctid: int) -> CtConfig:
    return CtConfig.merge(ctid, global_conf.items(), ct_conf.items(), ct_conf.path)


# ---- names/ -----------------------------------------------------------------------------


def name_owner(paths: Paths, name: str) -> int | None:
    """The CTID whose names/NAME link points at an existing config, if any."""
    link = paths.name_link(name)
    try:
        target = os.readlink(link)
    except OSError:
        return None
    match = re.fullmatch(r"(\d+)\.conf", Path(target).name)
    if not match or not (paths.conf_dir / Path(target).name).exists():
        return None
    return int(match.group(1))


def set_name_link(paths: Paths, name: str, ctid: int) -> None:
    paths.names_dir.mkdir(parents=True, exist_ok=True)
    symlink_atomic(f"../conf/{ctid}.conf", paths.name_link(name))


def remove_name_link(paths: Paths, name: str, ctid: int) -> None:
    """Remove names/NAME only while it still points at this CT (never someone else's)."""
    link = paths.name_link(name)
    try:
        target = os.readlink(link)
    except OSError:
        return
    if Path(target).name == f"{ctid}.conf":
        link.unlink(missing_ok=True)


def remove_name_links_to(paths: Paths, ctid: int) -> None:
    """Remove every names/ link that points at this CT (its NAME may be long gone)."""
    try:
        entries = os.listdir(paths.names_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        remove_name_link(paths, entry, ctid)


def resolve_ctid(paths: Paths, text: str) -> int:
    """A CTID from a number or a CT name, as vzctl accepts either."""
    if text.isascii() and text.isdigit():
        return parse_ctid(text)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid CTID or name: {text!r}")
    parse_name(text)
    owner = name_owner(paths, text)
    if owner is None:
        raise VzError(ExitCode.NO_CT_CONFIG, f"CT {text!r} not found: no CTID or name matches")
    return owner


def existing_ctids(paths: Paths) -> Iterator[int]:
    try:
        entries = os.listdir(paths.conf_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        match = re.fullmatch(r"(\d+)\.conf", entry)
        if match and int(match.group(1)) > 100:
            yield int(match.group(1))
