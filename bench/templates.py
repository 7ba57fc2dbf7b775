"""Template benchmarks (issue 3): build vs plain mmdebstrap, create from Debian vs busybox,
and the first create after a template arrives (its one unpack) vs tar -x."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import VENV_BIN, VZCTL, Row, alternate, log
from pyvz.templates.recipe import BUILT_IN, load
from pyvz.templates.sources import for_suite

if TYPE_CHECKING:
    from bench.cases import Context

RECIPE = "debian-12-x86_64-minimal"
VZTMPL = str(VENV_BIN / "vztmpl")
CT = 9201


def _ensure_built(ctx: Context) -> Path:
    archive = ctx.vz.paths.template_cache / f"{RECIPE}.tar.zst"
    if not archive.exists():
        log(f"templates: building {RECIPE} once")
        ctx.vz.run([VZTMPL, "build", RECIPE])
    return archive


def bench_template_build(ctx: Context) -> list[Row]:
    vz = ctx.vz
    recipe = load(BUILT_IN / f"{RECIPE}.toml")
    scratch = Path(tempfile.mkdtemp(prefix="mmdebstrap-", dir=vz.root))
    sources = scratch / "sources"
    sources.write_text(for_suite(recipe.suite))
    peer_argv = [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--architectures={recipe.architecture}",
        "--include=" + ",".join(recipe.packages),
        recipe.suite,
        str(scratch / "plain.tar.zst"),
        str(sources),
    ]
    try:
        ours, theirs = alternate(
            1 if ctx.n.create < 10 else 3,
            lambda: vz.timed([VZTMPL, "build", RECIPE]),
            lambda: vz.timed(peer_argv),
            "template build",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        Row(
            f"vztmpl build {RECIPE} vs plain mmdebstrap (same packages)",
            "ratio",
            "≤ 1.5×",
            ours,
            theirs,
            limit=1.5,
            notes={"peer": " ".join(peer_argv[:-3])},
        )
    ]


def _create_timed(ctx: Context, template: str, ctid: int = CT, destroy: bool = True) -> float:
    try:
        return ctx.vz.timed([VZCTL, "create", str(ctid), "--ostemplate", template])
    finally:
        if destroy:
            ctx.vz.vzctl("destroy", str(ctid))


def bench_template_create(ctx: Context) -> list[Row]:
    _ensure_built(ctx)
    for template in (RECIPE, "busybox"):  # each template's tree is unpacked once, untimed
        _create_timed(ctx, template)
    # The CTs are destroyed only at the end: btrfs cleans deleted subvolumes up in the
    # background (slowly, with quotas on), which would otherwise land in the next timing.
    ids = iter(range(CT + 1, CT + 1 + 2 * ctx.n.create))
    made: list[int] = []

    def create(template: str) -> float:
        made.append(next(ids))
        return _create_timed(ctx, template, made[-1], destroy=False)

    try:
        ours, theirs = alternate(
            ctx.n.create, lambda: create(RECIPE), lambda: create("busybox"), "create debian vs busybox"
        )
    finally:
        for ctid in made:
            ctx.vz.vzctl("destroy", str(ctid))
    return [Row(f"vzctl create from {RECIPE} vs from busybox", "ratio", "≤ 1.2×", ours, theirs, limit=1.2)]


def bench_template_cold_create(ctx: Context) -> list[Row]:
    vz = ctx.vz
    archive = _ensure_built(ctx)
    trees = vz.private_dir / ".templates"
    peer_dir = vz.private_dir / ".bench-cold-tar"

    def cold_create() -> float:
        # As right after a download: no tree of this archive in the pool yet.
        for tree in trees.glob(f"{RECIPE}@*"):
            vz.run(["btrfs", "property", "set", "-ts", str(tree), "ro", "false"])
            vz.run(["btrfs", "-q", "subvolume", "delete", str(tree)])
        vz.run(["sync"])
        return _create_timed(ctx, RECIPE)

    def tar_x() -> float:
        peer_dir.mkdir(exist_ok=True)
        try:
            return vz.timed(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(peer_dir)])
        finally:
            shutil.rmtree(peer_dir, ignore_errors=True)
            vz.run(["sync"])

    ours, theirs = alternate(max(3, ctx.n.create // 2), cold_create, tar_x, "cold create vs tar -x")
    return [
        Row(
            f"first create after download ({RECIPE}: unpack + snapshot) vs tar -x",
            "ratio",
            "≤ 1.2×",
            ours,
            theirs,
            limit=1.2,
        )
    ]
