"""vzlist on real CTs: columns, filters, sorting, -1 and -j, byte for byte as vzlist 4.11
prints them (the expected text is written with the printf formats of its vzlist.c).

Each test gets three CTs: 101 (web1, host1) and 102 (db1, host2) running, 103 (web3, other3)
stopped; the exact every-field tests add 104, a stopped CT on the dir layout whose CTID.conf
sets every key vzlist reads.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

HEADER = "%10s %10s %-9s %-15s %s" % ("CTID", "NPROC", "STATUS", "IP_ADDR", "HOSTNAME")
CTS = (("101", "web1", "host1"), ("102", "db1", "host2"), ("103", "web3", "other3"))
# CTID right in 10, NPROC right in 10, STATUS left in 9, IP_ADDR left in 15, then HOSTNAME.
ROW = re.compile(r"^ {7}(\d{3}) {1,10}(\d+|-) (running  |stopped  ) (-) {14} (\S+)$")
LONG_MAX = 9223372036854775807  # "unlimited", printed as the number it is
UBC_ORDER = (
    "kmemsize lockedpages privvmpages shmpages numproc physpages vmguarpages oomguarpages numtcpsock "
    "numflock numpty numsiginfo tcpsndbuf tcprcvbuf othersockbuf dgramrcvbuf numothersock dcachesize "
    "numfile numiptent swappages"
).split()
STOPPED_103 = "%10d %10s %-9s %-15s %s" % (103, "-", "stopped", "-", "other3")


@pytest.fixture
def three(vzroot: VzRoot) -> VzRoot:
    for ctid, name, hostname in CTS:
        vzroot.ok("create", ctid, "--name", name, "--hostname", hostname)
    vzroot.ok("set", "103", "--diskspace", "2G:3G", "--save")
    vzroot.ok("start", "101")
    vzroot.ok("start", "102")
    return vzroot


def listed(vzroot: VzRoot, *args: str) -> list[str]:
    done = vzroot.vzlist(*args)
    assert done.code == 0, done
    return done.out.splitlines()


def ctids(lines: list[str]) -> list[str]:
    """The CTIDs of table rows (lines after a header, or all lines with -H/-1)."""
    return [line.split()[0] for line in lines if line.split() and line.split()[0].isdigit()]


def test_default_lists_running_cts_only(three: VzRoot) -> None:
    lines = listed(three)
    assert lines[0] == HEADER
    assert ctids(lines[1:]) == ["101", "102"]
    rows = [ROW.match(line) for line in lines[1:]]
    assert all(rows), lines
    assert [(m[1], m[3], m[5]) for m in rows if m] == [
        ("101", "running  ", "host1"),
        ("102", "running  ", "host2"),
    ]
    for match in rows:
        assert match and int(match[2]) >= 1  # init at least


def test_row_shape(three: VzRoot) -> None:
    row = listed(three, "-H", "101")[0]
    nproc = row[11:21].strip()
    assert nproc.isdigit() and int(nproc) >= 1
    # NPROC is the numproc beancounter's held value, right in 10
    assert row == "%10d %10d %-9s %-15s %s" % (101, int(nproc), "running", "-", "host1")
    assert listed(three, "-H", "-o", "numproc", "101") == ["%10d" % int(nproc)]


def test_all_shows_stopped_with_dash_nproc(three: VzRoot) -> None:
    lines = listed(three, "-a")
    assert lines[0] == HEADER
    assert ctids(lines[1:]) == ["101", "102", "103"]
    assert lines[3] == STOPPED_103


def test_stopped_only(three: VzRoot) -> None:
    assert listed(three, "-S") == [HEADER, STOPPED_103]
    assert listed(three, "-S", "101") == [HEADER]  # named, but running: -S hides it


def test_name_shows_smartname(three: VzRoot) -> None:
    """-n: vzlist 4.11's smart_name,numproc,status,ip,hostname (the name, else the CTID)."""
    three.ok("set", "103", "--name", "", "--save")
    lines = listed(three, "-a", "-n")
    assert lines[0] == "%10s %10s %-9s %-15s %s" % ("SMARTNAME", "NPROC", "STATUS", "IP_ADDR", "HOSTNAME")
    assert [line[:10] for line in lines[1:]] == ["%10s" % "web1", "%10s" % "db1", "%10d" % 103]
    assert lines[3] == STOPPED_103
    # the last of -o, -n and -1 wins, as vzlist's getopt loop has it
    assert listed(three, "-n", "-o", "ctid", "101") == ["%10s" % "CTID", "%10d" % 101]
    assert listed(three, "-o", "ctid", "-n", "-H", "101")[0].startswith("%10s " % "web1")


