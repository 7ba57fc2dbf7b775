"""Creating and destroying CTs, so that a crash at any point leaves nothing half-alive.

Create writes the config first, then builds the private area under a partial name and
renames it into place: until that rename the CT reads as `deleted`, and destroy cleans up.
Destroy renames the private area away first, so from its first step the CT reads as
`deleted`, and running destroy again finishes the job; its config goes last, so that the
next destroy (or `vzctl boot`, for an ephemeral CT) still finds what a kill -9 left.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvz.atomic import write_atomic
from pyvz.config import (
    ConfigFile,
    CtConfig,
    name_owner,
    remove_name_link,
    remove_name_links_to,
    set_name_link,
)
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host, check_subids
from pyvz.log import log
from pyvz.net.venet import check_free
from pyvz.params import (
    BINDMOUNT,
    BY_KEY,
    BY_NAME,
    DISKSPACE,
    IPADD,
    LAYOUT,
    LOCAL_UID,
    NAME,
    NETIF,
    NETIF_ADD,
    ORIGIN_SAMPLE,
    OSRECIPE,
    OSTEMPLATE,
    Layout,
    parse_options,
)
from pyvz.resources.policy import derived_changes, disk_quota, refuse_escapes, warn_not_enforced
from pyvz.storage import pool
from pyvz.storage.base import Area, StorageDriver, driver_for, remove_path

if TYPE_CHECKING:
    from pyvz.templates.recipe import Recipe


def _sample(host: Host, name: str) -> ConfigFile:
    path = host.paths.sample_file(name)
    if not path.exists():
        samples = sorted(p.name[3:-12] for p in host.paths.conf_dir.glob("ve-*.conf-sample"))
        raise VzError(
            ExitCode.CP_CONFIG,
            f"sample config {path.name} not found (available: {', '.join(samples) or 'none'})",
        )
    return ConfigFile.load(path, missing=ExitCode.CP_CONFIG)


def taken_uids(host: Host) -> set[int]:
    taken = set()
    conf_dir = str(host.paths.conf_dir)  # once: at 2000 CTs Path arithmetic per CT shows
    for ctid in host.ctids():
        value = ConfigFile.peek(Path(f"{conf_dir}/{ctid}.conf"), "LOCAL_UID")
        if value and value.isdigit():
            taken.add(int(value))
    return taken


@contextmanager
def new_ct(
    host: Host,
    ctid: int,
    conf: ConfigFile,
    name: str | None,
    area: Area,
    driver: StorageDriver,
    was: str | None = None,
    reserve: bool = True,
) -> Iterator[None]:
    """The one order in which a CT comes into being (create, clone, vzrestore): in a cluster
    its CTID, name and addresses reserved first, then config and name link, then the block
    builds the private area, which appears last. Rejected or interrupted (Ctrl-C),
    everything written is taken back (`was`: the config file that was there before, which
    comes back); after a kill -9 the CT reads as `deleted` and `vzctl destroy` finishes the
    job. `reserve=False`: a migrated CT, which keeps the reservations it has."""
    from pyvz.cluster import namespace

    host.paths.conf_dir.mkdir(parents=True, exist_ok=True)
    wanted = namespace.wanted(ctid, name, (conf.get("IP_ADDRESS") or "").split()) if reserve else {}
    held = namespace.reserve_keys(host.paths, ctid, wanted, "created, cloned or restored")
    try:
        conf.write()  # inside the try: a Ctrl-C held back by the write lands in here
        if name is not None:
            set_name_link(host.paths, name, ctid)
        yield
    except BaseException:
        driver.destroy(area)
        if name is not None:
            remove_name_link(host.paths, name, ctid)
        if was is None:
            conf.path.unlink(missing_ok=True)
        else:
            write_atomic(conf.path, was)
        namespace.release_keys(host.paths, ctid, held)
        raise


def recipe_of(host: Host, values: dict[str, Any], with_template: bool) -> Recipe:
    """The recipe --recipe names, checked before anything is built or written."""
    if with_template:
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX,
            "--ostemplate and --recipe both given: the recipe names its template, give one of them",
        )
    from pyvz.templates.recipe import find, load

    return load(find(host.paths, values[OSRECIPE.name]))


def template_archive(host: Host, template: str, recipe: Recipe | None, fresh: bool) -> Path:
    """The archive a CT's system is made from (create, rebuild): the cached template, or the
    recipe's build (`fresh`: built anew). Caller holds the root lock."""
    # Imported here: clone and destroy live in this module too, and need neither the
    # template cache nor hashlib and tempfile (~8 ms of their start-up).
    if recipe is not None:
        from pyvz.templates.builder import for_recipe

        return for_recipe(host.paths, recipe, fresh)
    from pyvz.templates import cache

    return cache.require(host.paths, template)


