"""Seed corpora for tests/fuzz/fuzz_frame.c, one per entry point, from scapy:
    make_frame_corpus.py TARGET OUTDIR
TARGET: parse_customer (802.1Q frames), parse_provider (fabric frames),
encap (template fields + an inner IPv4 packet), rewrite (new addresses + an
IPv4 packet), route (route programs), htab and rtab (table programs). The input
layouts are those fuzz_frame.c documents."""
import random
import socket
import struct
import sys
from pathlib import Path

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

GW_MAC = "02:00:00:00:00:aa"           # fuzz_frame.c's provider MAC
PA1, PA2 = "192.168.1.1", "192.168.1.2"  # ... and its two PAs


def ip_packets():
    """IPv4 packets of every shape the rewrite and encap paths treat apart."""
    a, b = "10.1.1.7", "172.16.1.10"
    quoted_udp = IP(src=b, dst=a, ttl=1) / UDP(sport=5000, dport=53) / Raw(b"q" * 8)
    quoted_tcp = IP(src=b, dst=a) / TCP(sport=40000, dport=80, flags="S")
    return {
        "tcp": IP(src=a, dst=b) / TCP(sport=1234, dport=80, flags="PA") / Raw(b"GET /"),
        "udp": IP(src=a, dst=b) / UDP(sport=1234, dport=53) / Raw(b"u" * 20),
        "udp_nocsum": IP(src=a, dst=b) / UDP(sport=7, dport=9, chksum=0) / Raw(b"z"),
        "icmp_echo": IP(src=a, dst=b) / ICMP(type=8, id=1, seq=1) / Raw(b"ping"),
        "icmp_unreach_udp": IP(src=a, dst=b) / ICMP(type=3, code=3) / quoted_udp,
        "icmp_ttl_tcp": IP(src=a, dst=b) / ICMP(type=11, code=0) / Raw(bytes(quoted_tcp)[:28]),
        "icmp_fragneeded": IP(src=a, dst=b) / ICMP(type=3, code=4, nexthopmtu=1458) /
        Raw(bytes(quoted_udp)),
        "first_fragment": IP(src=a, dst=b, flags="MF", frag=0, id=7) / UDP(sport=1, dport=2) /
        Raw(b"f" * 24),
        "later_fragment": IP(src=a, dst=b, frag=4, id=7, proto=17) / Raw(b"g" * 16),
        "options": IP(src=a, dst=b, options=[IPOption_RR(routers=["1.2.3.4"])]) /
        TCP(sport=5, dport=6),
        "gre_inside": IP(src=a, dst=b) / GRE() / Raw(b"x" * 4),
        "ttl1": IP(src=a, dst=b, ttl=1) / UDP(sport=3, dport=4),
    }


def tagged(vlan, payload):
    return Ether(src="02:00:00:00:01:10", dst="02:00:00:00:00:bb") / Dot1Q(vlan=vlan) / payload


def nvgre(vsid, inner, pa=PA1, key_low=0):
    return (Ether(src="00:15:5d:00:00:10", dst=GW_MAC) / IP(src="192.168.1.10", dst=pa) /
            GRE(key_present=1, proto=0x6558, key=vsid << 8 | key_low) /
            Ether(src="00:15:5d:00:00:07", dst=GW_MAC) / inner)


def customer():
    seeds = {f"vlan100_{k}": tagged(100, p) for k, p in ip_packets().items()}
    seeds.update({
        "arp": Ether(dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=100) /
        ARP(psrc="172.16.1.10", pdst="172.16.1.1"),
        "untagged": Ether(dst="02:00:00:00:00:bb") / IP() / UDP(),
        "qinq": Ether(dst="02:00:00:00:00:bb", type=0x88A8) / Dot1Q(vlan=5) / IP() / UDP(),
        "ipv6": tagged(4095, Raw(b"\x60" + bytes(39))),
    })
    seeds = {k: bytes(v) for k, v in seeds.items()}
    seeds["padded"] = bytes(tagged(200, IP(src="1.1.1.1", dst="2.2.2.2") / UDP())) + bytes(20)
    return seeds


def provider():
    seeds = {f"nvgre_{k}": nvgre(5001, p) for k, p in ip_packets().items()}
    seeds.update({
        "nvgre_pa2_flowid": nvgre(0xFFFFFE, IP() / TCP(), pa=PA2, key_low=0x5A),
        "nvgre_arp": nvgre(6001, ARP(psrc="10.1.1.7", pdst="10.1.1.1")),
        "nvgre_inner_vlan": nvgre(5001, Dot1Q(vlan=3) / IP() / UDP()),
        "nvgre_reserved_vsid": nvgre(0xFFF, IP() / UDP()),
        "outer_fragment": Ether(dst=GW_MAC) / IP(dst=PA1, flags="MF", proto=47) / Raw(bytes(40)),
        "gre_csum": Ether(dst=GW_MAC) / IP(dst=PA1) / GRE(chksum_present=1, proto=0x6558) /
        Ether() / IP(),
        "ping_pa": Ether(dst=GW_MAC) / IP(src="192.168.1.10", dst=PA1) / ICMP(),
        "rewrite": Ether(dst=GW_MAC) / IP(src="192.168.1.30", dst="192.168.1.100") / UDP(),
        "not_nvgre": Ether(dst=GW_MAC) / IP(dst=PA2) / UDP(),
        "arp_pa": Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.1.10", pdst=PA1),
        "other_mac": Ether(dst="02:00:00:00:00:01") / IP(dst=PA1) / ICMP(),
    })
    seeds = {k: bytes(v) for k, v in seeds.items()}
    qinq = bytearray(seeds["nvgre_inner_vlan"])
    qinq[54:56] = b"\x88\xa8"          # the inner EtherType: 802.1ad
    seeds["nvgre_inner_qinq"] = bytes(qinq)
    seeds["nvgre_padded"] = bytes(nvgre(5002, IP(src="10.1.2.5") / UDP())) + bytes(12)
    bad = bytearray(seeds["ping_pa"])
    bad[24] ^= 0x55                     # outer checksum
    seeds["bad_outer_checksum"] = bytes(bad)
    return seeds


