"""nvgwctl against a live gateway, and the installed-driver listing."""
import json
import subprocess
import sys

from dataplane import drivers
from harness import GatewayProcess, PcapPort
from test_forward import mixed_packets


def nvgwctl(*args):
    return subprocess.run([sys.executable, "-m", "mgmt.ctl", *args],
                          capture_output=True, text=True, timeout=30)


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
        assert "tx_full" in p.stdout


def test_nvgwctl_without_gateway_fails_clearly(tmp_path):
    p = nvgwctl("--gateway", f"ipc://{tmp_path}/none.sock", "--timeout", "0.3", "show", "ports")
    assert p.returncode == 1
    assert p.stderr.startswith("nvgwctl: no answer from ipc://")


def test_installed_drivers_from_pmd_metadata():
    found = drivers.installed_drivers()
    for name in ("net_null", "net_ring", "net_pcap", "net_af_packet", "net_tap"):
        assert found[name].virtual, name
    assert "rx_pcap" in found["net_pcap"].params
    assert drivers.driver_of("net_pcap3,rx_pcap=x.pcap") == "net_pcap"
    assert drivers.driver_of("0000:01:00.0") is None
    assert drivers.driver_of("net_nothing0") is None
