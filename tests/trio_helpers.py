"""Waiting helpers shared by the graft_trio tests that run real clusters.

None of them measures time: ``HANG`` only turns a hung test into a failure.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from graft_trio import AppendResult, Node

#: A guard against a hung test, never a measure of speed.
HANG = 30
#: What append() raises while a cluster is still electing or connecting:
#: the entry was not committed (yet), so trying again is right.
NOT_YET = ("NoLeader", "CommitTimeout", "Rejected")


async def wait_until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(HANG):
        while not condition():
            await trio.sleep(0.01)


async def until_closed(stream: trio.abc.Stream) -> None:
    """Read (and discard) until the other side closes the connection."""
    try:
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # a reset, or a TLS alert, is a close too


async def append_when_ready(node: Node, data: bytes) -> AppendResult:
    """``node.append(data)``, tried again while the cluster cannot commit yet."""
    with trio.fail_after(HANG):
        while True:
            try:
                return await node.append(data, timeout=2)
            except Exception as e:
                assert type(e).__name__ in NOT_YET, repr(e)
            await trio.sleep(0.05)
