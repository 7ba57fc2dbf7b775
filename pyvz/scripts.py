"""Action scripts: vps.* and CTID.* in the config directory.

premount, mount, umount and postumount run on the host; start and stop run inside the CT.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import run

HOST_ACTIONS = ("premount", "mount", "umount", "postumount")
CT_ACTIONS = ("start", "stop")


def _scripts(paths: Paths, ctid: int, action: str) -> list[Path]:
    # Setting up, the global script runs first; tearing down, the CT's own runs first.
    order = ["vps", str(ctid)] if action in ("premount", "mount", "start") else [str(ctid), "vps"]
    return [p for p in (paths.action_script(who, action) for who in order) if p.is_file()]


def run_host_action(paths: Paths, ctid: int, action: str, env: dict[str, str]) -> None:
    assert action in HOST_ACTIONS
    for script in _scripts(paths, ctid, action):
        argv = [str(script)] if os.access(script, os.X_OK) else ["/bin/sh", str(script)]
        result = run(argv, check=False, env={"VEID": str(ctid), "CTID": str(ctid), **env})
        if result.returncode != 0:
            raise VzError(
                ExitCode.ACTIONSCRIPT_ERROR,
                f"action script {script} failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-300:]}",
            )


def ct_action_text(paths: Paths, ctid: int, action: str) -> str | None:
    """The script to feed to the CT's shell for `start` or `stop`, if any exists."""
    assert action in CT_ACTIONS
    texts = [script.read_text() for script in _scripts(paths, ctid, action)]
    return "\n".join(texts) if texts else None
