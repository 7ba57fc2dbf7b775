"""What each endpoint of /api/v1 does: reads answered from the library in a thread,
changes started as operations (the CLI command that makes them)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pyvz.api import views
from pyvz.api.calls import PREFIX, Call, Handler, ok
from pyvz.api.grants import Role
from pyvz.api.schema import UUID, check
from pyvz.errors import ExitCode, VzError
from pyvz.params import BY_NAME, for_command, parse_options, reaches_host

# -- reads ---------------------------------------------------------------------------


async def _in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


async def list_cts(call: Call) -> web.StreamResponse:
    query = {k: v for k, v in call.request.query.items()}
    key = tuple(sorted(query.items()))
    listed, whole, packed = await call.daemon.shared_reads.get(
        key, lambda: _listing(call.daemon.paths, query)
    )
    if call.grant.everything:  # the JSON text made once for every caller who may see it all
        if accepts_gzip(call.request.headers.get("Accept-Encoding", "")):
            headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return web.Response(body=packed, content_type="application/json", headers=headers)
        return web.Response(body=whole, content_type="application/json", headers={"Vary": "Accept-Encoding"})
    return ok(views.in_scope(listed, call.grant))


def _listing(paths: Any, query: dict[str, str]) -> tuple[views.Listed, bytes, bytes]:
    """The listing, its JSON text and that text gzipped: a CT list is about 2.6 kB of JSON
    per CT, and compresses some fifty times, so a hundred clients listing at once cost the
    daemon 1/50th of the TLS and the copying, and the compression is done once for all."""
    import gzip
    import json

    listed = views.list_cts(paths, query)
    whole = json.dumps([fields for _c, _n, fields in listed], ensure_ascii=False).encode()
    return listed, whole, gzip.compress(whole, compresslevel=6, mtime=0)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (RFC 9110: a q of 0 refuses it; gzip
    named outright wins over `*`)."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, _sep, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights.setdefault(coding.strip().lower(), q)
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


async def get_ct(call: Call) -> web.StreamResponse:
    assert call.ctid is not None
    return ok(await _in_thread(views.ct_detail, call.daemon.paths, call.ctid))


async def ct_status(call: Call) -> web.StreamResponse:
    assert call.ctid is not None
    return ok(await _in_thread(views.ct_status, call.daemon.paths, call.ctid))


async def list_snapshots(call: Call) -> web.StreamResponse:
    assert call.ctid is not None
    return ok(await _in_thread(views.snapshots, call.daemon.paths, call.ctid))


async def list_backups(call: Call) -> web.StreamResponse:
    assert call.ctid is not None
    return ok(await _in_thread(views.backups, call.daemon.paths, call.ctid))


async def list_templates(call: Call) -> web.StreamResponse:
    return ok(await _in_thread(views.templates, call.daemon.paths))


async def list_recipes(call: Call) -> web.StreamResponse:
    return ok(await _in_thread(views.recipes, call.daemon.paths))


async def host_info(call: Call) -> web.StreamResponse:
    return ok(await _in_thread(views.host_info, call.daemon.paths))


async def host_capacity(call: Call) -> web.StreamResponse:
    """vzmemcheck -v, vzcpucheck -v and vzoversell, as the commands print them."""
    found = {}
    for tool, args in (("vzmemcheck", ["-v"]), ("vzcpucheck", ["-v"]), ("vzoversell", [])):
        found[tool] = await call.daemon.run_quick(tool, args)
    return ok(found)


async def ct_capacity(call: Call) -> web.StreamResponse:
    """vzcalc -v: the CT's share of the host, now, promised and at most."""
    assert call.ctid is not None
    return ok({"vzcalc": await call.daemon.run_quick("vzcalc", ["-v", str(call.ctid)])})


async def api_root(call: Call) -> web.StreamResponse:
    return ok(
        {
            "api": "v1",
            "you": {"who": call.grant.who, "role": call.grant.role.label, "scope": list(call.grant.scope)},
            "openapi": f"{PREFIX}/openapi.json",
        }
    )


async def openapi(call: Call) -> web.StreamResponse:
    from pyvz.api.openapi import document

    return ok(document())


# -- operations ----------------------------------------------------------------------


