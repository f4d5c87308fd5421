"""One process per ipc socket path (or store file): an flock on PATH.lock.

libzmq's bind replaces an ipc socket file that is there, so a second gateway or
nvgw-mgmt started on the same path would take the first one's requests, and
delete the path at its exit (or on a failed start), leaving the first one
unreachable until its restart. The lock goes with the process; its file stays
(removing it would race with the next holder)."""
from __future__ import annotations

import fcntl

from dataplane.errors import NvgwError


def claim(path: str, what: str = "in use by another process"):
    """Hold PATH.lock, or raise NvgwError(what). Close the returned file to let go."""
    f = open(path + ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise NvgwError(what) from None
    return f
