"""init, join (and `admit`, its other end), leave: a host comes into a cluster or goes.

init makes the cluster CA and a one-member etcd cluster on this host (or, with endpoints,
uses an existing etcd and the certificates given). join asks a member over SSH: this host
makes its keys and certificate requests, sends them with its name and address to
`vzcluster admit` on that member (root's own SSH access: the migration key runs nothing but
vzmigrate --receive), which signs them with the CA and adds this host to etcd as a learner;
this host then starts its member, which catches up and is promoted to a voting member.
A learner does not count towards quorum, so a join that fails half-way never leaves the
cluster waiting for a member that is not coming; it is removed again.

Every step that fails undoes what came before it: no config, certificate, data directory,
etcd member or process is left behind.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyvz import faults
from pyvz.cluster import keys, member, pki
from pyvz.cluster.etcd import Etcd, Member, TlsFiles, Uncertain, parse_endpoints
from pyvz.cluster.settings import (
    DEFAULT_TTL,
    Settings,
    cert_dir,
    check_address,
    check_name,
    conf_path,
    exists,
    load,
    ready,
    save,
    url,
)
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.log import log
from pyvz.paths import Paths
from pyvz.run import run

PROMOTE_TIMEOUT = 60.0


def _not_yet_member(paths: Paths) -> None:
    """Refuse a host that is a member; sweep what an interrupted init or join left (its
    STATE="ready" comes last, so without it nothing here is in use)."""
    if not ready(paths):
        leftovers = exists(paths) or cert_dir(paths).exists()
        if leftovers or member.running_pid(member.pid_file(paths)) is not None:
            log.info("removing what an interrupted vzcluster init or join left")
            _undo_local(paths)
        return
    if exists(paths):
        name = ""
        try:
            name = f" as {load(paths).name}"
        except VzError:
            pass
        raise VzError(
            ClusterExit.ALREADY_MEMBER, f"this host is in a cluster already{name} (vzcluster leave first)"
        )


def _check_bindable(address: str, ports: Sequence[int]) -> None:
    """The address is this host's and the member's ports are free on it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As etcd binds: connections of an earlier member in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as err:
                if err.errno == 99:  # EADDRNOTAVAIL
                    raise VzError(
                        ExitCode.INVALID_PARAMETER_VALUE, f"{address} is not an address of this host"
                    ) from None
                raise VzError(
                    ClusterExit.MEMBER, f"{address}:{port} is in use (another etcd?): {err.strerror}"
                ) from None


def default_address() -> str:
    """This host's first global IPv4 address (give --listen where that is not the one)."""
    import json as _json

    out = run(["ip", "-j", "-4", "addr", "show", "scope", "global"], check=False).stdout
    try:
        links = _json.loads(out or "[]")
    except ValueError:
        links = []
    for link in links:
        for info in link.get("addr_info", []):
            if info.get("local"):
                return str(info["local"])
    raise VzError(
        ExitCode.INVALID_PARAMETER_SYNTAX, "this host has no global IPv4 address: give --listen ADDR"
    )


def _undo_local(paths: Paths) -> None:
    """Take away what init/join made here (the member is stopped first)."""
    member.stop_agent(paths)
    member.stop(paths)
    data = paths.host("/var/lib/vz/etcd")
    try:
        data = load(paths).data_dir
    except VzError:
        pass
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(cert_dir(paths), ignore_errors=True)
    conf_path(paths).unlink(missing_ok=True)


def _member_record(settings: Settings, member_id: int) -> str:
    return json.dumps(
        {
            "name": settings.name,
            "address": settings.address,
            "client_url": settings.client_url if settings.managed else None,
            "peer_url": settings.peer_url if settings.managed else None,
            "member_id": str(member_id),
            "joined": int(time.time()),
        }
    )


