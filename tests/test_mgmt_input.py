"""Hostile input on the management channel, with real processes and sockets.

1. Random and malformed ZeroMQ frames at nvgw-mgmt's client socket: bytes that are not
   ZMTP, a peer without CurveZMQ, and from an allowed client random bytes, empty frames,
   multipart garbage, deep JSON, wrong schema versions, wrong field types: each gets a
   clear refusal, nothing changes, nothing fails inside.
2. Oversized messages: over --max-message (nvgw-mgmt) or 1 MiB (the gateway's control
   socket) the connection is dropped before the message is held, the client says why,
   memory stays bounded and the next request is served. Multipart and deep JSON at the
   gateway's control socket get an error reply.
3. Replayed and out-of-order generations on the agent channel, both ways: nvgw-mgmt
   refuses acks for generations it never sent and ignores stale ones; a gateway ahead of
   the store gets a forced snapshot. The gateway's agent (talking to a stand-in nvgw-mgmt
   here) ignores a batch it has, refuses one that skips ahead and waits for a snapshot,
   never goes back to an older snapshot of the same store unless forced.
4. A flood of 5,000 requests from one DEALER that reads no replies: every reply it gets is
   an answer or a clear refusal (pending `wait`s are capped), nvgw-mgmt's memory stays
   bounded, and another client is served meanwhile within a bound.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import zmq

from dataplane.control import MAX_REQUEST, ControlClient
from dataplane.errors import NvgwError
from harness import GatewayProcess, PcapPort
from mgmt import keys as mkeys
from mgmt_harness import Keys, MgmtProcess, agent_body, wait_for
from nvgw_helpers import FABRIC, TENANTS, redblue_policy

LIMIT = 1 << 20                 # nvgw-mgmt --max-message in these tests
WAIT = 10.0


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def empty_ports():
    return [PcapPort(FABRIC, "provider"), PcapPort(TENANTS, "customer")]


def dealer(ctx, mgmt, name: str = "ops", endpoint: str | None = None) -> zmq.Socket:
    """A CurveZMQ DEALER with `name`'s key pair (a client, or a gateway's id)."""
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    mkeys.curve_client(s, mkeys.load_pair(str(mgmt.keys.secret(name))),
                       mkeys.load_public(str(mgmt.keys.server_public)))
    s.connect(endpoint or mgmt.clients)
    return s


def reply_of(sock, timeout: float = 5.0) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), "no reply"
    return sock.recv_multipart()


def refusal(frames: list[bytes]) -> str:
    msg = json.loads(frames[-1])
    assert msg["v"] == 1 and msg["ok"] is False and msg["error"], msg
    return msg["error"]


@pytest.fixture
def mgmt(tmp_path):
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    with MgmtProcess(tmp_path / "mgmt", keys, args=["--max-message", LIMIT]) as m:
        yield m
        assert m.proc.poll() is None, "nvgw-mgmt died"
        failed = [line for line in m.log_lines() if "_failed\"" in line and "Traceback" in line
                  or '"request_failed"' in line or '"gateway_message_failed"' in line]
        assert not failed, failed[:3]


# -- 1. malformed frames --------------------------------------------------------------------


def test_malformed_frames_are_refused_and_change_nothing(mgmt):
    rng = random.Random(7)
    c = mgmt.client()
    # Bytes that are not ZMTP at all, straight into the ipc socket.
    for i in range(30):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(mgmt.clients[6:])
        try:
            greeting = b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" if i % 3 == 0 else b""
            s.sendall(greeting + rng.randbytes(rng.randrange(1, 4096)))
        except OSError:
            pass                        # libzmq may close first
        s.close()
    # A peer without CurveZMQ never gets a message through.
    ctx = zmq.Context()
    try:
        plain = ctx.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(mgmt.clients)
        plain.send(b'{"v": 1, "type": "apply", "ops": []}')
        assert not plain.poll(300)
        plain.close()

        d = dealer(ctx, mgmt)
        payloads = [rng.randbytes(rng.randrange(0, 2000)) for _ in range(40)] + [
            b"", b"\xff\xfe\xfd", b"[" * 100_000, b'{"a":' * 50_000, b"null", b"7",
            b'{"v": 1' + b"0" * 5000 + b"}", b'{"v": NaN, "type": "show"}',
            b'{"v": true, "type": "show", "what": "generation"}',
            b'{"v": 1.0, "type": "show", "what": "generation"}',
            b'{"v": "1", "type": "show", "what": "generation"}',
            b'{"v": 2, "type": "show", "what": "generation"}',
            b'{"v": 1}', b'{"v": 1, "type": 5}', b'{"v": 1, "type": "__class__"}',
            b'{"v": 1, "type": "show", "what": ["policy"]}',
            b'{"v": 1, "type": "apply", "ops": [1, "x", null]}',
            b'{"v": 1, "type": "apply", "ops": [{"op": "set", "kind": "record"}]}',
            b'{"v": 1, "type": "apply", "ops": [{"op": "del", "kind": "domain", "rdid": []}]}',
            b'{"v": 1, "type": "load", "document": {"records": "x"}}',
            b'{"v": 1, "type": "load", "document": {"routing_domains": [{"rdid": {}}]}}',
            b'{"v": 1, "type": "migrate", "vsid": 5001, "ca": 7, "pa": null}',
            b'{"v": 1, "type": "wait", "generation": 99}',
            b'{"v": 1, "type": "wait", "timeout": 1e308}',
            b'{"v": 1, "type": "wait", "min_gateways": -1}',
        ]
        errors = []
        for p in payloads:
            d.send(p)
            errors.append(refusal(reply_of(d)))
        for _ in range(20):             # multipart garbage: the reply keeps the envelope
            parts = [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(2, 6))]
            d.send_multipart(parts)
            frames = reply_of(d)
            assert frames[:-1] == parts[:-1]
            errors.append(refusal(frames))
        d.close()
    finally:
        ctx.destroy(linger=0)
    assert "schema version True not supported (nvgw-mgmt speaks 1)" in errors
    assert "malformed message: JSON nested too deeply" in errors
    assert c.generation() == 0 and c.policy()["records"] == []
    print(f"\nmalformed: {len(errors)} refusals, e.g. {sorted(set(errors))[:4]}")


# -- 2. oversized messages ----------------------------------------------------------------


def test_oversized_messages_are_dropped_and_memory_stays_bounded(mgmt, tmp_path):
    c = mgmt.client(timeout=5)
    c.load(redblue_policy())
    base = rss_kb(mgmt.proc.pid)
    big = b'{"v": 1, "type": "show", "what": "' + b"x" * (2 * LIMIT) + b'"}'
    t = time.monotonic()
    with pytest.raises(NvgwError, match="closed the connection before answering .a request "
                                        "of 2097.* bytes: over nvgw-mgmt's --max-message"):
        c.send_raw(big)
    assert time.monotonic() - t < 3
    ctx = zmq.Context()
    try:
        for _ in range(30):             # huge frames, one connection after another
            d = dealer(ctx, mgmt)
            d.send_multipart([b"x" * 100, bytes(3 * LIMIT)])
            d.close()
        time.sleep(0.3)
    finally:
        ctx.destroy(linger=0)
    # Just under the limit is served.
    ops = [{"op": "set", "kind": "record", "vsid": 5001, "ca": f"10.1.1.{10 + i}",
            "mac": f"00:15:5d:b1:02:{i:02x}", "pa": "192.168.1.10"} for i in range(200)]
    assert c.apply(ops)["generation"] == 2
    grown = rss_kb(mgmt.proc.pid) - base
    assert grown < 16 * 1024, f"nvgw-mgmt grew by {grown} kB"

    # The gateway's control socket: the client refuses, a raw sender is cut off, and
    # multipart or deep requests get an error reply; the gateway keeps serving.
    gw = GatewayProcess(tmp_path / "gw", empty_ports(),
                        '[pipeline]\nmode = "nvgre"\n').start()
    try:
        with pytest.raises(NvgwError, match="exceeds the control socket's limit"):
            gw.request("load", document={"pad": "x" * MAX_REQUEST})
        ctx = zmq.Context()
        try:
            apply = {"v": 1, "type": "apply", "ops": []}
            for frames, error in (
                    ([b"x" * (2 * MAX_REQUEST)], None),
                    ([b"[" * 100_000], "malformed request: JSON nested too deeply"),
                    ([b'{"v": true, "type": "show"}'], "schema version True"),
                    ([b'{"v": 1, "type": "show"}', b"{}"], "malformed request: 2 frames"),
                    ([b"{}", b"{}", b"{}"], "malformed request: 3 frames"),
                    ([json.dumps(apply).encode(), bytes(20)], "malformed request: 2 frames"),
                    ([json.dumps({**apply, "records": {"format": "nvgw-records/1",
                                                       "count": 1}}).encode()],
                     "'records' without a record block frame"),
                    ([json.dumps({**apply, "records": {"format": "nvgw-records/1",
                                                       "count": 2}}).encode(), bytes(20)],
                     "the block is 20 bytes, 2 records are 40"),
                    ([json.dumps({**apply, "records": {"format": "x", "count": 1}}).encode(),
                      bytes(20)], "format 'x' not supported"),
                    ([json.dumps({**apply, "records": {"format": "nvgw-records/1",
                                                       "count": 1}}).encode(),
                      bytes(19) + b"\x01"], "record block: record 0 has a non-zero last byte")):
                r = ctx.socket(zmq.REQ)
                r.linger = 0
                r.connect(gw.endpoint)
                r.send_multipart(frames)
                got = json.loads(r.recv()) if r.poll(1000) else None
                r.close()
                if error is None:
                    assert got is None
                else:
                    assert got["ok"] is False and re.search(error, got["error"]), (error, got)
        finally:
            ctx.destroy(linger=0)
        assert gw.request("show", what="counters")["generation"] == 0
    finally:
        assert gw.stop() == 0, gw.stderr
    print(f"\noversized: nvgw-mgmt grew by {grown} kB after 31 requests of 2-3 MiB")


def test_many_frames_before_a_message_are_refused_not_held(mgmt):
    """--max-message limits each frame, not their number: the frames before a `wait`
    became its envelope, kept for up to an hour and sent back with the answer (four
    requests of 1,000 frames of 60,000 bytes held 300 MiB here). Now more than 8
    frames or 1 KB before the message is refused at once, and nothing is kept; a
    gateway's message of more than one frame gets an error message, not silence."""
    c = mgmt.client(timeout=5)
    c.load(redblue_policy())
    base = rss_kb(mgmt.proc.pid)
    wait = json.dumps({"v": 1, "type": "wait", "timeout": 3600, "min_gateways": 1}).encode()
    ctx = zmq.Context()
    try:
        d = dealer(ctx, mgmt)
        for _ in range(4):
            d.send_multipart([b"x" * 60_000] * 1000 + [wait])
            # the frames and the route nvgw-mgmt's socket puts first
            assert refusal(reply_of(d, 30)) == ("1001 frames before the message (60000005 "
                                                "bytes): at most 8 of 1024 bytes in all")
        show = json.dumps({"v": 1, "type": "show", "what": "generation"}).encode()
        d.send_multipart([b"route", b"", show])      # as through a proxy: answered
        got = reply_of(d, 5)
        assert got[:2] == [b"route", b""] and json.loads(got[2])["ok"] is True
        g = dealer(ctx, mgmt, "gw1", mgmt.gateways)
        g.send_multipart([json.dumps({"v": 1, "gateway": "gw1", "type": "hello",
                                      "applied": None, "store": None}).encode(), b"extra"])
        assert recv_json(g, {"error"})["error"] == "a gateway message is one frame (2 came)"
    finally:
        ctx.destroy(linger=0)
    grown = rss_kb(mgmt.proc.pid) - base
    assert grown < 128 * 1024, f"nvgw-mgmt grew by {grown} kB"
    assert c.request("show", what="generation")["generation"] == 1


