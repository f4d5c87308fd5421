"""What the management-channel fuzzers share (fuzz_mgmt_client.py, fuzz_mgmt_gateway.py,
fuzz_agent.py, fuzz_policy.py).

- Log capture: structlog is configured to record every event in EVENTS (and print
  nothing), so a harness can see the "internal error" paths (request_failed,
  gateway_message_failed, mgmt_message_failed) that the code catches and logs.
- FakeRouter / FakeDealer: stand-ins for the zmq sockets only. The harnesses call the
  real MgmtServer._client / _gateway and Agent.handle, which read from and write to
  these instead of the network: the messages arrive as the bytes libFuzzer gives.
- A real nvgw-mgmt (MgmtServer on a real Store, a SQLite file in a temporary
  directory) reset to a template store before every input, so each input starts
  from the same state and a finding replays.
- Invariant helpers; a breach raises Finding, which atheris reports as a crash and
  keeps the input.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
import zmq  # noqa: E402

EVENTS: list[dict] = []


def _record(_logger, level, event_dict):
    if event_dict.get("exc_info"):
        event_dict["exc_info"] = traceback.format_exc(limit=-4)
    EVENTS.append({"level": level, **event_dict})
    raise structlog.DropEvent


structlog.configure(processors=[_record],
                    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                    cache_logger_on_first_use=False)

SCHEMA_VERSION = 1
REDBLUE = json.loads((ROOT / "config/redblue-policy.json").read_text())


class Finding(Exception):
    """An invariant was breached: atheris reports it and keeps the input."""


def check(cond, what, *context):
    if not cond:
        raise Finding(what + "".join(f"\n  {c!r}"[:2000] for c in context))


def split_messages(data: bytes, most: int = 6) -> list[bytes]:
    """One input is up to `most` messages, one per line (JSON needs no newline)."""
    return data.split(b"\n")[:most]


FRAME_SEP = b"\x1f"        # never in JSON text (a control character)


def frames_of(line: bytes) -> list[bytes]:
    """A message's frames: the JSON part, then (after each 0x1f) an extra frame in hex
    (a record block), so that its bytes cannot contain the newline that ends a message;
    what is not hex is taken as it is."""
    first, *extra = line.split(FRAME_SEP)
    out = [first]
    for e in extra:
        try:
            out.append(bytes.fromhex(e.decode("ascii")))
        except ValueError:
            out.append(e)
    return out


def store_document(store) -> dict:
    """The store's whole document (an attribute, or a method where records are kept
    apart from it), as plain JSON values."""
    doc = store.document
    if callable(doc):
        doc = doc()
    return json.loads(json.dumps(doc, default=list))


def decode_block(frame: bytes, header) -> list[dict]:
    """The lookup records of a record block frame (dataplane/recblock.py)."""
    from dataplane import recblock
    return json.loads(json.dumps(recblock.to_dicts(recblock.decode(frame, header)),
                                 default=list))


def failures(events, names=("request_failed", "gateway_message_failed",
                            "mgmt_message_failed")) -> list[dict]:
    return [e for e in events if e.get("event") in names]


def canon(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def norm(obj) -> str:
    """canon() that ignores the order of lists: a document lists routes, mappings and
    records in the order the policy's tables happen to hold them."""
    def walk(o):
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return sorted((walk(v) for v in o), key=canon)
        return o
    return canon(walk(obj))


# -- socket stand-ins -------------------------------------------------------------------

class Frame:
    """What MgmtServer reads of a received zmq.Frame: .bytes, .buffer, len() and the
    User-Id property (the ZAP handler's name for the peer's CurveZMQ key)."""

    def __init__(self, data: bytes, user: str | None = None):
        self.bytes = data
        self.buffer = memoryview(data)
        self._user = user

    def __len__(self):
        return len(self.bytes)

    def get(self, prop):
        if prop != "User-Id":
            raise zmq.ZMQError(zmq.EINVAL)
        return self._user


class FakeRouter:
    def __init__(self):
        self.inbox: list[list[Frame]] = []
        self.sent: list[list[bytes]] = []

    def recv_multipart(self, copy=True):
        if not self.inbox:
            raise zmq.Again()
        return self.inbox.pop(0)

    def send_multipart(self, frames, flags=0, copy=True, track=False):
        self.sent.append([bytes(f) for f in frames])

    def poll(self, timeout=None, flags=zmq.POLLIN):
        return zmq.POLLIN if self.inbox else 0

    def close(self, linger=None):
        pass