def test_no_header(three: VzRoot) -> None:
    lines = listed(three, "-H", "-a")
    assert len(lines) == 3
    assert ctids(lines) == ["101", "102", "103"]
    assert all("CTID" not in line for line in lines)


def test_output_fields(three: VzRoot) -> None:
    lines = listed(three, "-a", "-o", "ctid,name,ostemplate")
    assert lines == [
        "%10s %-32s %s" % ("CTID", "NAME", "OSTEMPLATE"),
        "%10d %-32s %s" % (101, "web1", "busybox"),
        "%10d %-32s %s" % (102, "db1", "busybox"),
        "%10d %-32s %s" % (103, "web3", "busybox"),
    ]


def test_sort_descending_with_separate_argument(three: VzRoot) -> None:
    lines = listed(three, "-a", "-s", "-ctid")
    assert ctids(lines[1:]) == ["103", "102", "101"]


def test_sort_descending(three: VzRoot) -> None:
    assert ctids(listed(three, "-a", "--sort=-ctid")[1:]) == ["103", "102", "101"]
    assert ctids(listed(three, "-a", "-s", "ctid")[1:]) == ["101", "102", "103"]
    assert ctids(listed(three, "-a", "-s", "name")[1:]) == ["102", "101", "103"]  # db1, web1, web3
    assert ctids(listed(three, "-a", "-sname")[1:]) == ["102", "101", "103"]
    assert ctids(listed(three, "-a", "-s", "status")[1:]) == ["101", "102", "103"]


def test_ctid_only(three: VzRoot) -> None:
    assert listed(three, "-1") == ["%10d" % 101, "%10d" % 102]
    assert listed(three, "-1", "-a") == ["%10d" % 101, "%10d" % 102, "%10d" % 103]


def test_json(three: VzRoot) -> None:
    done = three.vzlist("-a", "-j")
    assert done.code == 0, done
    data = json.loads(done.out)
    assert isinstance(data, list)
    by_id = {entry["ctid"]: entry for entry in data}
    assert sorted(by_id) == [101, 102, 103]
    fields = [line.split()[0] for line in listed(three, "-L") if "." not in line.split()[0]]
    for entry in data:
        assert list(entry) == fields  # every field without a suffix, in vzlist's order
        assert isinstance(entry["onboot"], bool)
        assert list(entry["diskspace"]) == ["usage", "softlimit", "hardlimit"]
        assert isinstance(entry["diskspace"]["usage"], int)  # KiB counted by the quota
        assert list(entry["numproc"]) == ["held", "maxheld", "barrier", "limit", "failcnt"]
        assert all(isinstance(v, int) for v in entry["numproc"].values())  # 0, never null
    running = by_id[101]
    assert running["status"] == "running"
    assert running["numproc"]["held"] >= 1
    assert isinstance(running["uptime"], float) and 0 < running["uptime"] < 600
    assert (running["hostname"], running["name"], running["smart_name"]) == ("host1", "web1", "web1")
    assert running["onboot"] is True  # the basic sample's ONBOOT="yes"
    stopped = by_id[103]
    assert stopped["status"] == "stopped"
    assert stopped["numproc"]["held"] == 0 and stopped["uptime"] == 0
    assert (stopped["hostname"], stopped["name"]) == ("other3", "web3")
    assert stopped["diskspace"]["softlimit"] == 2 * 1024 * 1024
    assert stopped["diskspace"]["hardlimit"] == 3 * 1024 * 1024
    assert (stopped["laverage"], stopped["cpus"], stopped["ioprio"]) == (None, 0, 0)

    running_only = json.loads(three.vzlist("-j").out)
    assert [entry["ctid"] for entry in running_only] == [101, 102]
    one = three.vzlist("-j", "-o", "ctid,smart_name,status,hostname,onboot,layout,laverage,netfilter", "101")
    assert one.out == (
        '[\n  {\n    "ctid": 101,\n    "smart_name": "web1",\n    "status": "running",\n'
        '    "hostname": "host1",\n    "onboot": true,\n    "layout": "btrfs",\n'
        '    "laverage": null,\n    "netfilter": null\n  }\n]\n'
    )
    suffixed = three.vzlist("-j", "-o", "ctid,numproc.l")
    assert (suffixed.code, suffixed.out, suffixed.err) == (
        1,
        "",
        "Field `numproc.l' is not available in JSON output\n",
    )


