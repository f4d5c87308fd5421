"""Several workers with software RSS on the inner headers: traffic of ONE
outer host pair spreads over all workers by inner flow, and every flow
keeps its order (it is processed by one worker and leaves on its queue).
With workers.rss = queues, no hand-off: each worker keeps its own queues'."""
import json
import time
from collections import defaultdict

import pytest
from scapy.layers.inet import GRE, IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from harness import GatewayProcess, PcapPort, read_pcap, run_pcap
from nvgw_helpers import assert_packets, expected_customer, expected_encap, nonzero

PMAC, CMAC = "02:70:63:61:70:00", "02:70:63:61:70:01"
WORKERS = 4
FLOWS, PER_FLOW = 1000, 3
TOLERANCE = 0.25           # each worker's share within 25% of an even split


def policy(tmp_path):
    with open("config/redblue-policy.json") as f:
        doc = json.load(f)
    doc["records"].append({"vsid": 5001, "ca": "10.1.1.9", "mac": "00:15:5d:b1:00:09",
                           "pa": "192.168.1.30", "method": "rewrite"})
    doc["routing_domains"][0]["mappings"] = [{"ca": "172.16.1.10", "pa": "192.168.1.100"}]
    doc["neighbours"].append({"ip": "192.168.1.30", "mac": "00:15:5d:00:00:30"})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return (f'[pipeline]\nmode = "nvgre"\npolicy = "{path}"\n'
            "[tables]\nrecords = 4096\nroutes = 4096\nneighbours = 1024\n")


def flows(make):
    """FLOWS flows x PER_FLOW packets, interleaved; payload = (flow, seq)."""
    return [make(f, bytes(Raw(f"{f}:{s}".encode())))
            for s in range(PER_FLOW) for f in range(FLOWS)]


def nvgre(f, payload):       # ONE outer host pair: Blue's VM host -> the gateway
    inner = IP(src="10.1.1.7", dst="172.16.1.10") / UDP(sport=10000 + f, dport=80) / payload
    return (Ether(src="00:15:5d:00:00:10", dst=PMAC) /
            IP(src="192.168.1.10", dst="192.168.1.1", flags="DF") /
            GRE(key_present=1, proto=0x6558, key=5001 << 8) /
            Ether(src="00:15:5d:b1:00:07", dst=PMAC) / inner)


def rewrite(f, payload):     # one rewritten VM's PA -> our mapped PA
    return (Ether(src="00:15:5d:00:00:30", dst=PMAC) /
            IP(src="192.168.1.30", dst="192.168.1.100") /
            UDP(sport=10000 + f, dport=80) / payload)


def customer(f, payload):    # one on-premises host -> one VM
    return (Ether(src="02:00:00:00:01:10", dst=CMAC) / Dot1Q(vlan=100) /
            IP(src="172.16.1.10", dst="10.1.1.7") / UDP(sport=10000 + f, dport=80) / payload)


HOST_MAC = "02:00:00:00:01:10"         # 172.16.1.10 on VLAN 100 (redblue's neighbour)
TO_BLUE = dict(vsid=5001, pa="192.168.1.10", ca_mac="00:15:5d:b1:00:07",
               fabric_mac="00:15:5d:00:00:10", src_pa="192.168.1.1")


def expected(make, p) -> bytes:
    """What the gateway sends for input frame p of flows(make)."""
    if make is nvgre:            # decapsulated, routed to the host on VLAN 100
        return expected_customer(p[GRE].payload[IP], vlan=100, dst_mac=HOST_MAC)
    if make is customer:         # encapsulated toward Blue's VM
        return expected_encap(p[IP], **TO_BLUE)
    # rewrite: the VM's PA back to its CA, our mapped PA to the host's; one hop routed
    ip = p[IP].copy()
    ip.src, ip.dst, ip.ttl, ip.chksum, ip[UDP].chksum = \
        "10.1.1.9", "172.16.1.10", ip.ttl - 1, None, None
    return bytes(Ether(dst=HOST_MAC, src=CMAC) / Dot1Q(vlan=100) / ip)


def check_spread_and_order(gw, sent, n_pkts):
    c = gw.final_counters()
    assert all(v == 0 for v in c["drops"].values()), c["drops"]
    shares = [w["processed"] for w in c["workers"]]
    assert sum(shares) == n_pkts
    even = n_pkts / WORKERS
    assert all(abs(s - even) <= TOLERANCE * even for s in shares), shares
    # Each worker has its own TX queue (its own pcap): a flow must appear on
    # exactly one, in its original order.
    where, order = {}, defaultdict(list)
    for q, frames in enumerate(sent):
        for frame in frames:
            flow, seq = bytes(Ether(frame)[Raw].load).decode().split(":")
            assert where.setdefault(flow, q) == q, f"flow {flow} on two workers"
            order[flow].append(int(seq))
    assert len(order) == FLOWS
    assert all(seqs == list(range(PER_FLOW)) for seqs in order.values())
    return shares


