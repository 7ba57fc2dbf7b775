"""vzlist: list containers, with vzlist's options, columns and JSON."""

from __future__ import annotations

import fnmatch
import json
import sys

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vzlist", description="List containers.", add_help=False)
    parser.add_argument("--help", action="help", help="show this help")
    parser.add_argument("-a", "--all", action="store_true", help="list all CTs, not only running ones")
    parser.add_argument("-S", "--stopped", action="store_true", help="list only stopped CTs")
    parser.add_argument("-n", "--name", action="store_true", help="show NAME instead of HOSTNAME")
    parser.add_argument("-H", "--no-header", action="store_true", help="no header line")
    parser.add_argument("-t", "--no-trim", action="store_true", help="do not cut long values")
    parser.add_argument("-o", "--output", metavar="FIELDS", help="comma-separated fields (see -L)")
    parser.add_argument("-s", "--sort", metavar="[-]FIELD", help="sort by a field; '-' reverses")
    parser.add_argument("-1", "--ctid-only", dest="ctid_only", action="store_true", help="print CTIDs only")
    parser.add_argument("-j", "--json", action="store_true", help="JSON output")
    parser.add_argument("-N", "--name_filter", metavar="PATTERN", help="only CTs whose name matches")
    parser.add_argument("-h", "--hostname", metavar="PATTERN", help="only CTs whose hostname matches")
    parser.add_argument("-L", "--list", action="store_true", help="list the available fields")
    parser.add_argument("ctids", nargs="*", metavar="CTID", help="CT ids or names")
    return parser


def _row(values: list[str], widths: list[tuple[int, bool]], trim: bool) -> str:
    cells = []
    for index, (text, (width, right)) in enumerate(zip(values, widths, strict=True)):
        last = index == len(values) - 1
        if width and trim and not last and len(text) > width:
            text = text[:width]
        if last and not right:
            cells.append(text)
        else:
            cells.append(text.rjust(width) if right else text.ljust(width))
    return " ".join(cells).rstrip()


def _join_sort(argv: list[str]) -> list[str]:
    """`-s -ctid` means "sort by ctid, reversed"; argparse would take -ctid for an option."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word in ("-s", "--sort"):
            value = next(words, None)
            joined.append(f"--sort={value}" if value is not None else word)
        else:
            joined.append(word)
    return joined


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(_join_sort(argv))
    from pyvz.config import resolve_ctid
    from pyvz.host import Host
    from pyvz.listing import DEFAULT_FIELDS, FIELDS, records, ubc_names

    if ns.list:
        print("\n".join(sorted(FIELDS)))
        return 0
    host = Host()
    wanted = [resolve_ctid(host.paths, text) for text in ns.ctids] if ns.ctids else None
    names = ns.output.split(",") if ns.output else list(DEFAULT_FIELDS)
    if ns.json and not ns.output:
        names = [n for n in FIELDS if n != "veid"]  # vzlist -j prints every field
    if ns.name and not ns.output:
        names[names.index("hostname")] = "name"
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"unknown field {unknown[0]!r} (vzlist -L lists them)"
        )
    fields = [FIELDS[n] for n in names]

    chosen = records(host, wanted, ubc_names(names))
    if wanted is not None:
        chosen = [r for r in chosen if r.config is not None]  # only CTs that exist
    if not ns.all and wanted is None:
        chosen = [r for r in chosen if (not r.running) == bool(ns.stopped)]
    if not chosen:  # as vzlist: nothing to list is exit 1, said instead of a header
        if ns.json:
            print("[]")
        else:
            print("Container(s) not found", file=sys.stderr)
        return 1
    # -N and -h only hide rows (vzlist: the header stays, and the exit is 0).
    if ns.name_filter:
        chosen = [r for r in chosen if fnmatch.fnmatchcase(r.raw("NAME") or "", ns.name_filter)]
    if ns.hostname:
        chosen = [r for r in chosen if fnmatch.fnmatchcase(r.raw("HOSTNAME") or "", ns.hostname)]
    if ns.sort:
        key = ns.sort.lstrip("-")
        if key not in FIELDS:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"unknown sort field {key!r} (vzlist -L lists them)"
            )
        getter = FIELDS[key].get
        chosen.sort(
            key=lambda r: (getter(r) is None, str(getter(r)) if not isinstance(getter(r), int) else getter(r))
        )
        if ns.sort.startswith("-"):
            chosen.reverse()

    if ns.json:
        print(json.dumps([{f.name: f.get(r) for f in fields} for r in chosen], indent=2))
        return 0
    if ns.ctid_only:
        for record in chosen:
            print(str(record.ctid).rjust(10))
        return 0
    rows = [[f.text(f.get(record)) for f in fields] for record in chosen]
    # Columns without a fixed width are as wide as their widest value.
    widths = [
        (f.width or max([len(f.header)] + [len(row[i]) for row in rows]), f.right)
        for i, f in enumerate(fields)
    ]
    if not ns.no_header:
        print(_row([f.header for f in fields], widths, False))
    for row in rows:
        print(_row(row, widths, not ns.no_trim))
    return 0


def main() -> None:
    exit_now(run_tool("vzlist", dispatch))


if __name__ == "__main__":
    main()
