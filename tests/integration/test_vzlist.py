"""vzlist on real CTs: columns, filters, sorting, -1 and -j, as OpenVZ users know them.

Each test gets three CTs: 101 (web1, host1) and 102 (db1, host2) running, 103 (web3, other3)
stopped.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root

HEADER = "      CTID      NPROC STATUS  IP_ADDR         HOSTNAME"
CTS = (("101", "web1", "host1"), ("102", "db1", "host2"), ("103", "web3", "other3"))
# CTID right in 10, NPROC right in 10, STATUS left in 7, IP_ADDR left in 15, then HOSTNAME.
ROW = re.compile(r"^ {7}(\d{3}) {1,10}(\d+|-) (running|stopped) (-) {14} (\S+)$")


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
        ("101", "running", "host1"),
        ("102", "running", "host2"),
    ]
    for match in rows:
        assert match and int(match[2]) >= 1  # init at least


def test_row_shape(three: VzRoot) -> None:
    row = listed(three, "-H", "101")[0]
    nproc = row[11:21].strip()
    assert nproc.isdigit() and int(nproc) >= 1
    assert row == f"       101 {nproc.rjust(10)} running -               host1"
    # The columns: CTID right in 10, NPROC right in 10, STATUS left in 7, IP_ADDR left in 15.
    assert (row[:10], row[10], row[11:21], row[21], row[22:29], row[29]) == (
        "       101",
        " ",
        nproc.rjust(10),
        " ",
        "running",
        " ",
    )
    assert (row[30:45], row[45], row[46:]) == ("-".ljust(15), " ", "host1")


def test_all_shows_stopped_with_dash_nproc(three: VzRoot) -> None:
    lines = listed(three, "-a")
    assert lines[0] == HEADER
    assert ctids(lines[1:]) == ["101", "102", "103"]
    assert lines[3] == "       103          - stopped -               other3"


def test_stopped_only(three: VzRoot) -> None:
    lines = listed(three, "-S")
    assert lines == [HEADER, "       103          - stopped -               other3"]


def test_name_column_instead_of_hostname(three: VzRoot) -> None:
    lines = listed(three, "-a", "-n")
    assert lines[0] == "      CTID      NPROC STATUS  IP_ADDR         NAME"
    assert [line.split()[-1] for line in lines[1:]] == ["web1", "db1", "web3"]


def test_no_header(three: VzRoot) -> None:
    lines = listed(three, "-H", "-a")
    assert len(lines) == 3
    assert ctids(lines) == ["101", "102", "103"]
    assert all("CTID" not in line for line in lines)


def test_output_fields(three: VzRoot) -> None:
    lines = listed(three, "-a", "-o", "ctid,name,ostemplate")
    assert lines[0].split() == ["CTID", "NAME", "OSTEMPLATE"]
    assert [line.split() for line in lines[1:]] == [
        ["101", "web1", "busybox"],
        ["102", "db1", "busybox"],
        ["103", "web3", "busybox"],
    ]
    assert lines[0].startswith("      CTID ")
    assert lines[1].startswith("       101 ")


def test_sort_descending_with_separate_argument(three: VzRoot) -> None:
    lines = listed(three, "-a", "-s", "-ctid")
    assert ctids(lines[1:]) == ["103", "102", "101"]


def test_sort_descending(three: VzRoot) -> None:
    assert ctids(listed(three, "-a", "--sort=-ctid")[1:]) == ["103", "102", "101"]
    assert ctids(listed(three, "-a", "-s", "ctid")[1:]) == ["101", "102", "103"]
    assert ctids(listed(three, "-a", "-s", "name")[1:]) == ["102", "101", "103"]  # db1, web1, web3


def test_ctid_only(three: VzRoot) -> None:
    lines = listed(three, "-1")
    assert [line.strip() for line in lines] == ["101", "102"]
    assert [line.strip() for line in listed(three, "-1", "-a")] == ["101", "102", "103"]


def test_json(three: VzRoot) -> None:
    done = three.vzlist("-a", "-j")
    assert done.code == 0, done
    data = json.loads(done.out)
    assert isinstance(data, list)
    by_id = {entry["ctid"]: entry for entry in data}
    assert sorted(by_id) == [101, 102, 103]
    for entry in data:
        for key in ("ctid", "nproc", "status", "hostname", "name", "onboot", "diskspace"):
            assert key in entry, (key, entry)
        assert isinstance(entry["onboot"], bool)
        assert set(entry["diskspace"]) == {"usage", "softlimit", "hardlimit"}
        assert isinstance(entry["diskspace"]["usage"], int)  # KiB counted by the quota
    running = by_id[101]
    assert running["status"] == "running"
    assert isinstance(running["nproc"], int) and running["nproc"] >= 1
    assert (running["hostname"], running["name"]) == ("host1", "web1")
    assert running["onboot"] is True  # the basic sample's ONBOOT="yes"
    stopped = by_id[103]
    assert stopped["status"] == "stopped"
    assert stopped["nproc"] is None
    assert (stopped["hostname"], stopped["name"]) == ("other3", "web3")
    assert stopped["diskspace"]["softlimit"] == 2 * 1024 * 1024
    assert stopped["diskspace"]["hardlimit"] == 3 * 1024 * 1024

    running_only = json.loads(three.vzlist("-j").out)
    assert [entry["ctid"] for entry in running_only] == [101, 102]


def test_name_and_hostname_patterns(three: VzRoot) -> None:
    assert ctids(listed(three, "-a", "-N", "we*")[1:]) == ["101", "103"]
    assert ctids(listed(three, "-a", "-h", "host*")[1:]) == ["101", "102"]
    assert ctids(listed(three, "-a", "-h", "*3")[1:]) == ["103"]


def test_ctids_and_names_as_arguments(three: VzRoot) -> None:
    assert ctids(listed(three, "102")[1:]) == ["102"]
    assert ctids(listed(three, "web3", "101")[1:]) == ["101", "103"]


def test_nothing_to_list_is_vzlists_error(three: VzRoot) -> None:
    """vzlist 4.11 (collect() in vzlist.c): no CT to list is "Container(s) not found" on
    stderr and exit 1, with no header; -j prints []; a filter that hides every row is not."""
    for args in (["999"], ["-a", "999"], ["-S", "999"]):
        done = three.vzlist(*args)
        assert (done.code, done.out, done.err) == (1, "", "Container(s) not found\n"), done
    listing = three.vzlist("-j", "999")
    assert (listing.code, listing.out.strip()) == (1, "[]"), listing
    both = three.vzlist("999", "101")  # the ones that exist are listed
    assert both.code == 0 and ctids(both.out.splitlines()[1:]) == ["101"], both
    hidden = three.vzlist("-a", "-h", "nosuchhost*")
    assert (hidden.code, hidden.out.splitlines()) == (0, [HEADER]), hidden
    for ctid in ("101", "102"):
        three.ok("stop", "--fast", ctid)
    none_running = three.vzlist()
    assert (none_running.code, none_running.out, none_running.err) == (1, "", "Container(s) not found\n")


def test_unknown_field_is_one_line_error(three: VzRoot) -> None:
    done = three.vzlist("-o", "bogus")
    assert done.code != 0
    assert done.out == ""
    errors = [line for line in done.err.splitlines() if line.strip()]
    assert len(errors) == 1, done.err
    assert "bogus" in errors[0]


def test_list_fields(three: VzRoot) -> None:
    fields = listed(three, "-L")
    for field in ("ctid", "nproc", "status", "ip", "hostname", "name", "ostemplate", "onboot", "diskspace"):
        assert field in fields
