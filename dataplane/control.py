"""The gateway's local control socket: a ZeroMQ REP endpoint on the control
thread that answers requests with JSON. Requests name a verb; each verb maps
to one Gateway method, the same functions the management agent calls.

An `apply` of many lookup records may carry them as a record block
(dataplane/recblock.py) in a second frame, its JSON saying {"records":
{"format", "count"}}, as nvgw-mgmt sends them: ControlClient does so from
recblock.BLOCK_MIN record sets on, so the gateway neither parses nor packs a
JSON object per record.

No input may stop the control loop (and with it the gateway): a frame of more
than MAX_REQUEST bytes is dropped by libzmq with its connection (ControlClient
refuses to send one, with a clear error), a second frame where no record block
is due, a third frame or JSON nested too deeply gets an error reply, and any
failure of a verb is one."""
from __future__ import annotations

import json
import os

import structlog
import zmq

from dataplane import ipclock, recblock
from dataplane.errors import NvgwError

log = structlog.get_logger("nvgw.control")
SCHEMA_VERSION = 1
# A frame: ~9,000 lookup records as JSON, 52,000 as a block; big policies go via nvgw-mgmt
MAX_REQUEST = 1 << 20


def claim_endpoint(endpoint: str) -> int | None:
    """The lock of an ipc endpoint (ipclock), or None for another transport; raises
    NvgwError when another gateway holds it."""
    if endpoint.startswith("ipc://"):
        return ipclock.claim(endpoint[6:], "in use by another gateway")
    return None


class ControlServer:
    def __init__(self, endpoint: str, gateway, ctx: zmq.Context | None = None,
                 lock: int | None = None):
        """lock: claim_endpoint()'s, where the caller took it before starting."""
        self.gw = gateway
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST)
        self.lock = lock        # the lock's fd while we serve an ipc path
        if self.lock is None:
            self.lock = claim_endpoint(endpoint)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError:
            self.close(unlink=False)
            raise
        self.endpoint = endpoint
        # Each verb: the request and its second frame (only an apply's record block).
        self.verbs = {
            "show": lambda req, _: self._show(req),
            "apply": lambda req, extra: {"generation": self.gw.apply(
                req.get("ops"), block=self._block(req, extra))},
            "load": lambda req, extra: {"generation": self.gw.load(
                req.get("document"), block=self._block(req, extra))},
            "migrate": lambda req, _: {"generation": self.gw.migrate(
                req.get("vsid"), req.get("ca"), req.get("pa"))},
        }

    def _show(self, req: dict):
        views = {
            "counters": lambda: self.gw.counters(),
            "ports": lambda: self.gw.counters()["ports"],
            "workers": lambda: self.gw.counters()["workers"],
            "drops": lambda: self.gw.counters()["drops"],
            "vsid": lambda: self.gw.vsid_counters(req.get("vsid")),
            "policy": lambda: {"generation": self.gw._need_policy().generation,
                               **self.gw.policy.document()},
            "neighbours": lambda: self.gw.neighbours(),
            # entries in the C tables themselves (records, neighbours)
            "tables": lambda: self.gw._need_policy() and self.gw.nv.table_counts(),
        }
        what = req.get("what", "counters")
        if not isinstance(what, str) or what not in views:
            raise NvgwError(f"show: unknown view {what!r} (known: {', '.join(views)})")
        return views[what]()

    def _block(self, req: dict, extra: bytes | None):
        """The record block an apply carries (its second frame, extra), or None."""
        if "records" not in req:
            return None
        if extra is None:
            raise NvgwError(f"{req.get('type')}: 'records' without a record block frame")
        try:
            return recblock.decode(extra, req["records"])
        except recblock.BlockError as e:
            raise NvgwError(str(e)) from None

    def handle(self, raw: bytes, extra: bytes | None = None) -> dict:
        """One request; `extra`: its second frame (an apply's record block)."""
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as e:
            return {"v": SCHEMA_VERSION, "ok": False, "error": f"malformed request: {e}"}
        except RecursionError:
            return {"v": SCHEMA_VERSION, "ok": False,
                    "error": "malformed request: JSON nested too deeply"}
        if type(req.get("v")) is not int or req.get("v") != SCHEMA_VERSION:
            return {"v": SCHEMA_VERSION, "ok": False,
                    "error": f"schema version {req.get('v')!r} not supported "
                             f"(this gateway speaks {SCHEMA_VERSION})"}
        kind = req.get("type")
        verb = self.verbs.get(kind) if isinstance(kind, str) else None
        if verb is None:
            return {"v": SCHEMA_VERSION, "ok": False,
                    "error": f"unknown request type {req.get('type')!r}"}
        if extra is not None and (kind not in ("apply", "load") or "records" not in req):
            return {"v": SCHEMA_VERSION, "ok": False, "error": "malformed request: 2 frames "
                    "(only an apply or load with 'records' has a second: its record block)"}
        try:
            return {"v": SCHEMA_VERSION, "ok": True, "result": verb(req, extra)}
        except NvgwError as e:
            log.warning("request_refused", type=req.get("type"), error=str(e))
            return {"v": SCHEMA_VERSION, "ok": False, "error": str(e)}
        except Exception as e:      # no request may take the data plane down
            log.exception("request_failed", type=req.get("type"))
            return {"v": SCHEMA_VERSION, "ok": False,
                    "error": f"internal error: {type(e).__name__}: {e}"}

    def poll(self, timeout_ms: int) -> None:
        """Serve requests that arrive within timeout_ms."""
        if self.sock.poll(timeout_ms):
            try:
                # All frames: REP can only answer once the whole request is read.
                frames = self.sock.recv_multipart()
            except zmq.ZMQError:
                return
            if len(frames) > 2:
                reply = {"v": SCHEMA_VERSION, "ok": False, "error":
                         f"malformed request: {len(frames)} frames (a request is one, an "
                         "apply with a record block two)"}
            else:
                reply = self.handle(*frames)
            try:
                self.sock.send(json.dumps(reply).encode())
            except zmq.ZMQError as e:   # the requester is gone; REP is ready again
                log.warning("reply_failed", error=str(e))

    def close(self, unlink: bool = True) -> None:
        self.sock.close()
        if self.lock is not None:
            if unlink:
                try:
                    os.unlink(self.endpoint[6:])
                except OSError:
                    pass
            os.close(self.lock)     # the lock goes with it; its file stays (no race)
            self.lock = None


