"""Live migration under traffic: a lookup record moves to a new PA while packets flow.

The gateway runs in a private network namespace on af_packet ports over veth pairs
(tests/netns.py); tests/traffic_gen.py sends numbered UDP packets from Blue's on-prem host
(VLAN 100 on cus1) at a fixed rate and captures what the gateway encapsulates onto fab1.
About 0.5 s in, the test migrates 10.1.1.7 of VSID 5001 from PA 192.168.1.10 to 192.168.1.12.
Expected: every packet arrives exactly once, packets switch from the old PA to the new one at
one point in the sequence, and every packet sent after the migrate ack goes to the new PA.
"""
from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from netns import MACS, Netns, NetnsGateway, Traffic, unavailable
from nvgw_helpers import expected_encap

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

ROOT = Path(__file__).resolve().parent.parent
N = 3000
RATE = 2000.0
MIGRATE_AT = 0.5            # seconds after the first send
OLD_PA, NEW_PA, RED_PA = "192.168.1.10", "192.168.1.12", "192.168.1.11"
PROVIDER_PA = "192.168.1.1"
PA_MACS = {"192.168.1.10": "00:15:5d:00:00:10", "192.168.1.11": "00:15:5d:00:00:11",
           "192.168.1.12": "00:15:5d:00:00:12"}
MAGIC = b"NVGW"
PAYLOAD = struct.Struct("!4sBI")            # magic, tenant, sequence number
# tenant -> (vlan, on-prem host ip, on-prem host mac, vsid, record mac)
TENANTS = {
    "blue": (100, "172.16.1.10", "02:00:00:00:01:10", 5001, "00:15:5d:b1:00:07"),
    "red": (200, "172.16.2.10", "02:00:00:00:02:10", 6001, "00:15:5d:7e:00:07"),
}
TENANT_ID = {"blue": 1, "red": 2}
CA = "10.1.1.7"


def policy_file(tmp_path: Path, unknown: tuple = ()) -> Path:
    """The Red/Blue policy with static neighbours for PA_MACS but those in `unknown`."""
    doc = json.loads((ROOT / "config" / "redblue-policy.json").read_text())
    have = {(n.get("vlan", 0), n["ip"]) for n in doc["neighbours"]}
    for pa, mac in PA_MACS.items():
        if (0, pa) not in have and pa not in unknown:
            doc["neighbours"].append({"ip": pa, "mac": mac})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def body(policy: Path, resolve_wait_ms: int = 250) -> str:
    return (f'[pipeline]\nmode = "nvgre"\npolicy = "{policy}"\n'
            f"resolve_wait_ms = {resolve_wait_ms}\n"
            "[tables]\nrecords = 4096\nroutes = 4096\nneighbours = 1024\n")


