"""Lookup records in bulk: the record block, and the map that holds them.

A record block is what the management channel sends instead of a JSON object
per record when a batch carries many (a million records are 20 MB as a block,
~140 MB as JSON, and a block is read without building a Python object per
record). Format "nvgw-records/1": n records of 20 bytes, no header:

    offset 0  u32 VSID, little-endian
           4  CA, 4 bytes, network order
           8  PA, 4 bytes, network order
          12  CA MAC, 6 bytes
          18  method: 0 encap, 1 rewrite
          19  0

The same layout is `struct nvgw_rec_wire` in cext/tables.h, so a block goes to
the C tables as it is (Nvgre.record_set_bulk). The message that carries a block
says {"records": {"format": "nvgw-records/1", "count": n}} in its JSON part and
has the block as its next ZeroMQ frame.

numpy does the per-record work (parsing the text fields of JSON records,
checks, sorting for duplicates) because it turns a million small Python steps
into a few array operations: 1M records are encoded in ~0.5 s and checked in
~0.1 s, where a Python loop over dicts takes 5-10 s.

RecordMap holds a policy's records as {key: 20-byte record}, key = VSID << 32 |
CA: a million records cost two small Python objects each instead of a dict of
five strings, a block is merged in one dict.update, and a snapshot is one
bytes.join. It looks like the dict it replaces ({(vsid, "ca"): record dict}).
"""
from __future__ import annotations

import re
import socket
import struct

from functools import partial
from itertools import compress, repeat
from operator import contains, is_, itemgetter, ne

import numpy as np

FORMAT = "nvgw-records/1"
SIZE = 20
DTYPE = np.dtype([("vsid", "<u4"), ("ca", ">u4"), ("pa", ">u4"), ("mac", "V6"),
                  ("method", "u1"), ("pad", "u1")])
assert DTYPE.itemsize == SIZE
METHODS = {"encap": 0, "rewrite": 1}
METHOD_NAMES = {0: "encap", 1: "rewrite"}
_inet4 = partial(socket.inet_pton, socket.AF_INET)
_PACK = struct.Struct("<I4s4s6sBB")
RECORD_FIELDS = ("vsid", "ca", "mac", "pa", "method")
# Hex digit values; 255 = not a hex digit.
_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
_MAC_DIGITS = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16]


class BlockError(ValueError):
    """A block or a record that cannot be encoded; the text names the record."""


def header(count: int) -> dict:
    return {"format": FORMAT, "count": count}


def decode(buf, meta) -> np.ndarray:
    """The records of a block frame, as a (read-only) numpy array; BlockError
    when the frame does not match what its message says."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BlockError(f"records: format {meta.get('format') if isinstance(meta, dict) else meta!r}"
                         f" not supported (this side speaks {FORMAT!r})")
    count = meta.get("count")
    if type(count) is not int or count < 0:
        raise BlockError("records: 'count' must be a non-negative integer")
    size = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
    if size != count * SIZE:
        raise BlockError(f"records: the block is {size} bytes, {count} records are "
                         f"{count * SIZE}")
    return np.frombuffer(buf, DTYPE, count)


def count(block) -> int:
    """Records in a block (bytes, or an array as decode gives); 0 for None."""
    if block is None:
        return 0
    return len(block) if isinstance(block, np.ndarray) else len(block) // SIZE


def concat(arrays: list) -> np.ndarray:
    """Record arrays end to end. (np.concatenate would convert the network-order
    fields to the machine's byte order: numpy promotes the dtype.)"""
    if not arrays:
        return np.zeros(0, DTYPE)
    return np.concatenate([a.view("V20") for a in arrays]).view(DTYPE)


def keys(arr: np.ndarray) -> np.ndarray:
    return (arr["vsid"].astype(np.uint64) << np.uint64(32)) | arr["ca"].astype(np.uint64)


def ip(value: int) -> str:
    return socket.inet_ntoa(int(value).to_bytes(4, "big"))


def row_dict(row: bytes) -> dict:
    vsid, ca, pa, mac, method, _ = _PACK.unpack(row)
    return {"vsid": vsid, "ca": socket.inet_ntoa(ca), "mac": mac.hex(":"),
            "pa": socket.inet_ntoa(pa), "method": METHOD_NAMES.get(method, method)}


def to_dicts(arr: np.ndarray) -> list[dict]:
    return [row_dict(r) for r in arr.view("V20").tolist()]


def pack(rec: dict) -> bytes:
    """One record dict (already validated: see Policy._set_record) as 20 bytes."""
    return _PACK.pack(rec["vsid"], socket.inet_aton(rec["ca"]), socket.inet_aton(rec["pa"]),
                      bytes.fromhex(rec["mac"].replace(":", "").replace("-", "")),
                      METHODS[rec["method"]], 0)


def key_of(vsid: int, ca: str) -> int:
    return vsid << 32 | int.from_bytes(_inet4(ca), "big")


# -- encoding JSON records (the client side) ------------------------------------------

def _addresses(values: list, what) -> bytes:
    try:
        return b"".join(map(_inet4, values))
    except (OSError, TypeError, ValueError):
        for i, v in enumerate(values):
            try:
                socket.inet_pton(socket.AF_INET, v)
            except (OSError, TypeError, ValueError):
                raise BlockError(what(i, v)) from None
        raise


def _macs(values: list, ca) -> np.ndarray:
    n = len(values)
    try:
        joined = "".join(values).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        joined = b""
    ok = None
    if len(joined) == 17 * n:
        a = np.frombuffer(joined, np.uint8).reshape(n, 17)
        seps = a[:, 2::3]
        digits = _HEX[a[:, _MAC_DIGITS]]
        ok = (((seps == ord(":")) | (seps == ord("-"))).all(axis=1) &
              (digits < 16).all(axis=1))
        if ok.all():
            return np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2], np.uint8)
    for i, v in enumerate(values):      # find the first bad one, for the message
        if not isinstance(v, str) or not _MAC.match(v):
            raise BlockError(f"lookup record {ca(i)}: {v!r} is not a MAC address")
    raise BlockError("lookup records: a MAC address is malformed")


