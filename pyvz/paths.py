"""Every on-disk location, derived from PYVZ_ROOT.

Paths written in config files (VE_PRIVATE="/var/lib/vz/private/$VEID") are read as relative
to the root, so a whole tree can live under a temporary PYVZ_ROOT and two roots can run CTs
with the same CTID side by side.
"""

from __future__ import annotations

import os
import zlib
from functools import cache
from pathlib import Path
from typing import NamedTuple

ROOT_ENV = "PYVZ_ROOT"


class Paths(NamedTuple):
    root: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get(ROOT_ENV) or "/").resolve())

    def host(self, configured: str | os.PathLike[str]) -> Path:
        """Map a path as written in a config file onto this root."""
        text = os.fspath(configured)
        return self.root / text.lstrip("/") if text.startswith("/") else self.root / text

    @property
    def tag(self) -> str:
        """A short id of this root, used wherever names are machine-global (cgroups)."""
        return _tag(self.root)

    @property
    def etc_vz(self) -> Path:
        return self.root / "etc/vz"

    @property
    def vz_conf(self) -> Path:
        return self.etc_vz / "vz.conf"

    @property
    def conf_dir(self) -> Path:
        return self.etc_vz / "conf"

    @property
    def names_dir(self) -> Path:
        return self.etc_vz / "names"

    @property
    def lib_vz(self) -> Path:
        return self.root / "var/lib/vz"

    @property
    def template_cache(self) -> Path:
        return self.lib_vz / "template/cache"

    @property
    def dump_dir(self) -> Path:
        return self.lib_vz / "dump"

    @property
    def lock_dir(self) -> Path:
        return self.lib_vz / "lock"

    @property
    def lxc_dir(self) -> Path:
        return self.lib_vz / "lxc"

    @property
    def pool_image(self) -> Path:
        return self.lib_vz / "pool.img"

    @property
    def replication_dir(self) -> Path:
        """The sending side of vzreplicate: one record per CT of its runs to each standby."""
        return self.lib_vz / "replication"

    def replication_record(self, ctid: int) -> Path:
        return self.replication_dir / f"{ctid}.json"

    @staticmethod
    def replicas_in(private_dir: Path) -> Path:
        """The standby side of vzreplicate: the replicas of other hosts' CTs, one directory
        per CTID. They live in the directory that holds this host's private areas (the
        btrfs pool), so they are received with `btrfs receive` and become a CT by an O(1)
        snapshot; a dot name, so no CTID or CT listing ever meets them."""
        return private_dir / ".replicas"

    @property
    def run_dir(self) -> Path:
        """Sockets of a running pyvzd (the API daemon) for this root."""
        return self.root / "run/pyvz"

    @property
    def api_socket(self) -> Path:
        return self.run_dir / "api.sock"

    @property
    def events_socket(self) -> Path:
        """Where commands tell a listening pyvzd that they changed a CT (datagrams)."""
        return self.run_dir / "events.sock"

    @property
    def api_dir(self) -> Path:
        """pyvzd's certificate, key, tokens and trusted client certificates."""
        return self.etc_vz / "api"

    @property
    def audit_log(self) -> Path:
        return self.root / "var/log/pyvz-audit.log"

    @property
    def log_file(self) -> Path:
        return self.root / "var/log/vzctl.log"

    def conf_file(self, ctid: int) -> Path:
        return self.conf_dir / f"{ctid}.conf"

    def quota_file(self, ctid: int) -> Path:
        """What vzquota keeps of a CT's disk quota that the filesystem does not (soft limits,
        inode limits, grace times, on/off); not OpenVZ's binary /var/vzquota/quota.CTID."""
        return self.lib_vz / "quota" / f"{ctid}.json"

    def sample_file(self, name: str) -> Path:
        return self.conf_dir / f"ve-{name}.conf-sample"

    def action_script(self, ctid: int | str, action: str) -> Path:
        """CTID.mount, or vps.mount for the global one (ctid="vps")."""
        return self.conf_dir / f"{ctid}.{action}"

    def name_link(self, name: str) -> Path:
        return self.names_dir / name


@cache
def _tag(root: Path) -> str:
    # Asked for each CT's cgroup paths: a scrape of 500 CTs asks 1500 times.
    if root == Path("/"):
        return "pyvz"
    return f"pyvz-{zlib.crc32(os.fsencode(root)):08x}"
