"""The TRex STL profiles in scripts/trex/ build offline with trex-stl-lib (PyPI), and every
stream's base packet is byte for byte the benchmark's packet of the same draw
(scripts/bench_workloads.py), for each workload, record count and frame size. The field
engine program compiles, writes only inside the packet, and varies what the module says."""
from __future__ import annotations

import base64
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "scripts" / "trex"))

import trex_stl_lib.api  # noqa: E402,F401 -- the test extras install it: missing is a failure

import bench_workloads as wl                      # noqa: E402

KINDS = ("encap", "decap", "hairpin", "rewrite")
STREAMS = 6


def streams(kind, **kw):
    mod = importlib.import_module(f"nvgw_{kind}")
    prof = mod.register()
    assert hasattr(prof, "get_streams")
    return prof.get_streams(direction=0, streams=STREAMS, **kw)


def base_and_vm(stream):
    j = stream.to_json()                          # compiles the field engine too
    return base64.b64decode(j["packet"]["binary"]), j["vm"]["instructions"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("records,size", [(1000, "64"), (1_000_000, "64"), (1000, "imix")])
def test_base_packets_match_the_benchmark(kind, records, size):
    got = streams(kind, records=records, size=size)
    assert len(got) == STREAMS
    for s, pick in zip(got, wl.picks(records, kind, STREAMS, size)):
        base, _ = base_and_vm(s)
        want = wl.frame_bytes(records, kind, pick)
        assert want == bytes(wl.frame(records, kind, pick))
        # TRex pads frames shorter than 60 bytes; ours are never shorter
        assert base == want, f"{kind} {records} {size}: {base.hex()} != {want.hex()}"


@pytest.mark.parametrize("kind", KINDS)
def test_field_engine_varies_inner_addresses_and_vsids(kind):
    s = streams(kind, records=1_000_000)
    base, vm = base_and_vm(s[0])
    names = {i["name"] for i in vm if i["type"] == "flow_var"}
    writes = [i for i in vm if i["type"] in ("write_flow_var", "write_mask_flow_var")]
    assert "sport" in names
    for w in writes:
        assert 0 <= w["pkt_offset"] < len(base)
    # the inner IPv4 header's checksum and UDP's: at the inner header, 20 bytes long
    # (trex-stl-lib leaves l2_len 0 for a numeric offset: the fix was at byte 0)
    ip = 18 if kind in ("encap", "rewrite") else 14 + 20 + 8 + 14
    [fix] = [i for i in vm if i["type"] == "fix_checksum_hw"]
    assert (fix["l2_len"], fix["l3_len"]) == (ip, 20), fix
    if kind in ("encap", "rewrite"):
        # VLAN (routing domain) and the destination's subnet (its VSID) and host bytes
        assert {"vlan", "sub", "hi", "lo"} <= names
        assert any(w["pkt_offset"] == 14 for w in writes)            # 802.1Q TCI
        assert {w["pkt_offset"] for w in writes} >= {18 + 17, 18 + 18, 18 + 19}
    else:
        # VSIDs and inner sources vary across streams (anti-spoofing binds them to the PA)
        keys = {base_and_vm(x)[0][38:41] for x in s}
        assert len(keys) > 1
    if kind == "hairpin":
        assert "lo" in names
    if kind == "rewrite":
        # the mapped host 172.<16 + rd // 256>.<rd % 256>.10 follows the VLAN (domain),
        # every domain's: octets 2 and 3 of the source in one write
        [src] = [w for w in writes if w["pkt_offset"] == ip + 13]
        assert (src["name"], src["pkt_cast_size"], src["mask"], src["add_value"]) == \
            ("vlan", 2, 0xFFFF, 16 << 8), src
        [vlan] = [i for i in vm if i.get("name") == "vlan" and i["type"] == "flow_var"]
        assert vlan["max_value"] == wl.domains(1_000_000)


def test_size_tunable_as_trex_passes_it():
    """TRex turns -t size=64 into the number 64: still the 64-byte workload."""
    as_text = [base_and_vm(s)[0] for s in streams("encap", size="64")]
    assert [base_and_vm(s)[0] for s in streams("encap", size=64)] == as_text
    assert {len(b) for b in as_text} == {64}         # 46-byte IPv4 in a tagged frame
