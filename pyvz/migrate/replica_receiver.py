"""The standby's end of a replication run: the replication mode of `vzmigrate --receive`.

sshd runs the same forced command for a host's migration key whatever it asks for, and a
session that opens with `replicate` instead of `hello` is served here. What the key can do in
this mode is only: keep (and refresh) a replica of one of its own CTs in this host's replica
store, or drop a replica it sent. It cannot touch a CT here (a CTID that is a CT here is
refused), nor another key's replica, nor anything outside the store, and the stream is
checked like a migration's (sendstream.StreamChecker under `btrfs receive --chroot`): it
may create only the one subvolume `fs` in the run's staging, a full stream or a snapshot of
the replica this key sent last, and nothing else. The config is checked like user input
now, so that a replica that could not become a CT here is refused while its host still
runs.

The protocol (each request answered `ok` or refused, one line):

    replicate   {version, ctid, source, layout}     -> {parent: UUID or null, taken}
    config      {text, scripts}
    stream      {kind: btrfs, name: fs, incremental, bytes} + data -> {bytes}
    commit      {taken, size}                        -> {received}
    bye
    replicate-remove {ctid}                          -> {removed}
"""

from __future__ import annotations

import re
import shutil
import socket
from contextlib import ExitStack
from pathlib import Path

from pyvz import __version__, faults
from pyvz.config import ConfigFile, CtConfig
from pyvz.errors import ExitCode, MigrateExit, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.migrate.receiver import CT_ACTIONS, HOST_ACTIONS, _field, _inside, _write_all, taken_uuids
from pyvz.migrate.replicas import FILES, ReplicaStore, meta_json, private_dir, write_staged
from pyvz.migrate.wire import VERSION, Lost, Message, Wire
from pyvz.params import BY_KEY, Layout, parse_ctid, parse_name
from pyvz.run import piped, run
from pyvz.storage import pool

_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$")


def own_fingerprint(host: Host) -> str | None:
    """This host's own migration key's fingerprint (None: it has none)."""
    from pyvz.migrate.keys import key_path, parse_public

    public = key_path(host.paths).with_name("id_ed25519.pub")
    try:
        return parse_public(public.read_text())[2]
    except (OSError, VzError):
        return None


def check_config(host: Host, ctid: int, text: str) -> ConfigFile:
    """A replica's config, checked as a received CT's is, now rather than at recover time."""
    conf = ConfigFile.parse(text, Path(f"replica of CT {ctid}"))
    for key in ("VE_PRIVATE", "VE_ROOT"):
        value = conf.get(key)
        if value and not _inside(host.paths.root, host.paths.host(value.replace("$VEID", str(ctid)))):
            raise VzError(ExitCode.INVALID_CONFIG, f"{key}={value!r} points outside this host's root")
    if (conf.get("VE_LAYOUT") or Layout.BTRFS) != Layout.BTRFS:
        raise VzError(ExitCode.INVALID_CONFIG, "VE_LAYOUT of a replica must be btrfs")
    uid = conf.get("LOCAL_UID") or "0"
    gid = conf.get("LOCAL_GID") or uid
    if not uid.isdigit() or not gid.isdigit():
        raise VzError(ExitCode.INVALID_CONFIG, "LOCAL_UID/LOCAL_GID must be numbers")
    if int(uid) == 0 and (host.setting("MIGRATE_ALLOW_PRIVILEGED") or "no").lower() != "yes":
        raise VzError(
            ExitCode.INVALID_CONFIG,
            "a privileged CT (LOCAL_UID 0) is refused here (vz.conf MIGRATE_ALLOW_PRIVILEGED=yes allows it)",
        )
    name = conf.get("NAME")
    if name:
        parse_name(name)
    cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf.path)
    for key in cfg.values:
        if key in BY_KEY:
            cfg.get(BY_KEY[key])  # every value must parse, as create demands
    return conf


