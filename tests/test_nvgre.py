"""The NVGRE pipeline on the wire: the article's Red/Blue example both ways,
FlowID, routing between virtual subnets, customer routes and metrics, the
provider MTU with ICMP "fragmentation needed", ARP and ping, and unresolved
next hops. Expected frames are built independently with scapy and compared
byte for byte; counters are asserted by name.

Each test runs one gateway over all of its packets (a start costs ~0.7 s);
the live tests feed a veth pair so that packets can follow an `apply`.
"""
import os
import struct
import subprocess
import time

import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from dataplane.errors import NvgwError
from harness import GatewayProcess, PcapPort, run_pcap
from nvgw_helpers import (BLUE, BROADCAST, CUSTOMER_MAC, FABRIC, GW_PA, PROVIDER_MAC, RED,
                          TENANTS, VM_CA, Injector, arp_reply, arp_request, assert_drops,
                          assert_packets, customer_frame, expected_customer, expected_encap,
                          flowid, inner_frame_len, live_port, nonzero, nvgre_body, nvgre_frame,
                          nvgre_ports,
                          redblue_policy, run_nvgre, sized_udp, udp, veth_pair,
                          write_policy)


def vsid_counters(final, vsid):
    c = final["vsids"][str(vsid)]
    return {k: c[k] for k in ("encap_pkts", "encap_bytes", "decap_pkts", "decap_bytes")}


def traffic(encap=(), decap=()):
    """Per-VSID counters for inner packets encapsulated / decapsulated."""
    return {"encap_pkts": len(encap), "encap_bytes": sum(inner_frame_len(p) for p in encap),
            "decap_pkts": len(decap), "decap_bytes": sum(inner_frame_len(p) for p in decap)}


def exceptions(final):
    """The exception thread's counters that are not 0."""
    return nonzero(final["exceptions"])


def base_policy(subnets, records, neighbours, attachments=(), routes=(), mtu=1500, rdid=1):
    """A one-domain policy on provider 192.168.1.1/24."""
    return {"provider": {"addresses": ["192.168.1.1/24"], "mtu": mtu},
            "routing_domains": [{"rdid": rdid, "name": "t", "subnets": list(subnets),
                                 "attachments": list(attachments), "routes": list(routes)}],
            "records": list(records), "neighbours": list(neighbours)}


def record(vsid, ca, mac, pa):
    return {"vsid": vsid, "ca": ca, "mac": mac, "pa": pa, "method": "encap"}


# -- 1. the article's Red/Blue example ------------------------------------------


def test_redblue_both_directions_exact_bytes_and_vsid_counters(tmp_path):
    """Both tenants use 10.1.1.7; the VLAN picks the tenant on the way in, the
    VSID and PA on the way back."""
    blue_up = [udp(BLUE.host, VM_CA, 40001, 80, b"blue to its VM", id=1),
               IP(src=BLUE.host, dst=VM_CA, id=2) / TCP(sport=40002, dport=443, flags="S"),
               udp(BLUE.host, VM_CA, 40003, 80, b"x", id=3)]     # padded on the wire
    red_up = [udp(RED.host, VM_CA, 40001, 80, b"red to its VM", id=1)]
    blue_down = [udp(VM_CA, BLUE.host, 80, 40001, b"blue VM answers", id=9),
                 udp(VM_CA, BLUE.host, 80, 40003, b"y", id=10)]
    red_down = [udp(VM_CA, RED.host, 80, 40001, b"red VM answers", id=9)]

    tenants = [BLUE.up(p) for p in blue_up[:2]] + [RED.up(red_up[0])]
    tenants.append(bytes(BLUE.up(blue_up[2])) + b"\xee" * 17)    # Ethernet padding to 64 B
    assert len(tenants[-1]) == 64
    fabric = [BLUE.down(blue_down[0], flow=0x2A), RED.down(red_down[0], flow=0x99),
              bytes(BLUE.down(blue_down[1], flow=0x01)) + b"\0\0\0\0"]   # link padding
    gw, out = run_nvgre(tmp_path, redblue_policy(), fabric=fabric, tenants=tenants)

    # Blue's packet: VSID 5001 to 192.168.1.10 with Blue VM's MAC; Red's: 6001, .11.
    assert_packets(out[FABRIC], [BLUE.encap(p) for p in blue_up] + [RED.encap(red_up[0])])
    sent = sorted((Ether(f)[IP].dst, Ether(f)[GRE].key >> 8, Ether(f)[GRE].payload.dst)
                  for f in out[FABRIC])
    assert sent == [("192.168.1.10", 5001, "00:15:5d:b1:00:07")] * 3 + \
        [("192.168.1.11", 6001, "00:15:5d:7e:00:07")]
    assert_packets(out[TENANTS], [BLUE.decap(p) for p in blue_down] + [RED.decap(red_down[0])])

    final = gw.final_counters()
    assert vsid_counters(final, 5001) == traffic(blue_up, blue_down)
    assert vsid_counters(final, 6001) == traffic(red_up, red_down)
    assert vsid_counters(final, 5001)["encap_bytes"] == (14 + 42) + (14 + 40) + (14 + 29)
    # Ports count the frames as sent (padding dropped, headers rewritten).
    ports = {p["name"]: p for p in final["ports"]}
    for name in (FABRIC, TENANTS):
        assert (ports[name]["tx_pkts"], ports[name]["tx_bytes"]) == \
            (len(out[name]), sum(len(f) for f in out[name])), name
    assert_drops(final)
    assert exceptions(final) == {}


def test_nvgre_to_each_of_our_pas_and_not_to_others(tmp_path):
    """The usual fabric frame is checked against our first PA in one vector compare;
    frames to our second PA take the step-by-step parse and leave alike, and a frame
    to an address that is not ours is not decapsulated (nor a rewrite PA: dropped)."""
    pol = redblue_policy()
    pol["provider"]["addresses"] = ["192.168.1.1/24", "192.168.1.2/24"]
    down = [udp(VM_CA, BLUE.host, 80, 40001 + i, b"to PA %d" % i, id=i) for i in range(3)]
    fabric = [BLUE.down(down[0]), BLUE.down(down[1], dst_pa="192.168.1.2"),
              BLUE.down(down[2], dst_pa="192.168.1.3")]
    gw, out = run_nvgre(tmp_path, pol, fabric=fabric)

    assert_packets(out[TENANTS], [BLUE.decap(p) for p in down[:2]])
    final = gw.final_counters()
    assert vsid_counters(final, 5001) == traffic(decap=down[:2])
    assert_drops(final, not_our_pa=1)


def test_redblue_cross_tenant_traffic_is_dropped_and_counted(tmp_path):
    """Nothing crosses tenants: spoofed PAs, the other tenant's subnets and CAs."""
    pol = redblue_policy()
    pol["records"].append(record(5001, "10.1.1.9", "00:15:5d:b1:00:09", BLUE.pa))
    to_blue_host = udp(VM_CA, BLUE.host, 80, 40001, b"spoof")
    to_red_host = udp(VM_CA, RED.host, 80, 40001, b"cross")
    to_blue_ca = udp(VM_CA, "10.1.1.9", 80, 40001, b"blue's CA")
    fabric = [
        # Red's host (PA .11) claims Blue's VM in Blue's VSID: spoofed_pa.
        nvgre_frame(RED.pa, BLUE.vsid, RED.vm_mac, to_blue_host, outer_src_mac=RED.pa_mac),
        # Blue's host (PA .10) claims Red's VM in Red's VSID: spoofed_pa.
        nvgre_frame(BLUE.pa, RED.vsid, BLUE.vm_mac, to_red_host, outer_src_mac=BLUE.pa_mac),
        # Blue's VM addresses Red's on-premises subnet 172.16.2.0/24: no_route.
        BLUE.down(to_red_host),
        # Red's VM addresses a CA that only Blue has: no_lookup_record.
        RED.down(to_blue_ca),
        # Red's VM asks ARP for Blue's CA: no reply.
        RED.down(arp_request(RED.vm_mac, VM_CA, "10.1.1.9"), inner_dst_mac=BROADCAST),
    ]
    tenants = [BLUE.up(udp(BLUE.host, RED.host)),          # no_route
               RED.up(udp(RED.host, BLUE.host)),           # no_route
               RED.up(udp(RED.host, "10.1.1.9"))]          # no_lookup_record
    gw, out = run_nvgre(tmp_path, pol, fabric=fabric, tenants=tenants)

    assert out == {FABRIC: [], TENANTS: []}
    final = gw.final_counters()
    assert_drops(final, spoofed_pa=2, no_route=3, no_lookup_record=2)
    assert exceptions(final) == {"arp_no_record": 1}
    # Decap counts packets that passed anti-spoofing (before routing drops them).
    assert vsid_counters(final, 5001) == traffic(decap=[to_red_host])
    assert vsid_counters(final, 6001) == traffic(decap=[to_blue_ca])


