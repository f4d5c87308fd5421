"""IP rewrite (HNV TranslationMethodNat) on the wire, issue 4's "Done when".

Blue and Red both have a VM at CA 10.1.1.7 reached by IP rewrite (Blue's at
PA 192.168.1.20, Red's at 192.168.1.21) and an NVGRE VM at 10.1.1.8 (host PAs
.10 / .11) in the same gateway. Each domain maps its on-premises host to one of
our PAs (Blue 172.16.1.10 -> 192.168.1.100, Red 172.16.2.10 -> 192.168.1.101).

  VLAN host -> rewrite VM:  src host CA -> our mapped PA, dst VM CA -> VM PA, TTL-1,
                            Ether(provider MAC -> VM PA's static neighbour MAC).
  rewrite VM -> VLAN host:  src VM PA -> VM CA, dst mapped PA -> host CA, then routed
                            to the VLAN like a decapsulated packet (TTL-1).

Checksums are updated incrementally by the gateway; every forwarded frame is
checked two ways: (a) scapy, given the gateway's output with every checksum field
deleted (outer IP, TCP/UDP, ICMP, and the quoted IPerror/UDPerror/TCPerror of an
ICMP error: scapy 2.8 recomputes those from the quoted IP header, whose total
length covers the quote when it is complete), rebuilds the same bytes; (b) the
output equals an expected packet built independently with scapy from the wire
rules (checksums left to scapy). A UDP checksum of 0 ("none") is kept as 0 in
both; a quote cut after 8 bytes of UDP, or quoting a first fragment, keeps its quoted
UDP checksum field (scapy would checksum the quote as if it were the whole datagram),
whose value (b) still pins down exactly. Fragments are checked by reassembly instead.

Per-VSID counters: rewrite_out_* for the VM record's VSID toward the fabric,
rewrite_in_* for the source VM's VSID from the fabric; bytes = IP total length;
rewrite_in counts a packet once its PAs are mapped (before routing).
"""
from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.inet import (ICMP, IP, TCP, UDP, IPOption_NOP, UDPerror, defragment,
                               fragment)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import NoPayload, Raw

from nvgw_helpers import (BLUE, BROADCAST, CUSTOMER_MAC, FABRIC, PROVIDER_MAC, RED, TENANTS,
                          VM_CA, Tenant, arp_reply, arp_request, assert_drops, assert_packets,
                          describe, expected_encap, expected_customer, inner_frame_len,
                          nonzero, nvgre_frame, redblue_policy, run_nvgre, udp)

ENCAP_CA = "10.1.1.8"           # an NVGRE VM in each domain, beside the rewritten one
PROBE_MAC, PROBE_IP = "00:15:5d:00:00:77", "192.168.1.77"    # a fabric host that ARPs


@dataclass(frozen=True)
class RwTenant:
    """A domain's rewritten VM (CA VM_CA at `vm_pa`, fabric MAC `vm_pa_mac`) and our
    PA `mapped` that stands for the domain's on-premises host `t.host`."""
    t: Tenant
    vm_pa: str
    vm_pa_mac: str
    mapped: str
    encap_mac: str              # CA MAC of the NVGRE VM ENCAP_CA (at t.pa)

    def up(self, ip):
        """`ip` from the on-premises host on this tenant's VLAN."""
        return self.t.up(ip)

    def from_vm(self, ip, src_mac=None):
        """`ip` (PA addressed) arriving from the rewritten VM's host on the fabric."""
        return Ether(dst=PROVIDER_MAC, src=src_mac or self.vm_pa_mac) / ip

    def to_vm(self, ip) -> bytes:
        """Expected on the fabric: `ip` as given (PAs, TTL already decremented)."""
        return bytes(Ether(dst=self.vm_pa_mac, src=PROVIDER_MAC) / ip)

    def to_host(self, ip) -> bytes:
        """Expected on the VLAN: `ip` as given (CAs, TTL already decremented)."""
        return bytes(Ether(dst=self.t.host_mac, src=CUSTOMER_MAC) / Dot1Q(vlan=self.t.vlan) / ip)

    def rw_record(self):
        return {"vsid": self.t.vsid, "ca": VM_CA, "mac": self.t.vm_mac, "pa": self.vm_pa,
                "method": "rewrite"}

    def encap_record(self):
        return {"vsid": self.t.vsid, "ca": ENCAP_CA, "mac": self.encap_mac, "pa": self.t.pa,
                "method": "encap"}


