"""Clean stops on signals and one clear line for every kind of bad config."""
import json
import signal
import subprocess

import pytest

from harness import GatewayProcess, PcapPort
from test_forward import mixed_packets


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_prints_summary(tmp_path, sig):
    gw = GatewayProcess(tmp_path, [PcapPort("a", "customer", mixed_packets(50)),
                                   PcapPort("b", "provider")]).start()
    gw.wait_rx("a", 50)
    assert gw.stop(sig) == 0, gw.stderr
    assert "Traceback" not in gw.stderr
    lines = gw.stdout.splitlines()
    assert lines[0].split()[:2] == ["port", "role"]
    a = next(line.split() for line in lines if line.startswith("a "))
    b = next(line.split() for line in lines if line.startswith("b "))
    assert a[2] == "50" and b[4] == "50"            # rx_pkts of a, tx_pkts of b
    assert lines[-1] == "drops: none"
    assert '"event": "stopped"' in gw.stderr
    assert len(gw.sent("b")) == 50                   # TX flushed before close


def test_second_gateway_on_the_same_control_socket_is_refused(tmp_path):
    """libzmq's bind replaces an ipc socket file that is there: a second gateway
    would take the first one's requests and delete its socket at exit."""
    first = GatewayProcess(tmp_path / "one", [PcapPort("a", "customer"),
                                              PcapPort("b", "provider")]).start()
    try:
        (tmp_path / "two.toml").write_text(
            f'[eal]\nmemory = "no-huge"\nmemory_mb = 128\n[workers]\nlcores = [1]\n'
            f'[control]\nsocket = "{first.endpoint}"\n'
            '[[ports]]\nname = "a"\nrole = "customer"\ndevice = "net_null0"\n'
            '[[ports]]\nname = "b"\nrole = "provider"\ndevice = "net_null1"\n')
        p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "two.toml")),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().endswith(
            f"nvgw-dataplane: control socket {first.endpoint}: in use by another gateway")
        # refused before EAL and its ports (net_pcap would truncate the first's files)
        assert '"event": "memory"' not in p.stderr and "port_up" not in p.stderr, p.stderr
        assert first.request("show", what="ports")     # the first one still answers
    finally:
        assert first.stop() == 0, first.stderr


def test_eal_args_the_gateway_sets_itself_are_refused(tmp_path):
    """eal.args go after the gateway's own EAL arguments: --proc-type=secondary made
    EAL wait for a primary for ever (SIGTERM could not stop it), a second --lcores or
    memory option fought the config's."""
    for arg, src in (("--proc-type=secondary", "its own runtime: one primary process"),
                     ("--proc=secondary", "its own runtime"),  # getopt_long's prefixes
                     ("-l0-1", "workers.lcores"), ("--socket-mem=64", "eal.memory and"),
                     ("--vdev=net_null5", "[[ports]]"), ("--log-level=debug", "eal.log_level")):
        msg = run_config(tmp_path, good(tmp_path, eal=f'args = ["{arg}"]'))
        assert msg.startswith(f"'eal.args' {arg!r}: the gateway sets that from {src}"), msg
    ok = ["-n", "4", "--no-telemetry", "--log-level=pmd.net.pcap:debug",
          "--log-level", "lib.eal:info", "--iova-mode=va", "-d", "/x"]
    (tmp_path / "ok.toml").write_text(good(tmp_path, eal=f"args = {json.dumps(ok)}"))
    from dataplane import config
    assert config.load(str(tmp_path / "ok.toml")).eal["args"] == ok


