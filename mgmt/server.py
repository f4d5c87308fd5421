"""nvgw-mgmt: the management process.

One process, one thread, one zmq.Poller over three sockets:
- a ROUTER for clients (nvgwctl --mgmt, mgmt.client.MgmtClient): requests
  that read or change the desired policy, answered with JSON;
- a ROUTER for gateways' agents (dataplane/agent.py, DEALER sockets): hello,
  heartbeats and acks in; snapshots, batches and heartbeats out;
- the ZAP handler (inproc://zeromq.zap.01) that authenticates every CurveZMQ
  handshake against the allow-list of its socket's domain (clients or
  gateways). An unknown key is refused during the handshake and logged: it
  never gets to send a message.

Every message is a JSON object with "type" and "v" (schema version). A
malformed or unknown message gets an error reply and changes nothing. A
message that carries many lookup records (apply, load; batches and snapshots
to gateways) says {"records": {"format": "nvgw-records/1", "count": N}} and
has them as a record block (dataplane/recblock.py) in the next frame: 20
bytes a record instead of ~140 bytes of JSON, checked without a Python object
per record.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field

import structlog
import zmq

from dataplane import ipclock, recblock
from dataplane import log as logsetup
from dataplane.errors import NvgwError
from dataplane.policy import PolicyError
from mgmt import keys
from mgmt.store import Store, StoreError

log = structlog.get_logger("nvgw.mgmt")
SCHEMA_VERSION = 1
# Limits on what a peer can make this process hold (see README, "Limits"). libzmq
# checks MAXMSGSIZE before it allocates a frame and drops the connection of a
# peer that sends a bigger one; the client library reports that as "closed the
# connection". RCVHWM bounds the requests queued per connection while one is
# being served (a client flooding requests is slowed down, not buffered).
MAX_MESSAGE = 256 << 20        # client requests: a whole policy of ~2M records fits
MAX_GATEWAY_MESSAGE = 1 << 20  # gateways send hello/heartbeat/ack/nack only
CLIENT_RCVHWM = 100
# A request's frames before its message: the ROUTER's route, a REQ socket's empty
# delimiter, a proxy's routes. MAXMSGSIZE limits each frame, not their number, and
# a `wait` keeps its envelope for up to an hour: more or bigger is refused.
MAX_ENVELOPE_FRAMES = 8
MAX_ENVELOPE_BYTES = 1024
MAX_WAITS = 1024               # pending `wait` requests, all clients together
MAX_WAITS_PER_CONNECTION = 16
# nvgwctl opens a connection per request: per client key too, so that one client
# cannot hold all MAX_WAITS (every other client's wait refused for up to an hour).
MAX_WAITS_PER_CLIENT = 256
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
MAX_INCREMENTAL = 64           # more batches behind than this: send a snapshot
DEFAULT_CLIENTS = "ipc:///run/nvgw/mgmt.sock"
DEFAULT_GATEWAYS = "tcp://0.0.0.0:7701"
DEFAULT_DB = "/var/lib/nvgw/mgmt.db"
DEFAULT_KEYS = "/etc/nvgw/keys"


class RequestError(NvgwError):
    """A client request is malformed or cannot be served; nothing changed."""


@dataclass
class Session:
    """A gateway as this process knows it since the gateway's last hello."""
    id: str
    route: bytes | None = None       # ROUTER identity of its connection
    applied: int | None = None       # last generation it acknowledged
    sent: int | None = None          # last generation sent (None: needs a snapshot)
    snapshot_failed: bool = False
    force: bool = False              # next snapshot replaces a newer one (see _gw_hello)
    last_seen: float = 0.0           # monotonic
    busy_until: float = 0.0          # applying a big batch: silent until then is fine
    alive: bool = False
    error: str | None = None


@dataclass
class Wait:
    envelope: list
    generation: int
    deadline: float
    min_gateways: int = 0
    user: str | None = None         # the client's key name (ZAP User-Id)
    started: float = field(default_factory=time.monotonic)


def _check(msg, fields: dict) -> None:
    for name, typ in fields.items():
        if name not in msg:
            raise RequestError(f"{msg.get('type')}: missing field {name!r}")
        if not isinstance(msg[name], typ) or (typ is int and isinstance(msg[name], bool)):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise RequestError(f"{msg.get('type')}: field {name!r} must be {want}")


