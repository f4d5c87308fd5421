"""The policy model and batch engine (dataplane/policy.py), and policy over the control socket.

Most tests need no EAL: `Policy(None, ...)` validates and stages without C tables, `check`
returns the C calls a batch would make (and stages it), `apply` bumps the generation.
The live tests at the end share one gateway (net_pcap ports, no traffic) and check that a
refused batch changes nothing, that malformed control requests get error replies, and
that nvgwctl drives policy.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from dataplane import recblock
from dataplane.errors import NvgwError
from dataplane.policy import APPLIANCE, CUSTOMER, VSUBNET, Policy, PolicyError
from harness import GatewayProcess, PcapPort

ROOT = Path(__file__).resolve().parent.parent
REDBLUE = ROOT / "config" / "redblue-policy.json"
PROVIDER_MAC = "02:70:63:61:70:00"
CUSTOMER_MAC = "02:70:63:61:70:01"
PROV_MAC_B = bytes.fromhex(PROVIDER_MAC.replace(":", ""))
ZERO_B = bytes(4)


def b(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def redblue_doc() -> dict:
    return json.loads(REDBLUE.read_text())


def new_policy(**kw) -> Policy:
    return Policy(None, PROVIDER_MAC, CUSTOMER_MAC, **kw)


def redblue(**kw) -> Policy:
    """Blue (rdid 1: VSID 5001 10.1.1.0/24, VLAN 100 172.16.1.1/24) and Red (rdid 2: VSID 6001
    10.1.1.0/24, VLAN 200 172.16.2.1/24), a record 10.1.1.7 in each; generation 1."""
    p = new_policy(**kw)
    assert p.load_document(redblue_doc()) == 1
    return p


def rec(vsid=5001, ca="10.1.1.20", mac="00:15:5d:00:00:20", pa="192.168.1.10", op="set", **kw):
    o = {"op": op, "kind": "record", "vsid": vsid, "ca": ca}
    if op == "set":
        o.update(mac=mac, pa=pa)
    return {**o, **kw}


def route(prefix, next_hop, rdid=1, metric=None, op="set", **kw):
    o = {"op": op, "kind": "route", "rdid": rdid, "prefix": prefix, "next_hop": next_hop}
    if metric is not None:
        o["metric"] = metric
    return {**o, **kw}


def subnet(vsid, prefix, rdid=1, op="set", **kw):
    if op == "del":
        return {"op": "del", "kind": "subnet", "vsid": vsid}
    return {"op": "set", "kind": "subnet", "rdid": rdid, "vsid": vsid, "prefix": prefix, **kw}


def attachment(vlan, address=None, rdid=1, op="set", **kw):
    if op == "del":
        return {"op": "del", "kind": "attachment", "vlan": vlan}
    return {"op": "set", "kind": "attachment", "rdid": rdid, "vlan": vlan, "address": address,
            **kw}


def domain(rdid, name="", op="set"):
    return ({"op": "set", "kind": "domain", "rdid": rdid, "name": name} if op == "set"
            else {"op": "del", "kind": "domain", "rdid": rdid})


# redblue's static neighbour on VLAN 100, deleted (before its subnet moves or goes)
NEIGH_100_DEL = {"op": "del", "kind": "neighbour", "vlan": 100, "ip": "172.16.1.10"}


def state(p: Policy):
    """Everything a batch may touch, deep-copied."""
    return copy.deepcopy((p.document(), p.generation, p.installed, p.lengths, p.free_slots,
                          p.cooling, {v: s["slot"] for v, s in p.subnets.items()},
                          p.shadowed, p.links))


def assert_refused(p: Policy, ops, message: str, apply=True):
    before = state(p)
    with pytest.raises(PolicyError) as e:
        p.apply(ops) if apply else p.load_document(ops)
    assert message in str(e.value), str(e.value)
    assert state(p) == before, "a refused batch changed the policy"
    return str(e.value)


def norm(doc: dict) -> dict:
    """A document with its lists in a canonical order (for order-insensitive comparison)."""
    def key(x):
        return json.dumps(x, sort_keys=True)
    out = copy.deepcopy(doc)
    for d in out["routing_domains"]:
        for k in ("subnets", "attachments", "routes", "mappings"):
            if k in d:
                d[k] = sorted(d[k], key=key)
    out["routing_domains"].sort(key=lambda d: d["rdid"])
    out["records"] = sorted(out["records"], key=key)
    out["neighbours"] = sorted(out["neighbours"], key=key)
    return out


# -- field validation ------------------------------------------------------------------

VSID_MSG = "VSID {} is outside 4096..16777214 (0..4095 and 16777215 are reserved)"

INVALID = [
    # VSIDs: reserved and out of range, on every kind that names one
    ("vsid-0", [subnet(0, "10.1.2.0/24")], "vsid: " + VSID_MSG.format(0)),
    ("vsid-4095", [subnet(4095, "10.1.2.0/24")], "vsid: " + VSID_MSG.format(4095)),
    ("vsid-16777215", [subnet(16777215, "10.1.2.0/24")], VSID_MSG.format(16777215)),
    ("vsid-16777216", [subnet(16777216, "10.1.2.0/24")], VSID_MSG.format(16777216)),
    ("vsid-str", [subnet("5002", "10.1.2.0/24")], VSID_MSG.format("'5002'")),
    ("vsid-bool", [subnet(True, "10.1.2.0/24")], VSID_MSG.format(True)),
    ("record-vsid-4095", [rec(vsid=4095)], VSID_MSG.format(4095)),
    ("record-vsid-16777215", [rec(vsid=16777215)], VSID_MSG.format(16777215)),
    ("del-record-vsid", [rec(vsid=0, op="del")], VSID_MSG.format(0)),
    ("route-vsid", [route("10.9.0.0/16", "0.0.0.0", vsid=4000)], VSID_MSG.format(4000)),
    # prefixes and addresses
    ("cidr-host-bits", [subnet(5002, "10.1.2.5/24")],
     "virtual subnet 5002: '10.1.2.5/24' is not an IPv4 prefix"),
    ("cidr-len-33", [subnet(5002, "10.1.2.0/33")],
     "virtual subnet 5002: '10.1.2.0/33' is not an IPv4 prefix"),
    ("cidr-garbage", [route("10.9.0.0/x", "172.16.1.20")],
     "route prefix: '10.9.0.0/x' is not an IPv4 prefix"),
    ("cidr-v6", [route("2001:db8::/32", "172.16.1.20")],
     "route prefix: '2001:db8::/32' is not an IPv4 prefix"),
    ("attach-address", [attachment(101, "172.16.5.1/33")],
     "attachment vlan 101: '172.16.5.1/33' is not an address with a prefix length"),
    ("provider-address", [{"op": "set", "kind": "provider", "addresses": ["192.168.1.300/24"]}],
     "provider address: '192.168.1.300/24' is not an address with a prefix length"),
    ("next-hop", [route("10.9.0.0/16", "172.16.1.x")],
     "route 10.9.0.0/16 next hop: '172.16.1.x' is not an IPv4 address"),
    ("record-ca", [rec(ca="10.1.1.300")], "lookup record CA: '10.1.1.300' is not an IPv4 address"),
    ("record-ca-lead0", [rec(ca="10.1.1.07")], "lookup record CA: '10.1.1.07' is not an IPv4"),
    ("record-pa", [rec(pa="192.168.1")], "lookup record 10.1.1.20 PA: '192.168.1' is not an IPv4"),
    ("subnet-gateway", [subnet(5002, "10.1.2.0/24", gateway="10.1.3.1")],
     "virtual subnet 5002: gateway 10.1.3.1 is not in 10.1.2.0/24"),
    ("provider-gateway",
     [{"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24"], "gateway": "10.0.0.1"}],
     "provider gateway 10.0.0.1 is not in 192.168.1.0/24"),
    ("provider-no-addresses", [{"op": "set", "kind": "provider", "addresses": []}],
     "provider: 'addresses' must list 1..8 addresses with prefix"),
    ("provider-mtu", [{"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24"],
                       "mtu": 9001}], "provider mtu: 9001 must be an integer in 576..9000"),
    # MACs
    ("record-mac-short", [rec(mac="00:15:5d:00:00")],
     "lookup record 10.1.1.20: '00:15:5d:00:00' is not a MAC address"),
    ("record-mac-int", [rec(mac=5)], "lookup record 10.1.1.20: 5 is not a MAC address"),
    ("gateway-mac", [subnet(5002, "10.1.2.0/24", gateway_mac="02:00:00:00:00:gg")],
     "gateway_mac: '02:00:00:00:00:gg' is not a MAC address"),
    ("attach-mac", [attachment(101, "172.16.5.1/24", mac="02-00-00-00-00")],
     "attachment mac: '02-00-00-00-00' is not a MAC address"),
    ("neighbour-mac", [{"op": "set", "kind": "neighbour", "ip": "192.168.1.20", "mac": "x"}],
     "neighbour: 'x' is not a MAC address"),
    # VLANs
    ("vlan-0", [attachment(0, "172.16.5.1/24")], "vlan: 0 must be an integer in 1..4094"),
    ("vlan-4095", [attachment(4095, "172.16.5.1/24")], "vlan: 4095 must be an integer in 1..4094"),
    ("vlan-str", [attachment("101", "172.16.5.1/24")], "vlan: '101' must be an integer in 1..4094"),
    ("route-vlan", [route("10.9.0.0/16", "172.16.1.20", vlan=5000)],
     "route 10.9.0.0/16 vlan: 5000 must be an integer in 1..4094"),
    ("neighbour-vlan", [{"op": "set", "kind": "neighbour", "vlan": 4095, "ip": "172.16.1.20",
                         "mac": "02:00:00:00:00:01"}],
     "neighbour vlan: 4095 must be an integer in 1..4094"),
    ("del-attach-vlan", [attachment(9999, op="del")], "vlan: 9999 must be an integer in 1..4094"),
    # routing domain ids
    ("rdid-0", [domain(0)], "rdid: 0 must be an integer in 1..65535"),
    ("rdid-65536", [domain(65536)], "rdid: 65536 must be an integer in 1..65535"),
    ("rdid-str", [domain("1")], "rdid: '1' must be an integer in 1..65535"),
    ("rdid-missing", [{"op": "set", "kind": "domain"}], "set domain: missing field 'rdid'"),
    ("subnet-rdid-0", [subnet(5002, "10.1.2.0/24", rdid=0)], "rdid: 0 must be an integer"),
    ("route-metric", [route("10.9.0.0/16", "172.16.1.20", metric=70000)],
     "route 10.9.0.0/16 metric: 70000 must be an integer in 0..65535"),
    ("flowid", [subnet(5002, "10.1.2.0/24", flowid=256)],
     "virtual subnet 5002 flowid: 256 must be an integer in 0..255"),
    ("record-method", [rec(method="nat")],
     "lookup record 10.1.1.20: method must be 'encap' or 'rewrite'"),
    # unknown and missing fields
    ("record-field", [rec(colour="blue")], "set record: unknown field 'colour'"),
    ("subnet-field", [subnet(5002, "10.1.2.0/24", vlan=100)], "set subnet: unknown field 'vlan'"),
    ("route-field", [route("10.9.0.0/16", "172.16.1.20", weight=1)],
     "set route: unknown field 'weight'"),
    ("domain-field", [{"op": "set", "kind": "domain", "rdid": 3, "vsids": []}],
     "set domain: unknown field 'vsids'"),
    ("del-field", [{"op": "del", "kind": "subnet", "vsid": 5001, "prefix": "10.1.1.0/24"}],
     "del subnet: unknown field 'prefix'"),
    ("provider-field", [{"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24"],
                         "mac": "02:00:00:00:00:01"}], "set provider: unknown field 'mac'"),
    ("record-missing", [{"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.20",
                         "mac": "00:15:5d:00:00:20"}], "set record: missing field 'pa'"),
    ("subnet-missing", [{"op": "set", "kind": "subnet", "rdid": 1, "vsid": 5002}],
     "set subnet: missing field 'prefix'"),
    ("route-missing", [{"op": "set", "kind": "route", "rdid": 1, "prefix": "10.9.0.0/16"}],
     "set route: missing field 'next_hop'"),
    # unknown kinds and ops; malformed batches
    ("kind", [{"op": "set", "kind": "vrf", "rdid": 1}], "operation 0: unknown kind 'vrf'"),
    ("kind-none", [{"op": "set"}], "operation 0: unknown kind None"),
    ("del-provider", [{"op": "del", "kind": "provider"}], "operation 0: unknown kind 'provider'"),
    ("op", [rec(), {"op": "upsert", "kind": "record"}],
     "operation 1: needs 'op' = 'set' or 'del'"),
    ("op-missing", [{"kind": "record"}], "operation 0: needs 'op' = 'set' or 'del'"),
    ("op-not-dict", [rec(), "set record"], "operation 1: needs 'op' = 'set' or 'del'"),
    ("not-a-list", {"op": "set", "kind": "domain", "rdid": 3}, "a batch is a list of operations"),
]


@pytest.mark.parametrize("ops,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_fields_refused(ops, message):
    assert_refused(redblue(), ops, message)


# -- consistency between objects ---------------------------------------------------------

REFERENCES = [
    ("record-missing-subnet", [rec(vsid=5002, ca="10.1.2.5")],
     "lookup record 10.1.2.5: virtual subnet 5002 does not exist"),
    ("route-missing-domain", [route("10.9.0.0/16", "172.16.1.20", rdid=3)],
     "routing domain 3 does not exist"),
    ("subnet-missing-domain", [subnet(7001, "10.3.0.0/16", rdid=3)],
     "routing domain 3 does not exist"),
    ("attachment-missing-domain", [attachment(300, "172.16.3.1/24", rdid=3)],
     "routing domain 3 does not exist"),
    ("vsid-moved", [subnet(5001, "10.1.1.0/24", rdid=2)],
     "VSID 5001 is already in routing domain 1"),
    ("vsid-moved-new-domain", [domain(3), subnet(6001, "10.1.1.0/24", rdid=3)],
     "VSID 6001 is already in routing domain 2"),
    ("subnet-prefix-change", [subnet(5001, "10.1.0.0/16")],
     "virtual subnet 5001: its prefix cannot change (delete and re-add it)"),
    ("overlap-wider", [subnet(5002, "10.1.0.0/16")],
     "virtual subnet 5002 (10.1.0.0/16) overlaps virtual subnet 5001 (10.1.1.0/24) "
     "in routing domain 1"),
    ("overlap-narrower", [subnet(6002, "10.1.1.128/25", rdid=2)],
     "virtual subnet 6002 (10.1.1.128/25) overlaps virtual subnet 6001 (10.1.1.0/24) "
     "in routing domain 2"),
    ("overlap-same-batch", [subnet(5002, "10.1.2.0/24"), subnet(5003, "10.1.2.0/23")],
     "virtual subnet 5003 (10.1.2.0/23) overlaps virtual subnet 5002 (10.1.2.0/24)"),
    ("ca-outside-subnet", [rec(ca="10.1.2.5")],
     "lookup record 10.1.2.5 is outside virtual subnet 5001 (10.1.1.0/24)"),
    ("ca-network-neighbour", [rec(vsid=6001, ca="10.1.0.255")],
     "lookup record 10.1.0.255 is outside virtual subnet 6001 (10.1.1.0/24)"),
    ("vlan-two-domains", [attachment(100, "172.16.1.1/24", rdid=2)],
     "VLAN 100 is already attached to routing domain 1"),
    ("route-vlan-other-domain", [route("10.9.0.0/16", "172.16.2.20", vlan=200)],
     "route 10.9.0.0/16: VLAN 200 is not attached to routing domain 1"),
    ("route-vsid-other-domain", [route("10.9.0.0/16", "10.1.1.50", vsid=6001)],
     "route 10.9.0.0/16: VSID 6001 is not in routing domain 1"),
    ("next-hop-nowhere", [route("10.9.0.0/16", "192.0.2.1", metric=10)],
     "route 10.9.0.0/16: next hop 192.0.2.1 is on no VLAN and in no virtual subnet of "
     "routing domain 1"),
    ("next-hop-other-domain", [route("10.9.0.0/16", "172.16.2.20")],
     "next hop 172.16.2.20 is on no VLAN and in no virtual subnet of routing domain 1"),
    ("on-link-without-where", [route("10.9.0.0/16", "0.0.0.0")],
     "route 10.9.0.0/16: an on-link route needs 'vlan' or 'vsid'"),
    ("record-before-provider", None, "lookup records need the provider addresses set first"),
    # a PA names one host of the fabric other than us
    ("record-pa-ours", [rec(pa="192.168.1.1")],
     "lookup record 10.1.1.20: PA 192.168.1.1 is one of the gateway's NVGRE addresses"),
    *[(f"record-pa-{pa}", [rec(pa=pa)],
       f"lookup record 10.1.1.20: PA {pa} is not a unicast host address")
      for pa in ("0.0.0.0", "127.0.0.1", "224.0.0.5", "240.0.0.1", "255.255.255.255")],
    ("mapping-pa-multicast", [{"op": "set", "kind": "mapping", "rdid": 1, "ca": "172.16.1.10",
                               "pa": "239.1.1.1"}],
     "rewrite mapping 172.16.1.10: PA 239.1.1.1 is not a unicast host address"),
    ("provider-takes-record-pa", [{"op": "set", "kind": "provider",
                                   "addresses": ["192.168.1.1/24", "192.168.1.10/24"]}],
     "provider address 192.168.1.10 is the PA of a lookup record"),
    ("provider-takes-record-pa-set-later",
     [{"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24", "192.168.1.10/24"]},
      rec(ca="10.1.1.8", pa="192.168.1.10")],
     "lookup record 10.1.1.8: PA 192.168.1.10 is one of the gateway's NVGRE addresses"),
    # a next hop, static neighbour or route, is on the link it names
    ("route-vlan-off-link", [route("10.9.0.0/16", "172.16.9.20", vlan=100)],
     "route 10.9.0.0/16: next hop 172.16.9.20 is not on VLAN 100 (172.16.1.0/24)"),
    ("route-vsid-outside", [route("10.9.0.0/16", "10.1.2.50", vsid=5001)],
     "route 10.9.0.0/16: next hop 10.1.2.50 is not in virtual subnet 5001 (10.1.1.0/24)"),
    ("neighbour-unattached-vlan", [{"op": "set", "kind": "neighbour", "vlan": 101,
                                    "ip": "172.16.1.20", "mac": "02:00:00:00:00:01"}],
     "neighbour 172.16.1.20: VLAN 101 is not attached"),
    ("neighbour-off-link", [{"op": "set", "kind": "neighbour", "vlan": 100,
                             "ip": "172.16.2.20", "mac": "02:00:00:00:00:01"}],
     "neighbour 172.16.2.20 is not on VLAN 100 (172.16.1.0/24)"),
    ("attachment-moves-from-neighbour", [attachment(100, "172.16.9.1/24")],
     "attachment vlan 100: static neighbour 172.16.1.10 would not be on its new subnet "
     "172.16.9.0/24; delete it first"),
    ("attachment-moves-from-next-hop",
     [route("10.9.0.0/16", "172.16.1.20"), NEIGH_100_DEL, attachment(100, "172.16.9.1/24")],
     "attachment vlan 100: next hop 172.16.1.20 of route 10.9.0.0/16 would not be on its "
     "new subnet 172.16.9.0/24; change the route first"),
    ("attachment-deleted-under-neighbour", [attachment(100, op="del")],
     "attachment vlan 100: static neighbour 172.16.1.10 would not be on any subnet once "
     "deleted; delete it first"),
]


@pytest.mark.parametrize("ops,message", [c[1:] for c in REFERENCES],
                         ids=[c[0] for c in REFERENCES])
def test_inconsistent_objects_refused(ops, message):
    if ops is None:             # a policy with no provider yet
        p = new_policy()
        p.apply([domain(1), subnet(5001, "10.1.1.0/24")])
        assert_refused(p, [rec()], message)
        return
    assert_refused(redblue(), ops, message)


def test_same_prefix_in_two_domains_allowed():
    """Red/Blue: 10.1.1.0/24 in both domains, each with its own record for 10.1.1.7."""
    p = redblue()
    assert p.subnets[5001]["prefix"] == p.subnets[6001]["prefix"] == "10.1.1.0/24"
    assert p.subnets[5001]["rdid"] == 1 and p.subnets[6001]["rdid"] == 2
    assert p.records[(5001, "10.1.1.7")]["pa"] == "192.168.1.10"
    assert p.records[(6001, "10.1.1.7")]["pa"] == "192.168.1.11"
    assert p.installed[(1, "10.1.1.0/24")] == (VSUBNET, 5001, 0, ZERO_B)
    assert p.installed[(2, "10.1.1.0/24")] == (VSUBNET, 6001, 0, ZERO_B)
    # and a third domain may reuse the prefix too, as may a customer route in another one
    calls = p.check([domain(3, "green"), subnet(7001, "10.1.1.0/24", rdid=3),
                     route("10.1.1.0/24", "172.16.2.20", rdid=2, metric=10)])
    assert calls == [
        ("vsid_set", 7001, 3, b("10.1.1.1"), PROV_MAC_B, -1, 2),
        ("route_set", 3, b("10.1.1.0"), 24, VSUBNET, 7001, 0, ZERO_B),
    ]   # the rdid 2 customer route (metric 10) loses to the connected route (metric 0)


def test_subnet_defaults_and_connected_routes():
    p = redblue()
    calls = p.check([subnet(5002, "10.1.2.0/24"),
                     subnet(5003, "10.1.3.0/24", gateway="10.1.3.254",
                            gateway_mac="02:AA:bb:cc:dd:ee", flowid=7),
                     attachment(101, "172.16.5.1/24", mac="02-00-00-00-05-01")])
    assert calls == [
        ("vsid_set", 5002, 1, b("10.1.2.1"), PROV_MAC_B, -1, 2),
        ("vsid_set", 5003, 1, b("10.1.3.254"), bytes.fromhex("02aabbccddee"), 7, 3),
        ("attach_set", 101, 1, b("172.16.5.1"), b("255.255.255.0"), bytes.fromhex("020000000501")),
        ("route_set", 1, b("10.1.2.0"), 24, VSUBNET, 5002, 0, ZERO_B),
        ("route_set", 1, b("10.1.3.0"), 24, VSUBNET, 5003, 0, ZERO_B),
        ("route_set", 1, b("172.16.5.0"), 24, CUSTOMER, 0, 101, ZERO_B),
    ]
    assert p.subnets[5003]["gateway_mac"] == "02:aa:bb:cc:dd:ee"
    assert p.attachments[101]["mac"] == "02:00:00:00:05:01"
    # the default attachment MAC is the customer port's
    assert p.attachments[100]["mac"] == CUSTOMER_MAC
    # re-setting a subnet unchanged re-sends its vsid_set but not its route
    assert p.check([subnet(5002, "10.1.2.0/24")]) == [
        ("vsid_set", 5002, 1, b("10.1.2.1"), PROV_MAC_B, -1, 2)]


# -- deletions that would leave dangling references ----------------------------------------

def test_delete_subnet_with_records_refused():
    p = redblue()
    p.apply([rec(ca="10.1.1.20")])
    assert_refused(p, [subnet(5001, None, op="del")],
                   "virtual subnet 5001 still has 2 lookup records; delete them first")
    # deleting its records first, in the same batch, is fine
    calls = p.check([rec(ca="10.1.1.7", op="del"), rec(ca="10.1.1.20", op="del"),
                     subnet(5001, None, op="del")])
    assert calls == [("record_del", 5001, b("10.1.1.7")), ("record_del", 5001, b("10.1.1.20")),
                     ("vsid_del", 5001),
                     ("route_del", 1, b("10.1.1.0"), 24, False)]   # 172.16.1.0/24 stays
    assert 5001 not in p.subnets and 5001 not in p.domains[1]["vsids"]


def test_delete_subnet_that_is_a_next_hop_refused():
    p = redblue()
    p.apply([rec(ca="10.1.1.7", op="del"), route("10.9.0.0/16", "10.1.1.50")])
    assert_refused(p, [subnet(5001, None, op="del")],
                   "virtual subnet 5001 is the next hop of route 10.9.0.0/16 via 10.1.1.50; "
                   "delete it first")


def test_a_deleted_subnets_slot_is_given_out_only_after_its_batch():
    """A record read before a subnet's delete may still be in flight until the
    batch's grace period: a subnet created in the same batch must not get the
    slot (its GRE key word and counters); once released, the slot is reused."""
    released = []
    p = redblue(on_release=released.append)
    p.apply([subnet(5002, "10.2.0.0/24")])
    slot = p.subnets[5002]["slot"]
    # refused: the slot stays with 5002, nothing waits, nothing released
    assert_refused(p, [subnet(5002, None, op="del"), subnet(5003, "10.2.0.0/25"),
                       subnet(5004, "10.2.0.0/25")], "overlaps virtual subnet 5003")
    assert released == []
    p.apply([subnet(5002, None, op="del"), subnet(5003, "10.2.0.0/24")])
    assert p.subnets[5003]["slot"] != slot
    assert released == [[slot]] and p.cooling == [] and p.free_slots[-1] == slot
    p.apply([subnet(5004, "10.3.0.0/24")])
    assert p.subnets[5004]["slot"] == slot and released == [[slot]]


def test_delete_domain_with_subnets_or_attachments_refused():
    p = redblue()
    assert_refused(p, [domain(1, op="del")],
                   "routing domain 1 still has virtual subnet 5001; delete it first")
    p.apply([rec(ca="10.1.1.7", op="del"), subnet(5001, None, op="del")])
    assert_refused(p, [domain(1, op="del")],
                   "routing domain 1 still has attachment vlan 100; delete it first")
    assert_refused(p, [attachment(100, op="del")],
                   "attachment vlan 100: static neighbour 172.16.1.10 would not be on any "
                   "subnet once deleted; delete it first")
    calls = p.check([NEIGH_100_DEL, attachment(100, op="del"), domain(1, op="del")])
    assert calls == [("rd_link_set", 1, 0), ("neigh_clear", 100, b("172.16.1.10")),
                     ("attach_del", 100), ("route_del", 1, b("172.16.1.0"), 24, True)]
    assert 1 not in p.domains


def test_delete_attachment_used_by_route_refused():
    p = redblue()
    p.apply([route("10.8.0.0/16", "172.16.1.254", metric=5)])
    assert_refused(p, [attachment(100, op="del")],
                   "VLAN 100 is the next hop of route 10.8.0.0/16 via 172.16.1.254; "
                   "delete it first")
    p.apply([route("10.8.0.0/16", "0.0.0.0", vlan=100, op="set")])
    p.apply([route("10.8.0.0/16", "172.16.1.254", op="del")])
    assert_refused(p, [attachment(100, op="del")],
                   "VLAN 100 is the next hop of route 10.8.0.0/16 via 0.0.0.0")


def test_delete_missing_objects_refused():
    p = redblue()
    assert_refused(p, [rec(ca="10.1.1.99", op="del")],
                   "no lookup record for 10.1.1.99 in VSID 5001")
    assert_refused(p, [subnet(5009, None, op="del")], "virtual subnet 5009 does not exist")
    assert_refused(p, [attachment(300, op="del")], "no attachment on VLAN 300")
    assert_refused(p, [domain(3, op="del")], "routing domain 3 does not exist")
    assert_refused(p, [route("10.9.0.0/16", "172.16.1.20", op="del")],
                   "no customer route 10.9.0.0/16 via 172.16.1.20 in routing domain 1")
    # connected routes are not customer routes
    assert_refused(p, [route("10.1.1.0/24", "0.0.0.0", op="del")],
                   "no customer route 10.1.1.0/24 via 0.0.0.0 in routing domain 1")
    assert_refused(p, [{"op": "del", "kind": "neighbour", "ip": "192.168.1.99"}],
                   "no static neighbour 192.168.1.99 (vlan 0)")
    # the same record deleted twice in one batch
    assert_refused(p, [rec(ca="10.1.1.7", op="del"), rec(ca="10.1.1.7", op="del")],
                   "no lookup record for 10.1.1.7 in VSID 5001")


# -- whole or not at all -------------------------------------------------------------------

def test_batch_with_invalid_last_op_changes_nothing():
    p = redblue()
    good = [
        domain(3, "green"),
        subnet(7001, "10.3.0.0/16", rdid=3),
        attachment(300, "172.16.3.1/24", rdid=3),
        rec(vsid=7001, ca="10.3.0.5", pa="192.168.1.13"),
        route("10.30.0.0/16", "172.16.3.20", rdid=3, metric=10),
        route("10.9.0.0/16", "10.1.1.50", rdid=1),
        {"op": "set", "kind": "neighbour", "vlan": 300, "ip": "172.16.3.20",
         "mac": "02:00:00:00:03:20"},
        {"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24"], "mtu": 1400},
        rec(ca="10.1.1.7", op="del"),
        rec(vsid=6001, ca="10.1.1.7", mac="00:15:5d:7e:00:77", pa="192.168.1.12"),
        NEIGH_100_DEL,
        attachment(100, "172.16.9.1/24"),           # readdressed
    ]
    bad = route("10.31.0.0/16", "192.0.2.1", rdid=3)
    before = state(p)
    with pytest.raises(PolicyError, match="next hop 192.0.2.1 is on no VLAN and in no "
                                          "virtual subnet of routing domain 3"):
        p.apply(good + [bad])
    assert state(p) == before
    assert p.generation == 1
    assert 3 not in p.domains and 7001 not in p.subnets and 300 not in p.attachments
    assert (7001, "10.3.0.5") not in p.records and (3, "10.30.0.0/16") not in p.routes
    assert (1, "10.9.0.0/16") not in p.routes and (1, "10.9.0.0/16") not in p.installed
    assert (300, "172.16.3.20") not in p.neighbours
    assert p.provider["mtu"] == 1500
    assert p.records[(5001, "10.1.1.7")]["pa"] == "192.168.1.10"
    assert p.records[(6001, "10.1.1.7")]["mac"] == "00:15:5d:7e:00:07"
    assert p.attachments[100]["address"] == "172.16.1.1/24"
    assert (1, "172.16.1.0/24") in p.installed and (1, "172.16.9.0/24") not in p.installed
    # the good part alone applies, as one generation; the subnet slot was not leaked
    assert p.apply(good) == 2
    assert p.subnets[7001]["slot"] == 2
    assert p.provider["mtu"] == 1400
    assert p.installed[(3, "10.30.0.0/16")] == (CUSTOMER, 0, 300, b("172.16.3.20"))
    assert p.installed[(1, "10.9.0.0/16")] == (APPLIANCE, 5001, 0, b("10.1.1.50"))
    assert (1, "172.16.1.0/24") not in p.installed
    assert p.installed[(1, "172.16.9.0/24")] == (CUSTOMER, 0, 100, ZERO_B)


def test_valid_batch_bumps_generation_by_one():
    p = redblue()
    assert p.apply([rec(ca="10.1.1.20"), rec(ca="10.1.1.21"), rec(ca="10.1.1.22")]) == 2
    assert p.generation == 2
    assert p.apply([]) == 3                 # an empty batch is a (no-op) generation
    with pytest.raises(PolicyError):
        p.apply([rec(ca="10.1.1.23", mac="nope")])
    assert p.generation == 3
    assert p.apply([rec(ca="10.1.1.23")]) == 4
    assert p.apply([rec(ca="10.1.1.24")], generation=10) == 10     # numbered by a manager


def test_failed_capacity_check_restores_route_bookkeeping():
    """The capacity checks run after the routes are staged: a refusal there must also
    restore the per-length route counts (else last_of_len goes wrong later)."""
    p = redblue(capacity={"records": 3, "routes": 100})
    p.apply([route("10.9.0.0/16", "172.16.1.20"), route("10.8.0.0/16", "172.16.1.20"),
             rec(ca="10.1.1.20")])
    assert_refused(p, [route("10.9.0.0/16", "172.16.1.20", op="del"),
                       route("10.8.0.0/16", "172.16.1.20", op="del"), rec(ca="10.1.1.21")],
                   "4 lookup records exceed the table size of 3")
    assert p.check([route("10.9.0.0/16", "172.16.1.20", op="del")]) == [
        ("route_del", 1, b("10.9.0.0"), 16, False)]
    q = redblue(capacity={"records": 10, "routes": 6})
    assert len(q.installed) == 4
    q.apply([route("10.9.0.0/16", "172.16.1.20"), route("10.9.0.0/16", "172.16.1.21")])
    assert_refused(q, [route("10.7.0.0/16", "172.16.1.20"), route("10.6.0.0/16", "172.16.1.20")],
                   "7 routes exceed the table size of 6")


# -- routes: metrics and the C calls ------------------------------------------------------

def test_lowest_metric_route_is_installed():
    p = redblue()
    pfx = b("10.9.0.0")
    assert p.check([route("10.9.0.0/16", "172.16.1.20", metric=20)]) == [
        ("route_set", 1, pfx, 16, CUSTOMER, 0, 100, b("172.16.1.20"))]
    # a better route replaces it: one route_set
    assert p.check([route("10.9.0.0/16", "172.16.1.30", metric=10)]) == [
        ("route_set", 1, pfx, 16, CUSTOMER, 0, 100, b("172.16.1.30"))]
    # a worse one changes nothing in C
    assert p.check([route("10.9.0.0/16", "172.16.1.40", metric=30)]) == []
    # the best changes when a metric changes: exactly one route_set
    assert p.check([route("10.9.0.0/16", "172.16.1.20", metric=5)]) == [
        ("route_set", 1, pfx, 16, CUSTOMER, 0, 100, b("172.16.1.20"))]
    # a metric change that keeps the best route: no C call
    assert p.check([route("10.9.0.0/16", "172.16.1.20", metric=8)]) == []
    # deleting the installed route installs the next best (no route_del)
    assert p.check([route("10.9.0.0/16", "172.16.1.20", op="del")]) == [
        ("route_set", 1, pfx, 16, CUSTOMER, 0, 100, b("172.16.1.30"))]
    # deleting a route that is not installed: nothing in C
    assert p.check([route("10.9.0.0/16", "172.16.1.40", op="del")]) == []
    assert p.check([route("10.9.0.0/16", "172.16.1.30", op="del")]) == [
        ("route_del", 1, pfx, 16, True)]
    assert (1, "10.9.0.0/16") not in p.routes and (1, "10.9.0.0/16") not in p.installed


def test_metric_default_and_route_kinds():
    p = redblue()
    calls = p.check([route("10.9.0.0/16", "10.1.1.50"),                     # appliance
                     route("10.8.0.0/16", "0.0.0.0", vlan=100),             # on-link VLAN
                     route("10.7.0.0/16", "0.0.0.0", vsid=5001),            # on-link subnet
                     route("0.0.0.0/0", "172.16.1.254", metric=256)])       # default route
    assert sorted(calls) == sorted([
        ("route_set", 1, b("10.9.0.0"), 16, APPLIANCE, 5001, 0, b("10.1.1.50")),
        ("route_set", 1, b("10.8.0.0"), 16, CUSTOMER, 0, 100, ZERO_B),
        ("route_set", 1, b("10.7.0.0"), 16, VSUBNET, 5001, 0, ZERO_B),
        ("route_set", 1, ZERO_B, 0, CUSTOMER, 0, 100, b("172.16.1.254")),
    ])
    assert p.routes[(1, "10.9.0.0/16")]["10.1.1.50"]["metric"] == 256
    # metric 256 (the default) against 255: the explicit lower metric wins
    assert p.check([route("0.0.0.0/0", "10.1.1.60", metric=255)]) == [
        ("route_set", 1, ZERO_B, 0, APPLIANCE, 5001, 0, b("10.1.1.60"))]


def test_a_route_inside_a_virtual_subnet_flags_its_domain():
    """Such a route overrides the records of the CAs it covers, so the data path must
    route every packet of that domain: the flag goes on before anything else of the
    batch and off after everything, and only for routes inside a subnet."""
    p = redblue()

    def flags(calls):
        return [c for c in calls if c[0] == "rd_shadow_set"]

    # outside every subnet, or covering a whole subnet: no flag
    assert flags(p.check([route("10.9.0.0/16", "10.1.1.50"),
                          route("10.0.0.0/8", "172.16.1.20")])) == []
    calls = p.check([rec(ca="10.1.1.30"), route("10.1.1.0/28", "172.16.1.20")])
    assert calls[0] == ("rd_shadow_set", 1, True) and calls[1][0] == "record_set"
    assert flags(calls) == [calls[0]] and p.shadowed == {1}
    # a second route inside (an appliance): the flag is on already
    assert p.check([route("10.1.1.128/25", "10.1.1.50")]) == [
        ("route_set", 1, b("10.1.1.128"), 25, APPLIANCE, 5001, 0, b("10.1.1.50"))]
    assert p.check([route("10.1.1.0/28", "172.16.1.20", op="del")]) == [
        ("route_del", 1, b("10.1.1.0"), 28, True)]
    calls = p.check([route("10.1.1.128/25", "10.1.1.50", op="del")])
    assert calls == [("route_del", 1, b("10.1.1.128"), 25, True), ("rd_shadow_set", 1, False)]
    assert p.shadowed == set()
    # a subnet added beneath an existing route, then deleted
    p.check([route("10.5.5.0/24", "172.16.1.20")])
    calls = p.check([subnet(5002, "10.5.0.0/16")])
    assert calls[0] == ("rd_shadow_set", 1, True) and flags(calls) == [calls[0]]
    calls = p.check([subnet(5002, None, op="del")])
    assert calls[-1] == ("rd_shadow_set", 1, False) and flags(calls) == [calls[-1]]
    # an on-link route into another virtual subnet, inside this one: a route too
    p.apply([subnet(5002, "10.6.0.0/16")])
    calls = p.check([route("10.1.1.128/25", "0.0.0.0", vsid=5002)])
    assert calls[0] == ("rd_shadow_set", 1, True)
    calls = p.check([route("10.1.1.128/25", "0.0.0.0", op="del")])
    assert calls[-1] == ("rd_shadow_set", 1, False)
    # the same route in domain 2 (its own 10.1.1.0/24) flags domain 2 alone
    assert flags(p.check([route("10.1.1.0/28", "172.16.2.20", rdid=2)])) == [
        ("rd_shadow_set", 2, True)]
    assert p.shadowed == {2}
    # a refused batch leaves the flags as they were
    before = state(p)
    with pytest.raises(PolicyError):
        p.check([route("10.1.1.0/28", "172.16.1.20"), rec(vsid=9999)])
    assert state(p) == before and p.shadowed == {2}


def test_a_domain_names_the_link_its_fabric_packets_reach_without_routes():
    """A fabric packet to a host in an attachment's subnet skips the route lookup
    when no other route lies inside that subnet: the lowest such VLAN that keeps
    its hosts by number (/22 or longer). A batch that puts a route inside, or moves
    the link's subnet, clears the link before anything else; one that takes the
    last route out names it after everything."""
    p = redblue()
    blue, red = (100, "172.16.1.0/24"), (200, "172.16.2.0/24")
    assert p.links == {1: blue, 2: red}

    def links(calls):
        return [c for c in calls if c[0] == "rd_link_set"]

    # outside the link's subnet, or covering all of it: no change
    assert links(p.check([route("10.9.0.0/16", "172.16.1.20"),
                          route("172.16.0.0/16", "10.1.1.7")])) == []
    # a /26 inside, to a router on the link: cleared first
    calls = p.check([rec(ca="10.1.1.30"), route("172.16.1.64/26", "172.16.1.254")])
    assert calls[0] == ("rd_link_set", 1, 0) and links(calls) == [calls[0]]
    assert p.links == {2: red}
    # a second route inside: nothing more to clear; the last one out: named last
    assert links(p.check([route("172.16.1.128/25", "10.1.1.7")])) == []
    p.check([route("172.16.1.64/26", "172.16.1.254", op="del")])
    calls = p.check([route("172.16.1.128/25", "10.1.1.7", op="del")])
    assert calls[-1] == ("rd_link_set", 1, 100) and links(calls) == [calls[-1]]
    # a /21 keeps no hosts by number: never named; a /24 on VLAN 102 is, while 100 is not
    assert links(p.check([attachment(101, "172.17.0.1/21")])) == []
    calls = p.check([route("172.16.1.0/25", "172.16.1.254")])
    assert links(calls) == [("rd_link_set", 1, 0)] and calls[0] == links(calls)[0]
    calls = p.check([attachment(102, "172.18.0.1/24")])
    assert calls[-1] == ("rd_link_set", 1, 102) and links(calls) == [calls[-1]]
    calls = p.check([route("172.16.1.0/25", "172.16.1.254", op="del")])
    assert (calls[0], calls[-1]) == (("rd_link_set", 1, 0), ("rd_link_set", 1, 100))
    assert len(links(calls)) == 2 and p.links == {1: blue, 2: red}
    # the link's subnet moves, and the route that was inside the new one goes in the
    # same batch: cleared before the attachment changes, named again after the route
    # (with the next hop and the static neighbour that the old subnet held)
    p.apply([route("172.16.9.0/25", "172.16.1.254")])
    calls = p.check([route("172.16.9.0/25", "172.16.1.254", op="del"),
                     route("10.9.0.0/16", "172.16.1.20", op="del"), NEIGH_100_DEL,
                     attachment(100, "172.16.9.1/24")])
    assert (calls[0], calls[-1]) == (("rd_link_set", 1, 0), ("rd_link_set", 1, 100))
    assert calls[1][0] == "neigh_clear" and calls[2][0] == "attach_set"
    assert p.links[1] == (100, "172.16.9.0/24")
    # ... only its MAC: nothing to do
    assert links(p.check([attachment(100, "172.16.9.1/24", mac="02:00:00:00:09:01")])) == []
    # the link's attachment deleted: cleared before it goes, the next one named after
    calls = p.check([attachment(100, op="del")])
    assert calls[0] == ("rd_link_set", 1, 0) and calls[-1] == ("rd_link_set", 1, 102)
    # a refused batch leaves the links as they were
    before = state(p)
    with pytest.raises(PolicyError):
        p.check([route("172.18.0.0/28", "172.18.0.20"), rec(vsid=9999)])
    assert state(p) == before and p.links == {1: (102, "172.18.0.0/24"), 2: red}


def test_last_of_len_is_per_domain():
    p = redblue()
    p.apply([route("10.9.0.0/16", "172.16.1.20"), route("10.8.0.0/16", "172.16.1.20"),
             route("10.9.0.0/16", "172.16.2.20", rdid=2)])
    # another /16 remains in domain 1
    assert p.check([route("10.9.0.0/16", "172.16.1.20", op="del")]) == [
        ("route_del", 1, b("10.9.0.0"), 16, False)]
    # the last /16 of domain 1 (domain 2 still has one: it does not count)
    assert p.check([route("10.8.0.0/16", "172.16.1.20", op="del")]) == [
        ("route_del", 1, b("10.8.0.0"), 16, True)]
    # replacing the last /16 of a domain by another /16 in one batch: the new one
    # first, and the delete does not clear the length (in a full table the delete
    # goes first: test_live_batch_replacing_routes_in_a_full_table)
    p.apply([route("10.8.0.0/16", "172.16.1.20")])
    calls = p.check([route("10.8.0.0/16", "172.16.1.20", op="del"),
                     route("10.5.0.0/16", "172.16.1.20")])
    assert calls == [
        ("route_set", 1, b("10.5.0.0"), 16, CUSTOMER, 0, 100, b("172.16.1.20")),
        ("route_del", 1, b("10.8.0.0"), 16, False)]
    # a /24 replaced by the /23 that holds it: the /23 is in before the /24 goes
    p.apply([route("10.6.0.0/24", "172.16.1.20")])
    calls = p.check([route("10.6.0.0/24", "172.16.1.20", op="del"),
                     route("10.6.0.0/23", "172.16.1.20")])
    assert [c[0] for c in calls if c[0].startswith("route")] == ["route_set", "route_del"]
    # the /24s of domain 2 (subnet and attachment): deleting the attachment is not the last
    p.apply([route("10.9.0.0/16", "172.16.2.20", rdid=2, op="del"),
             {"op": "del", "kind": "neighbour", "vlan": 200, "ip": "172.16.2.10"}])
    assert p.check([attachment(200, op="del")]) == [
        ("rd_link_set", 2, 0), ("attach_del", 200), ("route_del", 2, b("172.16.2.0"), 24, False)]


def test_provider_change_rebuilds_records():
    p = redblue()
    calls = p.check([{"op": "set", "kind": "provider", "addresses": ["192.168.1.2/24",
                                                                     "192.168.2.2/24"],
                      "gateway": "192.168.1.254", "mtu": 9000}])
    assert calls[0] == ("provider_set", [b("192.168.1.2"), b("192.168.2.2")],
                        b("255.255.255.0"), b("192.168.1.254"), 9000, PROV_MAC_B)
    # every record again, in one C call (a record block, dataplane/recblock.py)
    [(fn, block)] = calls[1:]
    assert fn == "record_set_bulk"
    assert sorted(block[i:i + 20] for i in range(0, len(block), 20)) == sorted([
        (5001).to_bytes(4, "little") + b("10.1.1.7") + b("192.168.1.10") +
        bytes.fromhex("00155db10007") + b"\0\0",
        (6001).to_bytes(4, "little") + b("10.1.1.7") + b("192.168.1.11") +
        bytes.fromhex("00155d7e0007") + b"\0\0",
    ])


def test_record_normalised_and_calls():
    p = redblue()
    calls = p.check([rec(ca="10.1.1.20", mac="00-15-5D-00-00-2A", pa="192.168.1.12",
                         method="encap")])
    assert calls == [("record_set", 5001, b("10.1.1.20"), bytes.fromhex("00155d00002a"),
                      b("192.168.1.12"), 0)]
    assert p.records[(5001, "10.1.1.20")] == {"vsid": 5001, "ca": "10.1.1.20",
                                              "mac": "00:15:5d:00:00:2a",
                                              "pa": "192.168.1.12", "method": "encap"}
    # the method defaults to encap
    p.apply([rec(ca="10.1.1.21")])
    assert p.records[(5001, "10.1.1.21")]["method"] == "encap"
    assert p.check([rec(ca="10.1.1.20", op="del")]) == [("record_del", 5001, b("10.1.1.20"))]


# -- documents ----------------------------------------------------------------------------

def rich_policy() -> Policy:
    """Red/Blue plus one of everything: every optional field, every route kind."""
    p = redblue()
    p.apply([
        {"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24", "192.168.7.1/24"],
         "gateway": "192.168.1.254", "mtu": 1400},
        domain(3, "green"),
        subnet(7001, "10.3.0.0/16", rdid=3, gateway="10.3.255.254",
               gateway_mac="02:00:00:00:70:01", flowid=9),
        subnet(7002, "10.4.0.0/30", rdid=3),
        attachment(300, "172.16.3.1/24", rdid=3, mac="02:00:00:00:30:00"),
        rec(vsid=7001, ca="10.3.0.5", pa="192.168.7.20", method="encap"),
        rec(vsid=7002, ca="10.4.0.2", pa="192.168.1.30"),
        route("10.30.0.0/16", "172.16.3.20", rdid=3, metric=10),
        route("10.30.0.0/16", "10.3.0.5", rdid=3, metric=20),
        route("10.31.0.0/16", "0.0.0.0", rdid=3, vsid=7002),
        route("10.32.0.0/16", "0.0.0.0", rdid=3, vlan=300, metric=0),
        route("10.9.0.0/16", "172.16.1.20", rdid=1),
        {"op": "set", "kind": "neighbour", "vlan": 300, "ip": "172.16.3.20",
         "mac": "02:00:00:00:03:20"},
        {"op": "set", "kind": "neighbour", "ip": "192.168.1.254", "mac": "00:15:5d:00:00:fe"},
    ])
    return p


def test_document_round_trips():
    p = rich_policy()
    doc = p.document()
    q = new_policy()
    assert q.load_document(json.loads(json.dumps(doc))) == 1
    assert q.document() == doc
    assert q.installed == p.installed and q.lengths == p.lengths
    assert {v: s["slot"] for v, s in q.subnets.items()} == {v: s["slot"]
                                                            for v, s in p.subnets.items()}
    # its own document again: nothing to delete, one more generation, the same policy
    gen = p.generation
    assert p.load_document(json.loads(json.dumps(doc))) == gen + 1
    assert p.document() == doc
    # the documented defaults are filled in
    d1 = next(d for d in doc["routing_domains"] if d["rdid"] == 1)
    assert d1["subnets"] == [{"vsid": 5001, "prefix": "10.1.1.0/24", "gateway": "10.1.1.1",
                              "gateway_mac": PROVIDER_MAC, "flowid": None}]
    assert d1["attachments"] == [{"vlan": 100, "address": "172.16.1.1/24", "mac": CUSTOMER_MAC}]
    assert d1["routes"] == [{"prefix": "10.9.0.0/16", "next_hop": "172.16.1.20", "metric": 256,
                             "vlan": 100}]
    d3 = next(d for d in doc["routing_domains"] if d["rdid"] == 3)
    assert next(s for s in d3["subnets"] if s["vsid"] == 7002)["gateway"] == "10.4.0.1"


class Recorder:
    """A stand-in for the Cython tables: records every call and commit."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.commits = 0

    def commit(self):
        self.commits += 1

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "neigh_learned":        # a read: nothing learned, nothing recorded
            return lambda *args: None
        return lambda *args: self.calls.append((name, *args))