BLUE_RW = RwTenant(BLUE, "192.168.1.20", "00:15:5d:00:00:20", "192.168.1.100",
                   "00:15:5d:b1:00:08")
RED_RW = RwTenant(RED, "192.168.1.21", "00:15:5d:00:00:21", "192.168.1.101",
                  "00:15:5d:7e:00:08")


def rewrite_policy() -> dict:
    """Red/Blue with both 10.1.1.7 VMs rewritten, both 10.1.1.8 VMs encapsulated."""
    pol = redblue_policy()
    for dom, rw in zip(pol["routing_domains"], (BLUE_RW, RED_RW)):
        assert dom["rdid"] == rw.t.rdid
        dom["mappings"] = [{"ca": rw.t.host, "pa": rw.mapped}]
    pol["records"] = [rw.rw_record() for rw in (BLUE_RW, RED_RW)] + \
        [rw.encap_record() for rw in (BLUE_RW, RED_RW)]
    pol["neighbours"] += [{"ip": rw.vm_pa, "mac": rw.vm_pa_mac} for rw in (BLUE_RW, RED_RW)]
    return pol


# -- checksums ------------------------------------------------------------------


def rebuilt(frame: bytes, keep=()) -> bytes:
    """`frame` rebuilt by scapy with every checksum field deleted (recomputed from
    scratch), except a UDP checksum of 0 (no checksum) and the layers in `keep`."""
    pkt = Ether(frame)
    layer = pkt
    while not isinstance(layer, NoPayload):
        if any(f.name == "chksum" for f in layer.fields_desc) and \
                not isinstance(layer, keep) and \
                not (isinstance(layer, UDP) and layer.chksum == 0):
            layer.chksum = None
        layer = layer.payload
    return bytes(pkt)


def assert_checksums_from_scratch(frames, keep=()):
    for f in frames:
        again = rebuilt(f, keep)
        assert again == f, f"gateway sent {describe(f)}\nscapy recomputes {describe(again)}"


def ones_add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def ones_delta(a: int, b: int) -> int:
    """a - b in 16-bit one's complement (0xFFFF, i.e. -0, reads as 0)."""
    d = ones_add(a, ~b & 0xFFFF)
    return 0 if d == 0xFFFF else d


def l4_checksums(ip_bytes: bytes, l4cls):
    """(checksum in the packet, checksum scapy computes for it from scratch)."""
    p = IP(ip_bytes)
    sent = p[l4cls].chksum
    p[l4cls].chksum = None
    return sent, IP(bytes(p))[l4cls].chksum


def vsid_counters(final, vsid):
    c = final["vsids"][str(vsid)]
    return {k: c[k] for k in ("encap_pkts", "encap_bytes", "decap_pkts", "decap_bytes",
                              "rewrite_out_pkts", "rewrite_out_bytes",
                              "rewrite_in_pkts", "rewrite_in_bytes")}


def traffic(out=(), into=(), encap=(), decap=()):
    """Expected per-VSID counters: rewrite bytes are IP total lengths, encap/decap
    bytes the inner Ethernet frame."""
    return {"encap_pkts": len(encap), "encap_bytes": sum(inner_frame_len(p) for p in encap),
            "decap_pkts": len(decap), "decap_bytes": sum(inner_frame_len(p) for p in decap),
            "rewrite_out_pkts": len(out), "rewrite_out_bytes": sum(len(bytes(p)) for p in out),
            "rewrite_in_pkts": len(into), "rewrite_in_bytes": sum(len(bytes(p)) for p in into)}


# -- 1. overlapping CAs, mixed with NVGRE, both directions, drops, ARP -------------


