"""`vztmpl build`: a recipe, mmdebstrap and the host's apt sources make a cached template.

Everything happens in a build directory inside the cache; the template appears in the cache
only when the archive and its manifest are complete (cache.install renames the archive in
last), so a failed or interrupted build leaves nothing behind.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

from pyvz.errors import ExitCode
from pyvz.log import log
from pyvz.paths import Paths
from pyvz.run import run
from pyvz.templates import cache
from pyvz.templates.manifest import Manifest, load, path_for, sha256_file
from pyvz.templates.recipe import Recipe
from pyvz.templates.sources import for_suite

BUILD_TIMEOUT = 3600.0


def hook_script(recipe: Recipe, stage: Path) -> str:
    """The mmdebstrap customize hook: runs on the host with the new root as $1."""
    q = shlex.quote
    lines = ["#!/bin/sh", "set -eu", 'root="$1"']
    for index, (target, content) in enumerate(sorted(recipe.files.items())):
        source = stage / f"file-{index}"
        source.write_text(content)
        lines.append(f'install -D -m 0644 {q(str(source))} "$root"{q(target)}')
    for index, (target, content) in enumerate(sorted(recipe.append.items())):
        source = stage / f"append-{index}"
        source.write_text(content)
        lines.append(
            f'mkdir -p "$(dirname "$root"{q(target)})" && cat {q(str(source))} >> "$root"{q(target)}'
        )
    for unit in recipe.mask:
        lines.append(
            f'mkdir -p "$root/etc/systemd/system" && ln -sfn /dev/null "$root/etc/systemd/system/"{q(unit)}'
        )
    for index, script in enumerate(recipe.post_install):
        source = stage / f"post-{index}.sh"
        source.write_text("set -e\n" + script + "\n")
        lines.append(f'chroot "$root" /bin/sh < {q(str(source))}')
    packages = stage / "packages.tsv"
    lines.append(f"chroot \"$root\" dpkg-query -W -f='${{Package}}\\t${{Version}}\\n' > {q(str(packages))}")
    return "\n".join(lines) + "\n"


def build(paths: Paths, recipe: Recipe, apt_dir: Path | None = None) -> Path:
    """Build the template and install it in the cache; returns the archive."""
    paths.template_cache.mkdir(parents=True, exist_ok=True)
    sources_text = for_suite(recipe.suite) if apt_dir is None else for_suite(recipe.suite, apt_dir)
    with tempfile.TemporaryDirectory(dir=paths.template_cache, prefix=f".build-{recipe.name}-") as workdir:
        stage = Path(workdir)
        sources = stage / "sources"
        sources.write_text(sources_text)
        hook = stage / "hook.sh"
        hook.write_text(hook_script(recipe, stage))
        output = stage / f"{recipe.name}.tar.zst"
        argv = [
            "mmdebstrap",
            f"--variant={recipe.variant}",
            f"--architectures={recipe.architecture}",
            f'--customize-hook=sh {shlex.quote(str(hook))} "$1"',
        ]
        if recipe.packages:
            argv.append("--include=" + ",".join(recipe.packages))
        argv += [recipe.suite, str(output), str(sources)]
        log.info(
            f"Building {recipe.name} ({recipe.distribution} {recipe.version}, {recipe.suite}) with mmdebstrap"
        )
        started = time.monotonic()
        if sys.stderr.isatty():  # mmdebstrap draws its own progress display on a terminal
            run(argv, inherit_stdio=True, timeout=None, error_code=ExitCode.BAD_TEMPLATE)
        else:
            run(argv, timeout=BUILD_TIMEOUT, error_code=ExitCode.BAD_TEMPLATE)
        packages = dict(
            line.split("\t", 1) for line in (stage / "packages.tsv").read_text().splitlines() if "\t" in line
        )
        manifest = Manifest(
            name=recipe.name,
            distribution=recipe.distribution,
            version=recipe.version,
            architecture=recipe.architecture,
            build_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            sha256=sha256_file(output),
            size=output.stat().st_size,
            packages=packages,
            recipe=recipe.source.name,
            recipe_sha256=recipe_digest(recipe),
        )
        archive = cache.install(paths, recipe.name, output, manifest, signature=None, move=True)
    log.info(f"Template {recipe.name} built in {time.monotonic() - started:.0f} s: {archive}")
    return archive


def recipe_digest(recipe: Recipe) -> str:
    return sha256_file(recipe.source)


def for_recipe(paths: Paths, recipe: Recipe, fresh: bool) -> Path:
    """The template archive of `recipe`: built now (`fresh`: vzctl rebuild, whose point is
    a system from the recipe and the mirror as they are now), or else the cached build of
    the recipe's present text if there is one (vzctl create --recipe: many CTs, one build).
    Caller holds the root lock, as vztmpl build does."""
    if not fresh:
        archive = cache.find(paths, recipe.name)
        manifest = load(path_for(paths.template_cache, recipe.name))
        if archive is not None and manifest is not None and manifest.recipe_sha256 == recipe_digest(recipe):
            log.info(f"Template {recipe.name} in the cache was built from this recipe: using it")
            return archive
    return build(paths, recipe)