class FailingAt(Recorder):
    """The Cython tables, failing the first call to `name` as a full table would."""

    def __init__(self, name):
        super().__init__()
        self.fail = name

    def __getattr__(self, name):
        if name == self.fail:
            def fail(*args):
                self.fail = None
                self.calls.append((name, *args))
                raise MemoryError(f"{name}: table full")
            return fail
        return super().__getattr__(name)


def test_a_failed_first_call_puts_the_flags_set_ahead_of_it_back():
    """The batch's first real C call fails: the link cleared and the domain flagged
    ahead of it are put back, last first, after the failed call's own entry (which
    a call that failed half-way may have written), and the policy is as before."""
    nv = FailingAt(None)
    p = Policy(nv, PROVIDER_MAC, CUSTOMER_MAC)
    p.load_document(redblue_doc())
    nv.fail = "route_set"
    nv.calls.clear()
    before = state(p)
    with pytest.raises(MemoryError):
        p.apply([route("172.16.1.64/26", "172.16.1.254"), route("10.1.1.64/26", "172.16.1.254")])
    assert nv.calls == [("rd_link_set", 1, 0), ("rd_shadow_set", 1, True),
                        ("route_set", 1, b("10.1.1.64"), 26, CUSTOMER, 0, 100,
                         b("172.16.1.254")),
                        ("route_del", 1, b("10.1.1.64"), 26, True),
                        ("rd_shadow_set", 1, False), ("rd_link_set", 1, 100)]
    assert state(p) == before and p.shadowed == set()
    assert p.links == {1: (100, "172.16.1.0/24"), 2: (200, "172.16.2.0/24")}