class FakeDealer:
    """The agent's socket: inbox holds messages as lists of frames (bytes)."""

    def __init__(self):
        self.inbox: list[list[bytes]] = []
        self.sent: list[bytes] = []

    def recv(self, flags=0):
        if not self.inbox:
            raise zmq.Again()
        return self.inbox.pop(0)[0]

    def recv_multipart(self, flags=0, copy=True, track=False):
        if not self.inbox:
            raise zmq.Again()
        frames = self.inbox.pop(0)
        return [Frame(f) for f in frames] if not copy else list(frames)

    def send(self, data, flags=0, copy=True, track=False):
        self.sent.append(bytes(data))

    def send_multipart(self, frames, flags=0, copy=True, track=False):
        self.sent.append(b"".join(bytes(f) for f in frames))

    def close(self, linger=None):
        pass


# -- a real nvgw-mgmt on a temporary SQLite file -----------------------------------------

def template_ops() -> list[list[dict]]:
    """The batches applied after loading redblue: the template store is at generation
    1 + len(template_ops()), with a changelog a gateway can be brought up to date from."""
    return [
        [{"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.8",
          "mac": "00:15:5d:b1:00:08", "pa": "192.168.1.12"}],
        [{"op": "set", "kind": "route", "rdid": 1, "prefix": "10.9.0.0/16",
          "next_hop": "172.16.1.10"}],
        [{"op": "set", "kind": "record", "vsid": 6001, "ca": "10.1.1.9",
          "mac": "00:15:5d:7e:00:09", "pa": "192.168.1.20", "method": "rewrite"}],
    ]


class MgmtWorld:
    """MgmtServer + Store as nvgw-mgmt runs them, sockets replaced by FakeRouters."""

    def __init__(self):
        from mgmt import keys
        from mgmt.server import MgmtServer
        from mgmt.store import Store

        self.Store = Store
        self.dir = Path(tempfile.mkdtemp(prefix="nvgw-fuzz-mgmt-"))
        kd = self.dir / "keys"
        keys.keygen(str(kd), keys.SERVER)
        for d in (keys.CLIENTS, keys.GATEWAYS):
            (kd / d).mkdir()
        self.template = self.dir / "template.db"
        st = Store(str(self.template))
        st.load(copy.deepcopy(REDBLUE))
        for ops in template_ops():
            st.apply(ops)
        self.template_generation = st.generation
        st.close()
        self.db = self.dir / "work.db"
        self._fresh_db()
        self.store = Store(str(self.db))
        pid = os.getpid()
        self.server = MgmtServer(self.store, f"inproc://fuzz-clients-{pid}",
                                 f"inproc://fuzz-gateways-{pid}", str(kd))
        for s in (self.server.clients, self.server.gateways):
            s.close()
        self.server.clients, self.server.gateways = FakeRouter(), FakeRouter()

    def _fresh_db(self):
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(self.db) + suffix)
            except FileNotFoundError:
                pass
        shutil.copyfile(self.template, self.db)

    def reset(self):
        """Back to the template store, no gateway sessions, no pending waits."""
        self.store.close()
        self._fresh_db()
        self.store = self.server.store = self.Store(str(self.db))
        self.server.sessions = {}
        self.server.waits = []
        self.server.clients.inbox.clear()
        self.server.clients.sent.clear()
        self.server.gateways.inbox.clear()
        self.server.gateways.sent.clear()
        EVENTS.clear()

    # -- the store's state, in memory and on disk --

    def memory_state(self):
        s = self.store
        return (s.store_id, s.generation, norm(store_document(s)))

    def disk_state(self):
        """Every row of every table of the file but `gateways` (bookkeeping)."""
        db = sqlite3.connect(str(self.db))
        try:
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return tuple((t, sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr))
                         for t in tables if t != "gateways")
        finally:
            db.close()

    def check_store_consistent(self, why: str):
        """A fresh reload of the file says what the store holds in memory, and the
        document validates on its own (and round-trips through a new Policy)."""
        from dataplane.policy import Policy
        from mgmt import store as store_mod

        mem = self.memory_state()
        again = self.Store(str(self.db))
        try:
            check((again.store_id, again.generation, norm(store_document(again))) == mem,
                  f"{why}: a reload of the store differs")
        finally:
            again.close()
        doc = store_document(self.store)
        fresh = Policy(None, store_mod._PROVIDER_MAC, store_mod._CUSTOMER_MAC)
        fresh.load_document(copy.deepcopy(doc))
        back = json.loads(json.dumps(fresh.document(), default=list))
        strip = getattr(store_mod, "_strip", None)
        if strip is not None:
            back = strip(back)
        check(norm(back) == norm(doc),
              f"{why}: the stored document does not round-trip through Policy", back, doc)


def decode_reply(raw: bytes, what: str) -> dict:
    try:
        msg = json.loads(raw)
    except ValueError:
        raise Finding(f"{what}: reply is not JSON: {raw[:200]!r}") from None
    check(isinstance(msg, dict), f"{what}: reply is not an object", raw[:200])
    check(type(msg.get("v")) is int and msg["v"] == SCHEMA_VERSION,
          f"{what}: reply without schema version {SCHEMA_VERSION}", msg)
    return msg
