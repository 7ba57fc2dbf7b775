"""Every endpoint of /api/v1, once: method, path, who may call it, what it takes. The
server, the authorization checks and the OpenAPI document are all made from this table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyvz.api.calls import Handler
from pyvz.api.grants import Role
from pyvz.api.handlers import (
    api_root,
    cancel_operation,
    clone_ct,
    console,
    create_ct,
    ct_action,
    ct_capacity,
    ct_status,
    destroy_ct,
    events,
    events_ws,
    exec_in,
    get_ct,
    get_operation,
    host_capacity,
    host_info,
    import_template,
    list_backups,
    list_cts,
    list_operations,
    list_recipes,
    list_snapshots,
    list_templates,
    migrate_ct,
    openapi,
    prune_backups,
    restore_backup,
    run_backup,
    set_ct,
    snapshot_action,
    take_snapshot,
    template_action,
    verify_backup,
    wait_operation,
)
from pyvz.api.schema import BOOL, COMMAND, CTID, JSON, NAME, PATH, TEXT, UUID, check, obj, params_object
from pyvz.errors import ExitCode, VzError


@dataclass(frozen=True)
class Query:
    name: str
    schema: JSON
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # below PREFIX; {ct} is a CTID or name in the caller's scope
    op_id: str
    summary: str
    role: Role
    handler: Handler
    body: JSON | None = None
    query: tuple[Query, ...] = ()
    operation: bool = False  # answers 202 with a background operation
    tag: str = "cts"
    stream: str | None = None  # "sse" or "websocket"

    @property
    def on_ct(self) -> bool:
        return "{ct}" in self.path


WAIT = Query(
    "wait", {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3})?$"}, "seconds to wait for the end"
)


# -- the table -----------------------------------------------------------------------

_PARAMS_CREATE = params_object("create")
_PARAMS_SET = params_object("set")
_PARAMS_CLONE = params_object("clone")
_STATE = Query("state", {"type": "string", "enum": ["all", "running", "stopped"]}, "which CTs (default all)")
_PATTERN = {"type": "string", "maxLength": 256}
_TYPES = Query(
    "types",
    {"type": "string", "pattern": r"^[a-z-]{1,20}(,[a-z-]{1,20}){0,10}$"},
    "only these event types (ct-created, ct-deleted, ct-state, ct-config, operation), comma-separated",
)
_ARCHIVE = {"type": "string", "pattern": r"^vzdump-[0-9A-Za-z_.-]{1,200}$"}


def _ct_action(command: str, summary: str, role: Role, flags: tuple[str, ...] = ()) -> Route:
    # No --dumpfile over the API: a path chosen by the caller is a file written (or read) as
    # root anywhere on the host; the dump goes where vzctl puts it by default.
    properties = {flag: BOOL for flag in flags}
    return Route(
        "POST", f"/cts/{{ct}}/{command}", f"{command}Ct", summary, role, ct_action(command, flags),
        obj(properties), (WAIT,), operation=True,
    )  # fmt: skip


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "",
        "apiRoot",
        "who you are, and where the OpenAPI document is",
        Role.VIEWER,
        api_root,
        tag="api",
    ),
    Route(
        "GET", "/openapi.json", "openapi", "this API's OpenAPI 3 document", Role.VIEWER, openapi, tag="api"
    ),
    Route(
        "GET",
        "/cts",
        "listCts",
        "the CTs in your scope, with vzlist's fields",
        Role.VIEWER,
        list_cts,
        query=(
            Query("fields", {"type": "string", "pattern": r"^[a-z0-9_.,]{1,2000}$"}, "vzlist -o fields"),
            _STATE,
            Query("hostname", _PATTERN, "vzlist -h PATTERN"),
            Query("name", _PATTERN, "vzlist -N PATTERN"),
            Query("description", _PATTERN, "vzlist -d PATTERN"),
        ),
    ),  # fmt: skip
    Route(
        "POST",
        "/cts",
        "createCt",
        "vzctl create",
        Role.ADMIN,
        create_ct,
        obj({"ctid": CTID, "params": _PARAMS_CREATE}, ("ctid",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route("GET", "/cts/{ct}", "getCt", "one CT: vzlist's fields and its config", Role.VIEWER, get_ct),
    Route(
        "PATCH",
        "/cts/{ct}",
        "setCt",
        "vzctl set (live; with save, also in the config)",
        Role.ADMIN,
        set_ct,
        obj(
            {
                "params": _PARAMS_SET,
                "save": BOOL,
                "reset_ub": BOOL,
                "setmode": {"type": "string", "enum": ["restart", "ignore"]},
            }
        ),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "DELETE",
        "/cts/{ct}",
        "destroyCt",
        "vzctl destroy",
        Role.ADMIN,
        destroy_ct,
        query=(WAIT,),
        operation=True,
    ),
    Route("GET", "/cts/{ct}/status", "ctStatus", "vzctl status", Role.VIEWER, ct_status),
    _ct_action("start", "vzctl start", Role.OPERATOR, ("wait", "force")),
    _ct_action("stop", "vzctl stop", Role.OPERATOR, ("fast",)),
    _ct_action("restart", "vzctl restart", Role.OPERATOR, ("wait", "fast")),
    _ct_action("chkpnt", "vzctl suspend: save memory and processes, then stop", Role.OPERATOR),
    _ct_action("restore", "vzctl resume: back from the dump", Role.OPERATOR),
    _ct_action("mount", "vzctl mount", Role.ADMIN),
    _ct_action("umount", "vzctl umount", Role.ADMIN),
    Route(
        "POST",
        "/cts/{ct}/clone",
        "cloneCt",
        "vzctl clone",
        Role.ADMIN,
        clone_ct,
        obj({"target": CTID, "snapshot": UUID, "params": _PARAMS_CLONE}, ("target",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/exec",
        "execInCt",
        "run a command in the CT (vzctl exec2): its exit code and output",
        Role.OPERATOR,
        exec_in,
        obj({"command": COMMAND, "stdin": TEXT}, ("command",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "GET",
        "/cts/{ct}/console",
        "ctConsole",
        "a terminal in the CT over a websocket (?shell=1: a root " "shell, as vzctl enter; else the console)",
        Role.OPERATOR,
        console,
        query=(Query("shell", {"type": "string", "enum": ["0", "1"]}, "a shell instead of the console"),),
        stream="websocket",
    ),  # fmt: skip
    Route("GET", "/cts/{ct}/snapshots", "listSnapshots", "vzctl snapshot-list", Role.VIEWER, list_snapshots),
    Route(
        "POST",
        "/cts/{ct}/snapshots",
        "takeSnapshot",
        "vzctl snapshot",
        Role.OPERATOR,
        take_snapshot,
        obj(
            {
                "id": UUID,
                "name": {"type": "string", "maxLength": 256, "pattern": r"^[^\n]*$"},
                "description": {"type": "string", "maxLength": 1024, "pattern": r"^[^\n]*$"},
                "skip_suspend": BOOL,
                "skip_config": BOOL,
            }
        ),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/snapshots/{id}/switch",
        "switchSnapshot",
        "vzctl snapshot-switch",
        Role.ADMIN,
        snapshot_action("snapshot-switch", ("skip_resume", "must_resume", "skip_config")),
        obj({"skip_resume": BOOL, "must_resume": BOOL, "skip_config": BOOL}),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "DELETE",
        "/cts/{ct}/snapshots/{id}",
        "deleteSnapshot",
        "vzctl snapshot-delete",
        Role.OPERATOR,
        snapshot_action("snapshot-delete"),
        query=(WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/snapshots/{id}/mount",
        "mountSnapshot",
        "vzctl snapshot-mount",
        Role.ADMIN,
        snapshot_action("snapshot-mount"),
        obj({"target": PATH}, ("target",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/snapshots/{id}/umount",
        "umountSnapshot",
        "vzctl snapshot-umount",
        Role.ADMIN,
        snapshot_action("snapshot-umount"),
        obj({}),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route("GET", "/cts/{ct}/backups", "listBackups", "the CT's vzdump archives", Role.VIEWER, list_backups),
    Route(
        "POST",
        "/cts/{ct}/backups",
        "runBackup",
        "vzdump",
        Role.OPERATOR,
        run_backup,
        obj(
            {
                "incremental": BOOL,
                "stdexcludes": BOOL,
                "mode": {"type": "string", "enum": ["snapshot", "suspend", "stop"]},
                "compress": {"type": "string", "enum": ["zstd", "gzip", "none"]},
            }
        ),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/backups/restore",
        "restoreBackup",
        "vzrestore one of the CT's archives over it",
        Role.ADMIN,
        restore_backup,
        obj({"archive": _ARCHIVE, "force": BOOL}, ("archive",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/backups/verify",
        "verifyBackup",
        "vzdump --verify one of the CT's archives",
        Role.VIEWER,
        verify_backup,
        obj({"archive": _ARCHIVE}, ("archive",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/backups/prune",
        "pruneBackups",
        "vzdump --prune-days: delete old archives",
        Role.OPERATOR,
        prune_backups,
        obj({"days": {"type": "integer", "minimum": 1, "maximum": 100000}}, ("days",)),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "POST",
        "/cts/{ct}/migrate",
        "migrateCt",
        "vzmigrate to another pyvz host",
        Role.ADMIN,
        migrate_ct,
        obj(
            {
                "destination": {"type": "string", "pattern": r"^[A-Za-z0-9_.:@\[\]-]{1,255}$"},
                "online": BOOL,
                "keep_dst": BOOL,
                "remove_source": BOOL,
            },
            ("destination",),
        ),
        (WAIT,),
        operation=True,
    ),  # fmt: skip
    Route(
        "GET",
        "/templates",
        "listTemplates",
        "the template cache",
        Role.VIEWER,
        list_templates,
        tag="templates",
    ),
    Route(
        "GET",
        "/recipes",
        "listRecipes",
        "the recipes vztmpl can build",
        Role.VIEWER,
        list_recipes,
        tag="templates",
    ),
    Route(
        "POST",
        "/templates",
        "templateAction",
        "download, build, verify or remove a template",
        Role.ADMIN,
        template_action,
        obj(
            {"action": {"type": "string", "enum": ["download", "build", "verify", "remove"]}, "name": NAME},
            ("action", "name"),
        ),
        (WAIT,),
        operation=True,
        tag="templates",
    ),  # fmt: skip
    Route(
        "POST",
        "/templates/import",
        "importTemplate",
        "vztmpl import of an archive on the host",
        Role.ADMIN,
        import_template,
        obj({"file": PATH, "name": NAME}, ("file",)),
        (WAIT,),
        operation=True,
        tag="templates",
    ),  # fmt: skip
    Route("GET", "/host", "hostInfo", "version, kernel, CRIU, LXCFS", Role.VIEWER, host_info, tag="host"),
    Route("GET", "/cts/{ct}/capacity", "ctCapacity", "vzcalc -v of the CT", Role.VIEWER, ct_capacity),
    Route(
        "GET",
        "/host/capacity",
        "hostCapacity",
        "vzmemcheck, vzcpucheck, vzoversell",
        Role.VIEWER,
        host_capacity,
        tag="host",
    ),  # fmt: skip
    Route(
        "GET",
        "/operations",
        "listOperations",
        "recent operations you can see",
        Role.VIEWER,
        list_operations,
        tag="operations",
    ),  # fmt: skip
    Route(
        "GET",
        "/operations/{id}",
        "getOperation",
        "one operation",
        Role.VIEWER,
        get_operation,
        tag="operations",
    ),
    Route(
        "GET",
        "/operations/{id}/wait",
        "waitOperation",
        "the operation, once it has ended (or at the timeout)",
        Role.VIEWER,
        wait_operation,
        query=(Query("timeout", {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3})?$"}, "seconds"),),
        tag="operations",
    ),  # fmt: skip
    Route(
        "DELETE",
        "/operations/{id}",
        "cancelOperation",
        "cancel (Ctrl-C) an operation",
        Role.OPERATOR,
        cancel_operation,
        tag="operations",
    ),  # fmt: skip
    Route(
        "GET",
        "/events",
        "events",
        "a stream of events (server-sent events)",
        Role.VIEWER,
        events,
        query=(_TYPES,),
        tag="events",
        stream="sse",
    ),  # fmt: skip
    Route(
        "GET",
        "/events/ws",
        "eventsSocket",
        "the same events over a websocket",
        Role.VIEWER,
        events_ws,
        query=(_TYPES,),
        tag="events",
        stream="websocket",
    ),  # fmt: skip
)


def body_of(route: Route, raw: bytes) -> Any:
    """The request's JSON body, checked against the route's schema."""
    if route.body is None:
        return None
    if not raw.strip():
        value: Any = {}
    else:
        try:
            value = json.loads(raw)
        except ValueError:
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "the body is not valid JSON") from None
    check(route.body, value)
    return value