def test_a_batch_failing_at_any_c_call_leaves_the_real_tables_as_they_were():
    """The real C tables (tests/undo_batch.py, EAL in a process of its own): the first
    document on empty tables, a batch touching every kind of table entry, and a load
    that deletes before it changes the provider each fail at each of their C calls in
    turn, before the call or after it (half-way); each time the tables' digest and the
    policy are what they were. Each, once through, changes every table of the digest."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("undo_batch.py"))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.splitlines()[-1])
    assert res["differ"] == []
    tables = ["attachments", "domains", "neighbours", "provider", "records", "rewrites",
              "routes", "vsids"]
    for run in ("first", "batch", "load"):
        assert res[run]["calls"] >= 30 and res[run]["changes"] == tables, res
    assert res["failed_ok"] == 2 * sum(res[run]["calls"] for run in ("first", "batch", "load"))


def test_load_document_deletes_what_it_lacks():
    nv = Recorder()
    p = Policy(nv, PROVIDER_MAC, CUSTOMER_MAC)
    assert p.load_document(redblue_doc()) == 1 and nv.commits == 1
    p.apply([
        domain(3, "green"), subnet(7001, "10.3.0.0/16", rdid=3),
        attachment(300, "172.16.3.1/24", rdid=3),
        rec(vsid=7001, ca="10.3.0.5"),
        route("10.30.0.0/16", "172.16.3.20", rdid=3),
        route("10.31.0.0/16", "10.3.0.5", rdid=3),
        subnet(5002, "10.1.2.0/24"), rec(vsid=5002, ca="10.1.2.9"),
        rec(ca="10.1.1.99"),
        route("10.9.0.0/16", "172.16.1.20"), route("10.9.0.0/16", "10.1.2.9", metric=1),
        attachment(101, "172.16.5.1/24"),
        {"op": "set", "kind": "neighbour", "vlan": 101, "ip": "172.16.5.9",
         "mac": "02:00:00:00:05:09"},
    ])
    assert p.generation == 2 and nv.commits == 2
    nv.calls.clear()

    doc = redblue_doc()
    doc["records"][0]["pa"] = "192.168.1.12"           # and one object changed
    assert p.load_document(doc) == 3
    assert nv.commits == 3                              # one batch, one commit

    fresh = new_policy()
    fresh.load_document(copy.deepcopy(doc))
    assert norm(p.document()) == norm(fresh.document())
    assert sorted(p.domains) == [1, 2] and sorted(p.subnets) == [5001, 6001]
    assert sorted(p.attachments) == [100, 200]
    assert sorted(p.records) == [(5001, "10.1.1.7"), (6001, "10.1.1.7")]
    assert set(p.installed) == {(1, "10.1.1.0/24"), (1, "172.16.1.0/24"),
                                (2, "10.1.1.0/24"), (2, "172.16.2.0/24")}
    assert (101, "172.16.5.9") not in p.neighbours
    assert p.installed == fresh.installed
    assert {k: n for k, n in p.lengths.items() if n} == fresh.lengths

    deleted = [c for c in nv.calls if c[0].endswith("_del")]
    assert sorted(c[:4] for c in deleted) == sorted([
        ("record_del", 7001, b("10.3.0.5")), ("record_del", 5002, b("10.1.2.9")),
        ("record_del", 5001, b("10.1.1.99")), ("attach_del", 300), ("attach_del", 101),
        ("vsid_del", 7001), ("vsid_del", 5002),
        ("route_del", 3, b("10.3.0.0"), 16), ("route_del", 3, b("10.30.0.0"), 16),
        ("route_del", 3, b("10.31.0.0"), 16), ("route_del", 3, b("172.16.3.0"), 24),
        ("route_del", 1, b("10.1.2.0"), 24), ("route_del", 1, b("172.16.5.0"), 24),
        ("route_del", 1, b("10.9.0.0"), 16)])
    # last_of_len=True exactly once for each (domain, length) left with no route
    last = {(c[1], c[3]) for c in deleted if c[0] == "route_del" and c[4]}
    assert last == {(3, 16), (3, 24), (1, 16)}
    assert sum(1 for c in deleted if c[0] == "route_del" and c[4]) == 3
    assert ("record_set", 5001, b("10.1.1.7"), bytes.fromhex("00155db10007"),
            b("192.168.1.12"), 0) in nv.calls
    # the records are deleted before their subnets
    names = [c[0] for c in nv.calls]
    assert names.index("vsid_del") > max(i for i, n in enumerate(names) if n == "record_del")


def test_load_may_take_a_pa_for_the_provider_that_it_moves_a_record_off():
    """A load sets the provider before the records: a new provider address that a
    record of the old policy has as its PA is fine when the document moves it."""
    doc = redblue_doc()
    doc["provider"]["addresses"].append("192.168.1.11/24")
    doc["records"][1]["pa"] = "192.168.1.200"
    p = redblue()
    assert p.load_document(copy.deepcopy(doc)) == 2
    assert p.records[(6001, "10.1.1.7")]["pa"] == "192.168.1.200"
    doc["records"][1]["pa"] = "192.168.1.11"          # not when it stays there
    assert_refused(redblue(), doc, "lookup record 10.1.1.7: PA 192.168.1.11 is one of the "
                                   "gateway's NVGRE addresses", apply=False)


def rewrite_policy() -> Policy:
    """rich_policy with IP rewrite: two mappings and two rewrite records."""
    p = rich_policy()
    p.apply([{"op": "set", "kind": "mapping", "rdid": 1, "ca": "172.16.1.10",
              "pa": "192.168.1.100"},
             {"op": "set", "kind": "mapping", "rdid": 2, "ca": "172.16.2.10",
              "pa": "192.168.1.101"},
             rec(ca="10.1.1.30", pa="192.168.1.102", method="rewrite"),
             rec(vsid=6001, ca="10.1.1.31", pa="192.168.1.103", method="rewrite")])
    return p


def _domain(doc, rdid):
    return next(d for d in doc["routing_domains"] if d["rdid"] == rdid)


def _move_vlan(doc):
    """VLAN 300 from domain 3 to domain 1, with its static neighbour's routes."""
    d1, d3 = _domain(doc, 1), _domain(doc, 3)
    d1["attachments"] += [a for a in d3["attachments"] if a["vlan"] == 300]
    d3["attachments"] = [a for a in d3["attachments"] if a["vlan"] != 300]
    d1["routes"] += [r for r in d3["routes"] if r.get("vlan") == 300 or
                     r["next_hop"] == "172.16.3.20"]
    d3["routes"] = [r for r in d3["routes"] if r.get("vlan") != 300 and
                    r["next_hop"] != "172.16.3.20"]