def make_private(area: Area, driver: StorageDriver, archive: Path) -> None:
    """The one way a CT's files are made from a template (create, rebuild): the template
    unpacked once per pool, then the layout's copy of it at area.private, complete or absent.
    Caller holds the root lock (the unpacked trees are shared)."""
    from pyvz.storage.trees import unpacked_tree

    tree = unpacked_tree(archive, area.private.parent, driver.snapshots_template)
    driver.create(area, tree)


def create(host: Host, ctid: int, raw: dict[str, str]) -> None:
    values: dict[str, Any] = parse_options(raw)  # syntax first: nothing touched yet
    ct = Container(host, ctid)
    with host.ct_lock(ctid), host.root_lock():
        conf_path = host.paths.conf_file(ctid)
        was = conf_path.read_text() if conf_path.exists() else None
        sample_name = values.get(ORIGIN_SAMPLE.name) or host.setting("CONFIGFILE", "basic")
        assert sample_name is not None
        if was is None:
            conf = _sample(host, sample_name)
        elif ORIGIN_SAMPLE.name in values:
            raise VzError(
                ExitCode.CP_CONFIG,
                f"Error: container config file {conf_path} already exists, can not use --config option",
            )
        else:
            # As vzctl: a config written ahead (`vzctl set --save`, or by hand) is the CT's.
            conf = ConfigFile.parse(was, conf_path)
            sample_name = conf.get(ORIGIN_SAMPLE.key or "") or ""
            log.info("Warning: CT config file already exists, not applying a default config sample.")
            log.info("It might lead to incomplete CT configuration, you can use --applyconfig to fix.")
        conf.path = conf_path
        recipe = None
        if OSRECIPE.name in values:
            recipe = recipe_of(host, values, OSTEMPLATE.name in values)
            values[OSTEMPLATE.name] = recipe.name  # the template is named after its recipe
        template = values.get(OSTEMPLATE.name) or conf.get("OSTEMPLATE") or host.setting("DEF_OSTEMPLATE")
        if not template:
            raise VzError(
                ExitCode.OSTEMPLATE_NOTSET, "no --ostemplate given and no DEF_OSTEMPLATE in vz.conf"
            )
        OSTEMPLATE.parse(template)
        name = values.get(NAME.name) or None
        if name is not None:
            owner = name_owner(host.paths, name)
            if owner is not None:
                raise VzError(ExitCode.SET_NAME_ERROR, f"name {name!r} is already used by CT {owner}")
        settings: dict[str, str] = {OSTEMPLATE.key: template}  # type: ignore[dict-item]
        if sample_name:
            settings[ORIGIN_SAMPLE.key or ""] = sample_name
        for option, value in values.items():  # every stored parameter given on the command line
            param = BY_NAME[option]
            if param.key:
                settings[param.key] = param.fmt(value)
        if "LOCAL_UID" in settings and "LOCAL_GID" not in settings:
            settings["LOCAL_GID"] = settings["LOCAL_UID"]
        for key in ("VE_LAYOUT", "VE_PRIVATE", "VE_ROOT"):
            if key not in settings and not conf.get(key):
                default = host.setting(key)
                if default:
                    settings[key] = default
        if BINDMOUNT.name in values:
            from pyvz.ct.bindmounts import check_sources

            check_sources(host, values[BINDMOUNT.name], force=False)
        if IPADD.name in values:
            check_free(values[IPADD.name], host.addresses(but=ctid))
        if NETIF_ADD.name in values:
            from pyvz.net import veth

            netifs = veth.edit((), {NETIF_ADD.name: values[NETIF_ADD.name]}, host.paths.tag, ctid)
            veth.require_bridges(netifs, [])
            settings[NETIF.key or ""] = veth.format_config(netifs)
        for key, value in settings.items():
            conf.set(key, value)
        cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf_path)
        derived = derived_changes(cfg, conf.items())
        if derived:
            for key, value in derived.items():
                conf.set(key, value)
            cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf_path)
        # Every value the new config holds must parse before anything is written.
        for key in cfg.values:
            if key in BY_KEY:
                cfg.get(BY_KEY[key])
        refuse_escapes(cfg)
        layout = cfg.get(LAYOUT) or Layout.BTRFS
        if layout is Layout.PLOOP:  # OpenVZ's stock vz.conf default
            log.warning("layout ploop: mainline Linux has no ploop; the CT is made with layout btrfs")
            layout = Layout.BTRFS
            conf.set(LAYOUT.key or "", str(layout))
            cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf_path)
        driver = driver_for(layout)
        archive = template_archive(host, template, recipe, fresh=False)
        area = ct.area(cfg)
        if DISKSPACE.name in values and (why := driver.quota_missing(area)) is not None:
            raise VzError(
                ExitCode.DISKQUOTA_SET,
                f"--diskspace cannot be enforced with layout {layout}: {why}; use --layout btrfs",
            )
        if area.private.exists() or area.private.is_symlink():
            raise VzError(ExitCode.PRIVATE_EXISTS, f"Private area already exists in {area.private}")
        if LOCAL_UID.name in values or conf.get("LOCAL_UID"):
            # An explicit range (0: privileged) from the command line or the sample.
            if not area.idmap.privileged:
                check_subids(area.idmap)
        else:
            idmap = host.allocate_ids(taken_uids(host))
            conf.set("LOCAL_UID", str(idmap.uid))
            conf.set("LOCAL_GID", str(idmap.gid))
            area = Area(area.private, area.root, idmap)

        pool.prepare(host.paths, area.private.parent, layout == Layout.BTRFS, host.setting("POOL_SIZE"))
        with new_ct(host, ctid, conf, name, area, driver, was):
            log.info(f"Creating container private area ({template})")  # once its names are its own
            make_private(area, driver, archive)
        log.info("Performing postcreate actions")
        driver.apply_quota(area, disk_quota(cfg))
        warn_not_enforced(cfg, cfg.values, host.runtime.cgroups.enforces)
        log.info(f"Saved parameters for CT {ctid}")
        log.info("Container private area was created")


