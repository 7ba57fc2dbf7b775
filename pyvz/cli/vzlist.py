"""vzlist: list containers, with vzlist 4.11's options, columns, exit codes and JSON.

The options are read as vzlist reads them (getopt_long: bundled, permuted, in order), so
the last of -o, -n and -1 wins, -s takes `-FIELD`, and -L answers at once.
"""

from __future__ import annotations

import getopt
import re
import sys
from typing import TYPE_CHECKING

from pyvz.cli.common import exit_now, run_tool
from pyvz.errors import VzError

if TYPE_CHECKING:
    from pyvz.listing_fields import Field

_SHORT = "HtSanjN:h:d:o:s:Le1"
_LONG = [
    "no-header",
    "no-trim",
    "stopped",
    "all",
    "name",
    "json",
    "name_filter=",
    "hostname=",
    "description=",
    "output=",
    "sort=",
    "list",
    "help",
    "cluster",
]
_LONG_TO_SHORT = {
    "--no-header": "-H",
    "--no-trim": "-t",
    "--stopped": "-S",
    "--all": "-a",
    "--name": "-n",
    "--json": "-j",
    "--name_filter": "-N",
    "--hostname": "-h",
    "--description": "-d",
    "--output": "-o",
    "--sort": "-s",
    "--list": "-L",
    "--help": "-e",
}
USAGE = """\
usage: vzlist [-a | -S] [-n] [-H] [-t] [-j] [-o FIELD[,FIELD...] | -1] [-s [-]FIELD]
              [-h PATTERN] [-N PATTERN] [-d PATTERN] [CTID|NAME ...]
       vzlist -L | --list

  -a, --all                 all CTs (default: the running ones)
  -S, --stopped             the CTs that are not running
  -n, --name                SMARTNAME (the name, else the CTID) in the first column
  -H, --no-header           no header line
  -t, --no-trim             do not cut long values to their column
  -j, --json                JSON (every field unless -o names some)
  -o, --output FIELDS       these fields (vzlist -L lists them)
  -1                        CTIDs only: -H -o veid
  -s, --sort [-]FIELD       sort by FIELD; a leading - reverses
  -h, --hostname PATTERN    CTs whose hostname matches a shell pattern
  -N, --name_filter PATTERN CTs whose name matches
  -d, --description PATTERN CTs whose description matches
  -L, --list                the fields and their headers
      --cluster             every host's CTs, with a HOST column (pyvz: a cluster's hosts,
                            as their agents last published them; fields: ctid, name,
                            smart_name, hostname, ip, status, numproc)
"""


def _option_error(err: getopt.GetoptError) -> str:
    """getopt_long's wording (glibc), which scripts may match."""
    opt = err.opt
    long = len(opt) > 1
    if "requires argument" in err.msg:
        return (
            f"vzlist: option '--{opt}' requires an argument"
            if long
            else f"vzlist: option requires an argument -- '{opt}'"
        )
    if "not a unique prefix" in err.msg:
        return f"vzlist: option '--{opt}' is ambiguous"
    if "must not have an argument" in err.msg:
        return f"vzlist: option '--{opt}' doesn't allow an argument"
    return f"vzlist: unrecognized option '--{opt}'" if long else f"vzlist: invalid option -- '{opt}'"


def _ctid(text: str) -> int | None:
    """A CTID as vzlist reads one: a non-zero number, else a name from names/."""
    from pyvz.config import name_owner
    from pyvz.paths import Paths

    match = re.fullmatch(r"\s*([+-]?\d+)", text)
    if match and int(match.group(1)) != 0:
        ctid = int(match.group(1))
    elif "/" in text or not text:
        return None
    else:
        ctid = name_owner(Paths.from_env(), text) or -1
    return ctid if 0 <= ctid <= 2**31 - 1 else None


def dispatch(argv: list[str]) -> int:
    try:
        options, arguments = getopt.gnu_getopt(argv, _SHORT, _LONG)
    except getopt.GetoptError as err:
        print(_option_error(err), file=sys.stderr)
        return 1
    from pyvz.listing_output import field_names, sort_field

    output: str | None = None
    show_header, trim, every, stopped, as_json, cluster = True, True, False, False, False, False
    patterns: dict[str, str] = {}
    sort: tuple[Field, bool] | None = None
    for option, value in options:
        option = _LONG_TO_SHORT.get(option, option)
        if option == "-L":
            print("\n".join(field_names()))
            return 0
        if option == "-e":
            print(USAGE, end="")
            return 1  # vzlist 4.11 ends --help as it ends a bad option
        if option == "-s":
            try:
                sort = sort_field(value)
            except VzError as err:
                print(err.message, file=sys.stderr)
                return 1
        elif option in ("-h", "-N", "-d"):
            patterns[option] = value
        elif option == "-o":
            output = value
        elif option == "-1":
            output, show_header = "veid", False
        elif option == "-n":
            output = "smart_name,numproc,status,ip,hostname"
        elif option == "--cluster":
            cluster = True
        else:
            show_header &= option != "-H"
            trim &= option != "-t"
            every |= option == "-a"
            stopped |= option == "-S"
            as_json |= option == "-j"
    wanted: list[int] | None = None
    if arguments:
        wanted = []
        for text in arguments:
            ctid = _ctid(text)
            if ctid is None:
                print(f"CT ID {text} is invalid.", file=sys.stderr)
                return 1
            wanted.append(ctid)
    if cluster:
        return _list_cluster(output, as_json, show_header, trim, every, stopped, wanted, sort, patterns)
    return _list(output, as_json, show_header, trim, every, stopped, wanted, sort, patterns)


