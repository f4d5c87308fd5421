"""A fabric host that answers ARP: run inside a test's namespace on one veth end.

    python3 arp_responder.py IFACE IP=MAC [IP=MAC ...]

Answers each ARP request for one of the IPs with its MAC (what a Hyper-V host does for its
PA), prints "ready" once bound and one "answered IP" line per reply; runs until killed.
The kernel is no help here: an address on the veth would make it answer the NVGRE it
receives too (ICMP protocol unreachable, and ARP of its own).
"""
from __future__ import annotations

import socket
import struct
import sys

ETH_P_ARP = 0x0806
ARP = struct.Struct("!HHBBH6s4s6s4s")     # hw, proto, hlen, plen, op, sha, spa, tha, tpa


def main(argv: list[str]) -> int:
    iface, pairs = argv[0], argv[1:]
    answers = {socket.inet_aton(ip): bytes.fromhex(mac.replace(":", ""))
               for ip, mac in (p.split("=") for p in pairs)}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((iface, ETH_P_ARP))
    print("ready", flush=True)
    while True:
        frame = s.recv(2048)
        if len(frame) < 14 + ARP.size or frame[12:14] != b"\x08\x06":
            continue
        hw, proto, hlen, plen, op, sha, spa, _tha, tpa = ARP.unpack_from(frame, 14)
        mac = answers.get(tpa)
        if (hw, proto, hlen, plen, op) != (1, 0x0800, 6, 4, 1) or mac is None:
            continue
        reply = sha + mac + b"\x08\x06" + ARP.pack(1, 0x0800, 6, 4, 2, mac, tpa, sha, spa)
        s.send(reply)
        print("answered", socket.inet_ntoa(tpa), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