def request_frames(type_: str, **fields) -> list[bytes]:
    """A request's frames: its JSON and, for an apply of BLOCK_MIN or more record
    sets or a load of a document too big for one frame, their record block (as
    nvgw-mgmt's client sends them). NvgwError names a record that cannot be
    packed, as the gateway would."""
    frames = []
    doc = fields.get("document")
    try:
        if type_ == "apply":
            split = recblock.split_records(fields.get("ops"))
            if split is not None:
                fields["ops"], block = split
                frames.append(block)
        elif type_ == "load" and isinstance(doc, dict) and isinstance(doc.get("records"), list) \
                and len(doc["records"]) >= recblock.BLOCK_MIN and \
                len(json.dumps(doc)) > MAX_REQUEST:
            # Only past one frame's limit: a gateway before session 27 takes a load
            # in one frame only.
            frames.append(recblock.encode(doc["records"], extra=()))
            fields["document"] = {**doc, "records": []}
    except recblock.BlockError as e:
        raise NvgwError(str(e)) from None
    if frames:
        fields["records"] = recblock.header(recblock.count(frames[0]))
    return [json.dumps({"v": SCHEMA_VERSION, "type": type_, **fields}).encode(), *frames]


class ControlClient:
    """Requests to a gateway's control socket; used by nvgwctl and the tests."""

    def __init__(self, endpoint: str, timeout_ms: int = 5000, ctx: zmq.Context | None = None):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.ctx = ctx or zmq.Context.instance()

    def request(self, type_: str, **fields):
        """Send one request; return its result or raise NvgwError with the gateway's reason.
        An apply's many record sets go as a record block (request_frames)."""
        frames = request_frames(type_, **fields)
        for f in frames:
            if len(f) > MAX_REQUEST:
                # The gateway would drop it with the connection; say why instead of timing out.
                raise NvgwError(f"{type_}: a request of {len(f)} bytes exceeds the control "
                                f"socket's limit of {MAX_REQUEST} bytes (send big policies "
                                "through nvgw-mgmt)")
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError as e:   # an endpoint libzmq cannot use ("foo", "tcp://x")
                raise NvgwError(f"{self.endpoint}: {e}") from None
            sock.send_multipart(frames)
            if not sock.poll(self.timeout_ms):
                raise NvgwError(f"no answer from {self.endpoint} within "
                                f"{self.timeout_ms / 1000:g} s (is nvgw-dataplane running?)")
            reply = json.loads(sock.recv())
        finally:
            sock.close()
        if not reply.get("ok"):
            raise NvgwError(reply.get("error", "request refused"))
        return reply["result"]
