"""atheris: policy validation (dataplane/policy.py), documents and batches from JSON.

Entry points: Policy.load_document (a JSON object: a whole policy document) and
Policy.apply (a JSON array: a batch of operations), on a validating Policy (no C
tables, as nvgw-mgmt's Store runs it) that holds redblue at the start of every input,
with small capacities (16 records, 32 routes, 8 rewrite PAs) so the limits are
reachable. One input is up to 6 documents or batches, one per line, applied in turn.

Invariants, after every document or batch:
- only PolicyError escapes (with a text); anything else is a finding;
- refused: nothing changed -- the generation, the document, and every internal table
  the batch engine keeps (domains, subnets, attachments, routes, installed routes and
  per-length counts, records, neighbours, mappings, rewrite PAs, free subnet slots);
- accepted: the generation moved by one; the document loads on its own in a fresh
  Policy and comes back the same, and loading it once more into that Policy changes
  nothing but the generation; the installed routes are exactly the best route of
  each prefix; the capacities hold; every rewrite PA is owned by a rewrite record or
  mapping that names it, and no subnet slot is both used and free; the domains
  flagged for a route inside a subnet, and each domain's link (the lowest VLAN of a
  /22 or longer attachment with no other route inside), are what the routes say.
"""
import ipaddress
import json
import sys

import atheris

import mgmt_common as mc

with atheris.instrument_imports(include=["dataplane"]):
    import dataplane.policy as pm

CAPACITY = {"records": 16, "routes": 32, "rewrites": 8}
PMAC, CMAC = "02:00:00:00:00:aa", "02:00:00:00:00:bb"
TABLES = ("provider", "domains", "subnets", "attachments", "routes", "records", "neighbours",
          "installed", "lengths", "free_slots", "cooling", "mappings", "rw_pas", "shadowed",
          "links")
BASE = None


def fresh():
    return pm.Policy(None, PMAC, CMAC, dict(CAPACITY))


def tables(p) -> str:
    """Every table of the batch engine, as text (dict-like ones in sorted order)."""
    def one(v):
        return sorted(v.items(), key=repr) if hasattr(v, "items") else v
    return repr([(k, one(getattr(p, k))) for k in TABLES])


def check_consistent(p, raw):
    doc = json.loads(json.dumps(p.document(), default=list))
    again = fresh()
    again.load_document(json.loads(json.dumps(doc)))
    mc.check(mc.norm(json.loads(json.dumps(again.document(), default=list))) == mc.norm(doc), "the document does not round-trip",
             raw[:300], doc)
    # Loading the same document again changes nothing but the generation.
    first = tables(again)
    again.load_document(json.loads(json.dumps(doc)))
    mc.check(tables(again) == first, "loading a policy's own document changed it", raw[:300])
    best = {}
    for (rdid, prefix), by_nh in p.routes.items():
        mc.check(by_nh, f"an empty route set for {prefix}")
        best[(rdid, prefix)] = min(by_nh.values(), key=lambda r: (r["metric"], r["next_hop"]))
    mc.check(set(best) == set(p.installed), "installed routes differ from the route table",
             raw[:300], sorted(best), sorted(p.installed))
    lengths = {}
    for rdid, prefix in p.installed:
        key = (rdid, int(prefix.split("/")[1]))
        lengths[key] = lengths.get(key, 0) + 1
    mc.check({k: v for k, v in p.lengths.items() if v} == lengths,
             "per-length route counts are wrong", p.lengths, lengths)
    mc.check(len(p.records) <= CAPACITY["records"] and len(p.installed) <= CAPACITY["routes"]
             and len(p.rw_pas) <= CAPACITY["rewrites"], "a capacity was exceeded")
    owners = {r["pa"]: ("record", (r["vsid"], r["ca"])) for r in p.records.values()
              if r["method"] == "rewrite"}
    owners.update({pa: ("mapping", key) for key, pa in p.mappings.items()})
    mc.check(owners == p.rw_pas, "rewrite PAs and their owners differ", raw[:300],
             owners, p.rw_pas)
    nets = [(s["rdid"], ipaddress.IPv4Network(s["prefix"])) for s in p.subnets.values()]
    inside = {rdid for rdid, prefix in p.installed for d, net in nets
              if d == rdid and ipaddress.IPv4Network(prefix).subnet_of(net)
              and ipaddress.IPv4Network(prefix) != net}
    mc.check(p.shadowed == inside and again.shadowed == inside,
             "domains flagged for a route inside a subnet are wrong", raw[:300],
             p.shadowed, again.shadowed, inside)
    links = {}
    for vlan, a in sorted(p.attachments.items()):
        net = ipaddress.IPv4Interface(a["address"]).network
        if a["rdid"] not in links and net.prefixlen >= 22 and not any(
                d == a["rdid"] and ipaddress.IPv4Network(prefix).subnet_of(net)
                and ipaddress.IPv4Network(prefix) != net for d, prefix in p.installed):
            links[a["rdid"]] = (vlan, str(net))
    mc.check(p.links == links and again.links == links,
             "the links named for direct decap are wrong", raw[:300], p.links, again.links,
             links)
    used = {s["slot"] for s in p.subnets.values()}
    mc.check(len(used) == len(p.subnets) and not used & set(p.free_slots) and
             not p.cooling and len(used) + len(p.free_slots) == 16384,
             "subnet slots are inconsistent")


def one(p, raw: bytes) -> None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return                  # not JSON: the callers refuse it before the model
    before = tables(p)
    gen = p.generation
    try:
        if isinstance(obj, dict):
            p.load_document(obj)
        else:
            p.apply(obj)
    except pm.PolicyError as e:
        text = str(e)
        mc.check(text, "a PolicyError without a text")
        mc.check(tables(p) == before and p.generation == gen,
                 "a refused batch changed the policy", raw[:300], text)
        return
    mc.check(p.generation == gen + 1, "the generation did not move by one")
    check_consistent(p, raw)


def TestOneInput(data: bytes) -> None:
    p = fresh()
    p.load_document(json.loads(BASE))
    for raw in mc.split_messages(data):
        one(p, raw)


def main():
    global BASE
    BASE = json.dumps(mc.REDBLUE)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
