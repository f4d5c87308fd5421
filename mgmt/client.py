"""The Python client of nvgw-mgmt; nvgwctl --mgmt is a thin layer over it.

    c = MgmtClient("ipc:///run/nvgw/mgmt.sock", key="keys/ops.key_secret",
                   server_key="keys/server.key")
    gen = c.load(document)["generation"]
    c.wait(gen, timeout=10)          # every gateway has applied it
    c.gateways()                     # [{"id", "state", "applied", "lag", "last_seen", "error"}]

Each call sends one request over a CurveZMQ REQ socket and returns its
result, or raises NvgwError with nvgw-mgmt's reason. A server that refuses
our key is reported as such (from the handshake), not as a time-out.

Many lookup records (apply: a batch ending in BLOCK_MIN or more 'set record'
operations; load: a document with as many records; apply_records) travel as a
record block (dataplane/recblock.py) in a second frame: 20 bytes a record, and
nvgw-mgmt checks them without a Python object per record. The text fields are
parsed here; a malformed one is refused here with the message nvgw-mgmt would
give, and nothing is sent.
"""
from __future__ import annotations

import json
import time
import zmq
import zmq.utils.monitor

from dataplane import recblock
from dataplane.errors import NvgwError
from dataplane.policy import PolicyError
from mgmt import keys

SCHEMA_VERSION = 1
BLOCK_MIN = recblock.BLOCK_MIN


def _encode(records: list, extra=("op", "kind")) -> bytes:
    try:
        return recblock.encode(records, extra)
    except recblock.BlockError as e:
        raise PolicyError(str(e)) from None


def split_records(ops) -> tuple[list, bytes] | None:
    """recblock.split_records, refusing malformed records as nvgw-mgmt would."""
    try:
        return recblock.split_records(ops, BLOCK_MIN)
    except recblock.BlockError as e:
        raise PolicyError(str(e)) from None


class MgmtClient:
    def __init__(self, endpoint: str, key: str, server_key: str, timeout: float = 10.0,
                 ctx: zmq.Context | None = None):
        self.endpoint = endpoint
        self.pair = keys.load_pair(key)
        self.server_public = keys.load_public(server_key)
        self.timeout = timeout
        self.ctx = ctx or zmq.Context.instance()

    last_sent_at: float | None = None     # time.time() of the last request's first byte
    last_sent_bytes: int = 0

    def request(self, type_: str, *, reply_timeout: float | None = None, block=None,
                **fields):
        """One request (with a record block: its records): its result, or NvgwError
        with the reason."""
        if block is not None:
            fields["records"] = recblock.header(len(block) // recblock.SIZE)
        return self.send_raw(json.dumps({"v": SCHEMA_VERSION, "type": type_, **fields}).encode(),
                             reply_timeout, () if block is None else (block,))

    def send_raw(self, payload: bytes, timeout: float | None = None, frames=()):
        timeout = self.timeout if timeout is None else timeout
        sock = self.ctx.socket(zmq.REQ)
        sock.linger = 0
        keys.curve_client(sock, self.pair, self.server_public)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                                      zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                      zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                      zmq.EVENT_DISCONNECTED)
        try:
            try:
                sock.connect(self.endpoint)
            except zmq.ZMQError as e:   # an endpoint libzmq cannot use ("foo", "tcp://x")
                raise NvgwError(f"{self.endpoint}: {e}") from None
            self.last_sent_at = time.time()
            if frames:
                sock.send_multipart([payload, *frames], copy=False)
            else:
                sock.send(payload)
            self.last_sent_bytes = len(payload) + sum(len(f) for f in frames)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(mon, zmq.POLLIN)
            ready = dict(poller.poll(int(timeout * 1000)))
            if sock in ready:
                reply = json.loads(sock.recv())
            elif mon in ready:
                # A refused key also ends in a disconnect: read what else came with it.
                events = [zmq.utils.monitor.recv_monitor_message(mon)]
                while mon.poll(50):
                    events.append(zmq.utils.monitor.recv_monitor_message(mon))
                kinds = {ev["event"]: ev for ev in events}
                if zmq.EVENT_HANDSHAKE_FAILED_AUTH in kinds:
                    raise NvgwError(f"{self.endpoint} refused this client's key "
                                    f"(status {kinds[zmq.EVENT_HANDSHAKE_FAILED_AUTH]['value']})"
                                    ": add its public key to nvgw-mgmt's clients/ allow-list")
                if kinds.keys() == {zmq.EVENT_DISCONNECTED}:
                    # libzmq drops the connection of a peer whose message exceeds
                    # ZMQ_MAXMSGSIZE, without a word: name the likely reason.
                    raise NvgwError(f"{self.endpoint} closed the connection before answering "
                                    f"(a request of {len(payload)} bytes: over nvgw-mgmt's "
                                    "--max-message limit? or nvgw-mgmt stopped)")
                raise NvgwError(f"CurveZMQ handshake with {self.endpoint} failed (is "
                                "server_key the key of this nvgw-mgmt?)")
            else:
                raise NvgwError(f"no answer from {self.endpoint} within {timeout:g} s "
                                "(is nvgw-mgmt running, and is server_key its key?)")
        finally:
            sock.disable_monitor()
            mon.close()
            sock.close()
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise NvgwError(reply.get("error", "request refused") if isinstance(reply, dict)
                            else "malformed reply")
        return reply["result"]

    # -- one method per operation (nvgwctl calls these) ---------------------------

    def apply(self, ops: list) -> dict:
        """A batch (set/del operations), whole or not at all: {"generation"}."""
        split = split_records(ops)
        if split is not None:
            head, block = split
            return self.request("apply", ops=head, block=block, reply_timeout=self._big(block))
        return self.request("apply", ops=ops)

    def apply_records(self, records) -> dict:
        """Set lookup records, whole or not at all: a list of record objects
        ({"vsid", "ca", "mac", "pa", "method"?}, each (VSID, CA) once) or a record
        block already packed (bytes). {"generation"}."""
        block = records if isinstance(records, (bytes, bytearray, memoryview)) else \
            _encode(records, extra=())
        return self.request("apply", ops=[], block=block, reply_timeout=self._big(block))

    def load(self, document: dict) -> dict:
        """Make the desired policy equal a document: {"generation", "changed"}."""
        recs = document.get("records") if isinstance(document, dict) else None
        if isinstance(recs, list) and len(recs) >= BLOCK_MIN:
            block = _encode(recs, extra=())
            return self.request("load", document={**document, "records": []}, block=block,
                                reply_timeout=self._big(block))
        return self.request("load", document=document)

    def _big(self, block) -> float:
        """A reply time-out for a request with a record block: at least 1 s per
        100,000 records on top of the usual (nvgw-mgmt checks and stores them)."""
        return self.timeout + len(block) / recblock.SIZE / 1e5

    def migrate(self, vsid: int, ca: str, pa: str) -> dict:
        return self.request("migrate", vsid=vsid, ca=ca, pa=pa)

    def policy(self) -> dict:
        return self.request("show", what="policy")

    def gateways(self) -> list[dict]:
        return self.request("show", what="gateways")

    def generation(self) -> int:
        return self.request("show", what="generation")["generation"]

    def wait(self, generation: int | None = None, timeout: float = 10.0,
             min_gateways: int = 0) -> dict:
        """Until every connected gateway has applied `generation` (default: the
        latest), and at least min_gateways are connected; NvgwError on time-out."""
        fields = {"timeout": timeout, "min_gateways": min_gateways}
        if generation is not None:
            fields["generation"] = generation
        return self.request("wait", reply_timeout=timeout + 5, **fields)
