"""The management plane's store: the desired policy, persisted in SQLite.

The store holds one policy document (the HNV objects, the format of
config/redblue-policy.json) and a generation number. The lookup records, which
may be millions, are not in the document: they are in their own table, in
buckets of one VSID's /24 of CAs (at most 256 records of 20 bytes, the format
of dataplane/recblock.py, in one BLOB), so a change writes the buckets it
touches: a `migrate` costs the same with ten records or ten million, and a
million new records are ~4,000 rows, not a million (SQLite inserts rows at
~0.5-1 M/s; a million rows would be most of the time of the whole push). Every committed change bumps the generation by exactly
one and is kept in a changelog (generation -> the batch that made it, its
record block in a BLOB), so a gateway that is a few generations behind gets
the missing batches in order, and one that is too far behind (or new) gets a
snapshot: the document and every record as one record block.

Every change is validated first, against the current policy, by the same
model the gateways run (dataplane.policy.Policy without C tables); a change
with a problem raises PolicyError with one sentence, and nothing is written.
A change that passes is committed in one SQLite transaction.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid

import numpy as np
import structlog

from dataplane import recblock
from dataplane.policy import Policy, PolicyError

log = structlog.get_logger("nvgw.store")

# The store validates without knowing the gateways' port MACs. Defaults that
# depend on them (a subnet's gateway_mac, an attachment's mac) are filled in by
# Policy with these placeholders and removed again before the document is
# stored, so each gateway fills in its own.
_PROVIDER_MAC = "fe:ff:ff:ff:ff:01"
_CUSTOMER_MAC = "fe:ff:ff:ff:ff:02"
CHANGELOG_KEEP = 1000          # batches kept for incremental resync
BLOCKS_KEEP = 4                # ... back to the 4th latest batch with a record block
BLOCK_LOG_MAX = 100_000        # records: a bigger block is not kept in the changelog

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changelog (
    generation INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'ops' (a batch), 'document' (a whole policy), or
                                     -- 'snapshot' (its block was too big to keep:
                                     -- a gateway that missed it gets a snapshot)
    body TEXT NOT NULL,              -- JSON
    command TEXT NOT NULL,           -- what made it: apply, load, migrate
    at REAL NOT NULL,
    block BLOB);                     -- its record block (dataplane/recblock.py), if any
CREATE TABLE IF NOT EXISTS digests (  -- the history up to each generation (_chain); its own
    generation INTEGER PRIMARY KEY,   -- table, so that an older nvgw-mgmt can still write
    digest TEXT NOT NULL);            -- the changelog after a rollback
CREATE TABLE IF NOT EXISTS record_buckets (
    bucket INTEGER PRIMARY KEY,      -- VSID << 24 | CA >> 8
    rows BLOB NOT NULL);             -- its records, 20 bytes each, in CA order
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    applied INTEGER,                 -- last generation it acknowledged (NULL: none)
    last_seen REAL,
    error TEXT);
"""


def _chain(prev: str | None, gen: int, kind: str, body, block) -> str:
    """The history's digest after one more change: of the one before and the change,
    in a canonical form (keys sorted, a record block's rows in key order: the same
    change gives the same digest however the model held it). A history from a file
    without digests starts afresh."""
    h = hashlib.sha256(f"{prev or ''}|{gen}|{kind}|".encode())
    h.update(json.dumps(body, sort_keys=True).encode())
    if block is not None and len(block):
        arr = np.frombuffer(block, recblock.DTYPE)
        h.update(arr[np.argsort(recblock.keys(arr), kind="stable")].tobytes())
    return h.hexdigest()[:32]


class StoreError(Exception):
    """The SQLite file could not be written (read-only, disk full, I/O error). The
    change was rolled back: the stored policy and the generation are as before."""


