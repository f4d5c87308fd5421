"""nvgwctl against a live gateway, and the installed-driver listing."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

from dataplane import drivers
from harness import GatewayProcess, PcapPort
from test_forward import mixed_packets


ROOT = Path(__file__).resolve().parent.parent


def nvgwctl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mgmt.ctl", *args],
                          capture_output=True, text=True, timeout=30,
                          env=None if env is None else {**os.environ, **env})


def test_nvgwctl_reads_live_counters(tmp_path):
    with GatewayProcess(tmp_path, [PcapPort("a", "customer", mixed_packets(100)),
                                   PcapPort("b", "provider")]) as gw:
        gw.wait_rx("a", 100)
        p = nvgwctl("--gateway", gw.endpoint, "--json", "show", "ports")
        assert p.returncode == 0, p.stderr
        ports = {row["name"]: row for row in json.loads(p.stdout)}
        assert ports["a"]["rx_pkts"] == ports["b"]["tx_pkts"] == 100
        p = nvgwctl("--gateway", gw.endpoint, "show", "workers")
        header, row = p.stdout.splitlines()
        assert header.split() == ["WORKER", "LCORE", "RX_PKTS", "PROCESSED", "HANDED_OFF",
                                  "TX_PKTS", "DROP_PKTS", "BUSY"]
        assert row.split()[:7] == ["0", "1", "100", "100", "0", "100", "0"]
        p = nvgwctl("--gateway", gw.endpoint, "show", "drops")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0].split() == ["REASON", "PACKETS"]
        from dataplane._dataplane import DROP_REASONS
        assert [line.split() for line in lines[1:]] == [[n, "0"] for n, _ in DROP_REASONS]


def test_nvgwctl_without_gateway_fails_clearly(tmp_path):
    p = nvgwctl("--gateway", f"ipc://{tmp_path}/none.sock", "--timeout", "0.3", "show", "ports")
    assert p.returncode == 1
    assert p.stderr.startswith("nvgwctl: no answer from ipc://")
    p = nvgwctl("--gateway", "gateway-1", "show", "ports")        # not an endpoint
    assert (p.returncode, p.stderr) == (1, "nvgwctl: gateway-1: Invalid argument "
                                           "(addr='gateway-1')\n")
    # the provider addresses are set, never deleted; mappings are a kind like any other
    p = nvgwctl("del", "provider")
    assert p.returncode == 2 and "invalid choice: 'provider'" in p.stderr
    assert "mapping" in nvgwctl("set", "--help").stdout
    # usage mistakes exit 2 with argparse's line; refusals exit 1
    for args, message in ((("--timeout", "nan", "show", "ports"), "is not a number of seconds"),
                          (("--timeout", "-1", "show", "ports"), "is not a number of seconds"),
                          (("--gateway", "ipc:///x", "--mgmt", "ipc:///y", "show", "policy"),
                           "give --gateway (one gateway) or --mgmt (nvgw-mgmt), not both"),
                          (("wait",), "wait needs --mgmt"),
                          (("--mgmt", "ipc:///y", "apply", "-f", "x.json"), "--mgmt needs --key")):
        p = nvgwctl(*args)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
    # wait --timeout 0 asks whether it is applied already: not a usage error
    p = nvgwctl("--mgmt", "ipc:///y", "--key", "/nonexistent", "--server-key", "/nonexistent",
                "wait", "--timeout", "0")
    assert p.returncode == 1 and "cannot read" in p.stderr, p.stderr
    for fields, message in ((["op=del", "vsid=5001"], "'op' is the command's, not a field"),
                            (["vsid=5001", "vsid=5002"], "'vsid' given twice")):
        p = nvgwctl("--gateway", f"ipc://{tmp_path}/none.sock", "set", "record", *fields)
        assert (p.returncode, p.stderr.strip()) == (1, f"nvgwctl: set record: {message}")
    # an explicit --gateway wins over NVGW_MGMT (it went to nvgw-mgmt, asking for keys)
    p = nvgwctl("--gateway", f"ipc://{tmp_path}/none.sock", "--timeout", "0.3", "show",
                "policy", env={"NVGW_MGMT": f"ipc://{tmp_path}/mgmt.sock"})
    assert p.returncode == 1 and p.stderr.startswith("nvgwctl: no answer from ipc://"), p.stderr


def test_installed_drivers_from_pmd_metadata():
    found = drivers.installed_drivers()
    for name in ("net_null", "net_ring", "net_pcap", "net_af_packet", "net_tap"):
        assert found[name].virtual, name
    assert "rx_pcap" in found["net_pcap"].params
    assert drivers.driver_of("net_pcap3,rx_pcap=x.pcap") == "net_pcap"
    assert drivers.driver_of("0000:01:00.0") is None
    assert drivers.driver_of("net_nothing0") is None


def test_odd_pmd_info_strings_are_skipped(tmp_path):
    """A driver file whose PMD_INFO_STRING is JSON but no driver's (not an object, no
    name, pci_ids not a list) is skipped string by string, not a traceback at every
    config load; the good string beside them is read."""
    strings = ['{}', '[1, 2]', '"net_x"', '{"name": 7}', '{"name": "net_bad", "pci_ids": 3}',
               '{"name": "net_bad2", "kmod": ["x"]}', '{"name": "net_bad3", "params": 1}',
               '{"name": "net_good", "params": "k=<int>", "pci_ids": []}', 'not json']
    src = tmp_path / "pmd.c"
    src.write_text("".join(
        f'__attribute__((used)) const char s{i}[] = "PMD_INFO_STRING= '
        + j.replace('"', '\\"') + '";\n' for i, j in enumerate(strings)))
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "librte_net_odd.so"),
                    str(src)], check=True)
    found = drivers.installed_drivers([str(tmp_path)])
    assert list(found) == ["net_good"], found
    assert found["net_good"].virtual and found["net_good"].params == "k=<int>"


# The benchmark's callgrind reading: self costs per shared object, with callgrind's
# name compression (a name given once, first perhaps as a callee's) and call costs
# (the line after calls=) left to the callee.
CALLGRIND_OUT = """\
# callgrind format
version: 1
positions: line
events: Ir
summary: 1000

