"""One CT: where its config and files are, what state it is in, mount, start and stop."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any, NamedTuple

from pyvz import scripts
from pyvz.config import ConfigFile, CtConfig, ct_config
from pyvz.distro.base import Distro
from pyvz.distro.registry import detect
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.net import venet
from pyvz.params import (
    DISABLED,
    FIREWALL_ACCEPT,
    HA_ENABLE,
    HA_PRIO,
    HOSTNAME,
    IOPRIO,
    IPADD,
    LAYOUT,
    LOCAL_GID,
    LOCAL_UID,
    NAMESERVER,
    NETDEV,
    NETIF,
    OSTEMPLATE,
    PRIVATE,
    REPLICATE,
    ROOT,
    SEARCHDOMAIN,
    STOP_TIMEOUT,
    Layout,
)
from pyvz.resources.limits import Limits, has_io_limits
from pyvz.resources.limits import from_config as limits_from_config
from pyvz.resources.policy import disk_quota, refuse_escapes, warn_not_enforced
from pyvz.rootview import RootView
from pyvz.runtime.lxc import RuntimeSpec
from pyvz.storage import pool
from pyvz.storage.base import Area, StorageDriver, driver_for
from pyvz.storage.blockdev import io_device, prefer_bfq
from pyvz.storage.idmap import IdMap

DEFAULT_STOP_TIMEOUT = 60
BOOT_WAIT_TIMEOUT = 120.0


class Status(NamedTuple):
    exists: bool
    mounted: bool
    running: bool
    suspended: bool = False  # stopped, with a dump `vzctl start` restores it from

    def line(self, ctid: int) -> str:
        return (
            f"CTID {ctid} {'exist' if self.exists else 'deleted'} "
            f"{'mounted' if self.mounted else 'unmounted'} {'running' if self.running else 'down'}"
            + (" suspended" if self.suspended else "")
        )


class Container:
    def __init__(self, host: Host, ctid: int) -> None:
        self.host = host
        self.ctid = ctid
        self.paths = host.paths
        self.ran_in: int | None = None  # the foreign network namespace stop() took it out of
        # The CT's venet firewall table is in place already: a migration's receiver installs
        # it ahead (an nftables transaction is ~20 ms of the CT's downtime otherwise).
        self.firewall_ready = False

    # ---- configuration -------------------------------------------------------------------

    def has_config(self) -> bool:
        return self.paths.conf_file(self.ctid).exists()

    def conf_file(self) -> ConfigFile:
        path = self.paths.conf_file(self.ctid)
        if not path.exists():
            raise VzError(ExitCode.NO_CT_CONFIG, f"CT {self.ctid} does not exist (no {path})")
        return ConfigFile.load(path)

    @cached_property
    def config(self) -> CtConfig:
        return ct_config(self.paths, self.host.global_conf, self.conf_file(), self.ctid)

    def reload(self) -> None:
        self.__dict__.pop("config", None)

    def area(self, cfg: CtConfig | None = None) -> Area:
        cfg = cfg or self.config
        private = cfg.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET)
        root = cfg.require(ROOT, ExitCode.VE_ROOT_NOTSET)
        uid = cfg.get(LOCAL_UID) or 0
        gid = cfg.get(LOCAL_GID)
        return Area(self.paths.host(private), self.paths.host(root), IdMap(uid, uid if gid is None else gid))

    def driver(self, cfg: CtConfig | None = None) -> StorageDriver:
        return driver_for((cfg or self.config).get(LAYOUT) or Layout.BTRFS)

    def limits(self, cfg: CtConfig | None = None, live: bool = False) -> Limits:
        """The CT's cgroup limits, I/O ones aimed at the disk under its private area.

        `live`: for a running CT, whose I/O limits may need lifting even when none is set now.
        """
        cfg = cfg or self.config
        if not live and not has_io_limits(cfg):
            return limits_from_config(cfg)  # a start without I/O limits need not find the disk
        device = io_device(self.area(cfg).private)
        if cfg.get(IOPRIO) is not None and (device is None or not prefer_bfq(device)):
            where = f"{device.name} uses {device.scheduler or 'no'} I/O scheduler" if device else "no disk"
            log.warning(f"ioprio is not enforced: {where} (it needs bfq)")
        return limits_from_config(cfg, device.number if device else None)

    def view(self) -> RootView:
        area = self.area()
        uid, gid = self.driver().host_owner(area)
        return RootView(area.root, uid, gid)

    def distro(self) -> Distro:
        from pyvz.templates.manifest import load, path_for

        template = self.config.get(OSTEMPLATE)
        manifest = load(path_for(self.paths.template_cache, template)) if template else None
        return detect(self.view(), manifest.distribution if manifest else None)

    # ---- state ---------------------------------------------------------------------------

    def status(self) -> Status:
        running = self.host.runtime.is_running(self.ctid)
        if not self.has_config():
            return Status(False, False, running)
        pool.mount_existing(self.paths)
        area = self.area()
        exists = area.private.exists()
        suspended = False
        if exists and not running:
            from pyvz.ct.checkpoint import default_dump, resumable

            suspended = resumable(default_dump(self.host, self.ctid))
        return Status(exists, self.driver().is_mounted(area), running, suspended)

    def is_running(self) -> bool:
        return self.host.runtime.is_running(self.ctid)

    def require_exists(self) -> Area:
        self.conf_file()
        pool.mount_existing(self.paths)
        area = self.area()
        if not area.private.exists():
            raise VzError(
                ExitCode.NO_PRIVATE,
                f"Container private area {area.private} does not exist",
            )
        return area

    def script_env(self, area: Area) -> dict[str, str]:
        return {
            "VE_ROOT": str(area.root),
            "VE_PRIVATE": str(area.private),
            "VE_CONFFILE": str(self.paths.conf_file(self.ctid)),
        }

    # ---- mount ---------------------------------------------------------------------------

    def mount(self, explicit: bool = False) -> bool:
        """Mount if needed; True if this call mounted it."""
        area = self.require_exists()
        driver = self.driver()
        if driver.is_mounted(area) and driver.mounted_shifted(area) and not self.is_running():
            driver.umount(area)  # what a restored CT that died leaves; a start mounts it anew
        if driver.is_mounted(area):
            if explicit:
                log.note("Container is already mounted")  # and 0, as vzctl
            return False
        env = self.script_env(area)
        scripts.run_host_action(self.paths, self.ctid, "premount", env)
        try:
            area.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VzError(
                ExitCode.CANT_CREATE_MOUNTPOINT, f"cannot create {area.root}: {err.strerror}"
            ) from None
        driver.mount(area)
        try:
            scripts.run_host_action(self.paths, self.ctid, "mount", env)
        except VzError:
            driver.umount(area)
            raise
        log.info("Container is mounted")
        return True

    def umount(self, explicit: bool = False, area: Area | None = None) -> None:
        area = area or self.require_exists()
        driver = self.driver()
        if self.is_running():
            raise VzError(ExitCode.RUNNING, "Container is running -- stop it first")
        if not driver.is_mounted(area):
            if explicit:
                raise VzError(ExitCode.NOT_MOUNTED, "CT is not mounted")
            return
        env = self.script_env(area)
        scripts.run_host_action(self.paths, self.ctid, "umount", env)
        driver.umount(area)
        scripts.run_host_action(self.paths, self.ctid, "postumount", env)
        log.info("Container is unmounted")

    def apply_distro_files(self, distro: Distro, cfg: CtConfig) -> None:
        """The CT's own files that mirror its config: hostname, hosts, resolv.conf."""
        view = self.view()
        hostname = cfg.get(HOSTNAME)
        if hostname:
            distro.set_hostname(view, hostname)
            log.info(f"Set hostname: {hostname}")
        nameservers, search = cfg.get(NAMESERVER) or (), cfg.get(SEARCHDOMAIN) or ()
        if (nameservers or search) and distro.set_resolver(view, nameservers, search):
            log.info("File resolv.conf was modified")

    # ---- start / stop --------------------------------------------------------------------

    def start(
        self, wait: bool = False, force: bool = False, skip_setup: bool = False, hold: Sequence[str] = ()
    ) -> None:
        """`hold`: a command LXC's small init runs in place of the CT's own init (vzctl run's
        CTs that are not booted: see LxcRuntime.start); no boot to wait for then."""
        if (self.paths.conf_dir / f"{self.ctid}.converting").exists():  # a convert was killed
            from pyvz.ct.convert import finish_interrupted

            finish_interrupted(self)
        if (self.paths.conf_dir / f"{self.ctid}.rebuilding").exists():  # a rebuild was killed
            from pyvz.ct import rebuild

            rebuild.finish_interrupted(self)
        area = self.require_exists()
        if self.is_running():
            raise VzError(ExitCode.RUNNING, "Container is already running")
        area = self._own_id_range(area)
        cfg = self.config
        handing_over = self.paths.conf_dir / f"{self.ctid}.migrating"
        if handing_over.exists():
            raise VzError(
                ExitCode.LOCKED,
                f"CT {self.ctid} was being migrated ({handing_over}): it may run on the destination "
                f"now; `vzmigrate --resolve DEST {self.ctid}` finds out and settles it",
            )
        if cfg.get(DISABLED) and not force:
            raise VzError(
                ExitCode.START_DISABLED, f"CT {self.ctid} is disabled (DISABLED=yes); use --force to start it"
            )
        from pyvz.cluster.namespace import check_may_start

        ha, standbys = cfg.get(HA_ENABLE), cfg.get(REPLICATE)
        protected = bool(ha) or bool(standbys)
        check_may_start(self.paths, self.ctid, protected, cfg.get(HA_PRIO) or 0 if ha else None)
        self.return_to_netns()
        from pyvz.resources import hostlimits

        hostlimits.before_start()  # in the netns the CT will run in: its neighbour table
        routed: tuple[str, ...] = cfg.get(IPADD) or ()
        hostlimits.check_neighbours(len(routed))
        for netif in cfg.get(NETIF) or ():
            if netif.bridge:
                hostlimits.check_bridge(netif.bridge)
        from pyvz.ct import checkpoint

        dump = checkpoint.pending(self.host, self.ctid)
        if dump is not None:
            log.info(f"Dump file {dump} exists, trying to restore from it")
            checkpoint.restore_from(self, dump)
            return
        log.info("Starting container...")
        mounted_here = self.mount()
        try:
            distro = self.distro()
            if not skip_setup:  # --skip_ve_setup: the CT's files as they are
                self.apply_distro_files(distro, cfg)
            self.driver().start_quota(area, disk_quota(cfg))  # limits live on disk: mostly nothing
            spec, limits = self.runtime_spec(area, cfg, distro.halt_signal)
            try:
                self.host.runtime.start(spec, hold)
            finally:
                from pyvz.ct.bindmounts import release

                release(self)  # LXC has bound them in: the CT holds its copies
            self.host.runtime.cgroups.apply_inner(spec.cgroups.container, limits)
            self.network_up(cfg)
        except BaseException:
            if mounted_here and not self.is_running():
                self.driver().umount(area)
            raise
        self._run_ct_action("start")
        log.info("Container start in progress...")
        if wait and not hold:
            self.wait_booted(distro)

    def _own_id_range(self, area: Area) -> Area:
        """A CT adopted from OpenVZ has no LOCAL_UID of its own, so every such CT would run
        in vz.conf's one range: at its first start it gets a range of its own (its files are
        uid 0 on disk, idmapped at start, so this costs no chown)."""
        conf = self.conf_file()
        if conf.get(LOCAL_UID.key or "") or area.idmap.privileged or not self.driver().ids_free:
            return area
        from pyvz.ct.create import taken_uids

        idmap = self.host.allocate_ids(taken_uids(self.host))
        conf.set(LOCAL_UID.key or "", str(idmap.uid))
        conf.set(LOCAL_GID.key or "", str(idmap.gid))
        conf.write()
        self.reload()
        last = idmap.uid + idmap.size - 1
        log.info(f"CT {self.ctid} runs in an id range of its own from now on: {idmap.uid}-{last}")
        return area._replace(idmap=idmap)

    def return_to_netns(self) -> None:
        """Started again after our stop(): back into the network namespace it ran in."""
        if self.ran_in is not None:
            from pyvz.runtime.lxc import enter_netns

            enter_netns(self.ran_in)
            os.close(self.ran_in)
            self.ran_in = None

    def runtime_spec(
        self, area: Area, cfg: CtConfig, halt_signal: str, restoring: bool = False, executing: bool = False
    ) -> tuple[RuntimeSpec, Limits]:
        """What LXC is given to start (or restore) the CT, and the limits it is given;
        `executing`: for a command in the stopped CT (runscript), which is no stop of it."""
        driver = self.driver()
        netifs = cfg.get(NETIF) or ()
        if netifs:
            from pyvz.net.veth import require_bridges

            require_bridges(netifs, [])
        limits = self.limits(cfg)
        for problem in self.host.runtime.cgroups.unenforced(limits):
            log.warning(problem)
        refuse_escapes(cfg)
        warn_not_enforced(cfg, cfg.values, self.host.runtime.cgroups.enforces)
        from pyvz.ct import bindmounts, devices, ephemeral

        spec = RuntimeSpec(
            ctid=self.ctid,
            rootfs=area.root,
            # A restore is given files already shifted (driver.mount_shifted).
            rootfs_options="" if restoring else driver.lxc_rootfs_options(area),
            idmap=area.idmap,
            hostname=cfg.get(HOSTNAME) or f"ct{self.ctid}",
            halt_signal=halt_signal,
            cgroups=self.host.runtime.cgroups_of(self.ctid),
            limits=tuple(self.host.runtime.cgroups.lxc_lines(limits)),
            network=self._network_lines(cfg.get(IPADD) or (), netifs),
            access=devices.start_lines(self, cfg) + tuple(bindmounts.start_lines(self, cfg)),
            hooks=() if executing else ephemeral.lxc_lines(self, cfg),
        )
        return spec, limits

    def init_pid(self) -> int:
        """The running CT's init, whose namespaces live changes enter."""
        runtime = self.host.runtime
        pid = venet.init_pid(runtime.cgroups.procs(runtime.cgroups_of(self.ctid).container))
        if pid is None:
            raise VzError(ExitCode.SET_IP_ERROR, f"cannot find CT {self.ctid}'s init to change its network")
        return pid

    @property
    def ifname(self) -> str:
        """The host side of the CT's venet pair."""
        return venet.host_ifname(self.paths.tag, self.ctid)

    def firewall_table(self) -> str:
        from pyvz.net.firewall import table_name

        return table_name(self.paths.tag, self.ctid)

    def _network_lines(self, addresses: tuple[str, ...], netifs: tuple[Any, ...]) -> tuple[str, ...]:
        lines: list[str] = []
        if addresses:
            from pyvz.atomic import write_atomic

            hook = self.host.runtime.ct_dir(self.ctid) / "venet-up"
            hook.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(hook, venet.up_script(self.ifname, addresses), mode=0o755, durable=False)
            lines += venet.lxc_lines(str(hook), addresses)
        if netifs:
            from pyvz.net.veth import lxc_lines

            lines += lxc_lines(netifs, first=0)
        else:
            lines.append("lxc.net.0.type = empty")  # its own namespace, with only lo
        return tuple(lines)

    def network_up(self, cfg: CtConfig) -> None:
        """Host side of a fresh start or a restore: routes, gateway proxies, the CT's nftables
        tables. If the host refuses, the CT is stopped again: it never runs half-connected."""
        from pyvz.net import firewall, veth

        addresses = cfg.get(IPADD) or ()
        netifs = cfg.get(NETIF) or ()
        if cfg.get(NETDEV):
            from pyvz.net import netdev

            netdev.move_in(self, cfg.get(NETDEV) or (), strict=False)
        if not addresses and not netifs:
            return
        try:
            veth.host_setup(netifs, [])
            if any(n.mac_filter == "on" for n in netifs):
                firewall.install(veth.filter_rules(self.firewall_table(), netifs))
            if not addresses:
                return
            venet.host_setup(self.ifname, addresses)
            if not self.firewall_ready:
                firewall.install(self.firewall_script(cfg))
        except BaseException:
            self.host.runtime.stop(self.ctid, 0, kill=True)
            raise

    def restored_network(self, cfg: CtConfig) -> str:
        """network_up() for a CT about to be restored: host-wide forwarding and the CT's
        firewall table now (its rules name the interface, which need not exist yet), the
        rest as shell for CRIU to run before the CT's processes go on (see
        criu.ACTION_SCRIPT). Checkpointable CTs have venet addresses only."""
        from pyvz.net import firewall

        addresses = cfg.get(IPADD) or ()
        if not addresses:
            return ""
        venet.sysctls([], venet.forwarding(addresses))
        if not self.firewall_ready:
            firewall.install(self.firewall_script(cfg))
        return venet.host_setup_script(self.ifname, addresses)

    def firewall_script(self, cfg: CtConfig) -> str:
        """The nft script of the CT's venet table (its addresses and FIREWALL_ACCEPT)."""
        from pyvz.net import firewall

        addresses = cfg.get(IPADD) or ()
        return firewall.render(self.firewall_table(), self.ifname, addresses, cfg.get(FIREWALL_ACCEPT) or ())

    def network_down(self, prefix: list[str] | None = None, keep_firewall: bool = False) -> None:
        """Remove the CT's firewall table from the namespace it runs in (before it stops;
        after, `prefix` must say where that was) and withdraw its addresses there;
        `keep_firewall`: the caller removes the table later."""
        from pyvz.net import firewall
        from pyvz.net.announce import command
        from pyvz.run import run

        if prefix is None:
            prefix = self.host.runtime.netns_prefix(self.ctid)
        if not keep_firewall:
            firewall.remove(self.firewall_table(), prefix)
        addresses = [venet.bare(a) for a in self.config.get(IPADD) or ()]
        if addresses and not prefix:
            from pyvz.net.announce import withdraw

            withdraw(addresses)  # in our namespace: no Python process to start (~90 ms)
        elif addresses:
            run(command(prefix, addresses, withdrawing=True), check=False)

    def wait_booted(self, distro: Distro) -> None:
        probe = distro.boot_probe
        if probe is None:
            return
        from pyvz.run import run

        deadline = time.monotonic() + BOOT_WAIT_TIMEOUT
        argv = self.host.runtime.attach_argv(self.ctid, list(probe))
        while time.monotonic() < deadline:
            if run(argv, check=False, timeout=BOOT_WAIT_TIMEOUT).returncode == 0:
                log.info("Container boot complete")
                return
            if not self.is_running():
                break
            time.sleep(0.1)
        raise VzError(
            ExitCode.WAIT_FAILED, f"CT {self.ctid} did not finish booting within {BOOT_WAIT_TIMEOUT:g} s"
        )

    def _run_ct_action(self, action: str) -> None:
        text = scripts.ct_action_text(self.paths, self.ctid, action)
        if text is None:
            return
        from pyvz.run import run

        argv = self.host.runtime.attach_argv(self.ctid, ["/bin/sh", "-s"], own_session=True)
        result = run(argv, input=text, check=False)
        if result.returncode != 0:
            raise VzError(
                ExitCode.ACTIONSCRIPT_ERROR,
                f"CT {self.ctid} {action} script failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-300:]}",
            )

    def run_script_stopped(self, text: str) -> int:
        """runscript on a stopped CT (see inside.runscript): mounted for the script, which
        runs as the CT's only process tree under LXC's small init; unmounted after."""
        with self.host.ct_lock(self.ctid):
            area = self.require_exists()
            if self.is_running():
                raise VzError(ExitCode.RUNNING, f"CT {self.ctid} was started meanwhile: run the script again")
            mounted_here = self.mount()
            try:
                spec, _limits = self.runtime_spec(
                    area, self.config, self.distro().halt_signal, executing=True
                )
                return self.host.runtime.execute(spec, ["/bin/sh", "-s"], text)
            finally:
                from pyvz.ct.bindmounts import release

                release(self)
                if mounted_here:
                    self.umount(area=area)

    def stop(self, fast: bool = False, timeout: int | None = None, keep_mounted: bool = False) -> None:
        """`timeout`: seconds before the CT is killed, instead of its STOP_TIMEOUT;
        `keep_mounted`: its files stay mounted at VE_ROOT (--skip-umount)."""
        area = self.require_exists()
        if not self.is_running():
            raise VzError(ExitCode.NOT_RUNNING, f"unable to stop: CT {self.ctid} is not running")
        log.info("Stopping container ...")
        if not fast:
            try:
                self._run_ct_action("stop")
            except VzError as err:
                log.warning(str(err))
        if self.config.get(NETDEV):
            from pyvz.net import netdev

            netdev.move_out(self, self.config.get(NETDEV) or (), strict=False)
        if self.config.get(IPADD) or self.config.get(NETIF):
            self.network_down()
        if timeout is None:
            timeout = self.config.get(STOP_TIMEOUT)
        self.ran_in = self.host.runtime.foreign_netns(self.ctid)
        halted = self.host.runtime.stop(
            self.ctid, DEFAULT_STOP_TIMEOUT if timeout is None else timeout, kill=fast
        )
        if not halted and not fast:  # as vzctl says when a CT does not halt within STOP_TIMEOUT
            log.info("Killing container ...")
        log.info("Container was stopped")
        from pyvz.ct.checkpoint import default_dump, has_dump

        dump = default_dump(self.host, self.ctid)
        if has_dump(dump):  # of an earlier moment of this CT: a start must not go back to it
            from pyvz.storage.base import remove_path

            remove_path(dump)
            log.info(f"Removed {dump}: it is older than the CT's state at this stop")
        if keep_mounted:  # --skip-umount
            return
        self.umount(area=area)
