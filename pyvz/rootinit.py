"""Lay out a PYVZ_ROOT: directories, vz.conf and the sample configs, never overwriting."""

from __future__ import annotations

import sys

from pyvz.atomic import write_atomic
from pyvz.paths import Paths

VZ_CONF = """\
## Global parameters (pyvz reads this like OpenVZ's /etc/vz/vz.conf). Every key here is
## used; operations are logged to /var/log/vzctl.log and templates are cached in
## /var/lib/vz/template/cache (both under PYVZ_ROOT).
LOCKDIR=/var/lib/vz/lock

## Disk: paths are relative to PYVZ_ROOT
VE_ROOT=/var/lib/vz/root/$VEID
VE_PRIVATE=/var/lib/vz/private/$VEID
VE_LAYOUT=btrfs
# Size of the loop-file btrfs pool made when /var/lib/vz/private is not on btrfs:
# "auto" (90% of free space, sparse), a size such as 100G, or "none" for no pool.
POOL_SIZE=auto

## Templates
DEF_OSTEMPLATE="busybox"
CONFIGFILE="basic"

## Network: "inherit" gives each CT the host's DNS servers
NAMESERVER=inherit

## Unprivileged CTs: each CT gets its own 65536-id block from here (0: privileged CTs)
LOCAL_UID=100000
LOCAL_GID=100000

## Defaults for every CT
STOP_TIMEOUT=60
# LXCFS gives each CT its own /proc/meminfo, cpuinfo, uptime ... ("no": the host's)
LXCFS=yes

## The API daemon (pyvzd): HTTPS on this address besides its unix socket /run/pyvz/api.sock
## ("": the socket only). pyvzd fingerprint prints its certificate's fingerprint.
API_LISTEN="127.0.0.1:8443"
"""

SAMPLES = {
    "basic": """\
# A general-purpose CT: started at host boot.
ONBOOT="yes"
DISKSPACE="10G"
""",
    "light": """\
# A small CT for light services.
ONBOOT="no"
DISKSPACE="2G"
""",
    "vswap-256m": """\
# A CT sized like OpenVZ's vswap-256m sample: 256 MB of RAM, 512 MB of swap on top.
ONBOOT="no"
PHYSPAGES="0:256M"
SWAPPAGES="0:512M"
DISKSPACE="2G"
""",
}


def init_root(paths: Paths) -> None:
    for directory in (
        paths.conf_dir,
        paths.names_dir,
        paths.template_cache,
        paths.dump_dir,
        paths.lock_dir,
        paths.lxc_dir,
        paths.lib_vz / "root",
        paths.log_file.parent,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    for directory in (paths.lib_vz, paths.lib_vz / "root", paths.lxc_dir):
        directory.chmod(0o755)  # an unprivileged CT's root must be able to reach its rootfs
    if not paths.vz_conf.exists():
        write_atomic(paths.vz_conf, VZ_CONF)
    for name, text in SAMPLES.items():
        sample = paths.sample_file(name)
        if not sample.exists():
            write_atomic(sample, text)


def main() -> int:
    init_root(Paths.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