def run_config(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    p = subprocess.run(GatewayProcess.command("--config", str(path)),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("nvgw-dataplane: ")]
    assert len(errors) == 1, p.stderr
    return errors[0].removeprefix("nvgw-dataplane: ")


def good(tmp_path, eal="", workers="", port="", mempool=""):
    rx = tmp_path / "empty.pcap"
    rx.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    return (f'[eal]\nmemory = "no-huge"\nmemory_mb = 128\n{eal}\n'
            f'[workers]\nlcores = [1]\n{workers}\n[mempool]\n{mempool}\n'
            f'[control]\nsocket = "ipc://{tmp_path}/c.sock"\n'
            f'[[ports]]\nname = "a"\nrole = "customer"\n'
            f'device = "net_pcap0,rx_pcap={rx},tx_pcap={tmp_path}/o.pcap"\n{port}\n')


def test_good_config_runs(tmp_path):
    (tmp_path / "ok.toml").write_text(good(tmp_path))
    p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "ok.toml"),
                                              "--duration", "0.2"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_rss_queues_turns_on_the_nics_rss(tmp_path):
    """workers.rss = queues configures a PMD that offers RSS (net_null does) for RSS
    over IPv4, and one that offers none (net_pcap) as it was; both start."""
    rx = f"rx_pcap={tmp_path}/empty.pcap"
    text = good(tmp_path, workers='rss = "queues"', port="queues = 2").replace(
        "lcores = [1]", "lcores = [1, 2]\ncpus = [1, 1]").replace(
        rx, f"{rx},{rx}").replace(f"tx_pcap={tmp_path}/o.pcap",
                                  f"tx_pcap={tmp_path}/o.pcap,tx_pcap={tmp_path}/p.pcap")
    text += ('[[ports]]\nname = "b"\nrole = "provider"\ndevice = "net_null0,no-rx=1"\n'
             "queues = 2\n")
    (tmp_path / "ok.toml").write_text(text)
    p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "ok.toml"),
                                              "--duration", "0.2", "--log-level", "info"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    up = {e["port"]: e for e in map(json.loads, (line for line in p.stderr.splitlines()
                                                  if '"event": "port_up"' in line))}
    assert up["b"]["nic_rss"] == "0xbc"     # IPV4, FRAG_IPV4, NONFRAG_IPV4_TCP/UDP/OTHER
    assert up["a"]["nic_rss"] == "none"
    assert '"mode": "queues"' in p.stderr


@pytest.mark.parametrize("old, new, message", [
    ("memory_mb = 128", "memory_mb = 128\ncolour = 'blue'", "unknown key 'eal.colour'"),
    ('role = "customer"', 'role = "customer"\nspeed = 10', "unknown key 'ports[0].speed'"),
    ("memory_mb = 128", "memory_mb = 'lots'", "'eal.memory_mb' must be int, not str"),
    ("[mempool]", "[pipeline]\nresolve_wait_ms = 20000\n[mempool]",
     "'pipeline.resolve_wait_ms' must be 0..10000"),
    ('role = "customer"', 'role = "tenant"', "role must be 'provider' or 'customer'"),
    ("[mempool]", "[bogus]\n[mempool]", "unknown section or key 'bogus'"),
    ('memory = "no-huge"', 'memory = "lots"', "'eal.memory' must be one of auto, hugepages"),
    ("lcores = [1]", "lcores = [0]", "lcore 0 is the main lcore and cannot be a worker"),
    ("lcores = [1]", 'lcores = [1]\nrss = "flows"', "'workers.rss' must be one of auto, queues"),
    ("lcores = [1]", 'lcores = [1, 2]\ncpus = [1, 1]\nrss = "queues"',
     "2 workers need ports with 2 queues (or a multiple)"),
    ("[mempool]", "[tables]\nneighbours = 65537\n[mempool]",
     "'tables.neighbours' must be 256..65536 (a lookup record names its next hop by a "
     "16-bit index)"),
    # values DPDK would refuse (or Cython overflow on) after EAL is up
    ("[mempool]", "[mempool]\ncache = -1", "'mempool.cache' must be 0..512"),
    ("[mempool]", "[mempool]\ncache = 600", "'mempool.cache' must be 0..512"),
    ("[mempool]", "[mempool]\nmbufs = 9999999999", "'mempool.mbufs' must be 1024..67108864"),
    ("memory_mb = 128", 'memory_mb = 128\nlog_level = "verbose"',
     "'eal.log_level' 'verbose': a level is 1..8 or one of emergency"),
    # True is 1 (a usable cpu) to Python: EAL got --lcores 1@True ("Invalid argument")
    ("lcores = [1]", "lcores = [1]\ncpus = [true]",
     "'workers.cpus' entries are cpu numbers, not True"),
    ("lcores = [1]", "lcores = [1]\ncpus = [1.0]",
     "'workers.cpus' entries are cpu numbers, not 1.0"),
    # keys the chosen pipeline would ignore
    ("[mempool]", '[pipeline]\npolicy = "p.json"\n[mempool]',
     "'pipeline.policy' needs pipeline.mode = nvgre"),
])
def test_bad_keys_and_values(tmp_path, old, new, message):
    text = good(tmp_path)
    assert old in text
    assert message in run_config(tmp_path, text.replace(old, new, 1))


