"""pyvz's etcd client against a real etcd: one member on 127.0.0.1 (ports the kernel picked
free a moment before), TLS with a CA made by pyvz.cluster.pki, its data in tmp_path."""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvz.cluster import pki
from pyvz.cluster.etcd import (
    Election,
    Etcd,
    TlsFiles,
    absent,
    delete_op,
    owner_value,
    parse_endpoints,
    put_op,
    range_op,
    release,
    reserve,
    value_is,
)
from pyvz.cluster.member import argv, etcd_env
from pyvz.cluster.settings import Settings, load, save
from pyvz.errors import ClusterExit, ExitCode, VzError
from pyvz.paths import Paths

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (make install)")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _member(root: Path) -> Settings:
    paths = Paths(root)
    client_port, peer_port = _free_ports(2)
    directory = paths.etc_vz / "cluster"
    pki.make_ca(directory, "unit")
    pki.issue_all(directory, directory, "one", "127.0.0.1")
    save(
        paths,
        {
            "NODE_NAME": "one",
            "NODE_ADDRESS": "127.0.0.1",
            "CLIENT_PORT": str(client_port),
            "PEER_PORT": str(peer_port),
            "ENDPOINTS": f"https://127.0.0.1:{client_port}",
            "INITIAL_CLUSTER": f"one=https://127.0.0.1:{peer_port}",
            "INITIAL_STATE": "new",
        },
    )
    return load(paths)


@pytest.fixture(scope="module")
def member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    for _attempt in range(3):  # another process may take a port between its pick and etcd's bind
        root = tmp_path_factory.mktemp("etcd")
        settings = _member(root)
        settings.data_dir.mkdir(parents=True)
        log = (root / "etcd.log").open("wb")
        proc = subprocess.Popen(
            argv(settings), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=etcd_env()
        )
        try:
            client = settings.client(timeout=1.0)
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    client.revision()
                    break
                except VzError:
                    time.sleep(0.1)
            client.close()
            if proc.poll() is None:
                yield settings
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    pytest.fail(f"etcd did not start: {(root / 'etcd.log').read_text()[-1000:]}")


@pytest.fixture
def etcd(member: Settings, request: pytest.FixtureRequest) -> Iterator[Etcd]:
    client = member.client()
    prefix = f"/t/{request.node.name}/"
    client.delete(prefix, prefix=True)
    yield client
    client.close()


def _p(request: pytest.FixtureRequest, key: str) -> str:
    return f"/t/{request.node.name}/{key}"


