"""An OpenVZ 6/7 host as `vzmigrate --from` sees it: root over ssh, with vzctl, rsync or tar,
and the files vzctl 4.x keeps under /etc/vz. pyvz runs nothing of its own there: vzctl's
commands, `tar -c` of the CT's config files, `test`, and rsync's or tar's sending side.

Everything that comes back is input from another machine and is read like user input: vzctl's
status line must have vzctl's form, the config files arrive as a tar that is read in memory
(regular files of the expected names only, bounded in size) and parsed as configs (never
sourced), and every path taken from them must be a plain absolute path before it goes into
a remote command line (where it is quoted all the same).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import tarfile
from typing import NamedTuple

from pyvz.errors import MigrateExit, VzError
from pyvz.log import log
from pyvz.run import Result, piped, run

ETC = "/etc/vz"  # vzctl 4.x's PKGCONFDIR; VPSCONFDIR is its conf/
DEFAULT_LOCKDIR = "/vz/lock"
ACTIONS = ("premount", "mount", "umount", "postumount", "start", "stop")
MAX_FILE = 1 << 20  # no CTID.conf or action script is a megabyte
_HOST_RE = re.compile(r"^(?:root@)?([A-Za-z0-9][A-Za-z0-9.:_-]*)$")
_PATH_RE = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$")
SSH_ERROR = 255  # ssh's own failure (no route, refused, the connection dropped)


class Status(NamedTuple):
    exist: bool
    mounted: bool
    running: bool
    suspended: bool


def check_host(text: str) -> str:
    match = _HOST_RE.match(text)
    if not match:
        raise VzError(MigrateExit.USAGE, f"bad source host {text!r} (want a host name or address)")
    return match[1]


def plain_path(host: str, key: str, value: str, ctid: int) -> str:
    """`value` with $VEID filled in, if it is a plain absolute path (no `..`, no quoting, two
    components at least); else the config is refused."""
    path = value.replace("${VEID}", str(ctid)).replace("$VEID", str(ctid))
    parts = path.split("/")[1:]
    if not _PATH_RE.match(path) or len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise VzError(
            MigrateExit.APPLY_CONFIG,
            f"{host}: {key}={value!r} is not a plain absolute path; refused, nothing was changed",
        )
    return path


def parse_status(host: str, ctid: int, text: str) -> Status:
    """vzctl 4.x's `CTID N exist|deleted mounted|unmounted running|down[ suspended]`."""
    lines = [line for line in text.splitlines() if line.strip()]
    fields = lines[-1].split() if lines else []
    if (
        len(fields) not in (5, 6)
        or fields[:2] != ["CTID", str(ctid)]
        or fields[2] not in ("exist", "deleted")
        or fields[3] not in ("mounted", "unmounted")
        or fields[4] not in ("running", "down")
        or fields[5:] not in ([], ["suspended"])
    ):
        shown = lines[-1][:80] if lines else ""
        raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{host}: `vzctl status {ctid}` said {shown!r}")
    return Status(fields[2] == "exist", fields[3] == "mounted", fields[4] == "running", len(fields) == 6)


class Probe(NamedTuple):
    kind: str  # "simfs" or "ploop"
    rsync: bool