def _narrow_subnet(doc):
    """Subnet 7001's prefix from /16 to /17 (its gateway inside it)."""
    sub = next(s for s in _domain(doc, 3)["subnets"] if s["vsid"] == 7001)
    sub.update(prefix="10.3.0.0/17", gateway="10.3.127.254")


def _move_vsid(doc):
    """VSID 7002 from domain 3 to domain 1, with the route through it."""
    d1, d3 = _domain(doc, 1), _domain(doc, 3)
    d1["subnets"] += [s for s in d3["subnets"] if s["vsid"] == 7002]
    d3["subnets"] = [s for s in d3["subnets"] if s["vsid"] != 7002]
    d1["routes"] += [r for r in d3["routes"] if r.get("vsid") == 7002]
    d3["routes"] = [r for r in d3["routes"] if r.get("vsid") != 7002]


def _swap_rewrite_pas(doc):
    """The two mappings swap PAs, and a mapping swaps with a rewrite record."""
    m1, m2 = _domain(doc, 1)["mappings"][0], _domain(doc, 2)["mappings"][0]
    r = next(r for r in doc["records"] if r["ca"] == "10.1.1.30")
    m1["pa"], m2["pa"], r["pa"] = m2["pa"], r["pa"], m1["pa"]


def _route_to_another_subnet(doc):
    """Subnet 7001 goes; 7002 widens to hold the next hop of 10.30.0.0/16 via 10.3.0.5,
    which the document keeps (its key is the same; the subnet it is in is not)."""
    d3 = _domain(doc, 3)
    d3["subnets"] = [s for s in d3["subnets"] if s["vsid"] != 7001]
    next(s for s in d3["subnets"] if s["vsid"] == 7002)["prefix"] = "10.0.0.0/13"
    doc["records"] = [r for r in doc["records"] if r["vsid"] != 7001]
    for r in d3["routes"]:
        if r.get("vsid") == 7001:
            del r["vsid"]


