"""A small synchronous etcd v3 client over etcd's own HTTP/JSON gateway.

Why not a PyPI client: python-etcd3 is unmaintained and breaks with current protobuf, and
the gateway (`POST /v3/kv/range` etc., in every etcd since 3.3) needs nothing but
http.client and ssl. Keys and values travel base64-encoded, 64-bit numbers as strings.

- Several endpoints: a request goes to the endpoint that answered last; when it cannot be
  reached (refused, no route, TLS handshake failed, no answer in `timeout`), the next one is
  tried. A write whose answer was lost after it was sent is not sent again (it may have
  been applied): the caller gets UNAVAILABLE and decides (reserve() below checks).
- A member that answers but has no leader (it lost quorum) fails a linearizable request
  after etcd's own request timeout; that, and every "no leader" answer, is NO_QUORUM.
- Errors are VzError with a ClusterExit code, one line naming the endpoint and etcd's words.

One Etcd object holds one connection and a lock: threads may share it, requests then take
turns (a watch has its own connection).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pyvz.errors import ClusterExit, ExitCode, VzError

DEFAULT_TIMEOUT = 5.0
# etcd's own words for "this member cannot get a decision from a majority".
_NO_QUORUM_WORDS = ("no leader", "request timed out", "leader changed", "not capable", "too many requests")


class TlsFiles(NamedTuple):
    """The cluster CA (to check the members) and this host's client certificate and key."""

    ca: Path
    cert: Path
    key: Path


class KeyValue(NamedTuple):
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @property
    def text(self) -> str:
        return self.value.decode(errors="replace")

    def json(self) -> Any:
        """The value read as JSON (what pyvz writes); None if it is not."""
        try:
            return json.loads(self.value)
        except ValueError:
            return None


class Event(NamedTuple):
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue
    revision: int  # the revision of the change (resume a watch at revision + 1)


class TxnResult(NamedTuple):
    succeeded: bool
    responses: list[dict[str, Any]]  # etcd's, in the order of the branch's operations
    revision: int

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of each range operation of the branch that ran."""
        return [
            [_kv(kv) for kv in response["response_range"].get("kvs", [])]
            for response in self.responses
            if "response_range" in response
        ]


class Member(NamedTuple):
    id: int
    name: str  # empty for a member added but not started yet
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool


class Status(NamedTuple):
    endpoint: str
    member_id: int
    leader: int  # 0: this member knows no leader
    version: str
    raft_term: int
    errors: tuple[str, ...]
    learner: bool = False  # this member has not been promoted (as far as it has applied)


# ---- request bodies -------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with `prefix`."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # the whole keyspace


def absent(key: str) -> dict[str, Any]:
    """Compare: `key` does not exist (its create_revision is 0)."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def value_is(key: str, value: str | bytes) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def mod_revision_is(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put_op(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def delete_op(key: str, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": body}


def range_op(key: str, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_range": body}


def _kv(raw: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(raw.get("key", "")).decode(errors="replace"),
        value=base64.b64decode(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _member(raw: Mapping[str, Any]) -> Member:
    return Member(
        id=int(raw.get("ID", 0)),
        name=str(raw.get("name", "")),
        peer_urls=tuple(raw.get("peerURLs", ())),
        client_urls=tuple(raw.get("clientURLs", ())),
        learner=bool(raw.get("isLearner", False)),
    )


def parse_endpoints(text: str | Sequence[str]) -> tuple[str, ...]:
    """`https://198.18.1.1:2379,https://…` (or a list): checked, normalised, no duplicates."""
    words = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    found: list[str] = []
    for word in words:
        parts = urlsplit(word)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"bad etcd endpoint {word!r} (want https://ADDRESS:PORT)",
            )
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"bad etcd endpoint {word!r}: no path or user")
        url = f"{parts.scheme}://{parts.netloc}"
        if url not in found:
            found.append(url)
    if not found:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "no etcd endpoint given")
    return tuple(found)


class Uncertain(VzError):
    """A write that went out and whose answer was lost: it may or may not have been applied.
    Still a VzError (UNAVAILABLE) to everyone but a caller that can check, as reserve() does."""


