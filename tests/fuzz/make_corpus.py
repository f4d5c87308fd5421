"""Seed corpus for tests/fuzz/fuzz_packet.c: valid frames of every path the
fuzzer's policy knows (first byte: 0 fabric, 1 customer port)."""
import sys
from pathlib import Path

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

PMAC, CMAC = "02:00:00:00:00:aa", "02:00:00:00:00:bb"


def nvgre(vsid, src_pa, inner, inner_src="00:15:5d:00:00:07"):
    return (Ether(src="00:15:5d:00:00:10", dst=PMAC) / IP(src=src_pa, dst="192.168.1.1") /
            GRE(key_present=1, proto=0x6558, key=vsid << 8) /
            Ether(src=inner_src, dst=PMAC) / inner)


def tagged(vlan, inner):
    return Ether(src="02:00:00:00:01:10", dst=CMAC) / Dot1Q(vlan=vlan) / inner


FRAMES = {
    "decap_udp": (0, nvgre(5001, "192.168.1.10",
                           IP(src="10.1.1.7", dst="172.16.1.10") / UDP() / Raw(b"x" * 20))),
    "hairpin": (0, nvgre(5001, "192.168.1.10", IP(src="10.1.1.7", dst="10.1.2.5") / TCP())),
    "appliance": (1, tagged(100, IP(src="172.16.1.10", dst="10.9.1.1") / UDP())),
    "arp_in_nvgre": (0, nvgre(5001, "192.168.1.10",
                              ARP(psrc="10.1.1.7", pdst="10.1.1.1", hwsrc="00:15:5d:00:00:07"))),
    "ping_vsid_gw": (0, nvgre(5001, "192.168.1.10", IP(src="10.1.1.7", dst="10.1.1.1") / ICMP())),
    "arp_pa": (0, Ether(src="00:15:5d:00:00:10", dst="ff:ff:ff:ff:ff:ff") /
               ARP(psrc="192.168.1.10", pdst="192.168.1.1")),
    "ping_pa": (0, Ether(src="00:15:5d:00:00:10", dst=PMAC) /
                IP(src="192.168.1.10", dst="192.168.1.1") / ICMP()),
    "rewrite_in": (0, Ether(src="00:15:5d:00:00:30", dst=PMAC) /
                   IP(src="192.168.1.30", dst="192.168.1.100") / UDP() / Raw(b"r")),
    "rewrite_icmp_err": (0, Ether(src="00:15:5d:00:00:30", dst=PMAC) /
                         IP(src="192.168.1.30", dst="192.168.1.100") / ICMP(type=3, code=3) /
                         IP(src="192.168.1.100", dst="192.168.1.30") / UDP(sport=9, dport=7)),
    "encap_blue": (1, tagged(100, IP(src="172.16.1.10", dst="10.1.1.7") / UDP() / Raw(b"b"))),
    "encap_red": (1, tagged(200, IP(src="172.16.2.10", dst="10.1.1.7") / TCP())),
    "red_default_route": (0, nvgre(6001, "192.168.1.11", IP(src="10.1.1.7", dst="8.8.8.8") /
                                   UDP(), inner_src="00:15:5d:00:00:08")),
    "rewrite_out": (1, tagged(100, IP(src="172.16.1.10", dst="10.1.1.9") / TCP())),
    "unresolved": (1, tagged(200, IP(src="172.16.2.10", dst="10.1.1.20") / UDP())),
    "frag_needed": (1, tagged(100, IP(src="172.16.1.10", dst="10.1.1.7", flags="DF") /
                              UDP() / Raw(b"z" * 1460))),
    "arp_vlan": (1, Ether(src="02:00:00:00:01:10", dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=100) /
                 ARP(psrc="172.16.1.10", pdst="172.16.1.1")),
    "ping_vlan": (1, tagged(100, IP(src="172.16.1.10", dst="172.16.1.1") / ICMP())),
    "fragment": (1, tagged(100, IP(src="172.16.1.10", dst="10.1.1.9", flags="MF", frag=0) /
                           UDP() / Raw(b"f" * 16))),
}


def main(outdir):
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (port, frame) in FRAMES.items():
        (out / name).write_bytes(bytes([port]) + bytes(frame))


if __name__ == "__main__":
    main(sys.argv[1])