def _option_args(call: Call, command: str, values: dict[str, Any]) -> list[str]:
    """A body's parameters as vzctl options, after the table's own syntax check (the
    CLI's code and message for a bad value, before anything runs)."""
    allowed = {p.name for p in for_command(command)}
    texts: dict[str, str] = {}
    for name, value in values.items():
        if name not in allowed:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"params.{name} is not a parameter of {command}")
        if reaches_host(BY_NAME[name]) and not call.grant.everything:
            raise VzError(
                ExitCode.NO_ACCESS, f"params.{name} reaches the host: only a grant for every CT may set it"
            )
        items = value if isinstance(value, list) else [value]
        texts[name] = " ".join(str(v) for v in items)
        if any("\n" in str(v) for v in items):
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"params.{name} holds a newline")
    parse_options(texts)
    args: list[str] = []
    for name, value in values.items():
        option = BY_NAME[name].options[0]
        for item in value if isinstance(value, list) else [value]:
            args += [option, str(item)]
    return args


# vzctl spells some flags with dashes, some with underscores.
_FLAG_SPELLING = {
    "skip_suspend": "skip-suspend",
    "skip_config": "skip-config",
    "skip_resume": "skip-resume",
    "must_resume": "must-resume",
    "skip_umount": "skip-umount",
    "skip_fsck": "skip-fsck",
    "skip_remount": "skip-remount",
    "keep_dst": "keep-dst",
}