def frames(ns: Netns, order: list[tuple[str, int]]) -> list[bytes]:
    """One tagged UDP frame per (tenant, seq). Built once per tenant with scapy, then the
    payload is appended (UDP checksum 0, so the headers stay valid): fast for thousands."""
    heads = {}
    for tenant, (vlan, src, mac, _vsid, _rmac) in TENANTS.items():
        pkt = (Ether(dst=ns.mac("cus0"), src=mac) / Dot1Q(vlan=vlan) /
               IP(src=src, dst=CA, ttl=64) /
               UDP(sport=40000 + TENANT_ID[tenant], dport=7000, chksum=0) /
               Raw(bytes(PAYLOAD.size)))
        heads[tenant] = bytes(pkt)[:-PAYLOAD.size]
    return [heads[t] + PAYLOAD.pack(MAGIC, TENANT_ID[t], s) for t, s in order]


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def decode(ns: Netns, raw: bytes):
    """An encapsulated test packet -> (tenant, seq, outer dst PA); asserts every header field
    the gateway sets (see the wire behaviour of encap)."""
    prov = mac_bytes(ns.mac("fab0"))
    assert raw[12:14] == b"\x08\x00", f"not IPv4: {raw.hex()}"
    ihl_ver, tos, tot_len, ident, frag, ttl, proto, _csum, src, dst = struct.unpack(
        "!BBHHHBBH4s4s", raw[14:34])
    pa = str(ipaddress.IPv4Address(dst))
    assert (ihl_ver, tos, ident, frag, ttl, proto) == (0x45, 0, 0, 0x4000, 64, 47), raw.hex()
    assert tot_len == len(raw) - 14, raw.hex()
    assert str(ipaddress.IPv4Address(src)) == PROVIDER_PA
    assert raw[6:12] == prov, f"outer src MAC {raw[6:12].hex(':')}"
    assert pa in PA_MACS and raw[0:6] == mac_bytes(PA_MACS[pa]), \
        f"outer dst {pa} via {raw[0:6].hex(':')}"
    flags, gproto, key = struct.unpack("!HHI", raw[34:42])
    assert (flags, gproto) == (0x2000, 0x6558), raw.hex()
    inner = raw[42:]
    assert inner[12:14] == b"\x08\x00" and inner[6:12] == prov, inner.hex()
    ip = inner[14:34]
    assert ip[8] == 63 and ip[9] == 17 and ip[16:20] == ipaddress.IPv4Address(CA).packed
    magic, tid, seq = PAYLOAD.unpack_from(inner, 14 + 20 + 8)
    assert magic == MAGIC, inner.hex()
    tenant = {v: k for k, v in TENANT_ID.items()}[tid]
    vlan, src, _mac, vsid, rmac = TENANTS[tenant]
    assert key >> 8 == vsid, f"{tenant} packet with GRE key {key:#x}"
    assert inner[0:6] == mac_bytes(rmac) and ip[12:16] == ipaddress.IPv4Address(src).packed
    # and every byte (checksums, FlowID, lengths): the frame sent, encapsulated toward pa
    sent = (IP(src=src, dst=CA, ttl=64) / UDP(sport=40000 + tid, dport=7000, chksum=0) /
            Raw(PAYLOAD.pack(MAGIC, tid, seq)))
    assert raw == expected_encap(sent, vsid=vsid, pa=pa, ca_mac=rmac, fabric_mac=PA_MACS[pa],
                                 gw_mac=ns.mac("fab0"), src_pa=PROVIDER_PA,
                                 provider_mac=ns.mac("fab0")), raw.hex()
    return tenant, seq, pa


