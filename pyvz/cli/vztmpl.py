"""vztmpl: build, list, import, export, remove, sign, verify and publish OS templates."""

from __future__ import annotations

from pathlib import Path

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.units import human_size


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vztmpl", description="Manage OS templates.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    p = sub.add_parser("build", help="build a template from a recipe (a name or a .toml file)")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--sign", metavar="KEYID", help="sign the new template with this GPG key")
    sub.add_parser("list", help="list the templates in the cache")
    sub.add_parser("recipes", help="list the recipes that can be built")
    p = sub.add_parser("import", help="add a template archive to the cache")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--name", help="template name (default: from the file name)")
    p.add_argument("--no-gpg-check", action="store_true", help="accept a file without a valid FILE.asc")
    p = sub.add_parser("export", help="copy a template (and its .asc and manifest) out of the cache")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", type=Path, metavar="FILE")
    p = sub.add_parser("remove", help="remove a template from the cache")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("sign", help="sign a template with a GPG key (writes NAME.tar.zst.asc)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--key", required=True, metavar="KEYID")
    p = sub.add_parser("verify", help="check a template's sha256 and signature")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("trust", help="add a publisher's public key to the trusted keyring")
    p.add_argument("keyfile", type=Path, metavar="KEYFILE")
    p = sub.add_parser("publish", help="write a template repository into DIR (see vztmpl-dl)")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--allow-unsigned", action="store_true", help="publish templates without a signature")
    return parser


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.host import Host
    from pyvz.templates import cache

    host = Host()
    paths = host.paths
    command: str = ns.command
    if command == "list":
        print(f"{'NAME':32} {'DISTRIBUTION':14} {'ARCH':6} {'SIZE':>8} {'SIGNED':6} BUILT")
        for entry in cache.entries(paths):
            manifest = entry.manifest
            dist = f"{manifest.distribution} {manifest.version}" if manifest else "-"
            arch = manifest.architecture if manifest else "-"
            built = manifest.build_date if manifest else "-"
            size = human_size(entry.archive.stat().st_size)
            print(f"{entry.name:32} {dist:14} {arch:6} {size:>8} {'yes' if entry.signed else 'no':6} {built}")
        return 0
    if command == "recipes":
        from pyvz.templates.recipe import BUILT_IN

        for directory in (paths.etc_vz / "recipes", BUILT_IN):
            for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
                print(f"{path.stem:32} {path}")
        return 0
    with host.root_lock():  # the cache is shared with vzctl create
        if command == "build":
            from pyvz.templates import builder, recipe

            found = recipe.load(recipe.find(paths, ns.recipe))  # checked before anything is built
            archive = builder.build(paths, found)
            if ns.sign:
                from pyvz.templates import gpg

                gpg.sign(archive, ns.sign)
                log.info(f"Signed {archive.name} with {ns.sign}")
        elif command == "import":
            from pyvz.templates.importing import import_archive

            name = import_archive(paths, ns.file, ns.name, gpg_check=not ns.no_gpg_check)
            log.info(f"Imported template {name}")
        elif command == "export":
            from pyvz.templates.importing import export_archive

            export_archive(paths, ns.name, ns.file)
        elif command == "remove":
            cache.remove(paths, ns.name)
            log.info(f"Removed template {ns.name}")
        elif command == "sign":
            from pyvz.templates import gpg

            gpg.sign(cache.require(paths, ns.name), ns.key)
            log.info(f"Signed {ns.name} with {ns.key}")
        elif command == "verify":
            signer = cache.verify(paths, ns.name)
            log.info(f"{ns.name}: sha256 and signature are good (key {signer})")
        elif command == "trust":
            from pyvz.templates import gpg

            for fingerprint in gpg.trust(ns.keyfile, cache.keyring(paths)):
                log.info(f"Trusted key {fingerprint}")
        elif command == "publish":
            from pyvz.templates import repository

            repository.publish(paths, ns.names or None, ns.directory, allow_unsigned=ns.allow_unsigned)
            log.info(f"Published to {ns.directory}")
        else:  # pragma: no cover - argparse lets only known commands through
            raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unknown command {command}")
    return 0


def main() -> None:
    exit_now(run_tool("vztmpl", dispatch))


if __name__ == "__main__":
    main()
