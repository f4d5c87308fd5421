"""A batch that fails half-way leaves the real C tables as they were (run by
test_policy.py in a process of its own: EAL starts once per process).

EAL (--no-huge, no PCI), a mempool and the NVGRE tables as the gateway makes them,
without ports or workers; a Policy drives them through a stand-in that passes every
call to the real tables and makes call k fail, for every k: before the real call
("before": it changed nothing) or after it ("after": it changed all it does, as a
call that failed half-way may have). Three runs: the first document on empty
tables, one batch that touches every kind of table entry, and a load that deletes
before it changes the provider. After each failure the tables' digest
(cext/digest.c) and the policy are what they were. Prints one JSON line: the calls
of each run, the tables each changed when it got through, what differed.
"""
import copy
import json
import os
import shutil
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dataplane import _dataplane as dp  # noqa: E402
from dataplane import recblock  # noqa: E402
from dataplane.config import runtime_dir  # noqa: E402
from dataplane.errors import DataplaneError  # noqa: E402
from dataplane.policy import Policy  # noqa: E402

PMAC, CMAC = "02:70:63:61:70:00", "02:70:63:61:70:01"
SIZES = {"records": 1024, "routes": 256, "neighbours": 256, "rewrites": 64}


class Failing:
    """The real tables; call number `at` of the next batch raises."""

    def __init__(self, nv):
        self.nv, self.at, self.mode, self.n = nv, None, "before", 0

    def __getattr__(self, name):
        real = getattr(self.nv, name)
        if name in ("commit", "table_counts", "neighbours", "neigh_learned", "digest") or \
                self.at is None:
            return real

        def call(*args):
            self.n += 1
            if self.n - 1 != self.at:
                return real(*args)
            self.at = None
            if self.mode == "after":
                real(*args)
            raise DataplaneError(name, 12, "injected: no memory")
        return call


def base_document() -> dict:
    rec = {"mac": "00:15:5d:00:00:01", "method": "encap"}
    return {
        "provider": {"addresses": ["192.168.1.1/24"], "gateway": "192.168.1.254", "mtu": 1500},
        "routing_domains": [
            {"rdid": 1, "name": "blue",
             "subnets": [{"vsid": 5001, "prefix": "10.1.1.0/24"},
                         {"vsid": 5002, "prefix": "10.1.2.0/24", "flowid": 7}],
             "attachments": [{"vlan": 100, "address": "172.16.1.1/24"}],
             "routes": [{"prefix": "10.9.0.0/16", "next_hop": "172.16.1.20"},
                        {"prefix": "10.8.0.0/16", "next_hop": "10.1.1.50"}],
             "mappings": [{"ca": "172.16.1.10", "pa": "192.168.1.100"},
                          {"ca": "172.16.1.11", "pa": "192.168.1.101"}]},
            {"rdid": 2, "name": "red",
             "subnets": [{"vsid": 6001, "prefix": "10.1.1.0/24"},
                         {"vsid": 6002, "prefix": "10.2.0.0/24"}],
             "attachments": [{"vlan": 200, "address": "172.16.2.1/24"}]},
        ],
        "records": [
            {"vsid": 5001, "ca": "10.1.1.7", "pa": "192.168.1.10", **rec},
            {"vsid": 5001, "ca": "10.1.1.8", "pa": "10.200.0.8", **rec},
            {"vsid": 5001, "ca": "10.1.1.50", "pa": "192.168.1.11", **rec},
            {**rec, "vsid": 5001, "ca": "10.1.1.30", "pa": "192.168.1.77", "method": "rewrite"},
            {"vsid": 5002, "ca": "10.1.2.5", "pa": "192.168.1.12", **rec},
            {"vsid": 6001, "ca": "10.1.1.7", "pa": "192.168.1.13", **rec},
            {"vsid": 6002, "ca": "10.2.0.9", "pa": "192.168.1.14", **rec},
        ] + [{"vsid": 6001, "ca": f"10.1.1.{i}", "pa": f"192.168.1.{i + 50}", **rec}
             for i in range(100, 140)],     # PAs .150-.189: .100 and .101 are mappings
        "neighbours": [{"ip": "192.168.1.10", "mac": "00:15:5d:00:00:10"},
                       {"vlan": 100, "ip": "172.16.1.20", "mac": "02:00:00:00:01:20"}],
    }


