"""TRex STL streams for the nvgw benchmark workloads (lab use with a hardware generator).

Self-contained (scapy and trex_stl_lib only; lab machines have no nvgw checkout): the
topology formulas below repeat scripts/bench_workloads.py, and tests/test_trex_profiles.py
checks that every profile's base packets are byte for byte the benchmark's.

Each stream's base packet is one of the benchmark's draws (same seeds); the field engine
then varies, per packet, what the gateway's policy still accepts:

  encap, rewrite   the customer VLAN (routing domain), the destination subnet (and so its
                   VSID) and CA, the UDP source port;
  hairpin          the destination CA in the other subnet, the UDP source port;
  decap            the UDP source port.
  (decap/hairpin: anti-spoofing binds the VSID and inner source CA to the outer source PA,
  which no field-engine arithmetic reproduces, so those vary across streams: `streams`
  base packets, each a different record, VSID and PA. With the default 4 streams decap
  touches 4 records: for the million-record workload give thousands (-t streams=4096),
  or replay the benchmark's own decap pcap with STLProfile.load_pcap.)

Load the policy the benchmark generates (`scripts/bench.py` writes policy-*.json to its
work directory) into the gateway; point the generator at its customer port (encap,
rewrite) or provider port (decap, hairpin); set PCAP_PORT_MAC to the provider port's MAC.
"""
from __future__ import annotations

import ipaddress
import random

from scapy.layers.inet import GRE, IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

PROVIDER_PA = "192.168.0.1"
PCAP_PORT_MAC = "02:70:63:61:70:00"
ATTACH_MAC = "02:00:00:00:0a:01"
SUBNET_GW_MAC = "02:00:00:00:0b:01"
FABRIC_SRC_MAC = "00:15:5d:fe:00:01"
VSID_BASE = 100_000
HOSTS = 1000
IMIX = ((46, 7), (552, 4), (1500, 1))


