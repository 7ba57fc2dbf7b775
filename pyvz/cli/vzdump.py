"""vzdump: back up CTs into portable archives (see pyvz/backup/dump.py, docs/backup.md)."""

from __future__ import annotations

from pathlib import Path

from pyvz import __version__
from pyvz.cli.common import exit_now, run_tool


def _positive(text: str) -> int:
    from pyvz.errors import ExitCode, VzError

    if not text.isdigit() or int(text) < 1:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"expected a positive number, got {text!r}")
    return int(text)


def dispatch(argv: list[str]) -> int:
    from pyvz.backup.archive import Compression
    from pyvz.backup.dump import DumpOptions, Mode
    from pyvz.cli.parser import ArgumentParser
    from pyvz.config import resolve_ctid
    from pyvz.errors import ExitCode, VzError
    from pyvz.host import Host

    parser = ArgumentParser(prog="vzdump", description="Back up containers.")
    parser.add_argument("ctids", nargs="*", metavar="CT", help="CTID or name")
    parser.add_argument("--all", action="store_true", help="back up every CT")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="CT", help="skip this CT (implies --all)"
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], help="stop, suspend or snapshot (default)")
    for mode in Mode:
        parser.add_argument(
            f"--{mode.value}", dest="mode", action="store_const", const=mode.value, help="--mode"
        )
    parser.add_argument(
        "--compress", choices=[c.value for c in Compression], default="zstd", help="default zstd"
    )
    parser.add_argument("--dumpdir", type=Path, metavar="DIR", help="default DUMPDIR from vz.conf")
    parser.add_argument(
        "--maxfiles", type=_positive, metavar="N", help="keep the newest N backups of each CT"
    )
    parser.add_argument("--prune-days", type=_positive, metavar="N", help="delete backups older than N days")
    parser.add_argument(
        "--exclude-path", action="append", default=[], metavar="REGEX", help="leave paths out"
    )
    parser.add_argument("--stdexcludes", action="store_true", help="leave out logs, temporary and pid files")
    parser.add_argument("--bwlimit", type=_positive, metavar="KBPS", help="read at most KBPS KiB/s")
    parser.add_argument("--script", type=Path, metavar="HOOK", help="hook script called at each phase")
    parser.add_argument("--incremental", action="store_true", help="only what changed since the last backup")
    parser.add_argument(
        "--verify", type=Path, metavar="ARCHIVE", help="check an archive without restoring it"
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version=f"vzdump (pyvz) {__version__}")
    ns = parser.parse_args(argv)
    if ns.verify is not None:
        from pyvz.backup.stream import verify

        meta = verify(ns.verify)
        print(f"{ns.verify}: OK ({meta.kind} backup of CT {meta.ctid}, {meta.date})")
        return 0
    host = Host()
    if ns.all or ns.exclude:
        if ns.ctids:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "give CTs or --all/--exclude, not both")
        skipped = {resolve_ctid(host.paths, text) for text in ns.exclude}
        ctids = [c for c in host.ctids() if c not in skipped]
    else:
        if not ns.ctids:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "which CTs? give CTIDs or names, or --all")
        ctids = [resolve_ctid(host.paths, text) for text in ns.ctids]
    opts = DumpOptions(
        mode=Mode(ns.mode or "snapshot"),
        compression=Compression(ns.compress),
        dumpdir=ns.dumpdir,
        maxfiles=ns.maxfiles,
        prune_days=ns.prune_days,
        exclude_paths=tuple(ns.exclude_path),
        stdexcludes=ns.stdexcludes,
        bwlimit=ns.bwlimit,
        script=ns.script.resolve() if ns.script else None,
        incremental=ns.incremental,
    )
    from pyvz.backup.dump import vzdump

    vzdump(host, ctids, opts)
    return 0


def main() -> None:
    exit_now(run_tool("vzdump", dispatch))


if __name__ == "__main__":
    main()