# -- 3. replayed and out-of-order generations -----------------------------------------------


def recv_json(sock, types: set, timeout: float = 3.0):
    """The next message of one of `types` (heartbeats and hellos skipped), or None."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000)):
            break
        frames = sock.recv_multipart()
        if len(frames) > 1 and frames[-2][:1] == b"{" and b'"records"' in frames[-2]:
            frames = frames[:-1]        # a message with a record block after it
        msg = json.loads(frames[-1])
        if msg.get("type") in types:
            return (frames[0], msg) if len(frames) > 1 else msg
    return None


def test_mgmt_refuses_replayed_and_forged_gateway_generations(mgmt):
    c = mgmt.client()
    c.load(redblue_policy())
    gen = c.migrate(5001, "10.1.1.7", "192.168.1.12")["generation"]
    store = c.request("show", what="generation")["store"]
    ctx = zmq.Context()
    try:
        g = dealer(ctx, mgmt, "gw1", mgmt.gateways)
        send = lambda **m: g.send(json.dumps({"v": 1, "gateway": "gw1", **m}).encode())  # noqa
        applied = lambda: c.gateways()[0]["applied"]        # noqa: E731
        send(type="hello", applied=None, store=None)
        snap = recv_json(g, {"snapshot"})
        assert snap["generation"] == gen and "force" not in snap
        send(type="ack", generation=99, store=store)         # never sent: refused
        assert "ack for generation 99, which was not sent" in recv_json(g, {"error"})["error"]
        assert applied() is None
        send(type="ack", generation=gen, store=store)
        wait_for(lambda: applied() == gen, 5, what="ack")
        send(type="ack", generation=gen - 1, store=store)    # stale: ignored
        time.sleep(0.2)
        assert applied() == gen
        send(type="hello", applied=gen + 50, store=store)    # ahead of the store
        snap = recv_json(g, {"snapshot"})
        assert (snap["generation"], snap.get("force")) == (gen, True)
        assert applied() is None
        for bad, why in [({"v": 2, "type": "hello", "gateway": "gw1"}, "schema version 2"),
                         ({"v": 1, "type": "hello", "gateway": "gw2"}, "does not match"),
                         ({"v": 1, "type": "hello", "gateway": "gw1", "applied": "7"},
                          "'applied' must be a non-negative integer or null"),
                         ({"v": 1, "type": "ack", "gateway": "gw1"}, "missing field")]:
            g.send(json.dumps(bad).encode())
            assert why in recv_json(g, {"error"})["error"]
        g.send(b"[" * 100_000)
        assert "nested too deeply" in recv_json(g, {"error"})["error"]
        g.close()
    finally:
        ctx.destroy(linger=0)
    assert c.generation() == gen


@contextlib.contextmanager
def fake_mgmt(tmp_path):
    """A stand-in nvgw-mgmt (a CurveZMQ ROUTER with the server key) and a real gateway
    whose agent connects to it, once it has said hello: `send` a message (a dict, in
    store S1) or raw bytes to the agent, read its `answer` ((type, generation) of an ack
    or nack, or None). The gateway's exit status is `rc` after the block."""
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    endpoint = f"ipc://{tmp_path}/fake-mgmt.sock"
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    mkeys.curve_server(router, mkeys.load_pair(str(keys.mgmt_dir / "server.key_secret")),
                       "gateways")     # no ZAP handler in this context: any key may connect
    router.bind(endpoint)
    gw = GatewayProcess(tmp_path / "gw", empty_ports(),
                        agent_body(SimpleNamespace(gateways=endpoint), keys, "gw1")).start()
    m = SimpleNamespace(gw=gw, router=router, rc=None)
    try:
        route, m.hello = recv_json(router, {"hello"}, timeout=5)

        def send(raw):
            router.send_multipart([route, raw if isinstance(raw, bytes) else
                                   json.dumps({"v": 1, "store": "S1", **raw}).encode()])

        def answer(timeout=1.0):
            got = recv_json(router, {"ack", "nack"}, timeout)
            return got and (got[1]["type"], got[1]["generation"])

        m.send, m.answer = send, answer
        yield m
    finally:
        m.rc = gw.stop()
        router.close()
        ctx.destroy(linger=0)


