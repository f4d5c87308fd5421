"""Every drop reason of the NVGRE pipeline, one offending packet at a time.

Each case below is one packet that is wrong in exactly one way (a mutation of
a packet that the gateway forwards, see test_base_packets_are_forwarded) and
the one drop counter it must raise. Cases are packed into as few gateway runs
as possible: a run holds at most one case per drop reason, so its drops must
equal exactly {reason of each case: 1, every other reason: 0}. Each run also
checks what left the ports (nothing, except the ARP request or ICMP error the
spec sends for some drops, byte for byte), that every received packet is
accounted for (rx = forwarded + drops + exceptions) and that the mempool got
every mbuf back. When a run does not match, each of its cases is run alone to
name the packet that went wrong.

Reasons no test here triggers, on purpose:
  tx_full         net_pcap's tx burst writes every packet to its file and never
                  refuses one, so a TX queue cannot fill up.
  no_headroom     every RX mbuf has RTE_PKTMBUF_HEADROOM (128) bytes in front
                  of the frame and the pipeline prepends at most 38 (customer
                  frame -> NVGRE), so the prepend cannot fail.
  exception_full  needs the 4096-entry exception ring full, i.e. the exception
                  thread falling more than 4095 punted packets behind the
                  worker: a race, not something one packet can show.
  dist_full       needs a 1024-entry hand-over ring between two workers full:
                  the owner falling behind the receiving worker, again a race.
  no_tx_port      the config allows exactly one provider and one customer port
                  in nvgre mode, and forward mode pairs every port.
  stopped         packets in flight between workers at a stop: test_workers.py
                  shows them counted.
no_policy is triggered (no provider in the policy yet); multi_segment too: a
frame longer than an mbuf's 2048-byte data room arrives from net_pcap as a chain.

truncated vs bad_ip_header, as classify_provider/classify_customer decide: a frame
shorter than its Ethernet (customer: Ethernet + 802.1Q) header, or an outer IPv4
total length that leaves no room for GRE + inner Ethernet, is truncated; an IPv4
header (outer or inner) that is cut short, has version != 4, ihl < 5 or a total
length beyond the bytes there is bad_ip_header. The four bad_ip_header cases below
cover those four conditions of nvgw_ipv4_ok.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether, GRE
from scapy.packet import Raw

from dataplane._dataplane import DROP_REASONS
from harness import GatewayProcess, PcapPort
from nvgw_helpers import assert_packets, expected_customer, expected_encap

PMAC = "02:70:63:61:70:00"          # provider (fabric) port, index 0
CMAC = "02:70:63:61:70:01"          # customer (tenants) port, index 1
FABRIC_PEER = "00:15:5d:00:00:10"   # MAC of the host with PA 192.168.1.10
OTHER_MAC = "02:00:00:00:99:99"
PA = "192.168.1.1"
HOST_PA = "192.168.1.10"
BLUE_CA = "10.1.1.7"
BLUE_CA_MAC = "00:15:5d:b1:00:07"
HOST = "172.16.1.10"                # customer host on VLAN 100
HOST_MAC = "02:00:00:00:01:10"
ATTACH = "172.16.1.1"
MTU = 1500
BIG = MTU - 42 + 1                  # smallest inner IPv4 length that does not fit

REWRITE_PA = "192.168.1.30"         # Blue's rewritten VM 10.1.1.9
RED_MAPPED_PA = "192.168.1.101"     # ours, standing for Red's host 172.16.2.10 (IP rewrite)

POLICY = {
    "provider": {"addresses": [f"{PA}/24"], "mtu": MTU},
    "routing_domains": [
        {"rdid": 1, "name": "blue",
         "subnets": [{"vsid": 5001, "prefix": "10.1.1.0/24"},
                     {"vsid": 5002, "prefix": "10.1.2.0/24"}],
         "attachments": [{"vlan": 100, "address": f"{ATTACH}/24"}]},
        {"rdid": 2, "name": "red",
         "subnets": [{"vsid": 6001, "prefix": "10.1.1.0/24"}],
         "attachments": [{"vlan": 200, "address": "172.16.2.1/24"}],
         "mappings": [{"ca": "172.16.2.10", "pa": RED_MAPPED_PA}]},
    ],
    "records": [
        {"vsid": 5001, "ca": BLUE_CA, "mac": BLUE_CA_MAC, "pa": HOST_PA, "method": "encap"},
        {"vsid": 6001, "ca": "10.1.1.7", "mac": "00:15:5d:7e:00:07", "pa": "192.168.1.11",
         "method": "encap"},
        {"vsid": 5002, "ca": "10.1.2.5", "mac": "00:15:5d:b2:00:05", "pa": HOST_PA,
         "method": "encap"},
        # a rewritten VM; the customer host has no rewrite mapping in Blue
        {"vsid": 5001, "ca": "10.1.1.9", "mac": "00:15:5d:b1:00:09", "pa": REWRITE_PA,
         "method": "rewrite"},
        # a PA on our subnet with no neighbour entry: the gateway must ARP for it
        {"vsid": 5001, "ca": "10.1.1.20", "mac": "00:15:5d:b1:00:20", "pa": "192.168.1.20",
         "method": "encap"},
    ],
    "neighbours": [
        {"ip": HOST_PA, "mac": FABRIC_PEER},
        {"ip": "192.168.1.11", "mac": "00:15:5d:00:00:11"},
        {"vlan": 100, "ip": HOST, "mac": HOST_MAC},
        {"vlan": 200, "ip": "172.16.2.10", "mac": "02:00:00:00:02:10"},
    ],
}

TABLES = "[tables]\nrecords = 4096\nroutes = 4096\nneighbours = 1024\n"


def body(policy_path: Path | None) -> str:
    pol = f'policy = "{policy_path}"\n' if policy_path else ""
    return f'[pipeline]\nmode = "nvgre"\n{pol}{TABLES}'


# -- packet builders ----------------------------------------------------------------

def inner_ip(src=BLUE_CA, dst=HOST, size=None, ttl=64, **ip):
    """An inner IPv4/UDP packet; `size` = its IPv4 total length."""
    pad = 18 if size is None else size - 28
    return IP(src=src, dst=dst, ttl=ttl, **ip) / UDP(sport=4000, dport=5000) / Raw(b"\xab" * pad)


def nvgre(inner=None, vsid=5001, src_pa=HOST_PA, dst_pa=PA, dst=PMAC, inner_dst=PMAC,
          inner_src=BLUE_CA_MAC, inner_type=None, gre=None, outer=None):
    """A fabric frame: NVGRE from `src_pa` carrying `inner` (an L3 packet)."""
    inner = inner_ip() if inner is None else inner
    ieth = Ether(dst=inner_dst, src=inner_src)
    if inner_type is not None:
        ieth.type = inner_type
    g = gre if gre is not None else GRE(key_present=1, proto=0x6558, key=vsid << 8)
    o = outer if outer is not None else IP(src=src_pa, dst=dst_pa, proto=47, flags="DF")
    return Ether(dst=dst, src=FABRIC_PEER) / o / g / ieth / inner


def tagged(ip_pkt=None, vlan=100, dst=CMAC, src=HOST_MAC):
    """A customer frame on `vlan`, sent by the host 172.16.1.10."""
    ip_pkt = inner_ip(src=HOST, dst=BLUE_CA) if ip_pkt is None else ip_pkt
    return Ether(dst=dst, src=src) / Dot1Q(vlan=vlan) / ip_pkt


def with_ip_field(frame: bytes, l3: int, **changes) -> bytes:
    """Raw-patch the IPv4 header at byte offset l3 (no checksum fix-up)."""
    b = bytearray(frame)
    if "version_ihl" in changes:
        b[l3] = changes["version_ihl"]
    if "total_length" in changes:
        b[l3 + 2:l3 + 4] = changes["total_length"].to_bytes(2, "big")
    return bytes(b)


def resign(frame: bytes, l3: int) -> bytes:
    """Recompute the IPv4 header checksum at l3 (ihl from the header)."""
    b = bytearray(frame)
    hl = (b[l3] & 0xF) * 4
    b[l3 + 10:l3 + 12] = b"\0\0"
    s = sum(int.from_bytes(b[l3 + i:l3 + i + 2], "big") for i in range(0, hl, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[l3 + 10:l3 + 12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def bad_outer_checksum() -> bytes:
    good = IP(bytes(nvgre()[IP])).chksum          # what scapy computes
    return bytes(nvgre(outer=IP(src=HOST_PA, dst=PA, proto=47, flags="DF",
                                chksum=good ^ 0x0101)))


def truncated_inner_eth(padded: bool) -> bytes:
    """GRE whose inner Ethernet header is cut to 10 bytes; the outer total length
    (20 + 8 + 10) matches what is there. Padded: link padding to 60 bytes after it."""
    frame = bytes(Ether(dst=PMAC, src=FABRIC_PEER)
                  / IP(src=HOST_PA, dst=PA, proto=47, flags="DF")
                  / GRE(key_present=1, proto=0x6558, key=5001 << 8)
                  / Raw(bytes(Ether(dst=PMAC, src=BLUE_CA_MAC))[:10]))
    assert len(frame) == 14 + 20 + 8 + 10
    return frame + b"\0" * (60 - len(frame)) if padded else frame


def arp_request(tip, vlan=None) -> bytes:
    """The gateway's ARP request for an unresolved next hop."""
    if vlan is None:
        return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=PMAC)
                     / ARP(op=1, hwsrc=PMAC, psrc=PA, hwdst="00:00:00:00:00:00", pdst=tip))
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CMAC) / Dot1Q(vlan=vlan)
                 / ARP(op=1, hwsrc=CMAC, psrc=ATTACH, hwdst="00:00:00:00:00:00", pdst=tip))