def _route_to_a_subnet_from_a_vlan(doc):
    """VLAN 100 goes and a subnet takes its prefix: 10.9.0.0/16 via 172.16.1.20 stays."""
    d1 = _domain(doc, 1)
    d1["attachments"] = [a for a in d1["attachments"] if a["vlan"] != 100]
    d1["subnets"].append({"vsid": 5002, "prefix": "172.16.1.0/24"})
    d1["mappings"] = [m for m in d1["mappings"] if not m["ca"].startswith("172.16.1.")]
    for r in d1["routes"]:
        if r.get("vlan") == 100:
            del r["vlan"]
    doc["neighbours"] = [n for n in doc["neighbours"] if n.get("vlan") != 100]


@pytest.mark.parametrize("edit", [_move_vlan, _narrow_subnet, _move_vsid, _swap_rewrite_pas,
                                  _route_to_another_subnet, _route_to_a_subnet_from_a_vlan],
                         ids=["vlan-to-another-domain", "subnet-prefix", "vsid-to-another-domain",
                              "rewrite-pas-swapped", "route-kept-subnet-gone",
                              "route-kept-vlan-gone"])
def test_load_reaches_every_valid_document(edit):
    """A load makes the policy equal any document valid on its own, also where a set
    cannot change an object in place (a VLAN's or VSID's domain, a subnet's prefix, a
    rewrite PA that another owner takes): those go and come back in the one batch. An
    agent's snapshot is such a load; refused, the gateway could never catch up."""
    p = rewrite_policy()
    doc = p.document()
    edit(doc)
    fresh = new_policy()
    fresh.load_document(copy.deepcopy(doc))        # valid on its own
    nv = Recorder()
    p.nv = nv
    assert p.load_document(copy.deepcopy(doc)) == p.generation and nv.commits == 1
    assert norm(p.document()) == norm(fresh.document())
    assert p.installed == fresh.installed and p.rw_pas == fresh.rw_pas
    again = len(nv.calls)
    p.load_document(copy.deepcopy(doc))            # and then it is a no-op's batch
    assert not [c for c in nv.calls[again:] if c[0].endswith("_del")]


