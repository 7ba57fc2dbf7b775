"""vzrestore: make a CT from a vzdump archive (see pyvz/backup/restore.py, docs/backup.md)."""

from __future__ import annotations

from pathlib import Path

from pyvz import __version__
from pyvz.cli.common import exit_now, run_tool


def dispatch(argv: list[str]) -> int:
    from pyvz.backup.restore import vzrestore
    from pyvz.cli.parser import ArgumentParser
    from pyvz.host import Host
    from pyvz.log import set_ctid
    from pyvz.params import LAYOUT, Layout, parse_ctid

    parser = ArgumentParser(prog="vzrestore", description="Restore a container from a backup.")
    parser.add_argument(
        "archive",
        type=Path,
        metavar="ARCHIVE",
        help="a full backup, an incremental chain's last, or an OpenVZ/Proxmox vzdump archive",
    )
    parser.add_argument("ctid", metavar="CTID", help="the restored CT's id")
    parser.add_argument("--force", action="store_true", help="replace an existing (stopped) CT")
    parser.add_argument("--layout", choices=[layout.value for layout in Layout], help="default VE_LAYOUT")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("--version", action="version", version=f"vzrestore (pyvz) {__version__}")
    ns = parser.parse_args(argv)
    ctid = parse_ctid(ns.ctid)
    set_ctid(ctid)
    layout = LAYOUT.parse(ns.layout) if ns.layout else None
    vzrestore(Host(), ns.archive, ctid, force=ns.force, layout=layout)
    return 0


def main() -> None:
    exit_now(run_tool("vzrestore", dispatch))


if __name__ == "__main__":
    main()