class ReplicaReceiver:
    def __init__(self, host: Host, wire: Wire, peer: str) -> None:
        self.host = host
        self.paths = host.paths
        self.wire = wire
        self.peer = peer
        self.store = ReplicaStore(host)
        self.stack = ExitStack()
        self.ctid = 0
        self.source = ""
        self.parent: str | None = None  # the received UUID of the replica this run builds on
        self.staging: Path | None = None
        self.config: ConfigFile | None = None
        self.stream: tuple[str, bool, int] | None = None  # (UUID, incremental, bytes) received
        self.committed = False

    def serve(self, first: Message) -> None:
        with self.stack:
            try:
                self._serve(first)
            except Lost:
                self._sweep()  # the sender went away: the previous replica stays as it was
                raise

    def _serve(self, message: Message) -> None:
        handlers = {
            "replicate": self.op_replicate,
            "replicate-remove": self.op_remove,
            "config": self.op_config,
            "stream": self.op_stream,
            "commit": self.op_commit,
        }
        while True:
            op = message["op"]
            if op == "bye":
                self._sweep()
                return
            handler = handlers.get(op)
            opening = op in ("replicate", "replicate-remove")
            if handler is None or opening == bool(self.ctid) or (not opening and not self.staging):
                self.wire.refuse(VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unexpected {op!r}"))
                self._sweep()
                return
            try:
                try:
                    handler(message)
                except (Lost, KeyboardInterrupt):
                    raise
                except OSError as err:
                    raise VzError(ExitCode.SYSTEM_ERROR, f"{op} failed here: {err}") from None
            except Lost:
                raise
            except VzError as err:
                log.error(f"replication from {self.peer}: {err.message}")
                self.wire.drain()
                self.wire.refuse(err)
                self._sweep()
                return
            message = self.wire.receive()

    def _sweep(self) -> None:
        if self.staging is not None and not self.committed:
            self.store.sweep(self.ctid)
            self.staging = None

    # ---- the run ---------------------------------------------------------------------------

    def _open(self, message: Message) -> int:
        ctid = parse_ctid(str(_field(message, "ctid", int)))
        self.stack.enter_context(self.host.ct_lock(ctid))
        self.ctid = ctid
        if own_fingerprint(self.host) == self.peer:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"this is the host CT {ctid} runs on: a replica must go to another host",
            )
        return ctid

    def op_replicate(self, message: Message) -> None:
        if _field(message, "version", int) != VERSION:
            raise VzError(MigrateExit.UNSUP_CPT_VER, f"this host speaks migration protocol {VERSION}")
        ctid = self._open(message)
        source = _field(message, "source", str)
        if not _SOURCE_RE.match(source):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad source host name {source[:80]!r}")
        self.source = source
        if _field(message, "layout", str) != Layout.BTRFS:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "only btrfs CTs are replicated")
        pool.mount_existing(self.paths)
        if self.paths.conf_file(ctid).exists():
            raise VzError(
                MigrateExit.EXISTS,
                f"CT {ctid} exists on this host as a CT: no replica of it is kept here",
            )
        current = self.store.get(ctid)
        if current is not None and current.peer != self.peer:
            raise VzError(
                MigrateExit.EXISTS,
                f"the replica of CT {ctid} here was sent by another host ({current.source}, key "
                f"{current.peer}); `vzreplicate remove {ctid}` on this host first",
            )
        pool.prepare(self.paths, private_dir(self.host), True, self.host.setting("POOL_SIZE"))
        self.store.sweep_removals()
        self.staging = self.store.new_staging(ctid)
        self.parent = current.uuid if current is not None else None
        self.wire.ok(
            pyvz=__version__,
            parent=self.parent,
            taken=current.taken if current is not None else None,
            host=socket.gethostname(),
        )

    def op_config(self, message: Message) -> None:
        assert self.staging is not None
        text = _field(message, "text", str)
        self.config = check_config(self.host, self.ctid, text)
        scripts = _field(message, "scripts", dict)
        for action, body in scripts.items():
            if action not in HOST_ACTIONS + CT_ACTIONS or not isinstance(body, str):
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"unknown action script {action!r}")
        write_staged(self.staging, text, dict(scripts))
        self.wire.ok()

    def op_stream(self, message: Message) -> None:
        from pyvz.migrate.sendstream import StreamChecker

        assert self.staging is not None
        if _field(message, "kind", str) != "btrfs" or _field(message, "name", str) != FILES:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "a replica is one btrfs stream named fs")
        if self.config is None or self.stream is not None:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "unexpected stream")
        incremental = bool(message.get("incremental"))
        if incremental and self.parent is None:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "an incremental stream, but no replica is here")
        need = _field(message, "bytes", int)
        free = shutil.disk_usage(self.staging).free
        if not incremental and need > free:
            raise VzError(
                ExitCode.NO_DISK_SPACE,
                f"the replica of CT {self.ctid} needs {need >> 20} MB and this host has {free >> 20} MB free",
            )
        # Only the replica this key sent last may be the parent (and a clone source); the new
        # subvolume may not claim a UUID anything on the pool has.
        allowed = {self.parent} if incremental and self.parent else set()
        checker = StreamChecker(FILES, allowed, taken_uuids(self.staging.parent.parent))
        argv = ["btrfs", "receive", "-q", "-e", "-C", str(self.staging)]
        count = 0
        try:
            with piped(argv, "w", error_code=MigrateExit.COPY) as receive:
                for chunk in self.wire.data():
                    checker.feed(chunk)
                    _write_all(receive.write_fd, chunk)
                    count += len(chunk)
                    faults.point(self.paths, "replica-receiving")
                checker.finish()
        except BaseException:
            self.wire.drain()
            raise
        if (checker.parent_uuid is not None) != incremental:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "the stream is not the kind announced")
        self.stream = (checker.uuid, incremental, count)
        self.wire.ok(bytes=count)

    def op_commit(self, message: Message) -> None:
        assert self.staging is not None and self.config is not None
        if self.stream is None:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "commit before the stream")
        uuid, incremental, count = self.stream
        taken = message.get("taken")
        if not isinstance(taken, int | float) or isinstance(taken, bool):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "bad or missing 'taken' in commit")
        size = _field(message, "size", int)
        from pyvz.atomic import write_atomic

        meta = meta_json(
            ctid=self.ctid,
            source=self.source,
            peer=self.peer,
            taken=float(taken),
            uuid=uuid,
            size=size,
            sent=count,
            incremental=incremental,
            name=self.config.get("NAME") or None,
        )
        write_atomic(self.staging / "meta.json", meta, mode=0o600, durable=False)
        # On disk before it counts (files, config and meta in one sync of the filesystem):
        # once the source hears `ok` it builds on this one.
        run(["sync", "--file-system", str(self.staging)])
        faults.point(self.paths, "replica-staged")
        self.store.commit(self.ctid, self.staging)
        self.committed = True
        faults.point(self.paths, "replica-committed")
        replica = self.store.get(self.ctid)
        assert replica is not None
        log.info(f"replica of CT {self.ctid} from {self.source}: {count} bytes received")
        self.wire.ok(received=replica.received)

    def op_remove(self, message: Message) -> None:
        ctid = self._open(message)
        current = self.store.get(ctid)
        if current is not None and current.peer != self.peer:
            raise VzError(
                ExitCode.NO_ACCESS,
                f"the replica of CT {ctid} here was sent by another host ({current.source})",
            )
        removed = self.store.remove(ctid) if self.store.dir(ctid).exists() else False
        self.ctid = 0  # the session may go on with another request
        self.stack.close()
        self.stack = ExitStack()
        self.wire.ok(removed=removed)
