"""vzlist's fields, table and JSON, byte for byte, from a set of fake records (no root).

The expected text is derived from vzlist 4.11's own format strings: the field table in
fixtures/vzlist-fields.txt is src/vzlist.c's field_names (name, header format, header), and
each expected cell below is written with the printf format vzlist.c prints that value with
(Python's % is printf's), so the tests do not reuse the code under test to make their
expectations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyvz.config import ConfigFile, CtConfig
from pyvz.errors import VzError
from pyvz.listing import Record, _Parsed, glob_match
from pyvz.listing_fields import (
    DEFAULT_FIELDS,
    FIELDS,
    NAME_FIELDS,
    VZLIST_FIELDS,
    c_ulong,
    capabilities,
    features,
)
from pyvz.listing_output import field_names, header, json_lines, ordered, parse_fields, row, sort_field
from pyvz.params import PARAMS
from pyvz.resources.beancounters import NAMES, Beancounter

LONG_MAX = 9223372036854775807
TABLE = [
    line.split(" ")
    for line in (Path(__file__).parent / "fixtures/vzlist-fields.txt").read_text().splitlines()
    if not line.startswith("#")
]
GLOBAL = {"VE_ROOT": "/vz/root/$VEID", "VE_PRIVATE": "/vz/private/$VEID", "VE_LAYOUT": "simfs"}
RICH = {
    "HOSTNAME": "web1.example.com",
    "IP_ADDRESS": "10.0.0.1 10.0.0.2/24",
    "ONBOOT": "yes",
    "KMEMSIZE": "14372700:14790164",
    "NUMPROC": "240:240",
    "PHYSPAGES": "0:65536",
    "SWAPPAGES": "0:unlimited",
    "DISKSPACE": "2097152:2306867",
    "DISKINODES": "200000:220000",
    "CPUUNITS": "1000",
    "FEATURES": "nfs:on sysfs:off",
    "CAPABILITY": "NET_ADMIN:off CHOWN:on",
    "NETFILTER": "stateful",
    "ORIGIN_SAMPLE": "vswap-256m",
    "OSTEMPLATE": "centos-6-x86_64",
    "DESCRIPTION": "the web server of example.com",
    "NAMESERVER": "8.8.8.8 8.8.4.4",
    "BOOTORDER": "5",
    "IOPRIO": "4",
    "VM_OVERCOMMIT": "1.5",
}


def fake(
    ctid: int,
    own: dict[str, str],
    running: bool = False,
    name: str | None = None,
    counters: list[Beancounter] | None = None,
    usage: int | None = None,
    uptime: float | None = None,
    inodes: int | None = None,
    status: str | None = None,
) -> Record:
    """A record whose host-side answers are given; its config values are read for real."""
    record = Record.__new__(Record)
    path = Path(f"/etc/vz/conf/{ctid}.conf")
    values: dict[str, Any] = {
        "ctid": ctid,
        "_parsed": _Parsed((), ConfigFile(path), dict(own), CtConfig.merge(ctid, GLOBAL, own, path)),
        # the task count and the numproc counter are one kernel number (pids.current)
        "nproc": next((c.held or 0 for c in counters or () if c.name == "numproc"), 7) if running else 0,
        "status": status or ("running" if running else "stopped"),
        "name": name,
        "beancounters": counters if running else None,
        "disk_usage": usage,
        "inode_usage": inodes,
        "uptime": uptime,
    }
    record.__dict__.update(values)
    return record


def counters(held: int = 5, maxheld: int = 9, barrier: int = 100, limit: int = 200) -> list[Beancounter]:
    # kmemsize: a counter mainline does not keep a failcnt for (None)
    return [Beancounter(n, held, maxheld, barrier, limit, None if n == "kmemsize" else 0) for n in NAMES]


def pick(names: str) -> list[Any]:
    return [FIELDS[name] for name in names.split(",")]


def test_field_table_is_vzlists() -> None:
    assert len(TABLE) == 144
    assert [f.name for f in VZLIST_FIELDS] == [name for name, _fmt, _hdr in TABLE]
    for name, fmt, hdr in TABLE:
        field = FIELDS[name]
        assert field.header == hdr, name
        assert field.head() == fmt % hdr, name
        assert field.suffixed == ("." in name), name


def test_list_option_prints_every_field_with_its_header() -> None:
    assert field_names() == ["%-15s %-15s" % (name, hdr) for name, _fmt, hdr in TABLE]
    assert field_names()[0] == "ctid            CTID           "


def test_pyvz_parameters_are_fields_after_vzlists() -> None:
    for param in PARAMS:
        if param.field:
            assert param.field in FIELDS, param.name
    extra = [name for name in FIELDS if name not in {n for n, _f, _h in TABLE}]
    assert set(extra) >= {"cpumask", "nodemask", "firewall_accept"}
    assert list(FIELDS)[: len(TABLE)] == [n for n, _f, _h in TABLE]


def test_default_and_name_columns() -> None:
    assert DEFAULT_FIELDS == ("ctid", "numproc", "status", "ip", "hostname")
    default = "      CTID      NPROC STATUS    IP_ADDR         HOSTNAME"
    assert header(pick(",".join(DEFAULT_FIELDS))) == default
    assert header(pick(",".join(NAME_FIELDS))) == " SMARTNAME" + default[10:]


def test_default_rows() -> None:
    fields = pick(",".join(DEFAULT_FIELDS))
    stopped = fake(101, {"HOSTNAME": "host1", "IP_ADDRESS": "10.0.0.1"})
    addresses = {"HOSTNAME": "host2", "IP_ADDRESS": "10.0.0.2/24 10.0.0.3"}
    running = fake(102, addresses, True, counters=counters(12))
    bare = fake(103, {}, True, counters=counters(1))
    line = "%10d %10s %-9s %-15s %s"
    assert row(fields, stopped, True) == line % (101, "-", "stopped", "10.0.0.1", "host1")
    assert row(fields, running, True) == "%10d %10d %-9s %-15s %s" % (102, 12, "running", "10.0.0.2", "host2")
    assert row(fields, bare, True) == ("%10d %10d %-9s %-15s %-32s" % (103, 1, "running", "-", "-")).rstrip()
    # -t: the whole list; a running CT's comes as the kernel lists it, with a trailing blank
    assert row(fields, running, False) == "%10d %10d %-9s %-15s %s" % (
        102,
        12,
        "running",
        "10.0.0.2 10.0.0.3 ",
        "host2",
    )


def test_every_field_of_a_stopped_ct() -> None:
    record = fake(101, RICH, name="web1", usage=512000)
    cells: list[tuple[str, Any]] = [("%10d", 101)] * 3
    cells += [
        ("%-32s", "/vz/private/101"),
        ("%-32s", "/vz/root/101"),
        ("%-16s", "-"),
        ("%-32s", "vswap-256m"),
        ("%-32s", "web1.example.com"),
        ("%-32s", "web1"),
        ("%10s", "web1"),
        ("%-32s", "the web server of example.com"),
        ("%-32s", "centos-6-x86_64"),
        ("%-15s", "10.0.0.1"),
        ("%-15s", "8.8.8.8"),
        ("%-15s", "-"),
        ("%-9s", "stopped"),
    ]
    limits = {"kmemsize": (14372700, 14790164), "numproc": (240, 240), "physpages": (0, 65536)}
    limits["swappages"] = (0, LONG_MAX)
    for name in NAMES:
        barrier, limit = limits.get(name, (0, 0))
        cells += [("%10s", "-"), ("%10s", "-"), ("%10d", barrier), ("%10d", limit), ("%10s", "-")]
    cells += [("%10d", 512000), ("%10d", 2097152), ("%10d", 2306867)]
    cells += [("%10s", "-"), ("%10d", 200000), ("%10d", 220000)]
    cells += [
        ("%14s", "-"),
        ("%15s", "-"),
        ("%7d", 0),
        ("%7d", 1000),
        ("%5s", "-"),
        ("%3d", 4),
        ("%10s", "-"),
        ("%4s", "-"),
        ("%6s", "yes"),
        ("%10d", 5),
        ("%-6s", "simfs"),
        ("%-15s", "sysfs:off,nfs:o"),  # cut to its 15
        ("%5s", "yes"),
        ("%6s", "no"),
        ("%6g", 1.5),
        ("%-9s", "stateful"),
        ("%-15s", "chown:on,net_admin:off"),
    ]
    assert len(cells) == 144
    expected = " ".join(fmt % value for fmt, value in cells).rstrip()
    assert row(list(VZLIST_FIELDS), record, True) == expected
    assert header(list(VZLIST_FIELDS)) == " ".join(fmt % hdr for _n, fmt, hdr in TABLE).rstrip()


def test_every_field_of_a_running_ct() -> None:
    own = {**RICH, "IOLIMIT": "10485760", "IOPSLIMIT": "300", "CPUS": "2", "CPULIMIT": "50"}
    record = fake(102, own, True, counters=counters(), uptime=93784.5)
    line = row(list(VZLIST_FIELDS), record, True)
    ubc = " ".join(["%10d %10d %10d %10d %10d" % (5, 9, 100, 200, 0)] * 20)
    kmem = "%10d %10d %10d %10d %10s" % (5, 9, 100, 200, "-")
    assert f"{'%-9s' % 'running'} {kmem} {ubc} " in line
    assert " %10s %10d %10d %10s %10d %10d " % ("-", 2097152, 2306867, "-", 200000, 220000) in line
    tail = "%14s %15s %7d %7d %5d %3d %10d %4d %6s" % (
        "-",
        "001d02h:03m:04s",
        50,
        1000,
        2,
        4,
        10485760,
        300,
        "yes",
    )
    assert f" {tail} " in line
    assert "%10d %10d %10s" % (102, 102, "102") in line  # no name: SMARTNAME is the CTID
    assert " %-15s %5s %6s %6g " % ("sysfs:off,nfs:o", "yes", "no", 1.5) in line  # limit 200: vswap
    assert line.startswith("%10d %10d %10d %-32s" % (102, 102, 102, "/vz/private/102"))


def test_unset_values_print_as_vzlist_prints_them() -> None:
    record = fake(101, {})
    unset = "onboot,bootorder,cpulimit,cpuunits,cpus,ioprio,iolimit,iopslimit,features"
    line = row(pick(unset), record, True)
    assert line == ("%6s %10s %7s %7s %5s %3s %10s %4s %-15s" % (("-",) * 9)).rstrip()
    nf = row(pick("netfilter,capability,vm_overcommit,vswap,disabled,laverage,uptime,layout"), record, True)
    expected = "%-9s %-15s %6s %5s %6s %14s %15s %-6s" % ("(null)", "-", "-", "yes", "no", "-", "-", "simfs")
    assert nf == expected.rstrip()  # vswap: "yes" as vzlist says for a physpages limit of 0
    quota = row(pick("diskspace,diskspace.s,diskspace.h,diskinodes"), record, True)
    assert quota == "%10s %10s %10s %10s" % ("-", "-", "-", "-")


def test_trimming_cuts_text_to_its_width_except_the_last_column() -> None:
    long_host = "a-very-long-hostname.with.many.labels.example.com"
    own = {"HOSTNAME": long_host, "IP_ADDRESS": "2001:db8:1234:5678::1 10.0.0.1"}
    record = fake(101, own, name="averylongname")
    fields = pick("hostname,smart_name,ip,ctid")
    assert row(fields, record, True) == " ".join(
        [long_host[:32], "averylongn", "2001:db8:1234:5", "%10d" % 101]
    )
    assert row(fields, record, False) == " ".join(
        [long_host, "averylongname", "2001:db8:1234:5678::1 10.0.0.1", "%10d" % 101]
    )
    assert row(pick("ctid,hostname"), record, True) == "%10d %s" % (101, long_host)  # last: whole
    caps = fake(101, {"CAPABILITY": "chown:on sys_time:on net_admin:off", "FEATURES": "ppp:on bridge:on"})
    assert row(pick("capability,features,ctid"), caps, True) == "%-15s %-15s %10d" % (
        "chown:on,net_admin:off,sys_time:on",  # never cut
        "ppp:on,bridge:o",
        101,
    )


def test_json_layout_is_vzlists() -> None:
    record = fake(101, RICH, name="web1", usage=512000)
    names = "ctid,smart_name,ip,searchdomain,numproc,diskinodes,features,onboot,uptime"
    text = json_lines(pick(names), [record])
    assert text == (
        "[\n"
        "  {\n"
        '    "ctid": 101,\n'
        '    "smart_name": "web1",\n'
        '    "ip": ["10.0.0.1", "10.0.0.2/24"],\n'
        '    "searchdomain": [],\n'
        '    "numproc": {\n'
        '      "held": 0,\n'
        '      "maxheld": 0,\n'
        '      "barrier": 240,\n'
        '      "limit": 240,\n'
        '      "failcnt": 0\n'
        "    },\n"
        '    "diskinodes": {\n'
        '      "usage": 0,\n'
        '      "softlimit": 200000,\n'
        '      "hardlimit": 220000\n'
        "    },\n"
        '    "features": {\n'
        '      "sysfs": false,\n'
        '      "nfs": true\n'
        "    },\n"
        '    "onboot": true,\n'
        '    "uptime": 0.000\n'
        "  }\n"
        "]\n"
    )


def test_json_of_a_running_ct_and_of_unset_values() -> None:
    running = fake(102, {"IP_ADDRESS": "10.0.0.2/24"}, True, counters=counters(), uptime=3.25)
    empty = fake(103, {})
    text = json_lines(
        pick("ctid,smart_name,ip,kmemsize,cpulimit,cpus,ioprio,onboot,bootorder,laverage,uptime,netfilter"),
        [running, empty],
    )
    assert text == (
        "[\n  {\n"
        '    "ctid": 102,\n    "smart_name": 102,\n    "ip": ["10.0.0.2"],\n'
        '    "kmemsize": {\n      "held": 5,\n      "maxheld": 9,\n      "barrier": 100,\n'
        '      "limit": 200,\n      "failcnt": 0\n    },\n'
        '    "cpulimit": null,\n    "cpus": 0,\n    "ioprio": 0,\n    "onboot": null,\n'
        '    "bootorder": null,\n    "laverage": null,\n    "uptime": 3.250,\n    "netfilter": null\n'
        "  },\n  {\n"
        '    "ctid": 103,\n    "smart_name": 103,\n    "ip": [],\n'
        '    "kmemsize": {\n      "held": 0,\n      "maxheld": 0,\n      "barrier": 0,\n'
        '      "limit": 0,\n      "failcnt": 0\n    },\n'
        '    "cpulimit": null,\n    "cpus": 0,\n    "ioprio": 0,\n    "onboot": null,\n'
        '    "bootorder": null,\n    "laverage": null,\n    "uptime": 0.000,\n    "netfilter": null\n'
        "  }\n]\n"
    )
    assert json_lines(pick("ctid"), []) == "[\n]\n"


def test_json_by_default_has_every_unsuffixed_field_in_vzlists_order() -> None:
    import json
    import re

    text = json_lines(None, [fake(101, RICH, usage=1)])
    keys = re.findall(r'^    "([a-z_]+)": ', text, re.M)
    assert keys == [name for name, _f, _h in TABLE if "." not in name]
    assert len(keys) == 56
    entry = json.loads(text)[0]
    assert entry["capability"] == {"chown": True, "net_admin": False}
    assert entry["swappages"]["limit"] == LONG_MAX  # never cut
    assert entry["vm_overcommit"] == 1.5 and entry["netfilter"] == "stateful"


def test_field_list_is_read_as_vzlist_reads_it() -> None:
    assert [f.name for f in parse_fields("ctid,numproc.f,", False)] == ["ctid", "numproc.f"]
    for text, message in (
        ("ctid,,name", "Unknown field: "),
        ("", "Unknown field: "),
        ("nproc", "Unknown field: nproc"),
        ("ctid," + "x" * 31 + ",name", "Invalid field: " + "x" * 31 + ",name"),
    ):
        with pytest.raises(VzError) as err:
            parse_fields(text, False)
        assert err.value.message == message
    with pytest.raises(VzError) as err:
        parse_fields("ctid,kmemsize.l", True)
    assert err.value.message == "Field `kmemsize.l' is not available in JSON output"
    with pytest.raises(VzError) as err:
        sort_field("-bogus")
    assert err.value.message == "Invalid sort field name: -bogus"


def test_sorting_follows_vzlists_comparators() -> None:
    a = fake(101, {"BOOTORDER": "5", "HOSTNAME": "b", "NUMPROC": "10:30"})
    b = fake(102, {"HOSTNAME": "a", "NUMPROC": "20:20"})
    c = fake(103, {"BOOTORDER": "5", "NUMPROC": "5:10"})
    d = fake(104, {"BOOTORDER": "1"}, status="mounted")
    rows = [a, b, c, d]

    def ids(name: str) -> list[int]:
        field, reverse = sort_field(name)
        return [r.ctid for r in ordered(rows, field, reverse)]

    assert ids("bootorder") == [102, 104, 103, 101]  # unset first; ties: higher CTID first
    assert ids("-bootorder") == [101, 103, 104, 102]
    assert ids("hostname") == [103, 104, 102, 101]  # unset first, then strcmp
    assert ids("-ctid") == [104, 103, 102, 101]
    assert ids("status") == [101, 102, 103, 104]
    assert ids("numproc.b") == [104, 103, 102, 101]  # vzlist sorts .b by the limit
    assert ids("numproc.l") == [104, 103, 101, 102]  # and .l by the barrier
    assert ids("onboot") == [101, 102, 103, 104]  # no order: as listed


def test_config_values_as_vzctl_reads_them() -> None:
    assert c_ulong("unlimited") == LONG_MAX
    assert c_ulong("12") == 12 and c_ulong("") == 0 and c_ulong("12x") is None
    record = fake(101, {"CPUS": "unlimited", "IOLIMIT": "2M", "CPULIMIT": "bogus"})
    assert row(pick("cpus,iolimit,cpulimit"), record, True) == "%5s %10d %7s" % ("-", 2 * 1024 * 1024, "-")
    assert features(fake(101, {"FEATURES": "nfsd:on,nfs:off sysfs:on nfs:on fuse:on"})) == [
        ("sysfs", True),
        ("nfs", True),
        ("nfsd", True),
        ("fuse", True),  # pyvz's own, after vzctl's
    ]
    assert capabilities(fake(101, {"CAPABILITY": "SYS_TIME:on chown:off bad net_raw:maybe"})) == [
        ("chown", False),
        ("sys_time", True),
    ]


def test_name_and_hostname_patterns_are_fnmatch() -> None:
    assert glob_match("web*", "web1") and not glob_match("web*", "db1")
    assert glob_match("*.example.com", "a.b.example.com")  # '*' crosses dots and slashes
    assert glob_match("host[12]", "host2") and not glob_match("host[!12]", "host2")
    assert glob_match("host[^12]", "host3")
    assert glob_match("a\\*b", "a*b") and not glob_match("a\\*b", "axb")
    assert glob_match("?", "x") and not glob_match("?", "")
    assert glob_match("[", "[") and glob_match("a.b", "a.b") and not glob_match("a.b", "aXb")