def run_migration(tmp_path: Path, tenants: list[str], arp_new_pa: bool = False):
    """Send N frames cycling through `tenants` (seq numbers per tenant), migrate Blue's CA
    MIGRATE_AT s in. Returns (per-tenant {seq: send time}, ack time, decoded captures,
    final counters, other frames captured on fab1). arp_new_pa: the new PA is no static
    neighbour; a host on fab1 answers ARP for it (tests/arp_responder.py)."""
    with Netns() as ns:
        order = [(tenants[i % len(tenants)], i // len(tenants)) for i in range(N)]
        unknown = (NEW_PA,) if arp_new_pa else ()
        if arp_new_pa:
            host = ns.popen([sys.executable, str(ROOT / "tests" / "arp_responder.py"), "fab1",
                             f"{NEW_PA}={PA_MACS[NEW_PA]}"], stdout=subprocess.PIPE, text=True)
            assert host.stdout.readline().strip() == "ready"
        # a generous wait: the answer comes from a Python process on a busy machine
        gw = NetnsGateway(ns, tmp_path / "gw", body(policy_file(tmp_path, unknown),
                                                     2000 if arp_new_pa else 250)).start()
        try:
            tr = Traffic(ns, tmp_path / "traffic", "cus1", frames(ns, order), RATE,
                         capture=["fab1"], quiet=0.5, limit=15.0)
            t0 = tr.start()
            time.sleep(max(0.0, t0 + MIGRATE_AT - time.monotonic()))
            reply = gw.request("migrate", vsid=5001, ca=CA, pa=NEW_PA)
            ack = time.monotonic()
            res = tr.wait()
        finally:
            rc = gw.stop()
        assert rc == 0, f"gateway exited {rc}:\n{gw.stderr}"
        assert reply["generation"] >= 1
        assert not res.truncated and len(res.sent_times) == N, res.output
        assert res.dropped["fab1"] == 0
        sent = {}
        for (t, s), when in zip(order, res.sent_times):
            sent.setdefault(t, {})[s] = when
        got, other = [], []
        for _when, raw in res.captures["fab1"]:
            if raw[12:14] == b"\x08\x00" and len(raw) > 34 and raw[23] == 47:
                got.append(decode(ns, raw))
            else:
                other.append(raw)
        return sent, ack, got, gw.final_counters(), other


def check_blue(sent: dict, ack: float, got: list, n: int) -> None:
    blue = [(seq, pa) for t, seq, pa in got if t == "blue"]
    seqs = Counter(seq for seq, _ in blue)
    missing = sorted(set(range(n)) - set(seqs))
    dup = sorted(s for s, c in seqs.items() if c > 1)
    assert not missing and not dup and len(seqs) == n, \
        f"blue: {len(missing)} lost (first {missing[:10]}), duplicated {dup[:10]}"
    assert {pa for _, pa in blue} <= {OLD_PA, NEW_PA}
    old = [s for s, pa in blue if pa == OLD_PA]
    new = [s for s, pa in blue if pa == NEW_PA]
    assert old and new, f"blue: {len(old)} to the old PA, {len(new)} to the new PA"
    assert max(old) < min(new), \
        f"blue: old-PA seqs up to {max(old)}, new-PA seqs from {min(new)}"
    times = sent["blue"]
    assert times[0] < ack < times[n - 1], "the migrate ack came outside the traffic"
    late = [s for s in old if times[s] > ack]
    assert not late, (f"blue: {len(late)} packets sent after the migrate ack went to the old "
                      f"PA (seq {late[:10]}, sent up to {times[late[-1]] - ack:.6f} s after)")


def check_counters(c: dict, per_tenant: int, tenants: list[str], arp: int = 0) -> None:
    """No drops, every packet encapsulated; arp: ARP requests sent on the fabric (and
    replies taken in) beside them."""
    drops = {k: v for k, v in c["drops"].items() if v}
    assert not drops, f"drops: {drops}"
    for t in tenants:
        vsid = TENANTS[t][3]
        assert c["vsids"][str(vsid)]["encap_pkts"] == per_tenant, (t, c["vsids"][str(vsid)])
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["tenants"]["rx_pkts"] == N and ports["fabric"]["tx_pkts"] == N + arp, ports
    assert ports["fabric"]["rx_pkts"] == arp and ports["tenants"]["tx_pkts"] == 0, ports


def test_migrate_under_traffic(tmp_path):
    sent, ack, got, counters, other = run_migration(tmp_path, ["blue"])
    assert not other, f"{len(other)} unexpected frames on fab1, first {other[0].hex()}"
    assert len(got) == N
    check_blue(sent, ack, got, N)
    check_counters(counters, N, ["blue"])


def test_migrate_blue_leaves_red(tmp_path):
    sent, ack, got, counters, other = run_migration(tmp_path, ["blue", "red"])
    assert not other, f"{len(other)} unexpected frames on fab1, first {other[0].hex()}"
    assert len(got) == N
    half = N // 2
    check_blue(sent, ack, got, half)
    red = [(seq, pa) for t, seq, pa in got if t == "red"]
    assert sorted(seq for seq, _ in red) == list(range(half)), "red: lost or duplicated"
    assert {pa for _, pa in red} == {RED_PA}, Counter(pa for _, pa in red)
    check_counters(counters, half, ["blue", "red"])


def test_migrate_to_a_host_not_yet_resolved(tmp_path):
    """Make before break: the new PA has no static neighbour. The migrate resolves it
    (one ARP request, answered by the host) before the record moves, so no packet is
    dropped as no_neighbour while it is asked; the old PA carries them meanwhile."""
    sent, ack, got, counters, other = run_migration(tmp_path, ["blue"], arp_new_pa=True)
    request = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=MACS["fab0"]) /
                    ARP(op=1, hwsrc=MACS["fab0"], psrc=PROVIDER_PA, hwdst="00:00:00:00:00:00",
                        pdst=NEW_PA))
    assert other == [request], [o.hex() for o in other]
    assert len(got) == N
    check_blue(sent, ack, got, N)
    check_counters(counters, N, ["blue"], arp=1)
    assert counters["exceptions"]["arp_requests"] == 1, counters["exceptions"]