def test_agent_applies_generations_in_order_only(tmp_path):
    """A stand-in nvgw-mgmt drives a real gateway."""
    with fake_mgmt(tmp_path) as m:
        gw, router, send, answer = m.gw, m.router, m.send, m.answer
        assert m.hello["applied"] is None

        def policy():
            p = gw.request("show", what="policy")
            return p["generation"], {(r["vsid"], r["ca"]) for r in p["records"]}

        full = {(5001, "10.1.1.7"), (6001, "10.1.1.7")}
        del_red = [{"op": "del", "kind": "record", "vsid": 6001, "ca": "10.1.1.7"}]
        send({"type": "snapshot", "generation": 3, "document": redblue_policy()})
        assert answer(5) == ("ack", 3) and policy() == (3, full)
        send({"type": "batch", "generation": 4, "ops": del_red})
        assert answer() == ("ack", 4) and policy() == (4, {(5001, "10.1.1.7")})
        send({"type": "batch", "generation": 4, "ops": del_red})    # replayed: ignored
        send({"type": "batch", "generation": 3, "ops": del_red})    # older: ignored
        assert answer(0.5) is None and policy() == (4, {(5001, "10.1.1.7")})
        back = [{"op": "set", "kind": "record", **redblue_policy()["records"][1]}]
        send({"type": "batch", "generation": 6, "ops": back})       # skips 5: refused
        assert answer() == ("nack", 6) and policy()[0] == 4
        # Until a snapshot comes it says it has no generation: a nvgw-mgmt that
        # restarted meanwhile must send a snapshot, not batches the agent would drop.
        wait_for(lambda: (m := recv_json(router, {"heartbeat", "hello"}, 1.0)) is not None
                 and m[1]["applied"] is None, 5, what="a heartbeat without a generation")
        send({"type": "batch", "generation": 5, "ops": back})       # waiting for a snapshot
        send({"v": 2, "type": "snapshot", "generation": 9, "document": redblue_policy()})
        send(b"[" * 100_000)
        send(b"\xff not json")
        send({"type": "reboot"})
        assert answer(0.5) is None and policy() == (4, {(5001, "10.1.1.7")})
        send({"type": "snapshot", "generation": True, "document": redblue_policy()})
        assert answer() == ("nack", True)
        # Waiting for a snapshot, it takes an older one too: it claimed none, so this
        # is the store's word (a store restored from a backup meanwhile).
        send({"type": "snapshot", "generation": 2, "document": redblue_policy()})
        assert answer() == ("ack", 2) and policy() == (2, full)
        send({"type": "snapshot", "generation": 6, "document": redblue_policy()})
        assert answer() == ("ack", 6) and policy() == (6, full)
        send({"type": "snapshot", "generation": 5, "document": redblue_policy()})  # older
        assert answer(0.5) is None and policy() == (6, full)
        send({"type": "snapshot", "generation": 1, "document": {**redblue_policy(),
              "records": []}, "force": True})                       # the store went back
        assert answer() == ("ack", 1) and policy() == (1, set())
        send({"type": "snapshot", "generation": 0, "store": "S2",
              "document": redblue_policy()})                        # another store
        assert answer() == ("ack", 0) and policy() == (0, full)
    assert m.rc == 0, gw.stderr
    events = [json.loads(line) for line in gw.stderr.splitlines() if line.startswith("{")]
    refused = [e["error"] for e in events if e["event"] == "mgmt_message_refused"]
    assert "snapshot 5 is older than the applied generation 6" in refused, refused
    assert not [e for e in events if e["event"] == "mgmt_message_failed"]


