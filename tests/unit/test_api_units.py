"""The API's pure parts: scopes, token storage, body checks, shared reads, throttling."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pyvz.api.coalesce import SharedReads
from pyvz.api.grants import Grant, Grants, Role, parse_scope
from pyvz.api.openapi import document
from pyvz.api.routes import ROUTES
from pyvz.api.schema import check, param_schema
from pyvz.api.throttle import Throttle
from pyvz.errors import VzError
from pyvz.params import BY_NAME, PARAMS
from pyvz.paths import Paths


def test_scopes_cover_ids_ranges_names_and_patterns() -> None:
    grant = Grant("t", Role.VIEWER, parse_scope("101, 200-299,web*,db1"))
    assert grant.covers(101) and grant.covers(250) and not grant.covers(300)
    assert grant.covers(999, "web7") and grant.covers(998, "db1") and not grant.covers(997, "db2")
    assert not grant.everything and Grant("t", Role.VIEWER).everything
    for bad in ("", "a b", "300-200", "x;y", "../x"):
        with pytest.raises(VzError):
            parse_scope(bad)


def test_tokens_are_kept_only_as_hashes(tmp_path: Path) -> None:
    grants = Grants(Paths(tmp_path))
    token = grants.add_token("alice", Role.OPERATOR, ("101",))
    stored = (tmp_path / "etc/vz/api/grants.json").read_text()
    assert token.split("_", 2)[2] not in stored and json.loads(stored)[0]["role"] == "operator"
    assert oct((tmp_path / "etc/vz/api/grants.json").stat().st_mode)[-3:] == "600"
    found = grants.for_token(token)
    assert found is not None and found.role is Role.OPERATOR and found.scope == ("101",)
    assert grants.for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert grants.for_token("not a token") is None
    with pytest.raises(VzError):
        grants.add_token("alice", Role.ADMIN, ("*",))
    grants.remove("alice")
    assert grants.for_token(token) is None


def test_body_checks_follow_the_schema() -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["n"],
              "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5},
                             "s": {"type": "string", "pattern": "^[a-z]+$"}}}  # fmt: skip
    check(schema, {"n": 3, "s": "abc"})
    for bad in ({}, {"n": 0}, {"n": True}, {"n": 2, "s": "A"}, {"n": 2, "x": 1}, [], {"n": 2, "s": "a\x00"}):
        with pytest.raises(VzError):
            check(schema, bad)


def test_every_parameter_is_in_the_openapi_document() -> None:
    doc = document()
    create = doc["paths"]["/api/v1/cts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    props = create["properties"]["params"]["properties"]
    assert props["ram"]["x-pyvz-config-key"] == "PHYSPAGES" and props["ram"]["x-pyvz-live"] is True
    cpuunits = param_schema(BY_NAME["cpuunits"])
    assert {"type": "integer", "minimum": 8, "maximum": 500000} in cpuunits["anyOf"]
    settable = doc["paths"]["/api/v1/cts/{ct}"]["patch"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    names = set(settable["properties"]["params"]["properties"])
    assert names == {p.name for p in PARAMS if "set" in p.commands}
    assert {r.op_id for r in ROUTES} <= {
        op["operationId"] for path in doc["paths"].values() for op in path.values()
    }


def test_a_reported_change_makes_later_requests_wait_for_a_new_reading() -> None:
    async def scenario() -> tuple[list[int], int]:
        shared = SharedReads()
        readings = 0

        def read() -> int:
            nonlocal readings
            readings += 1
            return readings

        first = asyncio.create_task(shared.get("k", read))
        await asyncio.sleep(0)
        same = asyncio.create_task(shared.get("k", read))  # nothing changed: joins the first
        await asyncio.sleep(0)
        shared.changed()  # a command let go of a CT meanwhile
        late = [asyncio.create_task(shared.get("k", read)) for _ in range(5)]
        return [await first, await same, *[await t for t in late]], readings

    results, readings = asyncio.run(scenario())
    assert results[:2] == [1, 1] and set(results[2:]) == {2} and readings == 2


def test_shared_reads_are_never_older_than_the_request() -> None:
    async def scenario() -> tuple[list[int], int]:
        shared = SharedReads()
        readings = 0

        def read() -> int:
            nonlocal readings
            readings += 1
            return readings

        first = asyncio.create_task(shared.get("k", read))
        await asyncio.sleep(0)  # the first reading is under way
        shared.changed()
        late = [asyncio.create_task(shared.get("k", read)) for _ in range(10)]
        return [await first, *[await t for t in late]], readings

    results, readings = asyncio.run(scenario())
    # The ten that came while the first reading ran share one later reading.
    assert results[0] == 1 and set(results[1:]) == {2} and readings == 2


def test_failures_are_slowed_down_then_refused() -> None:
    throttle = Throttle()
    delays = []
    for _ in range(6):
        delays.append(throttle.delay("a"))
        throttle.failed("a")
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    assert throttle.delay("b") == 0.0 and not throttle.blocked("a")
    for _ in range(30):
        throttle.failed("a")
    assert throttle.blocked("a")
    throttle.succeeded("a")
    assert not throttle.blocked("a")


def test_the_poll_leaves_a_ct_a_command_is_changing_to_that_commands_datagram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvz.api import bus as bus_module
    from pyvz.api.bus import Bus, Snapshot, Watcher

    monkeypatch.setattr(bus_module, "POLL_EVERY", 0.01)
    state: dict[int, Snapshot] = {101: ("stopped", {})}
    locked: set[int] = set()
    events: list[dict[str, Any] | None] = []

    async def scenario() -> None:
        bus = Bus()
        subscriber = bus.subscribe(lambda event: True)
        watcher = Watcher(Paths(tmp_path), bus, lambda ctid: dict(state), busy=lambda ctids: ctids & locked)
        await watcher.start()
        try:
            locked.add(101)  # a `vzctl start 101` holds the lock while the CT comes up
            state[101] = ("running", {})
            await asyncio.sleep(0.1)  # several polls see it running
            assert subscriber.queue.empty()
            locked.clear()
            watcher.poked(json.dumps({"ctid": 101, "actor": "vzctl", "command": "start 101"}).encode())
            events.append(await asyncio.wait_for(subscriber.queue.get(), 5))
            state[101] = ("stopped", {})  # it halts from inside: only the poll can see that
            events.append(await asyncio.wait_for(subscriber.queue.get(), 5))
        finally:
            await watcher.stop()

    asyncio.run(scenario())
    assert [(e["type"], e["status"], e["actor"], e.get("command")) for e in events if e] == [
        ("ct-state", "running", "vzctl", "start 101"),
        ("ct-state", "stopped", "the CT itself", None),
    ]
