"""atheris: nvgw-mgmt's handling of messages from gateways' agents.

Entry point: MgmtServer._gateway() -- what nvgw-mgmt runs when its gateway ROUTER socket
is readable: [route, message] frames, the message decoded (mgmt.server.decode), its
"gateway" checked against the key's name, dispatched to _gw_hello, _gw_heartbeat,
_gw_ack, _gw_nack, which update the gateway's session, persist it (Store.save_gateway)
and sync the gateway (snapshot or batches from the changelog). Real MgmtServer and
Store (the template: redblue and three batches, generation 4, on a SQLite file); only
the socket is a stand-in (mgmt_common.FakeRouter), as if the CurveZMQ key "gw1" sent.

One input is up to 6 messages, one per line (after a 0x1f byte, an extra frame in
hex). A line that starts with 1, 2 or 3 comes
from that connection (ROUTER identity r1..r3: a gateway that reconnected); the others
from r1. The word STORE in a message is replaced by the store's id, so the fuzzer can
say "the same store" (the id is random per run).

Invariants, after every message:
- nothing a gateway says changes the policy: store id, generation and document the
  same in memory and in the file;
- everything sent back is JSON with "v": 1 and a known type: heartbeat (the store's
  generation and id), snapshot (the store's whole document, generation and id), batch
  (consecutive generations ending at the store's, each exactly the changelog entry),
  error (a text, never "internal error: ..."); no gateway_message_failed event;
- a refused message (error reply) changes no session's applied/sent/error/force;
- every session's applied generation is null or 0..store generation, and sent is null
  or applied..store generation; the gateways table in the file says what the sessions
  say (applied, error) for every gateway that spoke;
- an ack moves applied only to a generation that was sent to that connection.
"""
import json
import sys

import atheris

import mgmt_common as mc

with atheris.instrument_imports(include=["mgmt", "dataplane"]):
    import mgmt.server  # noqa: F401
    import mgmt.store  # noqa: F401
    import dataplane.policy  # noqa: F401

world = None
KNOWN = {"heartbeat", "snapshot", "batch", "error"}


def sessions_view(srv):
    return {k: (s.applied, s.sent, s.error, s.force) for k, s in srv.sessions.items()}


def check_sent(sent, route, raw):
    st = world.store
    batches = []
    for frames in sent:
        mc.check(len(frames) in (2, 3), "a message that is not [route, body, block?]", frames)
        msg = mc.decode_reply(frames[1], "message to a gateway")
        t = msg.get("type")
        mc.check(len(frames) == 2 or (t in ("snapshot", "batch") and "records" in msg),
                 "a block frame without 'records'", msg)
        mc.check(t in KNOWN, f"message of unknown type {t!r} to a gateway", msg)
        if t == "error":
            err = msg.get("error")
            mc.check(isinstance(err, str) and err, "error without a text", msg)
            mc.check(not err.startswith("internal error"), "an internal error", raw[:300], err)
            mc.check(frames[0] == route, "an error to another connection", frames[0], route)
        elif t == "heartbeat":
            mc.check(msg.get("generation") == st.generation and msg.get("store") == st.store_id,
                     "heartbeat with the wrong generation or store", msg)
        elif t == "snapshot":
            doc = msg.get("document")
            if len(frames) == 3:
                doc = {**doc, "records": doc.get("records", []) +
                       mc.decode_block(frames[2], msg["records"])}
            mc.check(msg.get("generation") == st.generation and msg.get("store") == st.store_id
                     and mc.norm(doc) == mc.norm(mc.store_document(st)),
                     "a snapshot that is not the store's document", msg.get("generation"))
        else:
            batches.append((frames[0], msg, frames[2] if len(frames) == 3 else None))
    by_route = {}
    for r, msg, block in batches:
        by_route.setdefault(r, []).append((msg, block))
    for r, msgs in by_route.items():
        gens = [m.get("generation") for m, _ in msgs]
        mc.check(gens == list(range(gens[0], gens[0] + len(gens))) and
                 gens[-1] == st.generation, "batches not consecutive up to the store", gens)
        log = st.changes_since(gens[0] - 1)
        mc.check(log is not None, "batches sent from beyond the changelog", gens)
        for (m, block), (g, kind, body, *stored) in zip(msgs, log):
            key = "ops" if kind == "ops" else "document"
            mc.check(m.get("store") == st.store_id and mc.canon(m.get(key)) == mc.canon(body),
                     f"batch {g} is not the changelog's", m)
            stored_block = stored[0] if stored else None
            mc.check((block is None and stored_block is None) or
                     bytes(block or b"") == bytes(stored_block or b""),
                     f"batch {g}: its record block is not the changelog's")


def kind_of(raw: bytes):
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return msg.get("type") if isinstance(msg, dict) else None


def one(line: bytes) -> None:
    srv = world.server
    route = b"r1"
    if line[:1] in (b"1", b"2", b"3"):
        route, line = b"r" + line[:1], line[1:]
    raw = line.replace(b"STORE", world.store.store_id.encode())
    before_mem, before_disk = world.memory_state(), world.disk_state()
    before = sessions_view(srv)
    was = srv.sessions.get("gw1")
    was_live = was is not None and was.alive and was.route == route
    was_sent = was.sent if was is not None else None
    mc.EVENTS.clear()
    frames = mc.frames_of(raw)
    raw = frames[0]
    srv.gateways.inbox.append([mc.Frame(route)] + [mc.Frame(f, "gw1") for f in frames])
    srv._gateway()
    sent, srv.gateways.sent[:] = list(srv.gateways.sent), []
    bad = mc.failures(mc.EVENTS)
    mc.check(not bad, "an unforeseen exception in a gateway message handler", raw[:300], bad)
    mc.check(world.memory_state() == before_mem, "a gateway message changed the policy", raw[:300])
    mc.check(world.disk_state() == before_disk, "a gateway message changed the stored policy",
             raw[:300])
    check_sent(sent, route, raw)
    refused = any(f[0] == route and json.loads(f[1]).get("type") == "error" for f in sent)
    if refused:
        mc.check(sessions_view(srv) == before, "a refused message changed a session",
                 raw[:300], before, sessions_view(srv))
    gen = world.store.generation
    rows = world.store.gateways()
    for gid, s in srv.sessions.items():
        mc.check(s.applied is None or (type(s.applied) is int and 0 <= s.applied <= gen),
                 f"gateway {gid}: applied {s.applied!r} outside 0..{gen}", raw[:300])
        mc.check(s.sent is None or (0 <= s.sent <= gen and
                                    (s.applied is None or s.applied <= s.sent)),
                 f"gateway {gid}: sent {s.sent!r}, applied {s.applied!r}", raw[:300])
        row = rows.get(gid)
        mc.check(row is not None and (row["applied"], row["error"]) == (s.applied, s.error),
                 f"gateway {gid}: stored row {row} differs from the session", s)
    now = srv.sessions.get("gw1")
    if was_live and not refused and now is not None and now.applied != was.applied \
            and kind_of(raw) == "ack":
        mc.check(was_sent is not None and now.applied <= was_sent,
                 f"an ack moved applied to {now.applied}, sent was {was_sent}", raw[:300])


def TestOneInput(data: bytes) -> None:
    world.reset()
    for line in mc.split_messages(data):
        one(line)


def main():
    global world
    world = mc.MgmtWorld()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
