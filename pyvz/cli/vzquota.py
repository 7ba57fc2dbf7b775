"""vzquota: OpenVZ's disk quota tool (quota id = CTID), its options, output and exit codes,
on pyvz's disk quota (a btrfs CT's qgroup, a simfs CT's project quota). See pyvz.ct.quota for
what is enforced."""

from __future__ import annotations

import getopt
import sys
import time
from pathlib import Path
from typing import NamedTuple

from pyvz import __version__
from pyvz.cli.common import exit_now
from pyvz.errors import QuotaExit, VzError

# Per command: getopt short options and long options, as vzquota takes them.
_LIMIT_SHORT = "b:B:i:I:e:n:"
_LIMIT_LONG = [
    "block-softlimit=",
    "block-hardlimit=",
    "block-exptime=",
    "inode-softlimit=",
    "inode-hardlimit=",
    "inode-exptime=",
]
_UG_LONG = ["rsquash=", "sub-quotas=", "ugid-limit=", "quota-file=", "relative"]
OPTIONS: dict[str, tuple[str, list[str]]] = {
    "stat": ("p:c:tfR", ["quota-file=", "user-group", "relative", "force"]),
    "show": ("p:c:tR", ["quota-file=", "user-group", "relative"]),
    "on": ("p:c:r:s:u:fR" + _LIMIT_SHORT, [*_UG_LONG, *_LIMIT_LONG, "nocheck", "force"]),
    "setlimit": ("p:c:r:s:u:fR" + _LIMIT_SHORT, [*_UG_LONG, *_LIMIT_LONG, "force"]),
    "init": ("p:c:r:s:u:R" + _LIMIT_SHORT, [*_UG_LONG, *_LIMIT_LONG]),
    "off": ("p:fc:R", ["quota-file=", "relative", "force"]),
    "drop": ("p:fc:R", ["quota-file=", "relative", "force"]),
    "setlimit2": ("p:c:ugtR", ["quota-file=", "uid=", "gid=", "relative"]),
    "reload2": ("p:c:R", ["quota-file=", "relative"]),
}
_LONG = {
    "--block-softlimit": "-b",
    "--block-hardlimit": "-B",
    "--inode-softlimit": "-i",
    "--inode-hardlimit": "-I",
    "--block-exptime": "-e",
    "--inode-exptime": "-n",
    "--sub-quotas": "-s",
    "--ugid-limit": "-u",
    "--quota-file": "-c",
    "--relative": "-R",
    "--force": "-f",
    "--user-group": "-t",
    "--rsquash": "-r",
    "--uid": "-u",
    "--gid": "-g",
}
_LIMIT_OF = {
    "-b": "block_soft",
    "-B": "block_hard",
    "-i": "inode_soft",
    "-I": "inode_hard",
    "-e": "block_exptime",
    "-n": "inode_exptime",
}
_U32 = 2**32 - 1
_U64 = 2**63 - 1

HELP = """\
usage: vzquota [-b] [-q] [-v] [-V] COMMAND QUOTAID [OPTIONS]
Disk quota of a CT (QUOTAID = CTID): a btrfs CT's qgroup, a simfs CT's project quota.

  init QUOTAID -p PRIVATE -b N -B N -i N -I N -e T -n T
                           count the usage afresh, save the limits (quota stays off)
  on QUOTAID [limits] [-f] put the limits on the CT's files (-f: count afresh)
  off QUOTAID [-f]         take the limit off (usage is still counted)
  setlimit QUOTAID limits  change limits (at once where the quota runs)
  drop QUOTAID [-f]        forget the saved limits of a quota that is off
  stat QUOTAID [-t] [-f]   usage and limits now (-f: do not save them)
  show QUOTAID [-t]        usage and limits as last saved
  setlimit2, reload2       per-user/group quota: not available on pyvz's layouts

limits: -b/--block-softlimit, -B/--block-hardlimit (1K blocks), -i/--inode-softlimit,
        -I/--inode-hardlimit, -e/--block-exptime, -n/--inode-exptime (seconds, dd:hh:mm:ss,
        or N with h, d, w, m, y); -s 1|0 and -u N: per-user/group quota (saved only)
global: -b batch output, -q errors only, -v more messages, -V version
btrfs enforces the block hard limit only, project quota (simfs on ext4/xfs) all four limits;
what is not enforced (and per-CT grace times) is saved and shown, and said so.
"""


class Options(NamedTuple):
    command: str
    ctid: int
    flags: frozenset[str]
    limits: dict[str, int]
    ugid_on: bool | None
    ugid_limit: int | None
    path: Path | None
    args: list[str]


def _usage(message: str) -> VzError:
    return VzError(QuotaExit.USAGE, f"{message} (see vzquota --help)")


def _number(option: str, text: str, top: int) -> int:
    body = text.lstrip(" \t").removeprefix("+")
    if not body.isdigit() or int(body) > top:
        raise _usage(f"bad value for {option}: {text!r} (a whole number)")
    return int(body)