ob=(1) /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
fl=(1) ./elf/tls_get_addr.S
fn=(1) __tls_get_addr
30 40
+1 20

ob=(2) /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_pcap.so.23.0
fl=(2) ???
fn=(2) 0x0000000000003f70
0 100
cob=(3) /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/librte_net_null.so.23.0
cfi=(2)
cfn=(3) 0x0000000000004370
calls=10 0
0 500

ob=(4) /work/main/dataplane/_dataplane.cpython-311-x86_64-linux-gnu.so
fl=(4) /work/main/cext/nvgre.c
fn=(4) nvgw_nvgre_burst
12 300
fi=(5) /work/main/cext/htab.h
+3 90
fe=(4)
-2 10
cob=(1)
cfi=(1)
cfn=(1)
calls=5 30
* 60

ob=(3)
fl=(2)
fn=(3)
0 200
"""


def test_bench_callgrind_parts(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    out = tmp_path / "cg.out"
    out.write_text(CALLGRIND_OUT)
    parts = bench.cg_parts(out, 10)
    assert parts == {"other (libc, EAL, TLS)": 6.0, "net_pcap rx": 10.0, "nvgw": 40.0,
                     "net_null tx": 20.0, "total": 76.0}


def test_memprobe_builds_and_measures(tmp_path):
    """scripts/memprobe.c, the README's probe of what a random line costs: it builds
    without warnings, prints cycles a packet, and refuses a table too small."""
    exe = tmp_path / "memprobe"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(ROOT / "scripts" / "memprobe.c")], check=True, timeout=60)
    p = subprocess.run([str(exe), "1000", "4", "10", "32", "0"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    m = re.fullmatch(r"records 1000 table 4 MB work 10 ahead 32 stream 0 "
                     r"\((hugepages|plain pages)\): ([0-9.]+) cycles a packet\n", p.stdout)
    assert m and float(m.group(2)) > 0, p.stdout
    p = subprocess.run([str(exe), "70000", "4", "10", "32", "0"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "at most one record a line" in p.stderr
