"""CRIU behind LXC: checkpoint a running CT into a directory of images, restore it from one.

LXC's `lxc-checkpoint` drives CRIU and, on restore, becomes the restored CT's monitor, so a
restored CT is an ordinary LXC CT again (attach, stop and state work as before). Two things
LXC 5.0 cannot be told are added by pyvz:
- CRIU's own options (`--network-lock nftables`: this host has no iptables; `enable-fs` for
  filesystems a distribution mounts) go in a CRIU config file named by CRIU_CONFIG_FILE;
- LXC gives CRIU the CT's top cgroup as the cgroup root, so a restore puts the CT's
  processes there, where its limits are and which its init could then write; pyvz keeps
  them one level down (`ns`, as at start). A small `criu` shim first on LXC's PATH moves
  --cgroup-root there, for dumps too (else each dump and restore nests one more `ns`).

Needs CRIU >= 4.2 on kernels >= 6.16 (4.1 cannot dump TCP sockets there; Debian 12's 3.17
fails on the vDSO of kernels >= 6.13): `make install` builds it from Debian's source.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from shlex import quote

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import run

MIN_VERSION = (4, 2)
HOW_TO_GET = "`make install` in pyvz's source tree builds CRIU 4.2 from Debian's source"
INNER_CGROUP = "ns"  # must match lxc.cgroup.dir.container.inner in the LXC config

CRIU_OPTIONS = """\
# Written by pyvz; read by CRIU through CRIU_CONFIG_FILE when pyvz checkpoints a CT.
network-lock nftables
enable-fs ramfs
"""

# LXC runs `criu` from PATH: this shim, found first, runs the real one with the
# --cgroup-root values moved one level down.
SHIM = """\
#!/bin/sh
# Written by pyvz (see pyvz/runtime/criu.py): LXC names the CT's top cgroup as CRIU's
# cgroup root; pyvz keeps the CT's processes in its inner cgroup, as a fresh start does.
prev=
root=
for arg do
    shift
    if [ "$prev" = --cgroup-root ]; then
        arg="$arg/{inner}"
        root=${arg#*:}
    fi
    set -- "$@" "$arg"
    prev=$arg
done
# The same root for the hierarchies LXC names none for (cgroup v2's, on a hybrid host).
if [ -n "$root" ]; then
    set -- "$@" --cgroup-root "$root"
fi
# What LXC cannot pass, from pyvz: its action script, the host name of a venet0 pair.
case $1 in dump|restore)
    if [ -n "$PYVZ_CRIU_ACTION" ]; then
        set -- "$@" --action-script "$PYVZ_CRIU_ACTION"
    fi
esac
if [ "$1" = restore ] && [ -n "$PYVZ_CRIU_RESTORE_ARGS" ]; then
    set -f
    set -- "$@" $PYVZ_CRIU_RESTORE_ARGS
fi
exec {criu} "$@"
"""


# CRIU runs its action script at each stage of a dump or restore, the stage in
# CRTOOLS_SCRIPT_ACTION. pyvz's does three things there that save downtime:
# - pre-dump: freeze the CT. CRIU would freeze it itself, but it checks a freezing cgroup
#   only every 100 ms, and on cgroup v1 the first check always finds it still freezing;
#   a cgroup frozen already is seized at once. If it will not freeze here within ~50 ms,
#   it is thawed again and CRIU freezes it its own way (rewriting the state as it waits).
# - post-restore: the host side of the CT's network (`host_network`), after CRIU made the
#   host end of venet0 and before the CT's processes go on: a packet they sent into a link
#   that is still down would be lost, and a restored socket retransmits only after 1 s
#   (it has no round-trip time yet). A failure here aborts the restore: never half-connected.
# - post-dump (`record`) and post-resume (`owners`, before the thaw): the owners and modes of
#   the CT's cgroup files, which CRIU does not bring back (pyvz/runtime/cgowners.py).
# - post-resume: thaw the CT. A CT dumped frozen comes back frozen; `thaw` False keeps it so.
ACTION_SCRIPT = """\
#!/bin/sh
# Written by pyvz (pyvz/runtime/criu.py) for one dump or restore of this CT.
exec 2>>{errors}
frozen() {{
    while read -r line || [ -n "$line" ]; do
        [ "$line" = {frozen_line} ] && return 0
    done < {probe}
    return 1
}}
case "$CRTOOLS_SCRIPT_ACTION" in
pre-dump)
    frozen && exit 0
    printf %s {freeze} > {freezer} || exit 0
    spins=0
    until frozen; do
        spins=$((spins + 1))
        if [ "$spins" -ge {spins} ]; then
            printf %s {thaw} > {freezer}
            exit 0
        fi
    done
    ;;
post-dump)
    {record}
    ;;
post-restore)
    set -e
{host_network}
    ;;
post-resume)
{owners}
{thaw_block}
    ;;