def _matches(patterns: dict[str, str], texts: dict[str, str | None]) -> bool:
    """-h/-N/-d: every pattern given matches its text (a CT without that text never does)."""
    from pyvz.listing import glob_match

    return all(texts.get(o) is not None and glob_match(p, texts[o] or "") for o, p in patterns.items())


def _list_cluster(
    output: str | None,
    as_json: bool,
    show_header: bool,
    trim: bool,
    every: bool,
    stopped: bool,
    wanted: list[int] | None,
    sort: tuple[Field, bool] | None,
    patterns: dict[str, str],
) -> int:
    """vzlist --cluster: the agents' publications, filtered and shown as vzlist shows CTs,
    with the host first."""
    import json

    from pyvz.cluster.clusterlist import check_fields, cluster_cts
    from pyvz.errors import ExitCode
    from pyvz.listing_fields import DEFAULT_FIELDS
    from pyvz.listing_output import header, ordered, parse_fields, row
    from pyvz.paths import Paths

    try:
        if "-d" in patterns:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                "--cluster cannot filter by description: the agents do not publish it",
            )
        fields = parse_fields(output if output is not None else ",".join(DEFAULT_FIELDS), as_json)
        check_fields([f.name for f in fields] + ([sort[0].name] if sort is not None else []))
        found = cluster_cts(Paths.from_env())
    except VzError as err:
        print(err.message, file=sys.stderr)
        return int(err.code) if err.code >= 100 else 1
    shown = []
    for ct in found:
        if wanted is not None and ct.ctid not in wanted:
            continue
        if (stopped and ct.running) or not (every or stopped or wanted is not None or ct.running):
            continue
        if _matches(patterns, {"-h": ct.raw("HOSTNAME"), "-N": ct.name}):
            shown.append(ct)
    if sort is not None:
        shown = ordered(shown, *sort)  # type: ignore[arg-type,assignment]
    if as_json:
        entries = [ct.as_json() for ct in shown]
        if output is not None:
            names = {"host", *(f.name for f in fields)}
            entries = [{k: v for k, v in e.items() if k in names} for e in entries]
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    if not shown and wanted is not None:
        print("Container(s) not found", file=sys.stderr)
        return 1
    width = max([len("HOST"), *(len(ct.host) for ct in shown)])
    lines = [f"{'HOST':<{width}} {header(fields)}"] if show_header else []
    lines += [f"{ct.host:<{width}} {row(fields, ct, trim)}" for ct in shown]  # type: ignore[arg-type]
    if lines:
        print("\n".join(line.rstrip() for line in lines))
    return 0


def _list(
    output: str | None,
    as_json: bool,
    show_header: bool,
    trim: bool,
    every: bool,
    stopped: bool,
    wanted: list[int] | None,
    sort: tuple[Field, bool] | None,
    patterns: dict[str, str],
) -> int:
    from pyvz.host import Host
    from pyvz.listing import collect, ubc_names
    from pyvz.listing_fields import DEFAULT_FIELDS, FIELDS
    from pyvz.listing_output import header, json_lines, ordered, parse_fields, row

    fields: list[Field] | None
    try:
        if output is None and as_json:
            fields = None
        else:
            fields = parse_fields(output if output is not None else ",".join(DEFAULT_FIELDS), as_json)
    except VzError as err:
        print(err.message, file=sys.stderr)
        return 1
    names = [f.name for f in fields] if fields is not None else list(FIELDS)
    sort_by, reverse = sort if sort is not None else (None, False)
    if sort_by is not None:
        names.append(sort_by.name)
    found = collect(Host(), wanted, every, stopped, ubc_names(names))
    if not found:
        if as_json:
            print("[]")
        else:
            print("Container(s) not found", file=sys.stderr)
        # vzlist 4.11: an error only when CTs were named (its bug #2149)
        return 1 if wanted is not None else 0
    shown = []
    for record in found:
        if record.status is None or (stopped and record.running):
            continue
        if _matches(
            patterns, {"-h": record.raw("HOSTNAME"), "-N": record.name, "-d": record.raw("DESCRIPTION")}
        ):
            shown.append(record)
    shown = ordered(shown, sort_by, reverse)
    if as_json:
        print(json_lines(fields, shown), end="")
        return 0
    assert fields is not None
    lines = [header(fields)] if show_header else []
    lines += [row(fields, record, trim) for record in shown]
    if lines:
        print("\n".join(lines))
    return 0


def main() -> None:
    exit_now(run_tool("vzlist", dispatch))


if __name__ == "__main__":
    main()