def _wait_leader(client: Etcd, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.revision()  # a linearizable read: answered only once there is a leader
            return
        except VzError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- init ---------------------------------------------------------------------------------


def init(
    paths: Paths,
    name: str,
    address: str,
    *,
    cluster: str = "pyvz",
    ttl: int = DEFAULT_TTL,
    client_port: int = 2379,
    peer_port: int = 2380,
    endpoints: str | None = None,
    tls: TlsFiles | None = None,
) -> Settings:
    """A new cluster with this host as its first member, or (endpoints) this host as a
    client of an existing etcd."""
    _not_yet_member(paths)
    check_name(name)
    check_name(cluster)
    if endpoints is not None:
        return _init_external(paths, name, address, cluster, ttl, parse_endpoints(endpoints), tls)
    member.etcd_binary()
    check_address(address)
    _check_bindable(address, (client_port, peer_port))
    with ExitStack() as undo:
        undo.callback(_undo_local, paths)
        directory = cert_dir(paths)
        pki.make_ca(directory, cluster)
        pki.issue_all(directory, directory, name, address)
        peer = url(address, peer_port)
        save(
            paths,
            {
                "CLUSTER_NAME": cluster,
                "NODE_NAME": name,
                "NODE_ADDRESS": address,
                "ENDPOINTS": url(address, client_port),
                "ETCD_MANAGED": "yes",
                "CLIENT_PORT": str(client_port),
                "PEER_PORT": str(peer_port),
                "INITIAL_CLUSTER": f"{name}={peer}",
                "INITIAL_STATE": "new",
                "STATE": "joining",
                "LEASE_TTL": str(ttl),
            },
        )
        settings = load(paths)
        member.start(settings)
        with settings.client() as client:
            _wait_leader(client)
            own = client.status(settings.client_url)
            client.put(keys.member(name), _member_record(settings, own.member_id))
        member.start_agent(paths)
        save(paths, {"STATE": "ready"})  # last: until here an interrupted init is swept
        undo.pop_all()
    log.info(f"cluster {cluster} made; {name} is its first member at {settings.client_url}")
    return settings


def _init_external(
    paths: Paths,
    name: str,
    address: str,
    cluster: str,
    ttl: int,
    endpoints: tuple[str, ...],
    tls: TlsFiles | None,
) -> Settings:
    if any(e.startswith("https:") for e in endpoints) and tls is None:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "https endpoints need --ca, --cert and --key")
    if tls is not None:
        for what, path in zip(("--ca", "--cert", "--key"), tls, strict=True):
            if not path.is_file():
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{what} {path}: no such file")
    check_address(address)
    with ExitStack() as undo:
        undo.callback(_undo_local, paths)
        directory = cert_dir(paths)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        values = {
            "CLUSTER_NAME": cluster,
            "NODE_NAME": name,
            "NODE_ADDRESS": address,
            "ENDPOINTS": ",".join(endpoints),
            "ETCD_MANAGED": "no",
            "STATE": "joining",
            "LEASE_TTL": str(ttl),
        }
        if tls is not None:
            pki.install_ca(directory, tls.ca.read_text())
            pki.install_cert(directory, "client", tls.cert.read_text())
            from pyvz.atomic import write_atomic

            write_atomic(pki.key(directory, "client"), tls.key.read_bytes(), mode=0o600)
        save(paths, values)
        settings = load(paths)
        with settings.client() as client:
            taken = client.get(keys.member(name))
            if taken is not None:
                raise VzError(ClusterExit.TAKEN, f"host name {name!r} is in that cluster already")
            client.put(keys.member(name), _member_record(settings, 0))
        member.start_agent(paths)
        save(paths, {"STATE": "ready"})
        undo.pop_all()
    log.info(f"{name} uses the etcd cluster at {', '.join(endpoints)}")
    return settings


# ---- join ---------------------------------------------------------------------------------


def check_host(text: str) -> str:
    """HOST to join through: an address or a host name, nothing ssh could read as an option."""
    if not text or text.startswith("-") or any(c.isspace() for c in text) or "@" in text:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad host {text!r} (want an address or a host name)")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not all(part and (part.isalnum() or "-" in part) for part in text.split(".")):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad host {text!r}") from None
    return text


def join(
    paths: Paths,
    via: str,
    name: str,
    address: str,
    *,
    ssh_options: Sequence[str] = (),
    client_port: int = 2379,
    peer_port: int = 2380,
) -> Settings:
    _not_yet_member(paths)
    check_host(via)
    check_name(name)
    check_address(address)
    member.etcd_binary()
    _check_bindable(address, (client_port, peer_port))
    with ExitStack() as undo:
        undo.callback(_undo_local, paths)
        directory = cert_dir(paths)
        csrs = {role: pki.request(directory, role, name) for role in pki.ROLES}
        ask = {
            "name": name,
            "address": address,
            "client_url": url(address, client_port),
            "peer_url": url(address, peer_port),
            "csrs": csrs,
        }
        answer = _ask(via, ask, ssh_options)
        pki.install_ca(directory, str(answer.get("ca", "")))
        for role in pki.ROLES:
            pki.install_cert(directory, role, str(answer.get("certs", {}).get(role, "")))
        member_id = int(answer.get("member_id", 0))
        endpoints = [url(address, client_port), *answer.get("endpoints", [])]
        save(
            paths,
            {
                "CLUSTER_NAME": check_name(str(answer.get("cluster", "pyvz"))),
                "NODE_NAME": name,
                "NODE_ADDRESS": address,
                "ENDPOINTS": ",".join(parse_endpoints(endpoints)),
                "ETCD_MANAGED": "yes",
                "CLIENT_PORT": str(client_port),
                "PEER_PORT": str(peer_port),
                "INITIAL_CLUSTER": str(answer.get("initial_cluster", "")),
                "INITIAL_STATE": "existing",
                "STATE": "joining",
                "LEASE_TTL": str(int(answer.get("ttl", DEFAULT_TTL))),
            },
        )
        settings = load(paths)
        others = Etcd(
            [e for e in settings.endpoints if e != settings.client_url], settings.tls, settings.timeout
        )
        undo.callback(others.close)
        undo.callback(_remove_member, others, member_id)
        faults.point(paths, "join-admitted")
        member.start(settings)
        faults.point(paths, "join-started")
        _promote(others, member_id)
        _wait_voting(settings)
        with settings.client() as client:
            client.put(keys.member(name), _member_record(settings, member_id))
        member.start_agent(paths)
        save(paths, {"STATE": "ready"})  # last: until here an interrupted join is swept
        undo.pop_all()
        others.close()
    log.info(f"{name} joined cluster {settings.cluster} (member {member_id:x})")
    return settings


