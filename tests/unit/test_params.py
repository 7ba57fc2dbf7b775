"""pyvz.params: the one parameter table and its parsers."""

from __future__ import annotations

from typing import Any

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.params import (
    BY_KEY,
    BY_NAME,
    DISKSPACE,
    MAX_CTID,
    MIN_CTID,
    ONBOOT,
    PARAMS,
    Layout,
    for_command,
    parse_ctid,
    parse_hostname,
    parse_name,
    parse_options,
    parse_template_name,
)
from pyvz.units import UNLIMITED, BarrierLimit

# ---- parse_ctid ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("101", 101), ("1000", 1000), (str(MAX_CTID), MAX_CTID)])
def test_parse_ctid_accepts_valid_ids(text: str, expected: int) -> None:
    assert parse_ctid(text) == expected


@pytest.mark.parametrize("text", ["0", "1", "50", "100"])
def test_parse_ctid_rejects_reserved_ids(text: str) -> None:
    with pytest.raises(VzError, match="reserved") as caught:
        parse_ctid(text)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_parse_ctid_rejects_too_large_ids() -> None:
    with pytest.raises(VzError, match="too large") as caught:
        parse_ctid(str(MAX_CTID + 1))
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


@pytest.mark.parametrize("text", ["", "abc", "web", "-101", "+101", "10 1", " 101", "101.0", "1e3"])
def test_parse_ctid_rejects_non_numeric(text: str) -> None:
    with pytest.raises(VzError, match="invalid CTID") as caught:
        parse_ctid(text)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_min_ctid_is_101() -> None:
    assert MIN_CTID == 101


def test_parse_ctid_rejects_non_ascii_digits_with_vzerror() -> None:
    with pytest.raises(VzError) as caught:
        parse_ctid("1²")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


# ---- hostnames and names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["a", "web", "web-1", "web.example.com", "web.example.com.", "1.2.3.4", "x" * 63, "A9"]
)
def test_parse_hostname_accepts_valid_names(text: str) -> None:
    assert parse_hostname(text) == text


@pytest.mark.parametrize(
    "text",
    ["", ".", "-web", "web-", "we_b", "a..b", "a b", "a\nb", "x" * 64, "web/x", "web;reboot", "ü.example"],
)
def test_parse_hostname_rejects_bad_values(text: str) -> None:
    with pytest.raises(VzError, match="invalid hostname") as caught:
        parse_hostname(text)
    assert caught.value.code == ExitCode.BAD_HOSTNAME


def test_parse_hostname_rejects_names_longer_than_253() -> None:
    long_name = ".".join(["x" * 63] * 4)  # 255 characters, every label valid
    with pytest.raises(VzError) as caught:
        parse_hostname(long_name)
    assert caught.value.code == ExitCode.BAD_HOSTNAME


@pytest.mark.parametrize("parser", [parse_hostname, parse_name, parse_template_name])
def test_parsers_reject_a_trailing_newline(parser: Any) -> None:
    with pytest.raises(VzError):
        parser("web\n")


@pytest.mark.parametrize("text", ["web", "web1", "my_ct", "a.b-c", "1web", "x" * 64])
def test_parse_name_accepts_valid_names(text: str) -> None:
    assert parse_name(text) == text


@pytest.mark.parametrize("text", ["101", "0", "007"])
def test_parse_name_rejects_pure_digits(text: str) -> None:
    with pytest.raises(VzError, match="not all digits") as caught:
        parse_name(text)
    assert caught.value.code == ExitCode.SET_NAME_ERROR


