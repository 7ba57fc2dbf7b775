"""The frames vzctl's arpsend/ndsend sent, built by pyvz.net.announce."""

from __future__ import annotations

import socket
import struct

from pyvz.net.announce import _checksum, garp_frame, unsolicited_na

MAC = bytes.fromhex("001851aabbcc")


def test_gratuitous_arp_names_the_address_as_sender_and_target() -> None:
    frame = garp_frame(MAC, "10.7.0.50")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    hardware, protocol, _hl, _pl, op = struct.unpack("!HHBBH", frame[14:22])
    assert (hardware, protocol, op) == (1, 0x0800, 1)
    assert frame[22:28] == MAC
    assert frame[28:32] == frame[38:42] == socket.inet_aton("10.7.0.50")


def test_unsolicited_na_is_valid_icmpv6() -> None:
    frame = unsolicited_na(MAC, "2001:db8::50")
    assert frame[:6] == bytes.fromhex("333300000001") and frame[12:14] == b"\x86\xdd"
    header, body = frame[14:54], frame[54:]
    assert header[6] == 58 and header[7] == 255  # ICMPv6, hop limit 255 as NDP requires
    source, dest = header[8:24], header[24:40]
    assert source == socket.inet_pton(socket.AF_INET6, "2001:db8::50")
    assert body[0] == 136 and body[4] & 0x20  # neighbour advertisement, override
    assert body[8:24] == source and body[24:26] == b"\x02\x01" and body[26:32] == MAC
    pseudo = source + dest + struct.pack("!I3xB", len(body), 58)
    assert _checksum(pseudo + body) == 0  # a correct checksum sums to zero
