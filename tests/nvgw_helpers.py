"""Shared helpers for NVGRE-pipeline tests: addresses, the Red/Blue tenants,
packet builders, the FlowID function, policy files, byte-for-byte comparison,
and live ports (veth) for packets that must follow a policy change.

Expected packets are always built independently with scapy from the wire
rules (notes/CONTEXT.md, "Wire behaviour"): checksums and lengths are left
unset and ``bytes()`` computes them. The helpers never parse the gateway's
output to build an expectation.

Typical use::

    from nvgw_helpers import BLUE, FABRIC, TENANTS, assert_drops, assert_packets, \
        redblue_policy, run_nvgre, udp

    ip = udp(BLUE.host, "10.1.1.7", 4000, 80, b"hi")       # on-prem host -> Blue's VM
    gw, out = run_nvgre(tmp_path, redblue_policy(), tenants=[BLUE.up(ip)])
    assert_packets(out[FABRIC], [BLUE.encap(ip)])          # NVGRE to 192.168.1.10, VSID 5001
    assert_drops(gw.final_counters())                      # every drop reason 0

Counters: per-VSID encap/decap bytes count the inner Ethernet frame
(14 + inner IP total length, see inner_frame_len); decap counts a packet once
it passed anti-spoofing, even if routing drops it afterwards.
"""
from __future__ import annotations

import collections
import contextlib
import ipaddress
import itertools
import json
import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import GRE, IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from harness import PcapPort, run_pcap

__all__ = [
    "FABRIC", "TENANTS", "PROVIDER_MAC", "CUSTOMER_MAC", "GW_PA", "BROADCAST",
    "REDBLUE_POLICY", "flowid", "flowid_of", "redblue_policy", "write_policy", "nvgre_body",
    "nvgre_ports", "run_nvgre", "customer_frame", "nvgre_frame", "expected_encap",
    "expected_customer", "routed", "inner_frame_len", "arp_request", "arp_reply",
    "assert_packets", "assert_drops", "nonzero", "describe", "udp", "sized_udp",
    "Tenant", "BLUE", "RED", "VM_CA", "veth_pair", "live_port", "Injector",
]

# -- addresses ----------------------------------------------------------------

FABRIC, TENANTS = "fabric", "tenants"   # port names used by nvgre_ports()
# net_pcap port MACs: 02:70:63:61:70:0N, N = index in the harness port list.
# nvgre_ports() puts the provider port first.
PROVIDER_MAC = "02:70:63:61:70:00"
CUSTOMER_MAC = "02:70:63:61:70:01"
GW_PA = "192.168.1.1"                   # provider.addresses[0] in redblue_policy()
BROADCAST = "ff:ff:ff:ff:ff:ff"

REDBLUE_POLICY = Path(__file__).resolve().parent.parent / "config" / "redblue-policy.json"



@dataclass(frozen=True)
class Tenant:
    """One tenant of the Red/Blue example: its VM (CA VM_CA) in `vsid` lives at PA
    `pa` (fabric MAC `pa_mac`), its on-premises host `host` sits on `vlan` behind the
    attachment address `attach`."""
    name: str
    rdid: int
    vsid: int
    vlan: int
    pa: str
    pa_mac: str
    vm_mac: str
    host: str
    host_mac: str
    attach: str

    def up(self, ip, src_mac=None):
        """`ip` sent by the on-premises side on this tenant's VLAN to the gateway."""
        return customer_frame(self.vlan, src_mac or self.host_mac, ip)

    def down(self, ip, flow=0, **kw):
        """`ip` sent by this tenant's VM (at its PA, in its VSID) into the gateway."""
        kw.setdefault("outer_src_mac", self.pa_mac)
        return nvgre_frame(self.pa, self.vsid, self.vm_mac, ip, flow=flow, **kw)

    def encap(self, ip, flow=None, **kw) -> bytes:
        """Expected: `ip` (from the customer side) encapsulated to this tenant's VM."""
        return expected_encap(ip, vsid=self.vsid, pa=self.pa, ca_mac=self.vm_mac,
                              fabric_mac=self.pa_mac, flow=flow, **kw)

    def decap(self, ip, dst_mac=None) -> bytes:
        """Expected: `ip` (from the VM) delivered on this tenant's VLAN (to the host)."""
        return expected_customer(ip, vlan=self.vlan, dst_mac=dst_mac or self.host_mac)