def test_full_bursts_leave_whole_and_in_order(tmp_path):
    """Many full bursts (net_pcap reads 32 at a time) both ways, with spoofed
    frames in the middle of the fabric's bursts: each port's frames leave exactly
    and in the order they came (a dropped packet leaves a hole, it does not move
    the rest), and the last, partial burst is not left behind."""
    n = 7 * 32 + 5                                  # seven full bursts and a tail
    pol = redblue_policy()
    tenants, fabric, enc, dec = [], [], [], []
    spoofed = 0
    for i in range(n):
        t = (BLUE, RED)[i % 2]
        up = udp(t.host, VM_CA, 1000 + i, 80, b"up %d" % i, id=i)
        down = udp(VM_CA, t.host, 80, 1000 + i, b"down %d" % i, id=i)
        tenants.append(t.up(up))
        enc.append(t.encap(up))
        if i % 37 == 5:                             # the other tenant's PA: spoofed_pa
            other = (RED, BLUE)[i % 2]
            fabric.append(nvgre_frame(other.pa, t.vsid, t.vm_mac, down,
                                      outer_src_mac=other.pa_mac))
            spoofed += 1
        else:
            fabric.append(t.down(down))
            dec.append(t.decap(down))
    gw, out = run_nvgre(tmp_path, pol, fabric=fabric, tenants=tenants)

    assert [bytes(f) for f in out[FABRIC]] == [bytes(f) for f in enc]
    assert [bytes(f) for f in out[TENANTS]] == [bytes(f) for f in dec]
    final = gw.final_counters()
    assert_drops(final, spoofed_pa=spoofed)
    assert sum(w["processed"] for w in final["workers"]) == 2 * n


# -- 2. FlowID ------------------------------------------------------------------


def test_flowid_per_flow_fixed_per_subnet_and_ignored_on_decap(tmp_path):
    pol = redblue_policy()
    red_sub = pol["routing_domains"][1]["subnets"][0]
    assert red_sub["vsid"] == RED.vsid
    red_sub["flowid"] = 7
    blue_flows = [udp(BLUE.host, VM_CA, 20000 + i, 53, b"q%d" % i) for i in range(50)]
    red_flows = [udp(RED.host, VM_CA, 20000 + i, 53, b"q%d" % i) for i in range(50)]
    # TCP hashes its ports; ICMP and fragments of UDP (first or not) hash none.
    tcp = IP(src=BLUE.host, dst=VM_CA) / TCP(sport=33000, dport=22, flags="S")
    icmp = IP(src=BLUE.host, dst=VM_CA) / ICMP(id=5, seq=1) / Raw(b"ping")
    first_frag = IP(src=BLUE.host, dst=VM_CA, flags="MF", id=77) / UDP(sport=1, dport=2) / \
        Raw(b"A" * 16)
    last_frag = IP(src=BLUE.host, dst=VM_CA, id=77, frag=3, proto=17) / Raw(b"B" * 16)
    extra = [(tcp, flowid(BLUE.host, VM_CA, 6, 33000, 22)),
             (icmp, flowid(BLUE.host, VM_CA, 1)),
             (first_frag, flowid(BLUE.host, VM_CA, 17, fragmented=True)),
             (last_frag, flowid(BLUE.host, VM_CA, 17, fragmented=True))]
    assert extra[2][1] == extra[3][1] == flowid(BLUE.host, VM_CA, 17)
    # Decap matches on the VSID alone, whatever the FlowID byte says.
    downs = [udp(VM_CA, BLUE.host, 53, 20000 + f, b"r") for f in (0x00, 0x01, 0x80, 0xFF)]

    tenants = [BLUE.up(p) for p in blue_flows for _ in range(3)]
    tenants += [RED.up(p) for p in red_flows for _ in range(3)]
    tenants += [BLUE.up(p) for p, _ in extra]
    fabric = [BLUE.down(p, flow=f) for p, f in zip(downs, (0x00, 0x01, 0x80, 0xFF))]
    gw, out = run_nvgre(tmp_path, pol, fabric=fabric, tenants=tenants)

    expected = [BLUE.encap(p, flow=flowid(BLUE.host, VM_CA, 17, 20000 + i, 53))
                for i, p in enumerate(blue_flows) for _ in range(3)]
    expected += [RED.encap(p, flow=7) for p in red_flows for _ in range(3)]
    expected += [BLUE.encap(p, flow=f) for p, f in extra]
    assert_packets(out[FABRIC], expected)

    by_flow = {}
    for frame in out[FABRIC]:
        pkt = Ether(frame)
        inner = pkt[GRE].payload.payload
        if UDP in inner and inner.flags.MF == 0:
            by_flow.setdefault((pkt[GRE].key >> 8, inner[UDP].sport), []).append(
                pkt[GRE].key & 0xFF)
    blue_ids = {sport: ids for (vsid, sport), ids in by_flow.items() if vsid == BLUE.vsid}
    red_ids = {sport: ids for (vsid, sport), ids in by_flow.items() if vsid == RED.vsid}
    assert len(blue_ids) == len(red_ids) == 50
    for sport, ids in blue_ids.items():
        assert ids == [flowid(BLUE.host, VM_CA, 17, sport, 53)] * 3, sport
    assert len({ids[0] for ids in blue_ids.values()}) > 10
    assert all(ids == [7, 7, 7] for ids in red_ids.values())

    assert_packets(out[TENANTS], [BLUE.decap(p) for p in downs])
    final = gw.final_counters()
    assert vsid_counters(final, BLUE.vsid)["decap_pkts"] == 4
    assert_drops(final)


# -- 3. routing between virtual subnets -------------------------------------------

GW_MAC_5001, GW_MAC_5002 = "02:00:00:00:50:01", "02:00:00:00:50:02"
VM8, VM8_MAC, VM8_PA, VM8_PA_MAC = "10.1.2.8", "00:15:5d:b2:00:08", "192.168.1.12", \
    "00:15:5d:00:00:12"


def two_subnets(same_domain: bool) -> dict:
    pol = base_policy(
        [{"vsid": 5001, "prefix": "10.1.1.0/24", "gateway_mac": GW_MAC_5001}],
        [record(5001, VM_CA, BLUE.vm_mac, BLUE.pa), record(5002, VM8, VM8_MAC, VM8_PA)],
        [{"ip": BLUE.pa, "mac": BLUE.pa_mac}, {"ip": VM8_PA, "mac": VM8_PA_MAC}])
    sub = {"vsid": 5002, "prefix": "10.1.2.0/24", "gateway_mac": GW_MAC_5002}
    if same_domain:
        pol["routing_domains"][0]["subnets"].append(sub)
    else:
        pol["routing_domains"].append({"rdid": 2, "name": "other", "subnets": [sub]})
    return pol