class _Unreachable(Exception):
    """This endpoint did not take the request: the next one may."""


class _Lost(Exception):
    """The request went out and its answer did not come back."""


class Etcd:
    def __init__(
        self, endpoints: Sequence[str], tls: TlsFiles | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.tls = tls
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        self._current = 0  # index of the endpoint that answered last
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    # ---- transport ----------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            if self.tls is None:
                raise VzError(
                    ClusterExit.PKI, "an https etcd endpoint needs the cluster CA and a client certificate"
                )
            try:
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            except (OSError, ssl.SSLError) as err:
                raise VzError(ClusterExit.PKI, f"cannot load the cluster certificates: {err}") from None
            self._context = context
        return self._context

    def _connect(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl())
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> Etcd:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _once(self, endpoint: str, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        fresh = self._conn is None
        if self._conn is None:
            self._conn = self._connect(endpoint, timeout)
            try:
                self._conn.connect()
            except ssl.SSLError as err:
                self._close()
                raise _Unreachable(f"TLS refused: {err.reason or err}") from None
            except OSError as err:
                self._close()
                raise _Unreachable(err.strerror or str(err) or type(err).__name__) from None
        conn = self._conn
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
        except OSError as err:
            self._close()
            if fresh:
                raise _Unreachable(err.strerror or str(err)) from None
            raise _Stale() from None
        try:
            response = conn.getresponse()
            data = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
            self._close()
            if not fresh:
                raise _Stale() from None  # a kept-alive connection the server had closed
            raise _Lost(str(err) or type(err).__name__) from None
        except (OSError, http.client.HTTPException) as err:
            self._close()
            raise _Lost(
                f"no answer in {timeout:g} s" if isinstance(err, TimeoutError) else str(err)
            ) from None
        if response.getheader("Connection", "").lower() == "close":
            self._close()
        return response.status, data

    def call(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        write: bool = False,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """POST `body` to the gateway's `path` and return etcd's answer. `write`: the request
        changes something, so it is not sent again once it may have arrived. `deadline`
        (time.monotonic()): the request, over every endpoint it tries, ends by then (each
        endpoint still gets at most `timeout`)."""
        data = json.dumps(body).encode()
        most = self.timeout if timeout is None else timeout
        reasons: list[str] = []
        with self._lock:
            for step in range(len(self.endpoints)):
                at = (self._current + step) % len(self.endpoints)
                endpoint = self.endpoints[at]
                wait = most if deadline is None else min(most, deadline - time.monotonic())
                if wait <= 0.05:
                    reasons.append(f"{endpoint}: not tried, the request's time was up")
                    break
                try:
                    try:
                        status, raw = self._once(endpoint, path, data, wait)
                    except _Stale:
                        status, raw = self._once(endpoint, path, data, wait)
                except _Unreachable as err:
                    reasons.append(f"{endpoint}: {err}")
                    continue
                except _Lost as err:
                    left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    if left > 0.05 and self._leaderless(endpoint, left):
                        # A member without a leader drops what it is asked to propose, so the
                        # next member may be asked (it is in the majority, if there is one).
                        reasons.append(f"{endpoint} answers but has no leader")
                        continue
                    if write:
                        raise Uncertain(
                            ClusterExit.UNAVAILABLE,
                            f"etcd at {endpoint} took the request and gave no answer ({err}); "
                            "it may or may not have been applied",
                        ) from None
                    reasons.append(f"{endpoint}: {err}")
                    continue
                answer = _decode(raw)
                if status == 200 and "error" not in answer:
                    self._current = at
                    return answer
                message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
                if any(words in message for words in _NO_QUORUM_WORDS):
                    reasons.append(f"{endpoint}: {message}")
                    if write:
                        break  # another member of the same cluster would say the same, later
                    continue
                raise _refusal(endpoint, path, message, int(answer.get("code", 0) or 0))
        raise _unavailable(reasons)

    def _leaderless(self, endpoint: str, timeout: float = 1.0) -> bool:
        """Whether the member at `endpoint` answers but knows no leader (a request it took
        then times out: it cannot reach a majority). Asked on a connection of its own."""
        probe = Etcd([endpoint], self.tls, timeout)
        probe._context = self._context
        try:
            status, raw = probe._once(endpoint, "/v3/maintenance/status", b"{}", timeout)
        except (_Unreachable, _Lost, _Stale, VzError):
            return False
        finally:
            probe._close()
        answer = _decode(raw)
        return status == 200 and int(answer.get("leader", 0) or 0) == 0

    # ---- kv -----------------------------------------------------------------------------

    def get(self, key: str, *, serializable: bool = False) -> KeyValue | None:
        """The key, or None. `serializable`: this member's own copy, answered without quorum
        (it may lag behind)."""
        body: dict[str, Any] = {"key": b64(key)}
        if serializable:
            body["serializable"] = True
        kvs = self.call("/v3/kv/range", body).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def range(self, prefix: str, *, serializable: bool = False, limit: int = 0) -> list[KeyValue]:
        """Every key that starts with `prefix`, in key order."""
        body: dict[str, Any] = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        if serializable:
            body["serializable"] = True
        if limit:
            body["limit"] = str(limit)
        return [_kv(kv) for kv in self.call("/v3/kv/range", body).get("kvs", [])]

    def revision(self) -> int:
        """The store's current revision (a watch started at revision + 1 misses nothing)."""
        answer = self.call("/v3/kv/range", {"key": b64("\0"), "count_only": True})
        return int(answer.get("header", {}).get("revision", 0))

    def put(self, key: str, value: str | bytes, *, lease: int = 0) -> int:
        """Write the key (attached to `lease` if given); returns the new revision."""
        body = put_op(key, value, lease)["request_put"]
        answer = self.call("/v3/kv/put", body, write=True)
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete the key (or every key under the prefix); returns how many went."""
        body = delete_op(key, prefix)["request_delete_range"]
        return int(self.call("/v3/kv/deleterange", body, write=True).get("deleted", 0))

    def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        """If every comparison holds, run `success`, else `failure`, atomically (see absent(),
        value_is(), put_op(), delete_op(), range_op())."""
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        answer = self.call("/v3/kv/txn", body, write=True)
        return TxnResult(
            bool(answer.get("succeeded", False)),
            list(answer.get("responses", [])),
            int(answer.get("header", {}).get("revision", 0)),
        )

    # ---- leases -------------------------------------------------------------------------

    def grant(self, ttl: int, *, deadline: float | None = None) -> int:
        """A new lease of `ttl` seconds; returns its id."""
        answer = self.call("/v3/lease/grant", {"TTL": str(ttl)}, write=True, deadline=deadline)
        return int(answer["ID"])

    def keepalive(self, lease: int, *, deadline: float | None = None) -> int:
        """Renew the lease; returns the TTL it has again, 0 when it has expired (or never was)."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease)}, deadline=deadline)
        return int(answer.get("result", answer).get("TTL", 0))

    def revoke(self, lease: int) -> bool:
        """Revoke the lease (its keys go with it); False when it was gone already."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)}, write=True)
        except VzError as err:
            if "lease not found" in err.message:
                return False
            raise
        return True

    def time_to_live(self, lease: int) -> int:
        """Seconds the lease has left; -1 when it has expired (or never was)."""
        return int(self.call("/v3/lease/timetolive", {"ID": str(lease)}).get("TTL", -1))

    # ---- watch --------------------------------------------------------------------------

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0, idle: float | None = None
    ) -> Iterator[Event]:
        """The changes to `key` (or under the prefix), from `start_revision` (0: from now).

        It ends when `idle` seconds pass without a change (None: never); resume from the last
        event's revision + 1 to miss nothing. A broken stream raises UNAVAILABLE, a start
        revision already compacted away raises INVALID_PARAMETER_VALUE."""
        create: dict[str, Any] = {"key": b64(key)}
        if prefix:
            create["range_end"] = b64(prefix_end(key))
        if start_revision:
            create["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": create}).encode()
        reasons = []
        for step in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._current + step) % len(self.endpoints)]
            conn = self._connect(endpoint, self.timeout)
            try:
                conn.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    answer = _decode(response.read())
                    conn.close()
                    raise _refusal(endpoint, "/v3/watch", str(answer.get("message", response.status)), 0)
                first = _decode(response.readline()).get("result", {})
                if not first.get("created"):
                    conn.close()
                    raise _unavailable([f"{endpoint}: the watch was not created"])
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                reasons.append(f"{endpoint}: {getattr(err, 'strerror', None) or err}")
                continue
            return _events(conn, response, endpoint, idle)
        raise _unavailable(reasons)

    # ---- cluster ------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return [_member(m) for m in self.call("/v3/cluster/member/list", {}).get("members", [])]

    def member_add(self, peer_urls: Sequence[str], *, learner: bool = False) -> Member:
        body: dict[str, Any] = {"peerURLs": list(peer_urls)}
        if learner:
            body["isLearner"] = True
        return _member(self.call("/v3/cluster/member/add", body, write=True)["member"])

    def member_promote(self, member: int) -> None:
        self.call("/v3/cluster/member/promote", {"ID": str(member)}, write=True)

    def member_remove(self, member: int) -> None:
        self.call("/v3/cluster/member/remove", {"ID": str(member)}, write=True)

    def status(self, endpoint: str, timeout: float = 2.0) -> Status:
        """One member's own view (answered without quorum): its id, the leader it knows."""
        one = Etcd([endpoint], self.tls, timeout)
        one._context = self._context
        try:
            answer = one.call("/v3/maintenance/status", {})
        finally:
            one.close()
        return Status(
            endpoint=endpoint,
            member_id=int(answer.get("header", {}).get("member_id", 0)),
            leader=int(answer.get("leader", 0)),
            version=str(answer.get("version", "")),
            raft_term=int(answer.get("raftTerm", 0)),
            errors=tuple(answer.get("errors", ())),
            learner=bool(answer.get("isLearner", False)),
        )


class _Stale(Exception):
    """A kept-alive connection the server had closed: send again on a new one."""


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        return {"error": raw[:200].decode(errors="replace") or "not JSON"}
    return answer if isinstance(answer, dict) else {"error": "not a JSON object"}


def _refusal(endpoint: str, path: str, message: str, code: int) -> VzError:
    what = path.rsplit("/", 2)[-2:]
    if code in (7, 16) or "certificate" in message:  # PERMISSION_DENIED, UNAUTHENTICATED
        return VzError(ClusterExit.PKI, f"etcd at {endpoint} refused us: {message}")
    return VzError(ClusterExit.MEMBER, f"etcd at {endpoint} refused {'/'.join(what)}: {message}")


def _unavailable(reasons: list[str]) -> VzError:
    said = "; ".join(reasons) or "no endpoint"
    if any(words in said for words in _NO_QUORUM_WORDS):
        return VzError(
            ClusterExit.NO_QUORUM,
            f"etcd has no quorum ({said}): nothing can be reserved or decided until more than "
            "half of its members are reachable again",
        )
    return VzError(ClusterExit.UNAVAILABLE, f"no etcd member answers ({said})")


def _events(
    conn: http.client.HTTPConnection, response: http.client.HTTPResponse, endpoint: str, idle: float | None
) -> Iterator[Event]:
    if conn.sock is not None:
        conn.sock.settimeout(idle)
    try:
        while True:
            try:
                line = response.readline()
            except TimeoutError:
                return
            except (OSError, http.client.HTTPException) as err:
                raise VzError(ClusterExit.UNAVAILABLE, f"the watch on {endpoint} broke: {err}") from None
            if not line:
                raise VzError(ClusterExit.UNAVAILABLE, f"etcd at {endpoint} ended the watch")
            if not line.strip():
                continue
            result = _decode(line).get("result", {})
            if result.get("canceled") or result.get("compact_revision"):
                reason = result.get("cancel_reason") or "the start revision was compacted"
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"etcd canceled the watch: {reason}")
            for event in result.get("events", []):
                kv = _kv(event.get("kv", {}))
                yield Event(str(event.get("type", "PUT")), kv, kv.mod_revision)
    finally:
        conn.close()


# ---- reservations -----------------------------------------------------------------------


def reserve(etcd: Etcd, keys: Mapping[str, str], *, lease: int = 0) -> str | None:
    """Reserve every key of `keys` in one transaction: all are written (with their values,
    attached to `lease` if given) only if none exists. Returns None when they are all ours,
    else the first key held by someone else.

    Each value should name its reserver uniquely (host and a nonce, see owner_value()): a
    key that already holds exactly our value counts as ours, so a retry after a lost answer
    (UNAVAILABLE "may or may not have been applied") completes instead of finding itself.
    Without quorum, NO_QUORUM is raised: nothing is reserved."""
    if not keys:
        return None
    ours: dict[str, int] = {}  # key -> mod_revision of our own earlier write
    for _attempt in range(5):
        missing = [key for key in keys if key not in ours]
        compare = [absent(key) for key in missing]
        compare += [mod_revision_is(key, revision) for key, revision in ours.items()]
        try:
            result = etcd.txn(
                compare,
                [put_op(key, keys[key], lease) for key in missing],
                [range_op(key) for key in keys],
            )
        except Uncertain:
            continue  # the next try finds our own values if it went through (NO_QUORUM is raised)
        if result.succeeded:
            return None
        ours = {}
        for key, found in zip(keys, result.ranges(), strict=True):
            if not found:
                continue
            if found[0].value != keys[key].encode():
                return key
            ours[key] = found[0].mod_revision
        if len(ours) == len(keys):
            return None
    raise VzError(ClusterExit.TAKEN, f"the reservation of {', '.join(keys)} kept changing under us")


def release(etcd: Etcd, keys: Mapping[str, str]) -> list[str]:
    """Delete each key that still holds our value; returns those that went."""
    gone = []
    for key, value in keys.items():
        if etcd.txn([value_is(key, value)], [delete_op(key)]).succeeded:
            gone.append(key)
    return gone


def owner_value(host: str, **extra: Any) -> str:
    """A reservation's value: who holds it and since when, with a nonce that makes it unique."""
    return json.dumps({"host": host, "since": int(time.time()), "nonce": secrets.token_hex(8), **extra})


# ---- leader election --------------------------------------------------------------------


class Election:
    """The usual etcd pattern: the leader is whoever wrote `key` (absent → put, in one txn),
    attached to its lease; when the leader's lease expires or it resigns, the key goes and
    the next campaign wins. `value` names the candidate (its host name)."""

    def __init__(self, etcd: Etcd, key: str, value: str, lease: int) -> None:
        self.etcd = etcd
        self.key = key
        self.value = value
        self.lease = lease

    def campaign(self) -> bool:
        """Try once to become leader; True if this candidate is (or already was) leader."""
        result = self.etcd.txn(
            [absent(self.key)], [put_op(self.key, self.value, self.lease)], [range_op(self.key)]
        )
        if result.succeeded:
            return True
        found = result.ranges()[0]
        return bool(found) and found[0].value == self.value.encode() and found[0].lease == self.lease

    def leader(self) -> str | None:
        kv = self.etcd.get(self.key)
        return kv.text if kv is not None else None

    def is_leader(self) -> bool:
        kv = self.etcd.get(self.key)
        return kv is not None and kv.value == self.value.encode() and kv.lease == self.lease

    def wait(self, timeout: float) -> bool:
        """Campaign until leader or `timeout` seconds have passed, watching the key between
        tries rather than polling."""
        deadline = time.monotonic() + timeout
        while True:
            if self.campaign():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            revision = self.etcd.revision()
            for event in self.etcd.watch(self.key, start_revision=revision, idle=min(left, 1.0)):
                if event.kind == "DELETE":
                    break

    def resign(self) -> bool:
        """Give up the leadership if this candidate holds it."""
        return self.etcd.txn([value_is(self.key, self.value)], [delete_op(self.key)]).succeeded


def endpoint_reachable(endpoint: str, timeout: float = 1.0) -> bool:
    """Whether something listens at the endpoint's address (no request is made)."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=timeout):
            return True
    except OSError:
        return False
