"""vzctl's rules between resource parameters, and what this kernel does not enforce.

- VSwap: --vm_overcommit N sets PRIVVMPAGES to (ram + swap) * N, barrier and limit alike
  (vzctl 4.x), whenever ram, swap or vm_overcommit change and PRIVVMPAGES is not given.
- A parameter with no mainline equivalent is saved and named here, so every command that
  sets or starts it can say "not enforced on this kernel" instead of pretending.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pyvz.config import CtConfig
from pyvz.log import log
from pyvz.params import BY_KEY, DISKINODES, PHYSPAGES, SWAPPAGES, UBC_PARAMS, VM_OVERCOMMIT, Param, ubc_name
from pyvz.units import UNLIMITED, BarrierLimit

if TYPE_CHECKING:
    from pyvz.storage.base import DiskQuota

PRIVVMPAGES_KEY = "PRIVVMPAGES"
_VSWAP_KEYS = frozenset({PHYSPAGES.key, SWAPPAGES.key, VM_OVERCOMMIT.key})
_UBC = frozenset(p for p in UBC_PARAMS)


def derived_changes(cfg: CtConfig, changed_keys: Iterable[str]) -> dict[str, str]:
    """Config keys that follow from the changed ones (today: PRIVVMPAGES from vm_overcommit)."""
    changed = set(changed_keys)
    overcommit = cfg.get(VM_OVERCOMMIT)
    if overcommit is None or PRIVVMPAGES_KEY in changed or not changed & _VSWAP_KEYS:
        return {}
    ram, swap = cfg.get(PHYSPAGES), cfg.get(SWAPPAGES)
    if ram is None or ram.limit >= UNLIMITED:
        return {}
    total = ram.limit + (swap.limit if swap is not None and swap.limit < UNLIMITED else 0)
    pages = int(total * overcommit)
    return {PRIVVMPAGES_KEY: str(BarrierLimit(pages, pages))}


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, BarrierLimit):
        return value.limit < UNLIMITED or value.barrier < UNLIMITED
    return True


def not_enforced(cfg: CtConfig, keys: Iterable[str], enforced_ubc: frozenset[str]) -> list[str]:
    """Which of `keys` are set to a real value in `cfg` but have no effect on this kernel."""
    found = []
    for key in keys:
        param: Param[Any] | None = BY_KEY.get(key)
        if param is None:
            continue
        value = cfg.get(param)
        if not _is_set(value):
            continue
        if param is DISKINODES and _simfs(cfg):
            continue  # a project quota may hold it: the layout says at start where it cannot
        if param is DISKINODES or param is VM_OVERCOMMIT:
            found.append(param.name)
        elif param in _UBC and ubc_name(param) not in enforced_ubc:
            found.append(ubc_name(param))
    return found


def disk_quota(cfg: CtConfig) -> DiskQuota | None:
    """The disk quota a CT gets: its DISKSPACE and DISKINODES (None: neither is set), unless
    DISK_QUOTA=no (its own config or vz.conf) turns disk quota off for it, as in vzctl."""
    from pyvz.params import DISK_QUOTA, DISKSPACE
    from pyvz.storage.base import DiskQuota

    space, inodes = cfg.get(DISKSPACE), cfg.get(DISKINODES)
    if cfg.get(DISK_QUOTA) is False or (space is None and inodes is None):
        return None
    return DiskQuota(space, inodes)


def _simfs(cfg: CtConfig) -> bool:
    from pyvz.params import LAYOUT, Layout

    return cfg.get(LAYOUT) is Layout.SIMFS


def _privileged(cfg: CtConfig) -> bool:
    from pyvz.params import LOCAL_UID

    return cfg.get(LOCAL_UID) == 0


def access_notes(cfg: CtConfig, keys: Iterable[str]) -> list[str]:
    """What of `keys` among the OpenVZ-only or partly honoured parameters has no (full)
    effect here, one line each, saying why."""
    from pyvz.params import (
        AVNUMPROC,
        CAPABILITY,
        CPUWEIGHT,
        FEATURES,
        IPTABLES,
        MEMINFO,
        MOUNT_OPTS,
        NETFILTER,
        QUOTATIME,
        QUOTAUGIDLIMIT,
    )
    from pyvz.runtime import access

    wanted = set(keys)
    notes: list[str] = []

    def given(param: Param[Any]) -> Any:
        return cfg.get(param) if param.key in wanted else None

    if (meminfo := given(MEMINFO)) not in (None, "none"):
        ram = cfg.get(PHYSPAGES)
        if ram is not None and ram.limit < UNLIMITED:
            notes.append(
                f"meminfo {meminfo}: with --ram set /proc/meminfo shows the RAM limit (as vzctl's VSwap)"
            )
        else:
            notes.append(
                f"meminfo {meminfo}: /proc/meminfo shows the CT's memory limit (LXCFS), "
                "not a total of its own"
            )
    if capabilities := given(CAPABILITY):
        notes += access.capability_problems(capabilities, _privileged(cfg))[1]
    if features := given(FEATURES):
        notes += access.feature_problems(features)
    if note := access.netfilter_problem(given(NETFILTER)):
        notes.append(note)
    if given(IPTABLES):
        notes.append(
            "iptables: each CT's network namespace has all of netfilter; use --netfilter disabled to deny it"
        )
    if given(MOUNT_OPTS):
        notes.append("mount_opts: only a ploop CT's filesystem takes them, and pyvz runs no ploop CTs")
    for param in (AVNUMPROC, CPUWEIGHT, QUOTATIME, QUOTAUGIDLIMIT):
        value = given(param)
        if value is not None and _is_set(value) and value != 0:
            why = QUOTA_WHY.get(f"{param.name}:simfs" if _simfs(cfg) else param.name)
            why = why or QUOTA_WHY.get(param.name, "on this kernel")
            notes.append(f"{param.name}: saved, but not enforced {why}")
    return notes


# Why the disk quota parameters beyond DISKSPACE's hard limit do nothing on pyvz's layouts.
QUOTA_WHY = {
    "quotatime": (
        "(btrfs has one hard limit per CT, its qgroup's: no soft limit for a grace time to run on)"
    ),
    "quotaugidlimit": (
        "(per-user/group quota inside a CT needs a filesystem of the CT's own with user quota, as "
        "OpenVZ's second-level quota gave; a btrfs subvolume or a directory shares the host's "
        "filesystem, whose user quotas count every CT's files by uid together)"
    ),
    "quotatime:simfs": (
        "(a simfs CT's project quota has the grace time of its filesystem, one for every CT)"
    ),
    "quotaugidlimit:simfs": (
        "(an unprivileged CT cannot set quotas: quotactl(2) wants CAP_SYS_ADMIN in the host's user "
        "namespace, and user/group quotas on VE_PRIVATE's filesystem would count every simfs CT's "
        "files together, all stored with the same unshifted uids)"
    ),
}


def refuse_escapes(cfg: CtConfig) -> None:
    """A capability that would let a privileged CT reach past itself is refused, saying why."""
    from pyvz.errors import ExitCode, VzError
    from pyvz.params import CAPABILITY
    from pyvz.runtime import access

    refused = access.capability_problems(cfg.get(CAPABILITY) or (), _privileged(cfg))[0]
    if refused:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, refused[0])


def warning(names: list[str]) -> str:
    return (
        f"saved, but not enforced on this kernel: {', '.join(names)} "
        "(mainline Linux has no per-CT limit for them; vzcfgvalidate explains)"
    )


def warn_not_enforced(cfg: CtConfig, keys: Iterable[str], enforced_ubc: frozenset[str]) -> None:
    """One line naming what of `keys` is saved but has no effect here (create, set, start)."""
    keys = list(keys)
    names = not_enforced(cfg, keys, enforced_ubc)
    if names:
        log.warning(warning(names))
    for note in access_notes(cfg, keys):
        log.warning(note)
