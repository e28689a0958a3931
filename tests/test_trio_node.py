"""graft_trio.Node over real TCP on 127.0.0.1 (pytest-trio)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from graft_core import Role
from graft_trio import (
    CommittedEntry,
    Node,
    NotStarted,
    Options,
    PayloadTooLarge,
    StartupError,
    _wire,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from graft_trio.testing import free_ports

FAST = Options(heartbeat_interval=0.02, election_timeout=0.2, append_timeout=5.0)


def addresses(ids: list[str]) -> dict[str, tuple[str, int]]:
    return {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(len(ids)), strict=True)}


def make_nodes(tmp: Path, ids: list[str], addrs: dict[str, tuple[str, int]]) -> dict[str, Node]:
    return {
        i: Node(i, addrs[i], {j: a for j, a in addrs.items() if j != i}, tmp / i, options=FAST)
        for i in ids
    }


@asynccontextmanager
async def cluster(tmp: Path, n: int) -> AsyncIterator[dict[str, Node]]:
    ids = [f"n{k}" for k in range(n)]
    nodes = make_nodes(tmp, ids, addresses(ids))
    async with trio.open_nursery() as nursery:
        for node in nodes.values():
            await nursery.start(node.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def wait_for_leader(nodes: dict[str, Node]) -> str:
    with trio.fail_after(10):
        while True:
            leaders = {n.status().leader_id for n in nodes.values()}
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                assert leader is not None
                return leader
            await trio.sleep(0.01)


async def wait_committed(nodes: dict[str, Node], count: int) -> None:
    with trio.fail_after(10):
        while any(len([e for e in n.committed() if not e.noop]) < count for n in nodes.values()):
            await trio.sleep(0.01)


async def test_three_nodes_append_from_a_follower(tmp_path: Path) -> None:
    """The original proposal: append from any node; every node sees it committed, in order."""
    async with cluster(tmp_path, 3) as nodes:
        leader = await wait_for_leader(nodes)
        follower = next(i for i in nodes if i != leader)
        first = await nodes[follower].append(b"bar")
        second = await nodes[leader].append(b"baz")
        assert second.index > first.index
        await wait_committed(nodes, 2)
        for n in nodes.values():
            data = [e.data for e in n.committed() if not e.noop]
            assert data == [b"bar", b"baz"]
            assert n.committed(first.index)[0].data == b"bar"
        assert nodes[leader].status().role is Role.LEADER
        peers = nodes[leader].status().peers
        assert set(peers) == set(nodes) - {leader}
        assert all(p.match_index >= second.index for p in peers.values())


async def test_five_nodes_many_appends_in_flight(tmp_path: Path) -> None:
    """Pipelining over TCP: 200 concurrent appends all commit, identically everywhere."""
    async with cluster(tmp_path, 5) as nodes:
        await wait_for_leader(nodes)
        ids = sorted(nodes)
        results: list[int] = []

        async def one(k: int) -> None:
            r = await nodes[ids[k % 5]].append(f"v{k}".encode())
            results.append(r.index)

        async with trio.open_nursery() as nursery:
            for k in range(200):
                nursery.start_soon(one, k)
        assert len(set(results)) == 200
        await wait_committed(nodes, 200)
        logs = [[e.data for e in n.committed() if not e.noop] for n in nodes.values()]
        assert all(log == logs[0] for log in logs)
        assert sorted(logs[0]) == sorted(f"v{k}".encode() for k in range(200))


async def test_subscribe_and_callback_deliver_each_entry_once_in_order(tmp_path: Path) -> None:
    """Idea B: ``async for entry in node.subscribe()`` and ``on_commit`` see every entry once."""
    async with cluster(tmp_path, 3) as nodes:
        await wait_for_leader(nodes)
        node = nodes["n0"]
        seen_cb: list[bytes] = []
        node.on_commit(lambda e: seen_cb.append(e.data))
        for k in range(5):
            await node.append(b"x%d" % k)
        got: list[tuple[int, bytes]] = []
        with trio.fail_after(5):
            async for entry in node.subscribe(1):
                assert isinstance(entry, CommittedEntry), "no snapshot was taken"
                got.append((entry.index, entry.data))
                if len(got) == 5:
                    break
        assert [d for _, d in got] == [b"x%d" % k for k in range(5)]
        assert [i for i, _ in got] == sorted(i for i, _ in got)
        assert seen_cb == [b"x%d" % k for k in range(5)]


async def test_restart_from_the_data_directory(tmp_path: Path) -> None:
    """A node stopped and started again recovers its log from disk and catches up."""
    ids = ["n0", "n1", "n2"]
    addrs = addresses(ids)
    nodes = make_nodes(tmp_path, ids, addrs)
    async with trio.open_nursery() as nursery:
        scopes = {}
        for i, node in nodes.items():
            scopes[i] = trio.CancelScope()

            async def run(node: Node = node, scope: trio.CancelScope = scopes[i],
                          *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)
        await wait_for_leader(nodes)
        await nodes["n0"].append(b"before")
        victim = next(i for i in ids if nodes[i].status().role is not Role.LEADER)
        scopes[victim].cancel()
        await trio.sleep(0.05)
        with pytest.raises(NotStarted):
            nodes[victim].status()
        survivor = next(i for i in ids if i != victim)
        await nodes[survivor].append(b"while down")
        again = Node(victim, addrs[victim], {j: a for j, a in addrs.items() if j != victim},
                     tmp_path / victim, options=FAST)
        await nursery.start(again.run)
        await wait_committed({victim: again}, 2)
        assert [e.data for e in again.committed() if not e.noop] == [b"before", b"while down"]
        nursery.cancel_scope.cancel()


async def test_api_errors(tmp_path: Path) -> None:
    """Clear errors: not started, payload too large, an id among its own peers."""
    addrs = addresses(["a", "b"])
    node = Node("a", addrs["a"], {"b": addrs["b"]}, tmp_path / "a", options=FAST)
    with pytest.raises(NotStarted):
        node.status()
    with pytest.raises(NotStarted):
        await node.append(b"x")
    with pytest.raises(StartupError):
        Node("a", addrs["a"], {"a": addrs["a"]}, tmp_path / "x")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with pytest.raises(PayloadTooLarge):
            await node.append(b"x" * (FAST.max_payload_bytes + 1))
        nursery.cancel_scope.cancel()
    with pytest.raises(NotStarted):
        node.status()


async def test_data_directory_of_another_membership_is_refused(tmp_path: Path) -> None:
    """A peer set that contradicts what the data directory persisted is a start-up error."""
    addrs = addresses(["a", "b", "c"])
    first = Node("a", addrs["a"], {"b": addrs["b"]}, tmp_path / "a", options=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        nursery.cancel_scope.cancel()
    other = Node("a", addrs["a"], {"b": addrs["b"], "c": addrs["c"]}, tmp_path / "a",
                 options=FAST)
    with pytest.raises(StartupError):
        await other.run()


async def test_garbage_frames_close_the_connection_not_the_node(tmp_path: Path) -> None:
    """Malformed, oversize and wrong-cluster frames are dropped; the cluster keeps committing."""
    async with cluster(tmp_path, 3) as nodes:
        await wait_for_leader(nodes)
        target = nodes["n1"]
        for junk in (
            _wire.encode_hello("another-cluster", "n0", "n1"),  # wrong cluster id
            _wire.encode_hello("graft", "n0", "n2"),  # addressed to another node
            b"\x00\x00\x00\x05hello",  # not a HELLO
            b"\xff\xff\xff\xff",  # oversize header
            b"\x00\x00\x00\x02\x93\x01",  # truncated msgpack
        ):
            s = await trio.open_tcp_stream("127.0.0.1", target.port)
            async with s:
                await s.send_all(junk)
                with trio.move_on_after(1):
                    while await s.receive_some(1024):
                        pass
        with trio.fail_after(5):
            while target.dropped_frames < 5:
                await trio.sleep(0.01)
        await nodes["n2"].append(b"still alive")
        await wait_committed(nodes, 1)