def decode(raw: bytes) -> dict:
    """A message as a dict with a known schema version, or RequestError."""
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"malformed message: not JSON ({e})") from None
    except RecursionError:      # e.g. b"[" * 100000: refused, never a crash
        raise RequestError("malformed message: JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise RequestError("malformed message: not a JSON object")
    # `type(...) is int`: true == 1 and 1.0 == 1 in Python, but they are not version 1.
    if type(msg.get("v")) is not int or msg.get("v") != SCHEMA_VERSION:
        raise RequestError(f"schema version {msg.get('v')!r} not supported "
                           f"(nvgw-mgmt speaks {SCHEMA_VERSION})")
    if not isinstance(msg.get("type"), str):
        raise RequestError("malformed message: no 'type'")
    return msg


def encode(msg: dict) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, **msg}).encode()


def block_of(msg: dict, frames: list):
    """The record block a message says it carries (a numpy array over the frame),
    or None; RequestError when the frames and the message disagree."""
    if "records" not in msg:
        if frames:
            raise RequestError(f"{msg['type']}: {len(frames) + 1} frames, but no 'records' "
                               "says what the extra ones are")
        return None
    if len(frames) != 1:
        raise RequestError(f"{msg['type']}: 'records' needs the record block as the one "
                           f"frame after the message ({len(frames)} follow)")
    try:
        return recblock.decode(frames[0].buffer, msg["records"])
    except recblock.BlockError as e:
        raise RequestError(f"{msg['type']}: {e}") from None


def _says_records(frame) -> bool:
    """Whether a frame is a message that announces a record block after it (any
    size the socket let in: a policy of many routes is more than a MiB of JSON)."""
    if not frame.bytes[:1] == b"{":
        return False
    try:
        msg = json.loads(frame.bytes)
    except (ValueError, RecursionError):
        return False
    return isinstance(msg, dict) and "records" in msg


# A gateway applies about a million records a second, far more on a quiet machine;
# while it applies a block it sends nothing. Grace: this much per record.
BUSY_PER_RECORD = 5e-6