VM_CA = "10.1.1.7"     # both tenants' VM
BLUE = Tenant("blue", 1, 5001, 100, "192.168.1.10", "00:15:5d:00:00:10", "00:15:5d:b1:00:07",
              "172.16.1.10", "02:00:00:00:01:10", "172.16.1.1")
RED = Tenant("red", 2, 6001, 200, "192.168.1.11", "00:15:5d:00:00:11", "00:15:5d:7e:00:07",
             "172.16.2.10", "02:00:00:00:02:10", "172.16.2.1")

# -- FlowID -------------------------------------------------------------------

def _crc32c(crc: int, data: bytes) -> int:
    """CRC-32C update as the SSE4.2 crc32 instruction does it (no inversions)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def flowid(src, dst, proto, sport=0, dport=0, fragmented=False) -> int:
    """The gateway's FlowID (low byte of the GRE key) for an inner IPv4 flow.

    Ports count only for unfragmented TCP (6) / UDP (17); `fragmented` means
    MF set or a non-zero fragment offset in the inner packet as received.
    """
    ports = (sport, dport) if proto in (6, 17) and not fragmented else (0, 0)
    wire = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed +
            struct.pack("!HH", *ports))
    return _crc32c(proto, wire) >> 24


def flowid_of(ip: IP) -> int:
    """flowid() of a scapy IP packet (ports taken from its TCP/UDP header if any)."""
    ip = IP(bytes(ip))
    frag = bool(ip.flags.MF) or ip.frag != 0
    sport = dport = 0
    if ip.proto in (6, 17) and not frag:
        sport, dport = ip.payload.sport, ip.payload.dport
    return flowid(ip.src, ip.dst, ip.proto, sport, dport, frag)

# -- policy and gateway -------------------------------------------------------


def redblue_policy() -> dict:
    """A fresh copy of config/redblue-policy.json (the article's Red/Blue example):
    Blue = rdid 1, VSID 5001, VLAN 100 (172.16.1.1/24), VM 10.1.1.7 at PA 192.168.1.10;
    Red = rdid 2, VSID 6001, VLAN 200 (172.16.2.1/24), VM 10.1.1.7 at PA 192.168.1.11;
    static neighbours for both PAs and for 172.16.1.10 (VLAN 100) / 172.16.2.10 (VLAN 200)."""
    return json.loads(REDBLUE_POLICY.read_text())


def write_policy(workdir: Path, doc: dict, name: str = "policy.json") -> Path:
    """Write a policy document as JSON under workdir; return its absolute path."""
    path = Path(workdir).resolve() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def nvgre_body(policy_path, records=4096, routes=4096, neighbours=1024) -> str:
    """The extra gateway TOML for the NVGRE pipeline with a policy file."""
    return (f'[pipeline]\nmode = "nvgre"\npolicy = "{Path(policy_path).resolve()}"\n'
            f"[tables]\nrecords = {records}\nroutes = {routes}\nneighbours = {neighbours}\n")


def nvgre_ports(fabric=(), tenants=()) -> list:
    """Provider port FABRIC first (MAC PROVIDER_MAC), customer port TENANTS second."""
    return [PcapPort(FABRIC, "provider", list(fabric)),
            PcapPort(TENANTS, "customer", list(tenants))]


def run_nvgre(workdir, policy: dict, fabric=(), tenants=(), **kw):
    """Write `policy`, run one gateway over the given input frames, stop it.

    Returns (gw, {FABRIC: [bytes sent], TENANTS: [bytes sent]});
    gw.final_counters() holds the counters at exit."""
    path = write_policy(workdir, policy)
    return run_pcap(workdir, nvgre_ports(fabric, tenants), nvgre_body(path), **kw)

# -- packets ------------------------------------------------------------------


def udp(src, dst, sport=1000, dport=2000, payload=b"udp", **ip_fields) -> IP:
    """IP/UDP/payload with scapy-computed lengths and checksums (TTL 64 unless given)."""
    return IP(src=src, dst=dst, **ip_fields) / UDP(sport=sport, dport=dport) / Raw(payload)


def sized_udp(src, dst, total_len, sport=1000, dport=2000, fill=b"\x5a", **ip_fields) -> IP:
    """An IP/UDP packet whose IP total length is exactly `total_len`."""
    ip = udp(src, dst, sport, dport, fill * (total_len - 28), **ip_fields)
    assert len(bytes(ip)) == total_len
    return ip


def customer_frame(vlan: int, src_mac: str, ip, dst_mac: str = CUSTOMER_MAC):
    """An 802.1Q-tagged frame on the customer port carrying `ip` (any L3 layer)."""
    return Ether(dst=dst_mac, src=src_mac) / Dot1Q(vlan=vlan) / ip


def nvgre_frame(src_pa: str, vsid: int, inner_src_mac: str, inner, *, flow: int = 0,
                inner_dst_mac: str = PROVIDER_MAC, outer_src_mac: str = "00:15:5d:00:00:99",
                outer_dst_mac: str = PROVIDER_MAC, dst_pa: str = GW_PA, ttl: int = 64,
                ip_id: int = 0):
    """An NVGRE frame arriving from the fabric: a host at `src_pa` sends `inner` (an
    L3 layer, IP or ARP) in `vsid` with FlowID `flow`. The inner destination MAC
    defaults to the subnet gateway MAC's default (the provider port MAC)."""
    return (Ether(dst=outer_dst_mac, src=outer_src_mac) /
            IP(src=src_pa, dst=dst_pa, flags="DF", ttl=ttl, id=ip_id) /
            GRE(key_present=1, proto=0x6558, key=(vsid << 8) | flow) /
            Ether(dst=inner_dst_mac, src=inner_src_mac) / inner)


def routed(ip: IP) -> IP:
    """What the gateway forwards for inner packet `ip`: a copy with TTL - 1 and the
    header checksum left for scapy to compute (the payload is unchanged)."""
    out = ip.copy()
    out.ttl -= 1
    out.chksum = None
    return out


def inner_frame_len(ip) -> int:
    """The per-VSID byte counters count the inner Ethernet frame: 14 + IP total length."""
    return 14 + len(bytes(ip))


def expected_encap(ip: IP, *, vsid: int, pa: str, ca_mac: str, fabric_mac: str,
                   flow: int | None = None, gw_mac: str = PROVIDER_MAC,
                   src_pa: str = GW_PA, provider_mac: str = PROVIDER_MAC) -> bytes:
    """The NVGRE frame the gateway sends for inner packet `ip` (as received: TTL is
    decremented here) toward the lookup record (vsid, pa, ca_mac). `fabric_mac` is
    the fabric next hop's MAC; `gw_mac` the destination subnet's gateway MAC;
    `flow` defaults to flowid_of(ip)."""
    if flow is None:
        flow = flowid_of(ip)
    return bytes(Ether(dst=fabric_mac, src=provider_mac) /
                 IP(src=src_pa, dst=pa, flags="DF", ttl=64, id=0, tos=0) /
                 GRE(key_present=1, proto=0x6558, key=(vsid << 8) | flow) /
                 Ether(dst=ca_mac, src=gw_mac, type=0x0800) / routed(ip))


def expected_customer(ip: IP, *, vlan: int, dst_mac: str,
                      src_mac: str = CUSTOMER_MAC) -> bytes:
    """The tagged frame the gateway sends on customer VLAN `vlan` for inner packet
    `ip` (as received: TTL is decremented here) to next-hop MAC `dst_mac`."""
    return bytes(Ether(dst=dst_mac, src=src_mac) / Dot1Q(vlan=vlan) / routed(ip))


def arp_request(src_mac: str, src_ip: str, target_ip: str):
    """An ARP request (L3 layer only: wrap it with Ether/Dot1Q/NVGRE yourself)."""
    return ARP(op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00", pdst=target_ip)


def arp_reply(answer_mac: str, answer_ip: str, to_mac: str, to_ip: str):
    """An ARP reply: `answer_ip` is at `answer_mac`, sent to the requester."""
    return ARP(op=2, hwsrc=answer_mac, psrc=answer_ip, hwdst=to_mac, pdst=to_ip)

# -- assertions ---------------------------------------------------------------


def describe(frame: bytes) -> str:
    """One line for a frame: scapy's summary, length and hex (for failure messages)."""
    return f"{Ether(frame).summary()} [{len(frame)} B] {frame.hex()}"


def assert_packets(actual: list[bytes], expected: list) -> None:
    """The gateway sent exactly `expected` (bytes or scapy packets), byte for byte,
    in any order (replies of the exception thread are not ordered with the rest)."""
    exp = collections.Counter(bytes(p) for p in expected)
    act = collections.Counter(bytes(p) for p in actual)
    if exp == act:
        return
    missing, extra = exp - act, act - exp
    lines = [f"sent {len(actual)} frames, expected {len(expected)}"]
    lines += [f"  missing x{n}: {describe(f)}" for f, n in missing.items()]
    lines += [f"  unexpected x{n}: {describe(f)}" for f, n in extra.items()]
    raise AssertionError("\n".join(lines))


def nonzero(counters: dict) -> dict:
    """The entries of a {name: count} dict that are not 0."""
    return {k: v for k, v in counters.items() if v}


def assert_drops(final: dict, **expected: int) -> None:
    """Drops by reason are exactly `expected` (every other reason 0)."""
    assert nonzero(final["drops"]) == nonzero(expected), final["drops"]


# -- live traffic (policy changes between packets) ------------------------------
# net_pcap reads an rx pcap file to its end at start, so packets that must
# follow an `apply` come through a live interface instead: the gateway's port
# reads one end of a veth pair (rx_iface_in) and still writes a tx pcap file;
# the test sends frames into the other end.

_veth_ids = itertools.count()


@contextlib.contextmanager
def veth_pair():
    """A veth pair (gateway_end, test_end), up, IPv6 off and no addresses, so the
    kernel sends nothing on it. Deleted on exit. Needs root (CAP_NET_ADMIN):
    raises OSError where it cannot be created."""
    base = f"nvg{os.getpid() % 100000}{next(_veth_ids)}"[:13]
    gw_end, test_end = base + "g", base + "t"
    r = subprocess.run(["ip", "link", "add", gw_end, "type", "veth", "peer", "name", test_end],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"cannot create a veth pair: {r.stderr.strip()}")
    try:
        for dev in (gw_end, test_end):
            knob = Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
            if knob.exists():
                knob.write_text("1")
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        yield gw_end, test_end
    finally:
        subprocess.run(["ip", "link", "del", gw_end], capture_output=True)


def live_port(name: str, role: str, index: int, iface: str, workdir) -> str:
    """[[ports]] TOML for a port at harness index `index` that receives from `iface`
    (frames arriving on it only) and writes what it sends to the tx pcap that
    GatewayProcess.sent(name) reads (one worker). Its MAC is 02:70:63:61:70:0<index>."""
    tx = Path(workdir).resolve() / f"{name}.tx0.pcap"
    return (f'[[ports]]\nname = "{name}"\nrole = "{role}"\n'
            f'device = "net_pcap{index},rx_iface_in={iface},tx_pcap={tx}"\n')


class Injector:
    """Sends frames into the test end of a veth pair, then waits until the
    gateway has received them all and gone idle."""

    def __init__(self, gw, port: str, iface: str):
        self.gw, self.port = gw, port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind((iface, 0))
        self.sent = 0

    def send(self, *frames) -> dict:
        for f in frames:
            self.sock.send(bytes(f))
        self.sent += len(frames)
        return self.gw.wait_rx(self.port, self.sent, timeout=10)

    def close(self):
        self.sock.close()
