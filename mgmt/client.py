"""The Python client of nvgw-mgmt; nvgwctl --mgmt is a thin layer over it.

    c = MgmtClient("ipc:///run/nvgw/mgmt.sock", key="keys/ops.key_secret",
                   server_key="keys/server.key")
    gen = c.load(document)["generation"]
    c.wait(gen, timeout=10)          # every gateway has applied it
    c.gateways()                     # [{"id", "state", "applied", "lag", "last_seen", "error"}]

Each call sends one request over a CurveZMQ REQ socket and returns its
result, or raises NvgwError with nvgw-mgmt's reason. A server that refuses
our key is reported as such (from the handshake), not as a time-out.
"""
from __future__ import annotations

import json

import zmq
import zmq.utils.monitor

from dataplane.errors import NvgwError
from mgmt import keys

SCHEMA_VERSION = 1


class MgmtClient:
    def __init__(self, endpoint: str, key: str, server_key: str, timeout: float = 10.0,
                 ctx: zmq.Context | None = None):
        self.endpoint = endpoint
        self.pair = keys.load_pair(key)
        self.server_public = keys.load_public(server_key)
        self.timeout = timeout
        self.ctx = ctx or zmq.Context.instance()

    def request(self, type_: str, *, reply_timeout: float | None = None, **fields):
        """One request: its result, or NvgwError with the reason."""
        return self.send_raw(json.dumps({"v": SCHEMA_VERSION, "type": type_, **fields}).encode(),
                             reply_timeout)

    def send_raw(self, payload: bytes, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout
        sock = self.ctx.socket(zmq.REQ)
        sock.linger = 0
        keys.curve_client(sock, self.pair, self.server_public)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                                      zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                      zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                      zmq.EVENT_DISCONNECTED)
        try:
            sock.connect(self.endpoint)
            sock.send(payload)
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
        return self.request("apply", ops=ops)

    def load(self, document: dict) -> dict:
        """Make the desired policy equal a document: {"generation", "changed"}."""
        return self.request("load", document=document)

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