def addr(s):
    return socket.inet_aton(s)


def encap():
    # VSID (3 bytes, fuzz_frame.c maps it to 4096 + n), PA dst, PA src,
    # FlowID mode (odd: hashed), fixed FlowID.
    seeds = {}
    for i, (k, p) in enumerate(ip_packets().items()):
        vsid = (5001 - 4096 + i * 977) & 0xFFFFFF
        params = (struct.pack(">I", vsid)[1:] + addr("192.168.1.10") + addr(PA1) +
                  bytes([i & 1, i * 37 & 0xFF]))
        seeds[k] = params + bytes(p)
    seeds["padded_inner"] = seeds["udp"] + bytes(6)
    return seeds


def rewrite():
    # New source, new destination, then the packet. Packets from the fabric
    # (PA -> PA) become CA -> CA and back; the quoted packets of ICMP errors
    # mirror the outer addresses, so they are rewritten too.
    seeds = {}
    for k, p in ip_packets().items():
        seeds[f"in_{k}"] = addr("192.168.1.30") + addr("10.1.1.9") + bytes(p)
        seeds[f"out_{k}"] = addr("192.168.1.100") + addr("192.168.1.30") + bytes(p)
    seeds["same_addresses"] = addr("10.1.1.7") + addr("172.16.1.10") + bytes(ip_packets()["tcp"])
    seeds["padded_udp"] = seeds["in_udp"] + bytes(10)
    return seeds


def route():
    # Programs of 8-byte steps (op, domain, address, length, 0): nested routes
    # on both sides of the /16 and /24 filters, queries at and near them,
    # then deletes (fuzz_frame.c, ENTRY_ROUTE).
    def step(op, rd, a, length=0):
        return bytes([op, rd]) + addr(a) + bytes([length, 0])
    add, dele, query, near = 0, 1, 2, 3
    nested = [step(add, 0, "0.0.0.0", 0), step(add, 0, "10.0.0.0", 8),
              step(add, 0, "10.20.16.0", 20), step(add, 0, "10.20.16.64", 26),
              step(add, 0, "10.20.16.70", 32), step(add, 1, "10.20.16.0", 24)]
    queries = [step(query, 0, a) for a in ("10.20.16.70", "10.20.16.71", "10.20.17.1",
                                           "10.20.32.1", "10.99.0.1", "8.8.4.4")]
    return {"nested": b"".join(nested + queries),
            "deletes": b"".join(nested + queries + [step(dele, 0, "10.20.16.70", 32),
                                                    step(dele, 0, "10.20.16.64", 26)] +
                                queries),
            "near": b"".join(nested + [step(near, i, "0.0.1.255") for i in range(6)]),
            # and some mixed programs over all four domains and lengths
            **{f"mixed{k}": mixed(random.Random(k)) for k in range(8)}}


def mixed(rnd):
    steps = b""
    for _ in range(24):
        op = rnd.choice((0, 0, 0, 1, 2, 3, 3))
        a = bytes([10, rnd.randrange(4), rnd.randrange(256), rnd.randrange(256)])
        steps += bytes([op, rnd.randrange(4)]) + a + bytes([rnd.choice((0, 8, 16, 20, 24,
                                                                         26, 30, 32)), 0])
    return steps


def htab():
    # Programs of 4-byte steps (op, key bytes, value) for fuzz_frame.c's
    # ENTRY_HTAB: fill the 16-key table past its home buckets, delete, let
    # grace periods pass, refill, look up; markers asked to be keys.
    set_, delete, grace, look = 0, 1, 2, 3

    def step(op, k, v=0):
        return bytes([op, k & 7, k >> 3, v])
    fill = [step(set_, k, k) for k in range(17)]          # the 17th is refused
    every = [step(look, k) for k in range(64)]
    churn = [step(delete, k) for k in range(0, 16, 2)] + [step(grace, 0)] + \
        [step(set_, k, 99) for k in range(32, 40)] + [step(delete, k) for k in range(1, 9, 2)]
    seeds = {"fill": b"".join(fill + every),
             "churn": b"".join(fill + churn + every + [step(grace, 0)] + fill + every),
             "markers": b"".join([step(0x80, 1), step(0xC0, 0), step(0xC0, 8), step(0xC1, 16),
                                  step(0x81, 2)] + fill[:4] + every)}
    for k in range(8):
        rnd = random.Random(k)
        seeds[f"mixed{k}"] = bytes(rnd.choice((0, 0, 0, 1, 1, 2, 3)) if i % 4 == 0
                                   else rnd.randrange(256) for i in range(4 * 48))
    return seeds


TARGETS = {"parse_customer": customer, "parse_provider": provider, "encap": encap,
           "rewrite": rewrite, "route": route, "htab": htab,
           "rtab": htab}      # the same programs: ENTRY_RTAB reads them as ENTRY_HTAB does


def main(target, outdir):
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in TARGETS[target]().items():
        (out / name).write_bytes(data)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
