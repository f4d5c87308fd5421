"""Write the demo's captures (config/demo.toml): Red and Blue tenants, both
with a VM at 10.1.1.7, seen from the fabric (NVGRE) and from their
on-premises VLANs. Usage: demo_traffic.py DIR"""
import sys
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.inet import GRE
from scapy.packet import Raw
from scapy.utils import wrpcap

FABRIC_MAC, TENANT_MAC = "02:70:63:61:70:00", "02:70:63:61:70:01"   # net_pcap0, net_pcap1
GW_PA = "192.168.1.1"
TENANTS = {   # name: (vsid, VM PA, VM MAC, VLAN, on-premises host)
    "blue": (5001, "192.168.1.10", "00:15:5d:b1:00:07", 100, "172.16.1.10"),
    "red": (6001, "192.168.1.11", "00:15:5d:7e:00:07", 200, "172.16.2.10"),
}


def nvgre(pa, vsid, vm_mac, dst, sport, size):
    inner = IP(src="10.1.1.7", dst=dst) / UDP(sport=sport, dport=5001)
    inner = inner / Raw(b"\0" * max(0, size - 14 - len(inner)))
    return (Ether(src="00:15:5d:00:00:99", dst=FABRIC_MAC) / IP(src=pa, dst=GW_PA, flags="DF") /
            GRE(key_present=1, proto=0x6558, key=vsid << 8) /
            Ether(src=vm_mac, dst=FABRIC_MAC) / inner)


def main(outdir):
    out = Path(outdir)
    fabric, tenants = [], []
    for i, size in enumerate((64, 128, 512, 1024, 1400) * 20):
        for name, (vsid, pa, mac, vlan, host) in TENANTS.items():
            fabric.append(nvgre(pa, vsid, mac, host, 1000 + i, size))
            up = IP(src=host, dst="10.1.1.7") / UDP(sport=2000 + i, dport=80)
            tenants.append(Ether(src="02:00:00:00:00:%02x" % (vlan // 100), dst=TENANT_MAC) /
                           Dot1Q(vlan=vlan) / up / Raw(b"\0" * max(0, size - 18 - len(up))))
    # Red's host claims to be Blue's VM: anti-spoofing drops it.
    fabric.append(nvgre("192.168.1.11", 5001, "00:15:5d:7e:00:07", "172.16.1.10", 9, 64))
    wrpcap(str(out / "demo-fabric.pcap"), fabric)
    wrpcap(str(out / "demo-tenants.pcap"), tenants)


if __name__ == "__main__":
    main(sys.argv[1])
