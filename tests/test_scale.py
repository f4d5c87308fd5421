"""Table scale: 1,000,000 lookup records and 100,000 routes in 10,000 routing
domains load at start, fit the stated memory budget, and route correctly."""
import json
import random

from scapy.layers.inet import GRE, IP, UDP
from scapy.layers.l2 import Ether

from harness import PcapPort, run_pcap
from nvgw_helpers import expected_encap

DOMAINS, ROUTES_PER_DOMAIN, RECORDS_PER_DOMAIN = 10_000, 10, 100
HOSTS = 1000                      # distinct PAs, each with a static neighbour
PROVIDER_MAC = "02:70:63:61:70:00"
BUDGET_MB = 256                   # README: EAL memory budget of the tables at this scale


def vsid(rd):
    return 10_000 + rd


def ca(i):
    return f"10.0.{i // 250}.{i % 250 + 2}"


def pa(rd, i):
    h = (rd * RECORDS_PER_DOMAIN + i) % HOSTS
    return f"192.168.{h // 250}.{h % 250 + 2}"


def nh_mac(rd, i):
    """The static neighbour MAC of pa(rd, i): our /16 holds every PA, so it is the
    fabric next hop itself."""
    h = (rd * RECORDS_PER_DOMAIN + i) % HOSTS
    return "00:15:5d:ff:%02x:%02x" % (h >> 8, h & 255)


def mac(rd, i):
    return "00:15:%02x:%02x:%02x:%02x" % (rd >> 8, rd & 255, i >> 8, i & 255)


def policy():
    doms, records = [], []
    for rd in range(1, DOMAINS + 1):
        doms.append({"rdid": rd, "subnets": [{"vsid": vsid(rd), "prefix": "10.0.0.0/16"}],
                     "routes": [{"prefix": f"10.{16 + k}.0.0/16", "next_hop": ca(0)}
                                for k in range(ROUTES_PER_DOMAIN)]})
        records += [{"vsid": vsid(rd), "ca": ca(i), "mac": mac(rd, i), "pa": pa(rd, i)}
                    for i in range(RECORDS_PER_DOMAIN)]
    neigh = [{"ip": f"192.168.{h // 250}.{h % 250 + 2}", "mac": "00:15:5d:ff:%02x:%02x"
              % (h >> 8, h & 255)} for h in range(HOSTS)]
    return {"provider": {"addresses": ["192.168.100.1/16"]}, "routing_domains": doms,
            "records": records, "neighbours": neigh}


def nvgre(rd, src_i, dst):
    return (Ether(src="00:15:5d:00:00:01", dst=PROVIDER_MAC) /
            IP(src=pa(rd, src_i), dst="192.168.100.1", flags="DF") /
            GRE(key_present=1, proto=0x6558, key=vsid(rd) << 8) /
            Ether(src=mac(rd, src_i), dst=PROVIDER_MAC) /
            IP(src=ca(src_i), dst=dst, ttl=9) / UDP(sport=7, dport=9))


def test_million_records_hundred_thousand_routes(tmp_path):
    doc = policy()
    assert len(doc["records"]) == 1_000_000
    assert sum(len(d["routes"]) for d in doc["routing_domains"]) == 100_000
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    rng = random.Random(3)
    cases = [(rd, rng.randrange(1, RECORDS_PER_DOMAIN), rng.randrange(1, RECORDS_PER_DOMAIN))
             for rd in [1, DOMAINS] + [rng.randrange(1, DOMAINS + 1) for _ in range(40)]]
    pkts = [nvgre(rd, s, ca(d)) for rd, s, d in cases]                 # hairpin to a record
    pkts += [nvgre(rd, s, f"10.{16 + rd % 10}.3.4") for rd, s, _ in cases]   # appliance route
    body = (f'[pipeline]\nmode = "nvgre"\npolicy = "{tmp_path}/policy.json"\n'
            "[tables]\nrecords = 1048576\nroutes = 131072\nneighbours = 4096\n")
    gw, out = run_pcap(tmp_path / "gw", [PcapPort("fabric", "provider", pkts),
                                         PcapPort("tenants", "customer")], body,
                       memory_mb=1024, start_timeout=120)
    c = gw.final_counters()
    assert c["generation"] == 1
    assert all(v == 0 for v in c["drops"].values()), {k: v for k, v in c["drops"].items() if v}
    # to record d (hairpin), then to the appliance route's next hop ca(0): byte for byte
    dests = [d for _, _, d in cases] + [0] * len(cases)
    expect = [expected_encap(p[GRE].payload[IP], vsid=vsid(rd), pa=pa(rd, d), ca_mac=mac(rd, d),
                             fabric_mac=nh_mac(rd, d), src_pa="192.168.100.1")
              for p, (rd, _, _), d in zip(pkts, cases + cases, dests)]
    assert out["fabric"] == expect
    heap_mb = c["heap"]["allocated"] >> 20
    print(f"EAL heap allocated with 1M records, 100k routes: {heap_mb} MB")
    assert heap_mb <= BUDGET_MB
