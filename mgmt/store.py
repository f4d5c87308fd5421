"""The management plane's store: the desired policy, persisted in SQLite.

The store holds one policy document (the HNV objects, the format of
config/redblue-policy.json) and a generation number. Every committed change
bumps the generation by exactly one and is kept in a changelog (generation ->
the batch that made it), so a gateway that is a few generations behind gets
the missing batches in order, and one that is too far behind (or new) gets a
snapshot of the whole document.

Every change is validated first, against the current policy, by the same
model the gateways run (dataplane.policy.Policy without C tables); a change
with a problem raises PolicyError with one sentence, and nothing is written.
A change that passes is committed in one SQLite transaction.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid

from dataplane.policy import Policy, PolicyError

# The store validates without knowing the gateways' port MACs. Defaults that
# depend on them (a subnet's gateway_mac, an attachment's mac) are filled in by
# Policy with these placeholders and removed again before the document is
# stored, so each gateway fills in its own.
_PROVIDER_MAC = "fe:ff:ff:ff:ff:01"
_CUSTOMER_MAC = "fe:ff:ff:ff:ff:02"
CHANGELOG_KEEP = 1000          # batches kept for incremental resync

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changelog (
    generation INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'ops' (a batch) or 'document' (a whole policy)
    body TEXT NOT NULL,              -- JSON
    command TEXT NOT NULL,           -- what made it: apply, load, migrate
    at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    applied INTEGER,                 -- last generation it acknowledged (NULL: none)
    last_seen REAL,
    error TEXT);
"""


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
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if "store_id" not in meta:
            with self._tx():
                meta = {"store_id": uuid.uuid4().hex, "generation": "0",
                        "document": json.dumps(_empty())}
                self.db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        self.store_id: str = meta["store_id"]
        self.generation: int = int(meta["generation"])
        self.document: dict = json.loads(meta["document"])
        self.model = self._model(self.document)

    def close(self) -> None:
        self.db.close()

    # -- reading ------------------------------------------------------------------

    def changes_since(self, generation: int) -> list[tuple[int, str, object]] | None:
        """The batches after `generation`, in order, as (generation, kind, body);
        None when the changelog no longer reaches back that far (send a snapshot)."""
        if generation >= self.generation:
            return []
        rows = self.db.execute(
            "SELECT generation, kind, body FROM changelog WHERE generation > ? "
            "ORDER BY generation", (generation,)).fetchall()
        if len(rows) != self.generation - generation:
            return None
        return [(g, k, json.loads(b)) for g, k, b in rows]

    def record(self, vsid, ca) -> dict | None:
        return self.model.records.get((vsid, ca))

    # -- changes ------------------------------------------------------------------

    def apply(self, ops: list, command: str = "apply") -> int:
        """Validate a batch against the desired policy, then commit it; return the
        new generation. Raises PolicyError (nothing written) when it is invalid."""
        if not isinstance(ops, list) or not ops:
            raise PolicyError("a batch is a non-empty list of operations")
        self.model.apply(ops)       # raises PolicyError with the model as it was
        return self._commit("ops", ops, command)

    def load(self, document: dict) -> tuple[int, bool]:
        """Make the desired policy equal `document`; return (generation, changed).
        A document equal to the stored one commits nothing."""
        _no_duplicates(document)
        self.model.load_document(document)  # the document alone, then the diff
        new = _strip(self.model.document())
        if new == self.document:
            return self.generation, False
        return self._commit("document", new, "load", new), True

    def migrate(self, vsid, ca, pa) -> int:
        """Move a lookup record to a new PA (one 'set record' batch)."""
        rec = self.model.records.get((vsid, ca))
        if rec is None:
            raise PolicyError(f"no lookup record for {ca!r} in VSID {vsid!r}")
        return self.apply([{"op": "set", "kind": "record", **rec, "pa": pa}], "migrate")

    def _commit(self, kind: str, body, command: str, doc: dict | None = None) -> int:
        gen = self.generation + 1
        doc = doc if doc is not None else _strip(self.model.document())
        try:
            self._write(gen, doc, kind, body, command)
        except BaseException as e:
            self.model = self._model(self.document)     # back to what is stored
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"store {self.path}: cannot commit generation {gen} "
                                 f"({e}); nothing was changed, the generation stays "
                                 f"{self.generation}") from None
            raise
        self.generation, self.document = gen, doc
        return gen

    def _write(self, gen, doc, kind, body, command) -> None:
        with self._tx():
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'document'",
                            (json.dumps(doc),))
            self.db.execute("INSERT INTO changelog VALUES (?, ?, ?, ?, ?)",
                            (gen, kind, json.dumps(body), command, time.time()))
            self.db.execute("DELETE FROM changelog WHERE generation <= ?",
                            (gen - CHANGELOG_KEEP,))

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

    @staticmethod
    def _model(doc: dict) -> Policy:
        model = Policy(None, _PROVIDER_MAC, _CUSTOMER_MAC)
        model.load_document(doc)
        return model


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
