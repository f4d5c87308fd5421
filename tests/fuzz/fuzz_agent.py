"""atheris: the gateway's agent handling messages from nvgw-mgmt, down to the C tables.

Entry point: Agent.handle() (dataplane/agent.py) -- what the gateway's control loop runs
when the agent's DEALER socket is readable: each message is decoded, dispatched to
_on_snapshot, _on_batch, _on_heartbeat, _on_error, and a snapshot or batch is applied
through the real Gateway.load / Gateway.apply to the real C tables: EAL starts once per
fuzzer process (--no-huge, no PCI, 256 MB), with a mempool and the dp.Nvgre tables,
as Gateway._start_nvgre makes them, but without ports or worker threads (nothing
forwards here; the tables are what a message can reach). The tables are small (64
records, 64 routes, 16 neighbours, 16 rewrites) so that their limits are reachable; the
Policy is told the same capacities, as Gateway tells it the configured ones. Only the
socket is a stand-in (mgmt_common.FakeDealer): Agent.__init__ runs for real (keys made
for the run) and its socket is then swapped.

Every input starts from the same state: the agent at generation 4 of store
"fuzzstore", the gateway's policy redblue (Gateway.load), the agent waiting for nothing.
One input is up to 6 messages, one per line (after a 0x1f byte, an extra frame in hex:
a record block).

Invariants, after every message:
- handle() returns; no mgmt_message_failed event (an exception the agent did not
  foresee), and every message the agent sends is JSON with "v": 1, its gateway id and
  type ack or nack;
- an ack names the generation now applied, which the agent and the gateway's policy
  both hold, and the policy's document loads on its own in a fresh Policy and comes
  back the same (round-trip; leniently, as the agent takes a store's documents);
- a message with no ack (ignored, refused, nack) changes nothing: the agent's applied
  generation and store, the gateway policy's generation and document, and the static
  neighbours in the C neighbour table;
- the C neighbour table holds every static neighbour of the policy with its MAC.
"""
import copy
import ipaddress
import json
import os
import shutil
import sys
import tempfile

import atheris

import mgmt_common as mc

with atheris.instrument_imports(include=["dataplane"]):
    import dataplane.agent
    import dataplane.gateway
    import dataplane.policy
from dataplane import _dataplane as dp  # noqa: E402
from dataplane.config import runtime_dir  # noqa: E402

GEN, STORE = 1 + len(mc.template_ops()), "fuzzstore"
PMAC, CMAC = "02:00:00:00:00:aa", "02:00:00:00:00:bb"
SIZES = {"records": 64, "routes": 64, "neighbours": 16, "rewrites": 16}
gw = agent = None


def start():
    """EAL, a mempool and the NVGRE tables, once; a Gateway and an Agent over them."""
    global gw, agent
    import zmq.auth

    tmpdir = tempfile.TemporaryDirectory(prefix="nvgw-fuzz-agent-")
    tmp = tmpdir.name
    dp.eal_init(["fuzz-agent", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                 "--log-level=error", "-l", "0", "--no-telemetry",
                 f"--file-prefix=nvgwfuzz{os.getpid()}"])
    # EAL would leave its runtime directory behind; without telemetry or shared
    # config it needs nothing in it after init
    shutil.rmtree(runtime_dir(f"nvgwfuzz{os.getpid()}"), ignore_errors=True)
    pool = dp.Mempool("fuzz_agent", 1024, 0)
    gw = dataplane.gateway.Gateway(None)
    gw.pool = pool
    gw.nv = dp.Nvgre(pool, 0, 1, SIZES["records"], SIZES["routes"], SIZES["neighbours"],
                     SIZES["rewrites"], 1)
    gw.policy = dataplane.policy.Policy(gw.nv, PMAC, CMAC,
                                        dict(SIZES))
    pub, _ = zmq.auth.create_certificates(tmp, "gw1")
    spub, _ = zmq.auth.create_certificates(tmp, "server")
    agent = dataplane.agent.Agent({"id": "gw1", "endpoint": f"inproc://fuzz-agent-{os.getpid()}",
                                   "heartbeat_ms": 1000, "key": os.path.join(tmp, "gw1.key_secret"),
                                   "server_key": spub}, gw)
    tmpdir.cleanup()  # the agent has read its keys; each fuzzer run made a directory
    agent.sock.close()
    agent.sock = mc.FakeDealer()
    reset()


def reset():
    gw.load(copy.deepcopy(mc.REDBLUE), generation=GEN)
    agent.applied, agent.store, agent.our_changes = GEN, STORE, gw.policy.changes
    agent.awaiting_snapshot, agent.connected = False, True
    agent.sock.inbox.clear()
    agent.sock.sent.clear()
    mc.EVENTS.clear()


def c_static_neighbours():
    """{(scope, ip): mac} of the C neighbour table's entries the policy set (static)."""
    return {(scope, str(ipaddress.IPv4Address(ip))): mac.hex(":")
            for scope, ip, mac in gw.nv.neighbours() if mac is not None}


def document(pol) -> dict:
    return json.loads(json.dumps(pol.document(), default=list))


def state():
    pol = gw.policy
    return (agent.applied, agent.store, pol.generation, mc.norm(document(pol)))


def one(line: bytes) -> None:
    before = state()
    c_before = c_static_neighbours()
    mc.EVENTS.clear()
    frames = mc.frames_of(line)
    raw = frames[0]
    agent.sock.inbox.append(frames)
    agent.handle()
    sent, agent.sock.sent[:] = list(agent.sock.sent), []
    bad = mc.failures(mc.EVENTS)
    mc.check(not bad, "an unforeseen exception in the agent", raw[:300], bad)
    mc.check(len(sent) <= 1, "more than one answer to one message", sent)
    msgs = [mc.decode_reply(s, "agent message") for s in sent]
    for m in msgs:
        mc.check(m.get("gateway") == "gw1" and m.get("type") in ("ack", "nack"),
                 "agent sent an unexpected message", m)
        if m["type"] == "nack":
            mc.check(isinstance(m.get("error"), str) and m["error"],
                     "a nack without an error text", m)
    pol = gw.policy
    static = {k: v for k, v in pol.neighbours.items()}
    c_now = c_static_neighbours()
    for key, mac in static.items():
        mc.check(c_now.get(key) == mac, f"static neighbour {key} is {c_now.get(key)} in C, "
                 f"{mac} in the policy", raw[:300])
    if msgs and msgs[0]["type"] == "ack":
        gen = msgs[0].get("generation")
        mc.check(agent.applied == gen and pol.generation == gen,
                 f"ack {gen}: agent at {agent.applied}, policy at {pol.generation}")
        doc = document(pol)
        fresh = dataplane.policy.Policy(None, PMAC, CMAC, dict(pol.capacity))
        # as the agent took it: a store's document, held to the rules of its time
        fresh.load_document(json.loads(json.dumps(doc)), lenient=True)
        mc.check(mc.norm(document(fresh)) == mc.norm(doc),
                 "the applied policy does not round-trip", raw[:300])
    else:
        mc.check(state() == before, "a message that was not acknowledged changed the gateway",
                 raw[:300], before[:3], state()[:3])
        mc.check(c_now == c_before, "a message that was not acknowledged changed the C "
                 "neighbour table", raw[:300])


def TestOneInput(data: bytes) -> None:
    reset()
    for raw in mc.split_messages(data):
        one(raw)


def main():
    start()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
