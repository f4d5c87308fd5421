"""Seed corpora for the management-channel fuzzers: valid messages of each type, one
file per seed, one message per line (the harnesses split an input at newlines).

    make_mgmt_corpus.py TARGET DIR     TARGET: mgmt_client, mgmt_gateway, agent, policy
    make_mgmt_corpus.py --dict TARGET FILE   a libFuzzer dictionary of the JSON words
"""
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mgmt_common import REDBLUE, template_ops  # noqa: E402

GEN = 1 + len(template_ops())     # the template store's generation
STORE = "fuzzstore"               # the agent harness's store id


def line(*msgs) -> bytes:
    """Messages, one per line; a message given as (object, block) carries a record
    block as its second frame (0x1f, then the block in hex)."""
    def one(m):
        if isinstance(m, tuple):
            m, block = m
            return json.dumps(m, separators=(",", ":")).encode() + b"\x1f" + \
                block.hex().encode()
        return json.dumps(m, separators=(",", ":")).encode()
    return b"\n".join(map(one, msgs))


def blocks():
    """Record blocks (dataplane/recblock.py), where this tree has them."""
    try:
        from dataplane import recblock
    except ImportError:
        return None
    recs = [{"vsid": 5001, "ca": f"10.1.1.{40 + i}", "mac": f"00:15:5d:b1:00:{40 + i:02x}",
             "pa": f"192.168.1.{40 + i}", "method": "rewrite" if i == 2 else "encap"}
            for i in range(4)]
    return recblock.header(len(recs)), recblock.encode(recs, extra=())


def c(type_, **kw):
    return {"v": 1, "type": type_, **kw}


REC = {"vsid": 5001, "ca": "10.1.1.30", "mac": "00:15:5d:b1:00:30", "pa": "192.168.1.30"}
OPS = [
    [{"op": "set", "kind": "record", **REC}],
    [{"op": "del", "kind": "record", "vsid": 5001, "ca": "10.1.1.7"}],
    [{"op": "set", "kind": "subnet", "rdid": 1, "vsid": 5002, "prefix": "10.1.2.0/24"},
     {"op": "set", "kind": "record", "vsid": 5002, "ca": "10.1.2.5",
      "mac": "00:15:5d:b2:00:05", "pa": "192.168.1.40", "method": "rewrite"}],
    [{"op": "set", "kind": "mapping", "rdid": 2, "ca": "172.16.2.10", "pa": "192.168.1.99"}],
    [{"op": "set", "kind": "neighbour", "vlan": 100, "ip": "172.16.1.20",
      "mac": "02:00:00:00:01:20"},
     {"op": "del", "kind": "neighbour", "ip": "192.168.1.11"}],
    [{"op": "set", "kind": "route", "rdid": 2, "prefix": "0.0.0.0/0", "next_hop": "172.16.2.10",
      "metric": 10}],
    [{"op": "set", "kind": "provider", "addresses": ["192.168.1.1/24", "192.168.1.2/24"],
      "gateway": "192.168.1.254", "mtu": 9000}],
    [{"op": "set", "kind": "attachment", "rdid": 1, "vlan": 101, "address": "172.16.3.1/24"},
     {"op": "set", "kind": "domain", "rdid": 3, "name": "green"}],
]


def document_variant():
    d = copy.deepcopy(REDBLUE)
    d["records"].append({**REC, "method": "encap"})
    d["routing_domains"][0]["routes"] = [{"prefix": "10.8.0.0/16", "next_hop": "172.16.1.10"}]
    return d


def client_seeds():
    yield "apply", line(c("apply", ops=OPS[0]))
    for i, ops in enumerate(OPS[1:], 1):
        yield f"apply{i}", line(c("apply", ops=ops))
    yield "load", line(c("load", document=document_variant()))
    yield "load_same", line(c("load", document=REDBLUE))
    yield "migrate", line(c("migrate", vsid=5001, ca="10.1.1.7", pa="192.168.1.77"))
    for what in ("policy", "gateways", "generation"):
        yield f"show_{what}", line(c("show", what=what))
    yield "wait", line(c("wait", generation=GEN, timeout=0))
    yield "wait_gw", line(c("wait", timeout=5, min_gateways=1))
    if blocks():
        head, block = blocks()
        yield "apply_block", line((c("apply", ops=[], records=head), block))
        d = copy.deepcopy(REDBLUE)
        d["records"] = []
        yield "load_block", line((c("load", document=d, records=head), block))
    yield "sequence", line(c("apply", ops=OPS[0]), c("migrate", vsid=5001, ca="10.1.1.30",
                                                      pa="192.168.1.31"),
                           c("show", what="generation"), c("wait", generation=GEN + 2))


def g(type_, **kw):
    return {"v": 1, "type": type_, "gateway": "gw1", **kw}


