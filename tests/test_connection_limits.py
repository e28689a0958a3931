"""Connection floods and refused handshakes cannot take a node down or make it spin.

From a review of the hostile-peer defences (issue 8):

* accepted connections that have not yet said HELLO are capped
  (``Options.max_pending_connections``); the rest are closed at once and
  counted, so a flood cannot exhaust the process's file descriptors;
* ``accept()`` failing for lack of descriptors or buffers (EMFILE, ENFILE,
  ENOBUFS, ENOMEM) is counted and retried, never fatal (it used to end
  ``Node.run``);
* a dialer whose handshakes keep being refused (an expired certificate, the
  peer hanging up before its HELLO) backs off exponentially instead of
  retrying every ``reconnect_min``.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_helpers import append_when_ready, wait_until

from graft_trio import Node, Options
from graft_trio._network import Address, Listener, MemoryNetwork, Network, TcpNetwork
from graft_trio._node import StartupError
from graft_trio.testing import free_ports


async def commit_through_leader(nodes: list[Node], data: bytes) -> int:
    """Append at the first node (a follower forwards to the leader); its index."""
    return (await append_when_ready(nodes[0], data)).index


async def test_a_connection_flood_is_capped_and_the_cluster_commits(tmp_path: Path) -> None:
    options = Options(heartbeat_interval=0.05, election_timeout=1.0, handshake_timeout=2.0,
                      max_pending_connections=4)
    ids = ["a", "b", "c"]
    addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(3), strict=True)}
    nodes = [Node(i, addrs[i], {j: a for j, a in addrs.items() if j != i}, tmp_path / i,
                  options=options) for i in ids]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        await commit_through_leader(nodes, b"before")
        target = nodes[2]  # "c" accepts the connections "a" and "b" dial
        flood = [await trio.open_tcp_stream(*addrs["c"]) for _ in range(20)]
        # At most 4 wait for their HELLO; the other 16 are closed at once.
        await wait_until(lambda: target.status().rejected.get("too_many_connections", 0) >= 16)
        index = await commit_through_leader(nodes, b"during the flood")
        await wait_until(lambda: all(n.status().applied_index >= index for n in nodes))
        for s in flood:
            await s.aclose()
        nursery.cancel_scope.cancel()


class _FailingListener:
    """A TCP listener whose first ``failures`` accepts fail with EMFILE."""

    def __init__(self, inner: Listener, failures: int) -> None:
        self.inner = inner
        self.port = inner.port
        self.failures = failures

    async def accept(self) -> trio.abc.Stream:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _EmfileNetwork:
    def __init__(self, failures: int) -> None:
        self.tcp = TcpNetwork()
        self.failures = failures

    async def listen(self, address: Address) -> Listener:
        return _FailingListener(await self.tcp.listen(address), self.failures)

    async def connect(self, address: Address) -> trio.abc.Stream:
        return await self.tcp.connect(address)


async def test_running_out_of_descriptors_is_survived(tmp_path: Path) -> None:
    options = Options(heartbeat_interval=0.05, election_timeout=1.0)
    ids = ["a", "b", "c"]
    addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(3), strict=True)}
    networks: dict[str, Network] = {i: _EmfileNetwork(3) if i == "c" else TcpNetwork()
                                    for i in ids}
    nodes = [Node(i, addrs[i], {j: a for j, a in addrs.items() if j != i}, tmp_path / i,
                  options=options, network=networks[i]) for i in ids]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        index = await commit_through_leader(nodes, b"after three EMFILEs")
        await wait_until(lambda: all(n.status().applied_index >= index for n in nodes))
        assert nodes[2].status().rejected.get("accept_emfile") == 3
        assert all(n.running for n in nodes)
        nursery.cancel_scope.cancel()


async def test_a_refused_dialer_backs_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A peer that hangs up before its HELLO is redialled with exponential backoff."""
    net = MemoryNetwork()
    addr_a, addr_b = ("a.test", 1), ("b.test", 1)
    attempts = 0

    async def hang_up(listener: Listener) -> None:
        nonlocal attempts
        while True:
            stream = await listener.accept()
            attempts += 1
            await stream.aclose()

    options = Options(heartbeat_interval=0.05, election_timeout=1.0, reconnect_min=0.05,
                      reconnect_max=2.0, disk_in_thread=False)
    a = Node("a", addr_a, {"b": addr_b}, tmp_path / "a", options=options, network=net)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up, await net.listen(addr_b))
        await nursery.start(a.run)
        await trio.sleep(10)
        # 0.05, 0.1, 0.2, ... 1.6, then 2 s apart: about ten dials in ten
        # seconds -- not one every reconnect_min, as when the backoff reset on connect.
        assert 5 <= attempts <= 15, attempts
        # Each refusal is counted: a clean close before the HELLO as malformed,
        # a reset as closed_before_hello.
        rejected = a.status().rejected
        refused = rejected.get("closed_before_hello", 0) + rejected.get("malformed", 0)
        assert refused >= attempts - 1, rejected
        nursery.cancel_scope.cancel()


def test_max_pending_connections_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="max_pending_connections"):
        Node("a", ("127.0.0.1", 0), {}, tmp_path, options=Options(max_pending_connections=0))
