"""Putting the C tables back as the policy says, after a batch failed half-way.

A batch is checked whole before any C call (dataplane/policy.py), but a call can
still fail on its own (no memory, a table insert past what its checks foresee).
The calls before it were applied and the workers may already use them: the
policy model goes back to its snapshot, and then every table entry that the
batch touched (the failed call's too, which may have changed part of what it
does) is set again from the model, or deleted where the model has none.

Each entry is restored once, in the reverse order of the batch's first touch
of it, so that an entry is put back before the entries it rests on change
under it (a record before its VSID is deleted again, a VSID before the
records that were deleted ahead of it come back); restoring is idempotent,
whatever part of the batch C had applied. The provider is the exception:
records take their fabric next hop from it, so it goes back first, and all
records are set again last (undo()).
"""
from __future__ import annotations

import errno
import socket

import numpy as np

from dataplane import recblock

ZERO4 = bytes(4)


def keys_of(call: tuple) -> list[tuple]:
    """The table entries one C call of a batch writes."""
    fn, *a = call
    if fn == "provider_set":
        return [("provider",)]
    if fn in ("vsid_set", "vsid_del"):
        return [("vsid", a[0])]
    if fn in ("attach_set", "attach_del"):
        return [("attach", a[0])]
    if fn in ("record_set", "record_del"):
        return [("record", a[0], a[1])]
    if fn == "record_set_bulk":
        return [("block", id(a[0]), a[0])]
    if fn in ("route_set", "route_del"):
        return [("route", a[0], a[1], a[2])]
    if fn == "rd_shadow_set":
        return [("shadow", a[0])]
    if fn == "rd_link_set":
        return [("link", a[0])]
    if fn == "rw_set":              # pa, ca, rdid, slot, gateway
        return [("rw_pa", a[0])] + ([("rw_gw", a[2], a[1])] if a[4] else [])
    if fn == "rw_del":              # pa, rdid, ca, gateway
        return [("rw_pa", a[0])] + ([("rw_gw", a[1], a[2])] if a[3] else [])
    if fn in ("neigh_set", "neigh_clear"):
        return [("neigh", a[0], a[1])]
    raise ValueError(f"no undo for C call {fn}")


def restoring(p, key: tuple, calls: list[tuple], learned: dict | None = None) -> list[tuple]:
    """The C calls that make entry `key` what policy `p` (its model restored) says.
    `calls`: the batch's, for what they may have done beyond the entry itself;
    `learned`: {(scope, ip): MAC} the exception thread had learned for neighbours the
    batch set static (the model knows only static ones)."""
    kind = key[0]
    if kind == "vsid":
        sub = p.subnets.get(key[1])
        if sub is None:
            return [("vsid_del", key[1])]
        # Deleted and added again, the VSID may hold another counter slot in C,
        # which a set may not change: delete it, and let that slot cool, first.
        fns = [c[0] for c in calls if c[0] in ("vsid_set", "vsid_del") and c[1] == key[1]]
        again = "vsid_del" in fns and "vsid_set" in fns[fns.index("vsid_del"):]
        return ([("vsid_del", key[1]), ("commit",)] if again else []) + [p._vsid_call(sub)]
    if kind == "attach":
        att = p.attachments.get(key[1])
        return [p._attach_call(att) if att else ("attach_del", key[1])]
    if kind == "record":
        rec = p.records.get((key[1], socket.inet_ntoa(key[2])))
        return [p._record_call(rec) if rec else ("record_del", key[1], key[2])]
    if kind == "block":
        arr = np.frombuffer(key[2], recblock.DTYPE)
        rows = [p.records.d.get(k) for k in recblock.keys(arr).tolist()]
        out = [("record_del", int(arr["vsid"][i]), int(arr["ca"][i]).to_bytes(4, "big"))
               for i, row in enumerate(rows) if row is None]
        keep = b"".join(row for row in rows if row is not None)
        return out + ([("record_set_bulk", keep)] if keep else [])
    if kind == "route":
        _, rdid, prefix, length = key
        net = f"{socket.inet_ntoa(prefix)}/{length}"
        c = p.installed.get((rdid, net))
        if c is not None:
            return [("route_set", rdid, prefix, length, *c)]
        return [("route_del", rdid, prefix, length, p.lengths.get((rdid, length), 0) == 0)]
    if kind == "shadow":
        return [("rd_shadow_set", key[1], key[1] in p.shadowed)]
    if kind == "link":
        return [("rd_link_set", key[1], p.links.get(key[1], (0,))[0])]
    if kind == "rw_pa":
        pa = socket.inet_ntoa(key[1])
        return [p._rw_call(pa) if pa in p.rw_pas else ("rw_del", key[1], 0, ZERO4, False)]
    if kind == "rw_gw":             # a customer-side CA's entry: our PA for it
        pa = p.mappings.get((key[1], socket.inet_ntoa(key[2])))
        return [p._rw_call(pa) if pa else ("rw_del", ZERO4, key[1], key[2], True)]
    if kind == "neigh":
        mac = p.neighbours.get((key[1], socket.inet_ntoa(key[2])))
        if mac:
            return [p._neigh_call(key[1], key[2], mac)]
        was = (learned or {}).get((key[1], key[2]))
        return [("neigh_clear", key[1], key[2])] + (
            [("neigh_learn", key[1], key[2], was)] if was else [])
    raise ValueError(f"no undo for table entry {kind}")


def undo(p, calls: list[tuple], learned: dict | None = None) -> list[str]:
    """Restore every entry `calls` touched (the applied ones and the failed one)
    from policy `p`, whose model is back at its snapshot; one grace period
    first, so that a VSID deleted in the batch may take its slot again.
    The provider, when the batch set it, goes back first (records restored
    after it take their next hops from it) and every record is set again
    last, once every VSID is back (a record block needs all of its VSIDs):
    records the batch did not touch carry next hops from the provider it set.
    Returns what could not be restored (nothing, normally)."""
    first: dict[tuple, tuple] = {}          # entry -> (index of its first call, its key)
    for i, call in enumerate(calls):
        for k in keys_of(call):
            first.setdefault(k[:2] if k[0] == "block" else k, (i, k))
    provider = first.pop(("provider",), None) is not None
    todo = []
    if provider:
        todo.append(p._provider_call() if p.provider else ("provider_clear",))
    failed = []
    for _, key in sorted(first.values(), key=lambda v: v[0], reverse=True):
        try:
            todo += restoring(p, key, calls, learned)
        except Exception as e:                  # noqa: BLE001 -- a bug, reported whole
            failed.append(f"{key[0]}: {type(e).__name__}: {e}")
    if provider and len(p.records):
        todo.append(("record_set_bulk", p.records.block()))
    p.nv.commit()
    for fn, *args in todo:
        try:
            getattr(p.nv, fn)(*args)
        except Exception as e:                  # noqa: BLE001 -- reported whole
            gone = fn.endswith(("_del", "_clear")) and getattr(e, "errno", 0) == errno.ENOENT
            if not gone:                        # deleting what is not there is done
                failed.append(f"{fn}: {e}")
    p.nv.commit()
    return failed