def frag_needed(orig_frame: bytes) -> bytes:
    """ICMP 3/4 the gateway sends back for a DF customer frame over the MTU."""
    orig_ip = orig_frame[18:]
    quote = orig_ip[:(orig_ip[0] & 0xF) * 4 + 8]
    return bytes(Ether(dst=HOST_MAC, src=CMAC) / Dot1Q(vlan=100)
                 / IP(src=ATTACH, dst=HOST, ttl=64, id=0, flags=0, tos=0, proto=1)
                 / ICMP(type=3, code=4, unused=0, nexthopmtu=MTU - 42) / Raw(quote))


# -- the cases ------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    port: str                 # "fabric" or "tenants"
    frame: bytes
    reason: str
    out: dict = field(default_factory=dict)   # port -> frames the gateway must send
    exc: dict = field(default_factory=dict)   # exception-thread counters that rise


def F(name, frame, reason, **kw):
    return Case(name, "fabric", bytes(frame), reason, **kw)


def C(name, frame, reason, **kw):
    return Case(name, "tenants", bytes(frame), reason, **kw)


_df_big = bytes(tagged(inner_ip(src=HOST, dst=BLUE_CA, size=BIG, flags="DF")))

CASES = [
    # ---- from the fabric (provider port), in the order classify_provider checks ----
    F("fabric_short_frame", bytes(Ether(dst=PMAC, src=FABRIC_PEER))[:10], "truncated"),
    F("fabric_inner_ether_cut", truncated_inner_eth(padded=False), "truncated"),
    F("fabric_inner_ether_cut_padded", truncated_inner_eth(padded=True), "truncated"),
    F("fabric_jumbo_chain", nvgre(inner_ip(size=2100)), "multi_segment"),
    F("fabric_ipv6", Ether(dst=PMAC, src=FABRIC_PEER) / IPv6(src="fe80::1", dst="fe80::2")
      / UDP(), "not_ipv4"),
    F("fabric_inner_ipv6", nvgre(IPv6(src="fe80::1", dst="fe80::2") / UDP(),
                                  inner_type=0x86DD), "not_ipv4"),
    F("fabric_outer_dst_mac", nvgre(dst=OTHER_MAC), "not_for_gateway"),
    F("fabric_inner_dst_mac", nvgre(inner_dst=OTHER_MAC), "not_for_gateway"),
    F("fabric_outer_version_5", resign(with_ip_field(bytes(nvgre()), 14, version_ihl=0x55), 14),
      "bad_ip_header"),
    # an IPv4 header cut short is bad_ip_header, not truncated (see the module docstring)
    F("fabric_outer_ip_cut", bytes(nvgre())[:14 + 12], "bad_ip_header"),
    F("fabric_inner_total_length_long",
      resign(with_ip_field(bytes(nvgre()), 56, total_length=len(inner_ip()) + 1), 56),
      "bad_ip_header"),
    F("fabric_bad_outer_checksum", bad_outer_checksum(), "bad_outer_checksum"),
    F("fabric_not_our_pa", nvgre(dst_pa="192.168.1.2"), "not_our_pa"),
    F("fabric_udp_to_pa", Ether(dst=PMAC, src=FABRIC_PEER) / IP(src=HOST_PA, dst=PA)
      / UDP(sport=4789, dport=4789) / Raw(b"x" * 40), "not_nvgre"),
    F("fabric_tcp_to_pa", Ether(dst=PMAC, src=FABRIC_PEER) / IP(src=HOST_PA, dst=PA)
      / TCP(sport=1234, dport=179), "not_nvgre"),
    F("fabric_outer_mf", nvgre(outer=IP(src=HOST_PA, dst=PA, proto=47, flags="MF")),
      "outer_fragment"),
    F("fabric_outer_offset", nvgre(outer=IP(src=HOST_PA, dst=PA, proto=47, frag=185)),
      "outer_fragment"),
    F("fabric_gre_checksum_bit",
      nvgre(gre=GRE(chksum_present=1, key_present=1, proto=0x6558, key=5001 << 8)),
      "bad_gre_flags"),
    F("fabric_gre_sequence_bit",
      nvgre(gre=GRE(key_present=1, seqnum_present=1, proto=0x6558, key=5001 << 8,
                    sequence_number=1)),
      "bad_gre_flags"),
    F("fabric_gre_no_key", nvgre(gre=GRE(proto=0x6558)), "bad_gre_flags"),
    F("fabric_gre_version_1", nvgre(gre=GRE(key_present=1, version=1, proto=0x6558,
                                            key=5001 << 8)), "bad_gre_flags"),
    F("fabric_gre_proto_ipv4", nvgre(gre=GRE(key_present=1, proto=0x0800, key=5001 << 8)),
      "not_teb"),
    F("fabric_vsid_0x100", nvgre(vsid=0x000100), "reserved_vsid"),
    F("fabric_vsid_all_ones", nvgre(vsid=0xFFFFFF), "reserved_vsid"),
    F("fabric_vsid_0xfff", nvgre(vsid=0xFFF), "reserved_vsid"),       # last reserved
    F("fabric_unknown_vsid", nvgre(vsid=7777), "unknown_vsid"),
    F("fabric_vsid_0x1000", nvgre(vsid=0x1000), "unknown_vsid"),       # first usable
    F("fabric_inner_dot1q", nvgre(Dot1Q(vlan=5, type=0x0800) / inner_ip(), inner_type=0x8100),
      "inner_vlan"),
    F("fabric_inner_qinq", nvgre(Dot1Q(vlan=5, type=0x0800) / inner_ip(), inner_type=0x88A8),
      "inner_vlan"),
    F("fabric_ca_at_wrong_pa", nvgre(src_pa="192.168.1.99"), "spoofed_pa"),
    F("fabric_ca_without_record", nvgre(inner_ip(src="10.1.1.8")), "spoofed_pa"),
    F("fabric_ca_of_other_vsid", nvgre(vsid=6001), "spoofed_pa"),   # 6001's .7 is at .11
    F("fabric_udp_to_subnet_gateway", nvgre(inner_ip(dst="10.1.1.1")), "not_icmp_to_gateway"),
    F("fabric_inner_ttl_1", nvgre(inner_ip(ttl=1)), "ttl_expired"),
    F("fabric_inner_ttl_0", nvgre(inner_ip(ttl=0)), "ttl_expired"),
    F("fabric_unroutable", nvgre(inner_ip(dst="8.8.8.8")), "no_route"),
    F("fabric_other_domains_vlan",
      nvgre(inner_ip(dst=HOST), vsid=6001, src_pa="192.168.1.11",
            inner_src="00:15:5d:7e:00:07"), "no_route"),
    F("fabric_hairpin_ca_without_record", nvgre(inner_ip(dst="10.1.2.77")), "no_lookup_record"),
    F("fabric_to_unresolved_vlan_host", nvgre(inner_ip(dst="172.16.1.20")), "no_neighbour",
      out={"tenants": [arp_request("172.16.1.20", vlan=100)]}, exc={"arp_requests": 1}),
    F("fabric_hairpin_to_unresolved_pa", nvgre(inner_ip(dst="10.1.1.20")), "no_neighbour",
      out={"fabric": [arp_request("192.168.1.20")]}, exc={"arp_requests": 1}),
    # from the fabric DF means nothing: ICMP errors go only to customer VLANs
    F("fabric_hairpin_too_big_df", nvgre(inner_ip(dst="10.1.2.5", size=BIG, flags="DF")),
      "mtu_exceeded"),
    F("fabric_hairpin_rewrite_record", nvgre(inner_ip(dst="10.1.1.9")), "no_rewrite_mapping"),
    F("fabric_rewrite_cross_domain", Ether(dst=PMAC, src=FABRIC_PEER) /
      IP(src=REWRITE_PA, dst=RED_MAPPED_PA) / UDP(sport=1, dport=2), "rewrite_spoofed"),
    F("fabric_rewrite_unknown_source", Ether(dst=PMAC, src=FABRIC_PEER) /
      IP(src="192.168.1.99", dst=RED_MAPPED_PA) / UDP(sport=1, dport=2), "no_rewrite_mapping"),

    # ---- from a customer VLAN (customer port), in the order classify_customer checks ----
    C("customer_short_frame", bytes(tagged())[:16], "truncated"),
    C("customer_jumbo_chain", tagged(inner_ip(src=HOST, dst=BLUE_CA, size=2100)),
      "multi_segment"),
    C("customer_untagged", Ether(dst=CMAC, src=HOST_MAC) / inner_ip(src=HOST, dst=BLUE_CA),
      "untagged"),
    C("customer_unknown_vlan", tagged(vlan=300), "unknown_vlan"),
    C("customer_priority_tag", tagged(vlan=0), "unknown_vlan"),      # VLAN 0: 802.1p only
    C("customer_ipv6", tagged(IPv6(src="fe80::1", dst="fe80::2") / UDP()), "not_ipv4"),
    C("customer_dst_mac", tagged(dst=OTHER_MAC), "not_for_gateway"),
    C("customer_ihl_4", resign(with_ip_field(bytes(tagged()), 18, version_ihl=0x44), 18),
      "bad_ip_header"),
    C("customer_udp_to_attachment", tagged(inner_ip(src=HOST, dst=ATTACH)),
      "not_icmp_to_gateway"),
    C("customer_ttl_1", tagged(inner_ip(src=HOST, dst=BLUE_CA, ttl=1)), "ttl_expired"),
    C("customer_ttl_0", tagged(inner_ip(src=HOST, dst=BLUE_CA, ttl=0)), "ttl_expired"),
    C("customer_unroutable", tagged(inner_ip(src=HOST, dst="8.8.8.8")), "no_route"),
    C("customer_other_domains_vlan", tagged(inner_ip(src=HOST, dst="172.16.2.10")), "no_route"),
    C("customer_ca_without_record", tagged(inner_ip(src=HOST, dst="10.1.1.8")),
      "no_lookup_record"),
    C("customer_to_unresolved_pa", tagged(inner_ip(src=HOST, dst="10.1.1.20")), "no_neighbour",
      out={"fabric": [arp_request("192.168.1.20")]}, exc={"arp_requests": 1}),
    C("customer_to_unresolved_vlan_host", tagged(inner_ip(src=HOST, dst="172.16.1.20")),
      "no_neighbour", out={"tenants": [arp_request("172.16.1.20", vlan=100)]},
      exc={"arp_requests": 1}),
    C("customer_too_big", tagged(inner_ip(src=HOST, dst=BLUE_CA, size=BIG)), "mtu_exceeded"),
    C("customer_too_big_df", _df_big, "mtu_exceeded",
      out={"tenants": [frag_needed(_df_big)]}, exc={"frag_needed": 1}),
    C("customer_to_rewrite_record", tagged(inner_ip(src=HOST, dst="10.1.1.9")),
      "no_rewrite_mapping"),
]

