"""The shell's API for snapshots, membership, leadership transfer and read barriers.

Clusters run in memory on trio's MockClock (see test_trio_mockclock.py), with
real storage in ``tmp_path``: timing is virtual, disks are real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from graft_core import Role
from graft_trio import (
    CommittedEntry,
    Compacted,
    MembershipError,
    MemoryNetwork,
    Node,
    NotLeader,
    Options,
    SnapshotRestored,
)
from graft_trio.kv import KVServer, KVStateMachine

FAST = Options(
    heartbeat_interval=1.0, election_timeout=10.0, append_timeout=120.0, fsync=False,
    disk_in_thread=False, snapshot_trailing_entries=2, snapshot_chunk_bytes=64,
)


def address(k: int) -> tuple[str, int]:
    return ("10.0.0.1", 7000 + k)


class Cluster:
    """Nodes in one nursery over one MemoryNetwork; each can be stopped and restarted."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, options: Options = FAST) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.options = options
        self.net = MemoryNetwork()
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.members: dict[str, tuple[str, int]] = {}

    async def start(self, nid: str, peers: dict[str, tuple[str, int]], *,
                    joining: bool = False) -> Node:
        k = int(nid[1:])
        node = Node(nid, address(k), peers, self.tmp / nid, options=self.options,
                    network=self.net, joining=joining)
        scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        self.nodes[nid], self.scopes[nid] = node, scope
        return node

    async def bootstrap(self, n: int) -> None:
        self.members = {f"n{k}": address(k) for k in range(n)}
        for nid in self.members:
            await self.start(nid, {j: a for j, a in self.members.items() if j != nid})

    def stop(self, nid: str) -> None:
        self.scopes[nid].cancel()

    def live(self) -> dict[str, Node]:
        return {i: n for i, n in self.nodes.items() if n.running}

    async def leader(self) -> Node:
        with trio.fail_after(300):
            while True:
                for n in self.live().values():
                    if n.status().role is Role.LEADER:
                        return n
                await trio.sleep(0.5)


@asynccontextmanager
async def cluster(tmp: Path, n: int = 3) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        c = Cluster(tmp, nursery)
        await c.bootstrap(n)
        yield c
        nursery.cancel_scope.cancel()


async def caught_up(node: Node, index: int) -> None:
    with trio.fail_after(300):
        while node.status().applied_index < index:
            await trio.sleep(0.5)


# --------------------------------------------------------------- snapshots