def test_agent_replaces_a_local_change_even_when_a_batch_comes_first(tmp_path):
    """A change through the gateway's own control socket takes the next generation
    number, as the next batch from nvgw-mgmt does: the agent must still see it and
    ask for a snapshot, not build on a policy the store does not know."""
    with fake_mgmt(tmp_path) as m:
        gw, send, answer = m.gw, m.send, m.answer
        send({"type": "snapshot", "generation": 3, "document": redblue_policy()})
        assert answer(5) == ("ack", 3)
        extra = {"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.50",
                 "mac": "00:15:5d:00:00:50", "pa": "192.168.1.10"}
        assert gw.request("apply", ops=[extra])["generation"] == 4     # behind its back
        send({"type": "batch", "generation": 4, "ops": [{**extra, "ca": "10.1.1.51"}]})
        assert answer() == ("nack", 4)
        cas = lambda: {r["ca"] for r in gw.request("show", what="policy")["records"]}  # noqa
        assert "10.1.1.51" not in cas()
        send({"type": "snapshot", "generation": 4, "document": redblue_policy()})
        assert answer(5) == ("ack", 4)
        assert cas() == {"10.1.1.7"}
    assert m.rc == 0, gw.stderr
    assert "policy_drift" in gw.stderr


# -- 4. a flood from one client -----------------------------------------------------------------