def _remove_member(client: Etcd, member_id: int) -> None:
    if not member_id:
        return
    try:
        client.member_remove(member_id)
    except VzError as err:
        log.warning(f"could not remove the half-joined member {member_id:x}: {err.message}")


def _add_learner(client: Etcd, peer_url: str, timeout: float = 60.0) -> Member:
    """etcd refuses a membership change until every member has been up a few seconds
    ("unhealthy cluster", right after a join), and a second learner while one is catching
    up: wait for those. An add whose answer was lost (a slow fsync under load outlasts the
    request timeout) may have been applied: the learner at this peer URL is then ours, and
    only if there is none is the add sent again."""
    deadline = time.monotonic() + timeout
    uncertain = False
    while True:
        if uncertain:
            for known in client.members():
                if known.learner and not known.name and peer_url in known.peer_urls:
                    return known
        try:
            return client.member_add([peer_url], learner=True)
        except Uncertain:
            uncertain = True
            if time.monotonic() > deadline:
                raise
        except VzError as err:
            # A member that started a moment ago, or another host's join still in progress
            # (etcd takes one learner at a time).
            busy = any(words in err.message for words in ("unhealthy cluster", "too many learner"))
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _promote(client: Etcd, member_id: int) -> None:
    """A learner becomes a voting member once it has caught up with the leader."""
    deadline = time.monotonic() + PROMOTE_TIMEOUT
    while True:
        try:
            client.member_promote(member_id)
            return
        except Uncertain as err:
            # Lost answer: promoted already if it is a voting member now.
            promoted = any(m.id == member_id and not m.learner for m in client.members())
            if promoted:
                return
            if time.monotonic() > deadline:
                raise VzError(
                    ClusterExit.MEMBER, f"this host's member was not promoted: {err.message}"
                ) from None
        except VzError as err:
            # etcd's words for "not caught up yet" (ErrLearnerNotReady, ErrNotEnoughStartedMembers)
            waiting = any(words in err.message for words in ("in sync with leader", "not enough started"))
            if not waiting or time.monotonic() > deadline:
                said = f"this host's member was not promoted: {err.message}"
                raise VzError(ClusterExit.MEMBER, said) from None
        time.sleep(0.3)


def _wait_voting(settings: Settings) -> None:
    """Until this host's own member has applied its promotion: until then it refuses reads
    and writes ("rpc not supported for learner"), and this host's clients ask it first."""
    deadline = time.monotonic() + PROMOTE_TIMEOUT
    client = Etcd([settings.client_url], settings.tls, 2.0)
    try:
        while True:
            try:
                if not client.status(settings.client_url).learner:
                    return
                said = "it is still a learner"
            except VzError as err:
                said = err.message
            if time.monotonic() > deadline:
                raise VzError(ClusterExit.MEMBER, f"this host's member did not take its promotion: {said}")
            time.sleep(0.2)
    finally:
        client.close()