class Store:
    """The desired policy and its history in one SQLite file (":memory:" for tests)."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)   # explicit transactions
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        if "block" not in [r[1] for r in self.db.execute("PRAGMA table_info(changelog)")]:
            self.db.execute("ALTER TABLE changelog ADD COLUMN block BLOB")   # older file
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if "store_id" not in meta:
            with self._tx():
                meta = {"store_id": uuid.uuid4().hex, "generation": "0",
                        "document": json.dumps(_empty())}
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        self.store_id: str = meta["store_id"]
        self.generation: int = int(meta["generation"])
        # The history up to this generation (_chain): a copy restored from a backup
        # keeps the store id, but where it goes on from there has other digests.
        self.digest: str | None = None
        self.digest = self.digest_of(self.generation)
        doc = json.loads(meta["document"])
        if doc.get("records"):
            doc = self._move_records(doc)   # a file from before the records table
        self._doc: dict = doc               # the document without its records
        self._snapshot: tuple[int, bytes] | None = None
        self._last: tuple | None = None     # the latest batch, its block always kept
        self.model = self._model(self._doc)

    def close(self) -> None:
        self.db.close()

    # -- reading ------------------------------------------------------------------

    @property
    def document(self) -> dict:
        """The whole desired policy, records included (a million records take a
        second: gateways get snapshot() instead)."""
        return {**self._doc, "records": self.model.records.values()}

    def snapshot(self) -> tuple[dict, bytes]:
        """The document without its records, and every record as one record block."""
        if self._snapshot is None or self._snapshot[0] != self.generation:
            self._snapshot = (self.generation, self.model.records.block())
        return self._doc, self._snapshot[1]

    def changes_since(self, generation: int) -> list[tuple] | None:
        """The batches after `generation`, in order, as (generation, kind, body,
        record block or None); None when the changelog no longer reaches back that
        far (send a snapshot). A 'document' batch is a whole policy: the document
        without records, and all of them in the block."""
        if generation >= self.generation:
            return []
        if generation == self.generation - 1 and self._last and self._last[0] == self.generation:
            return [self._last]             # the usual case, from memory
        rows = self.db.execute(
            "SELECT generation, kind, body, block FROM changelog WHERE generation > ? "
            "ORDER BY generation", (generation,)).fetchall()
        if len(rows) != self.generation - generation or any(r[1] == "snapshot" for r in rows):
            return None
        return [(g, k, json.loads(b), blk) for g, k, b, blk in rows]

    def digest_of(self, generation: int) -> str | None:
        """The history's digest at `generation`, None when no longer known (or from
        a file written before digests, or by an older nvgw-mgmt since)."""
        if generation == 0:
            return ""
        if generation == self.generation and self.digest is not None:
            return self.digest
        row = self.db.execute("SELECT digest FROM digests WHERE generation = ?",
                              (generation,)).fetchone()
        return row[0] if row else None

    def record(self, vsid, ca) -> dict | None:
        return self.model.records.get((vsid, ca))

    # -- changes ------------------------------------------------------------------

    def apply(self, ops: list, command: str = "apply", block=None) -> int:
        """Validate a batch (operations, then the records of `block`, a record
        block) against the desired policy, then commit it; return the new
        generation. Raises PolicyError (nothing written) when it is invalid."""
        if not isinstance(ops, list) or (not ops and (block is None or len(block) == 0)):
            raise PolicyError("a batch is a non-empty list of operations")
        self.model.apply(ops, block=block)  # raises PolicyError with the model as it was
        return self._commit("ops", ops, command, block)

    def load(self, document: dict, block=None) -> tuple[int, bool]:
        """Make the desired policy equal `document` (its records in it, or in
        `block`); return (generation, changed). A document equal to the stored one
        commits nothing."""
        _no_duplicates(document)
        self.model.load_document(document, block=block)  # the document alone, then the diff
        new = _strip(self.model.document(records=False))
        arrays, singles, deleted = self.model.records.changes()
        if new == self._doc and not any(len(a) for a in arrays) and not singles and not deleted:
            return self.generation, False
        return self._commit("document", new, "load", self.model.records.block(), new), True

    def migrate(self, vsid, ca, pa) -> int:
        """Move a lookup record to a new PA (one 'set record' batch)."""
        rec = self.model.records.get((vsid, ca))
        if rec is None:
            raise PolicyError(f"no lookup record for {ca!r} in VSID {vsid!r}")
        return self.apply([{"op": "set", "kind": "record", **rec, "pa": pa}], "migrate")

    def _commit(self, kind: str, body, command: str, block=None, doc: dict | None = None) -> int:
        gen = self.generation + 1
        if block is not None and not isinstance(block, bytes):
            block = bytes(block)
        if doc is None:
            records_only = kind == "ops" and all(
                isinstance(op, dict) and op.get("kind") == "record" for op in body)
            # Lookup records are not in the document: a batch of them alone leaves it.
            doc = self._doc if records_only else _strip(self.model.document(records=False))
        body_json = json.dumps(body)
        digest = _chain(self.digest, gen, kind, body, block)
        try:
            self._write(gen, doc, kind, body_json, command, block,
                        self.model.records.changes(), digest)
        except BaseException as e:
            self.model = self._model(self._doc)     # back to what is stored
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"store {self.path}: cannot commit generation {gen} "
                                 f"({e}); nothing was changed, the generation stays "
                                 f"{self.generation}") from None
            raise
        self.generation, self._doc, self.digest = gen, doc, digest
        self._last = (gen, kind, body, block)
        return gen

    def _write(self, gen, doc, kind, body_json, command, block, changes, digest) -> None:
        if block is not None and len(block) > BLOCK_LOG_MAX * recblock.SIZE:
            kind, block = "snapshot", None
        with self._tx():
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
            if doc != self._doc:
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'document'",
                                (json.dumps(doc),))
            self._write_buckets(changes)
            self.db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?)", (gen, digest))
            self.db.execute("DELETE FROM digests WHERE generation <= ?", (gen - CHANGELOG_KEEP,))
            self.db.execute("INSERT INTO changelog VALUES (?, ?, ?, ?, ?, ?)",
                            (gen, kind, body_json, command, time.time(), block))
            self.db.execute("DELETE FROM changelog WHERE generation <= ?",
                            (gen - CHANGELOG_KEEP,))
            if block is not None:
                # Big blocks are not kept for long: with more than BLOCKS_KEEP, the
                # batches up to the oldest block beyond them go, and a gateway that far
                # behind gets a snapshot. (The oldest of the kept ones was the bound:
                # with fewer blocks, a load dropped every batch before it.)
                self.db.execute(
                    "DELETE FROM changelog WHERE generation <= (SELECT generation FROM "
                    "changelog WHERE block IS NOT NULL ORDER BY generation DESC "
                    "LIMIT 1 OFFSET ?)", (BLOCKS_KEEP,))

    def _move_records(self, doc: dict) -> dict:
        """A store written before records had their own table: move them there."""
        arr = recblock.decode(recblock.encode(doc["records"], extra=()),
                              recblock.header(len(doc["records"])))
        doc = {**doc, "records": []}
        records = recblock.RecordMap()
        records.put_rows(recblock.keys(arr).tolist(), arr.view("V20").tolist())
        with self._tx():
            self._write_buckets(([arr], [], set()), records)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'document'",
                            (json.dumps(doc),))
        return doc

    # -- gateways -----------------------------------------------------------------

    def gateways(self) -> dict[str, dict]:
        return {r[0]: {"id": r[0], "applied": r[1], "last_seen": r[2], "error": r[3]}
                for r in self.db.execute("SELECT id, applied, last_seen, error FROM gateways")}

    def save_gateway(self, gw_id: str, applied, last_seen, error) -> None:
        """Raises sqlite3.Error when the file cannot be written (the caller decides)."""
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?)",
                            (gw_id, applied, last_seen, error))

    # -- helpers ------------------------------------------------------------------

    def _tx(self):
        return _Transaction(self.db)

    def _model(self, doc: dict) -> Policy:
        """The policy engine holding the stored policy: the document, then the rows
        of the records table (checked when they were committed)."""
        model = Policy(None, _PROVIDER_MAC, _CUSTOMER_MAC)
        # Stored under the rules of its time: what a later version refuses stays
        # (a warning names it) until a change replaces it, which is checked in full.
        model.load_document(doc, lenient=True)
        try:
            Policy(None, _PROVIDER_MAC, _CUSTOMER_MAC).load_document(doc)
        except PolicyError as e:
            log.warning("stored_policy_breaks_a_rule", db=self.path, error=str(e))
        block = b"".join(r for (r,) in self.db.execute("SELECT rows FROM record_buckets"))
        if block:
            model.load_records(np.frombuffer(block, recblock.DTYPE))
        return model

    def _write_buckets(self, changes, records=None) -> None:
        """Rewrite the buckets that hold what `changes` (RecordMap.changes()) set or
        deleted: their rows as stored, less what was deleted, with the new rows."""
        d = (records or self.model.records).d
        arrays, singles, deleted = changes
        if singles:
            arrays = arrays + [np.frombuffer(b"".join(d[k] for k in singles), recblock.DTYPE)]
        new = recblock.concat(arrays)
        dk = np.array(sorted(deleted), np.uint64)
        touched = np.union1d(recblock.keys(new) >> np.uint64(8), dk >> np.uint64(8))
        if len(touched) == 0:
            return
        if len(touched) <= 64:          # a few records: the buckets from memory
            rows = [(b, b"".join(filter(None, map(d.get, range(b << 8, (b << 8) + 256)))))
                    for b in touched.tolist()]
        else:
            # Many: the stored rows of those buckets, then the new ones (which win),
            # less the deleted; sorted and cut into buckets.
            lo, hi = int(touched[0]), int(touched[-1])
            stored = [(b, r) for b, r in self.db.execute(
                "SELECT bucket, rows FROM record_buckets WHERE bucket BETWEEN ? AND ?",
                (lo, hi))]
            tset = set(touched.tolist())
            old = np.frombuffer(b"".join(r for b, r in stored if b in tset),
                                recblock.DTYPE) if stored else np.zeros(0, recblock.DTYPE)
            both = recblock.concat([old, new])
            k = recblock.keys(both)
            order = np.argsort(k, kind="stable")
            both, k = both[order], k[order]
            last = np.ones(len(k), bool)
            last[:-1] = k[1:] != k[:-1]             # the newest row of each key
            if len(dk):
                last &= ~np.isin(k, dk)
            both, k = both[last], k[last]
            bk = k >> np.uint64(8)
            cuts = np.flatnonzero(bk[1:] != bk[:-1]) + 1
            raw = both.tobytes()
            starts = [0] + cuts.tolist()
            ends = cuts.tolist() + [len(both)]
            size = recblock.SIZE
            rows = [(b, raw[s * size:e * size]) for b, s, e in
                    zip(bk[starts].tolist() if len(both) else [], starts, ends)]
            present = {b for b, _ in rows}
            rows += [(b, b"") for b in touched.tolist() if b not in present]
        self.db.executemany("DELETE FROM record_buckets WHERE bucket = ?",
                            ((b,) for b, r in rows if not r))
        self.db.executemany("INSERT OR REPLACE INTO record_buckets VALUES (?, ?)",
                            ((b, r) for b, r in rows if r))


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        # After an I/O error or a full disk SQLite may already have rolled the
        # transaction back by itself (a ROLLBACK then fails and would hide the real
        # error), or a failed COMMIT may leave it open (the next BEGIN would then fail
        # for ever). So: commit; on any failure roll back only what is still open, and
        # let the first error through.
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _no_duplicates(doc) -> None:
    """A document names each lookup record once (Policy would keep the last silently)."""
    seen = set()
    recs = doc.get("records", []) if isinstance(doc, dict) else []
    for r in recs if isinstance(recs, list) else []:
        key = (r.get("vsid"), r.get("ca")) if isinstance(r, dict) else None
        if key is not None and key in seen:
            raise PolicyError(f"duplicate lookup record: CA {key[1]} appears twice in "
                              f"VSID {key[0]}")
        seen.add(key)


def _empty() -> dict:
    return {"provider": None, "routing_domains": [], "records": [], "neighbours": []}


def _strip(doc: dict) -> dict:
    """Remove the placeholder MACs (see _PROVIDER_MAC) and normalise the document."""
    for d in doc["routing_domains"]:
        for s in d["subnets"]:
            if s.get("gateway_mac") == _PROVIDER_MAC:
                del s["gateway_mac"]
            if s.get("flowid") is None:
                s.pop("flowid", None)
        for a in d["attachments"]:
            if a.get("mac") == _CUSTOMER_MAC:
                del a["mac"]
    # Round-trip through JSON so in-memory and stored documents compare equal.
    return json.loads(json.dumps(doc))