@pytest.mark.parametrize("make, port, out", [
    (nvgre, "fabric", "tenants"),
    (rewrite, "fabric", "tenants"),
    (customer, "tenants", "fabric"),
], ids=["nvgre", "rewrite", "customer"])
def test_one_host_pair_spreads_by_inner_flow(tmp_path, make, port, out):
    pkts = flows(make)
    ports = [PcapPort("fabric", "provider", pkts if port == "fabric" else []),
             PcapPort("tenants", "customer", pkts if port == "tenants" else [])]
    gw, _ = run_pcap(tmp_path, ports, policy(tmp_path),
                     lcores=tuple(range(1, WORKERS + 1)))
    sent = [read_pcap(tmp_path / f"{out}.tx{q}.pcap") for q in range(WORKERS)]
    shares = check_spread_and_order(gw, sent, len(pkts))
    assert_packets([f for q in sent for f in q], [expected(make, p) for p in pkts])
    print(f"{make.__name__}: packets per worker {shares}")


def test_rss_queues_keeps_each_queue_on_its_worker(tmp_path):
    """workers.rss = queues: what RX queue q brings in, worker q routes, encapsulates
    and sends on its own TX queue, in order; nothing is handed over."""
    per_queue = [[customer(f, bytes(Raw(f"{f}:{s}".encode())))
                  for s in range(PER_FLOW) for f in range(q * 100, q * 100 + 100)]
                 for q in range(2)]
    ports = [PcapPort("fabric", "provider", []),
             PcapPort("tenants", "customer", per_queue[0] + per_queue[1], queues=2)]
    gw, _ = run_pcap(tmp_path, ports, policy(tmp_path), lcores=(1, 2), rss="queues")
    c = gw.final_counters()
    assert all(v == 0 for v in c["drops"].values()), c["drops"]
    assert [w["processed"] for w in c["workers"]] == [300, 300]
    assert [w["handed_off"] for w in c["workers"]] == [0, 0]
    for q in range(2):          # byte for byte, in order
        assert read_pcap(tmp_path / f"fabric.tx{q}.pcap") == \
            [expected_encap(p[IP], **TO_BLUE) for p in per_queue[q]]




def test_handed_off_packets_keep_their_input_port(tmp_path):
    """net_ring does not set an mbuf's input port on receive: the worker that hands a
    packet over must. On-premises traffic to Blue's rewritten VM leaves rewritten on
    the fabric port, a net_ring whose queue loops TX back to RX (worker 0's; worker
    1's queue is not read), and comes in again there with new addresses, so a new
    owner for about half of it: every frame must be dropped as a fabric frame for
    another host, whichever worker takes it."""
    body = policy(tmp_path)
    doc = json.loads((tmp_path / "policy.json").read_text())
    for v in range(8):      # VMs on PAs of their own: the flow hash (CRC) is linear,
        # so one address change moves every flow's owner alike; eight move them apart
        doc["records"].append({"vsid": 5001, "ca": f"10.1.1.{20 + v}",
                               "mac": f"00:15:5d:b1:00:{20 + v:02x}",
                               "pa": f"192.168.1.{40 + v}", "method": "rewrite"})
        doc["neighbours"].append({"ip": f"192.168.1.{40 + v}",
                                  "mac": f"00:15:5d:00:00:{40 + v:02x}"})
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    # The tenants port is the only net_pcap one here: it has the first pcap MAC.
    ups = [Ether(src="02:00:00:00:01:10", dst=PMAC) / Dot1Q(vlan=100) /
           IP(src="172.16.1.10", dst=f"10.1.1.{20 + f % 8}") / UDP(sport=10000 + f, dport=80) /
           Raw(f"{f}".encode()) for f in range(FLOWS)]
    ring = '[[ports]]\nname = "fabric"\nrole = "provider"\ndevice = "net_ring0"\n'
    gw = GatewayProcess(tmp_path, [ring, PcapPort("tenants", "customer", ups)],
                        body, lcores=(1, 2)).start()
    try:
        gw.wait_rx("tenants", FLOWS)
        back = next(p for p in gw.wait_rx("fabric", 1)["ports"] if p["name"] == "fabric")
    finally:
        rc = gw.stop()
    assert rc == 0, gw.stderr
    c = gw.final_counters()
    looped = back["rx_pkts"]
    assert FLOWS // 4 < looped < FLOWS * 3 // 4            # worker 0's share of the flows
    assert nonzero(c["drops"]) == {"not_for_gateway": looped}, c["drops"]
    # worker 0 handed over the customer frames it does not own, then looped ones
    assert c["workers"][0]["handed_off"] > FLOWS - looped + looped // 8, c["workers"]


def test_packets_in_flight_between_workers_at_stop_are_counted(tmp_path):
    """Software RSS on two workers (sharing a CPU on a machine of two: harness.pin), ports
    that bring in packets without end (net_null): at the stop, what one worker had handed
    to the other, stopped first, was freed uncounted. Now every packet taken in is sent
    or dropped by name (`stopped`, whose count is the race's)."""
    ports = [f'[[ports]]\nname = "{n}"\nrole = "{r}"\ndevice = "net_null{i}"\nqueues = 2\n'
             for i, (n, r) in enumerate((("a", "customer"), ("b", "provider")))]
    gw = GatewayProcess(tmp_path, ports, "", lcores=(1, 2)).start()
    try:
        time.sleep(0.5)
    finally:
        rc = gw.stop()
    assert rc == 0, gw.stderr
    c = gw.final_counters()
    assert c["workers"][1]["handed_off"] > 0, c["workers"]
    rx = sum(p["rx_pkts"] for p in c["ports"])
    tx = sum(p["tx_pkts"] for p in c["ports"])
    assert set(nonzero(c["drops"])) <= {"dist_full", "stopped"}, c["drops"]
    assert rx == tx + sum(c["drops"].values()), (rx, tx, nonzero(c["drops"]))