def from_vm7(ip, **kw):
    kw.setdefault("inner_dst_mac", GW_MAC_5001)
    return BLUE.down(ip, **kw)


def from_vm8(ip, **kw):
    kw.setdefault("inner_dst_mac", GW_MAC_5002)
    return nvgre_frame(VM8_PA, 5002, VM8_MAC, ip, outer_src_mac=VM8_PA_MAC, **kw)


def test_hairpin_between_virtual_subnets_of_one_routing_domain(tmp_path):
    there = [udp(VM_CA, VM8, 1111, 2222, b"to the other subnet", id=1),
             udp(VM_CA, VM8, 1112, 2222, b"second flow", id=2)]
    back = udp(VM8, VM_CA, 2222, 1111, b"and back", id=3)
    ttl1 = udp(VM_CA, VM8, 1113, 2222, b"ttl 1", ttl=1)
    fabric = [from_vm7(there[0], flow=0x11), from_vm7(there[1], flow=0xEE), from_vm8(back),
              from_vm7(ttl1),                                        # ttl_expired
              from_vm7(there[0], inner_dst_mac=PROVIDER_MAC)]        # not the 5001 gateway MAC
    gw, out = run_nvgre(tmp_path, two_subnets(same_domain=True), fabric=fabric)

    expected = [expected_encap(p, vsid=5002, pa=VM8_PA, ca_mac=VM8_MAC, fabric_mac=VM8_PA_MAC,
                               gw_mac=GW_MAC_5002) for p in there]
    expected.append(expected_encap(back, vsid=5001, pa=BLUE.pa, ca_mac=BLUE.vm_mac,
                                   fabric_mac=BLUE.pa_mac, gw_mac=GW_MAC_5001))
    assert_packets(out[FABRIC], expected)
    first = next(Ether(f) for f in out[FABRIC] if Ether(f)[UDP].sport == 1111)
    assert first[IP].dst == VM8_PA
    assert first[GRE].key == 5002 << 8 | flowid(VM_CA, VM8, 17, 1111, 2222)
    assert first[GRE].payload.src == GW_MAC_5002 and first[GRE].payload[IP].ttl == 63
    assert out[TENANTS] == []
    final = gw.final_counters()
    assert_drops(final, ttl_expired=1, not_for_gateway=1)
    assert vsid_counters(final, 5001) == traffic(encap=[back], decap=there + [ttl1])
    assert vsid_counters(final, 5002) == traffic(encap=there, decap=[back])


def test_no_routing_between_routing_domains(tmp_path):
    """The same addresses, but 10.1.2.0/24 belongs to another routing domain."""
    fabric = [from_vm7(udp(VM_CA, VM8, 1111, 2222)), from_vm8(udp(VM8, VM_CA, 2222, 1111))]
    gw, out = run_nvgre(tmp_path, two_subnets(same_domain=False), fabric=fabric)
    assert out == {FABRIC: [], TENANTS: []}
    final = gw.final_counters()
    assert_drops(final, no_route=2)
    assert vsid_counters(final, 5001)["encap_pkts"] == vsid_counters(final, 5002)["encap_pkts"] == 0


def test_subnets_of_one_domain_keep_their_own_records(tmp_path):
    """Records are keyed by routing domain and CA (a domain's subnets never overlap),
    so VM8's record is found from VSID 5001 too; each subnet still owns its own:
    VM8's host claims VM8 inside 5001 (its PA is right, the VSID is not), and VM7
    asks ARP in 5001 for VM8."""
    fabric = [nvgre_frame(VM8_PA, 5001, VM8_MAC, udp(VM8, VM_CA, 2222, 1111, b"wrong vsid"),
                          outer_src_mac=VM8_PA_MAC, inner_dst_mac=GW_MAC_5001),
              from_vm7(arp_request(BLUE.vm_mac, VM_CA, VM8), inner_dst_mac=BROADCAST),
              from_vm8(udp(VM8, VM_CA, 2222, 1111, b"right vsid", id=4))]
    gw, out = run_nvgre(tmp_path, two_subnets(same_domain=True), fabric=fabric)

    assert_packets(out[FABRIC], [expected_encap(udp(VM8, VM_CA, 2222, 1111, b"right vsid",
                                                    id=4),
                                                vsid=5001, pa=BLUE.pa, ca_mac=BLUE.vm_mac,
                                                fabric_mac=BLUE.pa_mac, gw_mac=GW_MAC_5001)])
    final = gw.final_counters()
    assert_drops(final, spoofed_pa=1)
    assert exceptions(final) == {"arp_no_record": 1}


# -- 4. customer routes -----------------------------------------------------------

ROUTER, ROUTER_MAC = "172.16.1.254", "02:00:00:00:01:fe"
APPLIANCE, APPLIANCE_MAC, APPLIANCE_PA, APPLIANCE_PA_MAC = \
    "10.1.1.50", "00:15:5d:a0:00:50", "192.168.1.20", "00:15:5d:00:00:20"
APPLIANCE2, APPLIANCE2_MAC, APPLIANCE2_PA, APPLIANCE2_PA_MAC = \
    "10.1.1.51", "00:15:5d:a0:00:51", "192.168.1.21", "00:15:5d:00:00:21"


def routes_policy(routes) -> dict:
    return base_policy(
        [{"vsid": 5001, "prefix": "10.1.1.0/24"}],
        [record(5001, VM_CA, BLUE.vm_mac, BLUE.pa),
         record(5001, APPLIANCE, APPLIANCE_MAC, APPLIANCE_PA),
         record(5001, APPLIANCE2, APPLIANCE2_MAC, APPLIANCE2_PA)],
        [{"ip": BLUE.pa, "mac": BLUE.pa_mac}, {"ip": APPLIANCE_PA, "mac": APPLIANCE_PA_MAC},
         {"ip": APPLIANCE2_PA, "mac": APPLIANCE2_PA_MAC},
         {"vlan": 100, "ip": ROUTER, "mac": ROUTER_MAC},
         {"vlan": 100, "ip": BLUE.host, "mac": BLUE.host_mac}],
        attachments=[{"vlan": 100, "address": "172.16.1.1/24"}], routes=routes)


def to_appliance(ip, which=1) -> bytes:
    if which == 1:
        return expected_encap(ip, vsid=5001, pa=APPLIANCE_PA, ca_mac=APPLIANCE_MAC,
                              fabric_mac=APPLIANCE_PA_MAC)
    return expected_encap(ip, vsid=5001, pa=APPLIANCE2_PA, ca_mac=APPLIANCE2_MAC,
                          fabric_mac=APPLIANCE2_PA_MAC)


def test_default_route_via_onprem_router_and_virtual_appliance_route(tmp_path):
    pol = routes_policy([{"prefix": "0.0.0.0/0", "next_hop": ROUTER},
                         {"prefix": "10.9.0.0/16", "next_hop": APPLIANCE}])
    internet = udp(VM_CA, "8.8.8.8", 5353, 53, b"dns", id=4)
    behind_appliance = udp(BLUE.host, "10.9.3.4", 4444, 80, b"via the appliance", id=5)
    vm_behind_appliance = udp(VM_CA, "10.9.3.4", 4445, 80, b"vm via the appliance", id=6)
    to_vm = udp(BLUE.host, VM_CA, 4446, 80, b"the /24 beats the default", id=7)
    gw, out = run_nvgre(tmp_path, pol, fabric=[BLUE.down(internet), BLUE.down(vm_behind_appliance)],
                        tenants=[BLUE.up(behind_appliance), BLUE.up(to_vm)])

    assert_packets(out[TENANTS], [expected_customer(internet, vlan=100, dst_mac=ROUTER_MAC)])
    expected = [to_appliance(behind_appliance), to_appliance(vm_behind_appliance),
                BLUE.encap(to_vm)]
    assert_packets(out[FABRIC], expected)
    for f in out[FABRIC]:
        inner = Ether(f)[GRE].payload
        if inner[IP].dst == "10.9.3.4":                 # inner IP destination unchanged
            assert (Ether(f)[IP].dst, inner.dst) == (APPLIANCE_PA, APPLIANCE_MAC)
    assert_drops(gw.final_counters())