REASONS_TRIGGERED = {c.reason for c in CASES} | {"no_policy"}
NOT_TRIGGERABLE = {"tx_full", "no_headroom", "exception_full", "dist_full", "no_tx_port",
                   "stopped"}


def rounds(cases):
    """Pack cases into runs with at most one case per drop reason each."""
    out: list[list[Case]] = []
    for c in cases:
        for r in out:
            if all(x.reason != c.reason for x in r):
                r.append(c)
                break
        else:
            out.append([c])
    return out


ROUNDS = rounds(CASES)


# -- running -----------------------------------------------------------------------------

def write_policy(tmp_path: Path, policy=POLICY) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


def run(tmp_path: Path, fabric: list, tenants: list, policy=POLICY):
    """One gateway run; returns (final counters, live counters before stop, sent)."""
    pol = write_policy(tmp_path, policy) if policy is not None else None
    ports = [PcapPort("fabric", "provider", fabric), PcapPort("tenants", "customer", tenants)]
    gw = GatewayProcess(tmp_path, ports, body(pol)).start()
    try:
        for p in ports:
            if p.packets:
                gw.wait_rx(p.name, len(p.packets))
        live = gw.counters()                 # after the waits: every port is idle
    finally:
        rc = gw.stop()
    assert rc == 0, f"gateway exited {rc}:\n{gw.stderr}"
    return gw.final_counters(), live, {p.name: gw.sent(p.name) for p in ports}


def nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v}


@pytest.fixture(scope="module")
def idle_in_use(tmp_path_factory):
    """mbufs in use by an idle gateway with this policy (net_pcap prefills nothing)."""
    _final, live, _sent = run(tmp_path_factory.mktemp("idle"), [], [])
    return live["mempool"]["in_use"]


def check_accounting(final: dict, live: dict, idle: int, sent: dict) -> None:
    for p in final["ports"]:            # forwarded and injected frames, as sent
        assert (p["tx_pkts"], p["tx_bytes"]) == \
            (len(sent[p["name"]]), sum(len(f) for f in sent[p["name"]])), p
    rx = sum(p["rx_pkts"] for p in final["ports"])
    tx = sum(p["tx_pkts"] for p in final["ports"])
    exc = final["exceptions"]
    assert exc["inject_full"] == 0
    injected = exc["arp_replies"] + exc["arp_requests"] + exc["echo_replies"] + exc["frag_needed"]
    forwarded = tx - injected
    worker_exc = sum(w["exceptions"] for w in final["workers"])
    assert rx == forwarded + sum(final["drops"].values()) + worker_exc, \
        (rx, forwarded, nonzero(final["drops"]), worker_exc)
    assert live["mempool"]["in_use"] == idle, (live["mempool"], idle)
    assert final["mempool"]["in_use"] == idle, (final["mempool"], idle)


