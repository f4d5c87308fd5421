"""Churn: policy changes at a high rate while traffic flows; every packet accounted for.

The gateway runs in a private network namespace on af_packet ports (tests/netns.py) with
the Red/Blue policy plus 8 more VMs per tenant (10.1.1.20-27 in VSIDs 5001 and 6001) and
4 customer routes per routing domain (172.16.50-53.0/24 via on-prem routers on VLAN 100
and 200). Two generators send numbered packets, Blue and Red alternately, both directions:
- encap: on-prem hosts (cus1, VLAN 100/200) -> the 16 VMs, captured on fab1;
- decap: NVGRE from each tenant's VM 10.1.1.7 (fab1) -> the 8 routed prefixes, captured
  on cus1.
Meanwhile a second process (this file run as a script: `churn`) sends `apply` batches to
the gateway's control socket as fast as they are answered: records added, deleted and
migrated between 8 PAs, routes added, deleted and moved to another next hop. It logs the
send and answer (ack) time of each batch, so the test knows the policy at every moment.

Afterwards every packet is accounted for:
- a captured packet went where the policy of some moment between its send time and its
  capture time says: the state after every batch acked before it was sent, up to the state
  after every batch sent before it was captured (a packet sent after a change's ack goes
  only to the new place). Its tenant (GRE key / VLAN) is its sender's.
- a packet not captured was dropped: its policy allowed a drop (no record / no route) at
  some moment after it was sent, and the gateway's drop counters by name equal the counts:
  sent == delivered + drops.no_lookup_record + drops.no_route, every other drop 0;
- no packet twice, nothing lost in the kernel or the PMD (imissed 0);
- the mempool's in_use, read live over the control socket, is back at its idle baseline.
"""
from __future__ import annotations

import bisect
import ipaddress
import json
import random
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAGIC = b"NVGC"
PAYLOAD = struct.Struct("!4sBBI")               # magic, direction, tenant, sequence
ENCAP, DECAP = 1, 2
PROVIDER_PA = "192.168.1.1"
PAS = [f"192.168.1.{10 + i}" for i in range(8)]
PA_MAC = {pa: f"00:15:5d:00:00:{10 + i:02d}" for i, pa in enumerate(PAS)}
CAS = [f"10.1.1.{20 + j}" for j in range(8)]
PREFIXES = [f"172.16.{50 + j}.0/24" for j in range(4)]
# tenant -> vlan, on-prem host, its MAC, vsid, rdid, on-prem router subnet, VM MAC prefix
TENANTS = {
    1: dict(name="blue", vlan=100, host="172.16.1.10", host_mac="02:00:00:00:01:10",
            vsid=5001, rdid=1, net="172.16.1", vm="b1", src_pa="192.168.1.10"),
    2: dict(name="red", vlan=200, host="172.16.2.10", host_mac="02:00:00:00:02:10",
            vsid=6001, rdid=2, net="172.16.2", vm="7e", src_pa="192.168.1.11"),
}
NEXT_HOPS = {t: [f"{v['net']}.{200 + h}" for h in range(4)] for t, v in TENANTS.items()}
NH_MAC = {nh: f"02:00:00:0{t}:02:{h:02x}" for t, nhs in NEXT_HOPS.items()
          for h, nh in enumerate(nhs)}
RATE = 1500.0                   # per direction
N = 4500                        # per direction: 3 s
BATCH_KEYS = 6                  # objects changed per batch


def record_mac(tenant: int, ca: str) -> str:
    return f"00:15:5d:{TENANTS[tenant]['vm']}:00:{int(ca.split('.')[-1]):02x}"


def rec_key(tenant, j):
    return ("record", TENANTS[tenant]["vsid"], CAS[j])


def route_key(tenant, j):
    return ("route", TENANTS[tenant]["rdid"], PREFIXES[j])


def initial_state() -> dict:
    """(kind, vsid|rdid, ca|prefix) -> PA or next hop (None: absent)."""
    st = {}
    for t in TENANTS:
        for j in range(len(CAS)):
            st[rec_key(t, j)] = PAS[j]
        for j in range(len(PREFIXES)):
            st[route_key(t, j)] = NEXT_HOPS[t][j]
    return st


