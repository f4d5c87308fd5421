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

pytest.importorskip("trex_stl_lib.api")          # the test extras install it

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
    assert any(i["type"] == "fix_checksum_hw" for i in vm)
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