def destroy(host: Host, ctid: int, lock: bool = True, handed_to: str | None = None) -> None:
    """vzctl destroy; `lock=False`: the caller holds the CT lock (vzmigrate); `handed_to`:
    the CT lives on at that host (a migration's source copy goes), so its CTID, name and
    addresses in the cluster become that host's instead of free."""
    from contextlib import nullcontext

    from pyvz.cluster import namespace

    ct = Container(host, ctid)
    with host.ct_lock(ctid) if lock else nullcontext():
        if ct.is_running():
            raise VzError(ExitCode.RUNNING, "Container is currently running. Stop it first.", stdout=True)
        conf_path = host.paths.conf_file(ctid)
        if conf_path.exists() and conf_path.with_suffix(".converting").exists():
            from pyvz.ct.convert import finish_interrupted

            finish_interrupted(ct)  # so that the config names the tree to destroy
        if conf_path.exists() and conf_path.with_suffix(".rebuilding").exists():
            from pyvz.ct import rebuild

            rebuild.finish_interrupted(ct)  # its new tree beside the private area goes too
        if conf_path.exists():
            cfg = ct.config
            held = namespace.of_config(ctid, ct.conf_file().items())
        else:
            held = namespace.wanted(ctid, None, ())
            # A half-destroyed CT has no config any more; fall back on where vz.conf puts it.
            cfg = CtConfig.merge(ctid, host.global_conf.items(), {}, host.paths.vz_conf)
        pool.mount_existing(host.paths)
        area = ct.area(cfg)
        driver = ct.driver(cfg)
        leftovers = [
            p
            for p in (area.private, area.doomed, area.partial, area.incoming, area.migrating)
            if p.exists() or p.is_symlink()
        ]
        if not conf_path.exists() and not leftovers:
            raise VzError(ExitCode.NO_CT_CONFIG, "Container config file does not exist")
        if driver.is_mounted(area):
            ct.umount()
        from pyvz.ct.snapshots import release_mounts

        release_mounts(area)
        log.info(f"Destroying container private area: {area.private}")
        if area.private.exists():
            os.rename(area.private, area.doomed)
        remove_name_links_to(host.paths, ctid)
        driver.destroy(area)
        from pyvz.ct.convert import sweep

        sweep(area)  # what a convert's background removal did not finish
        host.paths.quota_file(ctid).unlink(missing_ok=True)  # vzquota's saved limits (ct/quota.py)
        host.paths.replication_record(ctid).unlink(missing_ok=True)  # vzreplicate's runs from here
        from pyvz.ct.bindmounts import release

        release(ct)  # staged bind mounts a crashed start left: forget() must not walk into them
        host.runtime.forget(ctid)
        from pyvz.net.firewall import remove

        # A stopped CT has none, but a live move leaves one behind on purpose until the
        # hand-over (both ends), and a killed one may leave it for good.
        remove(ct.firewall_table())
        from pyvz.ct.checkpoint import default_dump

        remove_path(default_dump(host, ctid))  # a suspended CT's dump goes with it
        try:
            area.root.rmdir()
        except OSError:
            pass
        # The config goes last: until then a killed destroy leaves a CT that `vzctl destroy`
        # finds and finishes, and that `vzctl boot` still knows to be ephemeral.
        if conf_path.exists():
            os.replace(conf_path, conf_path.with_name(conf_path.name + ".destroyed"))
        from pyvz.ct.runowner import release as release_run

        release_run(host.paths, ctid)  # a vzctl run's owner record: after the config, as it
        log.info("Container private area was destroyed")
        if handed_to is None:
            namespace.release_keys(host.paths, ctid, held)
        else:
            namespace.hand_over(host.paths, ctid, held, handed_to)