def outcome(tmp_path: Path, cases: list[Case]):
    return run(tmp_path, [c.frame for c in cases if c.port == "fabric"],
               [c.frame for c in cases if c.port == "tenants"])


def diagnose(tmp_path: Path, cases: list[Case]) -> str:
    """Run each case alone: which packet raised which counters and sent what."""
    lines = []
    for i, c in enumerate(cases):
        final, _live, sent = outcome(tmp_path / f"alone{i}", [c])
        lines.append(f"  {c.name} ({c.port}, {len(c.frame)} B) expected {c.reason}: "
                     f"drops {nonzero(final['drops'])}, exceptions "
                     f"{nonzero(final['exceptions'])}, workers' exceptions "
                     f"{sum(w['exceptions'] for w in final['workers'])}, "
                     f"sent {{{', '.join(f'{k}: {len(v)}' for k, v in sent.items())}}}\n"
                     f"    frame {c.frame.hex()}")
    return "\n".join(lines)


# -- tests ------------------------------------------------------------------------------

def test_cases_cover_every_reason():
    names = {n for n, _ in DROP_REASONS}
    assert REASONS_TRIGGERED | NOT_TRIGGERABLE == names, \
        names ^ (REASONS_TRIGGERED | NOT_TRIGGERABLE)
    assert not REASONS_TRIGGERED & NOT_TRIGGERABLE
    assert len({c.name for c in CASES}) == len(CASES)


