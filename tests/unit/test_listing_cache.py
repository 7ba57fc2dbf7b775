"""pyvz.listing reads a CT's config once for as long as the file has not changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyvz.config import ConfigFile
from pyvz.host import Host
from pyvz.listing import _SETTLED, records
from pyvz.paths import Paths


def _root(tmp_path: Path) -> Host:
    (tmp_path / "etc/vz/conf").mkdir(parents=True)
    (tmp_path / "etc/vz/vz.conf").write_text('VE_PRIVATE="/var/lib/vz/private/$VEID"\nONBOOT="no"\n')
    (tmp_path / "etc/vz/conf/101.conf").write_text('HOSTNAME="first"\n')
    return Host(Paths(tmp_path))


def _hostname(host: Host) -> str | None:
    (record,) = records(host)
    return record.raw("HOSTNAME")


def test_every_change_to_a_config_is_seen(tmp_path: Path) -> None:
    host = _root(tmp_path)
    conf = tmp_path / "etc/vz/conf/101.conf"
    assert _hostname(host) == "first"
    time.sleep(_SETTLED + 0.1)  # settled: from now on the reading is kept
    assert _hostname(host) == "first"
    (record,) = records(host)
    assert record.conf_file is records(host)[0].conf_file, "a settled config was parsed again"

    edited = ConfigFile.load(conf)  # as vzctl set writes it: a new file renamed over the old
    edited.set("HOSTNAME", "other")
    edited.write()
    assert _hostname(host) == "other"

    time.sleep(_SETTLED + 0.1)
    assert _hostname(host) == "other"
    stamp = os.stat(conf)
    with open(conf, "r+") as handle:  # in place, the same size, the old mtime put back
        handle.write('HOSTNAME="third"\n')
    os.utime(conf, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert _hostname(host) == "third"  # its ctime moved


def test_a_change_to_vz_conf_is_seen_in_every_ct(tmp_path: Path) -> None:
    host = _root(tmp_path)
    time.sleep(_SETTLED + 0.1)
    (record,) = records(host)
    assert record.config is not None and record.config.raw("ONBOOT") == "no"
    (tmp_path / "etc/vz/vz.conf").write_text('VE_PRIVATE="/var/lib/vz/private/$VEID"\nONBOOT="yes"\n')
    (record,) = records(Host(Paths(tmp_path)))
    assert record.config is not None and record.config.raw("ONBOOT") == "yes"


def test_a_removed_config_is_gone(tmp_path: Path) -> None:
    host = _root(tmp_path)
    time.sleep(_SETTLED + 0.1)
    assert _hostname(host) == "first"
    (tmp_path / "etc/vz/conf/101.conf").unlink()
    assert records(host) == []