def encode(records: list[dict], extra=("op", "kind")) -> bytes:
    """JSON records ({"vsid", "ca", "mac", "pa", "method"?}; `extra` fields are
    allowed and ignored, e.g. an operation's "op" and "kind") as a block.
    BlockError names the first record whose fields are not well-formed, with the
    message the per-record path gives; what the fields mean (the VSID exists, the
    CA is in its subnet, ...) is checked where the block is applied."""
    n = len(records)
    if n == 0:
        return b""
    if set(map(type, records)) != {dict}:
        i = next(i for i, r in enumerate(records) if type(r) is not dict)
        raise BlockError(f"record {i}: must be a JSON object")
    allowed = set(RECORD_FIELDS) | set(extra)
    try:
        vsids, cas, pas, macs = (list(map(itemgetter(f), records))
                                 for f in ("vsid", "ca", "pa", "mac"))
    except KeyError:
        for r in records:
            for f in ("vsid", "ca", "mac", "pa"):
                if f not in r:
                    raise BlockError(f"set record: missing field {f!r}") from None
        raise
    methods = list(map(dict.get, records, repeat("method"), repeat("encap")))
    # No unknown field: the four required ones are there, so the length tells.
    lens = np.fromiter(map(len, records), np.int64, n)
    want = np.full(n, 4, np.int64)
    for f in ("method", *extra):
        want += np.fromiter(map(contains, records, repeat(f)), bool, n)
    if (lens != want).any():
        for r in records:
            unknown = set(r) - allowed
            if unknown:
                raise BlockError(f"set record: unknown field {sorted(unknown)[0]!r}")
        raise AssertionError("unreachable")

    def ca(i):
        return cas[i] if isinstance(cas[i], str) else repr(cas[i])
    if set(map(type, vsids)) != {int}:
        i = next(i for i, v in enumerate(vsids) if type(v) is not int)
        raise BlockError(f"vsid: VSID {vsids[i]!r} is outside 4096..16777214 "
                         "(0..4095 and 16777215 are reserved)")
    try:
        v = np.array(vsids, dtype=np.int64)
        bad = (v < 0) | (v > 0xFFFFFFFF)
    except OverflowError:       # beyond 64 bits
        bad = np.array([not 0 <= x <= 0xFFFFFFFF for x in vsids])
    if bad.any():
        i = int(bad.argmax())
        raise BlockError(f"vsid: VSID {vsids[i]!r} is outside 4096..16777214 "
                         "(0..4095 and 16777215 are reserved)")
    try:
        meth = list(map(METHODS.__getitem__, methods))
    except (KeyError, TypeError):
        i = next(i for i, m in enumerate(methods) if not isinstance(m, str) or m not in METHODS)
        raise BlockError(f"lookup record {ca(i)}: method must be 'encap' or 'rewrite'") from None
    ca_b = _addresses(cas, lambda i, x: f"lookup record CA: {x!r} is not an IPv4 address")
    pa_b = _addresses(pas, lambda i, x: f"lookup record {ca(i)} PA: {x!r} is not an IPv4 address")
    out = np.zeros(n, DTYPE)
    out["vsid"] = v
    out["ca"] = np.frombuffer(ca_b, ">u4")
    out["pa"] = np.frombuffer(pa_b, ">u4")
    out["mac"] = _macs(macs, ca).view("V6").reshape(n)
    out["method"] = meth
    return out.tobytes()


