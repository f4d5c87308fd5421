"""The HNV policy model held by the gateway, and its batches.

A batch is a list of operations ({"op": "set"|"del", "kind": ..., fields}).
It is checked whole against the current policy, with every problem
reported as one PolicyError sentence; only then are its changes written to
the C tables, and one RCU commit follows. A C call that fails all the same (no
memory) has the batch undone in C too (dataplane/undo.py). So a batch applies
whole or not at all. A policy document (JSON, see README) is the batch that sets all of
its objects. This module needs no EAL: `Policy(None)` validates only.
"""
from __future__ import annotations

import bisect
import copy
import errno
import ipaddress
import json
import re
import socket

import numpy as np
import structlog

from dataplane import recblock, undo
from dataplane.errors import ConfigError, DataplaneError

VSID_MIN, VSID_MAX = 4096, 16777214
METHODS = {"encap": 0, "rewrite": 1}
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
V4 = ipaddress.IPv4Address
ZERO = V4("0.0.0.0")
# route kinds, as cext/tables.h numbers them
VSUBNET, APPLIANCE, CUSTOMER = 0, 1, 2
# How long a batch that moves lookup records to a fabric next hop not yet resolved
# waits for its ARP answer before it applies all the same (Policy._resolve_moved; the
# gateway's pipeline.resolve_wait_ms, an agent's heartbeat interval where shorter),
# and for how many at most.
RESOLVE_WAIT_S = 0.25
RESOLVE_MAX = 256

log = structlog.get_logger("nvgw.policy")


def _fabric_of(pa0: bytes, mask: bytes, gw: bytes) -> tuple:
    """The provider's first address, mask and gateway as ints: what
    nvgw_provider_nexthop reads."""
    return tuple(int.from_bytes(b, "big") for b in (pa0, mask, gw))


def _fabric(provider: dict) -> tuple:
    """_fabric_of a policy's provider (its first address's subnet and gateway)."""
    ifc = ipaddress.IPv4Interface(provider["addresses"][0])
    return _fabric_of(ifc.ip.packed, ifc.netmask.packed, V4(provider["gateway"]).packed)


def _nexthops(fabric: tuple, pas):
    """The fabric next hops of an array of PAs, as nvgw_provider_nexthop picks
    them: the PA itself on our subnet (or with no gateway), else the gateway."""
    pa0, m, g = fabric
    return pas if g == 0 else np.where((pas ^ pa0) & m == 0, pas, g)


class PolicyError(ConfigError):
    """A policy object or batch is invalid; nothing of the batch was applied."""


# A document states each object once: what names one, and how to say it.
_DOC_KEYS = {
    "domain": (("rdid",), "routing domain {0}"),
    "subnet": (("vsid",), "virtual subnet {0}"),
    "attachment": (("vlan",), "attachment vlan {0}"),
    "mapping": (("rdid", "ca"), "rewrite mapping for {1} in routing domain {0}"),
    "route": (("rdid", "prefix", "next_hop"), "route {1} via {2} in routing domain {0}"),
    "neighbour": (("vlan", "ip"), "neighbour {1} (vlan {0})"),
}


def _no_duplicates(ops) -> None:
    """A document's objects each once: a second one would silently win."""
    seen = set()
    for op in ops:
        fields, label = _DOC_KEYS.get(op["kind"], ((), ""))
        if not fields:
            continue
        key = (op["kind"],) + tuple(op.get(f, 0) for f in fields)
        try:
            if key in seen:
                raise PolicyError("policy: " + label.format(*key[1:]) + " appears twice")
            seen.add(key)
        except TypeError:       # not hashable: its own check says what is wrong
            pass


def _ip(v, what) -> V4:
    try:
        if not isinstance(v, str):      # V4() takes integers too: JSON 2886729994
            raise TypeError(v)
        return V4(v)
    except (ValueError, TypeError):
        raise PolicyError(f"{what}: {v!r} is not an IPv4 address") from None


def _net(v, what) -> ipaddress.IPv4Network:
    try:
        if not isinstance(v, str):      # IPv4Network(0) is 0.0.0.0/32
            raise TypeError(v)
        return ipaddress.IPv4Network(v, strict=True)
    except (ValueError, TypeError) as e:
        raise PolicyError(f"{what}: {v!r} is not an IPv4 prefix ({e})") from None


def _iface(v, what) -> ipaddress.IPv4Interface:
    try:
        if not isinstance(v, str) or "/" not in v:
            raise ValueError(v)
        return ipaddress.IPv4Interface(v)
    except (ValueError, TypeError):
        raise PolicyError(f"{what}: {v!r} is not an address with a prefix length") from None


def _host_of(ip: V4, net: ipaddress.IPv4Network) -> bool:
    """Is ip a unicast address that a host of net may have (not net's network or
    broadcast address, where net has them)?"""
    first = ip.packed[0]
    if first in (0, 127) or first >= 224:
        return False
    return net.prefixlen >= 31 or ip not in (net.network_address, net.broadcast_address)


def _mac(v, what) -> str:
    if not isinstance(v, str) or not _MAC.match(v):
        raise PolicyError(f"{what}: {v!r} is not a MAC address")
    return v.lower().replace("-", ":")


def _int(v, what, lo, hi) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise PolicyError(f"{what}: {v!r} must be an integer in {lo}..{hi}")
    return v


def _vsid(v, what="vsid") -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not VSID_MIN <= v <= VSID_MAX:
        raise PolicyError(f"{what}: VSID {v!r} is outside {VSID_MIN}..{VSID_MAX} "
                          "(0..4095 and 16777215 are reserved)")
    return v


def _packed(v, what) -> bytes:
    """Strict dotted-quad IPv4 to 4 bytes; the fast path for lookup records."""
    try:
        return socket.inet_pton(socket.AF_INET, v)
    except (OSError, TypeError):
        raise PolicyError(f"{what}: {v!r} is not an IPv4 address") from None


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _fields(op: dict, required: tuple, optional: tuple = ()) -> None:
    where = f"{op.get('op')} {op.get('kind')}"
    unknown = set(op) - {"op", "kind"} - set(required) - set(optional)
    if unknown:
        raise PolicyError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    for f in required:
        if f not in op:
            raise PolicyError(f"{where}: missing field {f!r}")