def test_rss_queues_needs_an_even_split(tmp_path):
    text = good(tmp_path, workers='rss = "queues"', port="queues = 3").replace(
        "lcores = [1]", "lcores = [1, 2]\ncpus = [1, 1]")
    assert run_config(tmp_path, text) == (
        "port 'a': 'workers.rss' = queues gives RX queue q to worker q mod 2, so its "
        "queues (3) must be 1 or a multiple of 2")


def test_more_rx_queues_than_a_worker_polls(tmp_path):
    """RX queue q of every port goes to worker q mod n; a worker polls 32 at most
    (it used to fail after EAL, stopping half-configured workers: a segfault)."""
    text = good(tmp_path, port="queues = 16")
    for name in ("b", "c"):
        text += (f'[[ports]]\nname = "{name}"\nrole = "provider"\nqueues = 16\n'
                 f'device = "net_null{name}"\n')
    assert run_config(tmp_path, text) == (
        "a worker would poll 48 RX queues (queue q of every port goes to worker q mod 1); "
        "32 at most: add workers or use fewer queues")


def test_peer_only_in_the_forward_pipeline(tmp_path):
    text = good(tmp_path, port='peer = "a"').replace("[mempool]",
                                                     '[pipeline]\nmode = "nvgre"\n[mempool]')
    text += '[[ports]]\nname = "b"\nrole = "provider"\ndevice = "net_null0"\n'
    assert run_config(tmp_path, text).startswith("'peer' is for pipeline.mode = forward")


def test_main_lcore_keeps_off_worker_cpus_when_its_own_is_not_usable(tmp_path, monkeypatch):
    """Run under taskset -c 1-3, main lcore 0's CPU is not usable: the control thread
    went to the lowest usable CPU, the busy-polling worker's; now the lowest free one."""
    from dataplane import config
    cfg = config.parse(good(tmp_path), str(tmp_path / "x.toml"))
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {1, 2, 3})
    args = config.eal_args(cfg, hugepages=False)
    assert args[args.index("--lcores") + 1] == "0@2,1@1"
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {1})
    args = config.eal_args(cfg, hugepages=False)
    assert args[args.index("--lcores") + 1] == "0@1,1@1"      # no other: shared
    # its own CPU usable but a worker's: the free one, not the worker's
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1})
    cfg = config.parse(good(tmp_path).replace("lcores = [1]", "lcores = [1]\ncpus = [0]"),
                       str(tmp_path / "x.toml"))
    args = config.eal_args(cfg, hugepages=False)
    assert args[args.index("--lcores") + 1] == "0@1,1@0"


def test_more_workers_than_the_data_plane_takes(tmp_path):
    """17 workers failed only after EAL and the ports had started; now before anything."""
    text = good(tmp_path).replace("lcores = [1]", f"lcores = {list(range(1, 18))}")
    assert run_config(tmp_path, text) == "'workers.lcores' lists 17 workers; 16 at most"


