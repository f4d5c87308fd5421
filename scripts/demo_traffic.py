"""Write the demo's traffic capture: tenant UDP/TCP frames of mixed sizes."""
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

SIZES = (64, 128, 256, 512, 1024, 1514)


def frames():
    for i in range(256):
        l4 = UDP(sport=4000 + i, dport=53) if i % 2 else TCP(sport=5000 + i, dport=80)
        pkt = (Ether(src="02:00:00:00:01:01", dst="02:00:00:00:00:01") /
               IP(src=f"10.1.1.{i % 200 + 10}", dst="10.1.1.7") / l4)
        yield pkt / Raw(b"\0" * max(0, SIZES[i % len(SIZES)] - len(pkt)))


if __name__ == "__main__":
    wrpcap(sys.argv[1], list(frames()))
