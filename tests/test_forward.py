"""The forwarding pipeline moves every packet unchanged and counts it."""
import random

from scapy.layers.inet import IP, UDP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from harness import PcapPort, run_pcap


def mixed_packets(n, seed=7):
    """n frames (bytes) of 60..1514 bytes without FCS, UDP and TCP, sizes spread evenly."""
    rng = random.Random(seed)
    pkts = []
    for i in range(n):
        size = 60 + (i * 1454) // (n - 1) if i % 2 else rng.randint(60, 1514)
        udp = i % 3
        l4 = UDP(sport=1024 + i % 5000, dport=53) if udp else TCP(sport=i % 60000 + 1, dport=80)
        hdr = 14 + 20 + (8 if udp else 20)
        pkt = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                    IP(src="10.0.0.1", dst=f"10.0.{i % 256}.{i // 256 % 256}") / l4 /
                    Raw(bytes([i % 256]) * (size - hdr)))
        assert len(pkt) == size
        pkts.append(pkt)
    return pkts


def test_10000_mixed_packets_come_back_unchanged(tmp_path):
    pkts = mixed_packets(10000)
    sizes = [len(p) for p in pkts]
    assert min(sizes) == 60 and max(sizes) == 1514
    gw, out = run_pcap(tmp_path, [PcapPort("a", "customer", pkts), PcapPort("b", "provider")])

    assert out["b"] == pkts
    assert out["a"] == []
    c = gw.final_counters()
    a, b = c["ports"]
    total = sum(sizes)
    assert (a["rx_pkts"], a["rx_bytes"]) == (10000, total)
    assert (b["tx_pkts"], b["tx_bytes"]) == (10000, total)
    assert (a["tx_pkts"], b["rx_pkts"]) == (0, 0)
    assert a["pmd"]["ipackets"] == 10000 and b["pmd"]["opackets"] == 10000
    assert all(v == 0 for v in c["drops"].values()), c["drops"]
    assert c["workers"][0]["rx_pkts"] == c["workers"][0]["tx_pkts"] == 10000


def test_both_directions_with_two_workers(tmp_path):
    left = mixed_packets(500, seed=1)
    right = mixed_packets(300, seed=2)
    gw, out = run_pcap(tmp_path, [PcapPort("a", "customer", left),
                                  PcapPort("b", "provider", right)], lcores=(1, 2))
    # One rx queue per port: worker 0 receives everything and hands each
    # flow to its owner (software RSS); nothing is lost, and what each
    # worker (tx queue) sent keeps the input order.
    assert sorted(out["b"]) == sorted(left)
    assert sorted(out["a"]) == sorted(right)
    for q in range(2):
        sent = gw.sent_queue("b", q)
        assert sent == [p for p in left if p in set(sent)]
    c = gw.final_counters()
    assert [w["rx_pkts"] for w in c["workers"]] == [800, 0]
    shares = [w["processed"] for w in c["workers"]]
    assert sum(shares) == 800 and min(shares) > 0, shares


def test_counters_are_live_while_running(tmp_path):
    from harness import GatewayProcess
    pkts = mixed_packets(200)
    with GatewayProcess(tmp_path, [PcapPort("a", "customer", pkts),
                                   PcapPort("b", "provider")]) as gw:
        c = gw.wait_rx("a", 200)
        assert c["ports"][1]["tx_pkts"] == 200
        assert c["mempool"]["size"] == 8191
    assert gw.returncode == 0