def test_pci_ports_in_the_order_eal_numbers_them(tmp_path):
    """EAL numbers PCI ports first, in bus order, and the gateway takes port ids in
    config order: another order failed after EAL with 'port ids [1, 0] are not 0..1'.
    Short and pci: forms are written as ethdev names the port (they failed to probe)."""
    from dataplane import config

    def ports(*devices):
        return "".join(f'[[ports]]\nname = "p{i}"\nrole = "customer"\ndevice = "{d}"\n'
                       for i, d in enumerate(devices))
    head = good(tmp_path)[:good(tmp_path).index("[[ports]]")]
    assert run_config(tmp_path, head + ports("0000:05:00.0", "0000:03:00.0")) == (
        "port 'p0' (0000:05:00.0): PCI ports are listed in bus order, as EAL numbers them "
        "(0000:03:00.0 comes first)")
    assert run_config(tmp_path, head + ports("net_null0", "0000:03:00.0")) == (
        "port 'p1': PCI ports come first in [[ports]] (EAL numbers them before the "
        "virtual ones)")
    assert run_config(tmp_path, head + ports("pci:03:00.0", "0000:03:00.0")) == (
        "two ports name the same device")
    (tmp_path / "ok.toml").write_text(head + ports("pci:03:00.0,rxq_pkt_fill=8", "03:00.1",
                                                   "1:02:00.0", "net_null0"))
    cfg = config.load(str(tmp_path / "ok.toml"))
    assert [p.device for p in cfg.ports] == ["0000:03:00.0,rxq_pkt_fill=8", "0000:03:00.1",
                                             "0001:02:00.0", "net_null0"]


def test_lcore_that_does_not_exist(tmp_path):
    text = good(tmp_path).replace("lcores = [1]", "lcores = [300]")
    assert "lcore 300 does not exist" in run_config(tmp_path, text)
    text = good(tmp_path).replace("lcores = [1]", "lcores = [77]")
    assert "lcore 77 needs cpu 77, which does not exist" in run_config(tmp_path, text)


def test_driver_that_is_not_installed(tmp_path):
    text = good(tmp_path).replace("net_pcap0,", "net_warpdrive0,")
    err = run_config(tmp_path, text)
    assert "port device 'net_warpdrive0' names no installed DPDK driver" in err
    assert "net_pcap" in err                 # the message lists what is installed


def test_device_that_fails_to_probe(tmp_path):
    text = good(tmp_path).replace("rx_pcap=", "rx_pcap=/nonexistent/x")
    err = run_config(tmp_path, text)
    assert err.startswith("port 'a': device 'net_pcap0,rx_pcap=/nonexistent/x"), err
    assert "failed to probe" in err


def test_too_little_memory(tmp_path):
    text = good(tmp_path, mempool="mbufs = 200000").replace("memory_mb = 128", "memory_mb = 64")
    err = run_config(tmp_path, text)
    assert err.startswith("too little memory: a mempool of 200000 mbufs"), err


def test_command_line_mistakes_fail_before_anything_runs(tmp_path):
    """A duration that is no time, an unknown log level, a stats file that cannot be
    written (it failed after the whole run, in a traceback): usage errors, exit 2."""
    (tmp_path / "good.toml").write_text(good(tmp_path))
    for args, message in ((("--duration", "0"), "is not a number of seconds above 0"),
                          (("--duration", "nan"), "is not a number of seconds above 0"),
                          (("--log-level", "bogus"), "invalid choice: 'bogus'"),
                          (("--stats-json", "/nonexistent/dir/x.json"),
                           "--stats-json /nonexistent/dir/x.json: No such file or directory")):
        p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "good.toml"),
                                                  *args), capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (args, p.stderr)
        assert message in p.stderr, (args, p.stderr)
    # levels in any case, as before (a unit file may say WARNING)
    p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "none.toml"),
                                              "--log-level", "WARNING"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot read config" in p.stderr, p.stderr


def test_missing_and_malformed_files(tmp_path):
    assert run_config(tmp_path, "[eal\n").startswith(f"{tmp_path}/bad.toml is not valid TOML")
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n[eal]\n")
    p = subprocess.run(GatewayProcess.command("--config", str(tmp_path / "latin1.toml")),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"nvgw-dataplane: {tmp_path}/latin1.toml is not UTF-8 text (byte 5)"
    p = subprocess.run(GatewayProcess.command("--config", "/nonexistent.toml"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == ("nvgw-dataplane: cannot read config /nonexistent.toml: "
                                "No such file or directory")


def test_no_ports(tmp_path):
    text = good(tmp_path)
    text = text[:text.index("[[ports]]")]
    assert run_config(tmp_path, text) == "no ports: add at least one [[ports]] table"