class Policy:
    """The applied policy (a mirror of the C tables) and the batch engine.

    `nv` is the Cython Nvgre object whose tables this policy drives, or None
    to validate only. `macs` gives the default MACs: provider and customer
    port addresses. `on_release` is called with the counter slots of deleted
    virtual subnets once a batch's grace period has passed (no worker reads
    them any more), before any is given out again: their counters can be reset.
    """

    def __init__(self, nv=None, provider_mac="00:00:00:00:00:00",
                 customer_mac="00:00:00:00:00:00", capacity=None, on_release=None):
        self.nv = nv
        self.on_release = on_release
        self.provider_mac = provider_mac
        self.customer_mac = customer_mac
        self.capacity = capacity or {"records": 1 << 20, "routes": 1 << 17}
        # Skip the rules that came after a policy may have been stored (session 27:
        # PAs that name a fabric host, next hops and neighbours on their link): for
        # documents from a trusted store, which an older nvgw-mgmt may have accepted.
        self.lenient = False
        self.resolve_wait = RESOLVE_WAIT_S
        self.generation = 0
        self.changes = 0        # batches applied, whoever numbered them
        self.provider: dict | None = None
        self.domains: dict[int, dict] = {}        # rdid -> {name}
        self.subnets: dict[int, dict] = {}        # vsid -> subnet
        self.attachments: dict[int, dict] = {}    # vlan -> attachment
        self.routes: dict[tuple, dict] = {}       # (rdid, prefix) -> {next_hop: route}
        self.records = recblock.RecordMap()       # (vsid, ca) -> record
        self.neighbours: dict[tuple, str] = {}    # (scope, ip) -> mac
        self.mappings: dict[tuple, str] = {}      # (rdid, customer CA) -> our rewrite PA
        self.rw_pas: dict[str, tuple] = {}        # rewrite PA -> ("record", key) | ("mapping", key)
        self.installed: dict[tuple, tuple] = {}   # (rdid, prefix) -> C route installed
        self.lengths: dict[tuple, int] = {}       # (rdid, prefix length) -> routes installed
        self.shadowed: set[int] = set()           # domains with a route inside a subnet
        self.links: dict[int, tuple] = {}         # rdid -> its link: (VLAN, subnet) (_links_changed)
        self.free_slots = list(range(16383, -1, -1))
        # Slots of subnets deleted in this batch: a packet in flight may still
        # carry one (a record read before the delete), so a new subnet must not
        # get it, with its GRE key and counters, before the batch's commit.
        self.cooling: list[int] = []

    # -- reading -------------------------------------------------------------

    def document(self, records: bool = True) -> dict:
        """The whole policy as a document that `load` accepts (without its lookup
        records when `records` is false: they are self.records.block() then)."""
        doms = []
        routes: dict[int, list] = {}        # by domain: one pass, not one per domain
        for (rd, _), by_nh in self.routes.items():
            routes.setdefault(rd, []).extend(r for r in by_nh.values() if not r.get("auto"))
        maps: dict[int, list] = {}
        for (rd, ca), pa in self.mappings.items():
            maps.setdefault(rd, []).append({"ca": ca, "pa": pa})
        for rdid, d in sorted(self.domains.items()):
            doms.append({
                "rdid": rdid, "name": d["name"],
                "subnets": [{k: v for k, v in self.subnets[vs].items()
                             if k not in ("rdid", "slot", "net", "not_cas")}
                            for vs in sorted(d["vsids"])],
                "attachments": [{k: v for k, v in self.attachments[vl].items() if k != "rdid"}
                                for vl in sorted(d["vlans"])],
                "mappings": maps.get(rdid, []),
                "routes": [{k: v for k, v in r.items() if k != "rdid"}
                           for r in routes.get(rdid, ())],
            })
        prov = self.provider and {k: v for k, v in self.provider.items()
                                  if k not in ("addresses_ip", "not_hosts")}
        return {"provider": prov, "routing_domains": doms,
                "records": self.records.values() if records else [],
                "neighbours": [{"vlan": s, "ip": ip, "mac": m}
                               for (s, ip), m in self.neighbours.items()]}

    # -- batches ----------------------------------------------------------------

    def load_records(self, arr) -> None:
        """Lookup records already checked (a store's own rows, a record block array)
        into a policy that has none: the map, and the PAs its rewrite records own."""
        self.records.load_rows(recblock.keys(arr).tolist(), arr.view("V20").tolist())
        for k in self.records.rewrite:
            rec = recblock.row_dict(self.records.d[k])
            self.rw_pas[rec["pa"]] = ("record", (rec["vsid"], rec["ca"]))

    @staticmethod
    def ops_of(doc: dict) -> list[dict]:
        """The batch that sets every object of a policy document."""
        if not isinstance(doc, dict):
            raise PolicyError("a policy document is a JSON object")
        unknown = set(doc) - {"provider", "routing_domains", "records", "neighbours"}
        if unknown:
            raise PolicyError(f"policy: unknown key {sorted(unknown)[0]!r}")
        def objects(v, where):
            if not isinstance(v, list) or not all(isinstance(o, dict) for o in v):
                raise PolicyError(f"{where}: must be a list of JSON objects")
            return v

        if not isinstance(doc.get("provider"), (dict, type(None))):
            raise PolicyError("policy: 'provider' must be a JSON object")
        ops = []
        if doc.get("provider") is not None:
            ops.append({"op": "set", "kind": "provider", **doc["provider"]})
        for d in objects(doc.get("routing_domains", []), "routing_domains"):
            if not isinstance(d, dict) or "rdid" not in d:
                raise PolicyError("routing_domains: each needs an 'rdid'")
            extra = set(d) - {"rdid", "name", "subnets", "attachments", "routes", "mappings"}
            if extra:
                raise PolicyError(f"routing domain {d['rdid']}: unknown key {sorted(extra)[0]!r}")
            ops.append({"op": "set", "kind": "domain", "rdid": d["rdid"],
                        "name": d.get("name", "")})
            for kind, key in (("subnet", "subnets"), ("attachment", "attachments"),
                              ("route", "routes"), ("mapping", "mappings")):
                ops += [{"op": "set", "kind": kind, "rdid": d["rdid"], **o}
                        for o in objects(d.get(key, []), f"routing domain {d['rdid']} {key}")]
        records = objects(doc.get("records", []), "records")
        seen = set()
        for r in records:       # a document states each CA once
            key = (r.get("vsid"), r.get("ca"))
            if not isinstance(key[0], int) or not isinstance(key[1], str):
                continue            # not a lookup record's key: _set_record says why
            if key in seen:
                raise PolicyError(f"records: duplicate CA {key[1]} in VSID {key[0]}")
            seen.add(key)
        ops += [{"op": "set", "kind": "record", **r} for r in records]
        ops += [{"op": "set", "kind": "neighbour", **n}
                for n in objects(doc.get("neighbours", []), "neighbours")]
        _no_duplicates(ops)
        return ops

    def load_document(self, doc: dict, generation: int | None = None, block=None,
                      lenient: bool = False) -> int:
        """Make the policy equal `doc`: delete what it lacks, set the rest, one batch.
        Its lookup records are in doc["records"] or, many of them, in `block` (a
        record block, see dataplane/recblock.py), not both. `lenient`: a document
        from a store, held only to the rules of its time (self.lenient)."""
        was, self.lenient = self.lenient, lenient
        try:
            return self._load_document(doc, generation, block)
        finally:
            self.lenient = was

    def _load_document(self, doc: dict, generation: int | None, block) -> int:
        new = Policy(None, self.provider_mac, self.customer_mac, self.capacity)
        new.lenient = self.lenient
        set_ops = self.ops_of(doc)
        arr = _block_array(block)
        if arr is not None and doc.get("records"):
            raise PolicyError("policy: its records come in 'records' or as a record block, "
                              "not both")
        new.check(set_ops, arr, stage=False)    # the document is valid on its own
        keep_records = set(new.records.d)
        if arr is not None:
            keep_records.update(recblock.keys(arr).tolist())
        # a route by its key, and what its next hop is on: kept only where both stay
        keep_routes = {(d, p, nh): (r.get("vsid"), r.get("vlan"))
                       for (d, p), by_nh in new.routes.items() for nh, r in by_nh.items()}
        # What the document changes where a set cannot (a subnet's domain or prefix, an
        # attachment's domain, a rewrite PA another owner takes: two swapped) goes
        # first and comes back with the document's sets, with what depends on it: a
        # subnet's records, the routes through the subnet or VLAN, the VLAN's static
        # neighbours. One batch still, so a failure leaves all as it was.
        re_sub = {v for v, sub in self.subnets.items() if v in new.subnets and
                  (new.subnets[v]["rdid"], new.subnets[v]["prefix"]) !=
                  (sub["rdid"], sub["prefix"])}
        re_att = {v for v, att in self.attachments.items()
                  if v in new.attachments and new.attachments[v]["rdid"] != att["rdid"]}
        re_map, re_rec = set(), set()
        for pa, owner in self.rw_pas.items():
            if new.rw_pas.get(pa, owner) != owner:
                (re_map if owner[0] == "mapping" else re_rec).add(owner[1])
        re_rec = {recblock.key_of(v, ca) for v, ca in re_rec}
        # Static neighbours go first: their VLAN may be one the document drops.
        dels = [{"op": "del", "kind": "neighbour", "vlan": s, "ip": ip}
                for (s, ip) in self.neighbours
                if (s, ip) not in new.neighbours or s in re_att]
        dels += [{"op": "del", "kind": "record", "vsid": k >> 32,
                 "ca": recblock.ip(k & 0xFFFFFFFF)}
                for k in self.records.d
                if k not in keep_records or k in re_rec or (re_sub and k >> 32 in re_sub)]
        dels += [{"op": "del", "kind": "route", "rdid": r, "prefix": p, "next_hop": nh}
                 for (r, p), by_nh in self.routes.items() for nh, route in by_nh.items()
                 if not route.get("auto") and (
                     keep_routes.get((r, p, nh)) != (route.get("vsid"), route.get("vlan")) or
                     route.get("vsid") in re_sub or route.get("vlan") in re_att)]
        dels += [{"op": "del", "kind": "mapping", "rdid": r, "ca": ca}
                 for (r, ca) in self.mappings
                 if (r, ca) not in new.mappings or (r, ca) in re_map]
        dels += [{"op": "del", "kind": "attachment", "vlan": v}
                 for v in self.attachments if v not in new.attachments or v in re_att]
        dels += [{"op": "del", "kind": "subnet", "vsid": v}
                 for v in self.subnets if v not in new.subnets or v in re_sub]
        dels += [{"op": "del", "kind": "domain", "rdid": r}
                 for r in self.domains if r not in new.domains]
        self.last_ops = dels + set_ops
        return self.apply(self.last_ops, generation, arr)

    def check(self, ops: list[dict], block=None, stage: bool = True,
              _keep: bool = False) -> list[tuple]:
        """Validate a batch against the current policy and stage it here; `block`
        (a record block) sets many lookup records after the operations.

        Returns the C calls that realise it. On error the policy is as before.
        With stage=False a block is checked but its records are not kept.
        """
        if not isinstance(ops, list):
            raise PolicyError("a batch is a list of operations")
        saved = self._snapshot()
        self._calls: list[tuple] = []
        self._touched: set[tuple] = set()
        self._unstaged = 0
        self._provider_moved = False
        self._moved: list = []      # PAs that existing records move to (arrays)
        self._on_mapping_pa: list = []      # (vsid, ca) of records set to a mapping's PA
        self._new_mapping_pas: set = set()  # PAs mappings take: every record's checked
        i = len(ops)
        try:
            for i, op in enumerate(ops):
                if not isinstance(op, dict) or op.get("op") not in ("set", "del"):
                    raise PolicyError(f"operation {i}: needs 'op' = 'set' or 'del'")
                handler = getattr(self, f"_{op['op']}_{op.get('kind')}", None)
                if handler is None:
                    raise PolicyError(f"operation {i}: unknown kind {op.get('kind')!r}")
                handler(op)
            if block is not None:
                i = "in the record block"
                self._check_block(_block_array(block), stage)
            if self._provider_moved:
                self._provider_clash(saved["provider"])
            if self._on_mapping_pa or self._new_mapping_pas:
                self._mapping_clash()
            self._routes_changed()
            n_rec = len(self.records) + self._unstaged
            if n_rec > self.capacity["records"]:
                raise PolicyError(f"{n_rec} lookup records exceed the table "
                                  f"size of {self.capacity['records']}")
            if len(self.rw_pas) > self.capacity.get("rewrites", 1 << 16):
                raise PolicyError(f"{len(self.rw_pas)} rewrite PAs exceed the table size "
                                  f"of {self.capacity.get('rewrites', 1 << 16)}")
            if len(self.installed) > self.capacity["routes"]:
                raise PolicyError(f"{len(self.installed)} routes exceed the table size "
                                  f"of {self.capacity['routes']}")
            if self.nv is not None and "neighbours" in self.capacity:
                self._neighbour_room(saved["provider"])
        except PolicyError:
            self._restore(saved)
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            self._restore(saved)    # malformed input the handlers did not foresee
            raise PolicyError(f"operation {i}: malformed ({type(e).__name__}: {e})") from None
        except BaseException:
            self._restore(saved)
            raise
        if _keep:
            self._saved = saved
        else:
            self.records.end()
        return self._calls

    def apply(self, ops: list[dict], generation: int | None = None, block=None) -> int:
        """Check then apply a batch whole; return the new generation: `generation`
        when a management process numbers its batches, else the next one."""
        if generation is not None and (not isinstance(generation, int) or
                                       isinstance(generation, bool) or generation < 0):
            raise PolicyError(f"generation {generation!r} must be a non-negative integer")
        calls = self.check(ops, block, _keep=True)
        saved, self._saved = self._saved, None
        try:
            if self.nv is not None:
                try:
                    self._resolve_moved(saved["provider"])
                except BaseException:
                    self._restore(saved)
                    raise
                # MACs learned for hosts this batch makes static neighbours: an
                # undone batch puts them back (the model holds only static ones)
                learned = {}
                for fn, *args in calls:
                    if fn == "neigh_set" and \
                            (args[0], socket.inet_ntoa(args[1])) not in saved["neighbours"]:
                        mac = self.nv.neigh_learned(args[0], args[1])
                        if mac:
                            learned[(args[0], args[1])] = mac
                for i, (fn, *args) in enumerate(calls):
                    try:
                        getattr(self.nv, fn)(*args)
                    except Exception as e:
                        # The batch goes whole: the model back to its snapshot,
                        # and C to the model (dataplane/undo.py).
                        self._restore(saved)
                        left = undo.undo(self, calls[:i + 1], learned)
                        # Slots the batch gave new VSIDs are free again, their
                        # counters maybe counted meanwhile: as after a delete.
                        taken = {c[6] for c in calls[:i + 1] if c[0] == "vsid_set"}
                        taken &= set(self.free_slots)
                        if taken and self.on_release is not None:
                            self.on_release(sorted(taken))
                        if left:
                            raise DataplaneError(
                                "policy batch", errno.EIO,
                                f"{e}; undoing the batch failed too ({len(left)} of its "
                                f"entries, first {left[0]}): the tables differ from the "
                                "policy, restart the gateway") from e
                        raise
                self.nv.commit()
        finally:
            if self.records.journal is not None:
                self.records.end()
        released, self.cooling = self.cooling, []
        self.free_slots.extend(released)
        if released and self.on_release is not None:
            self.on_release(released)
        self.generation = self.generation + 1 if generation is None else generation
        self.changes += 1
        return self.generation

    def _resolve_moved(self, was) -> None:
        """Make before break: records the batch moves to another PA (a migrated VM)
        go to a fabric next hop resolved first, where its host answers within
        resolve_wait; else their first packets would be dropped as no_neighbour
        while it is asked. Not when the batch changes our subnet or gateway (the
        next hops follow); RESOLVE_MAX next hops at most (more: as before, each
        resolved by its first packet)."""
        if not self._moved or was is None or self.provider is None or \
                (was["addresses"][0], was["gateway"]) != \
                (self.provider["addresses"][0], self.provider["gateway"]):
            return
        hops = np.unique(_nexthops(_fabric(self.provider),
                                   np.concatenate(self._moved).astype(np.uint32)))
        # Not static neighbours (as the batch leaves them: its calls resolve them),
        # nor what is no host to ARP for (the exception thread would not ask).
        nohost = self.provider["not_hosts"] | self.provider["addresses_ip"]
        hops = [(0, V4(h).packed) for h in hops.tolist()
                if (0, str(V4(h))) not in self.neighbours and str(V4(h)) not in nohost]
        left = self.nv.resolve_ahead(hops[:RESOLVE_MAX], self.resolve_wait) if hops else None
        if left:
            log.warning("next_hop_unresolved", wait_s=self.resolve_wait,
                        hops=[str(V4(ip)) for _, ip in left[:8]], count=len(left))

    def _check_block(self, arr, stage: bool) -> None:
        """The lookup records of a record block: the checks of _set_record, done on
        the whole array; the first bad record gets _set_record's own message."""
        n = len(arr)
        if n == 0:
            return
        vs, ca = arr["vsid"], arr["ca"].astype(np.uint32)
        sv = sorted(self.subnets)
        if sv:
            sva = np.array(sv, np.uint32)
            idx = np.minimum(np.searchsorted(sva, vs), len(sv) - 1)
            nets = np.array([self.subnets[v]["net"][0] for v in sv], np.uint32)
            masks = np.array([self.subnets[v]["net"][1] for v in sv], np.uint32)
            ok = (sva[idx] == vs) & ((ca & masks[idx]) == nets[idx])
            if not self.lenient:        # no VM's address: _set_record's not_cas
                notc = np.array([(sorted(self.subnets[v]["not_cas"]) * 3)[:3] for v in sv],
                                np.uint32)
                ok &= (ca[:, None] != notc[idx]).all(axis=1)
        else:
            ok = np.zeros(n, bool)
        ok &= (arr["method"] <= 1) & (arr["pad"] == 0)
        if self.provider is not None and not self.lenient:  # _peer_pa, on the whole array
            pa = arr["pa"].astype(np.uint32)
            top = pa >> 24
            ok &= (top != 0) & (top != 127) & (top < 224) & ~np.isin(pa, self._our_pas())
            ok &= ~np.isin(pa, np.array([int(V4(a)) for a in self.provider["not_hosts"]],
                                        np.uint32))
        if self.provider is None or not ok.all():
            i = int((~ok).argmax())
            if arr["pad"][i] != 0:
                raise PolicyError(f"record block: record {i} has a non-zero last byte")
            self._set_record({"op": "set", "kind": "record",
                              **recblock.row_dict(arr[i:i + 1].tobytes())})
            raise PolicyError(f"record block: record {i} is invalid")    # not reached
        k = recblock.keys(arr)
        ks = np.sort(k)
        dup = ks[1:] == ks[:-1]
        if dup.any():
            j = int(np.flatnonzero(k == ks[int(dup.argmax())])[1])
            raise PolicyError(f"records: duplicate CA {recblock.ip(ca[j])} in VSID {vs[j]}")
        # Rewrite records (and records that were) take the per-record path: they
        # own their PA, and there are few of them.
        slow = arr["method"] == 1
        if self.records.rewrite:
            slow |= np.isin(k, np.fromiter(self.records.rewrite, np.uint64))
        ours = self._mapping_pas() if not self.lenient else {}
        if ours:
            mine = np.array([int(V4(a)) for a in ours], np.uint32)
            hit = np.intersect1d(mine, arr["pa"][arr["method"] == 0].astype(np.uint32))
            # the mappings' PAs the block puts records on: checked last, as the batch
            # leaves them
            self._new_mapping_pas.update(recblock.ip(x) for x in hit.tolist())
        if slow.any():
            for i in np.flatnonzero(slow).tolist():
                self._set_record({"op": "set", "kind": "record",
                                  **recblock.row_dict(arr[i:i + 1].tobytes())})
            arr, k = arr[~slow], k[~slow]
        if not stage:
            self._unstaged += len(arr)
            return
        rows = arr.view("V20").tolist()
        changed, moved = self.records.put_rows(k.tolist(), rows, k, arr)
        if len(moved):
            self._moved.append(moved)
        if not changed.all():           # the same record again: nothing to do in C
            arr = arr[changed]
        if len(arr):
            self._calls.append(("record_set_bulk", arr.tobytes()))

    def _neighbour_room(self, provider) -> None:
        """The C neighbour table never frees an entry, and a call that needs one more
        than it holds fails half-way through a batch: count the entries the staged
        calls create (static neighbours, next hops of customer routes and of records,
        as nvgw_provider_nexthop picks them) and refuse the batch before any call."""
        fabric = _fabric(provider) if provider is not None else None
        need, bulk, single = set(), [], []     # single: PAs of record_set calls

        def flush():                # single's next hops, by the provider they met
            if single:
                bulk.append(_nexthops(fabric, np.array(single, np.uint32)))
                single.clear()

        for fn, *a in self._calls:
            if fn == "provider_set":
                flush()
                fabric = _fabric_of(a[0][0], a[1], a[2])
            elif fn == "neigh_set":
                need.add((a[0], a[1]))
            elif fn == "route_set" and a[3] == CUSTOMER and a[6] != ZERO.packed:
                need.add((a[5], a[6]))
            elif fn == "record_set" and fabric is not None:
                single.append(int.from_bytes(a[3], "big"))
            elif fn == "record_set_bulk" and fabric is not None:
                bulk.append(_nexthops(fabric, np.frombuffer(a[0], recblock.DTYPE)["pa"]
                                     .astype(np.uint32)))
        flush()
        # the distinct next hops of the records (a million records, few hosts)
        hops = np.unique(np.concatenate(bulk)) if bulk else ()
        if not need and not len(hops):
            return
        counts = self.nv.table_counts()
        cap = self.capacity["neighbours"]
        # The exception thread may still make entries for hosts it resolves, up to
        # a quarter of the table (NVGW_NEIGH_LEARN_MAX): keep their room free.
        learn = max(0, cap // 4 - counts["neighbours_learned"])
        if counts["neighbours"] + len(need) + len(hops) + learn <= cap:
            return                  # fits even if none of them exists yet
        need.update((0, int(ip).to_bytes(4, "big")) for ip in hops)
        have = {(scope, ip) for scope, ip, _mac in self.nv.neighbours()}
        n = len(have | need)
        if n + learn > cap:
            raise PolicyError(f"{n} neighbour entries (static neighbours and the next hops "
                              f"of records and routes) and {learn} kept for hosts the "
                              f"gateway resolves exceed the table size of {cap}")

    def _snapshot(self):
        # Shallow copies of the dicts: staged objects are new dicts, never mutated.
        # The lookup records (a million, maybe) keep a journal instead.
        self.records.begin()
        return {k: copy.copy(getattr(self, k)) for k in
                ("provider", "domains", "subnets", "attachments", "routes",
                 "neighbours", "installed", "lengths", "free_slots", "cooling",
                 "mappings", "rw_pas", "shadowed", "links")}

    def _restore(self, saved):
        for k, v in saved.items():
            setattr(self, k, v)
        self.records.rollback()

    # -- provider and neighbours -------------------------------------------------

    def _set_provider(self, op):
        _fields(op, ("addresses",), ("gateway", "mtu"))
        addrs = op["addresses"]
        if not isinstance(addrs, list) or not 1 <= len(addrs) <= 8:
            raise PolicyError("provider: 'addresses' must list 1..8 addresses with prefix")
        ifs = [_iface(a, "provider address") for a in addrs]
        if not self.lenient:
            for i in ifs:
                if not _host_of(i.ip, i.network):
                    raise PolicyError(f"provider address {i}: not a unicast host address "
                                      "of its prefix")
        gw = _ip(op.get("gateway", "0.0.0.0"), "provider gateway")
        if gw != ZERO and gw not in ifs[0].network:
            raise PolicyError(f"provider gateway {gw} is not in {ifs[0].network}")
        if gw != ZERO and not self.lenient and (gw in {i.ip for i in ifs} or
                                                not _host_of(gw, ifs[0].network)):
            raise PolicyError(f"provider gateway {gw}: not another host of {ifs[0].network}")
        mtu = _int(op.get("mtu", 1500), "provider mtu", 576, 9000)
        old = self.provider
        self.provider = {"addresses": [str(i) for i in ifs], "gateway": str(gw), "mtu": mtu,
                         "addresses_ip": frozenset(str(i.ip) for i in ifs),
                         # no host's PA: the network and broadcast addresses of ours
                         "not_hosts": frozenset(str(a) for i in ifs if i.network.prefixlen < 31
                                                for a in (i.network.network_address,
                                                          i.network.broadcast_address))}
        # Checked against the PAs the batch leaves (a first provider has no records
        # before it; those after it are checked one by one).
        if old is not None and (old["addresses_ip"] != self.provider["addresses_ip"] or
                                old["not_hosts"] != self.provider["not_hosts"]):
            self._provider_moved = True
        self._calls.append(self._provider_call())
        # Records carry their fabric next hop, which follows our first
        # address's subnet and the gateway: rebuild them all, unless neither
        # changed (a document reload).
        if old is None or (old["addresses"][0], old["gateway"]) != \
                (self.provider["addresses"][0], self.provider["gateway"]):
            if len(self.records):
                self._calls.append(("record_set_bulk", self.records.block()))

    def _provider_call(self) -> tuple:
        ifs = [ipaddress.IPv4Interface(a) for a in self.provider["addresses"]]
        return ("provider_set", [i.ip.packed for i in ifs], ifs[0].netmask.packed,
                V4(self.provider["gateway"]).packed, self.provider["mtu"],
                mac_bytes(self.provider_mac))

    def _provider_clash(self, was) -> None:
        """Our new addresses are no other host's PA, as the batch leaves them (a
        load sets the provider before the records it moves off them); nor are the
        network or broadcast addresses our prefixes gain (`was`: the provider
        before the batch; one a store's older policy kept stays until changed)."""
        clash = sorted(set(self.rw_pas) & self.provider["addresses_ip"])
        if clash:
            raise PolicyError(f"provider address {clash[0]} is already a rewrite PA")
        if self.lenient:
            return
        gained = self.provider["not_hosts"] - was["not_hosts"]
        clash = sorted(set(self.rw_pas) & gained)
        if clash:
            raise PolicyError(f"provider prefixes: rewrite PA {clash[0]} would be the network "
                              "or broadcast address of one")
        if len(self.records):
            pas = np.frombuffer(self.records.block(), recblock.DTYPE)["pa"].astype(np.uint32)
            hit = np.isin(pas, self._our_pas())
            if hit.any():
                raise PolicyError(f"provider address {recblock.ip(pas[int(hit.argmax())])} "
                                  "is the PA of a lookup record")
            hit = np.isin(pas, np.array([int(V4(a)) for a in gained], np.uint32))
            if hit.any():
                raise PolicyError(f"provider prefixes: {recblock.ip(pas[int(hit.argmax())])}, "
                                  "the PA of a lookup record, would be the network or "
                                  "broadcast address of one")

    def _mapping_clash(self) -> None:
        """No lookup record has the PA of one of our rewrite mappings, as the batch
        leaves them: the PA is ours (we answer ARP for it), and NVGRE to it would come
        back to us."""
        ours = self._mapping_pas()
        for key in self._on_mapping_pa:
            r = self.records.get(key)
            if r is not None and r["method"] == "encap" and r["pa"] in ours:
                raise PolicyError(f"lookup record {r['ca']}: PA {r['pa']} is the rewrite PA "
                                  f"of mapping {ours[r['pa']][1]} (the gateway's own)")
        taken = self._new_mapping_pas & set(ours)     # still mappings' as the batch ends
        if taken and len(self.records):
            arr = np.frombuffer(self.records.block(), recblock.DTYPE)
            mine = np.array([int(V4(a)) for a in taken], np.uint32)
            hit = np.isin(arr["pa"].astype(np.uint32), mine) & (arr["method"] == 0)
            if hit.any():
                i = int(hit.argmax())
                pa = recblock.ip(arr["pa"][i])
                raise PolicyError(f"rewrite mapping {ours[pa][1]}: PA {pa} is the PA of "
                                  f"lookup record {recblock.ip(arr['ca'][i])} in VSID "
                                  f"{int(arr['vsid'][i])}")

    def _mapping_pas(self) -> dict:
        """Our rewrite mappings' PAs: {PA: (rdid, CA)}."""
        return {pa: o[1] for pa, o in self.rw_pas.items() if o[0] == "mapping"}

    def _our_pas(self):
        return np.array([int(V4(a)) for a in self.provider["addresses_ip"]], np.uint32)

    def _scope(self, op) -> int:
        vlan = op.get("vlan", 0)
        return 0 if vlan == 0 else _int(vlan, "neighbour vlan", 1, 4094)

    def _set_neighbour(self, op):
        _fields(op, ("ip", "mac"), ("vlan",))
        scope, ip, mac = self._scope(op), _ip(op["ip"], "neighbour"), _mac(op["mac"], "neighbour")
        if scope and not self.lenient:  # a customer host: on an attached VLAN's subnet
            att = self.attachments.get(scope)
            if att is None:
                raise PolicyError(f"neighbour {ip}: VLAN {scope} is not attached")
            on = ipaddress.IPv4Interface(att["address"]).network
            if ip not in on:
                raise PolicyError(f"neighbour {ip} is not on VLAN {scope} ({on})")
        self.neighbours[(scope, str(ip))] = mac
        self._calls.append(self._neigh_call(scope, ip.packed, mac))

    @staticmethod
    def _neigh_call(scope: int, ip: bytes, mac: str) -> tuple:
        return ("neigh_set", scope, ip, mac_bytes(mac))

    def _del_neighbour(self, op):
        _fields(op, ("ip",), ("vlan",))
        key = (self._scope(op), str(_ip(op["ip"], "neighbour")))
        if key not in self.neighbours:
            raise PolicyError(f"no static neighbour {key[1]} (vlan {key[0]})")
        del self.neighbours[key]    # the C entry stays (records point to it), unresolved
        self._calls.append(("neigh_clear", key[0], V4(key[1]).packed))

    # -- routing domains, subnets, attachments -------------------------------------

    def _rdid(self, op, must_exist=True) -> int:
        rdid = _int(op.get("rdid"), "rdid", 1, 65535)
        if must_exist and rdid not in self.domains:
            raise PolicyError(f"routing domain {rdid} does not exist")
        return rdid

    def _set_domain(self, op):
        _fields(op, ("rdid",), ("name",))
        rdid = self._rdid(op, must_exist=False)
        old = self.domains.get(rdid, {"vsids": frozenset(), "vlans": frozenset()})
        self.domains[rdid] = {**old, "name": str(op.get("name", ""))}

    def _del_domain(self, op):
        _fields(op, ("rdid",))
        rdid = self._rdid(op)
        users = [f"virtual subnet {v}" for v in sorted(self.domains[rdid]["vsids"])]
        users += [f"attachment vlan {v}" for v in sorted(self.domains[rdid]["vlans"])]
        users += [f"rewrite mapping for {ca}" for (r, ca) in self.mappings if r == rdid]
        if users:
            raise PolicyError(f"routing domain {rdid} still has {users[0]}; delete it first")
        for (d, p), by_nh in list(self.routes.items()):
            for nh in list(by_nh) if d == rdid else ():
                self._drop_route((d, p, nh))
        del self.domains[rdid]

    def _set_subnet(self, op):
        _fields(op, ("rdid", "vsid", "prefix"), ("gateway", "gateway_mac", "flowid"))
        rdid, vsid = self._rdid(op), _vsid(op["vsid"])
        net = _net(op["prefix"], f"virtual subnet {vsid}")
        gw = _ip(op.get("gateway", str(net.network_address + 1) if net.prefixlen < 31
                        else str(net.network_address)), f"virtual subnet {vsid} gateway")
        if gw not in net:
            raise PolicyError(f"virtual subnet {vsid}: gateway {gw} is not in {net}")
        flowid = op.get("flowid")
        if flowid is not None:
            _int(flowid, f"virtual subnet {vsid} flowid", 0, 255)
        old = self.subnets.get(vsid)
        if old is not None and old["rdid"] != rdid:
            raise PolicyError(f"VSID {vsid} is already in routing domain {old['rdid']}")
        if old is not None and old["prefix"] != str(net):
            raise PolicyError(f"virtual subnet {vsid}: its prefix cannot change "
                              "(delete and re-add it)")
        if (old is not None and not self.lenient and str(gw) != old["gateway"] and
                (vsid, str(gw)) in self.records):
            raise PolicyError(f"virtual subnet {vsid}: gateway {gw} is the CA of a lookup "
                              "record")
        for v in self.domains[rdid]["vsids"]:
            s = self.subnets[v]
            if v != vsid and net.overlaps(ipaddress.IPv4Network(s["prefix"])):
                raise PolicyError(f"virtual subnet {vsid} ({net}) overlaps virtual subnet "
                                  f"{v} ({s['prefix']}) in routing domain {rdid}")
        for v in sorted(self.domains[rdid]["vlans"]):
            other = ipaddress.IPv4Interface(self.attachments[v]["address"]).network
            if net.overlaps(other):
                raise PolicyError(f"virtual subnet {vsid} ({net}) overlaps attachment vlan {v} "
                                  f"({other}) in routing domain {rdid}")
        if old is None:
            if not self.free_slots:
                raise PolicyError("too many virtual subnets (16384 at most)")
            slot = self.free_slots.pop()        # the snapshot holds its own copy
        else:
            slot = old["slot"]
        sub = {"rdid": rdid, "vsid": vsid, "prefix": str(net), "gateway": str(gw),
               "gateway_mac": _mac(op.get("gateway_mac", self.provider_mac), "gateway_mac"),
               "flowid": flowid, "slot": slot,
               "net": (int(net.network_address), int(net.netmask)),
               # no VM's CA: the gateway's address, the network and broadcast address
               "not_cas": frozenset([int(gw)] + ([int(net.network_address),
                                                  int(net.broadcast_address)]
                                                 if net.prefixlen < 31 else []))}
        self.subnets[vsid] = sub
        d = self.domains[rdid]
        self.domains[rdid] = {**d, "vsids": d["vsids"] | {vsid}}
        self._calls.append(self._vsid_call(sub))
        self._add_route({"rdid": rdid, "prefix": str(net), "next_hop": "0.0.0.0",
                         "metric": 0, "vsid": vsid, "auto": True})

    @staticmethod
    def _vsid_call(sub) -> tuple:
        return ("vsid_set", sub["vsid"], sub["rdid"], V4(sub["gateway"]).packed,
                mac_bytes(sub["gateway_mac"]), -1 if sub["flowid"] is None else sub["flowid"],
                sub["slot"])

    def _del_subnet(self, op):
        _fields(op, ("vsid",))
        vsid = _vsid(op["vsid"])
        sub = self.subnets.get(vsid)
        if sub is None:
            raise PolicyError(f"virtual subnet {vsid} does not exist")
        n = self.records.count_vsid(vsid)
        if n:
            raise PolicyError(f"virtual subnet {vsid} still has {n} lookup records; "
                              "delete them first")
        users = self._routes_via("vsid", vsid)
        if users:
            raise PolicyError(f"virtual subnet {vsid} is the next hop of route {users[0][1]} "
                              f"via {users[0][2]}; delete it first")
        self._drop_route((sub["rdid"], sub["prefix"], "0.0.0.0"))
        del self.subnets[vsid]
        d = self.domains[sub["rdid"]]
        self.domains[sub["rdid"]] = {**d, "vsids": d["vsids"] - {vsid}}
        self.cooling.append(sub["slot"])
        self._calls.append(("vsid_del", vsid))

    def _set_attachment(self, op):
        _fields(op, ("rdid", "vlan", "address"), ("mac",))
        rdid, vlan = self._rdid(op), _int(op["vlan"], "vlan", 1, 4094)
        ifc = _iface(op["address"], f"attachment vlan {vlan}")
        old = self.attachments.get(vlan)
        dom = self.domains[rdid]
        for v in sorted(dom["vsids"]):
            if ifc.network.overlaps(ipaddress.IPv4Network(self.subnets[v]["prefix"])):
                raise PolicyError(f"attachment vlan {vlan} ({ifc.network}) overlaps virtual "
                                  f"subnet {v} ({self.subnets[v]['prefix']}) in routing "
                                  f"domain {rdid}")
        for v in sorted(dom["vlans"] - {vlan}):
            other = ipaddress.IPv4Interface(self.attachments[v]["address"]).network
            if ifc.network.overlaps(other):
                raise PolicyError(f"attachment vlan {vlan} ({ifc.network}) overlaps attachment "
                                  f"vlan {v} ({other}) in routing domain {rdid}")
        if old is not None and old["rdid"] != rdid:
            raise PolicyError(f"VLAN {vlan} is already attached to routing domain {old['rdid']}")
        if old is not None and old["address"] != str(ifc):
            self._off_link(vlan, ifc.network)
            self._drop_route((rdid, str(ipaddress.IPv4Interface(old["address"]).network),
                              "0.0.0.0"))
        att = {"rdid": rdid, "vlan": vlan, "address": str(ifc),
               "mac": _mac(op.get("mac", self.customer_mac), "attachment mac")}
        self.attachments[vlan] = att
        d = self.domains[rdid]
        self.domains[rdid] = {**d, "vlans": d["vlans"] | {vlan}}
        self._calls.append(self._attach_call(att))
        self._add_route({"rdid": rdid, "prefix": str(ifc.network), "next_hop": "0.0.0.0",
                         "metric": 0, "vlan": vlan, "auto": True})

    @staticmethod
    def _attach_call(att) -> tuple:
        ifc = ipaddress.IPv4Interface(att["address"])
        return ("attach_set", att["vlan"], att["rdid"], ifc.ip.packed, ifc.netmask.packed,
                mac_bytes(att["mac"]))

    def _off_link(self, vlan, net):
        """Refuse a VLAN's move to subnet `net` (None: its deletion) that leaves a
        static neighbour or a route's next hop off its link."""
        if self.lenient:
            return
        where = "its new subnet " + str(net) if net else "any subnet once deleted"
        for (scope, ip) in sorted(self.neighbours):
            if scope == vlan and (net is None or V4(ip) not in net):
                raise PolicyError(f"attachment vlan {vlan}: static neighbour {ip} would not "
                                  f"be on {where}; delete it first")
        for (_, prefix, nh) in self._routes_via("vlan", vlan) if net else ():
            if nh != "0.0.0.0" and V4(nh) not in net:
                raise PolicyError(f"attachment vlan {vlan}: next hop {nh} of route {prefix} "
                                  f"would not be on {where}; change the route first")

    def _del_attachment(self, op):
        _fields(op, ("vlan",))
        vlan = _int(op["vlan"], "vlan", 1, 4094)
        att = self.attachments.get(vlan)
        if att is None:
            raise PolicyError(f"no attachment on VLAN {vlan}")
        users = self._routes_via("vlan", vlan)
        if users:
            raise PolicyError(f"VLAN {vlan} is the next hop of route {users[0][1]} via "
                              f"{users[0][2]}; delete it first")
        self._off_link(vlan, None)
        self._drop_route((att["rdid"], str(ipaddress.IPv4Interface(att["address"]).network),
                          "0.0.0.0"))
        del self.attachments[vlan]
        d = self.domains[att["rdid"]]
        self.domains[att["rdid"]] = {**d, "vlans": d["vlans"] - {vlan}}
        self._calls.append(("attach_del", vlan))

    # -- records --------------------------------------------------------------------

    _RECORD_FIELDS = frozenset(("op", "kind", "vsid", "ca", "mac", "pa", "method"))

    def _set_record(self, op):
        # The hot path of big batches (a million records): plain dict and
        # socket calls instead of ipaddress objects.
        if not (self._RECORD_FIELDS.issuperset(op)
                and (len(op) == 7 or (len(op) == 6 and "method" not in op))):
            _fields(op, ("vsid", "ca", "mac", "pa"), ("method",))
        vsid = op["vsid"]
        sub = self.subnets.get(vsid) if type(vsid) is int else None
        if sub is None:
            _vsid(vsid)
            raise PolicyError(f"lookup record {op['ca']}: virtual subnet {vsid} does not exist")
        ca = _packed(op["ca"], "lookup record CA")
        net, mask = sub["net"]
        ca_i = int.from_bytes(ca, "big")
        if ca_i & mask != net:
            raise PolicyError(f"lookup record {op['ca']} is outside virtual subnet {vsid} "
                              f"({sub['prefix']})")
        if ca_i in sub["not_cas"] and not self.lenient:
            raise PolicyError(f"lookup record {op['ca']}: no VM's address in virtual subnet "
                              f"{vsid} ({sub['prefix']}): "
                              + ("the gateway's" if op["ca"] == sub["gateway"] else
                                 "its network or broadcast address"))
        method = op.get("method", "encap")
        if method not in METHODS:
            raise PolicyError(f"lookup record {op['ca']}: method must be 'encap' or 'rewrite'")
        if self.provider is None:
            raise PolicyError("lookup records need the provider addresses set first")
        mac = op["mac"]
        if not isinstance(mac, str) or not _MAC.match(mac):
            raise PolicyError(f"lookup record {op['ca']}: {mac!r} is not a MAC address")
        pa = _packed(op["pa"], f"lookup record {op['ca']} PA")
        ca_s, pa_s = socket.inet_ntop(socket.AF_INET, ca), socket.inet_ntop(socket.AF_INET, pa)
        self._peer_pa(pa[0], pa_s, f"lookup record {ca_s}")
        if pa_s in self.rw_pas and not self.lenient:    # one of our mappings' (checked last)
            self._on_mapping_pa.append((vsid, ca_s))
        rec = {"vsid": vsid, "ca": ca_s, "mac": mac.lower().replace("-", ":"),
               "pa": pa_s, "method": method}
        old = self.records.get((vsid, ca_s))
        if old is not None and old["pa"] != pa_s:
            self._moved.append(np.array([int.from_bytes(pa, "big")], np.uint32))
        if method == "rewrite" or (old is not None and old["method"] == "rewrite"):
            self._rewrite_record(old, rec, sub)
        self.records[(vsid, ca_s)] = rec
        self._calls.append(("record_set", vsid, ca, mac_bytes(rec["mac"]), pa, METHODS[method]))

    def _rewrite_record(self, old, rec, sub):
        """A rewritten VM owns its PA alone: no VSID travels to tell two apart.
        Set again on the same PA (every snapshot does), its mapping is replaced in
        place by rw_set: deleted first, the VM's packets would find none meanwhile."""
        if old is not None and old["method"] == "rewrite":
            del self.rw_pas[old["pa"]]
            if rec["method"] != "rewrite" or rec["pa"] != old["pa"]:
                self._calls.append(("rw_del", V4(old["pa"]).packed, sub["rdid"],
                                    V4(old["ca"]).packed, False))
        if rec["method"] != "rewrite":
            return
        self._claim_rewrite_pa(rec["pa"], ("record", (rec["vsid"], rec["ca"])),
                               f"lookup record {rec['ca']} (rewrite)")
        self._calls.append(self._rw_call(rec["pa"]))

    def _peer_pa(self, first_octet: int, pa: str, what):
        """A PA names one host of the fabric, not us: packets sent to 0/8, loopback,
        multicast, class E or broadcast, or looped back to ourselves, reach no VM."""
        if self.lenient:
            return
        if (first_octet in (0, 127) or first_octet >= 224 or
                pa in self.provider["not_hosts"]):
            raise PolicyError(f"{what}: PA {pa} is not a unicast host address")
        if pa in self.provider["addresses_ip"]:
            raise PolicyError(f"{what}: PA {pa} is one of the gateway's NVGRE addresses")

    def _claim_rewrite_pa(self, pa, owner, what):
        self._peer_pa(int(pa.split(".", 1)[0]), pa, what)
        if pa in self.provider["addresses_ip"]:     # a rule of every time, lenient too
            raise PolicyError(f"{what}: PA {pa} is one of the gateway's NVGRE addresses")
        other = self.rw_pas.get(pa)
        if other is not None and other != owner:
            raise PolicyError(f"{what}: PA {pa} is already the rewrite PA of "
                              f"{other[0]} {other[1][1]}")
        self.rw_pas[pa] = owner

    # -- IP rewrite mappings: our PAs standing for customer-side addresses ------

    def _set_mapping(self, op):
        _fields(op, ("rdid", "ca", "pa"))
        rdid = self._rdid(op)
        ca, pa = str(_ip(op["ca"], "rewrite mapping CA")), str(_ip(op["pa"], "rewrite mapping PA"))
        if self.provider is None:
            raise PolicyError("rewrite mappings need the provider addresses set first")
        old = self.mappings.get((rdid, ca))
        if old is not None and old != pa:
            # Only the old PA goes: the CA's own entry (the source PA for its
            # traffic to rewritten VMs) is replaced in place by rw_set, never absent.
            del self.rw_pas[old]
            self._calls.append(("rw_del", V4(old).packed, rdid, V4(ca).packed, False))
        self._claim_rewrite_pa(pa, ("mapping", (rdid, ca)), f"rewrite mapping {ca}")
        if old != pa and not self.lenient:     # a PA new to this mapping: no record's
            self._new_mapping_pas.add(pa)
        self.mappings[(rdid, ca)] = pa
        self._calls.append(self._rw_call(pa))

    def _del_mapping(self, op):
        _fields(op, ("rdid", "ca"))
        rdid, ca = self._rdid(op), str(_ip(op["ca"], "rewrite mapping CA"))
        pa = self.mappings.pop((rdid, ca), None)
        if pa is None:
            raise PolicyError(f"no rewrite mapping for {ca} in routing domain {rdid}")
        del self.rw_pas[pa]
        self._calls.append(("rw_del", V4(pa).packed, rdid, V4(ca).packed, True))

    @staticmethod
    def _record_call(rec) -> tuple:
        return ("record_set", rec["vsid"], V4(rec["ca"]).packed, mac_bytes(rec["mac"]),
                V4(rec["pa"]).packed, METHODS[rec["method"]])

    def _rw_call(self, pa: str) -> tuple:
        """The C rewrite entry of one of the policy's rewrite PAs, from its owner."""
        kind, key = self.rw_pas[pa]
        if kind == "mapping":
            return ("rw_set", V4(pa).packed, V4(key[1]).packed, key[0], 0, True)
        sub = self.subnets[key[0]]
        return ("rw_set", V4(pa).packed, V4(key[1]).packed, sub["rdid"], sub["slot"], False)

    def _del_record(self, op):
        _fields(op, ("vsid", "ca"))
        key = (_vsid(op["vsid"]), str(_ip(op["ca"], "lookup record CA")))
        if key not in self.records:
            raise PolicyError(f"no lookup record for {key[1]} in VSID {key[0]}")
        rec = self.records.pop(key)
        if rec["method"] == "rewrite":
            self._rewrite_record(rec, {**rec, "method": "encap"}, self.subnets[key[0]])
        self._calls.append(("record_del", key[0], V4(key[1]).packed))

    # -- customer routes -----------------------------------------------------------------

    def _set_route(self, op):
        _fields(op, ("rdid", "prefix", "next_hop"), ("metric", "vlan", "vsid"))
        rdid = self._rdid(op)
        net = _net(op["prefix"], "route prefix")
        nh = _ip(op["next_hop"], f"route {net} next hop")
        metric = _int(op.get("metric", 256), f"route {net} metric", 0, 65535)
        route = {"rdid": rdid, "prefix": str(net), "next_hop": str(nh), "metric": metric}
        if self.routes.get((rdid, str(net)), {}).get(str(nh), {}).get("auto"):
            raise PolicyError(f"route {net} via {nh} is the connected route of a virtual "
                              f"subnet or attachment of routing domain {rdid}")
        # Where the next hop lives: a customer VLAN or a virtual subnet of this domain.
        if "vlan" in op and "vsid" in op:
            raise PolicyError(f"route {net}: 'vlan' or 'vsid', not both")
        if "vlan" in op:
            vlan = _int(op["vlan"], f"route {net} vlan", 1, 4094)
            att = self.attachments.get(vlan)
            if att is None or att["rdid"] != rdid:
                raise PolicyError(f"route {net}: VLAN {vlan} is not attached to routing "
                                  f"domain {rdid}")
            on = ipaddress.IPv4Interface(att["address"]).network
            if nh != ZERO and nh not in on and not self.lenient:
                raise PolicyError(f"route {net}: next hop {nh} is not on VLAN {vlan} ({on})")
            route["vlan"] = vlan
        elif "vsid" in op:
            vsid = _vsid(op["vsid"])
            if vsid not in self.subnets or self.subnets[vsid]["rdid"] != rdid:
                raise PolicyError(f"route {net}: VSID {vsid} is not in routing domain {rdid}")
            on = ipaddress.IPv4Network(self.subnets[vsid]["prefix"])
            if nh != ZERO and nh not in on and not self.lenient:
                raise PolicyError(f"route {net}: next hop {nh} is not in virtual subnet "
                                  f"{vsid} ({on})")
            route["vsid"] = vsid
        elif nh == ZERO:
            raise PolicyError(f"route {net}: an on-link route needs 'vlan' or 'vsid'")
        else:
            dom = self.domains[rdid]
            where = [("vlan", v) for v in sorted(dom["vlans"])
                     if nh in ipaddress.IPv4Interface(self.attachments[v]["address"]).network]
            where += [("vsid", v) for v in sorted(dom["vsids"])
                      if nh in ipaddress.IPv4Network(self.subnets[v]["prefix"])]
            if not where:
                raise PolicyError(f"route {net}: next hop {nh} is on no VLAN and in no "
                                  f"virtual subnet of routing domain {rdid}")
            route[where[0][0]] = where[0][1]
        self._add_route(route)

    def _del_route(self, op):
        _fields(op, ("rdid", "prefix", "next_hop"))
        key = (self._rdid(op), str(_net(op["prefix"], "route prefix")),
               str(_ip(op["next_hop"], "route next hop")))
        if self.routes.get(key[:2], {}).get(key[2], {"auto": True}).get("auto"):
            raise PolicyError(f"no customer route {key[1]} via {key[2]} in routing "
                              f"domain {key[0]}")
        self._drop_route(key)

    def _routes_via(self, field, value) -> list[tuple]:
        return [(d, p, nh) for (d, p), by_nh in self.routes.items()
                for nh, r in by_nh.items() if r.get(field) == value and not r.get("auto")]

    def _add_route(self, route):
        key = (route["rdid"], route["prefix"])
        # Copy-on-write: the snapshot of a failed batch keeps the old inner dict.
        self.routes[key] = {**self.routes.get(key, {}), route["next_hop"]: route}
        self._touched.add(key)

    def _drop_route(self, key):
        by_nh = {**self.routes.get(key[:2], {})}
        by_nh.pop(key[2], None)
        if by_nh:
            self.routes[key[:2]] = by_nh
        else:
            self.routes.pop(key[:2], None)
        self._touched.add(key[:2])

    def _routes_changed(self):
        """Install the best (lowest metric) route of each touched prefix in C. The
        new routes go in before the old ones go (a /24 replaced by its /23 keeps
        routing its addresses meanwhile), unless the table has no room for them
        then: a batch that replaces routes in a full table deletes first."""
        dels, sets, adds, before = [], [], 0, len(self.installed)
        for rdid, prefix in sorted(self._touched):
            cands = list(self.routes.get((rdid, prefix), {}).values())
            net = ipaddress.IPv4Network(prefix)
            old = self.installed.pop((rdid, prefix), None)
            if old is not None:
                self.lengths[(rdid, net.prefixlen)] -= 1
            if not cands:
                if old is not None:
                    dels.append((rdid, net.network_address.packed, net.prefixlen))
                continue
            adds += old is None
            self.lengths[(rdid, net.prefixlen)] = self.lengths.get((rdid, net.prefixlen), 0) + 1
            best = min(cands, key=lambda r: (r["metric"], r["next_hop"]))
            nh = V4(best["next_hop"])
            if "vlan" in best:
                c = (CUSTOMER, 0, best["vlan"], nh.packed)
            elif nh == ZERO:
                c = (VSUBNET, best["vsid"], 0, nh.packed)
            else:
                c = (APPLIANCE, best["vsid"], 0, nh.packed)
            self.installed[(rdid, prefix)] = c
            if c != old:
                sets.append(("route_set", rdid, net.network_address.packed,
                             net.prefixlen, *c))
        # A domain's length with no route left: its last delete clears the length's
        # filter bit (by the final counts, as the deletes may come after the sets).
        last = {(d[0], d[2]): i for i, d in enumerate(dels)
                if self.lengths.get((d[0], d[2]), 0) == 0}
        dels = [("route_del", *d, last.get((d[0], d[2])) == i) for i, d in enumerate(dels)]
        if before + adds <= self.capacity["routes"]:
            self._calls += sets + dels
        else:
            self._calls += dels + sets
        rdids = {rdid for rdid, _ in self._touched}
        if rdids:
            inside = self._installed_in(rdids)
            self._shadows_changed(inside)
            self._links_changed(inside)

    def _installed_in(self, rdids) -> dict[int, list[tuple[int, int]]]:
        """The installed routes of each domain of rdids: (first address, length)."""
        routes = {r: [] for r in rdids}
        for rdid, prefix in self.installed:
            if rdid in routes:
                net = ipaddress.IPv4Network(prefix)
                routes[rdid].append((int(net.network_address), net.prefixlen))
        return routes

    def _shadows_changed(self, routes):
        """Flag the domains where an installed route lies strictly inside a virtual
        subnet (any kind: a subnet's own route is the subnet itself): there a CA's
        record does not settle where a packet goes, and the data path routes every
        packet (NVGW_RD_SHADOWED). A flag goes on before anything else of the batch
        and off after everything. routes: _installed_in's, of the domains touched."""
        for rdid in sorted(routes):
            on = self._has_route_inside_subnet(rdid, routes[rdid])
            if on == (rdid in self.shadowed):
                continue
            if on:
                self.shadowed = self.shadowed | {rdid}
                self._calls.insert(0, ("rd_shadow_set", rdid, True))
            else:
                self.shadowed = self.shadowed - {rdid}
                self._calls.append(("rd_shadow_set", rdid, False))

    def _links_changed(self, routes):
        """Name, per domain, the link whose hosts a fabric packet reaches without a
        route lookup (the C side's rd_link): the lowest VLAN of its attachments that keep
        their hosts by number (/22 or longer) and hold no other installed route. A
        link that changes (another VLAN or none, or its attachment another subnet)
        is cleared before anything else of the batch and named after everything
        (the C side takes the subnet from the attachment then), so the data path
        never skips a route that is there nor keeps a subnet that is not. routes:
        _installed_in's, of the domains touched."""
        for rdid in sorted(routes):
            new = None
            for vlan in sorted(self.domains.get(rdid, {}).get("vlans", ())):
                net = ipaddress.IPv4Interface(self.attachments[vlan]["address"]).network
                first, plen = int(net.network_address), net.prefixlen
                mask = int(net.netmask)
                if plen >= 22 and not any(ln > plen and p & mask == first
                                          for p, ln in routes[rdid]):
                    new = (vlan, str(net))
                    break
            old = self.links.get(rdid)
            if new == old:
                continue
            self.links = {k: v for k, v in self.links.items() if k != rdid}
            if new:
                self.links[rdid] = new
            if old:
                self._calls.insert(0, ("rd_link_set", rdid, 0))
            if new:
                self._calls.append(("rd_link_set", rdid, new[0]))

    def _has_route_inside_subnet(self, rdid, routes) -> bool:
        # A domain's subnets never overlap: the only one that can hold a route is
        # the last to start at or before it.
        subs = sorted(self.subnets[v]["net"] for v in self.domains.get(rdid, {}).get("vsids", ()))
        starts = [net for net, _ in subs]
        for p, ln in routes:
            i = bisect.bisect_right(starts, p) - 1
            if i >= 0 and p & subs[i][1] == subs[i][0] and ln > subs[i][1].bit_count():
                return True
        return False

def _block_array(block):
    """A record block (bytes, memoryview or array of recblock.DTYPE) as an array."""
    if block is None or isinstance(block, np.ndarray):
        return block
    if (len(block) if not isinstance(block, memoryview) else block.nbytes) % recblock.SIZE:
        raise PolicyError(f"a record block is a multiple of {recblock.SIZE} bytes")
    return np.frombuffer(block, recblock.DTYPE)


def load_file(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise PolicyError(f"cannot read policy {path}: {e.strerror}") from None
    except ValueError as e:
        raise PolicyError(f"policy {path} is not valid JSON: {e}") from None
