"""`vzmigrate --from HOST CTID`: pull a CT from an OpenVZ 6/7 host into this one.

The OpenVZ host runs nothing of pyvz's (see openvz.py): this host copies the private area
with rsync (or tar) over ssh, takes the CT's config and action scripts, and drives the
source with its own vzctl. A stopped CT is disabled there (`vzctl set --disabled yes
--save`), copied, and made here. A running one is copied while it runs, stopped there, copied
again (the delta), and started here: a restart migration. An OpenVZ kernel's checkpoint
images cannot be restored on mainline Linux, so there is no live variant.

Never two, never none. Before anything changes on the source, a journal
(etc/vz/conf/CTID.pulling) says what this pull did, and a guard runs `vzmigrate --from HOST
--resolve CTID` if this process dies (kill -9 included). Until the copy is complete here
(phase `copy`), settling means going back: the source is enabled and started again as it
was. Once it is (phase `copied`: the source is stopped and disabled, its files are all
here), settling means going forward without the source: the CT is made and started here;
only if that start fails is it taken apart here again and started there. Once it runs here
(phase `here`), the source is left stopped and disabled and then retired as `-r` says.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, NamedTuple

from pyvz import faults
from pyvz.atomic import write_atomic
from pyvz.config import ConfigFile, CtConfig, name_owner, remove_name_link
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.migrate.openvz import DEFAULT_LOCKDIR, Remote, plain_path
from pyvz.params import BY_KEY, IPADD, PRIVATE, ROOT, Layout, parse_name
from pyvz.resources.policy import disk_quota
from pyvz.run import if_we_die
from pyvz.storage.base import Area, driver_for, remove_with_subvolumes
from pyvz.storage.idmap import IdMap

HOST_ACTIONS = ("premount", "mount", "umount", "postumount")  # they run as root here
# The device nodes an OpenVZ CT's own /dev holds (vzctl made them): anything else in a
# private area (a disk, /dev/mem) would be a door out of the CT.
ALLOWED_NODES = {
    (1, 3),  # null
    (1, 5),  # zero
    (1, 7),  # full
    (1, 8),  # random
    (1, 9),  # urandom
    (5, 0),  # tty
    (5, 1),  # console
    (5, 2),  # ptmx
}


class Options(NamedTuple):
    source: str
    ctid: int
    remove_area: bool = True
    layout: Layout | None = None
    ssh_options: tuple[str, ...] = ()
    rsync_options: tuple[str, ...] = ()


def journal_path(host: Host, ctid: int) -> Path:
    return host.paths.conf_dir / f"{ctid}.pulling"


def target_layout(host: Host, wanted: Layout | None) -> Layout:
    layout = wanted or Layout(host.setting("VE_LAYOUT") or Layout.BTRFS)
    if layout not in (Layout.BTRFS, Layout.SIMFS):
        if wanted is not None:
            raise VzError(MigrateExit.USAGE, f"a CT from OpenVZ arrives as btrfs or simfs, not {layout}")
        layout = Layout.BTRFS  # vz.conf's ploop (OpenVZ's default) or dir: btrfs, as create does
    return layout


def check_tree(top: Path, source: str, ctid: int, image: bool) -> None:
    """What arrived may hold no device node a CT may not have; a ploop image directory holds
    regular files only (a link named like an image would be read from wherever it points)."""
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            shown = os.path.relpath(path, top)
            if stat.S_ISBLK(st.st_mode) or (
                stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) not in ALLOWED_NODES
            ):
                kind = "block" if stat.S_ISBLK(st.st_mode) else "character"
                raise VzError(
                    MigrateExit.APPLY_CONFIG,
                    f"{source}: CT {ctid} holds {shown}, a {kind} device "
                    f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} that a CT may not have; refused",
                )
            if image and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise VzError(
                    MigrateExit.APPLY_CONFIG,
                    f"{source}: CT {ctid}'s ploop directory holds {shown}, which is not a file; refused",
                )


class Puller:
    def __init__(self, host: Host, opts: Options) -> None:
        self.host = host
        self.opts = opts
        self.ctid = opts.ctid
        self.remote = Remote(opts.source, opts.ssh_options, opts.rsync_options)
        self.journal: dict[str, Any] = {}

    # ---- the journal -------------------------------------------------------------------

    def _save(self, **changes: Any) -> None:
        self.journal.update(changes)
        write_atomic(
            journal_path(self.host, self.ctid), json.dumps(self.journal, indent=1) + "\n", mode=0o600
        )

    def _load(self) -> bool:
        try:
            self.journal = json.loads(journal_path(self.host, self.ctid).read_text())
        except FileNotFoundError:
            return False
        return True

    @property
    def area(self) -> Area:
        j = self.journal
        return Area(Path(j["private_here"]), Path(j["root_here"]), IdMap(j["uid"], j["gid"]))

    @property
    def staging(self) -> Path:
        return self.area.incoming

    def _resolve_argv(self) -> list[str]:
        import shlex

        argv = [sys.executable, "-m", "pyvz.cli.vzmigrate", "--from", self.opts.source]
        if self.opts.ssh_options:
            argv.append(f"--ssh={shlex.join(self.opts.ssh_options)}")
        return [*argv, "--resolve", str(self.ctid)]

    # ---- the whole pull ----------------------------------------------------------------

    def run(self) -> None:
        with self.host.ct_lock(self.ctid):
            if journal_path(self.host, self.ctid).exists():
                raise VzError(
                    MigrateExit.LOCKED,
                    f"CT {self.ctid} is being pulled already: "
                    f"`vzmigrate --from {self.opts.source} --resolve {self.ctid}` settles it",
                )
            self._prepare()
            with if_we_die(self._resolve_argv()):
                try:
                    self._copy()
                except BaseException:
                    self._back_out()
                    raise
                self._forward()
                self._retire()

    def _prepare(self) -> None:
        """Everything checked, nothing changed anywhere; ends with the journal written."""
        from pyvz.storage import pool

        ctid, paths, remote = self.ctid, self.host.paths, self.remote
        log.info(f"Starting migration of CT {ctid} from {self.opts.source}")
        layout = target_layout(self.host, self.opts.layout)
        defaults = CtConfig.merge(ctid, self.host.global_conf.items(), {}, paths.vz_conf)
        private = paths.host(defaults.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET))
        root = paths.host(defaults.require(ROOT, ExitCode.VE_ROOT_NOTSET))
        pool.mount_existing(paths)
        if paths.conf_file(ctid).exists() or private.exists():
            raise VzError(MigrateExit.EXISTS, f"CT {ctid} already exists on this host")
        status = remote.status(ctid)
        if not status.exist:
            raise VzError(MigrateExit.NOTEXIST, f"CT {ctid} does not exist on {self.opts.source}")
        if status.suspended:
            raise VzError(
                MigrateExit.UNSUP_CPT_VER,
                f"CT {ctid} is suspended on {self.opts.source}: an OpenVZ kernel's checkpoint cannot "
                "be restored on mainline Linux; resume it there (vzctl restore) first",
            )
        files = remote.config_files(ctid)
        text = files.get(f"conf/{ctid}.conf")
        if text is None:
            raise VzError(MigrateExit.NOTEXIST, f"{self.opts.source} has no config for CT {ctid}")
        vzconf = ConfigFile.parse(files["vz.conf"], Path(f"{self.opts.source}:/etc/vz/vz.conf"))
        conf = ConfigFile.parse(text, paths.conf_file(ctid))
        source = self.opts.source
        value = conf.get("VE_PRIVATE") or vzconf.get("VE_PRIVATE") or "/vz/private/$VEID"
        remote_private = plain_path(source, "VE_PRIVATE", value, ctid)
        lockdir = plain_path(source, "LOCKDIR", vzconf.get("LOCKDIR") or DEFAULT_LOCKDIR, ctid)
        probe = remote.probe(ctid, remote_private)
        if not probe.rsync:
            log.info(f"{source} has no rsync: the files come with tar, in one copy after any stop")
        ids = self._adopt(conf, layout, defaults)
        scripts = {}
        allow_host = (self.host.setting("MIGRATE_HOST_SCRIPTS") or "no").lower() == "yes"
        for name, body in files.items():
            action = name.rsplit(".", 1)[-1]
            if name.startswith(f"conf/{ctid}.") and action != "conf":
                scripts[action] = body
        kept_aside = sorted(a for a in scripts if a in HOST_ACTIONS and not allow_host)
        pool.prepare(paths, private.parent, layout is Layout.BTRFS, self.host.setting("POOL_SIZE"))
        self._save(
            source=source,
            phase="copy",
            running=status.running,
            we_disabled=(conf.get("DISABLED") or "no").lower() not in ("yes", "1", "true", "on"),
            remote_private=remote_private,
            lockdir=lockdir,
            ploop=probe.kind == "ploop",
            rsync=probe.rsync,
            layout=str(layout),
            private_here=str(private),
            root_here=str(root),
            uid=ids.uid,
            gid=ids.gid,
            conf=conf.render(),
            name=conf.get("NAME") or None,
            scripts=scripts,
            kept_aside=kept_aside,
            remove=self.opts.remove_area,
        )

    def _adopt(self, conf: ConfigFile, layout: Layout, defaults: CtConfig) -> IdMap:
        """The OpenVZ config made this host's: its paths, layout and id range; checked as
        create checks an option (every known key parses; name and addresses free here)."""
        from pyvz.ct.create import taken_uids
        from pyvz.net.venet import check_free

        ctid, source = self.ctid, self.opts.source
        conf.set("VE_PRIVATE", self.host.setting("VE_PRIVATE") or str(defaults.raw("VE_PRIVATE")))
        conf.set("VE_ROOT", self.host.setting("VE_ROOT") or str(defaults.raw("VE_ROOT")))
        conf.set("VE_LAYOUT", str(layout))
        ids = self.host.allocate_ids(taken_uids(self.host))  # taken for real at the commit
        conf.set("LOCAL_UID", str(ids.uid))
        conf.set("LOCAL_GID", str(ids.gid))
        cfg = CtConfig.merge(ctid, self.host.global_conf.items(), conf.items(), conf.path)
        for key in cfg.values:
            if key in BY_KEY:
                try:
                    cfg.get(BY_KEY[key])
                except VzError as err:
                    raise VzError(MigrateExit.APPLY_CONFIG, f"{source}: {ctid}.conf: {err.message}") from None
        name = conf.get("NAME")
        if name:
            parse_name(name)
            owner = name_owner(self.host.paths, name)
            if owner is not None:
                raise VzError(MigrateExit.APPLY_CONFIG, f"name {name!r} is used by CT {owner} here")
        addresses: tuple[str, ...] = cfg.get(IPADD) or ()
        try:
            check_free(addresses, self.host.addresses(but=ctid))
        except VzError as err:
            raise VzError(MigrateExit.IP_INUSE, err.message) from None
        return ids

    # ---- phase copy: the source can always be given back -----------------------------

    def _copy(self) -> None:
        j, remote, ctid = self.journal, self.remote, self.ctid
        if j["we_disabled"]:
            remote.set_disabled(ctid, True)  # from here it cannot be started there by mistake
        faults.point(self.host.paths, "pull-disabled")
        remove_with_subvolumes(self.staging)
        self.staging.mkdir(mode=0o700)
        files = self.staging / ("image" if j["ploop"] else "tree")
        if j["ploop"] or Layout(j["layout"]) is not Layout.BTRFS:
            files.mkdir(mode=0o700)
        else:
            from pyvz.storage.btrfs import create_subvolume

            create_subvolume(files)
        if j["running"] and j["rsync"]:
            log.info("Syncing private (while the CT runs)")
            self._transfer(files)
            faults.point(self.host.paths, "pull-precopy")
        if j["running"]:
            log.info(f"Stopping CT {ctid} on {self.opts.source}")
            remote.stop(ctid)
            if remote.status(ctid, j["lockdir"]).running:
                raise VzError(MigrateExit.VE_STOP, f"CT {ctid} still runs on {self.opts.source} after a stop")
            faults.point(self.host.paths, "pull-stopped")
        log.info("Syncing private" + (" (the change since)" if j["running"] and j["rsync"] else ""))
        self._transfer(files)
        check_tree(files, self.opts.source, ctid, j["ploop"])
        if j["ploop"]:
            self._from_image(files, self.staging / "tree")
        self._save(phase="copied")
        faults.point(self.host.paths, "pull-copied")

    def _transfer(self, files: Path) -> None:
        if self.journal["rsync"]:
            self.remote.rsync(self.journal["remote_private"], str(files))
        else:
            self.remote.tar(self.journal["remote_private"], str(files))

    def _from_image(self, image: Path, tree: Path) -> None:
        """A ploop CT's files, read from its image (never written) into the new tree."""
        from pyvz.storage import ploop
        from pyvz.storage.copying import copy_into

        if Layout(self.journal["layout"]) is Layout.BTRFS:
            from pyvz.storage.btrfs import create_subvolume

            create_subvolume(tree)
        else:
            tree.mkdir(mode=0o755)
        log.info("Reading the ploop image")
        with ploop.mounted(image) as inside:
            copy_into(inside, tree)
            os.chmod(tree, os.stat(inside).st_mode & 0o7777)

    def _back_out(self) -> None:
        """The CT goes back to the source as it was there: enabled, and running if it ran.
        This host keeps nothing of it. Unreachable, the journal stays for --resolve."""
        j, ctid = self.journal, self.ctid
        if j.get("phase") == "back":
            self._take_back()
        remove_with_subvolumes(self.staging)
        try:
            if j["we_disabled"]:
                self.remote.set_disabled(ctid, False)
            if j["running"] and not self.remote.status(ctid, j["lockdir"]).running:
                log.info(f"Starting CT {ctid} on {self.opts.source} again")
                self.remote.start(ctid)
        except VzError as err:
            if err.code == MigrateExit.CONNECT:
                log.error(
                    f"{err.message}: CT {ctid} stays as it is on {self.opts.source} (disabled, and "
                    f"stopped if it was stopped there); `vzmigrate --from {self.opts.source} --resolve "
                    f"{ctid}` gives it back once {self.opts.source} answers"
                )
            else:
                log.error(f"CT {ctid} could not be given back on {self.opts.source}: {err.message}")
            return  # the journal stays: --resolve tries again
        journal_path(self.host, ctid).unlink(missing_ok=True)

    def _take_back(self) -> None:
        """The CT came here but did not start: it goes, so that it runs there alone."""
        from pyvz.ct.container import Container
        from pyvz.ct.create import destroy

        ct = Container(self.host, self.ctid)
        if self.host.paths.conf_file(self.ctid).exists() and ct.is_running():
            self.host.runtime.stop(self.ctid, 0, kill=True)
            self.host.runtime.wait_stopped(self.ctid, 10.0)
        if self.host.paths.conf_file(self.ctid).exists() or self.area.private.exists():
            destroy(self.host, self.ctid, lock=False)

    # ---- phase copied: forward, with or without the source ---------------------------

    def _forward(self) -> None:
        """The CT comes into being here (create's order), and starts if it ran there."""
        from pyvz.ct.container import Container

        j, ctid = self.journal, self.ctid
        try:
            self._commit()
            faults.point(self.host.paths, "pull-committed")
            ct = Container(self.host, ctid)
            if j["running"] and not ct.is_running():
                ct.start(force=True)  # it ran there; DISABLED is the source's mark, not its own
            faults.point(self.host.paths, "pull-started")
        except BaseException as err:
            self._save(phase="back")
            log.error(f"CT {ctid} did not come up here: {getattr(err, 'message', err)}; giving it back")
            self._back_out()
            if isinstance(err, VzError):
                raise VzError(MigrateExit.VE_START, err.message) from None
            raise
        self._save(phase="here")
        log.info(f"CT {ctid} is here now" + (" and running" if j["running"] else ""))

    def _commit(self) -> None:
        j, ctid = self.journal, self.ctid
        if self.area.private.exists():
            return  # made by the run that was interrupted
        conf_path = self.host.paths.conf_file(ctid)
        if conf_path.exists():  # killed inside new_ct: its config and name, without files
            name = ConfigFile.load(conf_path).get("NAME")
            if name:
                remove_name_link(self.host.paths, name, ctid)
            conf_path.unlink()
        conf = ConfigFile.parse(j["conf"], conf_path)
        with self.host.root_lock():
            self._own_ids(conf)  # now, under the root's lock: a CT made since may have taken some
            self._make(conf)
        remove_with_subvolumes(self.staging)
        if j["kept_aside"]:
            log.warning(
                f"CT {ctid}'s host-side scripts are kept aside, not run: "
                f"{', '.join(j['kept_aside'])} (MIGRATE_HOST_SCRIPTS=yes in vz.conf allows them)"
            )

    def _own_ids(self, conf: ConfigFile) -> None:
        from pyvz.ct.create import taken_uids

        ids = self.host.allocate_ids(taken_uids(self.host))
        conf.set("LOCAL_UID", str(ids.uid))
        conf.set("LOCAL_GID", str(ids.gid))
        self._save(uid=ids.uid, gid=ids.gid, conf=conf.render())

    def _make(self, conf: ConfigFile) -> None:
        """create's order: config and name link, scripts, then the private area by one rename."""
        from pyvz.ct.create import new_ct

        j, ctid, area = self.journal, self.ctid, self.area
        name = j["name"]
        if name and name_owner(self.host.paths, name) is not None:
            raise VzError(MigrateExit.APPLY_CONFIG, f"name {name!r} was taken here meanwhile")
        driver = driver_for(Layout(j["layout"]))
        tree = self.staging / "tree"
        with new_ct(self.host, ctid, conf, name, area, driver):
            for action, body in j["scripts"].items():
                target = self.host.paths.action_script(ctid, action)
                aside = action in j["kept_aside"]
                if aside:
                    target = target.with_name(target.name + ".migrated")
                write_atomic(target, body, mode=0o600 if aside else 0o755)
            cfg = CtConfig.merge(ctid, self.host.global_conf.items(), conf.items(), conf.path)
            driver.apply_quota(area._replace(private=tree), disk_quota(cfg))
            os.rename(tree, area.private)  # the commit point: the CT is here

    # ---- phase here: the source retires -------------------------------------------------

    def _retire(self) -> None:
        j, ctid, source = self.journal, self.ctid, self.opts.source
        try:
            faults.point(self.host.paths, "pull-retire")
            if j["remove"]:
                self.remote.destroy(ctid)
                log.info(f"CT {ctid} was destroyed on {source}")
            else:
                self.remote.keep(ctid)
                log.info(
                    f"CT {ctid} stays on {source}, stopped and disabled, its config renamed "
                    f"/etc/vz/conf/{ctid}.conf.migrated"
                )
        except VzError as err:
            log.warning(
                f"{err.message}: CT {ctid} stays on {source} stopped and disabled; "
                f"`vzmigrate --from {source} --resolve {ctid}` finishes there"
            )
            return
        journal_path(self.host, ctid).unlink(missing_ok=True)

    # ---- settling an interrupted pull -------------------------------------------------

    def resolve(self) -> None:
        with self.host.ct_lock(self.ctid, wait=300.0):
            if not self._load():
                log.info(f"CT {self.ctid} is not being pulled; nothing to resolve")
                return
            if self.journal["source"] != self.opts.source:
                raise VzError(
                    MigrateExit.USAGE, f"CT {self.ctid} is being pulled from {self.journal['source']}"
                )
            phase = self.journal["phase"]
            log.info(f"Settling the pull of CT {self.ctid} from {self.opts.source} (phase {phase})")
            if phase in ("copy", "back"):
                self._back_out()
                if journal_path(self.host, self.ctid).exists():
                    raise VzError(MigrateExit.CONNECT, f"CT {self.ctid} is not settled yet")
                log.info(f"CT {self.ctid} stays on {self.opts.source}")
                return
            if phase == "copied":
                self._forward()
            self._retire()
            if journal_path(self.host, self.ctid).exists():
                raise VzError(
                    MigrateExit.CONNECT, f"CT {self.ctid} is here; {self.opts.source} is not settled"
                )


def pull(host: Host, opts: Options) -> None:
    Puller(host, opts).run()


def resolve(host: Host, opts: Options) -> None:
    Puller(host, opts).resolve()
