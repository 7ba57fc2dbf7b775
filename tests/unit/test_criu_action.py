"""The CRIU action script pyvz writes for a dump or restore (pyvz/runtime/criu.py), run by
sh against a fake cgroup tree, as CRIU runs it: one stage per run, in CRTOOLS_SCRIPT_ACTION."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pyvz.runtime.criu import action_script


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A v1-style freezer for a CT, with its inner cgroup below (as LXC makes it)."""
    top = tmp_path / "freezer/pyvz-x/101"
    (top / "ns").mkdir(parents=True)
    for directory in (top, top / "ns"):
        (directory / "freezer.state").write_text("THAWED\n")
    return top / "freezer.state", top / "ns/freezer.state"


def _run(script: str, tmp_path: Path, action: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "criu-action"
    path.write_text(script)
    path.chmod(0o700)
    env = {**os.environ, "CRTOOLS_SCRIPT_ACTION": action}
    return subprocess.run([str(path)], env=env, capture_output=True, text=True, timeout=30)


def _v1(tmp_path: Path, host_network: str = "", thaw: bool = True) -> str:
    state, _inner = _tree(tmp_path)
    return action_script((state, "FROZEN", "THAWED"), (state, "FROZEN"), tmp_path / "err", host_network, thaw)


def test_pre_dump_freezes_the_ct_so_criu_finds_it_frozen(tmp_path: Path) -> None:
    script = _v1(tmp_path)
    assert _run(script, tmp_path, "pre-dump").returncode == 0
    assert (tmp_path / "freezer/pyvz-x/101/freezer.state").read_text() == "FROZEN"


def test_pre_dump_gives_up_and_thaws_when_the_cgroup_does_not_freeze(tmp_path: Path) -> None:
    # cgroup v2's shape: cgroup.freeze is written, cgroup.events says whether it is frozen;
    # here it never does, so CRIU is left to freeze it its own way.
    group = tmp_path / "pyvz-x/101"
    group.mkdir(parents=True)
    (group / "cgroup.freeze").write_text("0\n")
    (group / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    script = action_script(
        (group / "cgroup.freeze", "1", "0"), (group / "cgroup.events", "frozen 1"), tmp_path / "err"
    )
    assert _run(script, tmp_path, "pre-dump").returncode == 0
    assert (group / "cgroup.freeze").read_text() == "0"


def test_pre_dump_leaves_a_ct_that_is_frozen_already_alone(tmp_path: Path) -> None:
    script = _v1(tmp_path)
    state = tmp_path / "freezer/pyvz-x/101/freezer.state"
    state.write_text("FROZEN\n")
    assert _run(script, tmp_path, "pre-dump").returncode == 0
    assert state.read_text() == "FROZEN\n"  # not rewritten


def test_post_resume_thaws_the_ct_and_its_inner_cgroup(tmp_path: Path) -> None:
    script = _v1(tmp_path)
    top, inner = (
        tmp_path / "freezer/pyvz-x/101/freezer.state",
        tmp_path / "freezer/pyvz-x/101/ns/freezer.state",
    )
    top.write_text("FROZEN")
    inner.write_text("FROZEN")
    assert _run(script, tmp_path, "post-resume").returncode == 0
    assert (top.read_text(), inner.read_text()) == ("THAWED", "THAWED")


def test_a_restore_meant_to_stay_frozen_is_not_thawed(tmp_path: Path) -> None:
    script = _v1(tmp_path, thaw=False)
    inner = tmp_path / "freezer/pyvz-x/101/ns/freezer.state"
    inner.write_text("FROZEN")
    assert _run(script, tmp_path, "post-resume").returncode == 0
    assert inner.read_text() == "FROZEN"


def test_post_restore_runs_the_host_network_with_here_documents(tmp_path: Path) -> None:
    out = tmp_path / "network"
    network = f"cat > {out} <<'PYVZ_IP'\nlink set dev v.101 up\nPYVZ_IP\n"
    assert _run(_v1(tmp_path, network), tmp_path, "post-restore").returncode == 0
    assert out.read_text() == "link set dev v.101 up\n"


def test_a_failing_host_network_aborts_the_restore_and_says_why(tmp_path: Path) -> None:
    network = "printf %s 1 > /nonexistent/proc/sys/x\necho not reached > never\n"
    done = _run(_v1(tmp_path, network), tmp_path, "post-restore")
    assert done.returncode != 0  # CRIU aborts the restore on this
    assert "nonexistent" in (tmp_path / "err").read_text()
    assert not (tmp_path / "never").exists()


def test_post_dump_writes_the_record_and_post_resume_puts_owners_back_before_the_thaw(
    tmp_path: Path,
) -> None:
    state, inner = _tree(tmp_path)
    inner.write_text("FROZEN")
    seen = tmp_path / "seen"
    record = f"echo recorded > {tmp_path / 'record'}"
    owners = f"cat {inner} > {seen}"  # what the CT's freezer said when the owners went back
    script = action_script(
        (state, "FROZEN", "THAWED"), (state, "FROZEN"), tmp_path / "err", record=record, owners=owners
    )
    assert _run(script, tmp_path, "post-dump").returncode == 0
    assert (tmp_path / "record").read_text() == "recorded\n"
    assert not seen.exists()
    assert _run(script, tmp_path, "post-resume").returncode == 0
    assert seen.read_text() == "FROZEN"  # the CT ran no instruction with CRIU's owners
    assert inner.read_text() == "THAWED"


def test_other_stages_do_nothing(tmp_path: Path) -> None:
    script = _v1(tmp_path, "exit 3\n")
    for action in ("pre-restore", "post-dump", "network-unlock", "setup-namespaces", "pre-resume"):
        assert _run(script, tmp_path, action).returncode == 0
    assert (tmp_path / "freezer/pyvz-x/101/freezer.state").read_text() == "THAWED\n"
