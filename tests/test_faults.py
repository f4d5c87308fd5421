"""Faults, with real processes: nvgw-mgmt killed mid-commit, a gateway killed under
traffic, the store read-only or its disk full.

1. nvgw-mgmt gets a 100,000-record document through its client socket and is killed with
   SIGKILL while it commits it (the moment its SQLite WAL is first written): the gateway
   keeps the last whole generation, the store passes `PRAGMA integrity_check` with its
   generation, document and changelog consistent; after a restart everything converges.
2. A gateway in a namespace is killed with SIGKILL under live Red/Blue traffic and started
   again: it gets its whole policy from nvgw-mgmt by itself, and every packet sent after
   it has it is delivered; what the new process received is delivered or counted.
3. The SQLite file made immutable (`chattr +i`: root ignores file modes) and, in a mount
   namespace of its own, a tmpfs that is full: the change is refused with a clear error,
   nothing is half-applied, the generation stays, nvgw-mgmt keeps serving, and once the
   fault is gone the next change commits.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dataplane import config
from dataplane.control import ControlClient
from dataplane.errors import NvgwError
from harness import GatewayProcess, PcapPort
from mgmt.store import Store
from mgmt_harness import Keys, MgmtProcess, agent_body, wait_for
from nvgw_helpers import FABRIC, TENANTS, VM_CA, redblue_policy, write_policy

WAIT = 15.0
N_BIG = 100_000


def empty_ports():
    return [PcapPort(FABRIC, "provider"), PcapPort(TENANTS, "customer")]


def big_body(mgmt, keys, gw_id) -> str:
    return agent_body(mgmt, keys, gw_id).replace("records = 4096", "records = 131072")


def big_doc(n: int, pa: str) -> dict:
    """Red/Blue plus a /12 virtual subnet in Blue's domain with n lookup records at `pa`."""
    doc = redblue_policy()
    doc["routing_domains"][0]["subnets"].append({"vsid": 5002, "prefix": "10.64.0.0/12"})
    base = int(ipaddress.IPv4Address("10.64.0.0")) + 2
    doc["records"] += [{"vsid": 5002, "ca": str(ipaddress.IPv4Address(base + i)),
                        "mac": f"00:15:5d:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                        "pa": pa, "method": "encap"} for i in range(n)]
    return doc


def records(doc: dict) -> dict:
    return {(r["vsid"], r["ca"]): r["pa"] for r in doc["records"]}


def check_store(path: Path) -> tuple[int, dict]:
    """Open the store as nvgw-mgmt would; it must be whole and self-consistent."""
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    store = Store(str(path))
    try:
        gens = [g for (g,) in store.db.execute("SELECT generation FROM changelog "
                                               "ORDER BY generation")]
        assert gens == list(range(1, store.generation + 1)), \
            f"changelog {gens[:3]}..{gens[-3:]} at generation {store.generation}"
        # The changelog's last batch is what made the stored document.
        last = store.changes_since(store.generation - 1)
        assert last and last[0][0] == store.generation, (store.generation, gens, last)
        return store.generation, store.document
    finally:
        store.close()


# -- 1. nvgw-mgmt killed while it validates / commits 100k records -------------------------


def big_ops(n: int, pa: str) -> list[dict]:
    """n `set record` operations in the /12 subnet of big_doc."""
    return [{"op": "set", "kind": "record", **r}
            for r in big_doc(n, pa)["records"][2:]]


def test_mgmt_killed_mid_batch_keeps_whole_generations(tmp_path):
    """A: Red/Blue plus an empty /12 subnet, applied everywhere. B: 100,000 records in one
    batch through the client socket. nvgw-mgmt is killed twice while it handles B: once
    while it validates, once at its first write to the SQLite WAL (mid-commit)."""
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    mgmt = MgmtProcess(tmp_path / "mgmt", keys).start()
    gw = None
    try:
        gw = GatewayProcess(tmp_path / "gw1", empty_ports(), big_body(mgmt, keys, "gw1"),
                            memory_mb=512).start()
        control = ControlClient(gw.endpoint, timeout_ms=30000)    # 100k records: slow views
        c = mgmt.client()
        doc_a = big_doc(0, "192.168.1.10")
        gen_a = c.load(doc_a)["generation"]
        c.wait(gen_a, timeout=WAIT, min_gateways=1)
        ops_b = big_ops(N_BIG, "192.168.1.11")
        request_b = json.dumps({"v": 1, "type": "apply", "ops": ops_b}).encode()
        kills = []
        for phase in ("validating", "committing"):
            time.sleep(0.3)             # the gateway's ack is stored; nothing else writes
            wal = Path(f"{mgmt.db}-wal")
            before = wal.stat().st_mtime_ns
            replies = []
            c = mgmt.client(timeout=60)
            sender = threading.Thread(target=lambda: replies.append(_try(c.send_raw,
                                                                          request_b)))
            t = time.monotonic()
            sender.start()
            if phase == "validating":
                time.sleep(0.25)        # receiving/validating (about 1 s on 2 busy cores)
                if wal.stat().st_mtime_ns != before:
                    phase = "committing already"
            else:
                deadline = time.monotonic() + 60
                while wal.stat().st_mtime_ns == before and time.monotonic() < deadline:
                    time.sleep(0.0002)
                assert wal.stat().st_mtime_ns != before, \
                    "nvgw-mgmt did not begin its commit within 60 s: nothing to kill it in"
            mgmt.stop(signal.SIGKILL)
            kills.append(f"{phase} ({time.monotonic() - t:.2f} s after the request)")
            sender.join(70)
            assert isinstance(replies[0], NvgwError), f"the batch was answered: {replies[0]}"

            # The gateway: the last whole generation (B never reached it).
            p = control.request("show", what="policy")
            assert p["generation"] == gen_a and records(p) == records(doc_a)
            # The store: whole, consistent, and either A or all of B.
            gen, doc = check_store(mgmt.db)
            assert gen in (gen_a, gen_a + 1)
            want = records(doc_a) if gen == gen_a else \
                {**records(doc_a), **records({"records": ops_b})}
            assert records(doc) == want
            mgmt.start()
            c = mgmt.client()
            assert c.generation() == gen
            c.wait(gen, timeout=60, min_gateways=1)
            if gen != gen_a:
                break                   # B made it whole before the kill: converged above

        # Restarted: nothing lost, the gateway converges, and changes flow again.
        gen2 = c.migrate(5001, VM_CA, "192.168.1.12")["generation"]
        assert gen2 == gen + 1
        c.wait(gen2, timeout=WAIT, min_gateways=1)
        p = control.request("show", what="policy")
        assert p["generation"] == gen2 and records(p) == records(c.policy())
        print(f"\nmgmt kill: a batch of {N_BIG} records, killed while " + ", ".join(kills) +
              f"; store at generation {gen}, then {gen2}")
    finally:
        if gw is not None:
            gw.stop()
        mgmt.stop()


def _try(fn, *args):
    try:
        return fn(*args)
    except NvgwError as e:
        return e


# -- 2. a gateway killed and restarted under live traffic ---------------------------------


def test_gateway_killed_under_traffic_resyncs(tmp_path):
    import test_migration as tm
    from netns import Netns, NetnsGateway, Traffic, unavailable
    if unavailable():
        pytest.skip(unavailable())
    n = 10000                                   # 5 s at 2000/s: room for a restart
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    order = [(("blue", "red")[i % 2], i // 2) for i in range(n)]
    with Netns() as ns, MgmtProcess(tmp_path / "mgmt", keys) as mgmt:
        gw1 = NetnsGateway(ns, tmp_path / "gw1", agent_body(mgmt, keys, "gw1")).start()
        gw2 = None
        try:
            c = mgmt.client()
            gen = c.load(json.loads(tm.policy_file(tmp_path).read_text()))["generation"]
            c.wait(gen, timeout=WAIT, min_gateways=1)
            tr = Traffic(ns, tmp_path / "traffic", "cus1", tm.frames(ns, order), tm.RATE,
                         capture=["fab1"], quiet=0.5, limit=20.0)
            t0 = tr.start()
            time.sleep(max(0.0, t0 + 0.4 - time.monotonic()))
            gw1.stop(signal.SIGKILL)
            killed = time.monotonic()
            gw2 = NetnsGateway(ns, tmp_path / "gw2", agent_body(mgmt, keys, "gw1")).start()
            started = time.monotonic()
            wait_for(lambda: gw2.request("show", what="policy")["generation"] == gen, WAIT,
                     interval=0.01, what="the restarted gateway's policy")
            ready = time.monotonic()
            res = tr.wait()
            live = gw2.counters()
        finally:
            rc = gw2.stop() if gw2 is not None else None
            gw1.stop()
        assert rc == 0, gw2.stderr
        assert gw1.returncode == -signal.SIGKILL
        # the killed one's EAL runtime directory: removed by the next gateway's start
        assert "stale_runtime_removed" in gw2.stderr and not os.path.exists(
            os.path.join(os.path.dirname(config.runtime_dir()), f"nvgw{gw1.proc.pid}"))
        assert not res.truncated and len(res.sent_times) == n, res.output
        times = res.sent_times
        assert times[0] < killed < ready < times[-1] - 0.5, "restart outside the traffic"
        got = [tm.decode(ns, raw) for _w, raw in res.captures["fab1"]
               if raw[12:14] == b"\x08\x00" and len(raw) > 34 and raw[23] == 47]
        want_pa = {"blue": tm.OLD_PA, "red": tm.RED_PA}
        wrong = [(t, s, pa) for t, s, pa in got if pa != want_pa[t]]
        assert not wrong, f"misdelivered: {wrong[:5]}"
        seen = {}
        for t, s, _pa in got:
            seen[t, s] = seen.get((t, s), 0) + 1
        assert max(seen.values()) == 1, "a packet delivered twice"
        after = [k for i, k in enumerate(order) if times[i] > ready]
        missing = [k for k in after if k not in seen]
        assert not missing, (f"{len(missing)} of {len(after)} packets sent after the resync "
                             f"were lost, first {missing[:5]}")
        # What the new process received is delivered or counted as a drop with a reason.
        final = gw2.final_counters()
        ports = {p["name"]: p for p in final["ports"]}
        drops = {k: v for k, v in final["drops"].items() if v}
        rx = sum(p["rx_pkts"] for p in ports.values())
        tx = sum(p["tx_pkts"] for p in ports.values())
        # what the exception thread sent (an ARP request for a next hop met unresolved)
        # counts as tx too; what the workers punted to it, as exceptions
        exc = final["exceptions"]
        injected = exc["arp_replies"] + exc["arp_requests"] + exc["echo_replies"] + \
            exc["frag_needed"]
        punted = sum(w["exceptions"] for w in final["workers"])
        assert rx == tx - injected + sum(drops.values()) + punted, (ports, drops, exc)
        # only before its policy came whole: none, or some of it (the first snapshot
        # goes into the tables call by call; a packet may meet the provider set and
        # its VSID, VLAN, record, route or neighbour not yet)
        assert set(drops) <= {"no_policy", "unknown_vsid", "unknown_vlan", "no_route",
                              "no_lookup_record", "spoofed_pa", "no_neighbour"}, drops
        assert final["generation"] == gen and live["generation"] == gen
        events = [json.loads(line)["event"] for line in gw2.stderr.splitlines()
                  if line.startswith("{")]
        assert "snapshot_applied" in events, events
        print(f"\ngateway kill: {len(got)} of {n} delivered; restart to policy "
              f"{ready - killed:.2f} s (process start {started - killed:.2f} s); "
              f"{len(after)} sent after the resync, all delivered; the new process "
              f"dropped {drops} before it had the policy")


# -- 3. the store read-only, the disk full ------------------------------------------------


ONE = [{"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.8",
        "mac": "00:15:5d:b1:00:08", "pa": "192.168.1.10"}]


def refused_and_unchanged(c, gw, gen: int, doc: dict, ops: list, why: str) -> str:
    with pytest.raises(NvgwError) as e:
        c.apply(ops)
    msg = str(e.value)
    assert why in msg and f"generation stays {gen}" in msg, msg
    assert c.generation() == gen and c.policy() == {"generation": gen, **doc}
    assert [g["state"] for g in c.gateways()] == ["up"]
    assert gw.request("show", what="policy")["generation"] == gen
    return msg


def test_store_read_only_refuses_changes_and_keeps_serving(tmp_path):
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    mgmt = MgmtProcess(tmp_path / "mgmt", keys).start()
    files = [mgmt.db, Path(f"{mgmt.db}-wal")]       # not -shm: it is mapped (SIGBUS)
    gw = None
    try:
        gw = GatewayProcess(tmp_path / "gw1", empty_ports(),
                            agent_body(mgmt, keys, "gw1")).start()
        c = mgmt.client()
        gen = c.load(redblue_policy())["generation"]
        c.wait(gen, timeout=WAIT, min_gateways=1)
        doc = {k: v for k, v in c.policy().items() if k != "generation"}
        r = subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"chattr +i does not work here: {r.stderr.strip()}")
        msg = refused_and_unchanged(c, gw, gen, doc, ONE, "cannot commit generation 2")
        # A gateway that reconnects (its row cannot be stored) is still served.
        gw.stop()
        gw = GatewayProcess(tmp_path / "gw1b", empty_ports(),
                            agent_body(mgmt, keys, "gw1")).start()
        wait_for(lambda: gw.request("show", what="policy")["generation"] == gen, WAIT,
                 what="the new gateway process's policy")
        wait_for(lambda: any('"store_write_failed"' in line for line in mgmt.log_lines()),
                 WAIT, what="store_write_failed logged")
        subprocess.run(["chattr", "-i", *map(str, files)], check=True)
        assert c.apply(ONE)["generation"] == gen + 1
        c.wait(gen + 1, timeout=WAIT, min_gateways=1)
        assert mgmt.proc.poll() is None
        print(f"\nread-only store: {msg}")
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True)
        if gw is not None:
            gw.stop()
        mgmt.stop()
    assert check_store(mgmt.db)[0] == gen + 1


def copy_out(inside: Path, dest: Path) -> Path:
    """Copy the store out of nvgw-mgmt's mount namespace (it is idle: the copy is
    consistent). SQLite itself cannot open it there: it resolves /proc/PID/root."""
    dest.mkdir()
    for name in ("mgmt.db", "mgmt.db-wal"):
        if (inside / name).exists():
            shutil.copyfile(inside / name, dest / name)
    return dest / "mgmt.db"


def test_store_disk_full_refuses_changes_and_keeps_serving(tmp_path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (a mount namespace with a small tmpfs)")
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    full = tmp_path / "mgmt" / "small"
    full.mkdir(parents=True)
    # nvgw-mgmt in a mount namespace of its own, its store on a 2 MB tmpfs mounted there.
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs -o size=2m nvgwtest "{full}" && exec "$@"', "sh"]
    mgmt = MgmtProcess(tmp_path / "mgmt", keys, prefix=prefix, db=full / "mgmt.db").start()
    gw = None
    try:
        inside = Path(f"/proc/{mgmt.proc.pid}/root") / str(full).lstrip("/")
        assert (inside / "mgmt.db").exists() and not (full / "mgmt.db").exists()
        gw = GatewayProcess(tmp_path / "gw1", empty_ports(),
                            agent_body(mgmt, keys, "gw1")).start()
        c = mgmt.client()
        gen = c.load(redblue_policy())["generation"]
        c.wait(gen, timeout=WAIT, min_gateways=1)
        doc = {k: v for k, v in c.policy().items() if k != "generation"}
        fd = os.open(inside / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:                            # fill the tmpfs to the last byte
            for chunk in (65536, 512):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        big = [{"op": "set", "kind": "record", "vsid": 5001, "ca": f"10.1.1.{20 + i}",
                "mac": f"00:15:5d:b1:01:{i:02x}", "pa": "192.168.1.10"} for i in range(200)]
        msg = refused_and_unchanged(c, gw, gen, doc, big, "database or disk is full")
        gen_db, doc_db = check_store(copy_out(inside, tmp_path / "copy1"))
        assert (gen_db, doc_db) == (gen, doc)
        (inside / "filler").unlink()
        assert c.apply(big)["generation"] == gen + 1
        c.wait(gen + 1, timeout=WAIT, min_gateways=1)
        assert len(gw.request("show", what="policy")["records"]) == 2 + len(big)
        assert check_store(copy_out(inside, tmp_path / "copy2"))[0] == gen + 1
        print(f"\ndisk full: {msg}")
    finally:
        if gw is not None:
            gw.stop()
        mgmt.stop()
