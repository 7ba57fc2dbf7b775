"""vztmpl-dl: list and download OS templates from the repositories in download.conf."""

from __future__ import annotations

import argparse

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.paths import Paths
from pyvz.templates import download
from pyvz.units import human_size


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vztmpl-dl",
        description="Download OS templates from the repositories in download.conf "
        "(see docs/template-repository.md).",
    )
    parser.add_argument("--list-remote", action="store_true", help="list the templates the repositories have")
    parser.add_argument("--list-local", action="store_true", help="list the templates in the cache")
    parser.add_argument(
        "--list-orphans", action="store_true", help="list cached templates that no repository has"
    )
    parser.add_argument(
        "--list-all", action="store_true", help="list the templates in the cache and the repositories"
    )
    parser.add_argument("--config", action="store_true", help="show the configuration in use")
    parser.add_argument(
        "--update",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="download these templates again if the repository has a different build",
    )
    parser.add_argument("--update-all", action="store_true", help="--update every template in the cache")
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--gpg-check", dest="gpg_check", action="store_true", default=None, help="check signatures (default)"
    )
    check.add_argument(
        "--no-gpg-check", dest="gpg_check", action="store_false", help="do NOT check signatures (unsafe)"
    )
    parser.add_argument("-H", "--no-header", action="store_true", help="no header line in listings")
    parser.add_argument("--quiet", action="store_true", help="print errors and warnings only")
    parser.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("names", nargs="*", metavar="NAME", help="download these templates if missing")
    return parser


def _print_table(rows: list[list[str]], header: list[str] | None) -> None:
    table = ([header] if header else []) + rows
    if not table:
        return
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [
            text.rjust(width) if i == 3 else text.ljust(width)
            for i, (text, width) in enumerate(zip(row, widths, strict=True))
        ]
        print(" ".join(cells).rstrip())


def _size(size: int) -> str:
    return human_size(size) if size >= 0 else "-"  # a directory of precreated templates may not say


def _show_config(conf: download.Settings, paths: Paths) -> None:
    from pyvz.templates import cache

    keyring = cache.keyring(paths)
    print(f"Configuration file: {conf.source}" + ("" if conf.source.exists() else " (absent: defaults)"))
    print(f"Template cache: {paths.template_cache}")
    print(f"Check signatures (GPG_CHECK): {'yes' if conf.gpg_check else 'no'}")
    if conf.unused:
        print(f"OpenVZ vztmpl-dl settings not used by pyvz: {', '.join(conf.unused)}")
    print(f"Trusted keyring (KEYRING): {keyring}" + ("" if keyring.exists() else " (absent)"))
    print("Repositories, first listing a template wins (TEMPLATE_REPOS):")
    for repo in conf.repos:
        print(f"  {repo.name} {repo.url}")
    if not conf.repos:
        print("  (none)")


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.host import Host
    from pyvz.templates import cache

    host = Host()
    paths = host.paths
    conf = download.settings(paths)
    if ns.config:
        _show_config(conf, paths)
        return 0
    updates: list[str] = list(ns.update)
    names: list[str] = list(ns.names)
    listing = ns.list_remote or ns.list_local or ns.list_orphans or ns.list_all
    if not (listing or updates or ns.update_all or names):
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX,
            "nothing to do: give template names, --update, --update-all, --config or a --list option "
            "(see vztmpl-dl --help)",
        )
    needs_repos = ns.list_remote or ns.list_orphans or updates or ns.update_all or names
    if ns.list_all and not conf.repos:
        log.info(f"no template repository is configured (TEMPLATE_REPOS in {conf.source}): cache only")
    needs_repos = needs_repos or (ns.list_all and conf.repos)
    if needs_repos and not conf.repos:
        raise VzError(
            ExitCode.INVALID_CONFIG,
            f"no template repository is configured: set TEMPLATE_REPOS in {conf.source}",
        )
    from pyvz.params import parse_template_name

    for name in names + updates:
        parse_template_name(name)
    gpg_check = conf.gpg_check if ns.gpg_check is None else bool(ns.gpg_check)
    if not gpg_check and (names or updates or ns.update_all):
        why = "--no-gpg-check" if ns.gpg_check is False else f"GPG_CHECK=no in {conf.source}"
        log.warning(
            f"template signatures are NOT checked ({why}): "
            "whoever can alter the download can put anything into your CTs"
        )

    header = None if ns.no_header else ["NAME", "DISTRIBUTION", "ARCH", "SIZE", "BUILT", "REPOSITORY"]
    remote: dict[str, download.Found] = {}  # first repository wins, as for downloads
    if needs_repos:
        for repo in conf.repos:
            for entry in download.remote_index(repo):
                remote.setdefault(entry.name, download.Found(repo, entry))
    local = {entry.name: entry for entry in cache.entries(paths)}

    if ns.list_remote:
        rows = [
            [
                f.entry.name,
                f"{f.entry.distribution} {f.entry.version}",
                f.entry.architecture,
                _size(f.entry.size),
                f.entry.build_date,
                f.repo.name,
            ]
            for f in sorted(remote.values(), key=lambda f: f.entry.name)
        ]
        _print_table(rows, header)
    if ns.list_local or ns.list_orphans:
        chosen = [
            e for e in local.values() if ns.list_local or (e.name not in remote and e.name != cache.EMBEDDED)
        ]
        rows = []
        for item in chosen:
            manifest = item.manifest
            rows.append(
                [
                    item.name,
                    f"{manifest.distribution} {manifest.version}" if manifest else "-",
                    manifest.architecture if manifest else "-",
                    human_size(item.archive.stat().st_size),
                    manifest.build_date if manifest else "-",
                    "signed" if item.signed else "unsigned",
                ]
            )
        _print_table(rows, header and [*header[:5], "SIGNATURE"])
    if ns.list_all:
        rows = []
        for name in sorted(set(local) | set(remote)):
            cached, found = local.get(name), remote.get(name)
            manifest = cached.manifest if cached is not None else None
            where = ", ".join(
                (["cache"] if cached is not None else []) + ([found.repo.name] if found is not None else [])
            )
            if manifest is not None:
                kind = (f"{manifest.distribution} {manifest.version}", manifest.architecture)
                built = manifest.build_date
            elif found is not None:
                kind = (f"{found.entry.distribution} {found.entry.version}", found.entry.architecture)
                built = found.entry.build_date
            else:
                kind, built = ("-", "-"), "-"
            size = cached.archive.stat().st_size if cached is not None else found.entry.size if found else -1
            rows.append([name, *kind, _size(size), built, where])
        _print_table(rows, header and [*header[:5], "WHERE"])

    if ns.update_all:
        for name in local:
            if name not in remote:
                log.info(f"Template {name} is in no repository; left as it is")
            elif name not in updates:
                updates.append(name)
    if not (names or updates):
        return 0
    with host.root_lock():  # the cache is shared with vzctl create
        for name in names:
            if cache.find(paths, name) is not None:
                log.info(f"Template {name} is already in the cache (use --update to refresh it)")
                continue
            if name not in remote:
                raise download.not_found(paths, name, conf.repos)
            download.install_from(paths, remote[name], gpg_check)
        for name in updates:
            if name not in remote:
                raise download.not_found(paths, name, conf.repos)
            cached = local.get(name)
            current = cached.manifest.sha256 if cached is not None and cached.manifest is not None else None
            if current == remote[name].entry.sha256:
                log.info(f"Template {name} is up to date")
                continue
            download.install_from(paths, remote[name], gpg_check)
    return 0


def main() -> None:
    exit_now(run_tool("vztmpl-dl", dispatch))


if __name__ == "__main__":
    main()