@pytest.fixture
def veth():
    try:
        with veth_pair() as ends:
            yield ends
    except OSError as e:
        if os.geteuid() == 0:
            raise               # root can make them: a failure, not a reason to skip
        pytest.skip(f"live tests need a veth pair (root): {e}")


def live_gateway(tmp_path, pol, iface):
    """A gateway whose customer port receives from `iface`; fabric output in a pcap."""
    path = write_policy(tmp_path, pol)
    ports = [PcapPort(FABRIC, "provider"), live_port(TENANTS, "customer", 1, iface, tmp_path)]
    return GatewayProcess(tmp_path, ports, nvgre_body(path)).start()


def test_route_metric_lowest_wins_and_live_delete_falls_back(tmp_path, veth):
    gw_end, test_end = veth
    prefix = "10.8.0.0/16"
    pol = routes_policy([{"prefix": prefix, "next_hop": APPLIANCE2, "metric": 20},
                         {"prefix": prefix, "next_hop": APPLIANCE, "metric": 10}])
    pkts = [udp(BLUE.host, "10.8.1.1", 6000 + i, 80, b"phase %d" % i, id=i) for i in range(3)]
    gw = live_gateway(tmp_path, pol, gw_end)
    inj = Injector(gw, TENANTS, test_end)
    try:
        inj.send(BLUE.up(pkts[0]))                                   # metric 10 wins
        gen = gw.request("apply", ops=[{"op": "del", "kind": "route", "rdid": 1,
                                        "prefix": prefix, "next_hop": APPLIANCE}])["generation"]
        inj.send(BLUE.up(pkts[1]))                                   # only metric 20 left
        gw.request("apply", ops=[{"op": "set", "kind": "route", "rdid": 1, "prefix": prefix,
                                  "next_hop": APPLIANCE, "metric": 30}])
        inj.send(BLUE.up(pkts[2]))                                   # 20 still beats 30
        live = gw.counters()
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    assert gen == 2 and live["generation"] == 3
    assert gw.sent(FABRIC) == [to_appliance(pkts[0], 1), to_appliance(pkts[1], 2),
                               to_appliance(pkts[2], 2)]
    assert gw.sent(TENANTS) == []
    assert_drops(gw.final_counters())


def test_a_new_subnet_never_inherits_a_deleted_ones_counters_live(tmp_path, veth):
    """Subnets come and go on the same prefix while the gateway runs. One deleted in
    the batch that creates the next must not hand it its counter slot (a packet in
    flight may still carry the old subnet's record); a slot given out in a later
    batch has had its counters cleared."""
    gw_end, test_end = veth
    vm, vm_mac = "10.2.0.5", "00:15:5d:b2:00:05"

    def make(vsid):
        return [{"op": "set", "kind": "subnet", "rdid": 1, "vsid": vsid, "prefix": "10.2.0.0/24"},
                {"op": "set", "kind": "record", **record(vsid, vm, vm_mac, BLUE.pa)}]

    def remove(vsid):
        return [{"op": "del", "kind": "record", "vsid": vsid, "ca": vm},
                {"op": "del", "kind": "subnet", "vsid": vsid}]

    pkts = [udp(BLUE.host, vm, 7000 + i, 80, b"subnet %d" % i, id=i) for i in range(4)]
    gw = live_gateway(tmp_path, redblue_policy(), gw_end)
    inj = Injector(gw, TENANTS, test_end)
    try:
        gw.request("apply", ops=make(5002))
        inj.send(BLUE.up(pkts[0]), BLUE.up(pkts[1]))
        gw.request("apply", ops=remove(5002) + make(5003))      # one batch
        inj.send(BLUE.up(pkts[2]))
        live_5003 = gw.request("show", what="vsid", vsid=5003)
        gw.request("apply", ops=remove(5003))
        gw.request("apply", ops=make(5004))                     # may take a used slot
        inj.send(BLUE.up(pkts[3]))
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    vsids = [5002, 5002, 5003, 5004]
    assert gw.sent(FABRIC) == [expected_encap(p, vsid=v, pa=BLUE.pa, ca_mac=vm_mac,
                                              fabric_mac=BLUE.pa_mac)
                               for p, v in zip(pkts, vsids)]
    assert {k: live_5003[k] for k in ("encap_pkts", "encap_bytes")} == {
        "encap_pkts": 1, "encap_bytes": inner_frame_len(pkts[2])}
    assert vsid_counters(gw.final_counters(), 5004) == traffic(encap=[pkts[3]])
    assert_drops(gw.final_counters())


def run_phases(tmp_path, veth, pol, phases):
    """Live: for each phase (ops, [(packet, where)]), apply its ops, then send its
    packets from Blue's VLAN; check each went where it says (None: the router on
    VLAN 100, 0: Blue's VM, 1 or 2: that appliance, anything else: dropped).
    Returns the stopped gateway."""
    gw_end, test_end = veth
    gw = live_gateway(tmp_path, pol, gw_end)
    inj = Injector(gw, TENANTS, test_end)
    try:
        for ops, sends in phases:
            if ops:
                gw.request("apply", ops=ops)
            for p, _ in sends:
                inj.send(BLUE.up(p))
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    fabric, tenants = [], []
    for p, where in (x for _, sends in phases for x in sends):
        if where is None:
            tenants.append(expected_customer(p, vlan=100, dst_mac=ROUTER_MAC))
        elif where == 0:
            fabric.append(BLUE.encap(p))
        elif where in (1, 2):
            fabric.append(to_appliance(p, where))
    assert gw.sent(FABRIC) == fabric
    assert gw.sent(TENANTS) == tenants
    return gw


def numbered_udp(tag: bytes, sport: int):
    """A packet maker from Blue's host: each packet with its own port, id and payload."""
    n = iter(range(100))

    def pkt(dst):
        i = next(n)
        return udp(BLUE.host, dst, sport + i, 80, tag + b" %d" % i, id=i)
    return pkt


def del_route(prefix, next_hop):
    return {"op": "del", "kind": "route", "rdid": 1, "prefix": prefix, "next_hop": next_hop}


def test_longest_prefix_across_lengths_and_live_deletes(tmp_path, veth):
    """Nested routes on both sides of the worker's /16 and /24 length filters:
    each destination takes its longest match, a block with long routes still
    falls back to shorter ones, and deleting the longer routes live hands
    their addresses to the next shorter one."""
    pol = routes_policy([{"prefix": "0.0.0.0/0", "next_hop": ROUTER},
                         {"prefix": "10.0.0.0/8", "next_hop": APPLIANCE},
                         {"prefix": "10.20.16.0/20", "next_hop": APPLIANCE2},
                         {"prefix": "10.20.16.64/26", "next_hop": APPLIANCE},
                         {"prefix": "10.20.16.70/32", "next_hop": APPLIANCE2}])
    pkt = numbered_udp(b"lpm", 7000)
    dsts = [("10.20.16.70", 2), ("10.20.16.71", 1), ("10.20.17.1", 2), ("10.20.32.1", 1),
            ("10.99.0.1", 1), (VM_CA, 0), ("8.8.4.4", None)]
    phases = [(None, dsts),
              ([del_route("10.20.16.70/32", APPLIANCE2)],              # the /32 deleted
               [("10.20.16.70", 1), ("10.20.16.71", 1)]),
              ([del_route("10.20.16.64/26", APPLIANCE)],               # the /26 deleted too
               [("10.20.16.70", 2), ("10.20.16.71", 2)])]
    gw = run_phases(tmp_path, veth, pol,
                    [(ops, [(pkt(d), w) for d, w in sends]) for ops, sends in phases])
    assert_drops(gw.final_counters())