def mapping(ca, pa, rdid=1, op="set"):
    o = {"op": op, "kind": "mapping", "rdid": rdid, "ca": ca}
    return {**o, "pa": pa} if op == "set" else o


def test_record_and_mapping_never_share_a_pa():
    """A rewrite mapping's PA is ours (we answer ARP for it): a lookup record there
    would send NVGRE back to us, and a mapping on a record's PA would take the host's
    address. Refused either way round, as the batch leaves them, also in a record
    block; a batch that moves the record off the PA it gives the mapping is fine."""
    p = redblue()
    assert_refused(p, [mapping("172.16.1.10", "192.168.1.10")],
                   "rewrite mapping 172.16.1.10: PA 192.168.1.10 is the PA of lookup record "
                   "10.1.1.7 in VSID 5001")
    p.apply([mapping("172.16.1.10", "192.168.1.100")])
    assert_refused(p, [rec(pa="192.168.1.100")],
                   "lookup record 10.1.1.20: PA 192.168.1.100 is the rewrite PA of mapping "
                   "172.16.1.10 (the gateway's own)")
    blk = recblock.encode([{"vsid": 5001, "ca": f"10.1.1.{50 + k}", "mac": "00:15:5d:00:01:00",
                            "pa": "192.168.1.100" if k == 7 else "192.168.1.10",
                            "method": "encap"} for k in range(100)], extra=())
    before = state(p)
    with pytest.raises(PolicyError, match="PA 192.168.1.100 is the PA of lookup record "
                                          "10.1.1.57 in VSID 5001"):
        p.apply([], block=blk)
    assert state(p) == before
    # order does not matter within a batch: the record leaves, the mapping comes
    p.apply([mapping("172.16.1.10", "192.168.1.10"), rec(ca="10.1.1.7", pa="192.168.1.12",
                                                         mac="00:15:5d:b1:00:07")])
    assert p.mappings[(1, "172.16.1.10")] == "192.168.1.10"


PROVIDER = {"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24"]}


@pytest.mark.parametrize("ops,message", [
    ([{**PROVIDER, "addresses": ["0.0.0.0/0"]}],
     "provider address 0.0.0.0/0: not a unicast host address of its prefix"),
    ([{**PROVIDER, "addresses": ["224.0.0.5/32"]}],
     "provider address 224.0.0.5/32: not a unicast host address of its prefix"),
    ([{**PROVIDER, "addresses": ["192.168.1.255/24"]}],
     "provider address 192.168.1.255/24: not a unicast host address of its prefix"),
    ([{**PROVIDER, "gateway": "192.168.1.1"}],
     "provider gateway 192.168.1.1: not another host of 192.168.1.0/24"),
    ([{**PROVIDER, "gateway": "192.168.1.255"}],
     "provider gateway 192.168.1.255: not another host of 192.168.1.0/24"),
    ([rec(pa="192.168.1.255")],
     "lookup record 10.1.1.20: PA 192.168.1.255 is not a unicast host address"),
    ([rec(pa="192.168.1.0")],
     "lookup record 10.1.1.20: PA 192.168.1.0 is not a unicast host address"),
    ([rec(ca="10.1.1.1")],
     "lookup record 10.1.1.1: no VM's address in virtual subnet 5001 (10.1.1.0/24): the "
     "gateway's"),
    ([rec(ca="10.1.1.255")],
     "lookup record 10.1.1.255: no VM's address in virtual subnet 5001 (10.1.1.0/24): its "
     "network or broadcast address"),
    ([rec(ca="10.1.1.0")],
     "lookup record 10.1.1.0: no VM's address in virtual subnet 5001 (10.1.1.0/24): its "
     "network or broadcast address"),
    ([subnet(5001, "10.1.1.0/24", gateway="10.1.1.7")],
     "virtual subnet 5001: gateway 10.1.1.7 is the CA of a lookup record"),
    ([route("10.9.0.0/16", "172.16.1.20", vlan=100, vsid=5001)],
     "route 10.9.0.0/16: 'vlan' or 'vsid', not both"),
    ([route(0, "172.16.1.20")], "route prefix: 0 is not an IPv4 prefix"),
    ([route("10.9.0.0/16", 2886729994)], "route 10.9.0.0/16 next hop: 2886729994 is not an "
                                         "IPv4 address"),
], ids=["provider-any", "provider-multicast", "provider-broadcast", "gateway-ours",
        "gateway-broadcast", "pa-broadcast", "pa-network", "ca-gateway", "ca-broadcast",
        "ca-network", "subnet-gateway-on-a-record", "route-vlan-and-vsid", "prefix-int",
        "next-hop-int"])
def test_addresses_that_no_host_has_refused(ops, message):
    """Addresses that name no host (a prefix's network or broadcast address, 0/8,
    multicast, ours) where a host's is meant, and JSON numbers for addresses (ipaddress
    takes 2886729994 for 172.16.1.10, and 0 for 0.0.0.0/32), were accepted."""
    assert_refused(redblue(), ops, message)


def test_provider_prefix_change_checks_the_records_pas_against_it():
    """A record's or rewrite mapping's PA that a new provider prefix makes its
    broadcast address: refused as a record on it would be (a change of the prefix
    alone was not looked at). An older store's record already on one (lenient) does
    not stop an unrelated change of the addresses."""
    p = redblue()
    p.apply([{**PROVIDER, "addresses": ["192.168.1.1/16"]}, rec(pa="192.168.1.255")])
    assert_refused(p, [{**PROVIDER, "addresses": ["192.168.1.1/24"]}],     # the prefix only
                   "provider prefixes: 192.168.1.255, the PA of a lookup record, would be the "
                   "network or broadcast address of one")
    p = redblue()
    p.apply([{**PROVIDER, "addresses": ["192.168.1.1/16"]},
             mapping("172.16.1.10", "192.168.1.255")])
    assert_refused(p, [{**PROVIDER, "addresses": ["192.168.1.1/24"]}],
                   "provider prefixes: rewrite PA 192.168.1.255 would be the network or "
                   "broadcast address of one")
    p = redblue()
    p.lenient = True
    p.apply([rec(pa="192.168.1.255")])
    p.lenient = False
    p.apply([{**PROVIDER, "addresses": ["192.168.1.1/24", "10.0.0.1/24"]}])
    assert p.provider["addresses"] == ["192.168.1.1/24", "10.0.0.1/24"]


def test_route_deletes_go_first_only_in_a_full_table():
    """Make before break while the table holds the new routes and the old together;
    else the deletes first (test_live_batch_replacing_routes_in_a_full_table on C)."""
    batch = [route("10.8.0.0/16", "172.16.1.20", op="del"), route("10.5.0.0/16", "172.16.1.20")]
    for room, order in ((1, ["route_set", "route_del"]), (0, ["route_del", "route_set"])):
        p = redblue()
        p.apply([route("10.8.0.0/16", "172.16.1.20")])
        p.capacity = {**p.capacity, "routes": len(p.installed) + room}
        assert [c[0] for c in p.check(batch) if c[0].startswith("route")] == order, room


def test_mapping_clash_looks_only_at_the_pas_a_batch_gives_mappings():
    """A store's policy of an earlier version (lenient) with a record on a mapping's PA
    keeps it until a change replaces it: a batch that sets another mapping is taken; one
    whose mapping takes a record's PA is not."""
    p = redblue()
    p.lenient = True
    p.apply([mapping("172.16.1.10", "192.168.1.100"), rec(pa="192.168.1.100")])
    p.lenient = False
    p.apply([mapping("172.16.2.10", "192.168.1.101", rdid=2)])
    p.apply([mapping("172.16.1.10", "192.168.1.100")])             # the same again
    # onto a record's PA and off it again in one batch: it leaves no clash
    p.apply([mapping("172.16.2.10", "192.168.1.10", rdid=2),
             mapping("172.16.2.10", "192.168.1.102", rdid=2)])
    assert_refused(p, [mapping("172.16.1.11", "192.168.1.10")],
                   "rewrite mapping 172.16.1.11: PA 192.168.1.10 is the PA of lookup record "
                   "10.1.1.7 in VSID 5001")


def test_record_block_refuses_what_a_record_would():
    """The same rules on a record block (checked as arrays): the first bad record
    gets the single record's message."""
    good = [{"vsid": 5001, "ca": f"10.1.1.{i}", "mac": "00:15:5d:00:01:00",
             "pa": "192.168.1.10", "method": "encap"} for i in range(2, 200)]
    for i, bad, message in ((150, {"ca": "10.1.1.1"}, "the gateway's"),
                            (151, {"ca": "10.1.1.255"}, "network or broadcast address"),
                            (152, {"pa": "192.168.1.255"}, "is not a unicast host address")):
        recs = copy.deepcopy(good)
        recs[i].update(bad)
        p = redblue()
        before = state(p)
        with pytest.raises(PolicyError, match=message):
            p.apply([], block=recblock.encode(recs, extra=()))
        assert state(p) == before


def test_document_states_each_object_once():
    """Two subnets with one VSID, two neighbours with one address, two attachments on
    one VLAN: the last silently won."""
    doc = redblue_doc()
    doc["routing_domains"][0]["subnets"].append({"vsid": 5001, "prefix": "10.1.2.0/24"})
    assert_refused(redblue(), doc, "policy: virtual subnet 5001 appears twice", apply=False)
    doc = redblue_doc()
    doc["neighbours"].append({**doc["neighbours"][0], "mac": "00:15:5d:00:00:99"})
    assert_refused(redblue(), doc, "policy: neighbour 192.168.1.10 (vlan 0) appears twice",
                   apply=False)
    doc = redblue_doc()
    doc["routing_domains"][1]["attachments"].append({"vlan": 100,
                                                     "address": "172.16.9.1/24"})
    assert_refused(redblue(), doc, "policy: attachment vlan 100 appears twice", apply=False)
    doc = redblue_doc()
    doc["routing_domains"].append(copy.deepcopy(doc["routing_domains"][0]))
    assert_refused(redblue(), doc, "policy: routing domain 1 appears twice", apply=False)


def test_load_invalid_document_changes_nothing():
    p = rich_policy()
    doc = redblue_doc()
    doc["records"].append(rec(ca="10.1.9.9"))
    for k in ("op", "kind"):
        del doc["records"][-1][k]
    assert_refused(p, doc, "lookup record 10.1.9.9 is outside virtual subnet 5001 (10.1.1.0/24)",
                   apply=False)
    assert_refused(p, {**redblue_doc(), "vrfs": []}, "policy: unknown key 'vrfs'", apply=False)
    bad = redblue_doc()
    bad["routing_domains"][0]["vsids"] = [5001]
    assert_refused(p, bad, "routing domain 1: unknown key 'vsids'", apply=False)
    bad = redblue_doc()
    del bad["routing_domains"][1]["rdid"]
    assert_refused(p, bad, "routing_domains: each needs an 'rdid'", apply=False)
    assert_refused(p, [], "a policy document is a JSON object", apply=False)
    for provider in ([], 0, "x"):       # [] was a TypeError (fuzzer, session 27)
        assert_refused(p, {"provider": provider}, "policy: 'provider' must be a JSON object",
                       apply=False)
    # valid on its own, it moves VSID 5001 to routing domain 2 (refused before session
    # 29: test_load_reaches_every_valid_document)
    moved = redblue_doc()
    moved["routing_domains"][0]["subnets"] = []
    moved["routing_domains"][1]["subnets"] = [{"vsid": 5001, "prefix": "10.1.1.0/24"}]
    moved["routing_domains"][0]["attachments"] = []
    moved["records"][0]["vsid"] = 5001
    moved["records"] = moved["records"][:1]
    moved["neighbours"] = moved["neighbours"][:2]
    p = redblue()
    assert p.load_document(copy.deepcopy(moved)) == 2
    assert p.subnets[5001]["rdid"] == 2 and 6001 not in p.subnets


# -- malformed and conflicting input (bugs found once, fixed) -----------------------------------------------

