"""nvgwctl: the operator's client.

For now it reads a gateway's live counters through the gateway's control
socket; policy commands go through nvgw-mgmt in a later step.
"""
from __future__ import annotations

import argparse
import json
import sys

from dataplane.control import ControlClient
from dataplane.errors import NvgwError

DEFAULT_GATEWAY = "ipc:///run/nvgw/dataplane.sock"


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = [max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols]
    out = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
    out += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(out)


def show(client: ControlClient, what: str) -> tuple[object, str]:
    """(data, text) for `nvgwctl show WHAT`; one function for the CLI and the API."""
    data = client.request("show", what=what)
    if what == "ports":
        text = _table(data, ["name", "role", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes"])
    elif what == "workers":
        rows = []
        for i, w in enumerate(data):
            cycles = w["busy_cycles"] + w["idle_cycles"]
            rows.append(dict(w, worker=i,
                             busy=f"{100.0 * w['busy_cycles'] / cycles:.1f}%" if cycles else "-"))
        text = _table(rows, ["worker", "lcore", "rx_pkts", "tx_pkts", "drop_pkts", "busy"])
    elif what == "drops":
        text = _table([{"reason": k, "packets": v} for k, v in data.items()], ["reason", "packets"])
    else:
        text = "\n\n".join(show(client, w)[1] for w in ("ports", "workers", "drops"))
    return data, text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nvgwctl", description="Operate nvgw gateways.")
    ap.add_argument("--gateway", default=DEFAULT_GATEWAY, metavar="ENDPOINT",
                    help=f"a gateway's control socket (default {DEFAULT_GATEWAY})")
    ap.add_argument("--json", action="store_true", help="JSON output for automation")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("show", help="read a gateway's live counters")
    sh.add_argument("what", choices=["counters", "ports", "workers", "drops"])
    args = ap.parse_args(argv)

    client = ControlClient(args.gateway, int(args.timeout * 1000))
    try:
        data, text = show(client, args.what)
    except NvgwError as e:
        print(f"nvgwctl: {e}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