def test_flood_from_one_client_is_bounded_and_others_are_served(mgmt):
    c = mgmt.client(timeout=5)
    c.load(redblue_policy())
    pid = mgmt.proc.pid
    for _ in range(50):
        c.generation()                  # warm up before the baseline
    base = rss_kb(pid)
    n = 5000
    rng = random.Random(3)
    kinds = (["show"] * 12 + ["malformed"] * 4 + ["wait"] * 3 + ["apply"])
    msgs = []
    for i in range(n):
        k = rng.choice(kinds)
        msgs.append(k)
    body = {"show": b'{"v": 1, "type": "show", "what": "generation"}',
            "malformed": b'{"v": 1, "type": ',
            "wait": b'{"v": 1, "type": "wait", "timeout": 30, "min_gateways": 1}',
            "apply": b'{"v": 1, "type": "apply", "ops": [{"op": "del", "kind": "record", '
                     b'"vsid": 5001, "ca": "10.1.1.99"}]}'}
    latencies, other_errors, stop = [], [], threading.Event()

    def other():
        o = mgmt.client(timeout=5)
        while not stop.is_set():
            t = time.monotonic()
            try:
                o.generation()
            except NvgwError as e:
                other_errors.append(str(e))
            latencies.append(time.monotonic() - t)
            time.sleep(0.01)

    ctx = zmq.Context()
    try:
        d = dealer(ctx, mgmt)
        d.sndtimeo = 20_000
        th = threading.Thread(target=other)
        th.start()
        t0 = time.monotonic()
        for k in msgs:
            d.send(body[k])
        sent_s = time.monotonic() - t0
        time.sleep(0.5)
        peak = rss_kb(pid)
        replies = []
        while d.poll(1000):
            replies.append(json.loads(d.recv()))
        stop.set()
        th.join(10)
        d.close()
    finally:
        ctx.destroy(linger=0)
    assert not other_errors, other_errors[:3]
    assert latencies and max(latencies) < 1.0, f"other client waited {max(latencies):.3f} s"
    assert all(r.get("v") == 1 and (r.get("ok") is True or (r.get("ok") is False and
               r.get("error"))) for r in replies), [r for r in replies if not r.get("ok")][:3]
    errors = [r["error"] for r in replies if not r["ok"]]
    assert any("too many pending waits" in e for e in errors)
    # Replies to a client that reads none queue up to the high-water marks (1000 in
    # nvgw-mgmt, 1000 in the client) and the rest are dropped: memory stays bounded and
    # only that client loses its own replies. Every request was handled: the log holds
    # one refusal per refused request.
    assert 1000 <= len(replies) <= n, len(replies)
    want = msgs.count("malformed") + msgs.count("apply") + msgs.count("wait") - 16
    refused = sum('"request_refused"' in line for line in mgmt.log_lines())
    assert refused == want, (refused, want)
    grown = max(peak, rss_kb(pid)) - base
    assert grown < 32 * 1024, f"nvgw-mgmt grew by {grown} kB"
    assert c.generation() == 1
    print(f"\nflood: {n} requests sent in {sent_s:.2f} s, all handled ({refused} refused), "
          f"{len(replies)} replies read ({len(errors)} refusals); the other client: {len(latencies)} requests, max "
          f"{max(latencies) * 1e3:.1f} ms; nvgw-mgmt RSS +{grown} kB")