def batch() -> tuple[list, bytes]:
    """Every kind of C call: provider (its next hops change: every record again),
    domains, subnets (one deleted and added back: another counter slot),
    attachments (one moves: the domain's link), routes (one inside a subnet: the
    domain's flag), records one by one and as a block, rewrite records and
    mappings (PA changes, deletes), neighbours."""
    rec = {"op": "set", "kind": "record", "mac": "00:15:5d:00:00:02", "method": "encap"}
    ops = [
        {"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24", "192.168.9.1/24"],
         "gateway": "192.168.1.253", "mtu": 1400},
        {"op": "set", "kind": "domain", "rdid": 3, "name": "green"},
        {"op": "set", "kind": "subnet", "rdid": 3, "vsid": 7001, "prefix": "10.3.0.0/16"},
        {"op": "set", "kind": "attachment", "rdid": 3, "vlan": 300, "address": "172.16.3.1/24"},
        {**rec, "vsid": 7001, "ca": "10.3.0.5", "pa": "192.168.1.20"},
        {"op": "del", "kind": "record", "vsid": 6002, "ca": "10.2.0.9"},
        {"op": "del", "kind": "subnet", "vsid": 6002},
        {"op": "set", "kind": "subnet", "rdid": 2, "vsid": 6002, "prefix": "10.2.0.0/24",
         "flowid": 3},
        {**rec, "vsid": 6002, "ca": "10.2.0.10", "pa": "192.168.1.21"},
        {"op": "del", "kind": "record", "vsid": 5001, "ca": "10.1.1.8"},
        {**rec, "vsid": 5001, "ca": "10.1.1.7", "pa": "192.168.1.15"},
        {**rec, "vsid": 5001, "ca": "10.1.1.30", "pa": "192.168.1.78", "method": "rewrite"},
        {**rec, "vsid": 5001, "ca": "10.1.1.31", "pa": "192.168.1.79", "method": "rewrite"},
        {"op": "set", "kind": "mapping", "rdid": 1, "ca": "172.16.1.10", "pa": "192.168.1.102"},
        {"op": "del", "kind": "mapping", "rdid": 1, "ca": "172.16.1.11"},
        {"op": "set", "kind": "mapping", "rdid": 3, "ca": "172.16.3.10", "pa": "192.168.1.103"},
        {"op": "set", "kind": "route", "rdid": 1, "prefix": "10.1.1.128/25",
         "next_hop": "172.16.1.20"},
        {"op": "del", "kind": "route", "rdid": 1, "prefix": "10.8.0.0/16",
         "next_hop": "10.1.1.50"},
        {"op": "set", "kind": "route", "rdid": 3, "prefix": "10.30.0.0/16",
         "next_hop": "172.16.3.20", "metric": 10},
        {"op": "del", "kind": "neighbour", "vlan": 100, "ip": "172.16.1.20"},
        {"op": "del", "kind": "route", "rdid": 1, "prefix": "10.9.0.0/16",
         "next_hop": "172.16.1.20"},
        {"op": "del", "kind": "route", "rdid": 1, "prefix": "10.1.1.128/25",
         "next_hop": "172.16.1.20"},
        {"op": "set", "kind": "attachment", "rdid": 1, "vlan": 100, "address": "172.16.5.1/24"},
        {"op": "set", "kind": "route", "rdid": 1, "prefix": "10.1.1.128/25",
         "next_hop": "172.16.5.20"},
        {"op": "set", "kind": "neighbour", "vlan": 300, "ip": "172.16.3.20",
         "mac": "02:00:00:00:03:20"},
        {"op": "set", "kind": "neighbour", "ip": "192.168.1.10", "mac": "00:15:5d:00:00:11"},
        # a host whose MAC the exception thread had learned (main): undone, it is back
        {"op": "set", "kind": "neighbour", "ip": "192.168.1.12", "mac": "00:15:5d:00:00:12"},
        {"op": "del", "kind": "attachment", "vlan": 200},
    ]
    block = recblock.encode([{"vsid": 6001, "ca": f"10.1.1.{i}", "pa": f"192.168.1.{i + 1}",
                              "mac": "00:15:5d:00:01:00", "method": "encap"}
                             for i in range(120, 160)], extra=())
    return ops, block


