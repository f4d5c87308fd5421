"""nvgw-dataplane: the gateway process."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import structlog
import zmq

from dataplane import config, log as logsetup
from dataplane.cliargs import seconds
from dataplane.errors import NvgwError

log = structlog.get_logger("nvgw.dataplane")


def summary(counters: dict) -> str:
    """The exit summary: one line per port and worker, then non-zero drops."""
    lines = [f"{'port':<12} {'role':<9} {'rx_pkts':>12} {'rx_bytes':>14} "
             f"{'tx_pkts':>12} {'tx_bytes':>14} {'imissed':>9}"]
    for p in counters["ports"]:
        lines.append(f"{p['name']:<12} {p['role']:<9} {p['rx_pkts']:>12} {p['rx_bytes']:>14} "
                     f"{p['tx_pkts']:>12} {p['tx_bytes']:>14} "
                     f"{p.get('pmd', {}).get('imissed', 0):>9}")
    lines.append(f"{'worker':<12} {'lcore':<9} {'rx_pkts':>12} {'tx_pkts':>14} "
                 f"{'drops':>12} {'busy%':>14}")
    for i, w in enumerate(counters["workers"]):
        cycles = w["busy_cycles"] + w["idle_cycles"]
        busy = 100.0 * w["busy_cycles"] / cycles if cycles else 0.0
        lines.append(f"{i:<12} {w['lcore']:<9} {w['rx_pkts']:>12} {w['tx_pkts']:>14} "
                     f"{w['drop_pkts']:>12} {busy:>13.1f}%")
    if any(v["encap_pkts"] or v["decap_pkts"] for v in (counters.get("vsids") or {}).values()):
        lines.append(f"{'vsid':<12} {'':<9} {'encap_pkts':>12} {'encap_bytes':>14} "
                     f"{'decap_pkts':>12} {'decap_bytes':>14}")
        for vsid, v in counters["vsids"].items():
            if not (v["encap_pkts"] or v["decap_pkts"]):
                continue        # a big policy has many idle subnets
            lines.append(f"{vsid:<12} {'':<9} {v['encap_pkts']:>12} {v['encap_bytes']:>14} "
                         f"{v['decap_pkts']:>12} {v['decap_bytes']:>14}")
    exc = {k: v for k, v in (counters.get("exceptions") or {}).items() if v}
    if exc:
        lines.append("exceptions: " + ", ".join(f"{k}={v}" for k, v in exc.items()))
    drops = {k: v for k, v in counters["drops"].items() if v}
    lines.append("drops: " + (", ".join(f"{k}={v}" for k, v in drops.items()) or "none"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="nvgw-dataplane",
        description="Run the nvgw gateway data plane: DPDK ports and C workers.")
    ap.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    ap.add_argument("--control", metavar="ENDPOINT",
                    help="ZeroMQ endpoint of the control socket (overrides control.socket)")
    ap.add_argument("--duration", type=seconds(), metavar="SECONDS",
                    help="stop by itself after this many seconds (default: at a signal)")
    ap.add_argument("--stats-json", metavar="FILE",
                    help="write the final counters as JSON to FILE at exit")
    ap.add_argument("--log-level", default="info", type=str.lower, choices=logsetup.LEVELS)
    args = ap.parse_args(argv)
    logsetup.setup(args.log_level)
    if args.stats_json:             # a path it cannot write fails now, not after the run
        try:
            open(args.stats_json, "a").close()
        except OSError as e:
            ap.error(f"--stats-json {args.stats_json}: {e.strerror}")

    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))

    try:
        cfg = config.load(args.config)
        if args.control:
            cfg.control["socket"] = args.control
    except NvgwError as e:
        print(f"nvgw-dataplane: {e}", file=sys.stderr)
        return 2
    # The control socket's path first: a second gateway on it must not start its
    # ports (net_pcap would truncate the first one's capture files) to be refused.
    from dataplane.control import ControlServer, claim_endpoint
    try:
        lock = claim_endpoint(cfg.control["socket"])
    except NvgwError as e:
        print(f"nvgw-dataplane: control socket {cfg.control['socket']}: {e}", file=sys.stderr)
        return 2
    try:
        # Imported late: loading the extension pulls in DPDK, which a bad
        # config should not need.
        from dataplane.gateway import Gateway
        gw = Gateway(cfg)
        gw.start()
    except NvgwError as e:
        print(f"nvgw-dataplane: {e}", file=sys.stderr)
        return 2

    try:
        server = ControlServer(cfg.control["socket"], gw, lock=lock)
    except Exception as e:      # zmq bind errors are user errors (path, permissions)
        gw.stop()
        print(f"nvgw-dataplane: control socket {cfg.control['socket']}: {e}", file=sys.stderr)
        return 2
    agent = None
    if cfg.agent is not None:
        from dataplane.agent import Agent
        try:
            agent = Agent(cfg.agent, gw)
        except Exception as e:      # zmq connect errors are user errors (endpoint)
            server.close()
            gw.stop()
            print(f"nvgw-dataplane: agent {cfg.agent['endpoint']}: {e}", file=sys.stderr)
            return 2
    log.info("ready", control=cfg.control["socket"], ports=[p["name"] for p in gw.ports],
             mgmt=cfg.agent["endpoint"] if agent else None)
    deadline = time.monotonic() + args.duration if args.duration else None
    # One poller over the control socket and the agent's: requests are served
    # as they arrive; the timeout is the next heartbeat (at most 50 ms, so a
    # signal or the deadline is noticed promptly). The workers are C and
    # never wait for this loop.
    poller = zmq.Poller()
    poller.register(server.sock, zmq.POLLIN)
    if agent is not None:
        poller.register(agent.sock, zmq.POLLIN)
    try:
        while not stopping and (deadline is None or time.monotonic() < deadline):
            timeout = 50 if agent is None else min(50, agent.timeout_ms())
            ready = dict(poller.poll(timeout))
            if server.sock in ready:
                server.poll(0)
            if agent is not None:
                if agent.sock in ready:
                    agent.handle()
                agent.tick()
    finally:
        if agent is not None:
            agent.close()
        server.close()
        gw.stop()
    counters = gw.counters()
    log.info("stopped", signal=stopping[0] if stopping else None)
    print(summary(counters), flush=True)
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(counters, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
