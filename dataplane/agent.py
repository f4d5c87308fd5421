"""The management agent inside nvgw-dataplane.

A DEALER socket (CurveZMQ client) on the control thread connects to
nvgw-mgmt when the configuration has an [agent] section. It says hello with
the management generation it has applied (none at start: the gateway's own
policy file, if any, is not a management generation) and the store it came
from; nvgw-mgmt answers with a snapshot (the whole document) or the batches
it is missing, in order. Each is applied to the C tables whole or not at all
through Gateway.load / Gateway.apply with the management generation, and
acknowledged with that generation. A batch that fails is reported (nack) and
the agent waits for a snapshot.

Generations only move forward: a batch is applied only when it is exactly the
next generation of the store the agent follows; one already applied (replayed)
is ignored, one that skips ahead is refused (nack) and the agent waits for a
snapshot. A snapshot older than what is applied, from the same store, is
ignored unless nvgw-mgmt marks it `force` (its store went back in time).
Nothing nvgw-mgmt sends can stop the control loop: a message that fails in an
unexpected way is logged and skipped.

Many lookup records come as a record block (dataplane/recblock.py) in the
frame after the message (it says {"records": {"format", "count"}}): they are
checked on the array and written to the C tables in one call
(Nvgre.record_set_bulk), whole or not at all.

Heartbeats both ways: the agent sends one every heartbeat_ms; when nvgw-mgmt
has been silent for three, it is considered lost (logged) and the agent
keeps saying hello until it answers. Meanwhile the workers forward on the last
policy. A policy changed behind the agent's back (the local control socket)
is noticed at the next heartbeat or batch and replaced by a snapshot; while
it waits for one, the agent says it has no generation applied. Time spent
applying a message is not silence of nvgw-mgmt (its heartbeats wait in the
socket meanwhile): a long apply does not make the agent say hello again and
so cause a resend.
"""
from __future__ import annotations

import json
import time

import structlog
import zmq
import zmq.auth

from dataplane import recblock
from dataplane.errors import NvgwError

log = structlog.get_logger("nvgw.agent")
SCHEMA_VERSION = 1
MAX_MESSAGE = 1 << 30


