"""graft_trio.Node on trio's MockClock: timing in virtual seconds, over a MemoryNetwork.

Real time is not the point of these tests, so they run a whole cluster in
memory on ``autojump_clock``: an election timeout of 10 seconds costs no real
time, and the timing assertions are about virtual time, which no noisy
machine can disturb.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from graft_core import Role
from graft_trio import MemoryNetwork, Node, NoLeader, Options

# Long, realistic timeouts: free on a MockClock.
SLOW = Options(
    heartbeat_interval=1.0, election_timeout=10.0, append_timeout=60.0, fsync=False,
    disk_in_thread=False,
)


def addresses(n: int) -> dict[str, tuple[str, int]]:
    return {f"n{k}": ("10.0.0.1", 7000 + k) for k in range(n)}


@asynccontextmanager
async def memory_cluster(
    tmp: Path, n: int, options: Options = SLOW
) -> AsyncIterator[tuple[dict[str, Node], dict[str, trio.CancelScope], MemoryNetwork]]:
    net = MemoryNetwork()
    addrs = addresses(n)
    nodes = {
        i: Node(i, a, {j: b for j, b in addrs.items() if j != i}, tmp / i, options=options,
                network=net)
        for i, a in addrs.items()
    }
    scopes = {i: trio.CancelScope() for i in nodes}
    async with trio.open_nursery() as nursery:
        for i, node in nodes.items():

            async def run(node: Node = node, scope: trio.CancelScope = scopes[i], *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)
        yield nodes, scopes, net
        nursery.cancel_scope.cancel()


async def leader_of(nodes: dict[str, Node]) -> str:
    while True:
        live = [n for n in nodes.values() if n.running]
        ids = {n.status().leader_id for n in live}
        if len(ids) == 1 and None not in ids:
            leader = ids.pop()
            assert leader is not None
            return leader
        await trio.sleep(0.1)


async def test_election_and_commit_in_virtual_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Raft §5.2 on trio's clock: the first leader within two maximum election timeouts."""
    async with memory_cluster(tmp_path, 3) as (nodes, _, _):
        t0 = trio.current_time()
        leader = await leader_of(nodes)
        elected_after = trio.current_time() - t0
        # Election timeouts are drawn from [10 s, 20 s]; with pre-vote, one round.
        assert 10.0 <= elected_after <= 2 * 20.0
        result = await nodes["n2"].append(b"virtual")
        assert nodes[leader].status().role is Role.LEADER
        assert [e.data for e in nodes["n2"].committed(result.index)] == [b"virtual"]


async def test_leader_loss_is_repaired_within_the_election_timeout_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Stopping the leader: a new one within about two maximum election timeouts (§5.2)."""
    async with memory_cluster(tmp_path, 5) as (nodes, scopes, _):
        old = await leader_of(nodes)
        await nodes[old].append(b"before")
        scopes[old].cancel()
        t0 = trio.current_time()
        rest = {i: n for i, n in nodes.items() if i != old}
        with trio.fail_after(120):
            while True:
                new = await leader_of(rest)
                if new != old:
                    break
                await trio.sleep(0.5)
        assert trio.current_time() - t0 <= 2 * 20.0 + 10.0
        writer = next(iter(rest.values()))
        await writer.append(b"after")
        data = [e.data for e in writer.committed() if not e.noop]
        assert data == [b"before", b"after"]


async def test_no_quorum_means_no_leader_error_after_the_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """With a majority down, append() raises NoLeader after exactly its timeout (virtual)."""
    async with memory_cluster(tmp_path, 3) as (nodes, scopes, _):
        await leader_of(nodes)
        for i in nodes:
            if i != "n0":
                scopes[i].cancel()
        # n0 may keep believing in a leader until check-quorum fires (an election
        # timeout); then it has no leader, and appends fail with NoLeader.
        await trio.sleep(30)
        t0 = trio.current_time()
        with pytest.raises(NoLeader):
            await nodes["n0"].append(b"nobody home", timeout=15)
        assert 15 <= trio.current_time() - t0 < 16


async def test_callback_resumes_from_an_index_across_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Idea B across a restart: the app says where it resumes; nothing twice, nothing lost."""
    net = MemoryNetwork()
    addrs = addresses(3)

    def make(i: str) -> Node:
        peers = {j: b for j, b in addrs.items() if j != i}
        return Node(i, addrs[i], peers, tmp_path / i, options=SLOW, network=net)

    nodes = {i: make(i) for i in addrs}
    async with trio.open_nursery() as nursery:
        scopes = {i: trio.CancelScope() for i in nodes}
        for i in nodes:

            async def run(node: Node = nodes[i], scope: trio.CancelScope = scopes[i], *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)
        await leader_of(nodes)
        first: list[tuple[int, bytes]] = []
        nodes["n0"].on_commit(lambda e: first.append((e.index, e.data)))
        for data in (b"a", b"b", b"c"):
            await nodes["n0"].append(data)
        assert [d for _, d in first] == [b"a", b"b", b"c"]
        resume_from = first[-1][0] + 1  # the app processed everything up to "c"
        scopes["n0"].cancel()
        await trio.sleep(1)
        again = make("n0")
        second: list[tuple[int, bytes]] = []
        again.on_commit(lambda e: second.append((e.index, e.data)), from_index=resume_from)
        await nursery.start(again.run)
        await again.append(b"d")
        assert [d for _, d in second] == [b"d"]
        assert [i for i, _ in second] == [resume_from]
        nursery.cancel_scope.cancel()


async def test_async_with_runs_and_stops_the_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``async with node:`` starts the service and stops it on exit."""
    node = Node("solo", ("10.0.0.9", 1), {}, tmp_path / "solo", options=SLOW,
                network=MemoryNetwork())
    async with node:
        assert node.running
        result = await node.append(b"alone")
        assert result.index >= 1
    assert not node.running


class CountingNetwork(MemoryNetwork):
    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def connect(self, address: tuple[str, int]) -> trio.abc.Stream:
        stream = await super().connect(address)
        self.connections += 1
        return stream


async def test_one_connection_per_peer_pair(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Five nodes hold ten connections (one per pair), carrying both directions."""
    net = CountingNetwork()
    addrs = addresses(5)
    nodes = [
        Node(i, a, {j: b for j, b in addrs.items() if j != i}, tmp_path / i, options=SLOW,
             network=net)
        for i, a in addrs.items()
    ]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        await leader_of({n.node_id: n for n in nodes})
        for k in range(5):
            await nodes[k].append(b"x%d" % k)
        assert net.connections == 5 * 4 // 2
        nursery.cancel_scope.cancel()
