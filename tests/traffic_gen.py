"""Paced traffic generator and capturer for live tests; runs inside a network namespace.

    ip netns exec NS python tests/traffic_gen.py --send cus1 --pcap in.pcap --rate 2000 \
        --capture fab1 --capture cus1 --out DIR

It binds one AF_PACKET raw socket per capture interface BEFORE anything is sent, writes
DIR/ready (the CLOCK_MONOTONIC time of the first send, so a test can time control actions
against the traffic), sends every frame of the pcap on the send interface at the given rate,
and keeps capturing until nothing was sent or received for --quiet seconds (or --limit
seconds have passed since start). Then it writes:

  DIR/sent.json         {"iface", "rate", "start", "times": [t per frame], "sent", "total",
                         "truncated"}; t is time.monotonic() taken just BEFORE the frame's
                         send() call, so a frame with t > T was handed to the kernel after T.
  DIR/<iface>.pcap      the frames received on each capture interface (pcap timestamps are
                        the capture's monotonic times, microsecond precision)
  DIR/captures.json     {iface: {"times": [...], "dropped": n}} with full-precision times
  DIR/done              written last

Frames the socket sees leaving an interface (sll_pkttype PACKET_OUTGOING) are not captures,
so a capture interface may also be the send interface. The kernel strips 802.1Q tags before
packet sockets see a frame; the tag is put back from PACKET_AUXDATA so captures hold the
frame as it was on the wire. No project imports: this runs as a plain script.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import struct
import sys
import time

from scapy.utils import RawPcapReader, RawPcapWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
AUX = struct.Struct("=IIIHHHH")      # struct tpacket_auxdata
MAX_FRAME = 65536


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def open_capture(iface: str) -> socket.socket:
    # Protocol 0 at creation: the socket receives nothing until bind() names the interface,
    # so no frame of another interface can slip in between.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)    # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((iface, ETH_P_ALL))
    s.setblocking(False)
    return s


def reinsert_vlan(frame: bytes, ancdata) -> bytes:
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUX.size:
            status, _len, _snap, _mac, _net, tci, tpid = AUX.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = 0x8100
                return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


class Capture:
    def __init__(self, iface: str, max_frames: int):
        self.iface = iface
        self.sock = open_capture(iface)
        self.frames: list[tuple[float, bytes]] = []
        self.max_frames = max_frames
        self.dropped = 0            # frames beyond max_frames, counted, not kept

    def drain(self) -> int:
        """Read every frame queued on the socket; return how many were captures."""
        n = 0
        while True:
            try:
                frame, anc, _flags, addr = self.sock.recvmsg(
                    MAX_FRAME, socket.CMSG_SPACE(AUX.size))
            except (BlockingIOError, InterruptedError):
                return n
            if addr[2] == PACKET_OUTGOING:
                continue
            n += 1
            if len(self.frames) < self.max_frames:
                self.frames.append((time.monotonic(), reinsert_vlan(frame, anc)))
            else:
                self.dropped += 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--send", metavar="IFACE", help="interface to send the pcap's frames on")
    ap.add_argument("--pcap", help="Ethernet pcap of the frames to send, in order")
    ap.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    ap.add_argument("--capture", action="append", default=[], metavar="IFACE")
    ap.add_argument("--out", required=True, metavar="DIR")
    ap.add_argument("--lead", type=float, default=0.05,
                    help="seconds between writing DIR/ready and the first send")
    ap.add_argument("--quiet", type=float, default=0.5,
                    help="stop after this many seconds without sending or capturing")
    ap.add_argument("--limit", type=float, default=20.0, help="hard limit on the run, seconds")
    ap.add_argument("--max-frames", type=int, default=200_000,
                    help="frames kept per capture interface")
    args = ap.parse_args(argv)
    if args.rate <= 0:
        ap.error("--rate must be positive")
    begin = time.monotonic()
    hard_end = begin + args.limit
    os.makedirs(args.out, exist_ok=True)

    frames = [pkt for pkt, _meta in RawPcapReader(args.pcap)] if args.pcap else []
    caps = [Capture(iface, args.max_frames) for iface in args.capture]
    socks = {c.sock.fileno(): c for c in caps}
    tx = None
    if frames:
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # sends only, receives nothing
        tx.bind((args.send, 0))
    for c in caps:
        c.drain()
        c.frames.clear()

    def poll(timeout: float) -> int:
        ready, _, _ = select.select(list(socks), [], [], max(0.0, timeout))
        return sum(socks[fd].drain() for fd in ready)

    start = time.monotonic() + args.lead
    atomic_write(os.path.join(args.out, "ready"), repr(start))
    times: list[float] = []
    truncated = False
    last = time.monotonic()
    for i, frame in enumerate(frames):
        due = start + i / args.rate
        while (now := time.monotonic()) < due:
            poll(due - now)
        if now >= hard_end:
            truncated = True
            break
        poll(0)                     # keep the capture sockets drained even when behind
        while True:
            t = time.monotonic()
            try:
                tx.send(frame)
                break
            except OSError as e:    # a full device queue: retry shortly, bounded by --limit
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN) or t >= hard_end:
                    raise
                time.sleep(0.0001)
        times.append(t)
        last = t
    while (now := time.monotonic()) < hard_end and now - last < args.quiet:
        if poll(min(args.quiet - (now - last), hard_end - now)):
            last = time.monotonic()
    for c in caps:                  # whatever is queued at the end still counts
        c.drain()

    with open(os.path.join(args.out, "sent.json"), "w") as f:
        json.dump({"iface": args.send, "rate": args.rate, "start": start, "times": times,
                   "sent": len(times), "total": len(frames), "truncated": truncated}, f)
    for c in caps:
        with RawPcapWriter(os.path.join(args.out, f"{c.iface}.pcap"), linktype=1) as w:
            w._write_header(None)
            for t, frame in c.frames:
                w.write_packet(frame, sec=int(t), usec=int((t - int(t)) * 1e6))
    with open(os.path.join(args.out, "captures.json"), "w") as f:
        json.dump({c.iface: {"times": [t for t, _ in c.frames], "dropped": c.dropped}
                   for c in caps}, f)
    atomic_write(os.path.join(args.out, "done"), "ok\n")
    print(f"sent {len(times)}/{len(frames)}; captured "
          + ", ".join(f"{c.iface}={len(c.frames) + c.dropped}" for c in caps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
