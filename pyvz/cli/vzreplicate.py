"""vzreplicate: keep replicas of CTs on standby hosts (docs/replication.md).

vzreplicate run CT [HOST...] [--ssh=OPTIONS]   one run now (default: the CT's REPLICATE hosts)
vzreplicate run --due [--ssh=OPTIONS]          every CT whose REPLICATE_INTERVAL has passed
vzreplicate status [CT] [-H] [-j]              this host's CTs: one row per CT and standby
vzreplicate list [-H] [-j]                     the replicas this host holds of other hosts' CTs
vzreplicate remove CT [HOST] [--ssh=OPTIONS]   with HOST: drop CT's replica there (from the
                                               source); without: drop the replica held here

Exit codes are vzctl's.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

from pyvz.cli.common import exit_now, run_tool
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.log import log
from pyvz.units import human_age, human_size

if TYPE_CHECKING:
    from pyvz.cli.parser import ArgumentParser
    from pyvz.host import Host

# The migration transport's codes (migrate/) onto vzctl's.
_EXIT: dict[MigrateExit, ExitCode] = {
    MigrateExit.USAGE: ExitCode.INVALID_PARAMETER_VALUE,
    MigrateExit.CONNECT: ExitCode.SYSTEM_ERROR,
    MigrateExit.COPY: ExitCode.SYSTEM_ERROR,
    MigrateExit.EXISTS: ExitCode.PRIVATE_EXISTS,
    MigrateExit.NOTEXIST: ExitCode.NO_CT_CONFIG,
    MigrateExit.IP_INUSE: ExitCode.IP_INUSE,
    MigrateExit.APPLY_CONFIG: ExitCode.INVALID_CONFIG,
    MigrateExit.LOCKED: ExitCode.LOCKED,
}


def _code(code: ExitCode | MigrateExit | None) -> int:
    if isinstance(code, MigrateExit):
        return int(_EXIT.get(code, ExitCode.SYSTEM_ERROR))
    return int(code or ExitCode.SYSTEM_ERROR)


def _parser() -> ArgumentParser:
    from pyvz.cli.parser import ArgumentParser

    parser = ArgumentParser(prog="vzreplicate", description="Keep replicas of CTs on standby hosts.")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    run = sub.add_parser("run", help="replicate a CT now, or every CT that is due")
    run.add_argument("--due", action="store_true", help="every CT whose interval has passed")
    run.add_argument("--ssh", metavar="OPTIONS", help="more ssh options (default: vz.conf REPLICATE_SSH)")
    run.add_argument("ctid", nargs="?", metavar="CT")
    run.add_argument("hosts", nargs="*", metavar="HOST")
    status = sub.add_parser("status", help="this host's CTs' replicas: age, size, last run")
    status.add_argument("ctid", nargs="?", metavar="CT")
    status.add_argument("-H", "--no-header", action="store_true")
    status.add_argument("-j", "--json", action="store_true")
    listing = sub.add_parser("list", help="the replicas this host holds")
    listing.add_argument("-H", "--no-header", action="store_true")
    listing.add_argument("-j", "--json", action="store_true")
    remove = sub.add_parser("remove", help="drop a replica (here, or on HOST)")
    remove.add_argument("--ssh", metavar="OPTIONS")
    remove.add_argument("ctid", metavar="CT")
    remove.add_argument("host", nargs="?", metavar="HOST")
    return parser


def dispatch(argv: list[str]) -> int:
    ns = _parser().parse_args([a for a in argv if a not in ("--quiet", "--verbose", "--debug")])
    from pyvz.host import Host

    host = Host()
    ssh = shlex.split(ns.ssh) if getattr(ns, "ssh", None) is not None else None
    if ns.command == "run":
        return _run(host, ns.ctid, ns.hosts, ns.due, ssh)
    if ns.command == "status":
        return _status(host, ns.ctid, ns.no_header, ns.json)
    if ns.command == "list":
        return _list(host, ns.no_header, ns.json)
    return _remove(host, ns.ctid, ns.host, ssh)


def _ctid(host: Host, text: str) -> int:
    from pyvz.config import resolve_ctid

    try:
        return resolve_ctid(host.paths, text)
    except VzError:
        raise VzError(ExitCode.NO_CT_CONFIG, f"CT {text} does not exist on this host") from None


def _run(host: Host, ctid_text: str | None, hosts: list[str], due: bool, ssh: list[str] | None) -> int:
    from pyvz.migrate import replicate

    if due == (ctid_text is not None):
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "usage: vzreplicate run CT [HOST...] | run --due")
    if due:
        results = replicate.run_due(host, ssh)
    else:
        results = replicate.replicate(host, _ctid(host, ctid_text or ""), hosts or None, ssh)
    first = 0
    for result in results:
        if result.ok:
            log.info(replicate.describe(result))
        else:
            first = first or _code(result.code)
            log.error(f"CT {result.ctid} -> {result.target}: {result.error}")
    return first


def _table(rows: list[list[str]], head: list[str], no_header: bool) -> None:
    """vzlist's look: columns padded to their widest cell, numbers to the right."""
    right = {"CTID", "AGE", "SIZE", "SENT", "TRIES", "RECEIVED"}
    widths = [max([len(h), 10 if h == "CTID" else 0] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    lines = [] if no_header else [head]
    for line in [*lines, *rows]:
        cells = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(line, widths, head, strict=True)]
        print(" ".join(cells).rstrip())


def _status(host: Host, ctid_text: str | None, no_header: bool, as_json: bool) -> int:
    from pyvz.migrate import replicate
    from pyvz.migrate import replication_record as records

    if ctid_text is not None:
        ctids = [_ctid(host, ctid_text)]
    else:
        ctids = sorted(set(host.ctids()) | set(records.recorded_ctids(host.paths)))
    now = time.time()
    rows, out = [], []
    for ctid in ctids:
        try:
            configured = replicate.targets_of(host, ctid) if host.paths.conf_file(ctid).exists() else ()
        except VzError:
            configured = ()
        known = records.load(host.paths, ctid)
        for target in [*configured, *sorted(t for t in known if t not in configured)]:
            record = known.get(target)
            good = record.good if record else None
            last = record.last if record else None
            state = "-" if last is None else "ok" if last.ok else "failed"
            entry: dict[str, Any] = {
                "ctid": ctid,
                "host": target,
                "configured": target in configured,
                "age": None if good is None else round(now - good.taken, 1),
                "size": None if good is None else good.size,
                "taken": None if good is None else good.taken,
                "last": state,
                "kind": None if last is None else last.kind,
                "sent": None if last is None else last.sent,
                "attempts": None if last is None else last.attempts,
                "error": None if last is None else last.error,
                "note": None if last is None else last.note,
                "failures": 0 if record is None else record.failures,
            }
            out.append(entry)
            rows.append(
                [
                    str(ctid),
                    target,
                    "-" if good is None else human_age(now - good.taken),
                    "-" if good is None else human_size(good.size),
                    "-" if last is None else human_size(last.sent),
                    state,
                    "" if last is None or last.ok else (last.error or "")[:200],
                ]
            )
    if as_json:
        print(json.dumps(out, indent=1))
    else:
        _table(rows, ["CTID", "HOST", "AGE", "SIZE", "SENT", "LAST", "ERROR"], no_header)
    return 0


def _list(host: Host, no_header: bool, as_json: bool) -> int:
    from pyvz.migrate.replicas import ReplicaStore

    replicas = ReplicaStore(host).all()
    if as_json:
        print(json.dumps([r.as_json() for r in replicas], indent=1))
        return 0
    now = time.time()
    rows = [
        [
            str(r.ctid),
            r.name or "-",
            r.source,
            human_age(now - r.taken),
            human_age(now - r.received),
            human_size(r.size),
        ]
        for r in replicas
    ]
    _table(rows, ["CTID", "NAME", "SOURCE", "AGE", "RECEIVED", "SIZE"], no_header)
    return 0


def _remove(host: Host, ctid_text: str, target: str | None, ssh: list[str] | None) -> int:
    from pyvz.params import parse_ctid

    if target is not None:
        from pyvz.migrate import replicate

        ctid = _ctid(host, ctid_text)
        had = replicate.forget(host, ctid, target, ssh)
        log.info(f"CT {ctid}: replica on {target} " + ("removed" if had else "was not there; forgotten here"))
        return 0
    from pyvz.migrate.replicas import ReplicaStore

    store = ReplicaStore(host)
    try:
        ctid = parse_ctid(ctid_text)
    except VzError:
        found = store.by_name(ctid_text)
        if found is None:
            raise VzError(ExitCode.NO_PRIVATE, f"this host holds no replica of CT {ctid_text}") from None
        ctid = found.ctid
    with host.ct_lock(ctid):
        if not store.remove(ctid):
            raise VzError(ExitCode.NO_PRIVATE, f"this host holds no replica of CT {ctid}")
    log.info(f"replica of CT {ctid} removed")
    return 0


def _mapped(argv: list[str]) -> int:
    try:
        return dispatch(argv)
    except VzError as err:
        if isinstance(err.code, MigrateExit):
            raise VzError(_EXIT.get(err.code, ExitCode.SYSTEM_ERROR), err.message) from None
        raise


def main() -> None:
    exit_now(run_tool("vzreplicate", _mapped, sys.argv[1:]))


if __name__ == "__main__":
    main()
