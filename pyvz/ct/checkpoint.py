"""vzctl chkpnt (suspend) and restore (resume): a running CT's memory and processes saved
to a dump and brought back from it, with the same PIDs, open files and TCP connections.

A dump is a directory of CRIU images (`DUMPDIR/Dump.CTID` by default, DUMPDIR from vz.conf,
else /var/lib/vz/dump) plus `pyvz-dump.json`, which names the CT, its id range and a
fingerprint of its files at the moment of the dump. A dump is built under a partial name and
renamed into place only when complete; restoring it over files that changed since (a start,
a snapshot-switch, an edit through `vzctl mount`) is refused, because the processes would
wake up with open files that no longer match.

The staged forms follow vzctl: `chkpnt --suspend` freezes, `--dump` writes a dump of the
frozen CT (it stays frozen), `--kill` stops it (the dump remains, so the CT is
`suspended`), `--resume` thaws it; `restore --undump` brings the processes back frozen,
`--resume` thaws them, `--kill` stops them.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path

from pyvz.atomic import write_atomic
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.params import IPADD, NETIF
from pyvz.run import if_we_die
from pyvz.runtime.criu import Criu
from pyvz.storage.base import Area, remove_path

META = "pyvz-dump.json"
CHECKPOINTABLE = ("lxc.tty.max = 0", "lxc.console.path = none")


class Stage(StrEnum):
    SUSPEND = "suspend"
    DUMP = "dump"
    KILL = "kill"
    RESUME = "resume"
    UNDUMP = "undump"


def check_cpt_options(ctid: int, command: str, flags: str | None, context: str | None) -> None:
    """chkpnt/restore --flags and --context, which OpenVZ's kernel took: what CRIU already does
    is accepted, anything else refused in one line (they are read before anything happens)."""
    code = ExitCode.CHKPNT_ERROR if command == "chkpnt" else ExitCode.RESTORE_ERROR
    if flags is not None and _c_number(flags, 0) != 0:
        raise VzError(
            code,
            f"--flags {flags}: CRIU takes no CPU flags of the destination; it checks the CPU "
            "itself when it restores (leave --flags out)",
        )
    if context is not None and _c_number(context, 16) not in (0, ctid):
        raise VzError(
            code,
            f"--context {context}: a CRIU checkpoint has no kernel context; each CT has one "
            f"checkpoint, named by its dump file (leave --context out or give {ctid:x})",
        )


def _c_number(text: str, base: int) -> int:
    """strtoul(text, NULL, base), as vzctl reads these: the leading digits, else 0."""
    import re

    text = text.strip()
    if base == 0:
        base = 16 if re.match(r"0[xX][0-9a-fA-F]", text) else 8 if text.startswith("0") else 10
    if base == 16:
        text = re.sub(r"^0[xX]", "", text)
    digits = {16: "[0-9a-fA-F]", 10: "[0-9]", 8: "[0-7]"}[base]
    match = re.match(f"{digits}+", text)
    return int(match.group(0), base) if match else 0


def dump_dir(host: Host) -> Path:
    configured = host.setting("DUMPDIR")
    return host.paths.host(configured) if configured else host.paths.dump_dir


def default_dump(host: Host, ctid: int) -> Path:
    return dump_dir(host) / f"Dump.{ctid}"


def has_dump(path: Path) -> bool:
    return (path / META).is_file()


def pending(host: Host, ctid: int) -> Path | None:
    """The dump `vzctl start` restores the stopped CT from, if there is one. A dump taken
    from a CT that went on running (`chkpnt --dump`, then `--resume`) is not one: the CT's
    files moved on without it; it is set aside with a word."""
    dump = default_dump(host, ctid)
    if not has_dump(dump):
        return None
    if _read_meta(dump).get("fingerprint") is None:
        stale = dump.with_name(f"{dump.name}.stale")
        remove_path(stale)
        os.rename(dump, stale)
        log.warning(f"dump {dump} was taken from a CT that went on running; moved to {stale}")
        return None
    return dump


def resumable(path: Path) -> bool:
    """A dump `vzctl start` would restore: complete, and of a CT that stopped with it."""
    if not has_dump(path):
        return False
    try:
        return _read_meta(path).get("fingerprint") is not None
    except VzError:
        return False


def _stage_file(ct: Container) -> Path:
    """Which staged command froze the running CT (`chkpnt` or `undump`), so that only its
    own --resume thaws it: the other one's would resume it with the wrong dump."""
    return ct.host.runtime.ct_dir(ct.ctid) / "frozen-by"


