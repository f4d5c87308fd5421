"""nvgwctl: the operator's client.

It talks to one gateway's control socket: live counters, and policy
(apply a declarative file, migrate a CA). Each command is one function
that the CLI prints and automation can call.
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
    elif what == "neighbours":
        text = _table([dict(n, mac=n["mac"] or "(resolving)") for n in data],
                      ["vlan", "ip", "mac"])
    elif what == "policy":
        text = json.dumps(data, indent=2)
    else:
        text = "\n\n".join(show(client, w)[1] for w in ("ports", "workers", "drops"))
    return data, text


def show_vsid(client: ControlClient, vsid: int) -> tuple[object, str]:
    data = client.request("show", what="vsid", vsid=vsid)
    return data, _table([data], ["vsid", "rdid", "encap_pkts", "encap_bytes",
                                 "decap_pkts", "decap_bytes"])


def apply_file(client: ControlClient, path: str) -> tuple[object, str]:
    """Make the gateway's policy equal the JSON document in `path` (one batch)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise NvgwError(f"cannot read policy {path}: {e}") from None
    data = client.request("load", document=doc)
    return data, f"applied {path}: generation {data['generation']}"


def migrate(client: ControlClient, vsid: int, ca: str, pa: str) -> tuple[object, str]:
    data = client.request("migrate", vsid=vsid, ca=ca, pa=pa)
    return data, f"{ca} in VSID {vsid} now at {pa}: generation {data['generation']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="nvgwctl", description="Operate nvgw gateways.")
    ap.add_argument("--gateway", default=DEFAULT_GATEWAY, metavar="ENDPOINT",
                    help=f"a gateway's control socket (default {DEFAULT_GATEWAY})")
    ap.add_argument("--json", action="store_true", help="JSON output for automation")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("show", help="read a gateway's live counters")
    sh.add_argument("what", choices=["counters", "ports", "workers", "drops", "vsid",
                                     "policy", "neighbours"])
    sh.add_argument("vsid", nargs="?", type=int, help="with 'vsid': the VSID")
    ap_ = sub.add_parser("apply", help="make the policy equal a JSON document")
    ap_.add_argument("-f", "--file", required=True)
    mg = sub.add_parser("migrate", help="move a CA to a new PA (live migration)")
    mg.add_argument("--vsid", type=int, required=True)
    mg.add_argument("--ca", required=True)
    mg.add_argument("--pa", required=True)
    args = ap.parse_args(argv)

    client = ControlClient(args.gateway, int(args.timeout * 1000))
    try:
        if args.cmd == "apply":
            data, text = apply_file(client, args.file)
        elif args.cmd == "migrate":
            data, text = migrate(client, args.vsid, args.ca, args.pa)
        elif args.what == "vsid":
            if args.vsid is None:
                ap.error("show vsid needs a VSID")
            data, text = show_vsid(client, args.vsid)
        else:
            data, text = show(client, args.what)
    except NvgwError as e:
        print(f"nvgwctl: {e}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
