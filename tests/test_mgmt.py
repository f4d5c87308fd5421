"""The management plane with real processes and real sockets: nvgw-mgmt (SQLite store,
CurveZMQ on both of its sockets), the agent in nvgw-dataplane, nvgwctl --mgmt.

1. The store: validation before commit (one message per problem, nothing written),
   generations, the changelog, persistence.
2. Red/Blue applied with `nvgwctl apply` through nvgw-mgmt to a gateway that started
   with no policy: the Red/Blue traffic of test_nvgre passes byte for byte.
3. Two gateways converge; refused requests (unknown key, malformed, invalid policy)
   change nothing; killing nvgw-mgmt keeps the gateways' policy; restarting it loses
   nothing; restarted gateways get their whole policy back by themselves.
4. Live traffic in a namespace: nvgw-mgmt killed and restarted, refusals, then
   `migrate` through nvgw-mgmt while traffic runs: no packet lost or misdirected.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP

from dataplane import recblock
from dataplane.control import ControlClient

from dataplane.errors import NvgwError
from dataplane.policy import Policy, PolicyError
from harness import GatewayProcess, PcapPort
from mgmt.store import Store
from mgmt_harness import Keys, MgmtProcess, agent_body, ctl, wait_for
from nvgw_helpers import (BLUE, FABRIC, RED, TENANTS, VM_CA, Injector, assert_drops,
                          assert_packets, live_port, redblue_policy, udp, veth_pair,
                          write_policy)

WAIT = 10.0


def records(doc: dict) -> dict:
    return {(r["vsid"], r["ca"]): r["pa"] for r in doc["records"]}


def gw_policy(gw) -> dict:
    return gw.request("show", what="policy")


def empty_ports():
    """pcap ports with no input: the gateway only holds policy."""
    return [PcapPort(FABRIC, "provider"), PcapPort(TENANTS, "customer")]


# -- 1. the store ---------------------------------------------------------------------


@pytest.mark.parametrize("bad, message", [
    ({"op": "set", "kind": "subnet", "rdid": 1, "vsid": 4095, "prefix": "10.2.0.0/24"},
     "VSID 4095 is outside 4096..16777214"),
    ({"op": "set", "kind": "subnet", "rdid": 1, "vsid": 5002, "prefix": "10.2.0.0/33"},
     "is not an IPv4 prefix"),
    ({"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.9", "mac": "00:15:5d",
      "pa": "192.168.1.10"}, "is not a MAC address"),
    ({"op": "set", "kind": "attachment", "rdid": 1, "vlan": 4095, "address": "172.16.9.1/24"},
     "must be an integer in 1..4094"),
    ({"op": "set", "kind": "record", "vsid": 7001, "ca": "10.1.1.9", "mac": "00:15:5d:00:00:01",
      "pa": "192.168.1.10"}, "virtual subnet 7001 does not exist"),
    ({"op": "set", "kind": "route", "rdid": 9, "prefix": "0.0.0.0/0", "next_hop": "172.16.1.254"},
     "routing domain 9 does not exist"),
    ({"op": "set", "kind": "subnet", "rdid": 2, "vsid": 5001, "prefix": "10.1.1.0/24"},
     "VSID 5001 is already in routing domain 1"),
])
def test_store_refuses_invalid_batches_and_writes_nothing(tmp_path, bad, message):
    db = tmp_path / "mgmt.db"
    store = Store(str(db))
    assert store.load(redblue_policy()) == (1, True)
    dump = lambda: list(sqlite3.connect(str(db)).iterdump())      # noqa: E731
    before = dump(), store.document, store.db.total_changes
    good = {"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.8",
            "mac": "00:15:5d:b1:00:08", "pa": "192.168.1.10"}
    with pytest.raises(PolicyError, match=message.replace(".", r"\.")):
        store.apply([good, bad])                 # whole or nothing: `good` is not kept
    assert store.generation == 1 and store.document == before[1]
    assert (5001, "10.1.1.8") not in store.model.records
    assert store.db.total_changes == before[2]   # not one row was written
    store.close()
    assert dump() == before[0]
    again = Store(str(db))
    assert again.generation == 1 and again.document == before[1]
    [(g, kind, doc, block)] = again.changes_since(0)
    # a whole policy: the document without its records, and all of them as a block
    assert (g, kind, doc) == (1, "document", {**before[1], "records": []})
    assert recblock.to_dicts(np.frombuffer(block, recblock.DTYPE)) == before[1]["records"]


def test_store_generations_changelog_and_persistence(tmp_path):
    db = tmp_path / "mgmt.db"
    store = Store(str(db))
    sid = store.store_id
    assert (store.generation, store.changes_since(0)) == (0, [])
    doc = redblue_policy()
    assert store.load(doc) == (1, True)
    assert store.load(doc) == (1, False)          # same document: nothing to commit
    assert store.migrate(5001, VM_CA, "192.168.1.12") == 2
    with pytest.raises(PolicyError, match="no lookup record for '10.9.9.9'"):
        store.migrate(5001, "10.9.9.9", "192.168.1.12")
    with pytest.raises(PolicyError, match="unknown key 'record'"):
        store.load({"record": []})
    dup = redblue_policy()
    dup["records"].append({**dup["records"][0], "pa": "192.168.1.50"})
    with pytest.raises(PolicyError, match="CA 10.1.1.7 appears twice in VSID 5001"):
        store.load(dup)
    # Defaults that depend on a gateway's port MACs are left for each gateway to fill in.
    sub = store.document["routing_domains"][0]["subnets"][0]
    assert "gateway_mac" not in sub and sub["gateway"] == "10.1.1.1"
    assert "mac" not in store.document["routing_domains"][0]["attachments"][0]
    store.close()
    store = Store(str(db))
    assert (store.store_id, store.generation) == (sid, 2)
    assert records(store.document)[(5001, VM_CA)] == "192.168.1.12"
    [(g, kind, ops, block)] = store.changes_since(1)
    assert (g, kind, block) == (2, "ops", None) and ops[0]["pa"] == "192.168.1.12"
    rows = sqlite3.connect(str(db)).execute("SELECT generation, command FROM changelog").fetchall()
    assert rows == [(1, "load"), (2, "migrate")]


def test_a_load_keeps_the_changelog_before_it(tmp_path):
    """A load carries all records as a block, and the changelog keeps batches back to
    the 4th latest block: with fewer blocks than that, the bound was the load itself and
    every batch before it went, so a gateway two generations behind got the whole policy
    instead of two batches. The 5th block does push the oldest out."""
    store = Store(str(tmp_path / "mgmt.db"))
    store.load(redblue_policy())
    for k in range(10):
        store.migrate(5001, "10.1.1.7", f"192.168.1.{20 + k}")
    doc = redblue_policy()
    doc["records"] = doc["records"][:1]
    gen, _ = store.load(doc)
    assert [c[0] for c in store.changes_since(gen - 2)] == [gen - 1, gen]
    assert len(store.changes_since(0)) == gen
    for k in range(3):                  # a 5th block: the first load's goes
        doc["records"][0]["pa"] = f"192.168.1.{40 + k}"
        gen, _ = store.load(doc)
    assert store.changes_since(0) is None
    assert [c[0] for c in store.changes_since(1)] == list(range(2, gen + 1))
    doc["records"][0]["pa"] = "192.168.1.50"    # a 6th: back to the 4th latest block
    gen, _ = store.load(doc)
    assert store.changes_since(gen - 5) is None
    assert [c[0] for c in store.changes_since(gen - 4)] == list(range(gen - 3, gen + 1))
    store.close()


def test_a_second_nvgw_mgmt_on_the_same_socket_or_store_is_refused(tmp_path):
    """libzmq's bind replaces an ipc socket file that is there: a second nvgw-mgmt on
    the same path took the first one's clients, and its failed start left the path
    dead. Refused before it binds; the first one keeps answering. (The first's store
    is in a directory that does not exist yet: a fresh install.)"""
    keys = Keys.create(tmp_path / "keys", [])
    m = MgmtProcess(tmp_path / "one", keys, db=tmp_path / "var" / "lib" / "mgmt.db").start()
    try:
        base = [sys.executable, "-m", "mgmt.server", "--keys", str(keys.mgmt_dir)]
        for db, clients, gws, message in (
                (tmp_path / "other.db", m.clients, f"ipc://{tmp_path}/g2.sock",
                 f"nvgw-mgmt: {m.clients}: in use by another nvgw-mgmt"),
                (m.db, f"ipc://{tmp_path}/c3.sock", f"ipc://{tmp_path}/g3.sock",
                 f"nvgw-mgmt: cannot open {m.db}: in use by another nvgw-mgmt")):
            p = subprocess.run(base + ["--db", str(db), "--clients", clients,
                                       "--gateways", gws], capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 2 and p.stderr.strip().endswith(message), p.stderr
            assert "Traceback" not in p.stderr
        assert m.client().generation() == 0
    finally:
        assert m.stop() == 0


def test_a_document_of_more_than_a_mib_with_a_record_block_loads(tmp_path):
    """The message before a record block was taken for a block only up to 1 MiB: a
    policy of 19,000 routes with 1,200 records came back as 'request refused'."""
    keys = Keys.create(tmp_path / "keys", [])
    m = MgmtProcess(tmp_path / "mgmt", keys).start()
    try:
        doc = redblue_policy()
        doc["routing_domains"][0]["routes"] = [
            {"prefix": f"10.{100 + i // 256}.{i % 256}.0/24", "next_hop": "172.16.1.20"}
            for i in range(19000)]
        doc["routing_domains"][0]["subnets"].append({"vsid": 5002, "prefix": "10.64.0.0/16"})
        doc["records"] += [{"vsid": 5002, "ca": f"10.64.{i // 250}.{2 + i % 250}",
                            "pa": "192.168.1.12", "mac": "00:15:5d:00:00:02",
                            "method": "encap"} for i in range(1200)]
        assert len(json.dumps({**doc, "records": []})) > 1 << 20
        assert m.client(timeout=30).load(doc)["generation"] == 1
        policy = m.client(timeout=30).policy()
        assert len(policy["records"]) == 1202
        assert len(policy["routing_domains"][0]["routes"]) == 19000
    finally:
        assert m.stop() == 0


def test_operator_mistakes_with_keys_files_and_options_are_one_line(tmp_path):
    """keygen where it cannot write, a JSON file nested too deeply, nonsense server
    options: one clear line and a non-zero exit, never a traceback; a new secret key
    is never readable by others."""
    def run(*argv):
        p = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        return p.stderr.strip().splitlines()[-1]

    (tmp_path / "file").write_text("")
    assert run("mgmt.ctl", "keygen", "file", "k") == \
        "nvgwctl: cannot write a key pair in file: File exists"
    (tmp_path / "deep.json").write_text("[" * 100_000)
    assert run("mgmt.ctl", "--gateway", f"ipc://{tmp_path}/none", "apply", "-f",
               "deep.json") == "nvgwctl: cannot read deep.json: JSON nested too deeply"
    for opt, message in (("--heartbeat", "--heartbeat must be 0.05..60 seconds"),
                         ("--max-message", "--max-message must be at least 65536 bytes")):
        assert message in run("mgmt.server", opt, "0", "--db", "x.db", "--clients",
                              f"ipc://{tmp_path}/c", "--gateways", f"ipc://{tmp_path}/g",
                              "--keys", str(tmp_path))
    keys = subprocess.run([sys.executable, "-m", "mgmt.ctl", "keygen", "k", "ops"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    assert (tmp_path / "k" / "ops.key_secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "ops.key").stat().st_mode & 0o777 == 0o644
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o777 & ~mask     # as mkdir makes it


def test_a_store_an_older_version_accepted_still_opens(tmp_path):
    """Rules came after policies were stored (session 27: neighbours on an attached
    VLAN and its subnet, ...): a stored policy that breaks one still opens (nvgw-mgmt
    down would leave no way to fix it) with a warning, and gateways take it from
    the store (Gateway.load trusted). A change is checked in full: reloading the
    document as it is names the problem; a change elsewhere goes through."""
    db = tmp_path / "mgmt.db"
    store = Store(str(db))
    assert store.load(redblue_policy()) == (1, True)
    store.close()
    stored = json.loads(sqlite3.connect(str(db)).execute(
        "SELECT value FROM meta WHERE key = 'document'").fetchone()[0])
    stored["neighbours"].append({"vlan": 300, "ip": "172.16.9.9", "mac": "02:00:00:00:09:09"})
    con = sqlite3.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'document'", (json.dumps(stored),))
    con.commit()
    con.close()
    store = Store(str(db))                      # opens, with the old neighbour
    assert {"vlan": 300, "ip": "172.16.9.9", "mac": "02:00:00:00:09:09"} in \
        store.document["neighbours"]
    snapshot = store.document
    gateway = Policy(None)
    gateway.load_document(copy.deepcopy(snapshot), lenient=True)     # as the agent does
    with pytest.raises(PolicyError, match="neighbour 172.16.9.9: VLAN 300 is not attached"):
        Policy(None).load_document(copy.deepcopy(snapshot))
    with pytest.raises(PolicyError, match="neighbour 172.16.9.9: VLAN 300 is not attached"):
        store.load(copy.deepcopy(snapshot))
    assert store.migrate(5001, VM_CA, "192.168.1.12") == 2
    store.close()


def test_a_restored_store_that_went_on_differently_resyncs_its_gateways(tmp_path):
    """A gateway applied generation 2 of one history; the store is then restored from a
    backup at generation 1, and another change makes generation 2 there. Same store
    id, same number: only the history's digest, which the gateway says back, tells
    them apart (before, the gateway kept the other generation 2 for good)."""
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    mgmt = MgmtProcess(tmp_path / "mgmt", keys).start()
    gw = None
    try:
        gw = GatewayProcess(tmp_path / "gw1", empty_ports(),
                            agent_body(mgmt, keys, "gw1")).start()
        c = mgmt.client()
        assert c.load(redblue_policy())["generation"] == 1
        c.wait(1, timeout=WAIT, min_gateways=1)
        backup = sqlite3.connect(str(tmp_path / "backup.db"))
        live = sqlite3.connect(str(mgmt.db))
        live.backup(backup)
        live.close()
        backup.close()
        assert c.migrate(5001, VM_CA, "192.168.1.12")["generation"] == 2
        c.wait(2, timeout=WAIT, min_gateways=1)
        assert mgmt.stop() == 0
        for f in (mgmt.db, Path(f"{mgmt.db}-wal"), Path(f"{mgmt.db}-shm")):
            f.unlink(missing_ok=True)
        (tmp_path / "backup.db").rename(mgmt.db)        # restored: generation 1
        store = Store(str(mgmt.db))
        assert store.migrate(5001, VM_CA, "192.168.1.13") == 2     # another generation 2
        store.close()
        mgmt.start()
        wait_for(lambda: records(gw_policy(gw))[(5001, VM_CA)] == "192.168.1.13", WAIT,
                 what="the gateway to take the restored store's generation 2")
        assert gw_policy(gw)["generation"] == 2
        assert any('"gateway_diverged"' in line for line in mgmt.log_lines())
    finally:
        if gw is not None:
            gw.stop()
        mgmt.stop()


def test_the_history_digest_is_of_the_content_only(tmp_path):
    """The same change after the same history has the same digest, however the model
    holds its records (a store rebuilt from its buckets orders them otherwise); another
    change, another digest. An older nvgw-mgmt can still write the file (the digests
    have a table of their own: the changelog keeps its columns)."""
    def doc(n, pa="192.168.1.10"):
        d = redblue_policy()
        d["routing_domains"][0]["subnets"].append({"vsid": 5002, "prefix": "10.2.0.0/16"})
        d["records"] += [{"vsid": 5002, "ca": f"10.2.{i >> 8}.{i & 255}", "pa": pa,
                          "mac": "00:15:5d:02:00:01", "method": "encap"} for i in range(2, n + 1)]
        return d

    a = Store(str(tmp_path / "a.db"))
    a.load(doc(1500))
    a.load(doc(1500, pa="192.168.1.11"))
    live = sqlite3.connect(str(tmp_path / "a.db"))
    copy_ = sqlite3.connect(str(tmp_path / "b.db"))
    live.backup(copy_)
    copy_.close()
    live.close()
    b = Store(str(tmp_path / "b.db"))          # its records come back from the buckets
    assert b.digest == a.digest and b.digest_of(1) == a.digest_of(1)
    assert a.load(doc(2000))[0] == b.load(doc(2000))[0] == 3
    assert a.digest == b.digest
    assert b.migrate(5001, VM_CA, "192.168.1.13") == 4
    assert a.migrate(5001, VM_CA, "192.168.1.12") == 4 and a.digest != b.digest
    columns = [r[1] for r in a.db.execute("PRAGMA table_info(changelog)")]
    assert columns == ["generation", "kind", "body", "command", "at", "block"]
    a.close()
    b.close()


def test_store_reopened_knows_the_pas_its_rewrite_records_own(tmp_path):
    """The records come back from the store's rows, not one by one: the PA a rewrite
    record owns must come back too (it was lost: the record could not be deleted or
    set again, and another record could take its PA, which every gateway refuses)."""
    db = tmp_path / "mgmt.db"
    doc = redblue_policy()
    vm = {"vsid": 5001, "ca": "10.1.1.9", "mac": "00:15:5d:00:00:09", "pa": "192.168.1.50",
          "method": "rewrite"}
    doc["records"].append(vm)
    store = Store(str(db))
    assert store.load(doc) == (1, True)
    store.close()
    store = Store(str(db))
    assert store.model.rw_pas == {"192.168.1.50": ("record", (5001, "10.1.1.9"))}
    assert store.load(doc) == (1, False)                # the same document again
    with pytest.raises(PolicyError, match="PA 192.168.1.50 is already the rewrite PA of "
                                          "record 10.1.1.9"):
        store.apply([{"op": "set", "kind": "record", **vm, "vsid": 6001}])
    assert store.apply([{"op": "del", "kind": "record", "vsid": 5001, "ca": "10.1.1.9"}]) == 2


# -- 2. Red/Blue through nvgw-mgmt, exact bytes ----------------------------------------


def test_redblue_applied_with_nvgwctl_via_mgmt_passes_the_traffic_test(tmp_path):
    """The gateway starts with no policy; `nvgwctl apply -f` through nvgw-mgmt gives it
    Red/Blue; then test_nvgre's Red/Blue traffic, both directions, byte for byte."""
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    blue_up = [udp(BLUE.host, VM_CA, 40001, 80, b"blue to its VM", id=1),
               IP(src=BLUE.host, dst=VM_CA, id=2) / TCP(sport=40002, dport=443, flags="S")]
    red_up = [udp(RED.host, VM_CA, 40001, 80, b"red to its VM", id=1)]
    blue_down = [udp(VM_CA, BLUE.host, 80, 40001, b"blue VM answers", id=9)]
    red_down = [udp(VM_CA, RED.host, 80, 40001, b"red VM answers", id=9)]
    policy = write_policy(tmp_path, redblue_policy())
    try:
        fab_pair, cus_pair = veth_pair(), veth_pair()
        (fab_gw, fab_test), (cus_gw, cus_test) = fab_pair.__enter__(), cus_pair.__enter__()
    except OSError as e:
        if os.geteuid() == 0:
            raise               # root can make them: a failure, not a reason to skip
        pytest.skip(f"live traffic needs veth pairs (root): {e}")
    try:
        with MgmtProcess(tmp_path / "mgmt", keys) as mgmt:
            gwdir = tmp_path / "gw1"
            ports = [live_port(FABRIC, "provider", 0, fab_gw, gwdir),
                     live_port(TENANTS, "customer", 1, cus_gw, gwdir)]
            gw = GatewayProcess(gwdir, ports, agent_body(mgmt, keys, "gw1")).start()
            try:
                assert gw_policy(gw)["records"] == []
                r = ctl(mgmt, "apply", "-f", policy)
                assert r.returncode == 0, r.stderr
                assert r.stdout.strip() == f"applied {policy}: generation 1"
                r = ctl(mgmt, "--timeout", WAIT, "wait", "--gateways", 1)
                assert r.returncode == 0, r.stderr
                assert r.stdout.startswith("generation 1 applied by 1 connected gateways")
                assert gw_policy(gw)["generation"] == 1
                cus, fab = Injector(gw, TENANTS, cus_test), Injector(gw, FABRIC, fab_test)
                try:
                    cus.send(*[BLUE.up(p) for p in blue_up], RED.up(red_up[0]))
                    fab.send(BLUE.down(blue_down[0], flow=0x2A), RED.down(red_down[0], flow=7))
                finally:
                    cus.close()
                    fab.close()
            finally:
                assert gw.stop() == 0, gw.stderr
    finally:
        cus_pair.__exit__(None, None, None)
        fab_pair.__exit__(None, None, None)
    assert_packets(gw.sent(FABRIC), [BLUE.encap(p) for p in blue_up] + [RED.encap(red_up[0])])
    assert_packets(gw.sent(TENANTS), [BLUE.decap(blue_down[0]), RED.decap(red_down[0])])
    final = gw.final_counters()
    assert_drops(final)
    assert final["generation"] == 1
    assert final["vsids"]["5001"]["encap_pkts"] == 2 and final["vsids"]["6001"]["decap_pkts"] == 1