BLOCK_MIN = 1000           # record sets from this many on go as a record block


def split_records(ops, minimum: int = BLOCK_MIN) -> tuple[list, bytes] | None:
    """A batch ending in `minimum` or more 'set record' operations, as (the
    operations before them, their record block); None for any other batch.
    Records set twice keep the last, as the operations would. The client of
    nvgw-mgmt and the gateway's control socket both send big record batches
    through this, so they are validated on whole arrays (BlockError: a record
    that cannot be packed)."""
    if not isinstance(ops, list) or len(ops) < minimum:
        return None
    try:                        # fromiter: one dimension, whatever the values are
        kinds = np.fromiter(map(dict.get, ops, repeat("kind")), object, len(ops))
        verbs = np.fromiter(map(dict.get, ops, repeat("op")), object, len(ops))
    except TypeError:           # not all objects: the validator says which
        return None
    other = np.flatnonzero(~((kinds == "record") & (verbs == "set")))
    start = int(other[-1]) + 1 if len(other) else 0
    if len(ops) - start < minimum:
        return None
    return ops[:start], last_wins(encode(ops[start:]))


def last_wins(block: bytes) -> bytes:
    """A block where a (VSID, CA) that appears more than once keeps its last record,
    in place: what a batch of 'set record' operations means."""
    arr = np.frombuffer(block, DTYPE)
    k = keys(arr)
    rev = k[::-1]
    _, first = np.unique(rev, return_index=True)
    if len(first) == len(arr):
        return block
    keep = np.sort(len(arr) - 1 - first)
    return arr[keep].tobytes()


# -- the records of a policy ------------------------------------------------------------

