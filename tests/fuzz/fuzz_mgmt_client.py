"""atheris: nvgw-mgmt's handling of client requests (nvgwctl --mgmt, MgmtClient).

Entry point: MgmtServer._client() -- what nvgw-mgmt runs when its client ROUTER socket
is readable: the last frame is decoded (mgmt.server.decode), dispatched to the request
handlers (_req_apply, _req_load, _req_migrate, _req_show, _req_wait) on a real Store (a
SQLite file in a temporary directory), and answered. Only the socket is a stand-in
(mgmt_common.FakeRouter): it hands _client the fuzzer's bytes as the last frame, as
libzmq would after the CurveZMQ handshake of an allowed client "ops", and keeps replies.

One input is up to 6 requests, one per line (after a 0x1f byte, an extra frame in hex:
a record block), from the template store (redblue and three
batches, generation 4) every time.

Invariants, after every request:
- exactly one reply (for `wait`: a pending wait instead, and answers to earlier waits
  it finds done or timed out), to the requester (identity and REQ delimiter first, then
  the frames before the message): JSON, an object, "v": 1,
  "ok" a bool, "result" when ok; a refusal has a non-empty "error" that is not
  "internal error: ..." (an exception the handlers did not foresee) and no
  request_failed event was logged. (Replies to clients carry no "type": they answer
  the request they follow, see mgmt/client.py);
- a wait changes nothing;
- refused: nothing changed (store id, generation, document, in memory and in the file);
- accepted: the generation moved by at most one (exactly one for apply/migrate, and
  the reply says which); memory, the validating model, the file and a fresh reload of
  the file agree, and the document loads on its own in a new Policy.
"""
import sys

import atheris

import mgmt_common as mc

with atheris.instrument_imports(include=["mgmt", "dataplane"]):
    import mgmt.server  # noqa: F401
    import mgmt.store  # noqa: F401
    import dataplane.policy  # noqa: F401

ENVELOPE = [b"client-1", b""]     # ROUTER identity and the REQ socket's delimiter
world = None


def one(line: bytes) -> None:
    srv = world.server
    before_mem, before_disk = world.memory_state(), world.disk_state()
    old_waits = list(srv.waits)
    mc.EVENTS.clear()
    frames = mc.frames_of(line)
    raw = frames[0]
    srv.clients.inbox.append([mc.Frame(f, "ops") for f in ENVELOPE + frames])
    srv._client()
    sent, srv.clients.sent[:] = list(srv.clients.sent), []
    bad = mc.failures(mc.EVENTS)
    mc.check(not bad, "an unforeseen exception in a request handler", raw[:300], bad)
    # A `wait` request may also answer earlier pending waits (done, or timed out).
    new_pending = [w for w in srv.waits if not any(w is o for o in old_waits)]
    answered_old = len(old_waits) - (len(srv.waits) - len(new_pending))
    mc.check(len(new_pending) <= 1, "one request added several waits")
    mc.check(all(w.envelope[:2] == ENVELOPE for w in new_pending), "a wait for another client")
    mc.check(len(sent) == answered_old + (0 if new_pending else 1),
             f"{len(sent)} replies: {answered_old} earlier waits answered, "
             f"{len(new_pending)} now pending", raw[:300], sent)
    replies = []
    for out in sent:
        mc.check(out[:2] == ENVELOPE and len(out) > 2, "reply to the wrong client", out[:-1])
        reply = mc.decode_reply(out[-1], "client reply")
        mc.check(type(reply.get("ok")) is bool, "reply without a boolean 'ok'", reply)
        if reply["ok"]:
            mc.check("result" in reply, "an answer without 'result'", reply)
        else:
            err = reply.get("error")
            mc.check(isinstance(err, str) and err, "refusal without an error text", reply)
            mc.check(not err.startswith("internal error"), "an internal error", raw[:300], err)
        replies.append(reply)
    after_mem = world.memory_state()
    if new_pending or answered_old:         # a wait: it only reads
        mc.check(after_mem == before_mem and world.disk_state() == before_disk,
                 "a wait changed the store", raw[:300])
        return
    reply = replies[0]
    # Its envelope: the frames before the message, which is the last frame unless the
    # one before announces a record block (a REQ client then gets the frames it sent
    # before the refusal; test_mgmt_input.py: "the reply keeps the envelope").
    env = sent[0][:-1]
    mc.check(env == (ENVELOPE + frames)[:len(env)] and len(env) >= len(ENVELOPE + frames) - 2,
             "the reply's envelope is not the request's", env, frames)
    if not reply["ok"]:
        mc.check(after_mem == before_mem, "a refused request changed the store in memory",
                 raw[:300], reply["error"])
        mc.check(world.disk_state() == before_disk, "a refused request changed the file",
                 raw[:300], reply["error"])
        return
    gen0, gen1 = before_mem[1], after_mem[1]
    mc.check(after_mem[0] == before_mem[0], "the store id changed")
    mc.check(gen1 in (gen0, gen0 + 1), f"generation {gen0} -> {gen1}", raw[:300])
    if gen1 == gen0:
        mc.check(after_mem == before_mem and world.disk_state() == before_disk,
                 "the document changed without a new generation", raw[:300])
    else:
        result = reply["result"]
        mc.check(isinstance(result, dict) and result.get("generation") == gen1,
                 "reply does not name the new generation", reply)
        changes = world.store.changes_since(gen0)
        mc.check(changes is not None and [c[0] for c in changes] == [gen1],
                 "changelog does not hold the new batch", changes)
        world.check_store_consistent("after an accepted request")


def TestOneInput(data: bytes) -> None:
    world.reset()
    for raw in mc.split_messages(data):
        one(raw)


def main():
    global world
    world = mc.MgmtWorld()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