def test_overlapping_rewrite_vms_mixed_with_encap_both_directions(tmp_path):
    """Blue's and Red's 10.1.1.7 are told apart by the VLAN on the way out and by
    their distinct PAs on the way back; the 10.1.1.8 VMs of the same domains stay
    NVGRE. Cross-domain and unknown PAs are dropped; ARP for a mapped PA is answered."""
    def pkt(src, dst, tag, ttl=64):
        return udp(src, dst, 40000 + len(tag), 8080, tag, id=len(tag), ttl=ttl)

    cases = {}          # tenant -> (up rewrite, down rewrite, up encap, down encap)
    tenants, fabric, exp_fabric, exp_tenants = [], [], [], []
    for rw in (BLUE_RW, RED_RW):
        tag = rw.t.name.encode()
        up_rw = pkt(rw.t.host, VM_CA, tag + b" host to rewritten VM")
        down_rw = pkt(rw.vm_pa, rw.mapped, tag + b" rewritten VM to the host")
        up_en = pkt(rw.t.host, ENCAP_CA, tag + b" host to NVGRE VM")
        down_en = pkt(ENCAP_CA, rw.t.host, tag + b" NVGRE VM to host")
        cases[rw] = (up_rw, down_rw, up_en, down_en)
        tenants += [rw.up(up_rw), rw.up(up_en)]
        fabric += [rw.from_vm(down_rw),
                   nvgre_frame(rw.t.pa, rw.t.vsid, rw.encap_mac, down_en, flow=0x21,
                               outer_src_mac=rw.t.pa_mac)]
        exp_fabric += [rw.to_vm(pkt(rw.mapped, rw.vm_pa, tag + b" host to rewritten VM", 63)),
                       expected_encap(up_en, vsid=rw.t.vsid, pa=rw.t.pa, ca_mac=rw.encap_mac,
                                      fabric_mac=rw.t.pa_mac)]
        exp_tenants += [rw.to_host(pkt(VM_CA, rw.t.host, tag + b" rewritten VM to the host", 63)),
                        expected_customer(down_en, vlan=rw.t.vlan, dst_mac=rw.t.host_mac)]

    spoof = [
        # Red's rewritten VM (PA .21) to Blue's mapped PA: rewrite_spoofed.
        RED_RW.from_vm(udp(RED_RW.vm_pa, BLUE_RW.mapped, 1, 2, b"cross domain")),
        # Blue's VM to Red's mapped PA: rewrite_spoofed.
        BLUE_RW.from_vm(udp(BLUE_RW.vm_pa, RED_RW.mapped, 1, 2, b"cross domain")),
        # one of our mapped PAs as the source: rewrite_spoofed.
        BLUE_RW.from_vm(udp(RED_RW.mapped, BLUE_RW.mapped, 1, 2, b"ours as source")),
        # a source PA that maps to nothing: no_rewrite_mapping.
        BLUE_RW.from_vm(udp("192.168.1.99", BLUE_RW.mapped, 1, 2, b"unknown PA")),
        # the NVGRE VM's host PA is no rewrite VM either: no_rewrite_mapping.
        BLUE_RW.from_vm(udp(BLUE.pa, BLUE_RW.mapped, 1, 2, b"encap host PA"),
                        src_mac=BLUE.pa_mac),
    ]
    # An on-premises host with no mapping in Blue toward the rewritten VM.
    unmapped = BLUE_RW.up(udp("172.16.1.11", VM_CA, 1, 2, b"no mapping"))
    arp_mapped = Ether(dst=BROADCAST, src=PROBE_MAC) / \
        arp_request(PROBE_MAC, PROBE_IP, BLUE_RW.mapped)
    arp_red_mapped = Ether(dst=BROADCAST, src=PROBE_MAC) / \
        arp_request(PROBE_MAC, PROBE_IP, RED_RW.mapped)
    arp_vm_pa = Ether(dst=BROADCAST, src=PROBE_MAC) / \
        arp_request(PROBE_MAC, PROBE_IP, BLUE_RW.vm_pa)      # the VM's host answers, not us

    gw, out = run_nvgre(tmp_path, rewrite_policy(),
                        fabric=fabric + spoof + [arp_mapped, arp_red_mapped, arp_vm_pa],
                        tenants=tenants + [unmapped])

    exp_fabric += [Ether(dst=PROBE_MAC, src=PROVIDER_MAC) /
                   arp_reply(PROVIDER_MAC, BLUE_RW.mapped, PROBE_MAC, PROBE_IP),
                   Ether(dst=PROBE_MAC, src=PROVIDER_MAC) /
                   arp_reply(PROVIDER_MAC, RED_RW.mapped, PROBE_MAC, PROBE_IP)]
    assert_packets(out[FABRIC], exp_fabric)
    assert_packets(out[TENANTS], exp_tenants)
    # The two rewritten packets to the overlapping CA went to two different PAs.
    to_vms = sorted((Ether(f)[IP].src, Ether(f)[IP].dst) for f in out[FABRIC]
                    if IP in Ether(f) and Ether(f)[IP].proto == 17)
    assert to_vms == [(BLUE_RW.mapped, BLUE_RW.vm_pa), (RED_RW.mapped, RED_RW.vm_pa)]
    assert_checksums_from_scratch(f for f in out[FABRIC] + out[TENANTS] if IP in Ether(f))

    final = gw.final_counters()
    assert_drops(final, rewrite_spoofed=3, no_rewrite_mapping=3)
    assert nonzero(final["exceptions"]) == {"arp_replies": 2, "ignored": 1}
    for rw in (BLUE_RW, RED_RW):
        up_rw, down_rw, up_en, down_en = cases[rw]
        assert vsid_counters(final, rw.t.vsid) == traffic(out=[up_rw], into=[down_rw],
                                                          encap=[up_en], decap=[down_en])


