"""vzctl run (issue 15, item 4): one command in a fresh CT that is gone again afterwards,
against doing the same by hand with LXC, and against systemd-nspawn --ephemeral on a Debian
tree. Each sample is the whole of it: make the CT, start it, run `true`, remove it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import VZCTL, BenchRoot, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context

PEER = "run-peer"  # the raw LXC container of the busybox row, in an lxcpath of its own


def _tree(vz: BenchRoot, template: str) -> Path:
    """The template's unpacked tree in the pool, which both pyvz and the peer snapshot."""
    trees = sorted((vz.private_dir / ".templates").glob(f"{template}@*"))
    if not trees:
        raise RuntimeError(f"no unpacked {template} tree in {vz.private_dir / '.templates'}")
    return trees[-1]


def _run_argv(template: str) -> list[str]:
    return [VZCTL, "--quiet", "run", "--rm", "--ostemplate", template, "--", "true"]


def _peer_script(ctx: Context) -> tuple[Path, list[str]]:
    """A shell script doing by hand with LXC's tools what vzctl run --rm does, on the LXC
    config pyvz writes for a busybox CT (the `start` benchmark's CT): a btrfs snapshot of
    the same tree, lxc-create, lxc-start -d, lxc-attach, lxc-destroy -f (which stops it)."""
    from bench.cases import SINGLE_CT, _single

    vz = ctx.vz
    _single(ctx)
    lxcpath = vz.root / "peer-lxc"
    lxcpath.mkdir(exist_ok=True)
    rootfs = vz.private_dir / f".{PEER}-rootfs"  # on the pool, as the CTs' areas are
    dropped = (
        "lxc.cgroup.dir",
        "lxc.cgroup.relative",
        "lxc.log.file",
        "lxc.hook",
        "lxc.rootfs.path",
        "lxc.uts",
    )
    rendered = (vz.paths.lxc_dir / str(SINGLE_CT) / "config").read_text().splitlines()
    lines = [line for line in rendered if not line.startswith(dropped) and not line.startswith("#")]
    lines += [f"lxc.uts.name = {PEER}", f"lxc.rootfs.path = dir:{rootfs}"]
    conf = lxcpath / "base.conf"
    conf.write_text("\n".join(lines) + "\n")
    base = f"-P {lxcpath} -n {PEER}"
    script = lxcpath / "run.sh"
    script.write_text(
        "set -e\n"
        f"btrfs -q subvolume snapshot {_tree(vz, 'busybox')} {rootfs}\n"
        f"lxc-create -q {base} -t none -f {conf}\n"
        f"lxc-start {base} -d\n"
        f"lxc-attach {base} -- true\n"
        f"lxc-destroy -q {base} -f\n"
    )
    tidy = [
        "sh",
        "-c",
        f"lxc-destroy -q {base} -f 2>/dev/null; btrfs -q subvolume delete {rootfs} 2>/dev/null; true",
    ]
    return script, tidy


def bench_run_busybox(ctx: Context) -> list[Row]:
    vz = ctx.vz
    log("run-busybox: warm-up (the busybox tree is unpacked once)")
    vz.run(_run_argv("busybox"))
    script, tidy = _peer_script(ctx)
    vz.run(["sh", str(script)])  # the peer's warm-up

    def peer() -> float:
        vz.run(tidy, check=False)  # what a failed sample left (nothing, normally)
        return vz.timed(["sh", str(script)])

    ours, theirs = alternate(ctx.n.start, lambda: vz.timed(_run_argv("busybox")), peer, "run busybox")
    vz.run(tidy, check=False)
    return [
        Row(
            "vzctl run --rm (busybox) -- true vs lxc-create, -start, -attach, -destroy of a snapshot",
            "ratio",
            "≤ 1.2×",
            ours,
            theirs,
            limit=1.2,
            notes={"pyvz": " ".join(_run_argv("busybox")[1:]), "peer": script.read_text()},
        )
    ]


def bench_run_debian(ctx: Context) -> list[Row]:
    from bench.templates import RECIPE, _ensure_built

    vz = ctx.vz
    operation = f"vzctl run --rm ({RECIPE}) -- true vs systemd-nspawn --ephemeral on the same tree"
    nspawn = shutil.which("systemd-nspawn")
    _ensure_built(ctx)
    log("run-debian: warm-up (the Debian tree is unpacked once)")
    ours_first = vz.timed(_run_argv(RECIPE))
    if nspawn is None:
        why = "systemd-nspawn is not installed (Debian's systemd-container; `make apt` installs it)"
        log(f"run-debian: {why}")
        return [Row(operation, "ratio", "≤ 1.5×", [ours_first], limit=1.5, notes={"peer": why})]
    # A host whose init is not systemd has no bus for machine registration or scope units:
    # --register=no --keep-unit, which only leaves those out.
    peer_argv = [
        nspawn,
        "--ephemeral",
        "--register=no",
        "--keep-unit",
        "-q",
        "-D",
        str(_tree(vz, RECIPE)),
        "true",
    ]
    vz.run(peer_argv)  # warm-up
    ours, theirs = alternate(
        ctx.n.start, lambda: vz.timed(_run_argv(RECIPE)), lambda: vz.timed(peer_argv), "run debian"
    )
    return [
        Row(
            operation,
            "ratio",
            "≤ 1.5×",
            ours,
            theirs,
            limit=1.5,
            notes={"pyvz": " ".join(_run_argv(RECIPE)[1:]), "peer": " ".join(peer_argv)},
        )
    ]