def reload_document() -> dict:
    """What a load makes of the base: deletes first (a subnet with its record, an
    attachment, a route, a mapping, a neighbour), then the provider, whose gateway
    and addresses change (every record's next hop), then the rest."""
    doc = base_document()
    blue, red = doc["routing_domains"]
    red["subnets"] = red["subnets"][:1]
    red["attachments"] = []
    blue["routes"] = blue["routes"][1:]
    blue["mappings"] = blue["mappings"][:1]
    doc["records"] = [r for r in doc["records"] if r["vsid"] != 6002]
    doc["records"][0]["pa"] = "192.168.1.16"
    doc["neighbours"] = doc["neighbours"][:1]
    doc["provider"] = {"addresses": ["192.168.1.1/24", "192.168.7.1/24"],
                       "gateway": "192.168.1.252", "mtu": 1500}
    return doc


def sweep(name, stand_in, nv, policy, run, out):
    """Fail call k of run() for k = 0, 1, ... before and after the real call until
    run() gets through; each failure must leave the digest and policy as before."""
    base, doc, gen = nv.digest(), policy.document(), policy.generation
    k = 0
    while True:
        for mode in ("before", "after"):
            stand_in.at, stand_in.mode, stand_in.n = k, mode, 0
            try:
                run()
            except DataplaneError as e:
                if "injected" not in str(e) or "undoing" in str(e):
                    out["differ"].append([name, k, mode, "error", str(e)])
            else:           # k is past the last call: the whole run applied
                stand_in.at = None
                after = nv.digest()
                out[name] = {"calls": k, "changes": sorted(t for t in base
                                                          if after[t] != base[t])}
                return
            now = nv.digest()
            changed = sorted(t for t in base if now[t] != base[t])
            if changed or policy.document() != doc or policy.generation != gen:
                out["differ"].append([name, k, mode, changed])
            else:
                out["failed_ok"] += 1
        k += 1


def main():
    dp.eal_init(["undo-batch", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                 "--log-level=error", "-l", "0", "--no-telemetry",
                 f"--file-prefix=nvgwundo{os.getpid()}"])
    # EAL would leave its runtime directory behind; without telemetry or shared
    # config it needs nothing in it after init
    shutil.rmtree(runtime_dir(f"nvgwundo{os.getpid()}"), ignore_errors=True)
    pool = dp.Mempool("undo_batch", 1024, 0)
    nv = dp.Nvgre(pool, 0, 1, SIZES["records"], SIZES["routes"], SIZES["neighbours"],
                  SIZES["rewrites"], 1)
    stand_in = Failing(nv)
    out = {"failed_ok": 0, "differ": []}
    # 1. The first document on empty tables: undone, there is no provider again.
    p = Policy(stand_in, PMAC, CMAC, dict(SIZES))
    sweep("first", stand_in, nv, p, lambda: p.load_document(base_document()), out)
    # 2. A batch of every kind of call; 3. a load that deletes before it sets.
    # The batch makes a host static whose MAC was learned: undoing puts that back.
    assert nv.neigh_learn(0, socket.inet_aton("192.168.1.12"), bytes.fromhex("00155d000099"))
    ops, block = batch()
    sweep("batch", stand_in, nv, p,
          lambda: p.apply(copy.deepcopy(ops), block=block), out)
    p.load_document(base_document())        # back to the base, from the batch's state
    sweep("load", stand_in, nv, p, lambda: p.load_document(reload_document()), out)
    print(json.dumps(out))
    nv.free()


if __name__ == "__main__":
    main()
