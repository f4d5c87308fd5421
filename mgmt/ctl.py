"""nvgwctl: the operator's client.

It talks to one gateway's control socket (live counters; policy of that
gateway alone) or, with --mgmt, to nvgw-mgmt, which holds the desired policy
of every gateway (apply, set/del, migrate, show policy, show gateways, wait).
Each command is one function returning (data, text) that the CLI prints
(text, or data with --json) and automation can call with either client
(dataplane.control.ControlClient or mgmt.client.MgmtClient).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from dataplane.cliargs import seconds
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
    if what == "gateways":
        return show_gateways(client)
    data = client.request("show", what=what)
    return data, _text(what, data)


def _text(what: str, data) -> str:
    if what == "ports":
        text = _table(data, ["name", "role", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes"])
    elif what == "workers":
        rows = []
        for i, w in enumerate(data):
            cycles = w["busy_cycles"] + w["idle_cycles"]
            rows.append(dict(w, worker=i,
                             busy=f"{100.0 * w['busy_cycles'] / cycles:.1f}%" if cycles else "-"))
        text = _table(rows, ["worker", "lcore", "rx_pkts", "processed", "handed_off",
                             "tx_pkts", "drop_pkts", "busy"])
    elif what == "drops":
        text = _table([{"reason": k, "packets": v} for k, v in data.items()], ["reason", "packets"])
    elif what == "neighbours":
        text = _table([dict(n, mac=n["mac"] or "(resolving)") for n in data],
                      ["vlan", "ip", "mac"])
    elif what == "tables":
        text = _table([{"table": k, "entries": v} for k, v in data.items()], ["table", "entries"])
    elif what == "policy":
        text = json.dumps(data, indent=2)
    else:                       # counters: the views of the one reply --json prints
        text = "\n\n".join(_text(w, data[w]) for w in ("ports", "workers", "drops"))
    return text


def show_vsid(client: ControlClient, vsid: int) -> tuple[object, str]:
    data = client.request("show", what="vsid", vsid=vsid)
    return data, _table([data], ["vsid", "rdid", "encap_pkts", "encap_bytes",
                                 "decap_pkts", "decap_bytes"])


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise NvgwError(f"cannot read {path}: {e}") from None
    except RecursionError:
        raise NvgwError(f"cannot read {path}: JSON nested too deeply") from None


def apply_file(client, path: str) -> tuple[object, str]:
    """Apply a JSON file: a document (object) makes the policy equal it (diff, then
    one batch); a batch (list of operations) is applied whole or not at all.
    `client` is a gateway's ControlClient or a MgmtClient (which sends many lookup
    records as one record block)."""
    data = read_json(path)
    mgmt = hasattr(client, "apply_records")
    if isinstance(data, list):
        res = client.apply(data) if mgmt else client.request("apply", ops=data)
        return res, f"applied {len(data)} operations from {path}: generation {res['generation']}"
    res = client.load(data) if mgmt else client.request("load", document=data)
    if res.get("changed") is False:
        return res, f"{path}: no change (generation {res['generation']})"
    return res, f"applied {path}: generation {res['generation']}"


def set_del(client, op: str, kind: str, fields: list[str]) -> tuple[object, str]:
    """`nvgwctl set|del KIND key=value...`: a one-operation batch. A value is JSON when
    it parses as JSON (vsid=5001, addresses='["192.168.1.1/24"]', name='"5001"',
    flowid=null), except true/false, NaN and Infinity, which no field takes: those,
    and what does not parse, are the text given."""
    obj = {"op": op, "kind": kind}
    for f in fields:
        k, sep, v = f.partition("=")
        if not sep or not k:
            raise NvgwError(f"{op} {kind}: {f!r} is not key=value")
        if k in obj:
            raise NvgwError(f"{op} {kind}: {k!r} given twice" if k not in ("op", "kind") else
                            f"{op} {kind}: {k!r} is the command's, not a field")
        try:
            val = json.loads(v)
        except ValueError:
            val = v
        text = isinstance(val, bool) or (isinstance(val, float) and
                                         (val != val or abs(val) == float("inf")))
        obj[k] = v if text else val
    res = client.request("apply", ops=[obj])
    return res, f"{op} {kind}: generation {res['generation']}"


def migrate(client, vsid: int, ca: str, pa: str) -> tuple[object, str]:
    data = client.request("migrate", vsid=vsid, ca=ca, pa=pa)
    return data, f"{ca} in VSID {vsid} now at {pa}: generation {data['generation']}"


def gateways_table(rows: list[dict]) -> str:
    return _table([{**r, "applied": "-" if r["applied"] is None else r["applied"],
                    "lag": "-" if r["lag"] is None else r["lag"],
                    "last_seen": "-" if r["last_seen"] is None else f"{r['last_seen']:.1f}s ago",
                    "error": r["error"] or ""} for r in rows],
                  ["id", "state", "applied", "lag", "last_seen", "error"])


def show_gateways(client) -> tuple[object, str]:
    rows = client.gateways()
    return rows, gateways_table(rows)


def wait(client, generation, timeout: float, min_gateways: int) -> tuple[object, str]:
    res = client.wait(generation, timeout, min_gateways)
    n = sum(1 for g in res["gateways"] if g["state"] == "up")
    down = [f"{g['id']} (applied {g['applied']})" for g in res["gateways"]
            if g["state"] != "up"]
    return res, (f"generation {res['generation']} applied by {n} connected gateways "
                 f"(waited {res['waited']:.3f} s)"
                 + (f"; not connected, so not waited for: {', '.join(down)}" if down else "")
                 + "\n" + gateways_table(res["gateways"]))


def keygen(directory: str, name: str) -> tuple[object, str]:
    from mgmt.keys import keygen as _keygen
    public, secret = _keygen(directory, name)
    return ({"public": public, "secret": secret},
            f"wrote {public} (public: give it to the peer) and {secret} (secret: keep it)")


MGMT_ONLY = ("gateways", "wait")


def main(argv=None) -> int:
    env = os.environ.get
    ap = argparse.ArgumentParser(
        prog="nvgwctl", description="Operate nvgw gateways: one gateway's control socket "
        "(--gateway), or the policy of all of them through nvgw-mgmt (--mgmt).")
    ap.add_argument("--gateway", metavar="ENDPOINT",
                    help=f"a gateway's control socket (default {DEFAULT_GATEWAY}); given, "
                         "every command goes there, NVGW_MGMT or not")
    ap.add_argument("--mgmt", metavar="ENDPOINT",
                    help="nvgw-mgmt's client endpoint (env NVGW_MGMT): policy commands "
                         "(apply, set, del, migrate, show policy|gateways, wait) go there")
    ap.add_argument("--key", default=env("NVGW_KEY"), metavar="FILE",
                    help="this client's key pair (.key_secret, env NVGW_KEY)")
    ap.add_argument("--server-key", default=env("NVGW_SERVER_KEY"), metavar="FILE",
                    help="nvgw-mgmt's public key (server.key, env NVGW_SERVER_KEY)")
    ap.add_argument("--json", action="store_true", help="JSON output for automation")
    ap.add_argument("--timeout", type=seconds(high=86400), default=5.0,
                    help="seconds to wait for an answer (default 5)")
    # --json also after the command (nvgwctl show policy --json).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="JSON output for automation")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sh = sub.add_parser("show", parents=[common], help="read counters (a gateway) or policy and gateways")
    sh.add_argument("what", choices=["counters", "ports", "workers", "drops", "vsid",
                                     "policy", "neighbours", "tables", "gateways"])
    sh.add_argument("vsid", nargs="?", type=int, help="with 'vsid': the VSID")
    sub.add_parser("gateways", parents=[common], help="nvgw-mgmt's gateways, applied generation and lag")
    ap_ = sub.add_parser("apply", parents=[common], help="apply a JSON document (make the policy equal it) "
                         "or a JSON batch (list of operations)")
    ap_.add_argument("-f", "--file", required=True)
    kinds = ["domain", "subnet", "attachment", "route", "record", "mapping", "neighbour"]
    for op in ("set", "del"):
        p = sub.add_parser(op, parents=[common], help=f"{op} one policy object: KIND key=value ...")
        # The provider addresses are set, never deleted: the gateway needs them.
        p.add_argument("kind", choices=(["provider"] if op == "set" else []) + kinds)
        p.add_argument("fields", nargs="*", metavar="key=value")
    mg = sub.add_parser("migrate", parents=[common], help="move a CA to a new PA (live migration)")
    mg.add_argument("--vsid", type=int, required=True)
    mg.add_argument("--ca", required=True)
    mg.add_argument("--pa", required=True)
    wt = sub.add_parser("wait", parents=[common], help="wait until every connected gateway has applied a generation "
                        "(gateways not connected are named, not waited for)")
    wt.add_argument("--generation", type=int, help="default: the latest")
    wt.add_argument("--gateways", type=int, default=0, metavar="N",
                    help="and at least N gateways are connected")
    # 0: has it been applied already?
    wt.add_argument("--timeout", dest="wait_timeout", type=seconds(high=3600, zero=True),
                    metavar="SECONDS",
                    help="give up after this long (default: the global --timeout)")
    kg = sub.add_parser("keygen", parents=[common], help="write a CurveZMQ key pair DIR/NAME.key(_secret)")
    kg.add_argument("dir")
    kg.add_argument("name")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "keygen":
            data, text = keygen(args.dir, args.name)
        else:
            data, text = _run(ap, args)
    except NvgwError as e:
        print(f"nvgwctl: {e}", file=sys.stderr)
        return 1

    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _run(ap, args):
    what = getattr(args, "what", None)
    if args.mgmt and args.gateway:
        ap.error("give --gateway (one gateway) or --mgmt (nvgw-mgmt), not both")
    # An explicit --gateway wins over NVGW_MGMT: the operator named the gateway.
    mgmt = args.mgmt or (None if args.gateway else os.environ.get("NVGW_MGMT"))
    to_mgmt = mgmt and (args.cmd in ("apply", "set", "del", "migrate", "wait", "gateways")
                        or what in ("policy", "gateways"))
    if to_mgmt:
        if not args.key or not args.server_key:
            ap.error("--mgmt needs --key (this client's .key_secret) and --server-key "
                     "(nvgw-mgmt's public key)")
        from mgmt.client import MgmtClient
        client = MgmtClient(mgmt, args.key, args.server_key, args.timeout)
    elif args.cmd in MGMT_ONLY or what == "gateways":
        ap.error(f"{args.cmd if args.cmd != 'show' else 'show gateways'} needs --mgmt "
                 "(nvgw-mgmt's endpoint)")
    else:
        client = ControlClient(args.gateway or DEFAULT_GATEWAY, int(args.timeout * 1000))
    if args.cmd == "apply":
        return apply_file(client, args.file)
    if args.cmd in ("set", "del"):
        return set_del(client, args.cmd, args.kind, args.fields)
    if args.cmd == "migrate":
        return migrate(client, args.vsid, args.ca, args.pa)
    if args.cmd == "wait":
        return wait(client, args.generation,
                    args.timeout if args.wait_timeout is None else args.wait_timeout,
                    args.gateways)
    if args.cmd == "gateways" or what == "gateways":
        return show_gateways(client)
    if what == "vsid":
        if args.vsid is None:
            ap.error("show vsid needs a VSID")
        return show_vsid(client, args.vsid)
    if to_mgmt:                                     # show policy
        data = client.policy()
        return data, json.dumps(data, indent=2)
    return show(client, what)


if __name__ == "__main__":
    sys.exit(main())
