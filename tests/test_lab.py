"""End to end in the lab (scripts/lab.py): the gateway between real Linux NVGRE hosts
(user-mode-linux guests with gretap, key VSID << 8, FlowID 0) and on-premises hosts on
VLANs (802.1Q in a UML guest), policy from config/lab-policy.json through nvgw-mgmt and
`nvgwctl apply`.

One lab for the module (it starts in about 8 s); the migration test runs last because it
moves Red's VM. Needs root; the packages scripts/bootstrap.sh installs (user-mode-linux,
iputils-ping, ethtool) are required: their absence fails the tests with the reason. Where
network namespaces or AF_PACKET sockets are not available (not root, a sandbox), or UML
cannot run processes on this CPU (lab.uml_unusable), the tests are skipped, saying why.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import lab as labmod  # noqa: E402

MB10 = 10_000_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    why = labmod.unavailable()
    if why:
        pytest.skip(f"lab unavailable here: {why}")
    missing = labmod.prerequisites()
    if missing:
        pytest.fail("lab prerequisites missing (scripts/bootstrap.sh installs them): "
                    + ", ".join(missing))
    d = tmp_path_factory.mktemp("lab")
    lab = labmod.Lab(d, tag=f"t{os.getpid()}")
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"nvl-{lab.tag}-" not in left, "lab namespaces left behind"


def drops(lab) -> dict:
    return lab.counters()["drops"]


def vsid(lab, v: int) -> dict:
    return lab.counters()["vsids"].get(str(v), {})


class Capture:
    """Frames on a veth of the core namespace, captured by scapy in that namespace."""

    def __init__(self, lab, iface: str, seconds: float):
        self.out = lab.dir / f"cap-{iface}-{time.monotonic_ns()}.pcap"
        code = ("import sys; from scapy.all import sniff, wrpcap; "
                "open(sys.argv[3], 'w').close(); "
                "wrpcap(sys.argv[2], sniff(iface=sys.argv[1], timeout=float(sys.argv[4])))")
        self.ready = self.out.with_suffix(".ready")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("core"), sys.executable, "-c", code, iface,
             str(self.out), str(self.ready), str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while not self.ready.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "capture did not start"
            time.sleep(0.05)
        time.sleep(0.5)          # the socket is bound once sniff() runs

    def frames(self, stop: bool = False):
        """The frames, once the capture's time is up; with stop, at once (SIGINT ends
        scapy's sniff, which then writes what it has)."""
        from scapy.all import rdpcap
        if stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return list(rdpcap(str(self.out)))


def test_each_tenant_reaches_its_own_vm_ping_and_10mb_round_trip(lab):
    before = {v: vsid(lab, v) for v in (labmod.RED_VSID, labmod.BLUE_VSID)}
    for t in ("red", "blue"):
        p = lab.ping(t, count=3)
        assert p.returncode == 0, f"{t} on-premises cannot ping its VM:\n{p.stdout}{p.stderr}"
        res = lab.transfer(t, MB10, timeout=30)
        assert res["banner"] == f"nvgw-lab:{t}", f"{t} reached {res['banner']!r}"
        assert res["error"] is None and res["match"], res
        assert res["sent"] == res["received"] == MB10
    for v in (labmod.RED_VSID, labmod.BLUE_VSID):
        after = vsid(lab, v)
        # 10 MB each way through the gateway, in NVGRE of this tenant's VSID
        assert after["encap_bytes"] - before[v].get("encap_bytes", 0) > MB10
        assert after["decap_bytes"] - before[v].get("decap_bytes", 0) > MB10


def test_tenants_never_reach_each_other_and_attempts_are_dropped(lab):
    d0 = drops(lab)
    # Each tenant's on-premises host towards the other tenant's on-premises network.
    for src, dst in (("red", "blue"), ("blue", "red")):
        p = lab.ping(src, labmod.ONPREM[dst][0], count=2)
        assert p.returncode != 0, f"{src} reached {dst}'s network:\n{p.stdout}"
    d1 = drops(lab)
    assert d1["no_route"] - d0.get("no_route", 0) >= 4, (d0, d1)
    # Red's host (host1, PA 192.168.1.11) claims to be Blue's VM: a real gretap with
    # Blue's key from Red's PA, in its own namespace inside the UML guest.
    gw_mac = labmod.GW_MAC["gwf"]
    h1 = lab.guests["host1"]
    h1.run(f"""
ip link add gt-rogue type gretap local {labmod.PA['red']} remote {labmod.GW_PA} \\
    key {labmod.BLUE_VSID << 8} ttl 64
ip netns add rogue
ip link set gt-rogue netns rogue
ip -n rogue link set gt-rogue address {labmod.VM_MAC['blue']}
ip -n rogue addr add {labmod.VM_CA}/24 dev gt-rogue
ip -n rogue link set gt-rogue up
ip -n rogue route add default via 10.1.1.1
ip -n rogue neigh add 10.1.1.1 lladdr {gw_mac} dev gt-rogue
""")
    try:
        r = h1.run(f"ip netns exec rogue ping -c 3 -i 0.2 -W 1 {labmod.ONPREM['blue'][0]}",
                   check=False)
        assert r["rc"] != 0, "Red's host reached Blue's on-premises network as Blue's VM"
    finally:
        h1.run("ip netns del rogue", check=False)
    d2 = drops(lab)
    assert d2["spoofed_pa"] - d1.get("spoofed_pa", 0) >= 3, (d1, d2)
    # and the VMs still answer only their own tenant
    for t in ("red", "blue"):
        res = lab.transfer(t, 100_000)
        assert res["banner"] == f"nvgw-lab:{t}" and res["match"], res