class Remote:
    """Commands on the OpenVZ host, each its own ssh session (a cut one fails alone)."""

    def __init__(self, host: str, ssh_options: tuple[str, ...], rsync_options: tuple[str, ...] = ()) -> None:
        self.host = host
        self.ssh_options = ssh_options
        self.rsync_options = rsync_options

    def ssh(self) -> list[str]:
        # The admin's options first: ssh keeps the first value it sees for each.
        return [
            "ssh",
            *self.ssh_options,
            "-o",
            "BatchMode=yes",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-T",
        ]

    def target(self) -> str:
        return f"root@{self.host}"

    def run(self, line: str, *, timeout: float | None = 120) -> Result:
        """`line` in the remote's shell; a failure of ssh itself is a lost connection (4)."""
        result = run([*self.ssh(), self.target(), line], check=False, timeout=timeout)
        if result.returncode == SSH_ERROR:
            why = (result.stderr.strip().splitlines() or ["the connection was lost"])[-1]
            raise VzError(MigrateExit.CONNECT, f"cannot talk to {self.host}: {why}")
        return result

    def vzctl(self, *args: str, code: MigrateExit, timeout: float | None = 300) -> str:
        result = self.run(shlex.join(["vzctl", *args]), timeout=timeout)
        if result.returncode != 0:
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise VzError(
                code,
                f"`vzctl {' '.join(args)}` on {self.host} failed ({result.returncode})"
                + (f": {said[-1][:200]}" if said else ""),
            )
        return result.stdout

    # ---- what is there -------------------------------------------------------------------

    def status(self, ctid: int, lockdir: str | None = None) -> Status:
        """The CT's state. With `lockdir`, after any vzctl still at work on the CT is done
        (a stop whose ssh session died may still be stopping it): its lock file names a live
        PID until then (vzctl's lock protocol)."""
        line = f"vzctl --quiet status {ctid}"
        if lockdir is not None:
            lock = shlex.quote(f"{lockdir}/{ctid}.lck")
            line = (
                f'i=0; while [ $i -lt 300 ] && [ -f {lock} ] && kill -0 "$(head -n 1 {lock})" 2>/dev/null; '
                f"do sleep 0.2; i=$((i+1)); done; {line}"
            )
        result = self.run(line)
        if result.returncode != 0:
            raise VzError(
                MigrateExit.CANT_READ_REMOTE_CONFIG,
                f"{self.host}: `vzctl status {ctid}` failed ({result.returncode}): is it an OpenVZ host?",
            )
        return parse_status(self.host, ctid, result.stdout)

    def config_files(self, ctid: int) -> dict[str, str]:
        """vz.conf, CTID.conf and the CT's action scripts, by their names under /etc/vz; one
        tar, read in memory: regular files of these names only, each under MAX_FILE."""
        wanted = ["vz.conf", f"conf/{ctid}.conf", *(f"conf/{ctid}.{a}" for a in ACTIONS)]
        line = f"cd {ETC} && tar -cf - --ignore-failed-read {' '.join(wanted)} 2>/dev/null"
        with piped([*self.ssh(), self.target(), line], "r", error_code=MigrateExit.CONNECT) as pipe:
            data = bytearray()
            while chunk := os.read(pipe.read_fd, 1 << 16):
                data += chunk
                if len(data) > (len(wanted) + 1) * (MAX_FILE + 1024):
                    raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host} sent too much config")
        files: dict[str, str] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as archive:
                for member in archive:
                    if member.name not in wanted:
                        raise VzError(
                            MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host} sent {member.name!r}"
                        )
                    if not member.isreg() or member.size > MAX_FILE:
                        raise VzError(
                            MigrateExit.APPLY_CONFIG,
                            f"{self.host}: {ETC}/{member.name} is not a regular file of a config's size",
                        )
                    handle = archive.extractfile(member)
                    assert handle is not None
                    files[member.name] = handle.read().decode()
        except (tarfile.TarError, UnicodeDecodeError) as err:
            raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host}'s config files: {err}") from None
        if "vz.conf" not in files:
            raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host} has no {ETC}/vz.conf")
        return files

    def probe(self, ctid: int, private: str) -> Probe:
        """What the private area is (it must be a directory, not a link to one), and whether
        the host has rsync."""
        p = shlex.quote(private)
        line = (
            f"if [ -L {p} ]; then echo link; elif [ ! -d {p} ]; then echo missing; "
            f"elif [ -f {p}/root.hdd/DiskDescriptor.xml ]; then echo ploop; else echo simfs; fi; "
            "if command -v rsync >/dev/null 2>&1; then echo rsync; else echo tar; fi"
        )
        words = self.run(line).stdout.split()
        if len(words) != 2 or words[1] not in ("rsync", "tar"):
            raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host}: cannot look at {private}")
        if words[0] == "link":
            raise VzError(
                MigrateExit.APPLY_CONFIG,
                f"{self.host}: CT {ctid}'s private area {private} is a symbolic link; refused",
            )
        if words[0] == "missing":
            raise VzError(MigrateExit.NOTEXIST, f"{self.host}: CT {ctid} has no private area {private}")
        if words[0] not in ("simfs", "ploop"):
            raise VzError(MigrateExit.CANT_READ_REMOTE_CONFIG, f"{self.host}: cannot look at {private}")
        return Probe(words[0], words[1] == "rsync")

    # ---- the CT's files ----------------------------------------------------------------

    def rsync(self, private: str, target: str) -> None:
        """The private area into `target` (a directory), as it is: owners by number, modes,
        hard links, ACLs, xattrs, holes, device nodes (checked afterwards); what is gone
        there goes here too."""
        argv = ["rsync", "-aHAXS", "--numeric-ids", "--delete", *self.rsync_options]
        argv += ["-e", shlex.join(self.ssh()), f"{self.target()}:{private}/", f"{target}/"]
        result = run(argv, check=False, timeout=None)
        # 24: files vanished while they were being sent (a running CT); the next pass has them.
        if result.returncode not in (0, 24):
            self._copy_failed(result)

    def tar(self, private: str, target: str) -> None:
        """The same with tar, for a host without rsync (a whole copy each time)."""
        from pyvz.run import pipeline

        send = f"tar -C {shlex.quote(private)} --numeric-owner --xattrs --acls -cSf - ."
        receive = ["tar", "-C", target, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
        receive += ["--delay-directory-restore", "-xpf", "-"]
        try:
            pipeline([[*self.ssh(), self.target(), send], receive])
        except VzError as err:
            raise VzError(MigrateExit.COPY, f"copying from {self.host} failed: {err.message}") from None

    def _copy_failed(self, result: Result) -> None:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        why = lines[-1][:200] if lines else f"exit {result.returncode}"
        if result.returncode in (12, 30, 35, 255) or "connection" in why.lower():
            raise VzError(MigrateExit.CONNECT, f"copying from {self.host} broke off: {why}")
        raise VzError(MigrateExit.COPY, f"copying from {self.host} failed: {why}")

    # ---- the hand-over ------------------------------------------------------------------

    def set_disabled(self, ctid: int, disabled: bool) -> None:
        value = "yes" if disabled else "no"
        self.vzctl("set", str(ctid), "--disabled", value, "--save", code=MigrateExit.VE_STOP)
        log.debug(f"CT {ctid} on {self.host}: DISABLED={value}")

    def stop(self, ctid: int) -> None:
        self.vzctl("stop", str(ctid), code=MigrateExit.VE_STOP)

    def start(self, ctid: int) -> None:
        self.vzctl("start", str(ctid), code=MigrateExit.VE_START)

    def destroy(self, ctid: int) -> None:
        self.vzctl("destroy", str(ctid), code=MigrateExit.COPY)

    def keep(self, ctid: int) -> None:
        """As OpenVZ's `vzmigrate -r no` leaves a source: the config renamed .migrated."""
        conf = shlex.quote(f"{ETC}/conf/{ctid}.conf")
        result = self.run(f"mv -f {conf} {conf}.migrated")
        if result.returncode != 0:
            raise VzError(MigrateExit.COPY, f"{self.host}: cannot rename {ETC}/conf/{ctid}.conf")
