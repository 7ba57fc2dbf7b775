"""Two PYVZ_ROOTs on one host run a CT with the same CTID at the same time (the migration
tests need two "hosts")."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import VzRoot, throwaway_root

pytestmark = pytest.mark.root


@pytest.fixture
def second_root() -> Iterator[VzRoot]:
    with throwaway_root("pyvz-test-b-") as root:
        yield root


def test_same_ctid_in_two_roots(vzroot: VzRoot, second_root: VzRoot) -> None:
    from pyvz.paths import Paths

    assert Paths(vzroot.root).tag != Paths(second_root.root).tag
    for env, name in ((vzroot, "host-a"), (second_root, "host-b")):
        env.ok("create", "101", "--hostname", name)
        env.ok("start", "101")
    assert vzroot.ok("exec", "101", "hostname").strip() == "host-a"
    assert second_root.ok("exec", "101", "hostname").strip() == "host-b"
    for env, name in ((vzroot, "host-a"), (second_root, "host-b")):
        rows = env.vzlist("-H").out.split()
        assert rows[0] == "101" and rows[2] == "running" and rows[-1] == name
    # Stopping one leaves the other running.
    vzroot.ok("stop", "--fast", "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    assert second_root.ok("status", "101").strip() == "CTID 101 exist mounted running"
    assert second_root.ok("exec", "101", "hostname").strip() == "host-b"
    second_root.ok("stop", "--fast", "101")
    assert os.path.exists(second_root.private_dir / "101")
