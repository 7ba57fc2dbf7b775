"""pyvz.listing: the vzlist field table."""

from __future__ import annotations

from pyvz.listing import DEFAULT_FIELDS, FIELDS, Field, _cell, _json_value
from pyvz.params import PARAMS
from pyvz.units import UNLIMITED, BarrierLimit


def test_every_field_has_a_header_and_its_own_name() -> None:
    for name, field in FIELDS.items():
        assert isinstance(field, Field)
        assert field.name == name
        assert field.header.strip(), name
        assert field.header == field.header.upper(), name
        assert " " not in field.header, name
        assert field.width >= 0


def test_veid_is_an_alias_of_ctid() -> None:
    veid, ctid = FIELDS["veid"], FIELDS["ctid"]
    assert veid.name == "veid"
    assert veid._replace(name="ctid") == ctid
    assert veid.get is ctid.get
    assert veid.header == "CTID"


def test_every_param_field_is_listed() -> None:
    for param in PARAMS:
        if param.field:
            assert param.field in FIELDS, param.name


def test_default_fields_exist_in_openvz_order() -> None:
    assert DEFAULT_FIELDS == ("ctid", "nproc", "status", "ip", "hostname")
    assert all(name in FIELDS for name in DEFAULT_FIELDS)
    assert [FIELDS[name].header for name in DEFAULT_FIELDS] == [
        "CTID",
        "NPROC",
        "STATUS",
        "IP_ADDR",
        "HOSTNAME",
    ]


def test_numbers_are_right_aligned() -> None:
    assert FIELDS["ctid"].right and FIELDS["nproc"].right
    assert not FIELDS["hostname"].right and not FIELDS["status"].right


def test_cell_formatting() -> None:
    assert _cell(None) == "-"
    assert _cell("") == "-"
    assert _cell([]) == "-"
    assert _cell(True) == "yes"
    assert _cell(False) == "no"
    assert _cell(["10.0.0.1", "10.0.0.2"]) == "10.0.0.1 10.0.0.2"
    assert _cell({"softlimit": 100, "hardlimit": UNLIMITED}) == "100:unlimited"
    assert _cell(101) == "101"


def test_json_value_of_barrier_limit() -> None:
    assert _json_value(BarrierLimit(1, 2)) == {"softlimit": 1, "hardlimit": 2}
    assert _json_value(None) is None
    assert _json_value(True) is True
    assert _json_value(7) == 7