def test_base_packets_are_forwarded(tmp_path, idle_in_use):
    """The packets the cases mutate are good: unchanged, none is dropped."""
    fabric = [nvgre(), nvgre(inner_ip(dst="10.1.2.5")), nvgre(inner_ip(dst="10.1.2.5",
                                                                      size=BIG - 1, flags="DF"))]
    tenants = [tagged(), tagged(inner_ip(src=HOST, dst=BLUE_CA, size=BIG - 1, flags="DF"))]
    final, live, sent = run(tmp_path, fabric, tenants)
    assert nonzero(final["drops"]) == {}
    assert nonzero(final["exceptions"]) == {}
    # fabric -> VLAN 100; 2 hairpins to 10.1.2.5 (VSID 5002) + 2 encapsulations to Blue
    assert_packets(sent["tenants"], [expected_customer(fabric[0][GRE].payload[IP], vlan=100,
                                                       dst_mac=HOST_MAC)])
    hairpin = dict(vsid=5002, pa=HOST_PA, ca_mac="00:15:5d:b2:00:05", fabric_mac=FABRIC_PEER,
                   src_pa=PA)
    encap = dict(vsid=5001, pa=HOST_PA, ca_mac=BLUE_CA_MAC, fabric_mac=FABRIC_PEER, src_pa=PA)
    assert_packets(sent["fabric"], [expected_encap(f[GRE].payload[IP], **hairpin)
                                    for f in fabric[1:]] +
                   [expected_encap(t[IP], **encap) for t in tenants])
    check_accounting(final, live, idle_in_use, sent)