# -- 2. protocols: checksums equal scapy's from scratch and the expected packets -----

PAYLOAD = bytes(range(37))


def tcp(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1001) / \
        TCP(sport=33000, dport=443, flags="PA", seq=0x01020304, ack=0xA0B0C0D0,
            options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / Raw(PAYLOAD)


def tcp_syn(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1002, flags="DF") / \
        TCP(sport=33001, dport=22, flags="S", seq=7, options=[("MSS", 1460)])


def udp_ck(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1003) / UDP(sport=5353, dport=53) / Raw(PAYLOAD)


def udp_zero(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1004) / UDP(sport=5354, dport=53, chksum=0) / \
        Raw(PAYLOAD)


def udp_options(src, dst, ttl=64):
    """IHL 6: the L4 header starts after 24 bytes."""
    return IP(src=src, dst=dst, ttl=ttl, id=0x1005, options=[IPOption_NOP()] * 4) / \
        UDP(sport=5355, dport=53) / Raw(b"with IP options")


def echo_request(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1006) / ICMP(type=8, id=0x4242, seq=1) / \
        Raw(PAYLOAD)


def echo_reply(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1007) / ICMP(type=0, id=0x4242, seq=1) / \
        Raw(PAYLOAD)


def icmp_error(make_quoted, type_, code, cut=None):
    """An ICMP error from `src` to `dst` quoting the packet that `src` got from
    `dst` (make_quoted(dst, src, ttl=63)), whole or cut to `cut` bytes."""
    def build(src, dst, ttl=64):
        quote = bytes(make_quoted(dst, src, ttl=63))
        if cut is not None:
            quote = quote[:cut]
        return IP(src=src, dst=dst, ttl=ttl, id=0x2000 + type_) / \
            ICMP(type=type_, code=code) / Raw(quote)
    return build


def first_fragment(src, dst, ttl=64):
    return frags(src, dst, ttl)[0]


def middle_fragment(src, dst, ttl=64):
    return frags(src, dst, ttl)[1]


port_unreachable = icmp_error(udp_ck, 3, 3)
port_unreachable_options = icmp_error(udp_options, 3, 3)     # quoted IHL 6
admin_prohibited_tcp = icmp_error(tcp_syn, 3, 13)
# Type 11 (time exceeded): quotes whose L4 checksum scapy cannot recompute from the
# quote alone (UDP cut after 8 bytes; a first fragment: the checksum covers the whole
# datagram), and a non-first fragment (no L4 header: only the quoted IP header changes).
time_exceeded_cut = icmp_error(udp_ck, 11, 0, cut=28)        # router style: IP + 8 bytes
reassembly_first = icmp_error(first_fragment, 11, 1)
reassembly_middle = icmp_error(middle_fragment, 11, 1)

# -- checksum edge values (RFC 1624 section 3: 0x0000 vs 0xFFFF) --
# Each packet has a 16-bit knob (IP id, or the first payload word) set so that a
# checksum computed from scratch at the given addresses hits an edge value.


def fold_sum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp_k(src, dst, ttl=64, knob=0):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1010) / UDP(sport=5400, dport=53) / \
        Raw(knob.to_bytes(2, "big") + b"tuned udp")


