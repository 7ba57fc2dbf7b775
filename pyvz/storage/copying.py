"""Full copies of a CT's tree, as `cp -a` makes them: owners, modes, xattrs (overlayfs
whiteouts and opaque marks among them), ACLs, hard links and holes; reflinked where the
filesystem can. Layouts with no snapshots (dir, simfs), convert, restores and pulls use it."""

from __future__ import annotations

from pathlib import Path

from pyvz.errors import ExitCode
from pyvz.run import run

_CP = ("cp", "-a", "--reflink=auto", "--sparse=always")


def copy_tree(source: Path, target: Path, error_code: ExitCode = ExitCode.CANT_CREATE_PRIVATE) -> None:
    """`source` copied as `target`, which does not exist yet."""
    run([*_CP, str(source), str(target)], error_code=error_code, timeout=None)


def copy_into(source: Path, target: Path, error_code: ExitCode = ExitCode.CANT_CREATE_PRIVATE) -> None:
    """Everything under `source` into the existing directory `target`."""
    run([*_CP, f"{source}/.", str(target)], error_code=error_code, timeout=None)
