"""Bridged veth interfaces: vzctl's NETIF format and the edits --netif_add/--ifname make."""

from __future__ import annotations

import pytest

from pyvz.errors import VzError
from pyvz.net.veth import Netif, edit, for_clone, format_config, parse_config

TEXT = "ifname=eth0,mac=00:18:51:00:00:01,host_ifname=veth101.0,host_mac=00:18:51:00:00:02,bridge=br0"


def test_netif_round_trips_in_vzctls_format() -> None:
    assert format_config(parse_config(TEXT + ";ifname=eth1")) == TEXT + ";ifname=eth1"


def test_edits() -> None:
    current = parse_config(TEXT)
    added = edit(current, {"netif_add": "eth1,,,,br1"}, "pyvz", 101)
    assert [n.ifname for n in added] == ["eth0", "eth1"] and added[1].host_ifname == "veth101.1"
    changed = edit(added, {"ifname": "eth1", "mac_filter": "on", "bridge": "br2"}, "pyvz", 101)
    assert (changed[1].mac_filter, changed[1].bridge, changed[1].mac) == ("on", "br2", added[1].mac)
    assert edit(changed, {"netif_del": "all"}, "pyvz", 101) == ()
    with pytest.raises(VzError):
        edit(current, {"netif_add": "eth0"}, "pyvz", 101)  # already there
    with pytest.raises(VzError):
        edit(current, {"netif_del": "eth9"}, "pyvz", 101)


def test_a_clone_gets_new_macs_and_host_names() -> None:
    source = (Netif("eth0", "00:18:51:00:00:01", "veth101.0", "00:18:51:00:00:02", "br0", "on"),)
    [clone] = for_clone(source, "pyvz", 102)
    assert (clone.ifname, clone.bridge, clone.mac_filter) == ("eth0", "br0", "on")
    assert clone.mac != source[0].mac and clone.host_mac != source[0].host_mac
    assert clone.mac.startswith("00:18:51:") and clone.host_ifname == "veth102.0"