def tcp_k(src, dst, ttl=64, knob=0):
    return IP(src=src, dst=dst, ttl=ttl, id=0x1011) / \
        TCP(sport=33010, dport=80, flags="A", seq=1, ack=2) / \
        Raw(knob.to_bytes(2, "big") + b"tuned tcp")


def ip_k(src, dst, ttl=64, knob=0):
    return IP(src=src, dst=dst, ttl=ttl, id=knob) / UDP(sport=5401, dport=53) / Raw(b"tuned ip")


def tuned(make, src, dst, ttl, layer):
    """make with the knob that makes `layer`'s one's complement sum 0xFFFF at
    (src, dst, ttl): the IP or TCP checksum is then 0x0000, the UDP one 0xFFFF (0
    is 'no checksum')."""
    p = IP(bytes(make(src, dst, ttl, knob=0)))
    raw = bytearray(bytes(p))
    hl = p.ihl * 4
    if layer is IP:
        raw[10:12] = b"\0\0"
        total = fold_sum(bytes(raw[:hl]))
    else:
        l4 = raw[hl:]
        off = 6 if layer is UDP else 16
        l4[off:off + 2] = b"\0\0"
        pseudo = bytes(raw[12:20]) + bytes([0, p.proto]) + len(l4).to_bytes(2, "big")
        total = fold_sum(pseudo + bytes(l4))
    knob = 0xFFFF - total

    def build(src_, dst_, ttl_=64):
        return make(src_, dst_, ttl_, knob=knob)
    got = IP(bytes(build(src, dst, ttl)))
    assert (got.chksum if layer is IP else got[layer].chksum) == \
        (0xFFFF if layer is UDP else 0), got.show(dump=True)
    return build


def edge_kinds(in_src, in_dst, out_src, out_dst):
    """Packets from in_src to in_dst (TTL 64) that hit the edge values once
    rewritten to out_src/out_dst (TTL 63), and one whose input UDP checksum is
    0xFFFF (a computed 0)."""
    return [tuned(udp_k, out_src, out_dst, 63, UDP), tuned(tcp_k, out_src, out_dst, 63, TCP),
            tuned(ip_k, out_src, out_dst, 63, IP), tuned(udp_k, in_src, in_dst, 64, UDP),
            tuned(ip_k, in_src, in_dst, 64, IP)]


def test_protocols_rewritten_with_checksums_scapy_recomputes_identically(tmp_path):
    rw = BLUE_RW
    common = [tcp, tcp_syn, udp_ck, udp_zero, udp_options, port_unreachable,
              port_unreachable_options, admin_prohibited_tcp, time_exceeded_cut,
              reassembly_first, reassembly_middle]
    up_kinds = common + [echo_request] + edge_kinds(rw.t.host, VM_CA, rw.mapped, rw.vm_pa)
    down_kinds = common + [echo_reply] + edge_kinds(rw.vm_pa, rw.mapped, VM_CA, rw.t.host)
    ups = [k(rw.t.host, VM_CA) for k in up_kinds]
    downs = [k(rw.vm_pa, rw.mapped) for k in down_kinds]
    # Red's VM sends the same packets to its host: only its own PAs are involved.
    red_downs = [k(RED_RW.vm_pa, RED_RW.mapped) for k in down_kinds]
    gw, out = run_nvgre(tmp_path, rewrite_policy(),
                        fabric=[rw.from_vm(p) for p in downs] +
                        [RED_RW.from_vm(p) for p in red_downs],
                        tenants=[rw.up(p) for p in ups])

    exp_fabric = [rw.to_vm(k(rw.mapped, rw.vm_pa, 63)) for k in up_kinds]
    exp_tenants = [rw.to_host(k(VM_CA, rw.t.host, 63)) for k in down_kinds] + \
        [RED_RW.to_host(k(VM_CA, RED_RW.t.host, 63)) for k in down_kinds]
    assert_packets(out[FABRIC], exp_fabric)
    assert_packets(out[TENANTS], exp_tenants)

    # What the gateway changed by increments, scapy computes from scratch alike.
    whole, kept = [], []
    for f in out[FABRIC] + out[TENANTS]:
        p = Ether(f)
        (kept if ICMP in p and p[ICMP].type == 11 else whole).append(f)
    assert len(kept) == 3 * 3 and len(whole) == 3 * len(up_kinds) - 9
    assert_checksums_from_scratch(whole)
    # The type 11 quotes keep their quoted UDP checksum (scapy would checksum the
    # quote as if it were the whole datagram); the expected packets above pin it.
    assert_checksums_from_scratch(kept, keep=(UDPerror,))
    # Sanity of the expectations themselves: the quoted addresses mirror the outer.
    n_errors = 0
    for f in out[FABRIC] + out[TENANTS]:
        p = Ether(f)
        if ICMP in p and p[ICMP].type in (3, 11):
            q = IP(bytes(p[ICMP].payload))
            assert (q.src, q.dst) == (p[IP].dst, p[IP].src), describe(f)
            n_errors += 1
    assert n_errors == 3 * 6

    final = gw.final_counters()
    assert_drops(final)
    assert vsid_counters(final, BLUE.vsid) == traffic(out=ups, into=downs)
    assert vsid_counters(final, RED.vsid) == traffic(into=red_downs)


