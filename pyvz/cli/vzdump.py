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


def _bare_compress(argv: list[str], choices: list[str]) -> list[str]:
    """Old vzdump's `--compress` took no value and meant gzip; pyvz's takes one. A bare
    `--compress` (last, or before anything that is not a compression) is the old form."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return out + argv[index:]
        following = argv[index + 1] if index + 1 < len(argv) else None
        out.append("--compress=gzip" if arg == "--compress" and following not in choices else arg)
    return out


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
    compressions = [c.value for c in Compression]
    parser.add_argument(
        "--compress",
        choices=compressions,
        default="zstd",
        help="default zstd; a bare --compress (old vzdump's form) is gzip; lzo is lzop (Proxmox-era)",
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
    parser.add_argument("--tmpdir", type=Path, metavar="DIR", help="where temporary files go")
    parser.add_argument(
        "--stopwait", type=_positive, metavar="MINUTES", help="stop mode: kill a CT not stopped by then"
    )
    parser.add_argument(
        "--lockwait", type=_positive, metavar="MINUTES", help="wait this long for a CT's lock (default: not)"
    )
    parser.add_argument(
        "--size", type=_positive, metavar="MB", help="LVM snapshot size of old vzdump: accepted, no meaning"
    )
    parser.add_argument(
        "--mailto", action="append", default=[], metavar="ADDRESS", help="mail the report (through sendmail)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version=f"vzdump (pyvz) {__version__}")
    ns = parser.parse_args(_bare_compress(argv, compressions))
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
        tmpdir=ns.tmpdir.resolve() if ns.tmpdir else None,
        stopwait=ns.stopwait,
        lockwait=ns.lockwait,
        size=ns.size,
        mailto=tuple(address for given in ns.mailto for address in given.replace(",", " ").split()),
    )
    from pyvz.backup.dump import vzdump

    vzdump(host, ctids, opts)
    return 0


def main() -> None:
    exit_now(run_tool("vzdump", dispatch))


if __name__ == "__main__":
    main()
