"""Workloads of the nvgw benchmark (scripts/bench.py): policies and packets.

One topology, scaled by the number of lookup records N:

  * D routing domains (N/100 for N <= 10,000, else N/1000), domain `rd` on customer
    VLAN `rd`, with an attachment 172.(16+rd//256).(rd%256).1/24 and one on-premises
    host .10 on it (a static neighbour);
  * two virtual subnets per domain, VSIDs 100000+2rd (10.0.0.0/16) and 100001+2rd
    (10.1.0.0/16), the same prefixes in every domain (overlapping CAs, as in HNV);
  * N/D lookup records per domain, alternately in the two subnets, their PAs spread
    over 1,000 fabric hosts 192.168.1-4.x (static neighbours) for NVGRE records, or
    one PA each in 100.64.0.0/10 (reached through the provider gateway) for IP rewrite
    records; each domain maps its on-premises host to one of our PAs (192.168.200+.x).

Packets pick their records uniformly over all N records (seeded), so a 65,536-packet
pcap touches up to 65,536 distinct records: with N = 1,000,000 the lookups miss the
caches as they would with real tenants. Four directions:

  encap    customer VLAN -> a CA with an NVGRE record (encapsulated to its PA)
  decap    NVGRE from a record's PA (anti-spoofing lookup) -> the domain's on-premises host
  hairpin  NVGRE from a record's PA -> a CA of the domain's other subnet (re-encapsulated)
  rewrite  customer VLAN -> a CA with an IP rewrite record (addresses rewritten)

Frame sizes: "64" makes every customer-side frame 64 bytes as captured (802.1Q tag
included, FCS not: 68 on the wire; the inner IPv4 packet is 46 bytes); NVGRE frames carry
the same inner packet (102 bytes). "imix" is the simple IMIX 7:4:1 of IPv4 packets of 46,
552 and 1500 bytes (customer frames 64, 570 and 1518 bytes as captured). UDP ports vary
per packet (many inner flows).

The TRex profiles in scripts/trex/ build the same base packets on their own (lab machines
have no checkout); tests/test_trex_profiles.py checks that they match these.
"""
from __future__ import annotations

import ipaddress
import json
import random
import struct
from dataclasses import dataclass

PROVIDER_PA = "192.168.0.1"
PROVIDER_GW = "192.168.255.254"
PROVIDER_GW_MAC = "00:15:5d:ff:ff:fe"
HOSTS = 1000
# The gateway's MACs as the benchmark's ports have them: the pcap source is always
# net_pcap0 (02:70:63:61:70:00); attachments and subnet gateways are explicit.
PCAP_PORT_MAC = "02:70:63:61:70:00"
ATTACH_MAC = "02:00:00:00:0a:01"
SUBNET_GW_MAC = "02:00:00:00:0b:01"
HOST_MAC_FMT = "00:15:5d:aa:%02x:%02x"
FABRIC_SRC_MAC = "00:15:5d:fe:00:01"
VSID_BASE = 100_000
IMIX = ((46, 7), (552, 4), (1500, 1))       # IPv4 total length, weight
PROVIDER_MTU = 1600                          # room for a 1500-byte inner packet
KINDS = ("encap", "decap", "hairpin", "rewrite")