# -- 3. a 3-fragment UDP datagram, both ways ---------------------------------------


def datagram(src, dst, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0x4321) / UDP(sport=7000, dport=7001) / \
        Raw(bytes(range(200)))


def frags(src, dst, ttl=64):
    f = fragment(datagram(src, dst, ttl), fragsize=72)
    assert len(f) == 3 and [x.frag for x in f] == [0, 9, 18]
    return f


def assert_reassembles(frames, src, dst):
    """The frames' IP fragments reassemble to one datagram from src to dst whose UDP
    checksum is the one scapy computes from scratch (and is not 0)."""
    whole = defragment([Ether(f)[IP] for f in frames])
    assert len(whole) == 1, [p.summary() for p in whole]
    d = whole[0]
    assert (d.src, d.dst, d.flags.MF, d.frag) == (src, dst, 0, 0)
    assert bytes(d[UDP].payload) == bytes(range(200))
    sent, correct = l4_checksums(bytes(d), UDP)
    assert sent == correct != 0


def test_three_fragment_udp_reassembles_with_valid_checksum(tmp_path):
    rw = BLUE_RW
    up, down = frags(rw.t.host, VM_CA), frags(rw.vm_pa, rw.mapped)
    # The inputs themselves reassemble with a valid checksum.
    assert_reassembles([bytes(Ether() / p) for p in up], rw.t.host, VM_CA)
    gw, out = run_nvgre(tmp_path, rewrite_policy(),
                        fabric=[rw.from_vm(p) for p in down], tenants=[rw.up(p) for p in up])

    # Exact fragments: scapy fragmenting the datagram with the new addresses.
    assert_packets(out[FABRIC], [rw.to_vm(p) for p in frags(rw.mapped, rw.vm_pa, ttl=63)])
    assert_packets(out[TENANTS], [rw.to_host(p) for p in frags(VM_CA, rw.t.host, ttl=63)])
    assert_reassembles(out[FABRIC], rw.mapped, rw.vm_pa)
    assert_reassembles(out[TENANTS], VM_CA, rw.t.host)
    # Non-first fragments: only the IP addresses (and header checksum, TTL) changed.
    for sent, got in zip(up[1:], [f for f in out[FABRIC] if Ether(f)[IP].frag][:2]):
        assert bytes(Ether(got)[IP].payload) == bytes(sent[IP].payload)

    final = gw.final_counters()
    assert_drops(final)
    assert vsid_counters(final, BLUE.vsid) == traffic(out=up, into=down)


# -- 4. a wrong checksum stays exactly as wrong ----------------------------------------


def bad(make, l4cls, flip):
    """make(src, dst, ttl) with its L4 checksum XORed with `flip`."""
    def build(src, dst, ttl=64):
        p = make(src, dst, ttl)
        p = IP(bytes(p))
        p[l4cls].chksum ^= flip
        return p
    return build