def test_uptime_of_a_running_ct(three: VzRoot) -> None:
    uptime = listed(three, "-H", "-o", "uptime,ctid", "101", "103")
    assert re.fullmatch(r"000d00h:0\d{1}m:\d{2}s %10d" % 101, uptime[0]), uptime
    assert uptime[1] == "%15s %10d" % ("-", 103)


def test_name_and_hostname_patterns(three: VzRoot) -> None:
    assert ctids(listed(three, "-a", "-N", "we*")[1:]) == ["101", "103"]
    assert ctids(listed(three, "-a", "-h", "host*")[1:]) == ["101", "102"]
    assert ctids(listed(three, "-a", "-h", "*3")[1:]) == ["103"]
    three.ok("set", "102", "--description", "the database", "--save")
    assert ctids(listed(three, "-a", "-d", "*data*")[1:]) == ["102"]
    assert ctids(listed(three, "-a", "--description=the*", "-N", "db?")[1:]) == ["102"]


def test_ctids_and_names_as_arguments(three: VzRoot) -> None:
    assert ctids(listed(three, "102")[1:]) == ["102"]
    assert ctids(listed(three, "web3", "101")[1:]) == ["101", "103"]
    unknown = three.vzlist("nosuchname")
    assert (unknown.code, unknown.out, unknown.err) == (1, "", "CT ID nosuchname is invalid.\n")


def test_nothing_to_list_is_vzlists_error(three: VzRoot) -> None:
    """vzlist 4.11 (collect() and main() in vzlist.c): no CT to list is "Container(s) not
    found" on stderr with no header; the exit is 1 when CTs were named and 0 when none were
    (its bug #2149); -j prints []; a filter that hides every row prints the header only."""
    for args in (["999"], ["-a", "999"], ["-S", "999"]):
        done = three.vzlist(*args)
        assert (done.code, done.out, done.err) == (1, "", "Container(s) not found\n"), done
    listing = three.vzlist("-j", "999")
    assert (listing.code, listing.out) == (1, "[]\n"), listing
    both = three.vzlist("999", "101")  # the ones that exist are listed
    assert both.code == 0 and ctids(both.out.splitlines()[1:]) == ["101"], both
    hidden = three.vzlist("-a", "-h", "nosuchhost*")
    assert (hidden.code, hidden.out.splitlines()) == (0, [HEADER]), hidden
    hidden_json = three.vzlist("-j", "-a", "-h", "nosuchhost*")
    assert (hidden_json.code, hidden_json.out) == (0, "[\n]\n"), hidden_json
    for ctid in ("101", "102"):
        three.ok("stop", "--fast", ctid)
    none_running = three.vzlist()
    assert (none_running.code, none_running.out, none_running.err) == (0, "", "Container(s) not found\n")
    assert three.vzlist("-j").out == "[]\n"