def ops_for(key, old, new) -> list[dict]:
    """The operations that change one object from `old` to `new` (None: absent)."""
    kind, scope, name = key
    if kind == "record":
        tenant = next(t for t, v in TENANTS.items() if v["vsid"] == scope)
        if new is None:
            return [{"op": "del", "kind": "record", "vsid": scope, "ca": name}]
        return [{"op": "set", "kind": "record", "vsid": scope, "ca": name,
                 "mac": record_mac(tenant, name), "pa": new}]
    out = []
    if new is not None:     # the new next hop first: the prefix never lacks a route
        out.append({"op": "set", "kind": "route", "rdid": scope, "prefix": name,
                    "next_hop": new})
    if old is not None:
        out.append({"op": "del", "kind": "route", "rdid": scope, "prefix": name,
                    "next_hop": old})
    return out


def policy_doc() -> dict:
    doc = json.loads((ROOT / "config" / "redblue-policy.json").read_text())
    have = {(n.get("vlan", 0), n["ip"]) for n in doc["neighbours"]}
    for pa, mac in PA_MAC.items():
        if (0, pa) not in have:
            doc["neighbours"].append({"ip": pa, "mac": mac})
    for t, v in TENANTS.items():
        for nh in NEXT_HOPS[t]:
            doc["neighbours"].append({"vlan": v["vlan"], "ip": nh, "mac": NH_MAC[nh]})
    dom = {d["rdid"]: d for d in doc["routing_domains"]}
    for key, val in initial_state().items():
        kind, scope, name = key
        for op in ops_for(key, None, val):
            body = {k: v for k, v in op.items() if k not in ("op", "kind")}
            if kind == "record":
                doc["records"].append({**body, "method": "encap"})
            else:
                del body["rdid"]
                dom[scope].setdefault("routes", []).append(body)
    return doc


# -- the churning process ------------------------------------------------------------


def churn(endpoint: str, seed: int, start: float, until: float, out: str) -> int:
    """Apply random batches through the control socket from `start` until `until`
    (monotonic); write [{"s", "a", "generation", "changes": [[key, old, new]]}]."""
    import zmq
    rng = random.Random(seed)
    state = initial_state()
    keys = sorted(state)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    log, error = [], None
    while time.monotonic() < start:
        time.sleep(0.001)
    while time.monotonic() < until:
        changes, ops = [], []
        for key in rng.sample(keys, BATCH_KEYS):
            old = state[key]
            if key[0] == "record":
                choices = [pa for pa in PAS if pa != old] + [None] * (3 if old else 0)
            else:
                tenant = next(t for t, v in TENANTS.items() if v["rdid"] == key[1])
                choices = [nh for nh in NEXT_HOPS[tenant] if nh != old] + \
                    [None] * (2 if old else 0)
            new = rng.choice(choices)
            changes.append((key, old, new))
            ops += ops_for(key, old, new)
        s = time.monotonic()
        sock.send(json.dumps({"v": 1, "type": "apply", "ops": ops}).encode())
        if not sock.poll(5000):
            error = "no answer within 5 s"
            break
        reply = json.loads(sock.recv())
        a = time.monotonic()
        if not reply.get("ok"):
            error = reply.get("error")
            break
        for key, _old, new in changes:
            state[key] = new
        log.append({"s": s, "a": a, "generation": reply["result"]["generation"],
                    "ops": len(ops), "changes": changes})
    sock.close()
    ctx.term()
    with open(out, "w") as f:
        json.dump({"batches": log, "error": error}, f)
    return 0 if error is None else 1


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "churn":
    sys.exit(churn(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]),
                   sys.argv[6]))


# -- the test ---------------------------------------------------------------------------

import pytest                                           # noqa: E402
from scapy.layers.inet import GRE, IP, UDP              # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether                # noqa: E402
from scapy.packet import Raw                            # noqa: E402

from netns import Netns, NetnsGateway, Traffic, unavailable     # noqa: E402
from nvgw_helpers import expected_customer, expected_encap       # noqa: E402

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


class QuietGateway(NetnsGateway):
    """The gateway logging warnings only: one `policy_applied` line per batch,
    thousands of batches, would only bury what matters in the log."""

    def command(self, *args) -> list[str]:
        return super().command(*args, "--log-level", "warning")