esac
exit 0
"""
FREEZE_SPINS = 5000  # reads of the state file, some 50 ms; CRIU's own freeze takes over after


def action_script(
    freezer: tuple[Path, str, str],
    probe: tuple[Path, str],
    errors: Path,
    host_network: str = "",
    thaw: bool = True,
    record: str = "",
    owners: str = "",
) -> str:
    """The action script for one dump or restore (see ACTION_SCRIPT): `freezer` and `probe`
    as the CT's cgroup tree gives them, `errors` where its complaints go; `record` and
    `owners` the shell of cgowners.record_command and cgowners.restore_commands."""
    path, freeze, thawed = freezer
    find = f"    find {quote(str(path.parent))} -name {quote(path.name)} | while read -r file; do\n"
    find += f'        printf %s {quote(thawed)} > "$file"\n    done'
    return ACTION_SCRIPT.format(
        errors=quote(str(errors)),
        frozen_line=quote(probe[1]),
        probe=quote(str(probe[0])),
        freeze=quote(freeze),
        thaw=quote(thawed),
        freezer=quote(str(path)),
        spins=FREEZE_SPINS,
        host_network=host_network.rstrip("\n") or "    :",  # not indented: it may hold here-documents
        thaw_block=find if thaw else "    :",
        record=record or ":",
        owners=owners or "    :",  # not indented: its quoted paths may hold newlines
    )


def _which(name: str) -> Path | None:
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        candidate = Path(directory or ".") / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


class Criu:
    """The host's CRIU, checked once per boot and binary (`criu check` costs ~0.1 s)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.state_dir = paths.lxc_dir / ".criu"

    def binary(self, code: ExitCode = ExitCode.CHKPNT_ERROR) -> Path:
        found = _which("criu")
        if found is None:
            raise VzError(
                code,
                f"checkpointing needs CRIU >= {'.'.join(map(str, MIN_VERSION))}, and criu is not "
                f"installed: {HOW_TO_GET}",
            )
        return found.resolve()

    def _cache_key(self, binary: Path) -> str:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = ""
        stat = binary.stat()
        return f"{binary} {stat.st_mtime_ns} {stat.st_size} {boot} {os.uname().release}\n"

    def require(self, code: ExitCode = ExitCode.CHKPNT_ERROR) -> Path:
        """The path of a working CRIU, or one line naming what is missing and how to get it."""
        binary = self.binary(code)
        key = self._cache_key(binary)
        stamp = self.state_dir / "checked"
        try:
            if stamp.read_text() == key:
                return binary
        except OSError:
            pass
        result = run([str(binary), "--version"], check=False, timeout=30)
        version = parse_version(result.stdout)
        wanted = ".".join(map(str, MIN_VERSION))
        if version is None or version[:2] < MIN_VERSION:
            have = ".".join(map(str, version)) if version else "unknown"
            raise VzError(
                code,
                f"CRIU {have} at {binary} is too old for kernel {os.uname().release} "
                f"(need >= {wanted}): {HOW_TO_GET}",
            )
        check = run([str(binary), "check"], check=False, timeout=60)
        if check.returncode != 0:
            detail = (check.stderr or check.stdout).strip().splitlines()
            raise VzError(
                code,
                f"`criu check` fails on this kernel ({detail[-1] if detail else 'no output'}): "
                "checkpointing cannot work here",
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(stamp, key, durable=False)
        return binary

    def environment(self, binary: Path) -> dict[str, str]:
        """PATH and CRIU_CONFIG_FILE for lxc-checkpoint: the shim first, our options read."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        shim_dir = self.state_dir / "bin"
        shim_dir.mkdir(exist_ok=True)
        shim = SHIM.replace("{inner}", INNER_CGROUP).replace("{criu}", str(binary))
        shim_path = shim_dir / "criu"
        if not shim_path.exists() or shim_path.read_text() != shim:
            write_atomic(shim_path, shim, mode=0o755, durable=False)
        options = self.state_dir / "criu.conf"
        if not options.exists() or options.read_text() != CRIU_OPTIONS:
            write_atomic(options, CRIU_OPTIONS, durable=False)
        return {
            "PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "CRIU_CONFIG_FILE": str(options),
        }


def log_tail(directory: Path, name: str) -> str:
    """CRIU's own first error from its log in the image directory, for a one-line message."""
    try:
        lines = (directory / name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # CRIU logs harmless errors too (no iptables-save here, RLIMIT_NOFILE in a userns).
    noise = (
        "iptables",
        "ip6tables",
        "RLIMIT_NOFILE",
        "cgroupd: recv req error",
        "Address already assigned",  # `ip addr restore` of addresses the restore made already
    )
    errors = [line for line in lines if "Error" in line and not any(n in line for n in noise)]
    picked = errors[0] if errors else (lines[-1] if lines else "")
    return re.sub(r"^\s*(\(\d+\.\d+\)\s*)?(\d+:\s*)?", "", picked).strip()