def domains(n):
    return max(1, n // 100) if n <= 10_000 else n // 1000


def per_domain(n):
    return n // domains(n)


def vsid(rd, sub):
    return VSID_BASE + 2 * rd + sub


def host_ip(rd):
    return f"172.{16 + rd // 256}.{rd % 256}.10"


def host_mac(rd):
    return "00:15:5d:aa:%02x:%02x" % (rd >> 8, rd & 255)


def ca(i):
    sub, j = i & 1, i >> 1
    return sub, f"10.{sub}.{j // 250}.{j % 250 + 2}"


def rec_mac(rd, i):
    return "00:15:%02x:%02x:%02x:%02x" % (rd >> 8, rd & 255, i >> 8, i & 255)


def host_pa(h):
    h %= HOSTS
    return f"192.168.{1 + h // 250}.{h % 250 + 2}"


def nvgre_pa(n, rd, i):
    return host_pa((rd * per_domain(n) + i) * 7)


def draws(n, kind, count, size="64", seed=7):
    """(rd, src, dst, ip_len, sport, dport) as the benchmark draws them."""
    rng = random.Random(f"{seed}-{n}-{kind}-{size}")
    per = per_domain(n)
    sizes = [46] if size == "64" else [s for s, w in IMIX for _ in range(w)]
    out = []
    for _ in range(count):
        k = rng.randrange(domains(n) * per)
        rd, src = 1 + k // per, k % per
        dst = rng.randrange(per // 2) * 2 + (1 - (src & 1)) if kind == "hairpin" else src
        out.append((rd, src, dst, rng.choice(sizes), rng.randrange(1024, 65536),
                    rng.choice((53, 80, 443, 4789, 8080))))
    return out


def _inner(src, dst, ip_len, sport, dport):
    return IP(src=src, dst=dst, ttl=64, id=sport & 0xFFFF) / UDP(sport=sport, dport=dport) / \
        Raw(b"\x00" * (ip_len - 28))


def base_packet(n, kind, d):
    rd, src, dst, ip_len, sport, dport = d
    if kind in ("encap", "rewrite"):
        return Ether(src=host_mac(rd), dst=ATTACH_MAC) / Dot1Q(vlan=rd) / \
            _inner(host_ip(rd), ca(dst)[1], ip_len, sport, dport)
    sub, src_ca = ca(src)
    inner_dst = host_ip(rd) if kind == "decap" else ca(dst)[1]
    return Ether(src=FABRIC_SRC_MAC, dst=PCAP_PORT_MAC) / \
        IP(src=nvgre_pa(n, rd, src), dst=PROVIDER_PA, flags="DF", ttl=64, id=0) / \
        GRE(key_present=1, proto=0x6558, key=vsid(rd, sub) << 8) / \
        Ether(src=rec_mac(rd, src), dst=SUBNET_GW_MAC) / \
        _inner(src_ca, inner_dst, ip_len, sport, dport)


def field_engine(api, n, kind, pkt):
    """Per-packet variation (see the module text); IPv4 and UDP checksums fixed by the
    engine (STLVmFixChecksumHw: the NIC, or TRex in software)."""
    per = per_domain(n)
    ip = _inner_ip_offset(pkt)
    vars_ = [api.STLVmFlowVar(name="sport", min_value=1024, max_value=65535, size=2,
                              op="random")]
    writes = [api.STLVmWrFlowVar(fv_name="sport", pkt_offset=ip + 20)]
    lo = api.STLVmFlowVar(name="lo", min_value=2, max_value=min(251, per // 2 + 1), size=1,
                          op="random")
    if kind in ("encap", "rewrite"):
        # VLAN = routing domain; destination 10.<sub>.<hi>.<lo>: every (sub, hi, lo) is a
        # record of every domain. Rewrite also needs the domain's mapped on-premises host
        # 172.<16 + rd // 256>.<rd % 256>.10 as the source.
        vars_ += [api.STLVmFlowVar(name="vlan", min_value=1, max_value=domains(n), size=2,
                                   op="random"),
                  api.STLVmFlowVar(name="sub", min_value=0, max_value=1, size=1, op="random"),
                  api.STLVmFlowVar(name="hi", min_value=0, max_value=max(0, per // 500 - 1),
                                   size=1, op="random"), lo]
        writes += [api.STLVmWrMaskFlowVar(fv_name="vlan", pkt_offset=14, pkt_cast_size=2,
                                          mask=0x0FFF),
                   api.STLVmWrFlowVar(fv_name="sub", pkt_offset=ip + 17),
                   api.STLVmWrFlowVar(fv_name="hi", pkt_offset=ip + 18),
                   api.STLVmWrFlowVar(fv_name="lo", pkt_offset=ip + 19)]
        if kind == "rewrite":   # source octets 2 and 3: 16 + rd // 256, rd % 256
            writes.append(api.STLVmWrMaskFlowVar(fv_name="vlan", pkt_offset=ip + 13,
                                                 pkt_cast_size=2, mask=0xFFFF,
                                                 add_value=16 << 8))
    elif kind == "hairpin":
        vars_.append(lo)
        writes.append(api.STLVmWrFlowVar(fv_name="lo", pkt_offset=ip + 19))
    fix = api.STLVmFixChecksumHw(l3_offset=ip, l4_offset=ip + 20,
                                 l4_type=api.CTRexVmInsFixHwCs.L4_TYPE_UDP)
    fix.l2_len = ip     # trex-stl-lib derives it from a layer name only, else leaves 0
    writes.append(fix)
    return api.STLScVmRaw(vars_ + writes)


def _inner_ip_offset(pkt):
    """Byte offset of the routed (innermost) IPv4 header."""
    raw = bytes(pkt)
    if raw[12:14] == b"\x81\x00":
        return 18
    return 14 + 20 + 8 + 14


class NvgwProfile:
    kind = "encap"

    def streams(self, api, records=1000, streams=4, size="64", pps=1_000_000):
        out = []
        for d in draws(records, self.kind, streams, size):
            pkt = base_packet(records, self.kind, d)
            vm = field_engine(api, records, self.kind, pkt)
            out.append(api.STLStream(packet=api.STLPktBuilder(pkt=pkt, vm=vm),
                                     mode=api.STLTXCont(pps=pps / streams)))
        return out

    def get_streams(self, direction=0, records=1000, streams=4, size="64", **kwargs):
        """TRex calls this (tunables: -t records=1000000,streams=16,size=imix; TRex
        passes size=64 as a number)."""
        from trex_stl_lib import api
        return self.streams(api, int(records), int(streams), str(size))