def _frozen_by(ct: Container) -> str:
    try:
        return _stage_file(ct).read_text().strip()
    except FileNotFoundError:
        return ""


def _set_frozen_by(ct: Container, stage: str | None) -> None:
    if stage is None:
        _stage_file(ct).unlink(missing_ok=True)
    else:
        write_atomic(_stage_file(ct), f"{stage}\n", durable=False)


def partial_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _make_dir(path: Path) -> None:
    """CRIU's restore opens images as the CT's root, which must be able to pass through every
    directory above them (0711: it can pass, not list)."""
    path.mkdir(mode=0o711, parents=True)
    os.chmod(path, 0o711)
    for parent in path.parents:
        if parent == Path("/") or parent.stat().st_mode & 0o001:
            break
        os.chmod(parent, parent.stat().st_mode | 0o111)


def _criu(ct: Container, code: ExitCode) -> dict[str, str]:
    criu = Criu(ct.paths)
    return criu.environment(criu.require(code))


def require_checkpointable(ct: Container) -> None:
    """The running CT was started the way CRIU can dump (no console, no ttys)."""
    try:
        config = ct.host.runtime.config_path(ct.ctid).read_text()
    except FileNotFoundError:
        config = ""
    if ct.config.get(NETIF):
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"CT {ct.ctid} has bridged veth interfaces (NETIF), which CRIU cannot restore here yet "
            "(it recreates them with their old ifindex on the host, which another device may hold); "
            "routed addresses (--ipadd) can be checkpointed",
        )
    _require_no_symlink_watch(ct)
    missing = [line for line in CHECKPOINTABLE if line not in config.splitlines()]
    if missing:
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"CT {ct.ctid} was started with a console and ttys (by an older pyvz), which CRIU "
            "cannot checkpoint: restart it once (`vzctl restart`) and try again",
        )


def _require_no_symlink_watch(ct: Container) -> None:
    """systemd watches /etc/localtime itself (inotify, no follow); CRIU cannot dump a watch
    on a symlink, and templates older than this pyvz have one there."""
    from pyvz.net.venet import init_pid

    runtime = ct.host.runtime
    pid = init_pid(runtime.cgroups.procs(runtime.cgroups_of(ct.ctid).container))
    try:
        systemd = "systemd" in os.readlink(f"/proc/{pid}/exe")
    except (OSError, TypeError):
        return
    if systemd and (ct.area().root / "etc/localtime").is_symlink():
        raise VzError(
            ExitCode.CHKPNT_ERROR,
            f"CT {ct.ctid}'s /etc/localtime is a symlink that systemd watches, which CRIU cannot "
            "checkpoint: make it a file (vzctl exec CT 'cp --remove-destination "
            '"$(readlink -f /etc/localtime)" /etc/localtime\'; templates built now have one)',
        )


