from __future__ import annotations

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def test_create_start_exec_stop_destroy(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--hostname", "smoke")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    vzroot.ok("start", "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    assert vzroot.ok("exec", "101", "hostname").strip() == "smoke"
    vzroot.ok("stop", "101")
    vzroot.ok("destroy", "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"