class MgmtServer:
    def __init__(self, store: Store, clients: str, gateways: str, keys_dir: str,
                 heartbeat: float = 1.0, ctx: zmq.Context | None = None,
                 max_message: int = MAX_MESSAGE):
        self.store = store
        self.max_message = max_message
        self.heartbeat = heartbeat
        self.dead_after = 3 * heartbeat
        self.keys_dir = keys_dir
        self.ctx = ctx or zmq.Context()
        pair = keys.load_pair(os.path.join(keys_dir, keys.SERVER + ".key_secret"))
        for d in (keys.CLIENTS, keys.GATEWAYS):
            if not os.path.isdir(os.path.join(keys_dir, d)):
                raise NvgwError(f"no allow-list directory {os.path.join(keys_dir, d)} "
                                f"(put the public keys of trusted {d} there)")
        self.sessions: dict[str, Session] = {}
        self.waits: list[Wait] = []
        self.endpoints = {"clients": clients, "gateways": gateways}
        # Before any bind: a bind would take over another nvgw-mgmt's ipc path.
        self.locks = []
        try:
            for ep in (clients, gateways):
                if ep.startswith("ipc://"):
                    self.locks.append(ipclock.claim(ep[6:], f"{ep}: in use by another "
                                                    "nvgw-mgmt"))
        except BaseException:
            for fd in self.locks:
                os.close(fd)
            raise
        self.clients = self.gateways = None
        # The ZAP handler first: a CURVE socket without one accepts anyone.
        self.zap = self.ctx.socket(zmq.REP)
        self.zap.linger = 0
        try:
            self.zap.bind(ZAP_ENDPOINT)
            self.clients = self._router(clients, pair, keys.CLIENTS, max_message,
                                        CLIENT_RCVHWM)
            self.gateways = self._router(gateways, pair, keys.GATEWAYS, MAX_GATEWAY_MESSAGE)
        except BaseException:
            self.close()        # what was bound, and the locks
            raise
        self.gateways.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.poller = zmq.Poller()
        for s in (self.zap, self.clients, self.gateways):
            self.poller.register(s, zmq.POLLIN)
        # Gateways known from earlier runs are listed, as down, until they say hello.
        for gid, row in store.gateways().items():
            self.sessions[gid] = Session(gid, applied=row["applied"], sent=None,
                                         error=row["error"])
        self._next_tick = 0.0
        self._frames: list = []          # the frames after a request's message

    def _router(self, endpoint: str, pair, domain: str, max_message: int,
                rcvhwm: int | None = None) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        keys.curve_server(sock, pair, domain)
        sock.bind(endpoint)             # an ipc path's directory: made by its claim
        if endpoint.endswith(":0") or endpoint.endswith(":*"):
            self.endpoints[domain] = sock.last_endpoint.decode()
        return sock

    # -- the loop -----------------------------------------------------------------

    def poll(self, timeout_ms: int) -> None:
        now = time.monotonic()
        wait_ms = max(0, min(timeout_ms, int((self._next_tick - now) * 1000) + 1))
        for sock, _ in self.poller.poll(wait_ms):
            if sock is self.zap:
                self._zap()
            elif sock is self.clients:
                self._client()
            else:
                self._gateway()
        if time.monotonic() >= self._next_tick:
            self._tick()
            self._next_tick = time.monotonic() + min(0.2, self.heartbeat / 2)

    def close(self) -> None:
        bound = [s for s in (self.clients, self.gateways) if s is not None]
        paths = [s.last_endpoint.decode()[6:] for s in bound
                 if s.last_endpoint.startswith(b"ipc://")]
        for s in bound + [self.zap]:
            s.close()
        for path in paths:      # ours: the locks are held until here
            try:
                os.unlink(path)
            except OSError:
                pass
        for fd in self.locks:
            os.close(fd)
        self.locks = []

    # -- authentication -------------------------------------------------------------

    def _zap(self) -> None:
        frames = self.zap.recv_multipart()
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        creds = frames[6:]
        domain_s = domain.decode(errors="replace")
        status, text, user = b"400", b"unknown key", b""
        if mechanism != b"CURVE" or not creds:
            text = b"CURVE required"
            key = None
        else:
            key = zmq.utils.z85.encode(creds[0])
            allowed = (keys.allow_list(os.path.join(self.keys_dir, domain_s))
                       if domain_s in (keys.CLIENTS, keys.GATEWAYS) else {})
            if key in allowed:
                status, text, user = b"200", b"OK", allowed[key].encode()
        if status == b"200":
            log.debug("auth_ok", domain=domain_s, name=user.decode(), address=address.decode())
        else:
            log.warning("auth_refused", domain=domain_s, address=address.decode(errors="replace"),
                        mechanism=mechanism.decode(errors="replace"),
                        key=key.decode() if key else None, reason=text.decode())
        self.zap.send_multipart([version, request_id, status, text, user, b""])

    # -- clients ----------------------------------------------------------------------

    def _client(self) -> None:
        try:
            frames = self.clients.recv_multipart(copy=False)
        except zmq.ZMQError:
            return
        user = frames[-1].get("User-Id") if frames else None
        # [envelope..., message]; or [envelope..., message, record block] when the
        # message (a JSON object of its own) says it carries records.
        n = len(frames) - 1
        if n >= 2 and _says_records(frames[-2]):
            n -= 1
        envelope = [f.bytes for f in frames[:n]]
        body = frames[n:]
        if n > MAX_ENVELOPE_FRAMES or sum(map(len, envelope)) > MAX_ENVELOPE_BYTES:
            # the route (and a REQ socket's delimiter) only, to answer at all
            route = envelope[:2] if len(envelope) > 1 and envelope[1] == b"" else envelope[:1]
            error = (f"{n} frames before the message ({sum(map(len, envelope))} bytes): "
                     f"at most {MAX_ENVELOPE_FRAMES} of {MAX_ENVELOPE_BYTES} bytes in all")
            log.warning("request_refused", client=user, error=error)
            self._reply(route, {"ok": False, "error": error})
            return
        try:
            msg = decode(body[0].bytes)
            handler = getattr(self, f"_req_{msg['type']}", None)
            if handler is None:
                raise RequestError(f"unknown request type {msg['type']!r} (known: apply, "
                                   "load, migrate, show, wait)")
            self._frames = body[1:]
            if msg["type"] not in ("apply", "load") and "records" in msg:
                raise RequestError(f"{msg['type']}: takes no record block")
            if self._frames:       # a block that decodes: its records take a while
                self._busy(len(block_of(msg, self._frames)))
            result = handler(msg, envelope, user)
        except (RequestError, PolicyError, StoreError) as e:
            log.warning("request_refused", client=user, error=str(e))
            self._reply(envelope, {"ok": False, "error": str(e)})
            return
        except Exception as e:          # no request may take nvgw-mgmt down
            log.exception("request_failed", client=user)
            self._reply(envelope, {"ok": False,
                                   "error": f"internal error: {type(e).__name__}: {e}"})
            return
        if result is not None:          # None: answered later (wait)
            self._reply(envelope, {"ok": True, "result": result})

    def _reply(self, envelope: list, msg: dict) -> None:
        try:
            self.clients.send_multipart(envelope + [encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass                        # the client went away

    def _req_apply(self, msg, _env, user):
        _check(msg, {"ops": list})
        block = block_of(msg, self._frames)
        gen = self.store.apply(msg["ops"], block=block)
        log.info("apply", client=user, ops=len(msg["ops"]),
                 records=0 if block is None else len(block), generation=gen)
        self._changed()
        return {"generation": gen}

    def _req_load(self, msg, _env, user):
        _check(msg, {"document": dict})
        gen, changed = self.store.load(msg["document"], block=block_of(msg, self._frames))
        log.info("load", client=user, generation=gen, changed=changed,
                 records=len(self.store.model.records))
        if changed:
            self._changed()
        return {"generation": gen, "changed": changed}

    def _req_migrate(self, msg, _env, user):
        _check(msg, {"vsid": int, "ca": str, "pa": str})
        old = self.store.record(msg["vsid"], msg["ca"])
        gen = self.store.migrate(msg["vsid"], msg["ca"], msg["pa"])
        log.info("migrate", client=user, vsid=msg["vsid"], ca=msg["ca"],
                 old_pa=old["pa"], pa=msg["pa"], generation=gen)
        self._changed()
        return {"generation": gen}

    def _req_show(self, msg, _env, _user):
        what = msg.get("what")
        if what == "policy":
            return {"generation": self.store.generation, **self.store.document}
        if what == "gateways":
            return self.gateway_rows()
        if what == "generation":
            return {"generation": self.store.generation, "store": self.store.store_id}
        raise RequestError(f"show: unknown view {what!r} (known: policy, gateways, generation)")

    def _req_wait(self, msg, envelope, user):
        gen = msg.get("generation", self.store.generation)
        timeout = msg.get("timeout", 10)
        min_gw = msg.get("min_gateways", 0)
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise RequestError("wait: 'generation' must be a non-negative integer")
        if gen > self.store.generation:
            raise RequestError(f"wait: generation {gen} does not exist yet "
                               f"(the store is at {self.store.generation})")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
                not 0 <= timeout <= 3600:
            raise RequestError("wait: 'timeout' must be 0..3600 seconds")
        if not isinstance(min_gw, int) or isinstance(min_gw, bool) or min_gw < 0:
            raise RequestError("wait: 'min_gateways' must be a non-negative integer")
        # Each pending wait is held until it is answered: bound them, so a client
        # flooding `wait` gets a refusal instead of growing this process.
        mine = sum(1 for w in self.waits if w.envelope[:1] == envelope[:1])
        theirs = sum(1 for w in self.waits if w.user == user)
        if mine >= MAX_WAITS_PER_CONNECTION or theirs >= MAX_WAITS_PER_CLIENT or \
                len(self.waits) >= MAX_WAITS:
            raise RequestError(f"wait: too many pending waits ({mine} on this connection, "
                               f"{theirs} of this client key, {len(self.waits)} in all; the "
                               f"limits are {MAX_WAITS_PER_CONNECTION}, "
                               f"{MAX_WAITS_PER_CLIENT} and {MAX_WAITS})")
        log.info("wait", client=user, generation=gen, timeout=timeout)
        self.waits.append(Wait(envelope, gen, time.monotonic() + timeout, min_gw, user))
        self._check_waits()
        return None

    def _check_waits(self) -> None:
        now = time.monotonic()
        keep = []
        for w in self.waits:
            live = [s for s in self.sessions.values() if s.alive]
            behind = [s for s in live if w.generation and
                      (s.applied is None or s.applied < w.generation)]
            if not behind and len(live) >= w.min_gateways:
                self._reply(w.envelope, {"ok": True, "result": {
                    "generation": w.generation, "gateways": self.gateway_rows(),
                    "waited": round(now - w.started, 3)}})
            elif now >= w.deadline:
                why = ", ".join(f"{s.id} at {s.applied}" + (f" ({s.error})" if s.error else "")
                                for s in behind)
                if len(live) < w.min_gateways:
                    why = (why + "; " if why else "") + \
                        f"{len(live)} of {w.min_gateways} gateways connected"
                self._reply(w.envelope, {"ok": False, "error":
                            f"timed out waiting for generation {w.generation}: {why}"})
            else:
                keep.append(w)
        self.waits = keep

    def gateway_rows(self) -> list[dict]:
        now = time.monotonic()
        gen = self.store.generation
        return [{"id": s.id, "state": "up" if s.alive else "down", "applied": s.applied,
                 "lag": None if s.applied is None else gen - s.applied,
                 "last_seen": round(now - s.last_seen, 3) if s.last_seen else None,
                 "error": s.error}
                for s in sorted(self.sessions.values(), key=lambda s: s.id)]

    # -- gateways -----------------------------------------------------------------------

    def _gateway(self) -> None:
        try:
            frames = self.gateways.recv_multipart(copy=False)
        except zmq.ZMQError:
            return
        if len(frames) != 2:
            error = f"a gateway message is one frame ({len(frames) - 1} came)"
            log.warning("gateway_message_refused", gateway=frames[-1].get("User-Id"),
                        error=error)
            if len(frames) > 2:
                self._send(frames[0].bytes, {"type": "error", "error": error})
            return
        route, name = frames[0].bytes, frames[1].get("User-Id")
        try:
            msg = decode(frames[1].bytes)
            if msg.get("gateway") != name:
                raise RequestError(f"gateway id {msg.get('gateway')!r} does not match its "
                                   f"key {name!r}")
            handler = getattr(self, f"_gw_{msg['type']}", None)
            if handler is None:
                raise RequestError(f"unknown message type {msg['type']!r}")
            handler(msg, route)
        except RequestError as e:
            log.warning("gateway_message_refused", gateway=name, error=str(e))
            self._send(route, {"type": "error", "error": str(e)})
        except Exception as e:          # no message may take nvgw-mgmt down
            log.exception("gateway_message_failed", gateway=name)
            self._send(route, {"type": "error",
                               "error": f"internal error: {type(e).__name__}: {e}"})

    def _send(self, route: bytes, msg: dict, session: Session | None = None,
              block=None) -> bool:
        frames = [route, encode(msg)]
        if block is not None:
            frames.append(block)
        try:
            self.gateways.send_multipart(frames, zmq.NOBLOCK, copy=block is None)
            if session is not None and block is not None:
                session.busy_until = time.monotonic() + BUSY_PER_RECORD * (
                    len(block) // recblock.SIZE)
            return True
        except zmq.ZMQError as e:       # gone (EHOSTUNREACH) or full (EAGAIN)
            if session is not None:
                log.warning("gateway_send_failed", gateway=session.id, error=str(e))
                session.alive, session.sent = False, None
            return False

    def _session(self, msg: dict, route: bytes) -> tuple[Session, bool]:
        s = self.sessions.get(msg["gateway"])
        new = s is None or not s.alive or s.route != route
        if s is None:
            s = self.sessions[msg["gateway"]] = Session(msg["gateway"])
        s.route, s.last_seen = route, time.monotonic()
        if not s.alive:
            s.alive = True
        return s, new

    def _gw_hello(self, msg, route, why="gateway_hello"):
        applied = msg.get("applied")
        if applied is not None and (not isinstance(applied, int) or isinstance(applied, bool)
                                    or applied < 0):
            raise RequestError("hello: 'applied' must be a non-negative integer or null")
        s, _ = self._session(msg, route)
        same_store = msg.get("store") == self.store.store_id
        s.applied = applied if same_store else None
        s.force = False
        if s.applied is not None and s.applied > self.store.generation:
            # Ahead of this store (it was restored from an older copy): the store is
            # the desired policy, so the gateway gets it whole, marked `force` so the
            # agent takes a snapshot older than what it has.
            log.warning("gateway_ahead", gateway=s.id, applied=applied,
                        generation=self.store.generation)
            s.applied, s.force = None, True
        elif s.applied is not None and isinstance(msg.get("digest"), str) and \
                self.store.digest_of(s.applied) not in (None, msg["digest"]):
            # The same generation number from another history: the store was restored
            # from an older copy and went on differently meanwhile. Whole, again.
            log.warning("gateway_diverged", gateway=s.id, applied=applied,
                        generation=self.store.generation)
            s.applied, s.force = None, True
        s.sent = s.applied
        s.snapshot_failed = False
        log.info(why, gateway=s.id, applied=applied, same_store=same_store,
                 generation=self.store.generation)
        self._persist(s)
        self._sync(s)
        self._send(route, {"type": "heartbeat", "generation": self.store.generation,
                           "store": self.store.store_id}, s)
        self._check_waits()

    def _gw_heartbeat(self, msg, route):
        s = self.sessions.get(msg.get("gateway"))
        if s is None or not s.alive or s.route != route:
            # A gateway this process has not greeted (it restarted): resync from
            # what the gateway says it has.
            return self._gw_hello(msg, route, why="gateway_resync")
        s.last_seen = time.monotonic()
        self._send(route, {"type": "heartbeat", "generation": self.store.generation,
                           "store": self.store.store_id}, s)
        self._sync(s)

    def _gw_ack(self, msg, route):
        _check(msg, {"generation": int})
        s, new = self._session(msg, route)
        if new:
            return self._gw_hello({**msg, "applied": msg["generation"],
                                   "store": msg.get("store"), "digest": msg.get("digest")},
                                  route, why="gateway_resync")
        gen = msg["generation"]
        if gen < 0 or gen > self.store.generation or s.sent is None or gen > s.sent:
            # Never sent to it: a replayed or forged ack must not make `wait` succeed.
            raise RequestError(f"ack for generation {gen}, which was not sent to this "
                               f"gateway (sent {s.sent}, store at {self.store.generation})")
        if s.applied is not None and gen < s.applied:
            log.warning("gateway_stale_ack", gateway=s.id, generation=gen, applied=s.applied)
            return                      # out of order: keep the newer one
        s.applied, s.error, s.snapshot_failed = gen, None, False
        s.force = False
        log.info("gateway_ack", gateway=s.id, generation=s.applied,
                 lag=self.store.generation - s.applied)
        self._persist(s)
        self._check_waits()

    def _gw_nack(self, msg, route):
        _check(msg, {"error": str})
        s, _ = self._session(msg, route)
        s.error = msg["error"]
        log.warning("gateway_nack", gateway=s.id, generation=msg.get("generation"),
                    snapshot=bool(msg.get("snapshot")), error=s.error)
        if msg.get("snapshot"):
            # The whole policy does not fit that gateway: say so, retry on the next change.
            s.snapshot_failed, s.sent = True, self.store.generation
        else:
            s.sent = None
        self._persist(s)
        self._sync(s)
        self._check_waits()

    def _sync(self, s: Session) -> None:
        """Bring a live gateway to the store's generation: batches in order, or a snapshot."""
        gen = self.store.generation
        if not s.alive or s.route is None or (s.sent is not None and s.sent >= gen):
            return
        if gen == 0:
            return          # nothing was ever committed: no opinion on the gateway's policy
        changes, ok = None, True
        if s.sent is not None and not s.snapshot_failed and gen - s.sent <= MAX_INCREMENTAL:
            changes = self.store.changes_since(s.sent)
        if changes is None:
            doc, block = self.store.snapshot()
            snap = {"type": "snapshot", "store": self.store.store_id, "generation": gen,
                    "digest": self.store.digest, "document": doc,
                    "records": recblock.header(len(block) // recblock.SIZE)}
            if s.force:
                snap["force"] = True
            ok = self._send(s.route, snap, s, block)
            if ok:
                log.info("snapshot_sent", gateway=s.id, generation=gen,
                         records=len(block) // recblock.SIZE)
        else:
            for g, kind, body, block in changes:
                key = "ops" if kind == "ops" else "document"
                msg = {"type": "batch", "store": self.store.store_id, "generation": g,
                       "digest": self.store.digest_of(g), key: body}
                if block is not None:
                    msg["records"] = recblock.header(len(block) // recblock.SIZE)
                ok = self._send(s.route, msg, s, block)
                if not ok:
                    return
                log.info("batch_sent", gateway=s.id, generation=g, kind=kind,
                         records=0 if block is None else len(block) // recblock.SIZE)
        if ok:
            s.sent = gen

    def _busy(self, records: int) -> None:
        """About to check and store many records, deaf meanwhile: tell the gateways,
        so they do not take the silence for a lost nvgw-mgmt (and say hello, and
        get the batch sent twice)."""
        busy = round(records * BUSY_PER_RECORD, 3)
        for s in self.sessions.values():
            if s.alive and s.route is not None:
                self._send(s.route, {"type": "heartbeat", "generation": self.store.generation,
                                     "store": self.store.store_id, "busy": busy}, s)

    def _changed(self) -> None:
        for s in self.sessions.values():
            if s.snapshot_failed:
                s.sent, s.snapshot_failed = None, False
            self._sync(s)

    def _persist(self, s: Session) -> None:
        # Only bookkeeping (the `gateways` view after a restart): a store that cannot
        # be written (read-only, disk full) must not stop gateways from being served.
        try:
            self.store.save_gateway(s.id, s.applied, time.time(), s.error)
        except sqlite3.Error as e:
            log.warning("store_write_failed", what="gateway", gateway=s.id, error=str(e))

    def _tick(self) -> None:
        # What gateways sent while this process was busy (a big commit) is read
        # before anyone is called silent: no resync storm after long work.
        for _ in range(1000):
            if not self.gateways.poll(0):
                break
            self._gateway()
        now = time.monotonic()
        for s in self.sessions.values():
            if s.alive and now - max(s.last_seen, s.busy_until) > self.dead_after:
                s.alive, s.sent = False, None
                log.warning("gateway_lost", gateway=s.id, applied=s.applied,
                            silent=round(now - s.last_seen, 3))
        self._check_waits()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="nvgw-mgmt",
        description="Hold the desired policy (SQLite) and push it to nvgw gateways over "
                    "ZeroMQ with CurveZMQ.")
    ap.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    ap.add_argument("--clients", default=DEFAULT_CLIENTS, metavar="ENDPOINT",
                    help=f"endpoint for nvgwctl and API clients (default {DEFAULT_CLIENTS})")
    ap.add_argument("--gateways", default=DEFAULT_GATEWAYS, metavar="ENDPOINT",
                    help=f"endpoint for gateways' agents (default {DEFAULT_GATEWAYS})")
    ap.add_argument("--keys", default=DEFAULT_KEYS, metavar="DIR",
                    help="server.key_secret, clients/*.key and gateways/*.key "
                         f"(default {DEFAULT_KEYS})")
    ap.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                    help="a gateway silent for 3 heartbeats is down (default 1; keep it "
                         "at the gateways' agent.heartbeat_ms or more)")
    ap.add_argument("--max-message", type=int, default=MAX_MESSAGE, metavar="BYTES",
                    help="largest client request; a bigger one closes that client's "
                         f"connection (default {MAX_MESSAGE >> 20} MiB)")
    ap.add_argument("--log-level", default="info", type=str.lower, choices=logsetup.LEVELS)
    args = ap.parse_args(argv)
    if not 0.05 <= args.heartbeat <= 60:
        ap.error("--heartbeat must be 0.05..60 seconds (as the agents' heartbeat_ms)")
    if args.max_message < 1 << 16:
        ap.error("--max-message must be at least 65536 bytes")
    logsetup.setup(args.log_level)

    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    try:                            # one nvgw-mgmt per store: held until exit
        if args.db != ":memory:":
            ipclock.claim(args.db, "in use by another nvgw-mgmt")
        store = Store(args.db)
    except Exception as e:          # sqlite3.Error, OSError, a corrupt document
        print(f"nvgw-mgmt: cannot open {args.db}: {e}", file=sys.stderr)
        return 2
    try:
        server = MgmtServer(store, args.clients, args.gateways, args.keys, args.heartbeat,
                            max_message=args.max_message)
    except (NvgwError, zmq.ZMQError, OSError) as e:
        print(f"nvgw-mgmt: {e}", file=sys.stderr)
        store.close()
        return 2
    log.info("ready", clients=server.endpoints["clients"],
             gateways=server.endpoints["gateways"], db=args.db,
             generation=store.generation, store=store.store_id)
    try:
        while not stopping:
            server.poll(100)
    finally:
        server.close()
        store.close()
    log.info("stopped", signal=stopping[0] if stopping else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