class Agent:
    def __init__(self, cfg: dict, gateway, ctx: zmq.Context | None = None):
        self.gw = gateway
        self.id = cfg["id"]
        self.endpoint = cfg["endpoint"]
        self.heartbeat = cfg["heartbeat_ms"] / 1000.0
        self.dead_after = 3 * self.heartbeat
        # A batch that waits for a moved record's next hop sends no heartbeat
        # meanwhile: at most one interval, so nvgw-mgmt does not call us lost.
        if gateway.policy is not None:
            gateway.policy.resolve_wait = min(gateway.policy.resolve_wait, self.heartbeat)
        self.ctx = ctx or zmq.Context.instance()
        public, secret = zmq.auth.load_certificate(cfg["key"])
        server, _ = zmq.auth.load_certificate(cfg["server_key"])
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.IMMEDIATE, 1)      # never queue for a dead connection
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
        self.sock.curve_serverkey = server
        self.sock.connect(self.endpoint)
        self.applied: int | None = None     # management generation applied
        self.store: str | None = None       # the store it came from
        self.digest: str | None = None      # its history there (nvgw-mgmt's store._chain)
        self.our_changes: int | None = None     # the policy's change count after our last
        self.awaiting_snapshot = False
        self.connected = False
        self.last_heard = time.monotonic()
        self.quiet_until = 0.0              # nvgw-mgmt said it is busy until then
        self.next_beat = 0.0                # say hello at once
        self._extra: list = []              # the frames after the message being handled

    # -- the control loop's hooks ------------------------------------------------

    def timeout_ms(self) -> int:
        return max(0, int((self.next_beat - time.monotonic()) * 1000) + 1)

    def handle(self) -> None:
        """Serve every message waiting on the socket."""
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.last_heard = time.monotonic()
            if not self.connected:
                self.connected = True
                log.info("mgmt_connected", endpoint=self.endpoint)
            self._extra = frames[1:]
            try:
                msg = json.loads(frames[0].bytes)
                if not isinstance(msg, dict) or type(msg.get("v")) is not int or \
                        msg.get("v") != SCHEMA_VERSION:
                    raise ValueError(f"schema version {msg.get('v')!r} not supported"
                                     if isinstance(msg, dict) else "not a JSON object")
            except (ValueError, RecursionError) as e:
                log.warning("mgmt_message_refused", error=str(e) or type(e).__name__)
                continue
            handler = getattr(self, f"_on_{msg.get('type')}", None)
            if handler is None:
                log.warning("mgmt_message_refused", error=f"unknown type {msg.get('type')!r}")
                continue
            try:
                handler(msg)
            except Exception:           # the gateway keeps forwarding whatever comes
                log.exception("mgmt_message_failed", type=msg.get("type"))
            self.last_heard = time.monotonic()     # busy is not silence

    def _block(self, msg: dict):
        """The record block the message carries, or None; NvgwError when the
        frames do not match what it says."""
        if "records" not in msg:
            return None
        if len(self._extra) != 1:
            raise NvgwError(f"{msg.get('type')}: 'records' without one record block frame")
        try:
            return recblock.decode(self._extra[0].buffer, msg["records"])
        except recblock.BlockError as e:
            raise NvgwError(str(e)) from None

    def _apply(self, gen: int, ops=None, document=None, block=None) -> None:
        """A batch or a whole document, with its record block if any."""
        if document is None:
            self.gw.apply(ops, generation=gen, block=block)
        else:
            self.gw.load(document, generation=gen, block=block, trusted=True)

    def tick(self) -> None:
        """Heartbeats, and noticing a lost nvgw-mgmt or a policy changed locally."""
        now = time.monotonic()
        if now < self.next_beat:
            return
        self.next_beat = now + self.heartbeat
        if self._drifted():
            self.connected = False              # say hello: a snapshot comes
        if self.connected and now - max(self.last_heard, self.quiet_until) > self.dead_after:
            self.connected = False
            log.warning("mgmt_lost", endpoint=self.endpoint, applied=self.applied,
                        silent=round(now - self.last_heard, 3))
        # Waiting for a snapshot, it has no generation to build on: a nvgw-mgmt that
        # lost it meanwhile (restarted, or took it for gone) must not send batches.
        self._send({"type": "hello" if not self.connected else "heartbeat",
                    "applied": None if self.awaiting_snapshot else self.applied,
                    "store": self.store,
                    "digest": None if self.awaiting_snapshot else self.digest})

    def _drifted(self) -> bool:
        """Has the policy changed behind the agent's back (the local control
        socket) since its last change? Counted in changes, not generations: a local
        change takes the next generation number, as the next batch does. If so, the
        applied generation is forgotten: only a snapshot can follow."""
        if self.our_changes is None or self.gw.policy.changes == self.our_changes:
            return False
        log.warning("policy_drift", applied=self.applied,
                    gateway_generation=self.gw.policy.generation)
        self.our_changes = self.applied = self.digest = None
        return True

    def close(self) -> None:
        self.sock.close()

    # -- messages from nvgw-mgmt ----------------------------------------------------

    def _send(self, msg: dict) -> None:
        try:
            self.sock.send(json.dumps({"v": SCHEMA_VERSION, "gateway": self.id, **msg}).encode(),
                           zmq.NOBLOCK)
        except zmq.Again:
            pass            # no connection now; the next heartbeat says hello again

    def _done(self, generation: int, store, digest) -> None:
        self.applied, self.store = generation, store
        self.digest = digest if isinstance(digest, str) else None
        self.our_changes = self.gw.policy.changes
        self._send({"type": "ack", "generation": generation, "store": store,
                    "digest": self.digest})

    def _on_snapshot(self, msg: dict) -> None:
        gen = msg.get("generation")
        if (type(gen) is int and self.applied is not None and gen < self.applied
                and msg.get("store") == self.store and not msg.get("force")
                and not self.awaiting_snapshot):
            # Replayed or out of order: never go back to an older generation. (Waiting
            # for a snapshot, the agent claims none: what comes is the store's word,
            # older too if the store was restored meanwhile.)
            log.warning("mgmt_message_refused", error=f"snapshot {gen} is older than "
                        f"the applied generation {self.applied}")
            return
        try:
            if type(gen) is not int or gen < 0 or not isinstance(msg.get("document"), dict):
                raise NvgwError("snapshot: needs 'generation' and 'document'")
            t0 = time.monotonic()
            self._apply(gen, document=msg["document"], block=self._block(msg))
        except NvgwError as e:
            log.warning("snapshot_failed", generation=gen, error=str(e))
            self._send({"type": "nack", "generation": gen, "snapshot": True, "error": str(e)})
            return
        log.info("snapshot_applied", generation=gen,
                 seconds=round(time.monotonic() - t0, 3))
        self.awaiting_snapshot = False
        self._done(gen, msg.get("store"), msg.get("digest"))

    def _on_batch(self, msg: dict) -> None:
        gen = msg.get("generation")
        if self.awaiting_snapshot:
            return
        if type(gen) is not int:
            log.warning("mgmt_message_refused", error="batch without a generation")
            return
        if self.applied is not None and msg.get("store") == self.store and gen <= self.applied:
            return                      # already have it (sent again after a resync)
        try:
            if self._drifted():
                raise NvgwError(f"batch {gen}: the policy was changed locally; "
                                "it needs a snapshot")
            if self.applied is None or msg.get("store") != self.store or gen != self.applied + 1:
                raise NvgwError(f"batch {gen} does not follow generation {self.applied}")
            if "ops" in msg:
                self._apply(gen, ops=msg["ops"], block=self._block(msg))
            elif "document" in msg:
                self._apply(gen, document=msg["document"], block=self._block(msg))
            else:
                raise NvgwError(f"batch {gen} has neither 'ops' nor 'document'")
        except NvgwError as e:
            log.warning("batch_failed", generation=gen, error=str(e))
            self.awaiting_snapshot = True
            self._send({"type": "nack", "generation": gen, "error": str(e)})
            return
        self._done(gen, self.store, msg.get("digest"))

    def _on_heartbeat(self, msg: dict) -> None:
        busy = msg.get("busy")
        if type(busy) in (int, float) and 0 < busy <= 600:
            # nvgw-mgmt is about to work on a big request and will be silent.
            self.quiet_until = time.monotonic() + busy

    def _on_error(self, msg: dict) -> None:
        log.warning("mgmt_error", error=msg.get("error"))
