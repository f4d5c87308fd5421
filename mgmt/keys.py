"""CurveZMQ keys of the management plane.

A key pair is two files written by `nvgwctl keygen DIR NAME` (zmq.auth's
format): DIR/NAME.key (public) and DIR/NAME.key_secret (public and secret).
nvgw-mgmt reads its own pair from KEYS/server.key_secret and two allow-lists
of public keys: KEYS/clients/*.key (who may read and change policy) and
KEYS/gateways/*.key (which gateways may connect; a gateway's id is the name
of its key file, so one gateway cannot speak for another).
"""
from __future__ import annotations

import os
from pathlib import Path

import zmq.auth

from dataplane.errors import ConfigError

SERVER = "server"
CLIENTS, GATEWAYS = "clients", "gateways"


def keygen(directory: str, name: str) -> tuple[str, str]:
    """Write NAME.key and NAME.key_secret (mode 0600) in directory; return their paths."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} must be a plain file name")
    for suffix in (".key", ".key_secret"):
        if os.path.exists(os.path.join(directory, name + suffix)):
            raise ConfigError(f"{os.path.join(directory, name + suffix)} exists; "
                              "not overwriting a key")
    try:
        os.makedirs(directory, exist_ok=True)
        old = os.umask(0o077)   # the secret is never readable by others, not even briefly
        try:
            public, secret = zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
    except OSError as e:
        raise ConfigError(f"cannot write a key pair in {directory}: {e.strerror}") from None
    os.chmod(public, 0o644)     # the public key is for others to read
    return public, secret


def load_pair(path: str) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a .key_secret file, or one clear ConfigError."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read key pair {path}: {e}") from None
    if not secret:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def load_public(path: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read public key {path}: {e}") from None
    return public


def allow_list(directory: str) -> dict[bytes, str]:
    """{z85 public key: name} for every DIR/*.key (read each time: no restart to add one)."""
    out = {}
    for p in sorted(Path(directory).glob("*.key")):
        try:
            out[load_public(str(p))] = p.stem
        except ConfigError:
            continue            # a broken file allows nobody
    return out


def curve_server(sock: zmq.Socket, pair: tuple[bytes, bytes], domain: str) -> None:
    sock.curve_publickey, sock.curve_secretkey = pair
    sock.curve_server = True
    sock.zap_domain = domain.encode()


def curve_client(sock: zmq.Socket, pair: tuple[bytes, bytes], server_public: bytes) -> None:
    sock.curve_publickey, sock.curve_secretkey = pair
    sock.curve_serverkey = server_public