# -- 6. record blocks that do not match their message ------------------------------------------


def test_pending_waits_are_bounded_per_client_key(mgmt):
    """nvgwctl connects once per request, so the per-connection bound never held a
    client: 1024 waits from one key refused every other client's wait for up to an
    hour. At most 256 per client key: 16 connections of 16 waits are held, and the
    next wait of that key, on a connection of its own, is refused."""
    msg = b'{"v": 1, "type": "wait", "timeout": 30, "min_gateways": 1}'
    ctx = zmq.Context()
    try:
        held = [dealer(ctx, mgmt) for _ in range(16)]
        for d in held:
            for _ in range(16):
                d.send(msg)
        wait_for(lambda: sum('"event": "wait"' in line for line in mgmt.log_lines()) == 256,
                 10, what="256 waits pending")
        one_more = dealer(ctx, mgmt)
        one_more.send(msg)
        r = json.loads(reply_of(one_more)[-1])
        assert r["ok"] is False and "256 of this client key" in r["error"], r
        assert not any(d.poll(0) for d in held)         # the 256 are still pending
    finally:
        ctx.destroy(linger=0)


def test_malformed_record_blocks_are_refused_and_change_nothing(mgmt):
    c = mgmt.client()
    c.load(redblue_policy())
    rec = (5001).to_bytes(4, "little") + bytes([10, 1, 1, 20, 192, 168, 1, 10]) + bytes(8)
    fmt = {"format": "nvgw-records/1", "count": 1}
    for msg, frames, why in [
            ({"type": "apply", "ops": [], "records": fmt}, (), "'records' needs the record "
             "block as the one frame after the message (0 follow)"),
            ({"type": "apply", "ops": [], "records": {**fmt, "count": 2}}, (rec,),
             "the block is 20 bytes, 2 records are 40"),
            ({"type": "apply", "ops": [], "records": {**fmt, "format": "nvgw-records/9"}},
             (rec,), "format 'nvgw-records/9' not supported"),
            ({"type": "apply", "ops": [], "records": {**fmt, "count": -1}}, (rec,),
             "'count' must be a non-negative integer"),
            ({"type": "show", "what": "generation", "records": fmt}, (rec,),
             "show: takes no record block"),
            ({"type": "apply", "ops": [], "records": fmt}, (rec[:19] + b"\1",),
             "record block: record 0 has a non-zero last byte"),
            ({"type": "apply", "ops": [], "records": fmt}, (rec[:18] + b"\7\0",),
             "method must be 'encap' or 'rewrite'")]:
        with pytest.raises(NvgwError) as e:
            c.send_raw(json.dumps({"v": 1, **msg}).encode(), frames=frames)
        assert why in str(e.value), str(e.value)
    assert c.generation() == 1
    # the same record well formed: applied
    gen = c.send_raw(json.dumps({"v": 1, "type": "apply", "ops": [], "records": fmt}).encode(),
                     frames=(rec,))["generation"]
    assert gen == 2 and {"vsid": 5001, "ca": "10.1.1.20", "mac": "00:00:00:00:00:00",
                         "pa": "192.168.1.10", "method": "encap"} in c.policy()["records"]
