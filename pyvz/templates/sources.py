"""apt sources for a template build, taken from the host's own apt configuration.

pyvz never names a mirror: it reads the URIs the host already uses (deb822 .sources files
and one-line sources.list entries) and points them at the recipe's suite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError

APT_DIR = Path("/etc/apt")


class Source(NamedTuple):
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str

    @property
    def security(self) -> bool:
        return any(suite.endswith("-security") for suite in self.suites)


def _deb822(text: str) -> list[Source]:
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                Source(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "main").split()),
                    fields.get("signed-by", ""),
                )
            )
    return sources


def _one_line(text: str) -> list[Source]:
    sources = []
    for line in text.splitlines():
        match = re.match(
            r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<comps>.*)$", line
        )
        if match:
            opts = dict(o.split("=", 1) for o in (match.group("opts") or "").split() if "=" in o)
            comps = tuple(match.group("comps").split()) or ("main",)
            sources.append(
                Source(match.group("uri"), (match.group("suite"),), comps, opts.get("signed-by", ""))
            )
    return sources


def host_sources(apt_dir: Path = APT_DIR) -> list[Source]:
    sources: list[Source] = []
    one_line = apt_dir / "sources.list"
    if one_line.is_file():
        sources += _one_line(one_line.read_text())
    directory = apt_dir / "sources.list.d"
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix == ".sources":
                sources += _deb822(path.read_text())
            elif path.suffix == ".list":
                sources += _one_line(path.read_text())
    return sources


def for_suite(suite: str, apt_dir: Path = APT_DIR, security: bool = True) -> str:
    """A deb822 sources file for `suite` (plus -updates and -security) on the host's mirrors."""
    sources = [
        s for s in host_sources(apt_dir) if s.uri.startswith(("http://", "https://", "file:", "mirror+"))
    ]
    main = next((s for s in sources if not s.security), None)
    if main is None:
        raise VzError(
            ExitCode.OSTEMPLATE_NOT_FOUND,
            f"no apt source configured in {apt_dir}: templates are built from the host's own mirror",
        )
    signed_by = f"Signed-By: {main.signed_by}\n" if main.signed_by else ""
    text = f"Types: deb\nURIs: {main.uri}\nSuites: {suite} {suite}-updates\nComponents: main\n{signed_by}"
    secure = next((s for s in sources if s.security), None)
    if security and secure is not None:
        signed_by = f"Signed-By: {secure.signed_by}\n" if secure.signed_by else ""
        text += f"\nTypes: deb\nURIs: {secure.uri}\nSuites: {suite}-security\nComponents: main\n{signed_by}"
    return text
