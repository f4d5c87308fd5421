#!/usr/bin/python3
"""PID 1 of a lab host: a user-mode-linux guest whose root is the host's filesystem (hostfs).

scripts/lab.py boots `linux.uml ... init=scripts/lab_guest.py nvgwlab=DIR`; the kernel
hands `nvgwlab=DIR` to us as an environment variable. We mount the guest's own /proc, /sys
and /run (so nothing the guest does there reaches the host), load the kernel modules the lab
needs from Debian's UML module tree (ip_gre, bridge, 8021q; with the finit_module syscall,
so the host needs no kmod), write DIR/ready, then run the shell commands the host drops
into DIR/cmd/ (one file each, numbered) and answer each in DIR/res/N.json. "__halt__"
powers the guest off.

The root is the host's: the guest must only write below DIR. Commands are iproute2/ethtool
calls that act on the guest kernel.
"""
import ctypes
import json
import os
import subprocess
import sys
import time

MODULES = [  # dependency order (modules.dep of Debian's user-mode-linux 6.1)
    "lib/crc-ccitt.ko", "net/ipv6/ipv6.ko", "net/ipv4/gre.ko", "net/ipv4/ip_tunnel.ko",
    "net/ipv4/ip_gre.ko", "net/llc/llc.ko", "net/802/stp.ko", "net/802/garp.ko",
    "net/802/mrp.ko", "net/8021q/8021q.ko", "net/bridge/bridge.ko",
]
SYS_finit_module = 313          # x86_64


def log(*a):
    print("lab-guest:", *a, flush=True)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def load_modules():
    libc = ctypes.CDLL(None, use_errno=True)
    base = f"/usr/lib/uml/modules/{os.uname().release}/kernel/"
    errors = []
    for m in MODULES:
        try:
            fd = os.open(base + m, os.O_RDONLY)
        except OSError as e:
            errors.append(f"{m}: {e}")
            continue
        r = libc.syscall(SYS_finit_module, fd, b"", 0)
        err = ctypes.get_errno()
        os.close(fd)
        if r != 0 and err != 17:            # EEXIST: built in or loaded
            errors.append(f"{m}: {os.strerror(err)}")
    return errors


def main():
    d = os.environ.get("nvgwlab")
    for argv in (["mount", "-t", "proc", "proc", "/proc"], ["mount", "-t", "sysfs", "sys", "/sys"],
                 ["mount", "-t", "tmpfs", "tmpfs", "/run"]):
        subprocess.run(argv)
    if not d:
        log("no nvgwlab= on the kernel command line")
        subprocess.run(["poweroff", "-f"])
        return
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    errors = load_modules()
    cmd, res = os.path.join(d, "cmd"), os.path.join(d, "res")
    write_atomic(os.path.join(d, "ready"), json.dumps({"module_errors": errors,
                                                        "kernel": os.uname().release}))
    log("ready", errors)
    while True:
        try:
            names = sorted((n for n in os.listdir(cmd) if n.endswith(".sh")),
                           key=lambda n: int(n.split(".")[0]))
        except OSError:
            names = []
        for n in names:
            p = os.path.join(cmd, n)
            with open(p) as f:
                text = f.read()
            os.unlink(p)
            seq = n.split(".")[0]
            if text.strip() == "__halt__":
                write_atomic(os.path.join(res, seq + ".json"), json.dumps({"rc": 0}))
                os.sync()
                subprocess.run(["poweroff", "-f"])
                return
            t0 = time.monotonic()
            try:
                r = subprocess.run(["/bin/sh", "-ec", text], capture_output=True, text=True,
                                   timeout=60)
                out = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
            except subprocess.TimeoutExpired as e:
                out = {"rc": 124, "stdout": str(e.stdout or ""), "stderr": "timed out"}
            out["seconds"] = round(time.monotonic() - t0, 3)
            write_atomic(os.path.join(res, seq + ".json"), json.dumps(out))
        time.sleep(0.02 if names else 0.05)


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:             # PID 1 must not die: say why and power off
        log("fatal:", repr(e))
        subprocess.run(["poweroff", "-f"])
    sys.exit(0)