def encap_frames(ns: Netns) -> tuple[list[bytes], list[tuple]]:
    """Customer side: i -> tenant 1 + i % 2, destination VM CAS[(i // 2) % 8]."""
    heads, frames, meta = {}, [], []
    for t, v in TENANTS.items():
        for j, ca in enumerate(CAS):
            pkt = (Ether(dst=ns.mac("cus0"), src=v["host_mac"]) / Dot1Q(vlan=v["vlan"]) /
                   IP(src=v["host"], dst=ca, ttl=64) /
                   UDP(sport=41000 + j, dport=7000, chksum=0) / Raw(bytes(PAYLOAD.size)))
            heads[t, j] = bytes(pkt)[:-PAYLOAD.size]
    for i in range(N):
        t, j = 1 + i % 2, (i // 2) % len(CAS)
        frames.append(heads[t, j] + PAYLOAD.pack(MAGIC, ENCAP, t, i))
        meta.append((t, rec_key(t, j)))
    return frames, meta


def decap_frames(ns: Netns) -> tuple[list[bytes], list[tuple]]:
    """Fabric side: NVGRE from tenant 1 + i % 2's VM 10.1.1.7 to 172.16.5x.10."""
    heads, frames, meta = {}, [], []
    for t, v in TENANTS.items():
        for j, prefix in enumerate(PREFIXES):
            dst = str(ipaddress.IPv4Network(prefix).network_address + 10)
            inner = (Ether(dst=ns.mac("fab0"), src=record_mac(t, "10.1.1.7")) /
                     IP(src="10.1.1.7", dst=dst, ttl=64) /
                     UDP(sport=42000 + j, dport=7000, chksum=0) / Raw(bytes(PAYLOAD.size)))
            pkt = (Ether(dst=ns.mac("fab0"), src=PA_MAC[v["src_pa"]]) /
                   IP(src=v["src_pa"], dst=PROVIDER_PA, flags="DF", ttl=64) /
                   GRE(key_present=1, proto=0x6558, key=v["vsid"] << 8) / inner)
            heads[t, j] = bytes(pkt)[:-PAYLOAD.size]
    for i in range(N):
        t, j = 1 + i % 2, (i // 2) % len(PREFIXES)
        frames.append(heads[t, j] + PAYLOAD.pack(MAGIC, DECAP, t, i))
        meta.append((t, route_key(t, j)))
    return frames, meta


def mac(b: bytes) -> str:
    return b.hex(":")


def decode_fabric(ns: Netns, raw: bytes):
    """An encapsulated packet -> (tenant, seq, PA); asserts the headers the policy sets."""
    assert raw[12:14] == b"\x08\x00" and raw[23] == 47, f"not NVGRE: {raw.hex()}"
    pa = str(ipaddress.IPv4Address(raw[30:34]))
    assert str(ipaddress.IPv4Address(raw[26:30])) == PROVIDER_PA
    assert mac(raw[6:12]) == ns.mac("fab0") and mac(raw[0:6]) == PA_MAC.get(pa), raw.hex()
    flags, proto, key = struct.unpack("!HHI", raw[34:42])
    assert (flags, proto) == (0x2000, 0x6558), raw.hex()
    inner = raw[42:]
    magic, direction, t, seq = PAYLOAD.unpack_from(inner, 14 + 20 + 8)
    assert (magic, direction) == (MAGIC, ENCAP), inner.hex()
    ca = str(ipaddress.IPv4Address(inner[30:34]))
    assert key >> 8 == TENANTS[t]["vsid"], f"tenant {t} packet {seq} with key {key:#x}"
    assert ca == CAS[(seq // 2) % len(CAS)] and mac(inner[0:6]) == record_mac(t, ca)
    # and every byte (checksums, FlowID, lengths): the frame sent, encapsulated toward pa
    sent = (IP(src=TENANTS[t]["host"], dst=ca, ttl=64) /
            UDP(sport=41000 + CAS.index(ca), dport=7000, chksum=0) /
            Raw(PAYLOAD.pack(MAGIC, ENCAP, t, seq)))
    assert raw == expected_encap(sent, vsid=TENANTS[t]["vsid"], pa=pa, ca_mac=record_mac(t, ca),
                                 fabric_mac=PA_MAC[pa], gw_mac=ns.mac("fab0"),
                                 src_pa=PROVIDER_PA, provider_mac=ns.mac("fab0")), raw.hex()
    return t, seq, pa


def decode_customer(ns: Netns, raw: bytes):
    """A decapsulated packet -> (tenant, seq, next hop)."""
    assert raw[12:14] == b"\x81\x00" and raw[16:18] == b"\x08\x00", raw.hex()
    vlan = struct.unpack("!H", raw[14:16])[0] & 0xFFF
    assert mac(raw[6:12]) == ns.mac("cus0"), raw.hex()
    magic, direction, t, seq = PAYLOAD.unpack_from(raw, 18 + 20 + 8)
    assert (magic, direction) == (MAGIC, DECAP), raw.hex()
    assert vlan == TENANTS[t]["vlan"], f"tenant {t} packet {seq} on VLAN {vlan}"
    nh = {m: n for n, m in NH_MAC.items()}.get(mac(raw[0:6]))
    assert nh in NEXT_HOPS[t], f"tenant {t} packet {seq} to {mac(raw[0:6])}"
    # and every byte: the inner packet sent, routed out of the tenant's VLAN
    j = (seq // 2) % len(PREFIXES)
    dst = str(ipaddress.IPv4Network(PREFIXES[j]).network_address + 10)
    sent = (IP(src="10.1.1.7", dst=dst, ttl=64) / UDP(sport=42000 + j, dport=7000, chksum=0) /
            Raw(PAYLOAD.pack(MAGIC, DECAP, t, seq)))
    assert raw == expected_customer(sent, vlan=vlan, dst_mac=NH_MAC[nh],
                                    src_mac=ns.mac("cus0")), raw.hex()
    return t, seq, nh


class History:
    """The value of every object after each batch, and when batches were sent/acked."""

    def __init__(self, batches: list[dict]):
        self.sends = [b["s"] for b in batches]
        self.acks = [b["a"] for b in batches]
        self.n = len(batches)
        init = initial_state()
        self.changes = {k: ([0], [v]) for k, v in init.items()}   # key -> (batch idx, value)
        for i, b in enumerate(batches, 1):
            for key, _old, new in b["changes"]:
                idx, vals = self.changes[tuple(key)]
                idx.append(i)
                vals.append(new)

    def values(self, key, k_lo: int, k_hi: int) -> set:
        """Every value `key` had in the states k_lo..k_hi (state k: after batch k)."""
        idx, vals = self.changes[key]
        first = bisect.bisect_right(idx, k_lo) - 1
        last = bisect.bisect_right(idx, k_hi) - 1
        return set(vals[first:last + 1])

    def window(self, sent: float, captured: float | None) -> tuple[int, int]:
        lo = bisect.bisect_right(self.acks, sent)      # batches acked before it was sent
        hi = self.n if captured is None else bisect.bisect_right(self.sends, captured)
        return lo, max(lo, hi)


def account(hist: History, meta, sent_times, got: dict, direction: str) -> dict:
    """Check each packet of one direction; return {"delivered", "dropped"}."""
    delivered = dropped = 0
    problems = []
    for seq, (t, key) in enumerate(meta):
        when = got.get(seq)
        if when is None:
            lo, hi = hist.window(sent_times[seq], None)
            if None not in hist.values(key, lo, hi):
                problems.append(f"{direction} {seq} ({key}) lost, but the policy never "
                                f"lacked it after it was sent")
            dropped += 1
            continue
        (captured, where) = when
        lo, hi = hist.window(sent_times[seq], captured)
        allowed = hist.values(key, lo, hi)
        if where not in allowed:
            problems.append(f"{direction} {seq} ({key}) went to {where}; allowed {allowed} "
                            f"(states {lo}..{hi})")
        delivered += 1
    assert not problems, f"{len(problems)} misdelivered: " + "; ".join(problems[:10])
    return {"delivered": delivered, "dropped": dropped}


def test_churn_under_traffic_every_packet_accounted_for(tmp_path):
    doc_path = tmp_path / "policy.json"
    doc_path.write_text(json.dumps(policy_doc()))
    body = (f'[pipeline]\nmode = "nvgre"\npolicy = "{doc_path}"\n'
            "[tables]\nrecords = 4096\nroutes = 4096\nneighbours = 1024\n")
    with Netns() as ns:
        up, up_meta = encap_frames(ns)
        down, down_meta = decap_frames(ns)
        gw = QuietGateway(ns, tmp_path / "gw", body).start()
        churner = None
        try:
            idle = gw.counters()["mempool"]
            tr_up = Traffic(ns, tmp_path / "up", "cus1", up, RATE, capture=["fab1"],
                            quiet=0.5, limit=15.0)
            tr_down = Traffic(ns, tmp_path / "down", "fab1", down, RATE, capture=["cus1"],
                              quiet=0.5, limit=15.0)
            t0 = max(tr_up.start(), tr_down.start())
            log_path = tmp_path / "churn.json"
            churner = subprocess.Popen(
                [sys.executable, __file__, "churn", gw.endpoint, "9", repr(t0 + 0.1),
                 repr(t0 + N / RATE - 0.1), str(log_path)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out, _ = churner.communicate(timeout=30)
            res_up, res_down = tr_up.wait(), tr_down.wait()
            # Idle again: every mbuf back in the pool (read live, before stop).
            deadline = time.monotonic() + 3
            while True:
                live = gw.counters()
                if live["mempool"]["in_use"] == idle["in_use"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            if churner is not None and churner.poll() is None:
                churner.kill()
                churner.wait(5)
            rc = gw.stop()
        churned = json.loads(log_path.read_text())
        assert churner.returncode == 0 and churned["error"] is None, \
            f"churner: {out}{churned['error']} after {len(churned['batches'])} batches; " \
            f"gateway exit {rc}:\n{gw.stderr[-3000:]}"
        assert rc == 0, gw.stderr
        batches = churned["batches"]
        assert live["mempool"] == idle, f"mempool at idle {idle}, after traffic {live['mempool']}"
        for res in (res_up, res_down):
            assert not res.truncated and len(res.sent_times) == N, res.output
        assert res_up.dropped["fab1"] == 0 and res_down.dropped["cus1"] == 0
        got_up, got_down, other = {}, {}, []
        for when, raw in res_up.captures["fab1"]:
            if raw[12:14] == b"\x08\x00" and len(raw) > 34 and raw[23] == 47:
                t, seq, pa = decode_fabric(ns, raw)
                assert seq not in got_up, f"encap packet {seq} twice"
                got_up[seq] = (when, pa)
            else:
                other.append(raw)
        for when, raw in res_down.captures["cus1"]:
            if raw[12:14] == b"\x81\x00":
                t, seq, nh = decode_customer(ns, raw)
                assert seq not in got_down, f"decap packet {seq} twice"
                got_down[seq] = (when, nh)
            else:
                other.append(raw)
    assert not other, f"{len(other)} unexpected frames, first {other[0].hex()}"

    hist = History(batches)
    assert [b["generation"] for b in batches] == list(range(2, len(batches) + 2)), \
        "generations not consecutive"
    up_acc = account(hist, up_meta, res_up.sent_times, got_up, "encap")
    down_acc = account(hist, down_meta, res_down.sent_times, got_down, "decap")

    final = gw.final_counters()
    drops = {k: v for k, v in final["drops"].items() if v}
    assert drops == {k: v for k, v in {"no_lookup_record": up_acc["dropped"],
                                       "no_route": down_acc["dropped"]}.items() if v}, \
        f"drop counters {drops}, packets missing: encap {up_acc}, decap {down_acc}"
    ports = {p["name"]: p for p in final["ports"]}
    assert ports["tenants"]["rx_pkts"] == N and ports["fabric"]["rx_pkts"] == N, ports
    assert ports["fabric"]["tx_pkts"] == up_acc["delivered"], ports
    assert ports["tenants"]["tx_pkts"] == down_acc["delivered"], ports
    # bytes as captured: full bursts sent at once, partial ones queued and split
    assert ports["fabric"]["tx_bytes"] == sum(len(r) for _, r in res_up.captures["fab1"])
    assert ports["tenants"]["tx_bytes"] == sum(len(r) for _, r in res_down.captures["cus1"])
    assert all(p["pmd"]["imissed"] == 0 for p in final["ports"]), ports
    assert final["generation"] == batches[-1]["generation"]

    span = batches[-1]["a"] - batches[0]["s"]
    ops = sum(b["ops"] for b in batches)
    changed = sum(len(b["changes"]) for b in batches)
    lat = sorted(b["a"] - b["s"] for b in batches)
    print(f"\nchurn: {len(batches)} batches ({changed} object changes, {ops} ops) in "
          f"{span:.2f} s = {len(batches) / span:.0f} batches/s, {changed / span:.0f} "
          f"changes/s, {ops / span:.0f} ops/s; ack latency median "
          f"{lat[len(lat) // 2] * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms\n"
          f"packets: {2 * N} sent; encap {up_acc['delivered']} delivered + "
          f"{up_acc['dropped']} no_lookup_record; decap {down_acc['delivered']} delivered + "
          f"{down_acc['dropped']} no_route; mempool in_use {idle['in_use']} -> "
          f"{live['mempool']['in_use']} of {idle['size']}")
    # Enough churn that it means something: many changes under traffic, and packets
    # actually moved between places (not only dropped).
    assert len(batches) >= 200, f"only {len(batches)} batches"
    moved = Counter(pa for _, pa in got_up.values())
    assert len(moved) >= 6, moved
