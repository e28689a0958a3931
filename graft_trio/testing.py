"""Small helpers for tests, demos and benchmarks that run graft on 127.0.0.1."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All ``n`` sockets are bound before any is closed, so the ports differ; the
    OS may hand one out again before the caller binds it (a race every
    "find a free port" helper has), which is why tests retry on EADDRINUSE.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