# -- 3. two gateways, refusals, restarts ------------------------------------------------


def test_two_gateways_converge_refusals_and_restarts(tmp_path):
    keys = Keys.create(tmp_path / "keys", ["gw1", "gw2"])
    mgmt = MgmtProcess(tmp_path / "mgmt", keys).start()
    gws = {}
    try:
        for g in ("gw1", "gw2"):
            gws[g] = GatewayProcess(tmp_path / g, empty_ports(), agent_body(mgmt, keys, g)).start()
        policy = write_policy(tmp_path, redblue_policy())
        assert ctl(mgmt, "apply", "-f", policy).returncode == 0
        r = ctl(mgmt, "--timeout", WAIT, "wait", "--gateways", 2)
        assert r.returncode == 0, r.stderr
        r = ctl(mgmt, "--json", "show", "gateways")
        rows = json.loads(r.stdout)
        assert [(x["id"], x["state"], x["applied"], x["lag"]) for x in rows] == \
            [("gw1", "up", 1, 0), ("gw2", "up", 1, 0)]
        text = ctl(mgmt, "gateways").stdout.splitlines()
        assert text[0].split() == ["ID", "STATE", "APPLIED", "LAG", "LAST_SEEN", "ERROR"]
        want = records(redblue_policy())
        for gw in gws.values():
            p = gw_policy(gw)
            assert (p["generation"], records(p)) == (1, want)
            # The subnet gateway MAC defaults to this gateway's own provider port MAC.
            assert p["routing_domains"][0]["subnets"][0]["gateway_mac"] == "02:70:63:61:70:00"

        # -- refused: an unknown key, malformed messages, an invalid policy --------------
        r = ctl(mgmt, "apply", "-f", policy, key="intruder")
        assert r.returncode == 1
        assert "refused this client's key" in r.stderr, r.stderr
        assert any('"auth_refused"' in line and '"clients"' in line for line in mgmt.log_lines())
        c = mgmt.client()
        for raw, why in [(b"{not json", "malformed message: not JSON"),
                         (b"[1, 2]", "malformed message: not a JSON object"),
                         (b'{"type": "apply", "ops": []}', "schema version None not supported"),
                         (b'{"v": 1, "type": "reboot"}', "unknown request type 'reboot'"),
                         (b'{"v": 1, "type": "apply", "ops": {}}', "field 'ops' must be list"),
                         (b'{"v": 1, "type": "migrate", "vsid": "5001", "ca": "10.1.1.7", '
                          b'"pa": "192.168.1.12"}', "field 'vsid' must be int")]:
            with pytest.raises(NvgwError, match=why.replace("(", r"\(").replace(")", r"\)")):
                c.send_raw(raw)
        bad = redblue_policy()
        bad["routing_domains"][1]["subnets"][0]["vsid"] = 5001     # a VSID in two domains
        r = ctl(mgmt, "apply", "-f", write_policy(tmp_path, bad, "bad.json"))
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.strip() == "nvgwctl: policy: virtual subnet 5001 appears twice", \
            r.stderr
        r = ctl(mgmt, "set", "record", "vsid=5001", "ca=10.1.1.9", "mac=00:15:5d",
                "pa=192.168.1.10")
        assert r.returncode == 1 and "'00:15:5d' is not a MAC address" in r.stderr
        assert c.generation() == 1
        for gw in gws.values():
            assert gw_policy(gw)["generation"] == 1

        # -- nvgw-mgmt killed: the gateways keep their policy; gw2 restarts meanwhile ----
        mgmt.stop(signal.SIGKILL)
        gws["gw2"].stop()
        gws["gw2"] = GatewayProcess(tmp_path / "gw2b", empty_ports(),
                                    agent_body(mgmt, keys, "gw2")).start()
        assert gw_policy(gws["gw2"])["records"] == []             # nothing to get it from
        assert records(gw_policy(gws["gw1"])) == want

        # -- nvgw-mgmt back: nothing lost; gw2 gets everything without operator action ---
        mgmt.start()
        c = mgmt.client()
        assert c.generation() == 1 and records(c.policy()) == want
        wait_for(lambda: gw_policy(gws["gw2"])["generation"] == 1, WAIT, what="gw2 resync")
        assert records(gw_policy(gws["gw2"])) == want
        c.wait(1, timeout=WAIT, min_gateways=2)

        # -- changes flow to both as batches; a restarted gw1 gets the whole policy -------
        r = ctl(mgmt, "--json", "migrate", "--vsid", 5001, "--ca", VM_CA, "--pa", "192.168.1.12")
        assert r.returncode == 0 and json.loads(r.stdout)["generation"] == 2, r.stderr
        c.wait(2, timeout=WAIT, min_gateways=2)
        for gw in gws.values():
            assert records(gw_policy(gw))[(5001, VM_CA)] == "192.168.1.12"
        batches = [json.loads(line) for line in mgmt.log_lines() if '"batch_sent"' in line]
        assert {(b["gateway"], b["generation"]) for b in batches} == {("gw1", 2), ("gw2", 2)}
        gws["gw1"].stop()
        r = ctl(mgmt, "set", "record", "vsid=6001", "ca=10.1.1.8", "mac=00:15:5d:7e:00:08",
                "pa=192.168.1.11")
        assert r.returncode == 0 and r.stdout.strip() == "set record: generation 3", r.stderr
        # wait counts the connected gateways only, and names the others
        wait_for(lambda: {x["id"]: x["state"] for x in c.gateways()}["gw1"] == "down", WAIT,
                 what="gw1 seen down")
        r = ctl(mgmt, "--timeout", WAIT, "wait")
        assert r.returncode == 0, r.stderr
        first = r.stdout.splitlines()[0]
        assert first.startswith("generation 3 applied by 1 connected gateways"), r.stdout
        assert first.endswith("; not connected, so not waited for: gw1 (applied 2)"), r.stdout
        gws["gw1"] = GatewayProcess(tmp_path / "gw1b", empty_ports(),
                                    agent_body(mgmt, keys, "gw1")).start()
        c.wait(3, timeout=WAIT, min_gateways=2)
        store_doc = c.policy()
        for gw in gws.values():
            p = gw_policy(gw)
            assert p["generation"] == 3 and records(p) == records(store_doc)
        rows = {x["id"]: x for x in c.gateways()}
        assert [(rows[g]["applied"], rows[g]["lag"]) for g in ("gw1", "gw2")] == [(3, 0), (3, 0)]

        # -- a change behind nvgw-mgmt's back (the local control socket) is undone --------
        gws["gw2"].request("migrate", vsid=6001, ca=VM_CA, pa="192.168.1.99")
        wait_for(lambda: records(gw_policy(gws["gw2"])) == records(store_doc), WAIT,
                 what="gw2 back to the desired policy")
        assert gw_policy(gws["gw2"])["generation"] == 3
    finally:
        for gw in gws.values():
            gw.stop()
        mgmt.stop()