def gateway_seeds():
    # The template store's id is random; "store" is matched only when the harness
    # puts it in (the harness replaces the word STORE with the store's real id).
    yield "hello", line(g("hello", applied=None, store=None))
    yield "hello_behind", line(g("hello", applied=GEN - 2, store="STORE"),
                               g("ack", generation=GEN, store="STORE"))
    yield "hello_current", line(g("hello", applied=GEN, store="STORE"),
                                g("heartbeat", applied=GEN, store="STORE"))
    yield "hello_ahead", line(g("hello", applied=GEN + 5, store="STORE"),
                              g("ack", generation=GEN, store="STORE"))
    yield "ack", line(g("hello", applied=None, store=None),
                      g("ack", generation=GEN, store="STORE"))
    yield "resync_ack", line(g("ack", generation=GEN - 1, store="STORE"))
    yield "nack", line(g("hello", applied=None, store=None),
                       g("nack", generation=GEN, snapshot=True, error="table full"),
                       g("heartbeat", applied=None, store=None))
    yield "nack_batch", line(g("hello", applied=GEN - 1, store="STORE"),
                             g("nack", generation=GEN, error="batch failed"))
    yield "heartbeat", line(g("heartbeat", applied=GEN, store="STORE"))
    yield "route2", b"2" + line(g("hello", applied=GEN - 1, store="STORE")) + b"\n1" + \
        line(g("ack", generation=GEN, store="STORE"))


def agent_seeds():
    # The agent starts at generation GEN of store STORE with redblue applied.
    doc = document_variant()
    yield "snapshot", line(c("snapshot", store=STORE, generation=GEN + 1, document=doc))
    yield "snapshot_other", line(c("snapshot", store="other", generation=1, document=REDBLUE))
    yield "snapshot_old", line(c("snapshot", store=STORE, generation=GEN - 1, document=doc),
                               c("snapshot", store=STORE, generation=GEN - 1, document=doc,
                                 force=True))
    for i, ops in enumerate(OPS):
        yield f"batch{i}", line(c("batch", store=STORE, generation=GEN + 1, ops=ops))
    yield "batch_doc", line(c("batch", store=STORE, generation=GEN + 1, document=doc))
    yield "batch_seq", line(*(c("batch", store=STORE, generation=GEN + 1 + i, ops=ops)
                              for i, ops in enumerate(OPS[:4])))
    yield "batch_skip", line(c("batch", store=STORE, generation=GEN + 2, ops=OPS[0]),
                             c("batch", store=STORE, generation=GEN + 3, ops=OPS[1]),
                             c("snapshot", store=STORE, generation=GEN + 3, document=doc))
    yield "heartbeat", line(c("heartbeat", generation=GEN, store=STORE))
    yield "error", line(c("error", error="gateway id mismatch"))
    if blocks():
        head, block = blocks()
        d = copy.deepcopy(REDBLUE)
        d["records"] = []
        yield "snapshot_block", line((c("snapshot", store=STORE, generation=GEN + 1,
                                        document=d, records=head), block))
        yield "batch_block", line((c("batch", store=STORE, generation=GEN + 1, ops=[],
                                     records=head), block))


def policy_seeds():
    yield "document", line(REDBLUE)
    yield "document2", line(document_variant())
    yield "empty", line({"provider": None, "routing_domains": [], "records": [],
                         "neighbours": []})
    for i, ops in enumerate(OPS):
        yield f"batch{i}", line(ops)
    yield "deletes", line([{"op": "del", "kind": "record", "vsid": 5001, "ca": "10.1.1.7"},
                           {"op": "del", "kind": "route", "rdid": 1, "prefix": "10.9.0.0/16",
                            "next_hop": "172.16.1.10"},
                           {"op": "del", "kind": "attachment", "vlan": 100},
                           {"op": "del", "kind": "mapping", "rdid": 2, "ca": "172.16.2.10"}])


SEEDS = {"mgmt_client": client_seeds, "mgmt_gateway": gateway_seeds, "agent": agent_seeds,
         "policy": policy_seeds}

WORDS = ['"v"', '"type"', '"gateway"', '"gw1"', '"gw2"', '"generation"', '"store"',
         '"applied"', '"error"', '"snapshot"', '"force"', '"document"', '"ops"', '"op"',
         '"kind"', '"set"', '"del"', '"apply"', '"load"', '"migrate"', '"show"', '"wait"',
         '"what"', '"policy"', '"gateways"', '"timeout"', '"min_gateways"', '"hello"',
         '"heartbeat"', '"ack"', '"nack"', '"batch"', '"provider"', '"domain"', '"subnet"',
         '"attachment"', '"record"', '"route"', '"mapping"', '"neighbour"', '"rdid"',
         '"vsid"', '"vlan"', '"ca"', '"pa"', '"mac"', '"method"', '"encap"', '"rewrite"',
         '"prefix"', '"next_hop"', '"metric"', '"addresses"', '"mtu"', '"name"',
         '"subnets"', '"attachments"', '"routes"', '"mappings"', '"records"',
         '"neighbours"', '"routing_domains"', '"gateway_mac"', '"flowid"', '"address"',
         '"ip"', '"vsid"', '"10.1.1.7"', '"192.168.1.10"', '"0.0.0.0"', '"0.0.0.0/0"',
         '"00:15:5d:b1:00:07"', '"STORE"', '"fuzzstore"', 'null', 'true', 'false', '4096',
         '16777214', '5001', '6001', '65535', '4094', '-1', '1.0', '1e999', '[]', '{}']


def main(argv):
    if argv[:1] == ["--dict"]:
        Path(argv[2]).write_text("".join(f"w{i}={json.dumps(w)}\n" for i, w in enumerate(WORDS)))
        return 0
    target, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS[target]():
        (out / f"seed-{name}").write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