class RecordMap:
    """{(vsid, "ca"): record dict}, stored as {vsid << 32 | ca: 20-byte record}.

    Changes are journalled between begin() and end()/rollback(), so a batch that
    fails puts the map back without copying it (the journal of the last batch is
    kept in `last` for the store, which writes exactly those rows)."""

    def __init__(self):
        self.d: dict[int, bytes] = {}
        self.per_vsid: dict[int, int] = {}
        self.rewrite: set[int] = set()          # keys of rewrite records
        self.journal: list | None = None
        self.last: list = []
        self._saved = None

    # -- the dict interface the policy engine uses --------------------------------------

    def __len__(self):
        return len(self.d)

    def __contains__(self, key):
        try:
            return key_of(*key) in self.d
        except (OSError, TypeError, ValueError):
            return False

    def get(self, key, default=None):
        try:
            row = self.d.get(key_of(*key))
        except (OSError, TypeError, ValueError):
            return default
        return default if row is None else row_dict(row)

    def __getitem__(self, key):
        rec = self.get(key)
        if rec is None:
            raise KeyError(key)
        return rec

    def __setitem__(self, key, rec: dict):
        self._put(key_of(*key), pack(rec))

    def pop(self, key, *default):
        k = key_of(*key)
        if k not in self.d:
            if default:
                return default[0]
            raise KeyError(key)
        rec = row_dict(self.d[k])
        self._put(k, None)
        return rec

    def __iter__(self):
        for k in self.d:
            yield (k >> 32, ip(k & 0xFFFFFFFF))

    def keys(self):
        return list(iter(self))

    def values(self):
        """The records in (VSID, CA) order (a document's order does not depend on
        the order of changes, or on changes undone)."""
        d = self.d
        return [row_dict(d[k]) for k in sorted(d)]

    def items(self):
        return [((k >> 32, ip(k & 0xFFFFFFFF)), row_dict(r)) for k, r in self.d.items()]

    def count_vsid(self, vsid: int) -> int:
        return self.per_vsid.get(vsid, 0)

    # -- bulk ---------------------------------------------------------------------------

    def block(self) -> bytes:
        """Every record, as one record block."""
        return b"".join(self.d.values())

    def array(self) -> np.ndarray:
        return np.frombuffer(self.block(), DTYPE)

    def put_rows(self, keys_: list, rows: list, karr: np.ndarray | None = None,
                 arr: np.ndarray | None = None) -> tuple:
        """Set many records (keys and 20-byte rows as lists, each key once; karr
        and arr: the keys and the records as arrays, if at hand); return which of
        them changed, and the PAs that records there before move to (an array)."""
        d = self.d
        n = len(rows)
        if not d:                       # a first load, a snapshot to a new gateway
            old = [None] * n
            changed = new = np.ones(n, bool)
            self.d = d = dict(zip(keys_, rows))
        else:
            old = list(map(d.get, keys_))
            changed = np.fromiter(map(ne, old, rows), bool, n)
            d.update(zip(keys_, rows))
            new = np.fromiter(map(is_, old, repeat(None)), bool, n)
        if self.journal is not None:
            self.journal.append((keys_, rows, old, changed, arr))
        if new.any():
            karr = np.array(keys_, np.uint64) if karr is None else karr
            u, c = np.unique(karr[new] >> np.uint64(32), return_counts=True)
            pv = self.per_vsid
            for v, n in zip(u.tolist(), c.tolist()):
                pv[v] = pv.get(v, 0) + n
        idx = np.flatnonzero(changed & ~new).tolist()
        if not idx:
            return changed, np.zeros(0, ">u4")
        was = np.frombuffer(b"".join([old[i] for i in idx]), DTYPE)["pa"]
        now = np.frombuffer(b"".join([rows[i] for i in idx]), DTYPE)["pa"]
        return changed, now[was != now]

    def load_rows(self, keys_: list, rows: list) -> None:
        """Records already checked (the store's own rows), into an empty map."""
        self.put_rows(keys_, rows)
        self.rewrite = {k for k, r in zip(keys_, rows) if r[18] == 1}

    # -- single records, journalled ------------------------------------------------------

    def _put(self, k: int, row: bytes | None) -> None:
        old = self.d.get(k)
        if self.journal is not None:
            self.journal.append((k, old))
        v = k >> 32
        if row is None:
            del self.d[k]
            self.per_vsid[v] -= 1
            self.rewrite.discard(k)
            return
        self.d[k] = row
        if old is None:
            self.per_vsid[v] = self.per_vsid.get(v, 0) + 1
        if row[18] == 1:
            self.rewrite.add(k)
        else:
            self.rewrite.discard(k)

    def begin(self) -> None:
        self.journal = []
        self._saved = (dict(self.per_vsid), set(self.rewrite))

    def end(self) -> None:
        self.last, self.journal = self.journal or [], None

    def rollback(self) -> None:
        journal, self.journal = self.journal or [], None
        d = self.d
        for entry in reversed(journal):
            if len(entry) == 2:
                k, old = entry
                if old is None:
                    d.pop(k, None)
                else:
                    d[k] = old
            else:
                for k, old in zip(entry[0], entry[2]):
                    if old is None:
                        d.pop(k, None)
                    else:
                        d[k] = old
        self.per_vsid, self.rewrite = self._saved
        self.last = []

    def changes(self, journal=None) -> tuple[list, list, set]:
        """What a journal changed, as ([record arrays set in bulk], [keys set one
        by one], {keys deleted}): rows that changed, final values."""
        journal = self.last if journal is None else journal
        touched: dict[int, bytes | None] = {}   # key -> its row before the batch
        arrays = []
        for entry in journal:
            if len(entry) == 2:
                touched.setdefault(entry[0], entry[1])
                continue
            keys_, rows, _old, changed, arr = entry
            if arr is None:
                arr = np.frombuffer(b"".join(rows), DTYPE)
            arrays.append(arr if changed.all() else arr[changed])
        # Single records come before a block in a batch (the block is its last
        # step), or are not in it (rewrite records): their final rows go last.
        d = self.d
        singles, deleted = [], set()
        for k, orig in touched.items():
            row = d.get(k)
            if row is None and orig is not None:
                deleted.add(k)
            elif row is not None and row != orig:
                singles.append(k)
        return arrays, singles, deleted