def _write_meta(
    ct: Container, area: Area, images: Path, frozen_only: bool = False, quick: bool = False
) -> None:
    meta = {
        "ctid": ct.ctid,
        "local_uid": area.idmap.uid,
        "local_gid": area.idmap.gid,
        "layout": str(ct.driver().layout),
        # A dump of a CT that keeps running (--dump) has no fingerprint yet: --kill adds it.
        "fingerprint": None if frozen_only else ct.driver().fingerprint(area, quick=quick),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_atomic(images / META, json.dumps(meta, indent=1) + "\n", mode=0o600)


def _read_meta(images: Path) -> dict[str, object]:
    try:
        data = json.loads((images / META).read_text())
    except FileNotFoundError:
        raise VzError(ExitCode.RESTORE_ERROR, f"no dump at {images}") from None
    except (OSError, ValueError) as err:
        raise VzError(ExitCode.RESTORE_ERROR, f"dump {images} is unreadable: {err}") from None
    if not isinstance(data, dict):
        raise VzError(ExitCode.RESTORE_ERROR, f"dump {images} is unreadable")
    return data


def _check_fits(ct: Container, area: Area, images: Path) -> None:
    meta = _read_meta(images)
    problems = []
    if meta.get("ctid") != ct.ctid:
        problems.append(f"it is a dump of CT {meta.get('ctid')}")
    if (meta.get("local_uid"), meta.get("local_gid")) != (area.idmap.uid, area.idmap.gid):
        problems.append("the CT's id range changed")
    if meta.get("fingerprint") is None:
        problems.append("it was taken from a CT that went on running after it")
    elif not isinstance(meta["fingerprint"], dict) or not ct.driver().fits(area, meta["fingerprint"]):
        problems.append("the CT's files changed since it was taken")
    if problems:
        raise VzError(
            ExitCode.RESTORE_ERROR,
            f"dump {images} does not fit CT {ct.ctid}: {'; '.join(problems)} "
            f"(remove it to start the CT afresh: rm -r {images})",
        )


def _netns_prefix_after(fd: int | None) -> list[str]:
    """Where a CT that has just stopped ran, for cleaning up its host side there."""
    return [] if fd is None else ["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", "--"]


def require_dumpable(ct: Container) -> None:
    """Before anything is frozen: CRIU works here and can dump this CT."""
    _criu(ct, ExitCode.CHKPNT_ERROR)
    require_checkpointable(ct)


def chkpnt(
    ct: Container,
    dumpfile: Path | None = None,
    stage: Stage | None = None,
    lock: bool = True,
    quick: bool = False,
) -> Path:
    """vzctl chkpnt/suspend: the dump path it wrote (or the one it will write).
    `lock=False`: the caller holds the CT lock; `quick` (vzmigrate, whose downtime it is):
    fingerprint the files without a walk, for a dump restored at once or nowhere, and leave
    the CT's firewall table in our namespace to the caller (removing it is an nftables
    transaction, ~20 ms; its rules name an interface that is gone)."""
    target = dumpfile.resolve() if dumpfile else default_dump(ct.host, ct.ctid)
    with ct.host.ct_lock(ct.ctid) if lock else nullcontext():
        area = ct.require_exists()
        cgroups = ct.host.runtime.cgroups
        cgroup = ct.host.runtime.cgroups_of(ct.ctid).container
        if stage is Stage.KILL:
            return _kill_dumped(ct, area, target)
        if not ct.is_running():
            raise VzError(ExitCode.NOT_RUNNING, f"unable to checkpoint: CT {ct.ctid} is not running")
        if stage is Stage.RESUME:
            if not cgroups.is_frozen(cgroup) or _frozen_by(ct) != "chkpnt":
                raise VzError(
                    ExitCode.CHKPNT_ERROR,
                    f"CT {ct.ctid} is not suspended by `chkpnt --suspend`"
                    + (" (it is undumped: `vzctl restore --resume`)" if _frozen_by(ct) == "undump" else ""),
                )
            if has_dump(target) and _read_meta(target).get("fingerprint") is None:
                # it was only dumped: the CT goes on network-connected as before the dump
                ct.network_up(ct.config)
            _thaw(ct)
            _set_frozen_by(ct, None)
            log.info("Resuming...")
            return target
        env = _criu(ct, ExitCode.CHKPNT_ERROR)
        require_checkpointable(ct)
        if stage is Stage.SUSPEND:
            _freeze(ct)
            _set_frozen_by(ct, "chkpnt")
            log.info(f"CT {ct.ctid} is suspended (frozen); `vzctl chkpnt {ct.ctid} --dump` saves it")
            return target
        if stage is Stage.DUMP and (not cgroups.is_frozen(cgroup) or _frozen_by(ct) != "chkpnt"):
            raise VzError(
                ExitCode.CHKPNT_ERROR, f"CT {ct.ctid} is not suspended: run `vzctl chkpnt --suspend` first"
            )
        partial = partial_of(target)
        remove_path(partial)
        if target.exists():
            if not has_dump(target) and any(target.iterdir()):
                raise VzError(
                    ExitCode.CHKPNT_ERROR, f"{target} exists and is not a pyvz dump: pick another --dumpfile"
                )
            remove_path(target)
        _make_dir(partial)
        log.info("Setting up checkpoint...")
        started = time.monotonic()
        netns = ct.host.runtime.foreign_netns(ct.ctid)
        was_frozen = cgroups.is_frozen(cgroup)
        try:
            thaw = ct.host.runtime.cgroups.freezer(cgroup)
            # CRIU freezes the CT itself; if it or we are killed the CT must not stay frozen.
            with if_we_die(["sh", "-c", 'printf %s "$1" > "$2"', "sh", thaw[2], str(thaw[0])]):
                ct.host.runtime.checkpoint(ct.ctid, partial, env, stop=stage is None)
            _write_meta(ct, area, partial, frozen_only=stage is Stage.DUMP, quick=quick)
            os.rename(partial, target)
            if ct.config.get(IPADD) or ct.config.get(NETIF):
                ct.network_down(
                    _netns_prefix_after(netns) if stage is None else None,
                    keep_firewall=quick and netns is None and stage is None,
                )
        except BaseException:
            remove_path(partial)
            if not was_frozen and ct.is_running():
                _thaw(ct)  # frozen for CRIU, which leaves a CT frozen as it found it
            raise
        finally:
            if netns is not None:
                os.close(netns)
        log.info(f"Checkpointing completed successfully in {time.monotonic() - started:.2f} s: {target}")
        if stage is None:
            ct.host.runtime.wait_stopped(ct.ctid, 10.0)
            ct.umount(area=area)
        return target


def memory_dumper(ct: Container) -> dict[str, str] | None:
    """CRIU's environment if the running CT's memory can be saved with a snapshot; None,
    said out loud, if it cannot (the snapshot then holds files and config only)."""
    try:
        env = _criu(ct, ExitCode.CHKPNT_ERROR)
        require_checkpointable(ct)
    except VzError as err:
        log.warning(f"memory state is not saved, files and config only: {err}")
        return None
    return env


def dump_frozen(ct: Container, images: Path, env: dict[str, str]) -> None:
    """Dump the CT, frozen by the caller, into `images`; it goes on running when thawed."""
    images.mkdir(mode=0o700)
    ct.host.runtime.checkpoint(ct.ctid, images, env, stop=False)
    area = ct.area()
    meta = {"ctid": ct.ctid, "local_uid": area.idmap.uid, "local_gid": area.idmap.gid}
    # Its files are the snapshot's: resume_snapshot() fingerprints them after the switch.
    write_atomic(images / META, json.dumps({**meta, "fingerprint": None}, indent=1) + "\n", mode=0o600)


def resume_snapshot(ct: Container, images: Path) -> None:
    """Resume the CT from the memory state saved with the snapshot its files were just
    switched to. The images are copied first: a restore consumes its dump."""
    from pyvz.storage.copying import copy_tree

    copy = dump_dir(ct.host) / f".Dump.{ct.ctid}.switch"
    remove_path(copy)
    if not copy.parent.exists():
        _make_dir(copy.parent)
    copy_tree(images, copy)
    try:
        meta = _read_meta(copy)
        meta["fingerprint"] = ct.driver().fingerprint(ct.area())
        write_atomic(copy / META, json.dumps(meta, indent=1) + "\n", mode=0o600)
        restore_from(ct, copy)
    finally:
        remove_path(copy)


def _freeze(ct: Container) -> None:
    cgroups = ct.host.runtime.cgroups
    path, freeze, _thaw_text = cgroups.freezer(ct.host.runtime.cgroups_of(ct.ctid).container)
    path.write_text(freeze)
    deadline = time.monotonic() + 10
    while not cgroups.is_frozen(ct.host.runtime.cgroups_of(ct.ctid).container):
        if time.monotonic() > deadline:
            _thaw(ct)
            raise VzError(ExitCode.CHKPNT_ERROR, f"CT {ct.ctid} did not freeze within 10 s")
        time.sleep(0.002)


def _thaw(ct: Container) -> None:
    # Below too: a restore gives the CT's inner cgroup the freezer state it was dumped with.
    ct.host.runtime.cgroups.thaw_below(ct.host.runtime.cgroups_of(ct.ctid).container)


def _kill_dumped(ct: Container, area: Area, target: Path) -> Path:
    """chkpnt --kill: stop the frozen CT whose dump was taken; it is `suspended` after."""
    if not ct.is_running():
        raise VzError(ExitCode.NOT_RUNNING, f"CT {ct.ctid} is not running")
    if not has_dump(target):
        raise VzError(ExitCode.CHKPNT_ERROR, f"no dump at {target}: run `vzctl chkpnt --dump` first")
    netns = ct.host.runtime.foreign_netns(ct.ctid)
    try:
        ct.host.runtime.stop(ct.ctid, 0, kill=True)
        ct.host.runtime.wait_stopped(ct.ctid, 10.0)
        _set_frozen_by(ct, None)
    finally:
        if netns is not None:
            os.close(netns)
    ct.umount(area=area)
    _write_meta(ct, area, target)
    log.info("Killing...")
    return target


def restore(ct: Container, dumpfile: Path | None = None, stage: Stage | None = None) -> None:
    """vzctl restore/resume."""
    target = dumpfile.resolve() if dumpfile else default_dump(ct.host, ct.ctid)
    with ct.host.ct_lock(ct.ctid):
        ct.require_exists()
        cgroups = ct.host.runtime.cgroups
        cgroup = ct.host.runtime.cgroups_of(ct.ctid).container
        if stage in (Stage.RESUME, Stage.KILL):
            if not ct.is_running() or not cgroups.is_frozen(cgroup) or _frozen_by(ct) != "undump":
                raise VzError(ExitCode.RESTORE_ERROR, f"CT {ct.ctid} is not undumped (restore --undump)")
            _set_frozen_by(ct, None)
            if stage is Stage.KILL:
                ct.host.runtime.stop(ct.ctid, 0, kill=True)
                ct.host.runtime.wait_stopped(ct.ctid, 10.0)
                ct.umount()
                log.info("Killing... (the dump is kept: `vzctl restore` tries again)")
                return
            ct.network_up(ct.config)
            _thaw(ct)
            remove_path(target)
            log.info("Resuming...")
            return
        restore_from(ct, target, frozen=stage is Stage.UNDUMP)


def restore_from(ct: Container, images: Path, frozen: bool = False) -> None:
    """Bring a stopped CT back from a dump (the caller holds the CT lock). The dump is
    removed once the CT runs from it; `frozen` leaves it frozen with no host networking."""
    if ct.is_running():
        raise VzError(ExitCode.RUNNING, f"CT {ct.ctid} is already running")
    area = ct.require_exists()
    ct.return_to_netns()
    if not has_dump(images):
        raise VzError(ExitCode.RESTORE_ERROR, f"no dump at {images} (`vzctl chkpnt` writes one)")
    driver = ct.driver()
    if driver.is_mounted(area):
        ct.umount(area=area)
    _check_fits(ct, area, images)
    env = _criu(ct, ExitCode.RESTORE_ERROR)
    from pyvz.net.venet import restore_args

    env["PYVZ_CRIU_RESTORE_ARGS"] = restore_args(ct.ifname, ct.config.get(IPADD) or ())
    os.chmod(images, 0o711)
    log.info("Restoring container ...")
    started = time.monotonic()
    area.root.mkdir(parents=True, exist_ok=True)
    driver.mount_shifted(area)
    try:
        cfg = ct.config
        spec, limits = ct.runtime_spec(area, cfg, ct.distro().halt_signal, restoring=True)
        network = "" if frozen else ct.restored_network(cfg)
        ct.host.runtime.restore(spec, images, env, host_network=network, thaw=not frozen)
        if not frozen:  # CRIU's action script thawed it; what it left frozen below, if anything
            ct.host.runtime.cgroups.thaw_below(spec.cgroups.container)
        # LXC's restore makes the CT's cgroup but does not write its limits (measured: a
        # restored CT had no memory limit, and LXCFS showed it the host's memory).
        ct.host.runtime.cgroups.apply(spec.cgroups.container, limits)
        ct.host.runtime.cgroups.apply_inner(spec.cgroups.container, limits)
        if frozen:
            _freeze(ct)
            _set_frozen_by(ct, "undump")
    except BaseException:
        if not ct.is_running():
            ct.network_down([])
            driver.umount(area)
        raise
    if not frozen:
        remove_path(images)
    log.info(f"Restoring completed successfully in {time.monotonic() - started:.2f} s")
