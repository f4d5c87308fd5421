#!/usr/bin/python3
"""TCP echo server and byte-exact round-trip client for the lab (standard library only).

    lab_tcp.py serve --port 7000 --name red          # in a VM: say who we are, then echo
    lab_tcp.py send 10.1.1.7 7000 --bytes 10000000   # on-premises: send, read back, compare

The client sends N pseudo-random bytes (seeded) while reading the echo, compares what comes
back with what it sent (SHA-256 and length) and prints one JSON line: banner (which VM
answered), sent, received, match, seconds, error (e.g. "ConnectionResetError: ..."). With
--progress FILE it rewrites FILE with the byte count received, so a caller can act midway
(live migration). Exit code 0 only when everything came back intact.
"""
import argparse
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time


def serve(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", args.port))
    s.listen(16)
    banner = f"nvgw-lab:{args.name}\n".encode()

    def echo(c):
        with c:
            try:
                c.sendall(banner)
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    c.sendall(b)
            except OSError:
                pass

    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def send(args):
    rnd = random.Random(args.seed)
    data = rnd.randbytes(args.bytes)
    out = {"banner": None, "sent": 0, "received": 0, "match": False, "error": None}
    t0 = time.monotonic()
    got = hashlib.sha256()
    try:
        c = socket.create_connection((args.host, args.port), timeout=args.timeout)
        c.settimeout(args.timeout)
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            b = c.recv(1)
            if not b:
                break
            line += b
        out["banner"] = line.decode(errors="replace").strip()
        err = []

        def writer():
            try:
                view = memoryview(data)
                step = 16384 if args.rate else 65536
                for i in range(0, len(data), step):
                    if args.rate:      # pace: byte i leaves no earlier than i / rate
                        ahead = t0 + i / args.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
                    c.sendall(view[i:i + step])
                    out["sent"] = min(i + step, len(data))
            except OSError as e:
                err.append(f"{type(e).__name__}: {e}")

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        last = 0.0
        while out["received"] < len(data):
            b = c.recv(65536)
            if not b:
                out["error"] = "connection closed early"
                break
            got.update(b)
            out["received"] += len(b)
            if args.progress and time.monotonic() - last > 0.05:
                last = time.monotonic()
                with open(args.progress + ".tmp", "w") as f:
                    f.write(str(out["received"]))
                os.replace(args.progress + ".tmp", args.progress)
        w.join(args.timeout)
        if err and not out["error"]:
            out["error"] = err[0]
        c.close()
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["match"] = (out["received"] == len(data)
                    and got.digest() == hashlib.sha256(data).digest())
    print(json.dumps(out), flush=True)
    return 0 if out["match"] and not out["error"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--name", default="vm")
    p = sub.add_parser("send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--bytes", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--progress")
    p.add_argument("--rate", type=float, default=0, help="bytes per second (0: as fast as possible)")
    args = ap.parse_args()
    return serve(args) if args.cmd == "serve" else send(args)


if __name__ == "__main__":
    sys.exit(main())