def test_routes_inside_a_virtual_subnet_override_its_records_live(tmp_path, veth):
    """A customer packet to a CA with a record goes straight to it, unless a longer
    route covers the CA: a /29 to an appliance and a /32 to an on-premises router
    inside 10.1.1.0/24, added and deleted live."""
    inside = [{"op": "set", "kind": "route", "rdid": 1, "prefix": "10.1.1.0/29",
               "next_hop": APPLIANCE},
              {"op": "set", "kind": "route", "rdid": 1, "prefix": VM_CA + "/32",
               "next_hop": ROUTER}]
    pkt = numbered_udp(b"inside", 7100)
    phases = [(None, [(VM_CA, 0), (APPLIANCE2, 2)]),                          # records
              (inside, [(VM_CA, None), ("10.1.1.6", 1), (APPLIANCE2, 2)]),     # the routes
              ([del_route(o["prefix"], o["next_hop"]) for o in inside],
               [(VM_CA, 0), ("10.1.1.6", "no record"), (APPLIANCE2, 2)])]
    gw = run_phases(tmp_path, veth, routes_policy([]),
                    [(ops, [(pkt(d), w) for d, w in sends]) for ops, sends in phases])
    assert_drops(gw.final_counters(), no_lookup_record=1)


def test_fabric_packets_to_records_follow_routes_inside_their_subnet(tmp_path):
    """From the fabric too (the second appliance's host, in VSID 5001), a packet to a
    CA with a record goes straight to it, and where routes lie inside the subnet (a /29
    to an appliance, a /32 to an on-premises router) they win."""
    pkts = [udp(APPLIANCE2, VM_CA, 7200, 80, b"to the vm", id=1),
            udp(APPLIANCE2, "10.1.1.6", 7201, 80, b"inside the /29", id=2),
            udp(APPLIANCE2, APPLIANCE, 7202, 80, b"to the first appliance", id=3)]
    fabric = [nvgre_frame(APPLIANCE2_PA, 5001, APPLIANCE2_MAC, p, outer_src_mac=APPLIANCE2_PA_MAC)
              for p in pkts]
    inside = [{"prefix": "10.1.1.0/29", "next_hop": APPLIANCE},
              {"prefix": VM_CA + "/32", "next_hop": ROUTER}]

    for d in ("records", "routes"):
        (tmp_path / d).mkdir()
    gw, out = run_nvgre(tmp_path / "records", routes_policy([]), fabric=fabric)
    assert_packets(out[FABRIC], [BLUE.encap(pkts[0]), to_appliance(pkts[2])])
    assert out[TENANTS] == []
    assert_drops(gw.final_counters(), no_lookup_record=1)          # 10.1.1.6: no record

    gw, out = run_nvgre(tmp_path / "routes", routes_policy(inside), fabric=fabric)
    assert_packets(out[FABRIC], [to_appliance(pkts[1]), to_appliance(pkts[2])])
    assert out[TENANTS] == [expected_customer(pkts[0], vlan=100, dst_mac=ROUTER_MAC)]
    assert_drops(gw.final_counters())


# -- 5. provider MTU and ICMP fragmentation needed ------------------------------------


def frag_needed(orig: IP, mtu: int, tenant=BLUE) -> bytes:
    """The ICMP type 3 code 4 the gateway sends the on-premises sender of `orig`."""
    return bytes(Ether(dst=tenant.host_mac, src=CUSTOMER_MAC) / Dot1Q(vlan=tenant.vlan) /
                 IP(src=tenant.attach, dst=orig.src, ttl=64, id=0, flags=0, tos=0, proto=1) /
                 ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(bytes(orig)[:28]))


def test_mtu_exceeded_answers_fragmentation_needed(tmp_path):
    pol = redblue_policy()
    pol["provider"]["mtu"] = 1400                       # inner IP at most 1400 - 42 = 1358
    big_df = sized_udp(BLUE.host, VM_CA, 1400, 5000, 6000, flags="DF", id=11)
    big = sized_udp(BLUE.host, VM_CA, 1400, 5001, 6000, id=12)           # no DF: no ICMP
    fits = sized_udp(BLUE.host, VM_CA, 1358, 5002, 6000, flags="DF", id=13)
    one_over = sized_udp(BLUE.host, VM_CA, 1359, 5003, 6000, flags="DF", id=14)
    # Too big with DF too, but never answered with an ICMP error (RFC 1812 4.3.2.7):
    # an ICMP error itself, and a fragment after the first.
    icmp_error = IP(src=BLUE.host, dst=VM_CA, flags="DF", id=15) / \
        ICMP(type=3, code=1) / Raw(bytes(1400))
    later_fragment = IP(src=BLUE.host, dst=VM_CA, flags="DF", frag=185, proto=17, id=16) / \
        Raw(bytes(1400))
    gw, out = run_nvgre(tmp_path, pol, tenants=[BLUE.up(p) for p in (
        big_df, big, fits, one_over, icmp_error, later_fragment)])

    encap = BLUE.encap(fits)
    assert len(encap) == 14 + 1400
    assert_packets(out[FABRIC], [encap])
    assert_packets(out[TENANTS], [frag_needed(big_df, 1358), frag_needed(one_over, 1358)])
    for frame, orig in zip(sorted(out[TENANTS], key=len), (big_df, one_over)):
        icmp = Ether(frame)[ICMP]
        assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 1358)
        assert bytes(icmp.payload)[:20] == bytes(orig)[:20]      # the header as received
    final = gw.final_counters()
    assert_drops(final, mtu_exceeded=5)
    assert exceptions(final) == {"frag_needed": 2, "ignored": 2}
    assert vsid_counters(final, BLUE.vsid) == traffic(encap=[fits])