def domains(n: int) -> int:
    return max(1, n // 100) if n <= 10_000 else n // 1000


def per_domain(n: int) -> int:
    return n // domains(n)


def vsid(rd: int, sub: int) -> int:
    return VSID_BASE + 2 * rd + sub


def attach_net(rd: int) -> str:
    return f"172.{16 + rd // 256}.{rd % 256}"


def host_ip(rd: int) -> str:
    """The on-premises host of domain rd (on its VLAN)."""
    return f"{attach_net(rd)}.10"


def host_mac(rd: int) -> str:
    return HOST_MAC_FMT % (rd >> 8, rd & 255)


def ca(i: int) -> tuple[int, str]:
    """Record i of a domain: (subnet 0/1, CA)."""
    sub, j = i & 1, i >> 1
    return sub, f"10.{sub}.{j // 250}.{j % 250 + 2}"


def rec_mac(rd: int, i: int) -> str:
    return "00:15:%02x:%02x:%02x:%02x" % (rd >> 8, rd & 255, i >> 8, i & 255)


def host_pa(h: int) -> str:
    h %= HOSTS
    return f"192.168.{1 + h // 250}.{h % 250 + 2}"


def nvgre_pa(n: int, rd: int, i: int, alt: int = 0) -> str:
    """The PA of an NVGRE record (alt=1: where the update benchmark moves it)."""
    return host_pa((rd * per_domain(n) + i) * 7 + alt * 499)


def rewrite_pa(n: int, rd: int, i: int) -> str:
    k = (rd - 1) * per_domain(n) + i
    return str(ipaddress.IPv4Address("100.64.0.0") + k)


def mapped_pa(rd: int) -> str:
    return f"192.168.{200 + rd // 250}.{rd % 250 + 2}"


def record(n: int, rd: int, i: int, method: str = "encap", alt: int = 0) -> dict:
    sub, addr = ca(i)
    pa = nvgre_pa(n, rd, i, alt) if method == "encap" else rewrite_pa(n, rd, i)
    return {"vsid": vsid(rd, sub), "ca": addr, "mac": rec_mac(rd, i), "pa": pa,
            "method": method}


def policy(n: int, method: str = "encap") -> dict:
    """The policy document with n lookup records of one method."""
    doms, records = [], []
    for rd in range(1, domains(n) + 1):
        dom = {"rdid": rd, "name": f"t{rd}",
               "subnets": [{"vsid": vsid(rd, s), "prefix": f"10.{s}.0.0/16",
                            "gateway_mac": SUBNET_GW_MAC} for s in (0, 1)],
               "attachments": [{"vlan": rd, "address": f"{attach_net(rd)}.1/24",
                                "mac": ATTACH_MAC}]}
        if method == "rewrite":
            dom["mappings"] = [{"ca": host_ip(rd), "pa": mapped_pa(rd)}]
        doms.append(dom)
        records += [record(n, rd, i, method) for i in range(per_domain(n))]
    neigh = [{"ip": host_pa(h), "mac": "00:15:5d:ff:%02x:%02x" % (h >> 8, h & 255)}
             for h in range(HOSTS)]
    neigh.append({"ip": PROVIDER_GW, "mac": PROVIDER_GW_MAC})
    neigh += [{"vlan": rd, "ip": host_ip(rd), "mac": host_mac(rd)}
              for rd in range(1, domains(n) + 1)]
    return {"provider": {"addresses": [f"{PROVIDER_PA}/16"], "gateway": PROVIDER_GW,
                         "mtu": PROVIDER_MTU},
            "routing_domains": doms, "records": records, "neighbours": neigh}


# -- packets (scapy) -------------------------------------------------------------

@dataclass(frozen=True)
class Pick:
    """One packet's draw: domain, source record, destination record, size, ports."""
    rd: int
    src: int
    dst: int
    ip_len: int
    sport: int
    dport: int


def picks(n: int, kind: str, count: int, size: str = "64", seed: int = 7) -> list[Pick]:
    rng = random.Random(f"{seed}-{n}-{kind}-{size}")
    per = per_domain(n)
    sizes = [46] if size == "64" else [s for s, w in IMIX for _ in range(w)]
    out = []
    for _ in range(count):
        k = rng.randrange(domains(n) * per)            # uniform over all records
        rd, src = 1 + k // per, k % per
        # hairpin: a record of the other subnet (opposite parity) in the same domain
        dst = rng.randrange(per // 2) * 2 + (1 - (src & 1)) if kind == "hairpin" else src
        out.append(Pick(rd, src, dst, rng.choice(sizes), rng.randrange(1024, 65536),
                        rng.choice((53, 80, 443, 4789, 8080))))
    return out


def inner_ip(src: str, dst: str, p: Pick, ttl: int = 64):
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    return IP(src=src, dst=dst, ttl=ttl, id=p.sport & 0xFFFF) / \
        UDP(sport=p.sport, dport=p.dport) / Raw(b"\x00" * (p.ip_len - 28))


def customer_frame(p: Pick, dst_ca: str):
    from scapy.layers.l2 import Dot1Q, Ether
    return Ether(src=host_mac(p.rd), dst=ATTACH_MAC) / Dot1Q(vlan=p.rd) / \
        inner_ip(host_ip(p.rd), dst_ca, p)


def nvgre_frame(n: int, p: Pick, inner_dst: str):
    from scapy.layers.inet import GRE, IP
    from scapy.layers.l2 import Ether
    sub, src_ca = ca(p.src)
    return Ether(src=FABRIC_SRC_MAC, dst=PCAP_PORT_MAC) / \
        IP(src=nvgre_pa(n, p.rd, p.src), dst=PROVIDER_PA, flags="DF", ttl=64, id=0) / \
        GRE(key_present=1, proto=0x6558, key=vsid(p.rd, sub) << 8) / \
        Ether(src=rec_mac(p.rd, p.src), dst=SUBNET_GW_MAC) / inner_ip(src_ca, inner_dst, p)


def frame(n: int, kind: str, p: Pick):
    """The scapy packet of one draw."""
    if kind in ("encap", "rewrite"):
        return customer_frame(p, ca(p.dst)[1])
    if kind == "decap":
        return nvgre_frame(n, p, host_ip(p.rd))
    if kind == "hairpin":
        return nvgre_frame(n, p, ca(p.dst)[1])
    raise ValueError(kind)


def write_pcap(path, frames) -> None:
    """A classic pcap (microsecond timestamps, Ethernet) of raw frames."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, b in enumerate(frames):
            f.write(struct.pack("<IIII", i // 1_000_000, i % 1_000_000, len(b), len(b)))
            f.write(b)


def read_pcap(path):
    """Frames of a classic pcap (either byte order, any timestamp resolution)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8:off + 12])[0]
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl


