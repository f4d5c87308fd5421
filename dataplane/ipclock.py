"""One process per ipc socket path (or store file): an flock on PATH.lock.

libzmq's bind replaces an ipc socket file that is there, so a second gateway or
nvgw-mgmt started on the same path would take the first one's requests, and
delete the path at its exit (or on a failed start), leaving the first one
unreachable until its restart. The lock goes with the process; its file stays
(removing it would race with the next holder), readable by all, so that
another user may take it later (flock needs no write access)."""
from __future__ import annotations

import fcntl
import os

from dataplane.errors import NvgwError


def claim(path: str, what: str = "in use by another process") -> int:
    """Hold PATH.lock (its directory made if need be), or raise NvgwError (`what`
    when another process holds it). Returns the lock's file descriptor: os.close()
    it to let go."""
    lock = path + ".lock"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
        except PermissionError:         # another user's file, in a sticky directory
            fd = os.open(lock, os.O_RDONLY)
    except OSError as e:
        raise NvgwError(f"cannot open lock {lock}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NvgwError(what) from None
    return fd