def test_wrong_l4_checksums_stay_exactly_as_wrong(tmp_path):
    rw = BLUE_RW
    kinds = [(bad(tcp, TCP, 0x00FF), TCP), (bad(udp_ck, UDP, 0x3C00), UDP),
             (bad(udp_options, UDP, 0x0101), UDP)]
    ups = [k(rw.t.host, VM_CA) for k, _ in kinds]
    downs = [k(rw.vm_pa, rw.mapped) for k, _ in kinds]
    for p, (_, cls) in zip(ups + downs, kinds * 2):
        sent, correct = l4_checksums(bytes(p), cls)
        assert sent not in (0, 0xFFFF, correct)
    gw, out = run_nvgre(tmp_path, rewrite_policy(),
                        fabric=[rw.from_vm(p) for p in downs], tenants=[rw.up(p) for p in ups])

    def check(sent_pkts, frames, src, dst):
        assert len(frames) == len(sent_pkts)
        got = {Ether(f)[IP].id: Ether(f)[IP] for f in frames}
        for sent, (make, cls) in zip(sent_pkts, kinds):
            g = got[sent[IP].id]
            s_ck, s_correct = l4_checksums(bytes(sent), cls)
            o_ck, o_correct = l4_checksums(bytes(g), cls)
            assert o_ck != o_correct, "the gateway repaired a wrong checksum"
            assert ones_delta(o_ck, o_correct) == ones_delta(s_ck, s_correct), \
                (hex(s_ck), hex(s_correct), hex(o_ck), hex(o_correct))
            # Everything else is exactly the rewritten packet.
            exp = IP(bytes(make(src, dst, ttl=63)))
            exp[cls].chksum = o_ck
            assert bytes(g) == bytes(exp)
            assert rebuilt(bytes(Ether() / g), keep=(cls,)) == bytes(Ether() / g)

    check(ups, out[FABRIC], rw.mapped, rw.vm_pa)
    check(downs, out[TENANTS], VM_CA, rw.t.host)
    final = gw.final_counters()
    assert_drops(final)
    assert vsid_counters(final, BLUE.vsid) == traffic(out=ups, into=downs)


# -- 5. provider MTU and TTL on the rewrite path -----------------------------------------


def test_rewrite_mtu_has_no_encapsulation_overhead_and_ttl_expiry(tmp_path):
    """No header is added, so a rewritten packet may be the whole provider MTU; one
    byte more is mtu_exceeded, answered with 'fragmentation needed' (next-hop MTU =
    provider MTU) when DF is set. TTL 1 expires in either direction."""
    rw = BLUE_RW
    pol = rewrite_policy()
    pol["provider"]["mtu"] = 1400

    def sized(src, dst, total, sport, ttl=64, **kw):
        p = IP(src=src, dst=dst, ttl=ttl, **kw) / UDP(sport=sport, dport=9) / \
            Raw(b"\x5a" * (total - 28))
        assert len(bytes(p)) == total
        return p
    fits = lambda s, d, ttl=64: sized(s, d, 1400, 5000, ttl, flags="DF", id=1)  # noqa: E731
    over_df = sized(rw.t.host, VM_CA, 1401, 5001, flags="DF", id=2)
    over = sized(rw.t.host, VM_CA, 1401, 5002, id=3)                 # no DF: no ICMP
    expiring_up = udp(rw.t.host, VM_CA, 5003, 9, b"ttl 1", ttl=1)
    expiring_down = udp(rw.vm_pa, rw.mapped, 9, 5003, b"ttl 1", ttl=1)
    big_down = sized(rw.vm_pa, rw.mapped, 1500, 5004, id=4)          # the VLAN has no MTU here
    gw, out = run_nvgre(tmp_path, pol,
                        tenants=[rw.up(p) for p in (fits(rw.t.host, VM_CA), over_df, over,
                                                    expiring_up)],
                        fabric=[rw.from_vm(expiring_down), rw.from_vm(big_down)])

    assert_packets(out[FABRIC], [rw.to_vm(fits(rw.mapped, rw.vm_pa, 63))])
    frag_needed = Ether(dst=BLUE.host_mac, src=CUSTOMER_MAC) / Dot1Q(vlan=BLUE.vlan) / \
        IP(src=BLUE.attach, dst=BLUE.host, ttl=64, id=0, flags=0, tos=0, proto=1) / \
        ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(over_df)[:28])
    assert_packets(out[TENANTS], [frag_needed,
                                  rw.to_host(sized(VM_CA, BLUE.host, 1500, 5004, 63, id=4))])
    final = gw.final_counters()
    assert_drops(final, mtu_exceeded=2, ttl_expired=2)
    assert nonzero(final["exceptions"]) == {"frag_needed": 1}
    assert vsid_counters(final, BLUE.vsid) == traffic(out=[fits(rw.t.host, VM_CA)],
                                                      into=[big_down])