def _ask(via: str, ask: dict[str, Any], ssh_options: Sequence[str]) -> dict[str, Any]:
    argv = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        *ssh_options,
        "-T", f"root@{via}",
        "vzcluster", "admit",
    ]  # fmt: skip
    result = run(argv, input=json.dumps(ask), check=False, timeout=120)
    if result.returncode != 0:
        said = [line for line in result.stderr.strip().splitlines() if line.strip()]
        last = said[-1] if said else f"exit status {result.returncode}"
        last = last.removeprefix("Error: ")
        if result.returncode == 255:
            raise VzError(ClusterExit.CONNECT, f"cannot reach {via}: {last}")
        raise VzError(ClusterExit.CONNECT, f"{via} did not admit this host: {last}")
    try:
        # The answer is the last line: what the admitting side logs comes before it.
        answer = json.loads(([line for line in result.stdout.splitlines() if line.strip()] or ["null"])[-1])
    except ValueError:
        raise VzError(ClusterExit.CONNECT, f"{via} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise VzError(ClusterExit.CONNECT, f"{via} answered something that is not a JSON object")
    return answer


def admit(paths: Paths, text: str) -> dict[str, Any]:
    """`vzcluster admit` (run over SSH by a joining host): sign its certificate requests and
    add it to etcd as a learner; the answer tells it how to start its member."""
    settings = load(paths)
    if not settings.managed:
        raise VzError(
            ClusterExit.MEMBER, "this host uses an external etcd: join with vzcluster init --endpoints"
        )
    try:
        ask = json.loads(text)
        name, address = check_name(str(ask["name"])), check_address(str(ask["address"]))
        peer_url, csrs = str(ask["peer_url"]), dict(ask["csrs"])
    except (ValueError, KeyError, TypeError):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "malformed join request") from None
    if peer_url != url(address, int(peer_url.rsplit(":", 1)[-1])):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"peer URL {peer_url!r} is not at {address}")
    certs = {
        role: pki.sign(settings.cert_dir, str(csrs.get(role, "")), role, name, address) for role in pki.ROLES
    }
    with settings.client() as client:
        if client.get(keys.member(name)) is not None:
            raise VzError(ClusterExit.TAKEN, f"host name {name!r} is in the cluster already")
        for known in client.members():
            stale = not known.name or client.get(keys.member(known.name)) is None
            if peer_url in known.peer_urls and stale:
                # An earlier join from this address that was interrupted before it completed
                # (its host swept it): this one takes its place.
                log.info(f"removing etcd member {known.id:x}, left by an interrupted join from {address}")
                client.member_remove(known.id)
                continue
            if known.name == name or peer_url in known.peer_urls:
                raise VzError(
                    ClusterExit.TAKEN, f"etcd has a member {known.name or known.id} at {peer_url} already"
                )
        added = _add_learner(client, peer_url)
        members = client.members()
    initial = []
    urls: list[str] = []
    for known in members:
        initial += [f"{known.name or name}={u}" for u in known.peer_urls]
        urls += known.client_urls
    if settings.client_url not in urls:
        urls.insert(0, settings.client_url)
    joining = str(ask.get("client_url") or "")
    save(paths, {"ENDPOINTS": ",".join(parse_endpoints([*urls, *([joining] if joining else [])]))})
    log.info(f"admitted {name} ({address}) as etcd member {added.id:x}")
    return {
        "cluster": settings.cluster,
        "ca": pki.ca_cert(settings.cert_dir).read_text(),
        "certs": certs,
        "member_id": str(added.id),
        "initial_cluster": ",".join(initial),
        "endpoints": urls,
        "ttl": settings.ttl,
    }


# ---- leave --------------------------------------------------------------------------------


def leave(paths: Paths, force: bool = False) -> str:
    """This host leaves: its agent stops (its lease goes), its records and its etcd member
    are removed from the cluster, and its cluster files from this host."""
    if force and not ready(paths):
        _undo_local(paths)  # what an interrupted init or join left, if anything
        return "this host"
    settings = load(paths)
    member.stop_agent(paths)
    from pyvz.cluster import fence

    fence.stop_watchdog(paths)
    try:
        with settings.client() as client:
            _drop_ha_records(client, settings.name)
            client.delete(keys.host(settings.name))
            client.delete(keys.member(settings.name))
            if settings.managed:
                members = client.members()
                own = [m for m in members if m.name == settings.name or settings.peer_url in m.peer_urls]
                if own and len(members) > 1:
                    others = [u for m in members if m not in own for u in m.client_urls]
                    with Etcd(others, settings.tls, settings.timeout) as rest:
                        rest.member_remove(own[0].id)
    except VzError as err:
        if not force:
            raise VzError(
                err.code, f"{err.message} (vzcluster leave --force leaves on this host's side only)"
            ) from None
        log.warning(f"leaving on this host's side only: {err.message}")
    _undo_local(paths)
    return settings.name


def _drop_ha_records(client: Etcd, name: str) -> None:
    """A host that leaves takes its CTs out of HA: nobody must start them elsewhere."""
    from pyvz.cluster.etcd import delete_op, mod_revision_is
    from pyvz.cluster.ha import HaRecord

    for kv in client.range(keys.HA):
        rec = HaRecord.of(kv)
        if rec is not None and rec.host == name:
            client.txn([mod_revision_is(kv.key, kv.mod_revision)], [delete_op(kv.key)])


def data_dir_of(paths: Paths) -> Path:
    return load(paths).data_dir