def flag_args(body: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [f"--{_FLAG_SPELLING.get(name, name)}" for name in names if body.get(name)]


async def _operation(
    call: Call, tool: str, args: list[str], kind: str, stdin: bytes | None = None
) -> web.StreamResponse:
    op = call.daemon.operations.start(tool, args, kind, call.ctid, call.actor, stdin)
    call.extra["operation"] = op.id
    wait = call.query("wait")
    if wait:
        try:
            await asyncio.wait_for(op.done.wait(), timeout=min(float(wait), 300.0))
        except TimeoutError:
            pass
    location = f"{PREFIX}/operations/{op.id}"
    return ok(op.as_json(), status=200 if op.done.is_set() else 202, headers={"Location": location})


def _ct(call: Call) -> str:
    assert call.ctid is not None
    return str(call.ctid)


async def create_ct(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = ["create", str(body["ctid"]), *_option_args(call, "create", body.get("params", {}))]
    return await _operation(call, "vzctl", args, "create")


async def set_ct(call: Call) -> web.StreamResponse:
    body = call.body or {}
    if not body.get("params") and not body.get("reset_ub"):
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "nothing to set: give params")
    args = [
        "set",
        _ct(call),
        *_option_args(call, "set", body.get("params", {})),
        *flag_args(body, ("save", "reset_ub")),
    ]
    if body.get("setmode"):
        args += ["--setmode", body["setmode"]]
    return await _operation(call, "vzctl", args, "set")


async def destroy_ct(call: Call) -> web.StreamResponse:
    return await _operation(call, "vzctl", ["destroy", _ct(call)], "destroy")


def ct_action(command: str, flags: tuple[str, ...] = ()) -> Handler:
    async def handler(call: Call) -> web.StreamResponse:
        body = call.body or {}
        args = [command, _ct(call), *flag_args(body, flags)]
        return await _operation(call, "vzctl", args, command)

    return handler


async def clone_ct(call: Call) -> web.StreamResponse:
    body = call.body or {}
    target = int(body["target"])
    if not call.grant.covers(target, (body.get("params") or {}).get("name")):
        raise VzError(ExitCode.NO_ACCESS, f"CT {target} is outside your scope")
    args = ["clone", _ct(call), str(target), *_option_args(call, "clone", body.get("params", {}))]
    if body.get("snapshot"):
        args += ["--snapshot", body["snapshot"]]
    return await _operation(call, "vzctl", args, "clone")


async def take_snapshot(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = ["snapshot", _ct(call), *flag_args(body, ("skip_suspend", "skip_config"))]
    for key, option in (("id", "--id"), ("name", "--name"), ("description", "--description")):
        if body.get(key):
            args += [option, body[key]]
    return await _operation(call, "vzctl", args, "snapshot")


def snapshot_action(command: str, flags: tuple[str, ...] = ()) -> Handler:
    async def handler(call: Call) -> web.StreamResponse:
        body = call.body or {}
        uuid = call.request.match_info["id"]
        check(UUID, uuid, "id")
        args = [command, _ct(call), "--id", uuid, *flag_args(body, flags)]
        if command == "snapshot-mount":
            args += ["--target", body["target"]]
        return await _operation(call, "vzctl", args, command)

    return handler


async def run_backup(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = [_ct(call), *flag_args(body, ("incremental", "stdexcludes"))]
    for key in ("mode", "compress"):
        if body.get(key):
            args += [f"--{key}", body[key]]
    return await _operation(call, "vzdump", args, "backup")


async def restore_backup(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = [_archive(call, body["archive"]), _ct(call), *flag_args(body, ("force",))]
    return await _operation(call, "vzrestore", args, "restore")


async def verify_backup(call: Call) -> web.StreamResponse:
    body = call.body or {}
    return await _operation(call, "vzdump", ["--verify", _archive(call, body["archive"])], "verify")


async def prune_backups(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = [_ct(call), "--prune-days", str(body["days"])]
    return await _operation(call, "vzdump", args, "prune")


def _archive(call: Call, name: str) -> str:
    """A backup of this CT in the dump directory, by its file name: never another path."""
    known = {b["archive"] for b in views.backups(call.daemon.paths, int(_ct(call)))}
    if name not in known:
        raise VzError(ExitCode.NO_CT_CONFIG, f"CT {_ct(call)} has no backup {name!r}")
    from pyvz.backup.dump import resolve_dumpdir
    from pyvz.host import Host

    return str(resolve_dumpdir(Host(call.daemon.paths), None) / name)


async def migrate_ct(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = [*flag_args(body, ("online", "keep_dst")), body["destination"], _ct(call)]
    if body.get("remove_source") is False:
        args = ["-r", "no", *args]
    return await _operation(call, "vzmigrate", args, "migrate")


async def exec_in(call: Call) -> web.StreamResponse:
    body = call.body or {}
    command = body["command"]
    # vzctl exec hands its words to the CT's shell as one line: a list is quoted word by word.
    import shlex

    words = [shlex.join(command) if isinstance(command, list) else command]
    stdin = body.get("stdin")
    return await _operation(call, "vzctl", ["exec2", _ct(call), *words], "exec", (stdin or "").encode())


async def template_action(call: Call) -> web.StreamResponse:
    body = call.body or {}
    action, name = body["action"], body["name"]
    if action == "download":
        return await _operation(call, "vztmpl-dl", [name], "template-download")
    if action == "build":
        return await _operation(call, "vztmpl", ["build", name], "template-build")
    if action == "verify":
        return await _operation(call, "vztmpl", ["verify", name], "template-verify")
    return await _operation(call, "vztmpl", ["remove", name], "template-remove")


async def import_template(call: Call) -> web.StreamResponse:
    body = call.body or {}
    args = ["import", body["file"], *(["--name", body["name"]] if body.get("name") else [])]
    return await _operation(call, "vztmpl", args, "template-import")


# -- operations and events -------------------------------------------------------------


def _op_of(call: Call) -> Any:
    op = call.daemon.operations.all.get(call.request.match_info["id"])
    if op is None or not call.daemon.sees_operation(call.grant, op):
        raise VzError(ExitCode.NO_CT_CONFIG, "no such operation")
    return op


async def list_operations(call: Call) -> web.StreamResponse:
    ops = [
        o.as_json() for o in call.daemon.operations.all.values() if call.daemon.sees_operation(call.grant, o)
    ]
    return ok(ops)


async def get_operation(call: Call) -> web.StreamResponse:
    return ok(_op_of(call).as_json())


async def wait_operation(call: Call) -> web.StreamResponse:
    op = _op_of(call)
    timeout = float(call.query("timeout") or "30")
    try:
        await asyncio.wait_for(op.done.wait(), timeout=min(timeout, 300.0))
    except TimeoutError:
        pass
    return ok(op.as_json())


async def cancel_operation(call: Call) -> web.StreamResponse:
    op = _op_of(call)
    if op.ctid is None:
        call.need(Role.ADMIN)
    elif not call.grant.may(Role.ADMIN) and op.actor.split(" from ")[0] != call.grant.who:
        call.need(Role.ADMIN)  # an operator cancels only what it started
    call.daemon.operations.cancel(op)
    return ok(op.as_json(), status=202)


async def events(call: Call) -> web.StreamResponse:
    from pyvz.api.streams import event_stream

    return await event_stream(call)


async def events_ws(call: Call) -> web.StreamResponse:
    from pyvz.api.streams import event_socket

    return await event_socket(call)


async def console(call: Call) -> web.StreamResponse:
    from pyvz.api.console import console_socket

    return await console_socket(call)