def test_a_policy_file_an_earlier_version_took_still_starts_the_gateway(tmp_path):
    """A rule added in session 27 (a neighbour needs its VLAN attached) must not keep a
    gateway with an older policy file from starting: it starts, with a warning; a fault
    of every time (a CA outside its subnet) still stops it, with one line."""
    pol = redblue_policy()
    pol["neighbours"].append({"vlan": 300, "ip": "172.16.9.9", "mac": "02:00:00:00:09:09"})
    gw = GatewayProcess(tmp_path / "old", nvgre_ports(),
                        nvgre_body(write_policy(tmp_path, pol, "old.json"))).start()
    try:
        assert gw.request("show", what="policy")["generation"] == 1
    finally:
        assert gw.stop() == 0, gw.stderr
    assert '"policy_breaks_a_rule"' in gw.stderr
    assert "neighbour 172.16.9.9: VLAN 300 is not attached" in gw.stderr
    pol["records"].append(record(5001, "10.9.9.9", "00:15:5d:b1:09:09", "192.168.1.10"))
    bad = GatewayProcess(tmp_path / "bad", nvgre_ports(),
                         nvgre_body(write_policy(tmp_path, pol, "bad.json")))
    p = subprocess.run(bad.command("--config", str(bad.config)), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().endswith("lookup record 10.9.9.9 is outside virtual subnet 5001 "
                                     "(10.1.1.0/24)"), p.stderr


def test_packets_past_the_customer_ports_mtu_are_counted_not_sent(tmp_path):
    """The customer port's MTU bounds what goes onto a VLAN (decapsulated here): a
    bigger packet was handed to the NIC, counted as sent, and dropped by it unseen."""
    fits = sized_udp(VM_CA, BLUE.host, 1400, 80, 5000, id=21)
    over = sized_udp(VM_CA, BLUE.host, 1401, 80, 5001, id=22)
    path = write_policy(tmp_path, redblue_policy())
    ports = nvgre_ports(fabric=[BLUE.down(fits), BLUE.down(over)])
    ports[1].extra = "mtu = 1400"
    gw, out = run_pcap(tmp_path, ports, nvgre_body(path))
    assert_packets(out[TENANTS], [BLUE.decap(fits)])
    final = gw.final_counters()
    assert_drops(final, mtu_exceeded=1)
    assert final["ports"][1]["tx_pkts"] == 1


# -- 6. ARP, ping, unresolved next hops -----------------------------------------------

PROBE_MAC, PROBE_IP = "00:15:5d:00:00:99", "192.168.1.99"     # a fabric host, no neighbour entry
ONPREM_MAC, ONPREM_IP = "02:00:00:00:01:20", "172.16.1.20"    # on-prem hosts, no entries
RED_ONPREM_MAC, RED_ONPREM_IP = "02:00:00:00:02:20", "172.16.2.20"


def ipv4_checksum(header: bytes) -> int:
    s = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def nvgre_reply(request_frame, inner) -> bytes:
    """The gateway's answer inside the tunnel a request came in: outer MACs and IPs
    swapped, an outer header of ours (DF, TTL 64, ID 0, TOS 0), the GRE key as
    received."""
    req = Ether(bytes(request_frame))
    return bytes(Ether(dst=req.src, src=PROVIDER_MAC) /
                 IP(src=req[IP].dst, dst=req[IP].src, ttl=64, id=0, flags="DF", tos=0) /
                 GRE(key_present=1, proto=0x6558, key=req[GRE].key) / inner)


def test_arp_and_ping_are_answered(tmp_path):
    pol = redblue_policy()
    pol["records"].append(record(5001, "10.1.1.9", "00:15:5d:b1:00:09", "192.168.1.12"))
    payload = bytes(range(32))
    prov_arp = Ether(dst=BROADCAST, src=PROBE_MAC) / arp_request(PROBE_MAC, PROBE_IP, GW_PA)
    prov_ping = Ether(dst=PROVIDER_MAC, src=PROBE_MAC) / \
        IP(src=PROBE_IP, dst=GW_PA, id=77, ttl=55) / ICMP(id=0x4242, seq=1) / Raw(payload)
    vs_arp = dict(inner_dst_mac=BROADCAST, flow=0x33, ttl=60, ip_id=0x1234)
    arp_gw = BLUE.down(arp_request(BLUE.vm_mac, VM_CA, "10.1.1.1"), **vs_arp)
    arp_ca = BLUE.down(arp_request(BLUE.vm_mac, VM_CA, "10.1.1.9"), **vs_arp)
    arp_none = BLUE.down(arp_request(BLUE.vm_mac, VM_CA, "10.1.1.200"), **vs_arp)
    gw_ping_ip = IP(src=VM_CA, dst="10.1.1.1", id=5, ttl=33) / ICMP(id=9, seq=2) / Raw(payload)
    gw_ping = BLUE.down(gw_ping_ip, flow=0x44)
    # Not answered: ARP whose sender does not live at the outer source (Blue's CA
    # claimed from Red's PA; a CA with no record), a ping that is a fragment.
    arp_from_red = nvgre_frame(RED.pa, BLUE.vsid, BLUE.vm_mac,
                               arp_request(BLUE.vm_mac, VM_CA, "10.1.1.9"),
                               inner_dst_mac=BROADCAST, outer_src_mac=RED.pa_mac)
    arp_no_sender = BLUE.down(arp_request(BLUE.vm_mac, "10.1.1.200", "10.1.1.9"), **vs_arp)
    frag_ping_ip = IP(src=VM_CA, dst="10.1.1.1", id=6, flags="MF") / ICMP(id=9, seq=3) / \
        Raw(payload)
    frag_ping = BLUE.down(frag_ping_ip)
    # The sender's outer flags are not ours to keep: DF clear, a TOS, answered with DF
    nodf_ping_ip = IP(src=VM_CA, dst="10.1.1.1", id=7, ttl=33) / ICMP(id=9, seq=4) / \
        Raw(payload)
    nodf_ping = Ether(bytes(BLUE.down(nodf_ping_ip, flow=0x45)))
    nodf_ping[IP].flags, nodf_ping[IP].tos, nodf_ping[IP].chksum = 0, 0x10, None
    # An ARP past the outer packet's end (its total length stops at the inner
    # Ethernet header; the ARP is trailing bytes): not a request, ignored
    cut = bytearray(bytes(BLUE.down(arp_request(BLUE.vm_mac, VM_CA, "10.1.1.1"), **vs_arp)))
    cut[16:18] = (20 + 8 + 14).to_bytes(2, "big")          # the outer total length
    cut[24:26] = bytes(2)
    cut[24:26] = ipv4_checksum(bytes(cut[14:34])).to_bytes(2, "big")
    arp_cut = bytes(cut)
    cust_arp = customer_frame(100, ONPREM_MAC, arp_request(ONPREM_MAC, ONPREM_IP, BLUE.attach),
                              dst_mac=BROADCAST)
    red_arp = customer_frame(200, RED_ONPREM_MAC,
                             arp_request(RED_ONPREM_MAC, RED_ONPREM_IP, RED.attach),
                             dst_mac=BROADCAST)
    cust_ping = BLUE.up(IP(src=BLUE.host, dst=BLUE.attach, id=8, ttl=20) /
                        ICMP(id=0x77, seq=3) / Raw(payload))
    gw, out = run_nvgre(tmp_path, pol,
                        fabric=[prov_arp, prov_ping, arp_gw, arp_ca, arp_none, gw_ping,
                                arp_from_red, arp_no_sender, frag_ping, nodf_ping, arp_cut],
                        tenants=[cust_arp, red_arp, cust_ping])

    assert_packets(out[FABRIC], [
        Ether(dst=PROBE_MAC, src=PROVIDER_MAC) /
        arp_reply(PROVIDER_MAC, GW_PA, PROBE_MAC, PROBE_IP),
        Ether(dst=PROBE_MAC, src=PROVIDER_MAC) /
        IP(src=GW_PA, dst=PROBE_IP, id=77, ttl=64) / ICMP(type=0, id=0x4242, seq=1) / Raw(payload),
        nvgre_reply(arp_gw, Ether(dst=BLUE.vm_mac, src=PROVIDER_MAC) /
                    arp_reply(PROVIDER_MAC, "10.1.1.1", BLUE.vm_mac, VM_CA)),
        nvgre_reply(arp_ca, Ether(dst=BLUE.vm_mac, src="00:15:5d:b1:00:09") /
                    arp_reply("00:15:5d:b1:00:09", "10.1.1.9", BLUE.vm_mac, VM_CA)),
        nvgre_reply(gw_ping, Ether(dst=BLUE.vm_mac, src=PROVIDER_MAC) /
                    IP(src="10.1.1.1", dst=VM_CA, id=5, ttl=64) / ICMP(type=0, id=9, seq=2) /
                    Raw(payload)),
        nvgre_reply(nodf_ping, Ether(dst=BLUE.vm_mac, src=PROVIDER_MAC) /
                    IP(src="10.1.1.1", dst=VM_CA, id=7, ttl=64) / ICMP(type=0, id=9, seq=4) /
                    Raw(payload)),
    ])
    assert_packets(out[TENANTS], [
        Ether(dst=ONPREM_MAC, src=CUSTOMER_MAC) / Dot1Q(vlan=100) /
        arp_reply(CUSTOMER_MAC, BLUE.attach, ONPREM_MAC, ONPREM_IP),
        Ether(dst=RED_ONPREM_MAC, src=CUSTOMER_MAC) / Dot1Q(vlan=200) /
        arp_reply(CUSTOMER_MAC, RED.attach, RED_ONPREM_MAC, RED_ONPREM_IP),
        Ether(dst=BLUE.host_mac, src=CUSTOMER_MAC) / Dot1Q(vlan=100) /
        IP(src=BLUE.attach, dst=BLUE.host, id=8, ttl=64) / ICMP(type=0, id=0x77, seq=3) /
        Raw(payload),
    ])
    final = gw.final_counters()
    assert exceptions(final) == {"arp_replies": 5, "echo_replies": 4, "arp_no_record": 1,
                                 "arp_spoofed": 2, "ignored": 2}
    assert_drops(final)
    assert vsid_counters(final, BLUE.vsid) == traffic(decap=[gw_ping_ip, frag_ping_ip,
                                                             nodf_ping_ip])


def test_unresolved_next_hop_is_dropped_and_arped_once(tmp_path):
    """Without a static neighbour for Blue's PA, packets to Blue's VM wait for ARP;
    the same for an on-premises host on VLAN 100 with no neighbour entry. The link's
    own addresses (ours, its network and broadcast) are never ARPed for: an entry for
    ours would let any host on the link take its traffic by claiming it."""
    pol = redblue_policy()
    pol["neighbours"] = [n for n in pol["neighbours"] if n["ip"] != BLUE.pa]
    assert len(pol["neighbours"]) == 3
    ups = [udp(BLUE.host, VM_CA, 7000 + i, 80, b"wait", id=i) for i in range(2)]
    downs = [udp(VM_CA, ONPREM_IP, 80, 7000 + i, b"wait", id=i) for i in range(2)]
    downs += [udp(VM_CA, ip, 80, 7002, b"no host", id=2)
              for ip in (BLUE.attach, "172.16.1.0", "172.16.1.255")]
    gw, out = run_nvgre(tmp_path, pol, fabric=[BLUE.down(p) for p in downs],
                        tenants=[BLUE.up(p) for p in ups])

    assert_packets(out[FABRIC], [
        Ether(dst=BROADCAST, src=PROVIDER_MAC) /
        arp_request(PROVIDER_MAC, GW_PA, BLUE.pa)])
    assert_packets(out[TENANTS], [
        Ether(dst=BROADCAST, src=CUSTOMER_MAC) / Dot1Q(vlan=100) /
        arp_request(CUSTOMER_MAC, BLUE.attach, ONPREM_IP)])
    final = gw.final_counters()
    assert_drops(final, no_neighbour=7)
    assert exceptions(final) == {"arp_requests": 2, "resolve_not_host": 3}


def test_hosts_resolved_for_traffic_take_at_most_a_quarter_of_the_neighbour_table(tmp_path):
    """A VM sending to many unresolved hosts of an attached subnet cannot fill the
    neighbour table (which never frees an entry): the exception thread makes entries
    for at most a quarter of it, then counts resolve_refused; policy keeps the rest,
    so a batch that fits is applied and one that does not is refused whole."""
    hosts = [f"172.16.1.{i}" for i in range(100, 180)]
    downs = [udp(VM_CA, h, 80, 7000, b"scan", id=i) for i, h in enumerate(hosts)]
    path = write_policy(tmp_path, redblue_policy())
    gw = GatewayProcess(tmp_path, nvgre_ports(fabric=[BLUE.down(p) for p in downs]),
                        nvgre_body(path, neighbours=256)).start()
    try:
        for _ in range(100):
            exc = gw.counters()["exceptions"]
            if exc["arp_requests"] + exc["resolve_refused"] == len(hosts):
                break
            time.sleep(0.05)
        tables = gw.request("show", what="tables")
        assert tables["neighbours_learned"] == 64, tables
        room = 256 - tables["neighbours"]            # policy's own entries stay free
        static = [{"op": "set", "kind": "neighbour", "vlan": 0,
                   "ip": f"192.168.{3 + i // 250}.{1 + i % 250}", "mac": "02:00:00:00:02:%02x" % i}
                  for i in range(room + 1)]
        before = gw.request("show", what="policy")
        with pytest.raises(NvgwError, match="257 neighbour entries .* and 0 kept for "
                                            "hosts the gateway resolves exceed the table "
                                            "size of 256"):
            gw.request("apply", ops=static)
        assert gw.request("show", what="policy") == before
        assert gw.request("show", what="tables") == tables
        gw.request("apply", ops=static[:room])
        assert gw.request("show", what="tables")["neighbours"] == 256
    finally:
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    final = gw.final_counters()
    assert_drops(final, no_neighbour=len(hosts))
    assert exceptions(final) == {"arp_requests": 64, "resolve_refused": 16}
    assert len(gw.sent(TENANTS)) == 64                   # one ARP request per entry


def live_decap(tmp_path, veth, pol):
    """A gateway whose fabric port receives from the veth, its customer output in a
    pcap; send(dst, mac) sends Blue's VM's packet to dst and notes the frame Blue's
    VLAN should get (to mac; None: none) in `sent`."""
    gw_end, test_end = veth
    path = write_policy(tmp_path, pol)
    ports = [live_port(FABRIC, "provider", 0, gw_end, tmp_path), PcapPort(TENANTS, "customer")]
    gw = GatewayProcess(tmp_path, ports, nvgre_body(path)).start()
    inj = Injector(gw, FABRIC, test_end)
    sent = []

    def send(dst, mac):
        ip = udp(VM_CA, dst, 80, 5000 + len(sent), b"to %s" % dst.encode(), id=len(sent))
        inj.send(BLUE.down(ip))
        sent.append(BLUE.decap(ip, dst_mac=mac) if mac else None)
    return gw, inj, send, sent


def test_on_link_neighbours_by_host_number_follow_live_changes(tmp_path, veth):
    """An attachment of up to 1,024 addresses keeps its link's neighbours by host
    number, wider ones leave them to the neighbour table. Decap to hosts on Blue's
    link must reach the right MAC whichever made the entry: a neighbour made after
    the attachment (the policy load sets attachments first; a live add), an
    attachment widened to a /16 (none kept) or narrowed again (its entries filled
    from the table); a host with no neighbour is asked for, once, and its packet
    counted."""
    late, late_mac = "172.16.1.50", "02:00:00:00:01:50"
    gw, inj, send, sent = live_decap(tmp_path, veth, redblue_policy())

    def attach(prefix):
        gw.request("apply", ops=[{"op": "set", "kind": "attachment", "rdid": BLUE.rdid,
                                  "vlan": BLUE.vlan, "address": f"172.16.1.1/{prefix}"}])

    try:
        send(BLUE.host, BLUE.host_mac)                      # entry made by the neighbour
        gw.request("apply", ops=[{"op": "set", "kind": "neighbour", "vlan": BLUE.vlan,
                                  "ip": late, "mac": late_mac}])
        send(late, late_mac)                                # ... added live
        send("172.16.1.77", None)                           # none: ARP, no_neighbour
        attach(16)
        send(late, late_mac)                                # the neighbour table
        send(BLUE.host, BLUE.host_mac)
        attach(23)
        send(late, late_mac)                                # kept again, from the table
        send(BLUE.host, BLUE.host_mac)
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    out = gw.sent(TENANTS)
    assert [f for f in out if Ether(f).haslayer(IP)] == [f for f in sent if f]
    arps = [Ether(f) for f in out if not Ether(f).haslayer(IP)]
    assert [(a[Dot1Q].vlan, a.pdst) for a in arps] == [(BLUE.vlan, "172.16.1.77")]
    final = gw.final_counters()
    assert_drops(final, no_neighbour=1)
    assert exceptions(final) == {"arp_requests": 1}


def test_routes_inside_a_link_override_its_hosts_live(tmp_path, veth):
    """From the fabric, a host in the subnet of its domain's link is reached without
    a route lookup, unless a longer route covers it: decap to a host under a /26 via
    the on-premises router, added and deleted live, goes to the router while the
    route is there and to the host before and after; a host beside it stays on the
    link throughout."""
    covered, covered_mac = "172.16.1.70", "02:00:00:00:01:70"
    pol = routes_policy([])
    pol["neighbours"].append({"vlan": BLUE.vlan, "ip": covered, "mac": covered_mac})
    inside = {"op": "set", "kind": "route", "rdid": BLUE.rdid, "prefix": "172.16.1.64/26",
              "next_hop": ROUTER}
    gw, inj, send, sent = live_decap(tmp_path, veth, pol)

    try:
        send(covered, covered_mac)
        send(BLUE.host, BLUE.host_mac)
        gw.request("apply", ops=[inside])
        send(covered, ROUTER_MAC)
        send(BLUE.host, BLUE.host_mac)
        gw.request("apply", ops=[del_route(inside["prefix"], ROUTER)])
        send(covered, covered_mac)
        send(BLUE.host, BLUE.host_mac)
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    assert gw.sent(TENANTS) == [f for f in sent if f]
    assert_drops(gw.final_counters())


def test_deleting_a_static_neighbour_live_makes_it_unresolved(tmp_path, veth):
    gw_end, test_end = veth
    pkts = [udp(BLUE.host, VM_CA, 7100 + i, 80, b"live", id=i) for i in range(2)]
    gw = live_gateway(tmp_path, redblue_policy(), gw_end)
    inj = Injector(gw, TENANTS, test_end)
    try:
        inj.send(BLUE.up(pkts[0]))
        gw.request("apply", ops=[{"op": "del", "kind": "neighbour", "ip": BLUE.pa}])
        neighbours = gw.request("show", what="neighbours")
        inj.send(BLUE.up(pkts[1]))
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    assert gw.sent(FABRIC) == [BLUE.encap(pkts[0]),
                               bytes(Ether(dst=BROADCAST, src=PROVIDER_MAC) /
                                     arp_request(PROVIDER_MAC, GW_PA, BLUE.pa))]
    final = gw.final_counters()
    assert_drops(final, no_neighbour=1)
    assert exceptions(final) == {"arp_requests": 1}
    assert [n for n in neighbours if n["ip"] == BLUE.pa] == \
        [{"vlan": 0, "ip": BLUE.pa, "mac": None}]


def test_arp_does_not_override_a_static_neighbour(tmp_path, veth):
    gw_end, test_end = veth
    evil = "66:66:66:66:66:66"
    # A fabric host claims Blue's PA (in a request for some other address).
    claim = Ether(dst=BROADCAST, src=evil) / arp_request(evil, BLUE.pa, "192.168.1.77")
    path = write_policy(tmp_path, redblue_policy())
    ports = [PcapPort(FABRIC, "provider", [claim]),
             live_port(TENANTS, "customer", 1, gw_end, tmp_path)]
    gw = GatewayProcess(tmp_path, ports, nvgre_body(path)).start()
    inj = Injector(gw, TENANTS, test_end)
    pkt = udp(BLUE.host, VM_CA, 7200, 80, b"to blue", id=1)
    try:
        gw.wait_rx(FABRIC, 1)
        deadline = time.monotonic() + 5
        while gw.counters()["exceptions"]["ignored"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)                         # the claim went through the thread
        neighbours = gw.request("show", what="neighbours")
        inj.send(BLUE.up(pkt))
    finally:
        inj.close()
        gw.stop()
    assert gw.returncode == 0, gw.stderr
    assert gw.final_counters()["exceptions"]["ignored"] == 1    # not our address: no reply
    assert gw.sent(FABRIC) == [BLUE.encap(pkt)]                 # to 00:15:5d:00:00:10
    assert [n for n in neighbours if n["ip"] == BLUE.pa] == \
        [{"vlan": 0, "ip": BLUE.pa, "mac": BLUE.pa_mac}]


# -- checksum edge cases (one's complement -0) ----------------------------------------


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def ttl_edge_packet() -> IP:
    """A packet whose header checksum is 0xFEFF at TTL 64, so that at TTL 63 the
    recomputed checksum is 0x0000 (RFC 1624 section 3: HC' = HC + m - m' would
    give 0xFFFF). The checksum is ~(S + id): pick id = 0x0100 - S."""
    c0 = IP(bytes(udp(BLUE.host, VM_CA, 1000, 2000, b"edge", id=0))).chksum
    ip = udp(BLUE.host, VM_CA, 1000, 2000, b"edge", id=ones_add(0x0100, c0))
    assert IP(bytes(ip)).chksum == 0xFEFF
    return ip


def echo_edge_packet() -> IP:
    """An echo request whose ICMP checksum is 0xF7FF: the reply's is 0x0000."""
    c0 = ICMP(bytes(ICMP(type=8, id=0, seq=1) / Raw(b"edge-case-ping!!"))).chksum
    icmp = ICMP(type=8, id=ones_add(0x0800, c0), seq=1) / Raw(b"edge-case-ping!!")
    assert ICMP(bytes(icmp)).chksum == 0xF7FF
    return IP(src=BLUE.host, dst=BLUE.attach, id=3) / icmp


def frag_edge_packet(total=1400, mtu=1358) -> IP:
    """An oversize DF packet whose "fragmentation needed" has ICMP checksum 0x0000:
    the first payload word w is chosen so that the UDP checksum (quoted) makes the
    ICMP sum 0xFFFF."""
    def build(w):
        return udp(BLUE.host, VM_CA, 7000, 7001, w.to_bytes(2, "big") + b"\xab" * (total - 30),
                   flags="DF", id=5)
    base = bytes(build(0))
    s_udp = ~struct.unpack("!H", base[26:28])[0] & 0xFFFF
    msg = bytes(ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(base[:28]))
    rest = msg[:2] + b"\0\0" + msg[4:34] + b"\0\0" + msg[36:]
    w = ones_add(ones_sum(rest), ~s_udp & 0xFFFF)
    ip = build(w)
    assert Ether(frag_needed(ip, mtu))[ICMP].chksum == 0
    return ip


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edges")
    pol = redblue_policy()
    pol["provider"]["mtu"] = 1400
    ttl, echo, frag = ttl_edge_packet(), echo_edge_packet(), frag_edge_packet()
    gw, out = run_nvgre(tmp, pol, tenants=[BLUE.up(ttl), BLUE.up(echo), BLUE.up(frag)])
    return {"ttl": ttl, "echo": echo, "frag": frag, "out": out, "final": gw.final_counters()}


def test_edge_run_counts(edge_run):
    final = edge_run["final"]
    assert_drops(final, mtu_exceeded=1)
    assert exceptions(final) == {"echo_replies": 1, "frag_needed": 1}
    assert len(edge_run["out"][FABRIC]) == 1 and len(edge_run["out"][TENANTS]) == 2


def test_ttl_decrement_checksum_minus_zero(edge_run):
    expected = BLUE.encap(edge_run["ttl"])
    assert Ether(expected)[GRE].payload[IP].chksum == 0x0000
    assert edge_run["out"][FABRIC] == [expected]


def test_echo_reply_checksum_minus_zero(edge_run):
    echo = edge_run["echo"]
    expected = bytes(Ether(dst=BLUE.host_mac, src=CUSTOMER_MAC) / Dot1Q(vlan=100) /
                     IP(src=BLUE.attach, dst=BLUE.host, id=3, ttl=64) /
                     ICMP(type=0, id=echo[ICMP].id, seq=1) / Raw(echo[Raw].load))
    assert Ether(expected)[ICMP].chksum == 0x0000
    assert expected in edge_run["out"][TENANTS]


def test_frag_needed_checksum_zero(edge_run):
    assert frag_needed(edge_run["frag"], 1358) in edge_run["out"][TENANTS]