MALFORMED = [
    ("record-method-no-pa", {"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.30",
                             "mac": "00:15:5d:00:00:30", "method": "encap"},
     "missing field 'pa'"),
    ("record-method-no-mac", {"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.30",
                              "pa": "192.168.1.10", "method": "encap"}, "missing field 'mac'"),
    ("record-vsid-list", {"op": "set", "kind": "record", "vsid": [5001], "ca": "10.1.1.30",
                          "mac": "00:15:5d:00:00:30", "pa": "192.168.1.10"}, "VSID [5001]"),
]


@pytest.mark.parametrize("op,message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_record_refused_whole(op, message):
    assert_refused(redblue(), [rec(ca="10.1.1.20"), op], message)


def test_document_with_non_object_entry_refused():
    doc = redblue_doc()
    doc["records"].append(1)
    assert_refused(redblue(), doc, "records: must be a list of JSON objects", apply=False)
    # keys that are no CA or VSID get the record's own message, not a TypeError
    for key, message in (("ca", "lookup record CA: ['10.1.1.9'] is not an IPv4 address"),
                         ("vsid", "VSID [5001] is outside")):
        doc = redblue_doc()
        doc["records"][0][key] = [doc["records"][0][key]]
        doc["records"][0]["ca"] = ["10.1.1.9"] if key == "ca" else "10.1.1.9"
        assert_refused(redblue(), doc, message, apply=False)


def test_attachment_overlapping_subnet_refused():
    assert_refused(redblue(), [attachment(101, "10.1.1.1/24")],
                   "attachment vlan 101 (10.1.1.0/24) overlaps virtual subnet 5001 "
                   "(10.1.1.0/24) in routing domain 1")


def test_customer_route_cannot_replace_connected_route():
    p = redblue()
    assert_refused(p, [route("10.1.1.0/24", "0.0.0.0", vsid=5001, metric=5)],
                   "route 10.1.1.0/24 via 0.0.0.0 is the connected route of a virtual subnet "
                   "or attachment of routing domain 1")
    assert_refused(p, [route("10.1.1.0/24", "0.0.0.0", op="del")],
                   "no customer route 10.1.1.0/24 via 0.0.0.0 in routing domain 1")
    assert p.installed.get((1, "10.1.1.0/24")) == (VSUBNET, 5001, 0, ZERO_B)
    assert p.routes[(1, "10.1.1.0/24")]["0.0.0.0"].get("auto")


def test_attachment_address_needs_prefix_length():
    assert_refused(redblue(), [attachment(101, "172.16.5.1")],
                   "is not an address with a prefix length")


# -- live: a gateway and its control socket ----------------------------------------------------

BODY = """
[pipeline]
mode = "nvgre"
policy = "{policy}"
[tables]
records = 4096
routes = 4096
neighbours = 1024
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    wd = tmp_path_factory.mktemp("policy-gw")
    g = GatewayProcess(wd, [PcapPort("fabric", "provider"), PcapPort("tenants", "customer")],
                       BODY.format(policy=REDBLUE))
    g.start()
    yield g
    rc = g.stop()
    assert rc == 0, g.stderr


def show_policy(gw) -> dict:
    return gw.request("show", what="policy")


def test_live_invalid_batch_changes_nothing(gw):
    before = show_policy(gw)
    gen = before["generation"]
    good = [rec(ca="10.1.1.40", pa="192.168.1.12"),
            route("10.9.0.0/16", "172.16.1.20", metric=10),
            {"op": "set", "kind": "neighbour", "vlan": 100, "ip": "172.16.1.20",
             "mac": "02:00:00:00:01:20"}]
    with pytest.raises(NvgwError) as e:
        gw.request("apply", ops=good + [rec(ca="10.2.0.5")])
    assert str(e.value) == "lookup record 10.2.0.5 is outside virtual subnet 5001 (10.1.1.0/24)"
    assert show_policy(gw) == before
    with pytest.raises(NvgwError, match="routing domain 9 does not exist"):
        gw.request("apply", ops=good + [route("10.9.0.0/16", "172.16.1.20", rdid=9)])
    with pytest.raises(NvgwError, match="a batch is a list of operations"):
        gw.request("apply", ops={"op": "set"})
    with pytest.raises(NvgwError, match="no lookup record for 10.1.1.99 in VSID 5001"):
        gw.request("migrate", vsid=5001, ca="10.1.1.99", pa="192.168.1.12")
    assert show_policy(gw) == before

    assert gw.request("apply", ops=good) == {"generation": gen + 1}
    after = show_policy(gw)
    assert after["generation"] == gen + 1
    assert {"vsid": 5001, "ca": "10.1.1.40", "mac": "00:15:5d:00:00:20", "pa": "192.168.1.12",
            "method": "encap"} in after["records"]
    blue = next(d for d in after["routing_domains"] if d["rdid"] == 1)
    assert {"prefix": "10.9.0.0/16", "next_hop": "172.16.1.20", "metric": 10,
            "vlan": 100} in blue["routes"]
    assert gw.request("show", what="vsid", vsid=5001)["rdid"] == 1


def test_live_big_record_batch_goes_as_a_block_with_the_same_checks(gw):
    """The control socket's apply with 1,000+ record sets takes the record-block
    path (checked as arrays, one C call): same refusals, word for word, as one
    operation at a time; nothing half-applied; the C table counts follow."""
    def recs(n, pa="192.168.1.10", **bad):
        out = [rec(vsid=5003, ca=f"10.3.{i >> 8}.{i & 255}", pa=pa,
                   mac="00:15:5d:03:%02x:%02x" % (i >> 8, i & 255))
               for i in range(2, n + 2)]        # 10.3.0.1 is the subnet's gateway
        for i, fields in bad.items():
            out[int(i[1:])].update(fields)
        return out

    def as_json(ops):       # one frame: the gateway packs the block itself
        reply = raw_request(gw.endpoint, json.dumps({"v": 1, "type": "apply",
                                                     "ops": ops}).encode())
        if not reply["ok"]:
            raise NvgwError(reply["error"])
        return reply["result"]

    gen = gw.request("apply", ops=[subnet(5003, "10.3.0.0/16")])["generation"]
    before, tables = show_policy(gw), gw.request("show", what="tables")
    for fields in ({"ca": "10.4.0.1"}, {"mac": "00:15:5d:zz:00:01"}, {"vsid": 5999},
                   {"vsid": 2 ** 70}, {"pa": "10.1.1.300"}, {"method": "tunnel"}):
        one = rec(**{**recs(1)[0], **fields})
        with pytest.raises(NvgwError) as single:
            gw.request("apply", ops=[one])
        # ControlClient sends a record block (a malformed field is its own refusal);
        # a raw JSON request is packed by the gateway
        for send in (lambda ops: gw.request("apply", ops=ops), as_json):
            with pytest.raises(NvgwError) as bulk:
                send(recs(1500, r1200=fields))
            # the same message, naming the bad record's own CA
            assert str(bulk.value) == str(single.value).replace("10.3.0.2", "10.3.4.178"), \
                fields
            assert show_policy(gw) == before
            assert gw.request("show", what="tables") == tables
    assert gw.request("apply", ops=recs(1500)) == {"generation": gen + 1}
    log = (gw.workdir / "stderr.log").read_text()
    assert '"block_records": 1500' in log or "block_records=1500" in log, log[-2000:]
    assert as_json(recs(1500, pa="192.168.1.11")) == {"generation": gen + 2}
    after = gw.request("show", what="tables")
    assert after["records"] == tables["records"] + 1500, (tables, after)
    assert {"vsid": 5003, "ca": "10.3.5.220", "mac": "00:15:5d:03:05:dc", "pa": "192.168.1.11",
            "method": "encap"} in show_policy(gw)["records"]
    gw.request("apply", ops=[rec(vsid=5003, ca=r["ca"], op="del") for r in recs(1500)] +
               [subnet(5003, None, op="del")])
    assert gw.request("show", what="tables") == tables


def test_nvgwctl_loads_a_document_of_more_than_a_mib_as_a_record_block(tmp_path):
    """apply -f of a document went to the gateway as one JSON frame: 12,000 records
    (1.1 MB) were refused for the control socket's 1 MiB limit, while the same records
    as a batch went as a record block. A load now carries its records as a block too."""
    body = BODY.format(policy=REDBLUE).replace("records = 4096", "records = 16384")
    g = GatewayProcess(tmp_path / "gw", [PcapPort("fabric", "provider"),
                                         PcapPort("tenants", "customer")], body).start()
    try:
        doc = redblue_doc()
        doc["routing_domains"][0]["subnets"].append({"vsid": 5003, "prefix": "10.3.0.0/16"})
        doc["records"] += [{"vsid": 5003, "ca": f"10.3.{i >> 8}.{i & 255}", "pa": "192.168.1.10",
                            "mac": "00:15:5d:03:%02x:%02x" % (i >> 8, i & 255),
                            "method": "encap"} for i in range(2, 12002)]
        path = tmp_path / "big.json"
        path.write_text(json.dumps(doc))
        assert path.stat().st_size > 1 << 20
        p = nvgwctl(g, "apply", "-f", str(path))
        assert p.returncode == 0, p.stderr
        assert g.request("show", what="tables")["records"] == 12002
        assert len(show_policy(g)["records"]) == 12002
    finally:
        assert g.stop() == 0, g.stderr


def raw_request(endpoint: str, payload: bytes) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(payload)
        assert sock.poll(2000), f"no reply to {payload!r}"
        return json.loads(sock.recv())
    finally:
        sock.close()


@pytest.mark.parametrize("payload,error", [
    (b"not json {", "malformed request: "),
    (b"\xff\xfe", "malformed request: "),
    (b"[1, 2]", "malformed request: request must be a JSON object"),
    (json.dumps({"v": 2, "type": "show", "what": "ports"}).encode(),
     "schema version 2 not supported (this gateway speaks 1)"),
    (json.dumps({"type": "show", "what": "ports"}).encode(),
     "schema version None not supported"),
    (json.dumps({"v": "1", "type": "show"}).encode(), "schema version '1' not supported"),
    (json.dumps({"v": 1, "type": "reboot"}).encode(), "unknown request type 'reboot'"),
    (json.dumps({"v": 1}).encode(), "unknown request type None"),
    (json.dumps({"v": 1, "type": []}).encode(), "unknown request type []"),
    (json.dumps({"v": 1, "type": {"show": 1}}).encode(), "unknown request type {'show': 1}"),
    (json.dumps({"v": 1, "type": "show", "what": "secrets"}).encode(),
     "show: unknown view 'secrets'"),
    (json.dumps({"v": 1, "type": "load", "document": None}).encode(),
     "a policy document is a JSON object"),
    # an internal error (TypeError: unhashable type) and a false "does not exist"
    (json.dumps({"v": 1, "type": "show", "what": [1]}).encode(), "show: unknown view [1]"),
    (json.dumps({"v": 1, "type": "show", "what": "vsid", "vsid": [5001]}).encode(),
     "show vsid: 'vsid' must be a number, not [5001]"),
    (json.dumps({"v": 1, "type": "show", "what": "vsid", "vsid": "5001"}).encode(),
     "show vsid: 'vsid' must be a number, not '5001'"),
], ids=["not-json", "not-utf8", "not-object", "v2", "no-v", "v-str", "unknown-type", "no-type",
        "type-list", "type-object", "unknown-view", "load-null", "view-list", "vsid-list",
        "vsid-str"])
def test_live_malformed_requests_get_error_replies(gw, payload, error):
    before = show_policy(gw)
    reply = raw_request(gw.endpoint, payload)
    assert reply["v"] == 1 and reply["ok"] is False
    assert reply["error"].startswith(error), reply
    assert "result" not in reply
    assert show_policy(gw) == before            # still answering, nothing changed


def nvgwctl(gw, *args):
    return subprocess.run([sys.executable, "-m", "mgmt.ctl", "--gateway", gw.endpoint, *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_nvgwctl_policy_commands(gw, tmp_path):
    gen = show_policy(gw)["generation"]
    doc = redblue_doc()
    doc["records"].append({"vsid": 6001, "ca": "10.1.1.50", "mac": "00:15:5d:7e:00:50",
                           "pa": "192.168.1.11", "method": "encap"})
    good = tmp_path / "policy.json"
    good.write_text(json.dumps(doc))
    p = nvgwctl(gw, "apply", "-f", str(good))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"applied {good}: generation {gen + 1}"
    expected = new_policy()
    expected.load_document(copy.deepcopy(doc))

    p = nvgwctl(gw, "--json", "show", "policy")
    assert p.returncode == 0, p.stderr
    live = json.loads(p.stdout)
    assert live.pop("generation") == gen + 1
    assert norm(live) == norm(expected.document())      # what the file lacked is gone

    p = nvgwctl(gw, "migrate", "--vsid", "6001", "--ca", "10.1.1.50", "--pa", "192.168.1.12")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"10.1.1.50 in VSID 6001 now at 192.168.1.12: generation {gen + 2}"

    # values: numbers and lists as JSON, the rest (true, null) as the text given
    p = nvgwctl(gw, "set", "domain", "rdid=7", "name=true")
    assert p.returncode == 0, p.stderr
    assert {"rdid": 7, "name": "true"}.items() <= next(
        d for d in json.loads(nvgwctl(gw, "--json", "show", "policy").stdout)
        ["routing_domains"] if d["rdid"] == 7).items()
    assert nvgwctl(gw, "del", "domain", "rdid=7").returncode == 0
    gen += 2

    p = nvgwctl(gw, "show", "vsid", "6001")
    assert p.returncode == 0, p.stderr
    header, row = p.stdout.splitlines()
    assert header.split() == ["VSID", "RDID", "ENCAP_PKTS", "ENCAP_BYTES", "DECAP_PKTS",
                              "DECAP_BYTES"]
    assert row.split() == ["6001", "2", "0", "0", "0", "0"]

    p = nvgwctl(gw, "--json", "show", "policy")
    live = json.loads(p.stdout)
    assert live["generation"] == gen + 2
    assert {"vsid": 6001, "ca": "10.1.1.50", "mac": "00:15:5d:7e:00:50", "pa": "192.168.1.12",
            "method": "encap"} in live["records"]

    # an invalid file: non-zero exit, the reason on stderr, nothing changed
    doc["records"].append({"vsid": 5001, "ca": "10.1.2.5", "mac": "00:15:5d:b1:02:05",
                           "pa": "192.168.1.10"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    p = nvgwctl(gw, "apply", "-f", str(bad))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip() == ("nvgwctl: lookup record 10.1.2.5 is outside virtual subnet 5001 "
                                "(10.1.1.0/24)")
    notjson = tmp_path / "notjson.json"
    notjson.write_text("{records: [")
    p = nvgwctl(gw, "apply", "-f", str(notjson))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("nvgwctl: cannot read ") and f"{notjson}: " in p.stderr
    p = nvgwctl(gw, "migrate", "--vsid", "6001", "--ca", "10.1.1.99", "--pa", "192.168.1.12")
    assert p.returncode == 1
    assert p.stderr.strip() == "nvgwctl: no lookup record for 10.1.1.99 in VSID 6001"
    p = nvgwctl(gw, "show", "vsid", "7001")
    assert p.returncode == 1
    assert p.stderr.strip() == "nvgwctl: virtual subnet 7001 does not exist"
    assert show_policy(gw)["generation"] == gen + 2
    assert show_policy(gw)["records"] == live["records"]


def test_nvgwctl_json_flag_after_subcommand(gw):
    p = nvgwctl(gw, "show", "policy", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["generation"] == show_policy(gw)["generation"]


def test_document_with_duplicate_ca_in_a_vsid_refused():
    doc = redblue_doc()
    doc["records"].append(dict(doc["records"][0], mac="00:15:5d:00:00:99"))
    assert_refused(new_policy(), doc, "records: duplicate CA 10.1.1.7 in VSID 5001",
                   apply=False)
    # the same CA in two VSIDs (Red and Blue) is the point of the model
    assert new_policy().load_document(redblue_doc()) == 1


# -- record blocks (many records in one array, dataplane/recblock.py) -----------------------


def test_record_block_checked_whole_with_the_per_record_messages():
    from dataplane import recblock
    p = redblue()
    recs = [{"vsid": 5001, "ca": f"10.1.1.{i}", "mac": f"00:15:5d:00:01:{i:02x}",
             "pa": "192.168.1.10"} for i in range(20, 220)]
    for i, change, message in [
            (150, {"ca": "10.2.0.1"}, "lookup record 10.2.0.1 is outside virtual subnet 5001 "
                                      "(10.1.1.0/24)"),
            (3, {"vsid": 5009}, "lookup record 10.1.1.23: virtual subnet 5009 does not exist"),
            (7, {"vsid": 4095}, "VSID 4095 is outside 4096..16777214"),
            (9, {"ca": "10.1.1.20"}, "records: duplicate CA 10.1.1.20 in VSID 5001"),
            # a rewrite record may not take an NVGRE PA of the gateway
            (5, {"method": "rewrite", "pa": "192.168.1.1"},
             "lookup record 10.1.1.25: PA 192.168.1.1 is one of the gateway's"),
            # nor any record one of ours, or a PA that is no host
            (40, {"pa": "192.168.1.1"},
             "lookup record 10.1.1.60: PA 192.168.1.1 is one of the gateway's"),
            (41, {"pa": "224.0.0.1"},
             "lookup record 10.1.1.61: PA 224.0.0.1 is not a unicast host address")]:
        bad = [dict(r) for r in recs]
        bad[i].update(change)
        before = state(p)
        with pytest.raises(PolicyError) as e:
            p.apply([rec(ca="10.1.1.250")], block=recblock.encode(bad, extra=()))
        assert message in str(e.value), str(e.value)
        assert state(p) == before, "a refused block changed the policy"
    # a malformed field is refused when the block is made, with the same message
    with pytest.raises(recblock.BlockError, match="'00:15:5d:00:01' is not a MAC address"):
        recblock.encode([{**recs[0], "mac": "00:15:5d:00:01"}], extra=())
    # applied: the same policy as one operation per record, one C call for the block
    recs[10]["method"] = "rewrite"
    recs[10]["pa"] = "192.168.1.77"
    calls = p.check([], block=recblock.encode(recs, extra=()))
    q = redblue()
    q.apply([rec(**r) for r in recs])
    assert p.document() == q.document() and p.rw_pas == q.rw_pas
    bulk = [c for c in calls if c[0] == "record_set_bulk"]
    assert len(bulk) == 1 and len(bulk[0][1]) == 20 * 199      # the rewrite one aside
    assert ("rw_set", ipaddress.IPv4Address("192.168.1.77").packed,
            ipaddress.IPv4Address("10.1.1.30").packed, 1, 0, False) in calls
    # the same block again: nothing for C to do but the rewrite record's own calls,
    # its mapping replaced in place (a delete first would leave the VM's packets none)
    again = p.check([], block=recblock.encode(recs, extra=()))
    assert not [c for c in again if c[0] == "record_set_bulk"]
    assert [c[0] for c in again if c[0].startswith("rw_")] == ["rw_set"]


def test_rewrite_entries_are_replaced_in_place():
    """C's rewrite entries are never absent while a batch applies: the same rewrite
    record or mapping set again (every snapshot does) is one rw_set, which replaces
    the value in place; a mapping's new PA keeps the CA's entry (its traffic's source
    PA) and drops only the old PA's."""
    def mapping(pa):
        return {"op": "set", "kind": "mapping", "rdid": 1, "ca": "172.16.1.10", "pa": pa}

    def rw_calls(ops):
        return [c for c in p.check(ops) if c[0].startswith("rw_")]

    vm = rec(ca="10.1.1.30", pa="192.168.1.77", method="rewrite")
    p = redblue()
    p.apply([vm, mapping("192.168.1.100")])
    slot = p.subnets[5001]["slot"]
    assert rw_calls([vm, mapping("192.168.1.100")]) == [
        ("rw_set", b("192.168.1.77"), b("10.1.1.30"), 1, slot, False),
        ("rw_set", b("192.168.1.100"), b("172.16.1.10"), 1, 0, True)]
    assert rw_calls([mapping("192.168.1.101")]) == [
        ("rw_del", b("192.168.1.100"), 1, b("172.16.1.10"), False),
        ("rw_set", b("192.168.1.101"), b("172.16.1.10"), 1, 0, True)]
    assert rw_calls([rec(ca="10.1.1.30", pa="192.168.1.78", method="rewrite")]) == [
        ("rw_del", b("192.168.1.77"), 1, b("10.1.1.30"), False),
        ("rw_set", b("192.168.1.78"), b("10.1.1.30"), 1, slot, False)]
    assert rw_calls([rec(ca="10.1.1.30", pa="192.168.1.78")]) == [     # back to encap
        ("rw_del", b("192.168.1.78"), 1, b("10.1.1.30"), False)]
    assert p.rw_pas == {"192.168.1.101": ("mapping", (1, "172.16.1.10"))}


def test_records_moved_are_told_by_their_pa():
    """Make before break resolves the next hops of records that move to another PA
    (Policy._resolve_moved): a record block tells which by PA, as single records do;
    a new MAC, the same record again or a new record is no move."""
    from dataplane import recblock
    p = redblue()
    base = [{"vsid": 5001, "ca": f"10.1.1.{i}", "mac": f"00:15:5d:00:01:{i:02x}",
             "pa": "192.168.1.10"} for i in range(20, 30)]
    p.apply([], block=recblock.encode(base, extra=()))
    changed = [dict(r) for r in base]
    changed[0]["mac"] = "00:15:5d:00:02:00"
    changed[1]["pa"] = "192.168.1.12"
    changed.append({"vsid": 5001, "ca": "10.1.1.40", "mac": "00:15:5d:00:01:40",
                    "pa": "192.168.1.13"})
    p.check([], block=recblock.encode(changed, extra=()))
    assert [str(ipaddress.IPv4Address(int(x))) for x in np.concatenate(p._moved)] == \
        ["192.168.1.12"]
    p.check([rec(ca="10.1.1.21", pa="192.168.1.14"),
             rec(ca="10.1.1.22", mac="00:15:5d:00:03:00", pa="192.168.1.10")])
    assert [str(ipaddress.IPv4Address(int(x))) for x in np.concatenate(p._moved)] == \
        ["192.168.1.14"]


def test_live_load_reaches_every_valid_document(gw):
    """The same loads on the real C tables: each object that goes and comes back in
    one batch (vsid_del then vsid_set of the same VSID, attach_del then attach_set,
    rw_del then rw_set of a swapped PA) lands as a fresh load of the document would."""
    base = rewrite_policy().document()
    for edit in (_move_vlan, _narrow_subnet, _move_vsid, _swap_rewrite_pas,
                 _route_to_another_subnet, _route_to_a_subnet_from_a_vlan):
        gw.request("load", document=copy.deepcopy(base))
        doc = copy.deepcopy(base)
        edit(doc)
        gw.request("load", document=copy.deepcopy(doc))
        live = show_policy(gw)
        del live["generation"]
        fresh = new_policy()
        fresh.load_document(copy.deepcopy(doc))
        assert norm(live) == norm(fresh.document()), edit.__name__
        assert gw.request("show", what="tables")["records"] == len(fresh.records)
    gw.request("load", document=redblue_doc())


def test_live_batch_replacing_routes_in_a_full_table(tmp_path):
    """The route table full (1,024: the four of Red/Blue's subnets and links, and 1,020
    added), a batch that deletes one route and adds another fits: the C calls delete
    first. They went in prefix order, and 10.100.0.0/16 came before 10.9.0.0/16: the
    table refused the add ('No space left on device')."""
    g = GatewayProcess(tmp_path, [PcapPort("fabric", "provider"),
                                  PcapPort("tenants", "customer")],
                       BODY.format(policy=REDBLUE).replace("routes = 4096", "routes = 1024"))
    g.start()
    try:
        added = [f"10.{9 + k // 256}.{k % 256}.0/24" for k in range(1020)]
        g.request("apply", ops=[route(p, "172.16.1.20") for p in added])
        gen = g.request("apply", ops=[route(added[0], "172.16.1.20", op="del"),
                                      route("10.100.0.0/16", "172.16.1.20")])["generation"]
        routes = {r["prefix"] for r in _domain(g.request("show", what="policy"), 1)["routes"]}
        assert routes == set(added[1:]) | {"10.100.0.0/16"}
        with pytest.raises(NvgwError, match="routes exceed the table size of 1024"):
            g.request("apply", ops=[route("10.101.0.0/16", "172.16.1.20")])
        assert g.request("show", what="policy")["generation"] == gen
    finally:
        assert g.stop() == 0, g.stderr