@pytest.mark.parametrize("text", ["", "a/b", "a b", "x" * 65, "../x", "ct:1"])
def test_parse_name_rejects_bad_characters_and_lengths(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_name(text)
    assert caught.value.code == ExitCode.SET_NAME_ERROR


@pytest.mark.parametrize("text", [".", ".."])
def test_parse_name_rejects_dot_names(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_name(text)
    assert caught.value.code == ExitCode.SET_NAME_ERROR


# ---- the table -----------------------------------------------------------------------------


def test_param_names_are_unique() -> None:
    names = [p.name for p in PARAMS]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)


def test_param_options_are_unique_and_look_like_vzctls() -> None:
    options = [option for p in PARAMS for option in p.options]
    assert len(options) == len(set(options))
    # long options, and a one-letter form only where vzctl has one (some UBCs)
    assert all(p.options[0].startswith("--") and len(p.options[0]) > 2 for p in PARAMS if p.options)
    short = {p.name: o for p in PARAMS for o in p.options if not o.startswith("--")}
    assert short == {
        "kmemsize": "-k",
        "lockedpages": "-l",
        "numproc": "-p",
        "numflock": "-f",
        "numpty": "-t",
        "numsiginfo": "-i",
        "tcprcvbuf": "-b",
        "numiptent": "-e",
        "numfile": "-n",
        "dcachesize": "-x",
    }
    # NETIF alone is written by other options (--netif_add, --ifname ...), never given whole.
    # NETDEV by --netdev_add/--netdev_del.
    assert [p.name for p in PARAMS if not p.options] == ["netif", "netdev"]


def test_param_config_keys_are_unique() -> None:
    keys = [p.key for p in PARAMS if p.key]
    assert len(keys) == len(set(keys))
    assert set(BY_KEY) == set(keys)


def test_every_param_has_help_and_metavar() -> None:
    for param in PARAMS:
        assert param.help.strip(), param.name
        if not param.options:
            continue  # NETIF: no option of its own
        assert param.metavar.strip(), param.name
        assert param.commands, param.name
        assert param.commands <= {"create", "set", "clone"}, param.name


def test_vzlist_field_names_are_unique() -> None:
    fields = [p.field for p in PARAMS if p.field]
    assert len(fields) == len(set(fields))


def test_defaults_parse_back() -> None:
    assert ONBOOT.default is False
    for param in PARAMS:
        if param.default is not None:
            assert param.parse(param.fmt(param.default)) == param.default, param.name


# One valid command-line value per stored parameter; a new parameter must add one here.
SAMPLES: dict[str, str] = {
    "ostemplate": "debian-12-x86_64",
    "recipe": "debian-12-x86_64-minimal",
    "config": "basic",
    "layout": "dir",
    "private": "/var/lib/vz/private/$VEID",
    "root": "/var/lib/vz/root/$VEID",
    "local_uid": "100000",
    "local_gid": "100000",
    "hostname": "web.example.com",
    "name": "web",
    "description": 'my "first" CT',
    "onboot": "yes",
    "bootorder": "10",
    "disabled": "no",
    "stop_timeout": "60",
    "diskspace": "10G:11G",
    "nameserver": "192.0.2.53 2001:db8::53",
    "searchdomain": "example.com corp.example.com",
    "ram": "256M",
    "swap": "512M",
    "numproc": "100:120",
    "cpuunits": "2000",
    "cpulimit": "50",
    "vm_overcommit": "1.5",
    "cpus": "2",
    "cpumask": "0-3,6",
    "nodemask": "0",
    "diskinodes": "200000:220000",
    "ioprio": "6",
    "iolimit": "10M",
    "iopslimit": "300",
    "meminfo": "pages:65536",
    "devnodes": "null:rw",
    "devices": "c:10:200:rw b:8:all:r",
    "capability": "net_admin:off CHOWN:on",
    "features": "bridge:on nfs:off",
    "netfilter": "stateful",
    "iptables": "iptable_filter,ipt_REJECT",
    "netdev": "eth1",
    "netdev_add": "eth2",
    "netdev_del": "eth1",
    "bindmount_add": "/srv/data:/data /srv/www:/var/www,ro,nodev",
    "bindmount_del": "/old all",
    "avnumproc": "40:40",
    "cpuweight": "100",
    "mount_opts": "noatime",
    "diskquota": "yes",
    "quotatime": "600",
    "replicate": "standby-1,standby-2",
    "ha_enable": "yes",
    "ha_prio": "3",
    "replicate_interval": "5m",
    "quotaugidlimit": "200",
    "kmemsize": "14372700:14790164",
    "lockedpages": "256",
    "privvmpages": "65536:69632",
    "shmpages": "21504",
    "vmguarpages": "33792:unlimited",
    "oomguarpages": "26112:unlimited",
    "numtcpsock": "360",
    "numflock": "188:206",
    "numpty": "16",
    "numsiginfo": "256",
    "tcpsndbuf": "1720320:2703360",
    "tcprcvbuf": "1720320:2703360",
    "othersockbuf": "1126080:2097152",
    "dgramrcvbuf": "262144",
    "numothersock": "360",
    "dcachesize": "3409920:3624960",
    "numfile": "9312",
    "numiptent": "128",
    "ipadd": "192.0.2.10 2001:db8::10/64",
    "firewall_accept": "22/tcp 53/udp 8000-8080/tcp",
    "netif": "ifname=eth0,mac=00:18:51:AA:BB:CC,host_ifname=veth101.0,host_mac=00:18:51:DD:EE:FF,bridge=br0",
    "applyconfig": "basic",
    "ephemeral": "yes",
}


def test_samples_cover_every_stored_param() -> None:
    assert {p.name for p in PARAMS if p.key} <= set(SAMPLES)


def test_parse_options_round_trips_through_fmt() -> None:
    parsed = parse_options(SAMPLES)
    assert set(parsed) == set(SAMPLES)
    for name, value in parsed.items():
        param = BY_NAME[name]
        text = param.fmt(value)
        assert isinstance(text, str)
        assert param.parse(text) == value, name


def test_parse_options_returns_typed_values() -> None:
    parsed = parse_options(SAMPLES)
    assert parsed["layout"] is Layout.DIR
    assert parsed["onboot"] is True
    assert parsed["disabled"] is False
    assert parsed["bootorder"] == 10
    assert parsed["diskspace"] == BarrierLimit(10 * 1024**2, 11 * 1024**2)
    assert parsed["private"] == "/var/lib/vz/private/$VEID"


def test_parse_options_strips_trailing_slash_of_paths() -> None:
    assert parse_options({"root": "/vz/root/"}) == {"root": "/vz/root"}
    assert parse_options({"root": "/"}) == {"root": "/"}


@pytest.mark.parametrize(
    ("name", "text", "code"),
    [
        ("hostname", "bad_host", ExitCode.BAD_HOSTNAME),
        ("name", "123", ExitCode.INVALID_PARAMETER_VALUE),
        ("onboot", "maybe", ExitCode.INVALID_PARAMETER_VALUE),
        ("layout", "zfs", ExitCode.INVALID_PARAMETER_VALUE),
        ("private", "relative/path", ExitCode.INVALID_PARAMETER_VALUE),
        ("diskspace", "2G:1G", ExitCode.INVALID_PARAMETER_VALUE),
        ("stop_timeout", "86401", ExitCode.INVALID_PARAMETER_VALUE),
        ("userpasswd", "Root:x", ExitCode.INVALID_PARAMETER_VALUE),
        ("userpasswd", "root:", ExitCode.INVALID_PARAMETER_VALUE),
        ("ostemplate", "../etc", ExitCode.INVALID_PARAMETER_VALUE),
    ],
)
def test_parse_options_rejects_bad_values(name: str, text: str, code: ExitCode) -> None:
    with pytest.raises(VzError) as caught:
        parse_options({name: text})
    assert caught.value.code == code


def test_userpasswd_is_never_printed() -> None:
    parsed = parse_options({"userpasswd": "root:s3cret:with:colons"})
    assert parsed["userpasswd"] == ("root", "s3cret:with:colons")
    assert "s3cret" not in BY_NAME["userpasswd"].fmt(parsed["userpasswd"])
    assert BY_NAME["userpasswd"].key is None


def test_diskspace_is_in_1k_blocks() -> None:
    assert DISKSPACE.parse("1G") == BarrierLimit(1024**2, 1024**2)
    assert DISKSPACE.parse("unlimited") == BarrierLimit(UNLIMITED, UNLIMITED)


def test_for_command_create() -> None:
    names = [p.name for p in for_command("create")]
    for expected in ("ostemplate", "config", "layout", "private", "root", "hostname", "name", "diskspace"):
        assert expected in names
    assert "description" in names  # vzctl 4.11's create_options has it
    for absent in ("userpasswd", "onboot", "applyconfig"):
        assert absent not in names


def test_for_command_set() -> None:
    names = [p.name for p in for_command("set")]
    for expected in ("hostname", "name", "onboot", "disabled", "diskspace", "userpasswd", "applyconfig"):
        assert expected in names
    assert "private" in names and "root" in names  # a stopped CT's moved files (vzctl's set_opt)
    for absent in ("layout", "local_uid", "config"):
        assert absent not in names


def test_for_command_keeps_table_order_and_unknown_is_empty() -> None:
    create = for_command("create")
    assert create == [p for p in PARAMS if p in create]
    assert for_command("start") == []


def test_params_fixed_at_create_are_not_live() -> None:
    for param in for_command("create"):
        if "set" not in param.commands:
            assert param.live is False, param.name


def test_description_rejects_newline() -> None:
    with pytest.raises(VzError) as caught:
        parse_options({"description": "line one\nline two"})
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_nameserver_accepts_inherit_and_addresses_only() -> None:
    assert BY_NAME["nameserver"].parse("inherit") == ("inherit",)
    with pytest.raises(VzError) as caught:
        BY_NAME["nameserver"].parse("not-an-ip")
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE
    with pytest.raises(VzError):
        BY_NAME["searchdomain"].parse("bad_domain!")