def parse_command(command: str, args: list[str]) -> Options:
    from pyvz.cli.quotatext import parse_time

    if command not in OPTIONS:
        raise _usage(f"Unknown command: '{command}'")
    if not args or not args[0].isdigit():
        given = repr(args[0]) if args else "nothing"
        raise _usage(f"vzquota {command} takes the quota id (the CTID) first, not {given}")
    short, long = OPTIONS[command]
    try:
        pairs, rest = getopt.gnu_getopt(args[1:], short, long)
    except getopt.GetoptError as err:
        raise _usage(f"vzquota {command}: {err.msg}") from None
    flags: set[str] = set()
    limits: dict[str, int] = {}
    ugid_on: bool | None = None
    ugid_limit: int | None = None
    path: Path | None = None
    for raw, value in pairs:
        option = _LONG.get(raw, raw)
        if raw == "--nocheck":
            flags.add("nocheck")
        elif option in ("-b", "-B"):
            limits[_LIMIT_OF[option]] = _number(option, value, _U64)
        elif option in ("-i", "-I"):
            limits[_LIMIT_OF[option]] = _number(option, value, _U32)
        elif option in ("-e", "-n"):
            seconds = parse_time(value)
            if seconds is None:
                raise _usage(
                    f"bad time for {option}: {value!r} (seconds, dd:hh:mm:ss, or N with h, d, w, m, y)"
                )
            limits[_LIMIT_OF[option]] = seconds
        elif option == "-s":
            if value not in ("0", "1"):
                raise _usage(f"-s takes 1 or 0, not {value!r}")
            ugid_on = value == "1"
        elif option == "-u" and command != "setlimit2":
            ugid_limit = _number(option, value, _U32)
        elif option == "-p":
            path = Path(value).absolute()
        elif option == "-c":
            flags.add("-c")
        elif option != "-r":  # -r (rsquash) is accepted and ignored, as by vzquota
            flags.add(option)
    if "-c" in flags and "-R" in flags:
        raise _usage("-c and -R options can't be set together")
    if "-c" in flags:
        raise _usage("-c: pyvz keeps no vzquota quota files (the quota is the CT's own, found by its id)")
    return Options(command, int(args[0]), frozenset(flags), limits, ugid_on, ugid_limit, path, rest)


def _require(opts: Options) -> None:
    """What each command cannot do without, as vzquota refuses it."""
    if opts.command == "init" and (opts.path is None or len(opts.limits) != len(_LIMIT_OF)):
        raise _usage("vzquota init needs -p PRIVATE and all of -b -B -i -I -e -n")
    if opts.command == "setlimit" and not (
        opts.path
        or opts.limits
        or opts.ugid_on is not None
        or opts.ugid_limit is not None
        or "-f" in opts.flags
    ):
        raise _usage("vzquota setlimit needs something to set (-p, -b, -B, -i, -I, -e, -n, -s, -u or -f)")


def run_command(opts: Options, batch: bool, say_level: int) -> int:
    from pyvz.cli.quotatext import status_lines, ugid_lines
    from pyvz.ct.quota import Changes, CtQuota, Level, Limits
    from pyvz.host import Host

    def say(level: Level, text: str) -> None:
        shown = Level.WARNING if level is Level.NOTE else level
        if shown > say_level:
            return
        from pyvz.ct.quotacmd import vzquota_line

        stream = sys.stderr if shown <= Level.WARNING else sys.stdout
        stream.write(vzquota_line(level, text))
        stream.flush()

    _require(opts)
    quota = CtQuota(Host(), opts.ctid, say)
    force = "-f" in opts.flags
    changes = Changes(opts.limits, opts.ugid_on, opts.ugid_limit)
    command = opts.command
    if command in ("stat", "show"):
        st = quota.stat(force) if command == "stat" else quota.show()
        lines = status_lines(st, batch, int(time.time()))
        code = 0
        if "-t" in opts.flags:
            lines += ugid_lines(st, batch, force and command == "stat")
            code = int(QuotaExit.UG_NOTRUN) if command == "stat" else 0
        print("\n".join(lines))
        return code
    if command == "on":
        quota.check_path(opts.path)
        quota.on(changes, force, "nocheck" in opts.flags)
    elif command == "off":
        quota.off(force)
    elif command == "init":
        limits = Limits(**opts.limits)
        quota.init(limits, bool(opts.ugid_on), opts.ugid_limit or 0, opts.path)
    elif command == "drop":
        quota.drop(force)
    elif command == "setlimit":
        quota.setlimit(changes, opts.path, force)
    elif command == "setlimit2":
        quota.require_running()
    # reload2: with no second-level quota running there is nothing to reload (vzquota: 0)
    return 0


def main_args(argv: list[str]) -> int:
    from pyvz.ct.quota import Level
    from pyvz.ct.quotacmd import vzquota_line

    try:
        pairs, rest = getopt.getopt(argv, "hvqVb", ["help", "version"])
    except getopt.GetoptError as err:
        print(vzquota_line(Level.ERROR, f"{err.msg} (see vzquota --help)"), end="", file=sys.stderr)
        return int(QuotaExit.USAGE)
    names = [name for name, _value in pairs]
    if "-V" in names or "--version" in names:
        print(f"vzquota (pyvz) {__version__}")
        return 0
    if "-h" in names or "--help" in names or not rest:
        sys.stderr.write(HELP)
        return int(QuotaExit.USAGE)  # vzquota's usage exits 2, asked for or not
    level = int(Level.WARNING)
    for name in names:
        if name == "-q":
            level = int(Level.ERROR)
        elif name == "-v":
            level += 1
    try:
        opts = parse_command(rest[0], rest[1:])
        return run_command(opts, "-b" in names, level)
    except VzError as err:
        if err.message:
            print(vzquota_line(Level.ERROR, err.message), end="", file=sys.stderr)
        # vzctl's codes from below (a btrfs command that failed...) are a failed quota call here.
        return int(err.code) if isinstance(err.code, QuotaExit) else int(QuotaExit.VZCALL)
    except BrokenPipeError:
        return 0


def main() -> None:
    exit_now(main_args(sys.argv[1:]))


if __name__ == "__main__":
    main()