def write_policy(path, n: int, method: str = "encap") -> None:
    with open(path, "w") as f:
        json.dump(policy(n, method), f)


# -- the same frames without scapy (scapy takes ~1.5 ms a frame; a pcap has 65,536) ---------

def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def _ip4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, total: int, ttl: int, ident: int,
          df: bool) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000 if df else 0, ttl, proto, 0,
                    src, dst)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:]


def _inner_raw(src: str, dst: str, p: Pick) -> bytes:
    s, d = _ip4(src), _ip4(dst)
    payload = b"\x00" * (p.ip_len - 28)
    ulen = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", p.sport, p.dport, ulen, 0) + payload
    c = _csum(pseudo + udp + (b"\x00" if len(udp) & 1 else b"")) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return _ipv4(s, d, 17, p.ip_len, 64, p.sport & 0xFFFF, False) + udp


def frame_bytes(n: int, kind: str, p: Pick) -> bytes:
    """bytes(frame(n, kind, p)), built directly (checked against scapy by the tests)."""
    if kind in ("encap", "rewrite"):
        return (_mac(ATTACH_MAC) + _mac(host_mac(p.rd)) + struct.pack("!HHH", 0x8100, p.rd, 0x0800)
                + _inner_raw(host_ip(p.rd), ca(p.dst)[1], p))
    sub, src_ca = ca(p.src)
    dst = host_ip(p.rd) if kind == "decap" else ca(p.dst)[1]
    inner = _mac(SUBNET_GW_MAC) + _mac(rec_mac(p.rd, p.src)) + b"\x08\x00" + \
        _inner_raw(src_ca, dst, p)
    gre = struct.pack("!HHI", 0x2000, 0x6558, vsid(p.rd, sub) << 8)
    outer = _ipv4(_ip4(nvgre_pa(n, p.rd, p.src)), _ip4(PROVIDER_PA), 47,
                  20 + len(gre) + len(inner), 64, 0, True)
    return _mac(PCAP_PORT_MAC) + _mac(FABRIC_SRC_MAC) + b"\x08\x00" + outer + gre + inner