# -- 4. live traffic: nvgw-mgmt killed and back, refusals, migrate ----------------------


def test_mgmt_down_refusals_and_migrate_under_live_traffic(tmp_path):
    """Blue and Red traffic at a fixed rate through a gateway in a namespace whose policy
    came from nvgw-mgmt. While it flows: nvgw-mgmt is killed and restarted, an unknown
    key, a malformed message and an invalid policy are refused, then Blue's VM migrates
    through nvgw-mgmt. Every packet arrives exactly once; Red's never move; Blue's move
    once, and every one sent after `wait` returned goes to the new PA."""
    import test_migration as tm
    from netns import Netns, NetnsGateway, Traffic, unavailable
    if unavailable():
        pytest.skip(unavailable())
    n = 8000                                    # 4 s at 2000/s: room for a restart
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    order = [(("blue", "red")[i % 2], i // 2) for i in range(n)]
    events = {}
    with Netns() as ns, MgmtProcess(tmp_path / "mgmt", keys) as mgmt:
        gw = NetnsGateway(ns, tmp_path / "gw", agent_body(mgmt, keys, "gw1")).start()
        try:
            r = ctl(mgmt, "apply", "-f", tm.policy_file(tmp_path))
            assert r.returncode == 0, r.stderr
            mgmt.client().wait(1, timeout=WAIT, min_gateways=1)
            tr = Traffic(ns, tmp_path / "traffic", "cus1", tm.frames(ns, order), tm.RATE,
                         capture=["fab1"], quiet=0.5, limit=20.0)
            t0 = tr.start()
            time.sleep(max(0.0, t0 + 0.2 - time.monotonic()))
            mgmt.stop(signal.SIGKILL)
            events["killed"] = time.monotonic()
            wait_for(lambda: '"mgmt_lost"' in gw.err_path.read_text(errors="replace"),
                     WAIT, what="the agent noticing nvgw-mgmt gone (3 heartbeats)")
            mgmt.start()
            events["restarted"] = time.monotonic()
            c = mgmt.client()
            wait_for(lambda: [g["state"] for g in c.gateways()] == ["up"], WAIT,
                     what="gw1 back")
            with pytest.raises(NvgwError, match="refused this client's key"):
                mgmt.client("intruder", timeout=2).apply([])
            with pytest.raises(NvgwError, match="malformed message"):
                c.send_raw(b'{"v": 1, "type": ')
            with pytest.raises(NvgwError, match="lookup record 10.2.2.2 is outside virtual "
                                                "subnet 5001"):
                c.apply([{"op": "set", "kind": "record", "vsid": 5001, "ca": "10.1.1.9",
                          "mac": "00:15:5d:00:00:09", "pa": "192.168.1.99"},
                         {"op": "set", "kind": "record", "vsid": 5001, "ca": "10.2.2.2",
                          "mac": "00:15:5d:00:00:09", "pa": "192.168.1.99"}])
            assert c.generation() == 1 and gw_policy(gw)["generation"] == 1
            gen = c.migrate(5001, tm.CA, tm.NEW_PA)["generation"]
            assert gen == 2
            c.wait(gen, timeout=WAIT, min_gateways=1)
            ack = time.monotonic()
            res = tr.wait()
        finally:
            rc = gw.stop()
        assert rc == 0, gw.stderr
        assert not res.truncated and len(res.sent_times) == n, res.output
        assert res.dropped["fab1"] == 0
        times = res.sent_times
        assert times[0] < events["killed"] < events["restarted"] < ack < times[-1], \
            "the control actions fell outside the traffic"
        sent = {}
        for (t, s), when in zip(order, times):
            sent.setdefault(t, {})[s] = when
        got, other = [], []
        for _when, raw in res.captures["fab1"]:
            if raw[12:14] == b"\x08\x00" and len(raw) > 34 and raw[23] == 47:
                got.append(tm.decode(ns, raw))
            else:
                other.append(raw)
    agent_log = gw.stderr
    assert not other, f"{len(other)} unexpected frames, first {other[0].hex()}"
    assert len(got) == n
    tm.check_blue(sent, ack, got, n // 2)
    red = [(seq, pa) for t, seq, pa in got if t == "red"]
    assert sorted(seq for seq, _ in red) == list(range(n // 2))
    assert {pa for _, pa in red} == {tm.RED_PA}
    c = gw.final_counters()
    assert_drops(c)
    assert c["generation"] == 2
    assert {v: c["vsids"][v]["encap_pkts"] for v in ("5001", "6001")} == \
        {"5001": n // 2, "6001": n // 2}
    # The agent noticed nvgw-mgmt go and come back, and resynced without a snapshot.
    events = [json.loads(line)["event"] for line in agent_log.splitlines()
              if line.startswith("{")]
    assert "mgmt_lost" in events and events.count("snapshot_applied") == 1, events


# -- the [agent] section of the gateway's configuration ----------------------------------


def test_agent_config_is_validated(tmp_path):
    from dataplane import config
    from dataplane.errors import ConfigError
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    base = ('[pipeline]\nmode = "nvgre"\n'
            '[[ports]]\nname = "f"\nrole = "provider"\ndevice = "net_null0"\n'
            '[[ports]]\nname = "c"\nrole = "customer"\ndevice = "net_null1"\n')

    def agent(**kw):
        fields = {"endpoint": '"ipc:///tmp/x.sock"', "id": '"gw1"',
                  "key": f'"{keys.secret("gw1")}"', "server_key": f'"{keys.server_public}"',
                  **kw}
        return "[agent]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)

    cfg = config.parse(base + agent(), str(tmp_path / "gw.toml"))
    assert cfg.agent["heartbeat_ms"] == 1000 and cfg.agent["id"] == "gw1"
    assert config.parse(base, str(tmp_path / "gw.toml")).agent is None
    for extra, message in [
        (agent(retries="3"), "unknown key 'agent.retries'"),
        (agent(id=None), "missing key 'agent.id'"),
        (agent(endpoint='"udp://x"'), "'agent.endpoint' must be tcp://HOST:PORT or ipc://PATH"),
        (agent(id='"a b"'), "'agent.id' .a b. must be"),
        (agent(heartbeat_ms="10"), "'agent.heartbeat_ms' must be 50..60000"),
        (agent(key='"nokey"'), "'agent.key': cannot read key file"),
        (agent(key=f'"{keys.peers / "gw1.key"}"'), "holds no secret key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config.parse(base + extra, str(tmp_path / "gw.toml"))
    with pytest.raises(ConfigError, match="needs pipeline.mode = nvgre"):
        config.parse(base.replace('"nvgre"', '"forward"') + agent(), str(tmp_path / "gw.toml"))


# -- 5. many records: record blocks, bulk C apply, whole or nothing -----------------------


BULK_VSID, BULK_NET = 7001, "10.64.0.0/14"


def bulk_records(n: int, pas: int = 100) -> list[dict]:
    """n lookup records in VSID 7001 (10.64.0.0/14) behind `pas` hosts on the fabric."""
    return [{"vsid": BULK_VSID, "ca": f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
             "mac": f"00:15:5d:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
             "pa": f"192.168.1.{20 + i % pas}"}
            for i in range(2, n + 2)]           # 10.64.0.1 is the subnet's gateway


def test_bulk_records_through_mgmt(tmp_path):
    """100,000 records in one batch: client -> nvgw-mgmt -> gateway as a record block,
    applied to the C tables in one call. A block with one bad record is refused whole
    (nothing stored, nothing sent, the C tables unchanged); migrate after the load; a
    restarted nvgw-mgmt keeps the records; a restarted gateway gets them all back."""
    n = 100_000
    keys = Keys.create(tmp_path / "keys", ["gw1"])
    mgmt = MgmtProcess(tmp_path / "mgmt", keys).start()
    body = agent_body(mgmt, keys, "gw1").replace("records = 4096", "records = 131072")
    gw = GatewayProcess(tmp_path / "gw1", empty_ports(), body).start()
    try:
        c = mgmt.client(timeout=30)
        assert c.load(redblue_policy())["generation"] == 1
        c.apply([{"op": "set", "kind": "domain", "rdid": 3, "name": "bulk"},
                 {"op": "set", "kind": "subnet", "rdid": 3, "vsid": BULK_VSID,
                  "prefix": BULK_NET}])
        c.wait(2, timeout=WAIT, min_gateways=1)
        base = gw.request("show", what="tables")
        assert base["records"] == 2
        recs = bulk_records(n)
        ops = [{"op": "set", "kind": "record", **r} for r in recs]

        # -- refused whole, with the per-record message; nothing changes anywhere ------
        for i, change, message in [
                (54321, {"ca": "10.1.1.9"},
                 "lookup record 10.1.1.9 is outside virtual subnet 7001 (10.64.0.0/14)"),
                (99999, {"vsid": 7002}, "lookup record 10.65.134.161: virtual subnet 7002 "
                                        "does not exist"),
                (777, {"ca": recs[3]["ca"]}, "records: duplicate CA 10.64.0.5 in VSID 7001")]:
            bad = [dict(r) for r in recs]
            bad[i].update(change)
            with pytest.raises(NvgwError) as e:
                c.apply_records(bad)
            assert str(e.value) == message
        bad = ops[:]
        bad[500] = {**ops[500], "mac": "00:15:5d:zz:00:01"}   # refused by the client itself
        with pytest.raises(PolicyError, match="lookup record 10.64.1.246: "
                                              "'00:15:5d:zz:00:01' is not a MAC address"):
            c.apply(bad)
        assert c.generation() == 2
        assert gw.request("show", what="tables") == base
        assert gw_policy(gw)["generation"] == 2

        # -- applied: one batch, one record block, one C call --------------------------
        t = time.monotonic()
        gen = c.apply(ops)["generation"]
        c.wait(gen, timeout=WAIT, min_gateways=1)
        took = time.monotonic() - t
        assert gen == 3
        assert c.last_sent_bytes < 21 * n                    # ~20 bytes a record
        assert gw.request("show", what="tables")["records"] == n + 2
        sent = [json.loads(x) for x in mgmt.log_lines() if '"batch_sent"' in x]
        assert [(b["generation"], b["records"]) for b in sent if b["generation"] == 3] == \
            [(3, n)]                                          # sent once: no resend
        print(f"\n{n} records: {took:.2f} s client call to gateway ack")

        # -- migrate after the bulk load ----------------------------------------------
        r = recs[4242]
        g = c.migrate(BULK_VSID, r["ca"], "192.168.1.250")["generation"]
        c.wait(g, timeout=WAIT, min_gateways=1)
        assert g == 4 and gw.request("show", what="tables")["records"] == n + 2

        # -- nvgw-mgmt restarted: every record kept ---------------------------------------
        mgmt.stop(signal.SIGKILL)
        mgmt.start()
        c = mgmt.client(timeout=30)
        assert c.generation() == 4
        stored = records(c.policy())
        assert len(stored) == n + 2 and stored[(BULK_VSID, r["ca"])] == "192.168.1.250"
        assert stored[(BULK_VSID, recs[77]["ca"])] == recs[77]["pa"]

        # -- a restarted gateway gets them all back (a snapshot with a record block) ----
        gw.stop()
        gw = GatewayProcess(tmp_path / "gw1b", empty_ports(), body).start()
        # Not c.wait(): until its heartbeats go missing nvgw-mgmt still counts the stopped
        # gateway (same key) as in sync, so wait() may return before the new one says hello.
        # (its control socket answers once the 100k-record snapshot is applied: a
        # client that waits longer than the harness's 2 s for a busy machine)
        slow = ControlClient(gw.endpoint, timeout_ms=30000)
        deadline = time.monotonic() + WAIT
        while slow.request("show", what="counters").get("generation") != 4 and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.request("show", what="tables")["records"] == n + 2
        assert records(gw_policy(gw)) == stored
        assert any('"snapshot_sent"' in x and f'"records": {n + 2}' in x
                   for x in mgmt.log_lines())

        # -- `nvgwctl apply -f` of a document with half the records: one record block ---
        doc = c.policy()
        del doc["generation"]
        doc["records"] = [x for x in doc["records"] if x["vsid"] != BULK_VSID or
                          int(x["ca"].rsplit(".", 1)[1]) % 2 == 0]
        half = len(doc["records"])
        res = ctl(mgmt, "--timeout", 30, "--json", "apply", "-f",
                  write_policy(tmp_path, doc, "half.json"))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == {"generation": 5, "changed": True}
        assert any('"load"' in x and '"generation": 5' in x for x in mgmt.log_lines())
        c.wait(5, timeout=WAIT, min_gateways=1)
        assert gw.request("show", what="tables")["records"] == half
        r = subprocess.run([sys.executable, "-m", "mgmt.ctl", "--gateway", gw.endpoint,
                            "show", "tables"], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and r.stdout.split()[:4] == ["TABLE", "ENTRIES", "records",
                                                              str(half)], r.stdout + r.stderr
    finally:
        gw.stop()
        mgmt.stop()


def test_store_load_with_record_block_diffs_and_persists(tmp_path):
    """A document whose records come as a block (MgmtClient.load with >= 1,000 records):
    the same document again changes nothing; fewer records delete the rest; a restart
    reads them back from the bucket table; a bad record refuses the whole document."""
    from mgmt.client import BLOCK_MIN
    db = tmp_path / "mgmt.db"
    store = Store(str(db))
    doc = redblue_policy()
    doc["routing_domains"].append({"rdid": 3, "name": "bulk", "subnets": [
        {"vsid": BULK_VSID, "prefix": BULK_NET}]})
    recs = doc.pop("records") + bulk_records(3000)
    doc["records"] = []
    block = recblock.encode(recs, extra=())
    assert len(recs) >= BLOCK_MIN
    assert store.load(doc, block=block) == (1, True)
    assert store.load(doc, block=block) == (1, False)
    with pytest.raises(PolicyError, match="its records come in 'records' or as a record block"):
        store.load({**doc, "records": recs[:1]}, block=block)
    bad = [dict(r) for r in recs]
    bad[2999]["ca"] = "10.1.1.99"           # in VSID 7001
    with pytest.raises(PolicyError, match="lookup record 10.1.1.99 is outside virtual subnet"):
        store.load(doc, block=recblock.encode(bad, extra=()))
    assert store.generation == 1
    fewer = recblock.encode(recs[:1000], extra=())
    assert store.load({**doc, "records": []}, block=fewer) == (2, True)
    want = records(store.document)
    assert len(want) == 1000
    store.close()
    store = Store(str(db))
    assert store.generation == 2 and records(store.document) == want
    [(g, kind, body, blk)] = store.changes_since(1)
    assert (g, kind) == (2, "document") and blk == fewer
    # A block too big for the changelog: the gateway one behind gets it from memory,
    # one further behind (or any, after a restart) a snapshot.
    import mgmt.store
    old_max, mgmt.store.BLOCK_LOG_MAX = mgmt.store.BLOCK_LOG_MAX, 500
    try:
        assert store.load({**doc, "records": []}, block=block) == (3, True)
    finally:
        mgmt.store.BLOCK_LOG_MAX = old_max
    assert [c[0] for c in store.changes_since(2)] == [3] and store.changes_since(1) is None
    store.close()
    store = Store(str(db))
    assert store.changes_since(2) is None and len(store.document["records"]) == 3002
    store.close()