def test_put_get_range_delete(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    a, b, other = _p(request, "a"), _p(request, "b"), _p(request, "bx")
    assert etcd.get(a) is None
    first = etcd.put(a, "1")
    etcd.put(b, b"\x00\xffbinary")
    etcd.put(other, "x")
    got = etcd.get(a)
    assert got is not None and got.text == "1" and got.create_revision == got.mod_revision == first
    assert etcd.get(b) is not None and etcd.get(b).value == b"\x00\xffbinary"  # type: ignore[union-attr]
    assert [kv.key for kv in etcd.range(_p(request, ""))] == [a, b, other]
    assert [kv.key for kv in etcd.range(b)] == [b, other]  # a prefix, not a directory
    assert etcd.get(a, serializable=True) is not None
    assert etcd.delete(b, prefix=True) == 2
    assert etcd.delete(b) == 0
    assert [kv.key for kv in etcd.range(_p(request, ""))] == [a]


def test_txn_compares_and_branches(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    key = _p(request, "k")
    done = etcd.txn([absent(key)], [put_op(key, "first")], [range_op(key)])
    assert done.succeeded
    again = etcd.txn([absent(key)], [put_op(key, "second")], [range_op(key)])
    assert not again.succeeded and again.ranges()[0][0].text == "first"
    assert etcd.txn([value_is(key, "first")], [delete_op(key)]).succeeded
    assert etcd.get(key) is None


def test_lease_keeps_and_takes_its_keys(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    key = _p(request, "leased")
    lease = etcd.grant(30)
    etcd.put(key, "here", lease=lease)
    kv = etcd.get(key)
    assert kv is not None and kv.lease == lease
    assert etcd.keepalive(lease) == 30
    assert 0 < etcd.time_to_live(lease) <= 30
    assert etcd.revoke(lease) is True
    assert etcd.get(key) is None  # gone with its lease
    assert etcd.revoke(lease) is False
    assert etcd.keepalive(lease) == 0  # renewing a dead lease says so
    assert etcd.time_to_live(lease) == -1
    short = etcd.grant(2)
    etcd.put(key, "brief", lease=short)
    deadline = time.monotonic() + 10
    while etcd.get(key) is not None:
        assert time.monotonic() < deadline, "a 2 s lease's key outlived 10 s"
        time.sleep(0.2)
    assert etcd.keepalive(short) == 0


def test_watch_sees_changes_in_order(etcd: Etcd, member: Settings, request: pytest.FixtureRequest) -> None:
    prefix = _p(request, "")
    start = etcd.revision() + 1

    def writer() -> None:
        with member.client() as other:
            other.put(prefix + "x", "1")
            other.put(prefix + "x", "2")
            other.delete(prefix + "x")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    for event in etcd.watch(prefix, prefix=True, start_revision=start, idle=3.0):
        seen.append((event.kind, event.kv.key, event.kv.text))
        if event.kind == "DELETE":
            break
    thread.join()
    assert seen == [("PUT", prefix + "x", "1"), ("PUT", prefix + "x", "2"), ("DELETE", prefix + "x", "")]
    # Nothing happens: the watch ends when it has been idle that long.
    quiet = time.monotonic()
    assert list(etcd.watch(prefix, prefix=True, idle=0.5)) == []
    assert time.monotonic() - quiet < 5


def test_failover_to_the_endpoint_that_answers(member: Settings, request: pytest.FixtureRequest) -> None:
    dead = f"https://127.0.0.1:{_free_ports(1)[0]}"
    with Etcd([dead, member.client_url], member.tls, 2.0) as client:
        client.put(_p(request, "k"), "v")
        kv = client.get(_p(request, "k"))
        assert kv is not None and kv.text == "v"
    with Etcd([dead], member.tls, 2.0) as nobody, pytest.raises(VzError) as caught:
        nobody.get(_p(request, "k"))
    assert caught.value.code == ClusterExit.UNAVAILABLE
    assert "\n" not in caught.value.message and dead in caught.value.message


def test_tls_is_required_both_ways(member: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # A certificate from another CA is refused by the member.
    pki.make_ca(tmp_path / "other", "other")
    pki.issue_all(tmp_path / "other", tmp_path / "other", "stranger", "127.0.0.1")
    stranger = TlsFiles(
        member.tls.ca, pki.cert(tmp_path / "other", "client"), pki.key(tmp_path / "other", "client")
    )
    with Etcd([member.client_url], stranger, 2.0) as client, pytest.raises(VzError) as caught:
        client.get(_p(request, "k"))
    assert caught.value.code in (ClusterExit.UNAVAILABLE, ClusterExit.PKI)
    # And the member itself is checked against the cluster CA.
    wrong_ca = TlsFiles(pki.ca_cert(tmp_path / "other"), member.tls.cert, member.tls.key)
    with Etcd([member.client_url], wrong_ca, 2.0) as client, pytest.raises(VzError) as caught:
        client.get(_p(request, "k"))
    assert caught.value.code == ClusterExit.UNAVAILABLE and "TLS" in caught.value.message
    # Keys are the owner's alone.
    assert (member.tls.key.stat().st_mode & 0o777) == 0o600
    assert (pki.ca_key(member.cert_dir).stat().st_mode & 0o777) == 0o600


def test_bad_endpoints_are_one_line() -> None:
    for bad in ("", "127.0.0.1:2379", "ftp://x:1", "https://x", "https://x:1/path", "https://u@x:1"):
        with pytest.raises(VzError) as caught:
            parse_endpoints(bad)
        assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    assert parse_endpoints("https://a:1, https://b:2,https://a:1") == ("https://a:1", "https://b:2")


def test_reserve_is_all_or_nothing(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    ctid, name, ip = _p(request, "ctid/101"), _p(request, "name/web"), _p(request, "ip/10.0.0.1")
    mine = owner_value("a")
    assert reserve(etcd, {ctid: mine, name: mine}) is None
    theirs = owner_value("b")
    # One key of the set is taken: it is named, and nothing of the set is written.
    assert reserve(etcd, {ip: theirs, name: theirs}) == name
    assert etcd.get(ip) is None
    kv = etcd.get(name)
    assert kv is not None and kv.text == mine
    # Our own values count as ours: a retry after a lost answer completes.
    assert reserve(etcd, {ctid: mine, name: mine}) is None
    # Partly ours, partly free: the rest is taken too.
    assert reserve(etcd, {ctid: mine, ip: mine}) is None
    assert etcd.get(ip) is not None
    assert sorted(release(etcd, {ctid: mine, name: theirs, ip: mine})) == sorted([ctid, ip])
    assert etcd.get(name) is not None and etcd.get(ctid) is None


def _race(settings: Settings, key: str, value: str, barrier: object, results: object) -> None:
    with settings.client() as client:
        client.revision()  # connected and warm before the start line
        barrier.wait()  # type: ignore[attr-defined]
        taken = reserve(client, {key: value, key + "-name": value})
        results.put((value, taken))  # type: ignore[attr-defined]


def test_reserve_race_has_exactly_one_winner(
    member: Settings, etcd: Etcd, request: pytest.FixtureRequest
) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        key = _p(request, f"ctid/{200 + round_}")
        barrier = context.Barrier(2)
        results = context.Queue()
        racers = [
            context.Process(target=_race, args=(member, key, owner_value(who), barrier, results))
            for who in ("a", "b")
        ]
        for racer in racers:
            racer.start()
        outcomes = [results.get(timeout=30) for _ in racers]
        for racer in racers:
            racer.join(timeout=30)
            assert racer.exitcode == 0
        winners = [value for value, taken in outcomes if taken is None]
        assert len(winners) == 1, outcomes
        losers = [taken for _value, taken in outcomes if taken is not None]
        assert losers == [key]
        held = etcd.get(key)
        assert held is not None and held.text == winners[0]
        held_name = etcd.get(key + "-name")
        assert held_name is not None and held_name.text == winners[0]  # both keys, one owner


def test_election_one_leader_then_the_next(
    etcd: Etcd, member: Settings, request: pytest.FixtureRequest
) -> None:
    key = _p(request, "leader")
    lease_a, lease_b = etcd.grant(30), etcd.grant(30)
    a = Election(etcd, key, "a", lease_a)
    b = Election(etcd, key, "b", lease_b)
    assert a.campaign() and a.is_leader() and a.leader() == "a"
    assert not b.campaign() and not b.is_leader()
    assert a.campaign()  # asking again changes nothing

    won = []

    def wait_b() -> None:
        with member.client() as other:
            won.append(Election(other, key, "b", lease_b).wait(timeout=15))

    thread = threading.Thread(target=wait_b)
    thread.start()
    time.sleep(0.3)
    # The leader's lease ends (its host died): the waiting candidate takes over.
    etcd.revoke(lease_a)
    thread.join(timeout=20)
    assert won == [True] and b.leader() == "b"
    assert not a.campaign()
    assert b.resign() and a.resign() is False
    assert etcd.get(key) is None
    etcd.revoke(lease_b)


def test_no_member_at_all_is_unavailable_quickly() -> None:
    port = _free_ports(1)[0]
    started = time.monotonic()
    with Etcd([f"http://127.0.0.1:{port}"], None, 2.0) as client, pytest.raises(VzError) as caught:
        client.put("/x", "1")
    assert caught.value.code == ClusterExit.UNAVAILABLE
    assert time.monotonic() - started < 5


def test_a_deadline_ends_the_request_over_every_endpoint(etcd: Etcd, member: Settings) -> None:
    lease = etcd.grant(30)
    with socket.socket() as silent:
        # Takes the connection (the kernel's backlog) and never answers: a member that keeps a
        # request waiting, as one does while it forwards a lease renewal to a lost leader.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Etcd([mute, member.client_url], member.tls, 30.0) as client, pytest.raises(VzError) as caught:
            client.keepalive(lease, deadline=time.monotonic() + 1.0)
        assert caught.value.code == ClusterExit.UNAVAILABLE
        assert f"{member.client_url}: not tried" in caught.value.message
        # Without a deadline, each endpoint gets its timeout and the next one answers.
        with Etcd([mute, member.client_url], member.tls, 1.0) as client:
            assert client.keepalive(lease) == 30
    etcd.revoke(lease)