def test_bad_fields_and_options_are_one_line_and_exit_1(three: VzRoot) -> None:
    for args, message in (
        (["-o", "bogus"], "Unknown field: bogus"),
        (["-o", "ctid,nproc"], "Unknown field: nproc"),
        (["-s", "-bogus"], "Invalid sort field name: -bogus"),
        (["-x"], "vzlist: invalid option -- 'x'"),
        (["--bogus"], "vzlist: unrecognized option '--bogus'"),
        (["-o"], "vzlist: option requires an argument -- 'o'"),
    ):
        done = three.vzlist(*args)
        assert (done.code, done.out, done.err) == (1, "", message + "\n"), (args, done)


def test_list_fields(three: VzRoot) -> None:
    table = (REPO / "tests/unit/fixtures/vzlist-fields.txt").read_text().splitlines()
    expected = ["%-15s %-15s" % (line.split()[0], line.split()[2]) for line in table if line[0] != "#"]
    done = three.vzlist("-L")
    assert (done.code, done.out) == (0, "\n".join(expected) + "\n")


# ---- every field, byte for byte --------------------------------------------------------

FULL = {
    "HOSTNAME": "full.example.com",
    "NAME": "full",
    "DESCRIPTION": "every field",
    "IP_ADDRESS": "10.1.2.4 10.1.2.5/24",
    "NAMESERVER": "192.0.2.53",
    "SEARCHDOMAIN": "example.com",
    "ONBOOT": "no",
    "BOOTORDER": "7",
    "DISABLED": "no",
    "NUMPROC": "100:200",
    "PHYSPAGES": "0:65536",
    "SWAPPAGES": "0:131072",
    "KMEMSIZE": "unlimited",
    "VM_OVERCOMMIT": "1.5",
    "CPUUNITS": "2000",
    "CPULIMIT": "50",
    "CPUS": "2",
    "DISKSPACE": "1048576:2097152",
    "DISKINODES": "1000:2000",
    "IOPRIO": "3",
    "IOLIMIT": "10485760",
    "IOPSLIMIT": "500",
    "FEATURES": "nfs:on ppp:off",
    "CAPABILITY": "SYS_TIME:on NET_ADMIN:off",
    "NETFILTER": "stateless",
    "MOUNT_OPTS": "noatime",
}
UBC_SET = {"numproc": (100, 200), "physpages": (0, 65536), "swappages": (0, 131072)}
UBC_SET["kmemsize"] = (LONG_MAX, LONG_MAX)


@pytest.fixture
def full(three: VzRoot) -> VzRoot:
    """104: stopped, dir layout (no usage count: DSPACE shows -), every key vzlist reads set."""
    three.ok("create", "104", "--layout", "dir", "--name", "full")
    conf = three.conf_dir / "104.conf"
    kept = [line for line in conf.read_text().splitlines() if line.split("=")[0] not in FULL]
    conf.write_text("\n".join(kept + [f'{key}="{value}"' for key, value in FULL.items()]) + "\n")
    return three


