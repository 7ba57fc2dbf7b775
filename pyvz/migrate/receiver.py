"""`vzmigrate --receive`: the receiving end of a migration, run by sshd as the forced command
of a sender's restricted key (see keys.py).

It takes one CT per session and trusts nothing the sender says: the CTID, name and addresses
must be free here; the config is checked like user input (paths inside this host's root,
every known key parsed, privileged CTs only where vz.conf allows them), this host's own
VE_PRIVATE/VE_ROOT are used; host-side action scripts are kept aside unless vz.conf says
MIGRATE_HOST_SCRIPTS=yes; every btrfs stream is checked command by command
(sendstream.StreamChecker) on its way into `btrfs receive --chroot`, so it can create only
the one subvolume it announces and use only subvolumes this transfer brought.

Everything is built in a staging directory beside the private area. The CT comes into being
in the order create uses (config and name link, snapshots, then the private area last, by
one rename): until that rename it reads as `deleted`, and the next session or `vzctl
destroy` sweeps what an interrupted one left. Nothing outside the CT's own areas is touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvz import __version__, faults
from pyvz.atomic import write_atomic
from pyvz.config import ConfigFile, CtConfig, name_owner, remove_name_link
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.host import Host, check_subids, cpu_flags
from pyvz.log import log
from pyvz.migrate.wire import VERSION, Message, Wire
from pyvz.params import BY_KEY, IPADD, PRIVATE, ROOT, Layout, parse_ctid, parse_name
from pyvz.resources.policy import disk_quota
from pyvz.run import if_we_die, piped
from pyvz.storage import pool
from pyvz.storage.base import Area, remove_path, remove_with_subvolumes
from pyvz.storage.idmap import IdMap

if TYPE_CHECKING:
    from pyvz.ct.container import Container

HOST_ACTIONS = ("premount", "mount", "umount", "postumount")
CT_ACTIONS = ("start", "stop")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


def _field(message: Message, key: str, kind: type, optional: bool = False) -> Any:
    value = message.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad or missing {key!r} in {message.get('op')}")
    return value


def _inside(paths_root: Path, path: Path) -> bool:
    real = os.path.normpath(path)
    root = os.path.normpath(paths_root)
    return root == "/" or real == root or real.startswith(root + "/")


class Receiver:
    def __init__(self, host: Host, wire: Wire, peer: str) -> None:
        self.host = host
        self.paths = host.paths
        self.wire = wire
        self.peer = peer
        self.ctid = 0
        self.stack = ExitStack()
        self.area: Area | None = None
        self.layout = Layout.BTRFS
        self.conf: ConfigFile | None = None
        self.name: str | None = None
        self.scripts: dict[str, str] = {}
        self.kept_aside: list[str] = []
        self.received: dict[str, str] = {}  # stream name -> the UUID it arrived as
        self.snapshot_configs: dict[str, str] = {}
        self.sender_ids = IdMap(0, 0)
        self.online = False
        self.committed = False
        self.firewall = False  # the CT's firewall table is installed ahead (see _firewall_ahead)

    # ---- the session ---------------------------------------------------------------------

    def serve(self) -> None:
        from pyvz.migrate.wire import Lost

        with self.stack:
            try:
                self._serve()
            except Lost:
                self._sweep()  # the sender went away: nothing it sent may stay half-made
                raise

    def _serve(self) -> None:
        from pyvz.migrate.wire import Lost

        while True:
            message = self.wire.receive()
            op = message["op"]
            if op == "bye":
                self._sweep()  # a session that ends before its commit leaves nothing
                return
            if op in ("replicate", "replicate-remove") and not self.ctid:
                # The same key may keep replicas here (vzreplicate): that mode takes the
                # session over, with its own checks (replica_receiver.py).
                from pyvz.migrate.replica_receiver import ReplicaReceiver

                ReplicaReceiver(self.host, self.wire, self.peer).serve(message)
                return
            handler = getattr(self, f"op_{op}", None)
            if handler is None or (op != "hello" and op != "status" and not self.ctid):
                self.wire.refuse(VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unexpected {op!r}"))
                return
            try:
                try:
                    handler(message)
                except (Lost, KeyboardInterrupt):
                    raise
                except OSError as err:  # what the checks above did not foresee: one line
                    raise VzError(ExitCode.SYSTEM_ERROR, f"{op} failed here: {err}") from None
            except Lost:
                raise
            except VzError as err:
                log.error(f"migration from {self.peer}: {err.message}")
                self.wire.refuse(err)
                if op in ("hello", "stream", "commit"):
                    self._sweep()
                    return

    @property
    def staging(self) -> Path:
        assert self.area is not None
        return self.area.incoming

    def _defaults(self, ctid: int) -> CtConfig:
        return CtConfig.merge(ctid, self.host.global_conf.items(), {}, self.paths.vz_conf)

    # ---- hello: is there room for this CT here? ----------------------------------------------

    def _drop_stale_handover(self, ctid: int) -> None:
        """A marker of this host's own earlier hand-over of the CT, with nothing of the CT
        left here (a sender killed after taking it apart, before the marker went): that
        hand-over ended, the CT ran elsewhere and now comes back. Left, the marker would
        refuse the arriving CT's start."""
        from pyvz.migrate.sender import marker

        stale = marker(self.host, ctid)
        if stale.exists():
            log.info(f"CT {ctid}: this host's earlier hand-over of it had ended; its marker goes")
            stale.unlink(missing_ok=True)

    def op_hello(self, message: Message) -> None:
        if _field(message, "version", int) != VERSION:
            raise VzError(MigrateExit.UNSUP_CPT_VER, f"this host speaks migration protocol {VERSION}")
        ctid = parse_ctid(str(_field(message, "ctid", int)))
        self.stack.enter_context(self.host.ct_lock(ctid))
        self.ctid = ctid
        layout = _field(message, "layout", str)
        if layout not in (Layout.BTRFS, Layout.DIR):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"unknown layout {layout!r}")
        self.layout = Layout(layout)
        defaults = self._defaults(ctid)
        private = self.paths.host(defaults.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET))
        root = self.paths.host(defaults.require(ROOT, ExitCode.VE_ROOT_NOTSET))
        self.area = Area(private, root, self.host.allocate_ids(set()))  # id range: see op_config
        pool.mount_existing(self.paths)  # to see what is there; made only once the CT may come
        self._sweep_leftovers()
        if self.paths.conf_file(ctid).exists() or private.exists():
            raise VzError(MigrateExit.EXISTS, f"CT {ctid} already exists on this host")
        self._drop_stale_handover(ctid)
        name = _field(message, "name", str, optional=True)
        if name:
            self.name = parse_name(name)
            owner = name_owner(self.paths, self.name)
            if owner is not None:
                raise VzError(MigrateExit.APPLY_CONFIG, f"name {name!r} is used by CT {owner} here")
        addresses = (
            IPADD.parse(" ".join(_field(message, "addresses", list))) if message.get("addresses") else ()
        )
        from pyvz.net.venet import check_free

        try:
            check_free(addresses, self.host.addresses(but=ctid))
        except VzError as err:
            raise VzError(MigrateExit.IP_INUSE, err.message) from None
        criu = None
        self.online = bool(message.get("online"))
        if self.online:
            from pyvz.runtime.criu import Criu

            Criu(self.paths).require(ExitCode.RESTORE_ERROR)
            criu = True
        pool.prepare(self.paths, private.parent, self.layout == Layout.BTRFS, self.host.setting("POOL_SIZE"))
        need = _field(message, "bytes", int)
        free = shutil.disk_usage(private.parent).free
        if need > free:
            raise VzError(
                ExitCode.NO_DISK_SPACE,
                f"CT {ctid} needs {need >> 20} MB and {private.parent} has {free >> 20} MB free",
            )
        self._staging_dir()
        self.wire.ok(
            pyvz=__version__, free=free, criu=criu, cpu_flags=sorted(cpu_flags()), private=str(private)
        )

    def _staging_dir(self) -> None:
        self.staging.mkdir(mode=0o700)
        (self.staging / "recv").mkdir(mode=0o700)
        write_atomic(self.staging / "peer", f"{self.peer}\n", mode=0o600)

    # ---- config: checked like user input ----------------------------------------------------

    def op_config(self, message: Message) -> None:
        assert self.area is not None
        text = _field(message, "text", str)
        conf = ConfigFile.parse(text, self.paths.conf_file(self.ctid))
        for key in ("VE_PRIVATE", "VE_ROOT"):
            value = conf.get(key)
            if value and not _inside(
                self.paths.root, self.paths.host(value.replace("$VEID", str(self.ctid)))
            ):
                raise VzError(ExitCode.INVALID_CONFIG, f"{key}={value!r} points outside this host's root")
        defaults = self._defaults(self.ctid)
        conf.set("VE_PRIVATE", self.host.setting("VE_PRIVATE") or str(defaults.raw("VE_PRIVATE")))
        conf.set("VE_ROOT", self.host.setting("VE_ROOT") or str(defaults.raw("VE_ROOT")))
        if (conf.get("VE_LAYOUT") or Layout.BTRFS) != self.layout:
            raise VzError(ExitCode.INVALID_CONFIG, "VE_LAYOUT does not match the announced layout")
        from pyvz.storage.idmap import IdMap

        sent_uid, sent_gid = (
            conf.get("LOCAL_UID") or "0",
            conf.get("LOCAL_GID") or conf.get("LOCAL_UID") or "0",
        )
        if not sent_uid.isdigit() or not sent_gid.isdigit():
            raise VzError(ExitCode.INVALID_CONFIG, "LOCAL_UID/LOCAL_GID must be numbers")
        self.sender_ids = IdMap(int(sent_uid), int(sent_gid))
        self.area = self.area._replace(idmap=self._id_range(self.sender_ids, bool(message.get("keep_ids"))))
        conf.set("LOCAL_UID", str(self.area.idmap.uid))
        conf.set("LOCAL_GID", str(self.area.idmap.gid))
        name = conf.get("NAME")
        if (name or None) != self.name:
            raise VzError(ExitCode.INVALID_CONFIG, "NAME in the config is not the announced name")
        cfg = CtConfig.merge(self.ctid, self.host.global_conf.items(), conf.items(), conf.path)
        for key in cfg.values:
            if key in BY_KEY:
                cfg.get(BY_KEY[key])  # every value must parse, as create demands
        if tuple(IPADD.parse(cfg.raw("IP_ADDRESS") or "")) != _addresses(message):
            raise VzError(ExitCode.INVALID_CONFIG, "IP_ADDRESS in the config is not the announced one")
        self.conf = conf
        scripts = _field(message, "scripts", dict)
        self.scripts, self.kept_aside = {}, []
        allow_host = (self.host.setting("MIGRATE_HOST_SCRIPTS") or "no").lower() == "yes"
        for action, body in scripts.items():
            if action not in HOST_ACTIONS + CT_ACTIONS or not isinstance(body, str):
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"unknown action script {action!r}")
            if action in HOST_ACTIONS and not allow_host:
                self.kept_aside.append(action)
            self.scripts[action] = body
        configs = _field(message, "snapshot_configs", dict)
        for uuid, body in configs.items():
            if not _UUID_RE.match(uuid) or not isinstance(body, str):
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad snapshot config {uuid!r}")
            ConfigFile.parse(body, Path(f"snapshot {uuid}"))
        self.snapshot_configs = dict(configs)
        self._firewall_ahead(cfg)
        self.wire.ok(kept_aside=self.kept_aside, local_uid=self.area.idmap.uid)

    def _firewall_ahead(self, cfg: CtConfig) -> None:
        """A live move's CT gets its venet firewall table now rather than in its downtime
        (an nftables transaction, ~20 ms); _sweep takes it back if the CT does not come to
        run here. Its rules name an interface that the restore makes."""
        from pyvz.params import NETIF

        addresses, netifs = cfg.get(IPADD) or (), cfg.get(NETIF) or ()
        if not self.online or not addresses or netifs:
            return
        from pyvz.ct.container import Container
        from pyvz.net.firewall import install

        self.firewall = True  # first: a half-done install is swept too
        install(Container(self.host, self.ctid).firewall_script(cfg))

    def _drop_firewall(self) -> None:
        """The CT's firewall table (_firewall_ahead's), unless the CT runs here now."""
        from pyvz.ct.container import Container
        from pyvz.net.firewall import remove

        ct = Container(self.host, self.ctid)
        if not ct.is_running():
            remove(ct.firewall_table())
        self.firewall = False

    def _id_range(self, sent: IdMap, keep: bool) -> IdMap:
        from pyvz.ct.create import taken_uids

        if sent.privileged:
            if (self.host.setting("MIGRATE_ALLOW_PRIVILEGED") or "no").lower() != "yes":
                raise VzError(
                    ExitCode.INVALID_CONFIG,
                    "a privileged CT (LOCAL_UID 0) is refused here "
                    "(vz.conf MIGRATE_ALLOW_PRIVILEGED=yes allows it)",
                )
            return sent
        taken = taken_uids(self.host)
        if keep:  # a live CT's processes keep the ids they have
            if sent.uid in taken:
                raise VzError(
                    ExitCode.INVALID_CONFIG,
                    f"ids {sent.uid}+ are used by another CT here, and a live CT cannot change them "
                    "(migrate it without --online)",
                )
            check_subids(sent)
            return sent
        return self.host.allocate_ids(taken)

    # ---- streams: the CT's files, checked on their way in -----------------------------------

    def op_stream(self, message: Message) -> None:
        kind = _field(message, "kind", str)
        name = _field(message, "name", str)
        if not _NAME_RE.match(name) or name in self.received:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad stream name {name!r}")
        if kind == "btrfs" and self.layout == Layout.BTRFS:
            self.received[name] = self._receive_btrfs(name)
            if name != "final":
                from pyvz.run import run

                # Written out now, while the CT still runs on the sender: btrfs writes out a
                # subvolume's dirty data before it snapshots it, so the commit would wait for
                # the pre-copy's gigabyte in the CT's downtime (0.25 s for 1 GB here).
                run(["sync", "--file-system", str(self.staging / "recv")])
        elif kind == "tar" and name in ("files", "dump"):
            self._receive_tar(name)
            self.received[name] = ""
        else:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"unexpected {kind} stream {name!r}")
        self.wire.ok(received=name)

    def _receive_btrfs(self, name: str) -> str:
        from pyvz.migrate.sendstream import StreamChecker

        # A stream may not claim the UUID of anything already on the pool: btrfs receive
        # finds parents and clone sources by UUID, which would lead it into another CT.
        checker = StreamChecker(name, set(self.received.values()), self._taken_uuids())
        target = self.staging / "recv"
        argv = ["btrfs", "receive", "-q", "-e", "-C", str(target)]
        try:
            with piped(argv, "w", error_code=MigrateExit.COPY) as receive:
                for chunk in self.wire.data():
                    checker.feed(chunk)
                    _write_all(receive.write_fd, chunk)
                    faults.point(self.paths, "receiving")
                checker.finish()
        except BaseException:
            self.wire.drain()
            raise
        return str(checker.uuid)

    def _dump_staging(self) -> Path:
        """Where CRIU images arrive: beside the dump directory, to be renamed into it."""
        from pyvz.ct.checkpoint import default_dump

        dump = default_dump(self.host, self.ctid)
        return dump.with_name(f".{dump.name}.incoming")

    def _taken_uuids(self) -> set[str]:
        assert self.area is not None
        return taken_uuids(self.area.private.parent)

    def _receive_tar(self, name: str) -> None:
        target = self._dump_staging() if name == "dump" else self.staging / name
        remove_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(mode=0o700)
        # GNU tar refuses absolute and ".." member names and defers symlinks that could lead
        # a later member outside the target; ids and modes are kept as sent.
        argv = [
            "tar",
            "-C",
            str(target),
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpf",
            "-",
        ]
        try:
            with piped(argv, "w", error_code=MigrateExit.COPY) as tar:
                for chunk in self.wire.data():
                    _write_all(tar.write_fd, chunk)
        except BaseException:
            self.wire.drain()
            raise

    # ---- commit: the CT comes into being here ----------------------------------------------

    def op_commit(self, message: Message) -> None:
        assert self.area is not None and self.conf is not None
        snapshots = _field(message, "snapshots", list)
        current = _field(message, "current", str)
        files = _field(message, "files", str)
        start = bool(message.get("start"))
        entries = [_snapshot_entry(entry) for entry in snapshots]
        for entry in entries:
            if f"snap-{entry['uuid']}" not in self.received:
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"snapshot {entry['uuid']} was not sent")
        if files not in self.received or (files != "files") == (self.layout == Layout.DIR):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"the CT's files {files!r} were not sent")
        if current and current not in {e["uuid"] for e in entries}:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "current snapshot is not in the list")
        from pyvz.ct.create import new_ct
        from pyvz.storage.base import driver_for
        from pyvz.storage.btrfs import snapshot

        driver = driver_for(self.layout)
        staged_snapshots = self.staging / "snapshots"
        staged_snapshots.mkdir(mode=0o700)
        for entry in entries:
            holder = staged_snapshots / entry["uuid"]
            holder.mkdir(mode=0o700)
            # A read-only subvolume cannot move to another directory; a snapshot of it can
            # be made there (O(1)), and the received one goes with the staging directory.
            snapshot(self.staging / "recv" / f"snap-{entry['uuid']}", holder / "fs", readonly=True)
            if entry["uuid"] in self.snapshot_configs:
                (holder / "ve.conf").write_text(self.snapshot_configs[entry["uuid"]])
        index = {"current": current, "snapshots": entries}
        write_atomic(staged_snapshots / "snapshots.json", json.dumps(index, indent=1) + "\n", mode=0o600)
        staged = self.staging / "private"
        self._stage_private(staged, files)
        write_atomic(self.staging / "commit", f"{message.get('txid', '')}\n", mode=0o600)
        self.conf.path = self.paths.conf_file(self.ctid)
        area = self.area
        with new_ct(self.host, self.ctid, self.conf, self.name, area, driver, reserve=False):
            self._install_scripts()
            if entries:
                os.rename(staged_snapshots, area.snapshots)
            if "dump" in self.received:
                from pyvz.ct.checkpoint import default_dump

                self._fit_dump(self._dump_staging(), driver, staged)
                dump = default_dump(self.host, self.ctid)
                remove_path(dump)
                os.rename(self._dump_staging(), dump)
            self._set_quota(driver, area._replace(private=staged))
            faults.point(self.paths, "staged")
            # Who sent it, for `status`: it counts once the private area is in place too.
            write_atomic(self._arrival(area), f"{self.peer}\n", mode=0o600)
            os.rename(staged, area.private)  # the commit point: from here the CT is here
        # Never none: from the commit point on, a receiver killed before the CT runs leaves
        # a guard that starts it (a restored CT from its dump).
        with if_we_die(self._start_argv() if start else ["true"]):
            faults.point(self.paths, "committed")
            self.committed = True  # the received rounds go at the session's end (see _sweep)
            running = False
            if start:
                from pyvz.ct.container import Container

                ct = Container(self.host, self.ctid)
                ct.firewall_ready = self.firewall
                try:
                    faults.point(self.paths, "starting")
                    ct.start()
                except BaseException:
                    self._take_back(ct)
                    raise
                running = ct.is_running()
            faults.point(self.paths, "started")
        self.wire.ok(running=running, kept_aside=self.kept_aside)

    def _take_back(self, ct: Container) -> None:
        """The CT came in but would not start here. Told so, the sender runs it there again,
        so it must not stay here (never two): it is taken apart. A kill before the private
        area goes leaves the guard that starts it here, and the sender, which had no
        answer, waits for `vzmigrate --resolve`, which finds it here."""
        from pyvz.ct.create import destroy

        if ct.is_running():  # a failed restore's processes may still be dying
            self.host.runtime.stop(self.ctid, 0, kill=True)
            self.host.runtime.wait_stopped(self.ctid, 10.0)
        try:
            destroy(self.host, self.ctid, lock=False)
        except VzError as err:
            # Not taken back: the sender must not start it there, but wait for --resolve.
            raise VzError(
                MigrateExit.CONNECT,
                f"CT {self.ctid} neither started here nor could be taken apart again "
                f"({err.message}); `vzmigrate --resolve` on the source settles it",
            ) from None

    def _start_argv(self) -> list[str]:
        import sys

        return [sys.executable, "-m", "pyvz.cli.vzctl", "start", str(self.ctid)]

    def _stage_private(self, staged: Path, files: str) -> None:
        assert self.area is not None
        if self.layout == Layout.BTRFS:
            from pyvz.storage.btrfs import snapshot

            snapshot(self.staging / "recv" / files, staged)  # writable, from the last round
            return
        from pyvz.params import OSTEMPLATE
        from pyvz.storage.overlay import shift_ids
        from pyvz.storage.trees import unpacked_tree
        from pyvz.templates import cache

        assert self.conf is not None
        tree = self.staging / "files"
        if not (tree / "fs").is_dir():
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "the dir layout's files have no upper layer")
        template = OSTEMPLATE.parse(self.conf.get("OSTEMPLATE") or "")
        lower = unpacked_tree(cache.require(self.paths, template), self.area.private.parent, False)
        for extra in ("lower", "work", "stage"):
            remove_path(tree / extra)
        os.symlink(lower, tree / "lower")
        (tree / "work").mkdir(mode=0o755)
        shift_ids(tree / "fs", self.sender_ids, self.area.idmap)
        os.rename(tree, staged)

    def _fit_dump(self, dump: Path, driver: Any, staged: Path) -> None:
        """A dump moved with the CT fits its files here: they arrived as they were dumped.
        Fingerprinted before the commit point (a rename changes neither fingerprint), so a
        guard's `vzctl start` after a kill finds a dump that fits."""
        from pyvz.ct.checkpoint import META

        assert self.area is not None
        meta = json.loads((dump / META).read_text())
        meta.update(
            ctid=self.ctid,
            local_uid=self.area.idmap.uid,
            local_gid=self.area.idmap.gid,
            # Quick: the files arrived as they were dumped, and this is the CT's downtime.
            fingerprint=driver.fingerprint(self.area._replace(private=staged), quick=True),
        )
        write_atomic(dump / META, json.dumps(meta, indent=1) + "\n", mode=0o600)

    def _set_quota(self, driver: Any, staged: Area) -> None:
        """The disk quota, on the staged subvolume: it holds from the commit point on."""
        assert self.conf is not None
        cfg = CtConfig.merge(self.ctid, self.host.global_conf.items(), self.conf.items(), self.paths.vz_conf)
        driver.apply_quota(staged, disk_quota(cfg))

    def _install_scripts(self) -> None:
        for action, body in self.scripts.items():
            target = self.paths.action_script(self.ctid, action)
            if action in self.kept_aside:
                target = target.with_name(target.name + ".migrated")
            write_atomic(target, body, mode=0o600 if action in self.kept_aside else 0o755)

    # ---- status: did a CT this peer sent arrive? ---------------------------------------------

    @staticmethod
    def _arrival(area: Area) -> Path:
        return area.private.with_name(f".{area.private.name}.received")

    def op_status(self, message: Message) -> None:
        """Whether a CT this key sent is here. It waits for a session still at work on that
        CT (the sender may have died in the middle of its commit), so it never answers
        "not here" for a CT about to arrive."""
        from pyvz.lock import Lock

        ctid = parse_ctid(str(_field(message, "ctid", int)))
        defaults = self._defaults(ctid)
        private = self.paths.host(defaults.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET))
        with Lock(self.host.lock_dir / f"{ctid}.lck", f"CT {ctid}", wait=300.0):
            try:
                arrived = self._arrival(Area(private, private, IdMap(0, 0))).read_text().strip() == self.peer
            except FileNotFoundError:
                arrived = False
            arrived = arrived and private.exists()
        self.wire.ok(arrived=arrived)

    # ---- leftovers ---------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Take back this session's own staging: all of it after a refused or broken
        transfer; after a commit, the received rounds that are left (deleting a subvolume
        is ~70 ms, after the CT runs rather than in its downtime)."""
        if self.firewall:
            self._drop_firewall()
        if self.area is None or not self.staging.exists():
            return
        if self.committed:
            self._remove_staging()
        elif not self.area.private.exists():
            self._remove_staging()
            remove_path(self._dump_staging())

    def _sweep_leftovers(self) -> None:
        """What an interrupted earlier session left for this CTID: its staging, and a config,
        name link and snapshots of a commit that never reached its commit point."""
        assert self.area is not None
        if not self.staging.exists():
            return
        if not self.area.private.exists():
            self._drop_firewall()  # an interrupted live move may have installed it ahead
        if (self.staging / "commit").exists() and not self.area.private.exists():
            conf_path = self.paths.conf_file(self.ctid)
            if conf_path.exists():
                name = ConfigFile.load(conf_path).get("NAME")
                if name:
                    remove_name_link(self.paths, name, self.ctid)
                conf_path.unlink()
            for action in HOST_ACTIONS + CT_ACTIONS:
                for suffix in ("", ".migrated"):
                    path = self.paths.action_script(self.ctid, action)
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            if self.area.snapshots.exists():
                from pyvz.storage.base import driver_for

                driver_for(self.layout).delete_snapshots(self.area)
            from pyvz.ct.checkpoint import default_dump

            remove_path(default_dump(self.host, self.ctid))
        self._remove_staging()

    def _remove_staging(self) -> None:
        remove_with_subvolumes(self.staging)


def taken_uuids(pool_dir: Path) -> set[str]:
    """Every UUID and received UUID on the pool: a stream may claim none of them."""
    from pyvz.run import run

    listing = run(["btrfs", "subvolume", "list", "-uR", str(pool_dir)]).stdout
    return set(re.findall(r"uuid ([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})", listing))


def _snapshot_entry(entry: Any) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "bad snapshot entry")
    fields = {}
    for key in ("uuid", "parent", "date", "name", "desc"):
        value = entry.get(key, "")
        if not isinstance(value, str) or len(value) > 4096:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad snapshot field {key!r}")
        fields[key] = value
    if not _UUID_RE.match(fields["uuid"]) or fields["parent"] and not _UUID_RE.match(fields["parent"]):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "bad snapshot id")
    return fields


def _addresses(message: Message) -> tuple[str, ...]:
    if not message.get("addresses"):
        return ()
    return tuple(IPADD.parse(" ".join(str(a) for a in _field(message, "addresses", list))))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(peer: str) -> int:
    """The forced command's body: one session on stdin/stdout."""
    from pyvz.migrate.keys import check_fingerprint

    host = Host()
    # The protocol owns the session's stdin and stdout; what pyvz and the commands it runs
    # print goes to stderr (the sender's log), never into the stream.
    channel_in, channel_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    import fcntl

    for fd in (channel_in, channel_out):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)  # sshd's pipes: fewer, larger reads
        except OSError:
            pass  # a socket, or over the limit: fine as it is
    timeout = float(host.setting("MIGRATE_TIMEOUT", "30") or 30)
    wire = Wire(channel_in, channel_out, "the sender", timeout=timeout)
    receiver = Receiver(host, wire, check_fingerprint(peer))
    receiver.serve()
    return 0