async def test_snapshot_compacts_and_the_pull_api_says_so(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """After save_snapshot the log before it is gone: committed() for a compacted index
    raises Compacted naming the snapshot, and read_snapshot() returns what was saved."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        last = 0
        for i in range(10):
            last = (await leader.append(b"e%d" % i)).index
        await leader.save_snapshot(last, b"state after %d" % last)
        assert leader.status().snapshot_index == last
        with pytest.raises(Compacted) as info:
            leader.committed(1)
        assert info.value.snapshot_index == last - FAST.snapshot_trailing_entries
        assert [e.index for e in leader.committed(last - 1)] == [last - 1, last]
        got = await leader.read_snapshot()
        assert got is not None
        meta, data = got
        assert (meta.index, data) == (last, b"state after %d" % last)
        with pytest.raises(ValueError, match="already covers"):
            await leader.save_snapshot(last, b"again")
        with pytest.raises(ValueError, match="not been delivered"):
            await leader.save_snapshot(last + 100, b"future")


async def test_lagging_follower_is_sent_the_snapshot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Raft §7 through the shell: a follower that was down while the leader compacted gets
    the snapshot in chunks (stored atomically), its subscription starts with
    SnapshotRestored, and it then follows the log."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        follower = next(i for i in c.nodes if i != leader.node_id)
        c.stop(follower)
        last = 0
        for i in range(20):
            last = (await leader.append(b"e%d" % i)).index
        await leader.save_snapshot(last, b"x" * 1000)
        node = await c.start(follower, {j: a for j, a in c.members.items() if j != follower})
        await leader.append(b"after")
        await caught_up(node, leader.status().commit_index)
        got = await node.read_snapshot()
        assert got is not None and got[0].index == last and got[1] == b"x" * 1000
        items: list[CommittedEntry | SnapshotRestored] = []
        async for item in node.subscribe(1):
            items.append(item)
            if isinstance(item, CommittedEntry) and item.data == b"after":
                break
        assert isinstance(items[0], SnapshotRestored) and items[0].index == last
        assert [i.data for i in items[1:] if isinstance(i, CommittedEntry)] == [b"after"]


async def test_restart_from_snapshot_and_log_tail(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A restarted node restores from its own snapshot and replays only the tail."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        nid = next(i for i in c.nodes if i != leader.node_id)
        node = c.nodes[nid]
        for i in range(6):
            await leader.append(b"e%d" % i)
        await caught_up(node, leader.status().commit_index)
        snap = node.status().applied_index
        await node.save_snapshot(snap, b"mine")
        tail = (await leader.append(b"tail")).index
        await caught_up(node, tail)
        c.stop(nid)
        await trio.sleep(1)
        again = await c.start(nid, {j: a for j, a in c.members.items() if j != nid})
        restored: list[SnapshotRestored] = []
        seen: list[bytes] = []
        again.on_commit(lambda e: seen.append(e.data), on_snapshot=restored.append)
        await caught_up(again, tail)
        assert [r.index for r in restored] == [snap]
        assert seen[-1] == b"tail" and b"e0" not in seen


# --------------------------------------------------------------- membership


async def test_grow_and_shrink_the_cluster(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Thesis §4: a new node joins as a learner, catches up, is promoted; a removed node is
    disconnected and the cluster goes on without it."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        observed: list[tuple[str, ...]] = []
        leader.on_membership(lambda m: observed.append(m.members))
        await leader.append(b"before")
        new = await c.start("n3", dict(c.members), joining=True)
        m = await leader.add_learner("n3", address(3))
        assert "n3" in m.learners
        await caught_up(new, leader.status().commit_index)
        assert [e.data for e in new.committed() if not e.noop][:1] == [b"before"]
        m = await leader.add_voter("n3")
        assert m.voters == ("n0", "n1", "n2", "n3")
        assert new.status().membership == m
        victim = next(i for i in ("n0", "n1", "n2") if i != leader.node_id)
        m = await leader.remove(victim)
        assert victim not in m.members
        # Observers saw every configuration; the leader no longer talks to the victim.
        assert observed[-1] == m.members and ("n0", "n1", "n2", "n3") in observed
        assert victim not in leader.status().peers
        result = await new.append(b"after")
        await caught_up(new, result.index)
        with pytest.raises(MembershipError):
            await leader.remove("nobody")
        follower = next(n for i, n in c.live().items()
                        if i not in (leader.node_id, victim))
        with pytest.raises(NotLeader) as info:
            await follower.add_learner("n9", address(9))
        assert info.value.leader == leader.node_id


async def test_transfer_leadership_and_read_barriers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Thesis §3.10 and §6.4: a transfer names the new leader; read barriers on any node
    return an index covering every completed write."""
    async with cluster(tmp_path) as c:
        leader = await c.leader()
        target = next(i for i in c.nodes if i != leader.node_id)
        written = (await leader.append(b"w")).index
        for node in c.nodes.values():
            assert await node.read_barrier() >= written
        assert await leader.transfer_leadership(target) == target
        assert c.nodes[target].status().role is Role.LEADER
        with pytest.raises(NotLeader):
            await leader.transfer_leadership()
        written = (await leader.append(b"w2")).index
        assert await c.nodes[target].read_barrier() >= written


async def test_kv_gets_use_read_barriers_and_snapshots(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The K/V store's gets write nothing to the log, and its periodic snapshots compact
    it; a value put on one node is read on another."""
    async with trio.open_nursery() as nursery:
        c = Cluster(tmp_path, nursery)
        c.members = {f"n{k}": address(k) for k in range(3)}
        servers = {}
        for k, nid in enumerate(c.members):
            node = Node(nid, address(k), {j: a for j, a in c.members.items() if j != nid},
                        tmp_path / nid, options=FAST, network=c.net)
            server = KVServer(node, ("127.0.0.1", 0), snapshot_every=5)
            servers[nid] = server
            c.nodes[nid] = node

            async def run(server: KVServer = server, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                async with trio.open_nursery() as inner:
                    server._nursery = inner
                    await inner.start(server.node.run)
                    task_status.started()

            await nursery.start(run)
        leader = await c.leader()
        for i in range(12):
            await servers[leader.node_id].put(f"k{i}", i)
        before = leader.status().last_index
        reader = next(s for i, s in servers.items() if i != leader.node_id)
        assert await reader.get("k11") == 11
        assert leader.status().last_index == before, "a get wrote to the log"
        assert leader.status().snapshot_index >= 5
        nursery.cancel_scope.cancel()


def test_kv_state_machine_snapshot_round_trip() -> None:
    sm = KVStateMachine()
    sm.apply(CommittedEntry(1, 1, json.dumps({"key": "a", "value": [1, 2]}).encode()))
    sm.apply(CommittedEntry(2, 1, b"not json"))
    other = KVStateMachine()
    other.restore(2, sm.snapshot())
    assert other.data == {"a": [1, 2]} and other.applied == 2