def test_every_field_of_a_stopped_ct(full: VzRoot) -> None:
    names = [line.split()[0] for line in listed(full, "-L")]
    lines = listed(full, "-o", ",".join(names), "104")
    table = (REPO / "tests/unit/fixtures/vzlist-fields.txt").read_text().splitlines()
    formats = [line.split() for line in table if line[0] != "#"]
    assert lines[0] == " ".join(fmt % hdr for _name, fmt, hdr in formats).rstrip()
    cells: list[tuple[str, object]] = [("%10d", 104)] * 3
    cells += [
        ("%-32s", "/var/lib/vz/private/104"),
        ("%-32s", "/var/lib/vz/root/104"),
        ("%-16s", "noatime"),
        ("%-32s", "basic"),
        ("%-32s", "full.example.com"),
        ("%-32s", "full"),
        ("%10s", "full"),
        ("%-32s", "every field"),
        ("%-32s", "busybox"),
        ("%-15s", "10.1.2.4"),
        ("%-15s", "192.0.2.53"),
        ("%-15s", "example.com"),
        ("%-9s", "stopped"),
    ]
    for name in UBC_ORDER:
        barrier, limit = UBC_SET.get(name, (0, 0))
        cells += [("%10s", "-"), ("%10s", "-"), ("%10d", barrier), ("%10d", limit), ("%10s", "-")]
    cells += [("%10s", "-"), ("%10d", 1048576), ("%10d", 2097152)]
    cells += [("%10s", "-"), ("%10d", 1000), ("%10d", 2000)]
    cells += [
        ("%14s", "-"),
        ("%15s", "-"),
        ("%7d", 50),
        ("%7d", 2000),
        ("%5d", 2),
        ("%3d", 3),
        ("%10d", 10485760),
        ("%4d", 500),
        ("%6s", "no"),
        ("%10d", 7),
        ("%-6s", "dir"),
        ("%-15s", "nfs:on,ppp:off"),
        ("%5s", "yes"),
        ("%6s", "no"),
        ("%6g", 1.5),
        ("%-9s", "stateless"),
        ("%-15s", "net_admin:off,sys_time:on"),
    ]
    assert lines[1:] == [" ".join(fmt % value for fmt, value in cells).rstrip()]
    untrimmed = listed(full, "-H", "-t", "-o", "ip,ctid", "104")
    assert untrimmed == ["%-15s %10d" % ("10.1.2.4 10.1.2.5/24", 104)]


def test_json_of_a_stopped_ct(full: VzRoot) -> None:
    def ubc(name: str) -> str:
        barrier, limit = UBC_SET.get(name, (0, 0))
        return (
            f'    "{name}": {{\n      "held": 0,\n      "maxheld": 0,\n      "barrier": {barrier},\n'
            f'      "limit": {limit},\n      "failcnt": 0\n    }}'
        )

    entries = [
        '    "ctid": 104',
        '    "veid": 104',
        '    "vpsid": 104',
        '    "private": "/var/lib/vz/private/104"',
        '    "root": "/var/lib/vz/root/104"',
        '    "mount_opts": "noatime"',
        '    "origin_sample": "basic"',
        '    "hostname": "full.example.com"',
        '    "name": "full"',
        '    "smart_name": "full"',
        '    "description": "every field"',
        '    "ostemplate": "busybox"',
        '    "ip": ["10.1.2.4", "10.1.2.5/24"]',
        '    "nameserver": ["192.0.2.53"]',
        '    "searchdomain": ["example.com"]',
        '    "status": "stopped"',
        *(ubc(name) for name in UBC_ORDER),
        '    "diskspace": {\n      "usage": 0,\n      "softlimit": 1048576,\n'
        '      "hardlimit": 2097152\n    }',
        '    "diskinodes": {\n      "usage": 0,\n      "softlimit": 1000,\n      "hardlimit": 2000\n    }',
        '    "laverage": null',
        '    "uptime": 0.000',
        '    "cpulimit": 50',
        '    "cpuunits": 2000',
        '    "cpus": 2',
        '    "ioprio": 3',
        '    "iolimit": 10485760',
        '    "iopslimit": 500',
        '    "onboot": false',
        '    "bootorder": 7',
        '    "layout": "dir"',
        '    "features": {\n      "nfs": true,\n      "ppp": false\n    }',
        '    "vswap": true',
        '    "disabled": false',
        '    "vm_overcommit": 1.5',
        '    "netfilter": "stateless"',
        '    "capability": {\n      "net_admin": false,\n      "sys_time": true\n    }',
    ]
    done = full.vzlist("-j", "104")
    assert done.code == 0, done
    assert done.out == "[\n  {\n" + ",\n".join(entries) + "\n  }\n]\n"
    assert json.loads(done.out)[0]["kmemsize"]["limit"] == LONG_MAX  # never cut