@pytest.mark.parametrize("cases", ROUNDS,
                         ids=[f"run{i}-{len(r)}pkts" for i, r in enumerate(ROUNDS)])
def test_each_offending_packet_raises_only_its_counter(tmp_path, idle_in_use, cases):
    final, live, sent = outcome(tmp_path, cases)
    expected_drops = {c.reason: 1 for c in cases}
    expected_out = {"fabric": [], "tenants": []}
    expected_exc: dict = {}
    for c in cases:
        for port, frames in c.out.items():
            expected_out[port] += frames
        for k, v in c.exc.items():
            expected_exc[k] = expected_exc.get(k, 0) + v
    ok = (nonzero(final["drops"]) == expected_drops
          and nonzero(final["exceptions"]) == expected_exc
          and all(sorted(sent[p]) == sorted(expected_out[p]) for p in expected_out))
    if not ok:
        pytest.fail(f"drops {nonzero(final['drops'])} != {expected_drops}, "
                    f"exceptions {nonzero(final['exceptions'])} vs {expected_exc}, "
                    f"sent {{fabric: {len(sent['fabric'])}, tenants: {len(sent['tenants'])}}}"
                    f" vs {{fabric: {len(expected_out['fabric'])}, "
                    f"tenants: {len(expected_out['tenants'])}}}\n"
                    f"each case alone:\n{diagnose(tmp_path, cases)}")
    # nothing was answered or forwarded, nothing was encapsulated
    assert sum(w["exceptions"] for w in final["workers"]) == 0
    assert all(v["encap_pkts"] == 0 for v in final["vsids"].values()), final["vsids"]
    rx = {p["name"]: p["rx_pkts"] for p in final["ports"]}
    assert rx == {"fabric": sum(c.port == "fabric" for c in cases),
                  "tenants": sum(c.port == "tenants" for c in cases)}
    check_accounting(final, live, idle_in_use, sent)


def test_no_provider_means_no_policy(tmp_path, idle_in_use):
    """Before any provider is set (no policy), a packet on either port has nowhere to go."""
    final, live, sent = run(tmp_path, [nvgre()], [tagged()], policy=None)
    assert nonzero(final["drops"]) == {"no_policy": 2}
    assert sent == {"fabric": [], "tenants": []}
    assert nonzero(final["exceptions"]) == {}
    check_accounting(final, live, idle_in_use, sent)