def _check_nvgre(frames, pa_vsid: dict) -> dict:
    """Every GRE frame is NVGRE per RFC 7637 with the VSID of its host PA; count per VSID
    and direction."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import GRE
    seen = {}
    for f in frames:
        if not f.haslayer(IP) or f[IP].proto != 47:
            continue
        ip = f[IP]
        raw = bytes(ip)
        hdr = IP(raw[:ip.ihl * 4])
        chk = hdr.chksum
        del hdr.chksum
        assert IP(bytes(hdr)).chksum == chk, f"bad outer checksum: {raw[:24].hex()}"
        assert ip.flags.DF, "outer DF not set"
        gre = raw[ip.ihl * 4:ip.ihl * 4 + 8]
        assert gre[:4] == bytes.fromhex("20006558"), f"GRE header {gre.hex()}: want C=0 K=1 " \
                                                     "S=0 Ver=0, protocol 0x6558"
        key = int.from_bytes(gre[4:8], "big")
        assert f.haslayer(GRE) and f[GRE].key_present == 1 and f[GRE].proto == 0x6558
        host_pa = ip.dst if ip.src == labmod.GW_PA else ip.src
        assert key >> 8 == pa_vsid[host_pa], f"{ip.src}->{ip.dst}: VSID {key >> 8}"
        assert key & 0xFF == 0, "FlowID must be the fixed 0 the gretap peers expect"
        d = "to_host" if ip.src == labmod.GW_PA else "to_gateway"
        seen[(key >> 8, d)] = seen.get((key >> 8, d), 0) + 1
    return seen


def test_fabric_capture_decodes_as_nvgre(lab):
    cap = Capture(lab, "gwfb", seconds=6)
    for t in ("red", "blue"):
        assert lab.ping(t, count=2).returncode == 0
        assert lab.transfer(t, 200_000)["match"]
    frames = cap.frames()
    pa_vsid = {labmod.PA["red"]: labmod.RED_VSID, labmod.PA["blue"]: labmod.BLUE_VSID,
               labmod.PA["host2"]: labmod.RED_VSID}
    seen = _check_nvgre(frames, pa_vsid)
    for v in (labmod.RED_VSID, labmod.BLUE_VSID):
        # both encapsulators: the gateway's and Linux's
        assert seen.get((v, "to_host"), 0) > 20 and seen.get((v, "to_gateway"), 0) > 20, seen
    import shutil
    if shutil.which("tshark"):        # a second decoder, where installed
        r = subprocess.run(["tshark", "-r", str(cap.out), "-Y", "gre", "-T", "fields",
                            "-e", "gre.flags.key", "-e", "gre.proto", "-e", "gre.key"],
                           capture_output=True, text=True, timeout=60)
        rows = {tuple(line.split("\t")) for line in r.stdout.splitlines() if line}
        keys = {int(k, 0) >> 8 for _, _, k in rows}
        assert keys == {labmod.RED_VSID, labmod.BLUE_VSID}, rows
        assert {(kf, p) for kf, p, _ in rows} <= {("1", "0x6558"), ("True", "0x6558")}, rows


def test_live_migration_during_tcp_transfer_no_reset(lab):
    prog = lab.dir / "migrate.progress"
    # until the transfer is over: on a loaded machine the migration can take seconds
    cap = Capture(lab, "gwfb", seconds=60)
    proc = lab.transfer("red", MB10, timeout=30, progress=prog, block=False, rate=4_000_000)
    deadline = time.monotonic() + 20
    while not (prog.exists() and int(prog.read_text() or 0) > 2_000_000):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "transfer did not get going"
        time.sleep(0.02)
    at = int(prog.read_text())
    lab.move_red_vm("host2")      # unplug on host1, plug on host2, nvgwctl migrate
    out, err = proc.communicate(timeout=90)
    res = json.loads(out.strip().splitlines()[-1])
    assert res["banner"] == "nvgw-lab:red"
    assert res["error"] is None, f"the transfer broke after migration at {at} bytes: {res}"
    assert res["match"] and res["received"] == MB10, res
    policy = json.loads(lab.ctl("show", "policy", "--json").stdout)
    recs = [r for r in policy["records"] if r["vsid"] == labmod.RED_VSID]
    assert [r["pa"] for r in recs] == [labmod.PA["host2"]], recs
    frames = cap.frames(stop=True)
    pa_vsid = {labmod.PA["red"]: labmod.RED_VSID, labmod.PA["blue"]: labmod.BLUE_VSID,
               labmod.PA["host2"]: labmod.RED_VSID}
    _check_nvgre(frames, pa_vsid)
    from scapy.layers.inet import IP
    to_new = sum(1 for f in frames if f.haslayer(IP) and f[IP].proto == 47
                 and f[IP].dst == labmod.PA["host2"])
    from_new = sum(1 for f in frames if f.haslayer(IP) and f[IP].proto == 47
                   and f[IP].src == labmod.PA["host2"])
    assert to_new > 100 and from_new > 100, (to_new, from_new)
    # the VM still answers at its new home
    assert lab.ping("red", count=2).returncode == 0
