"""Hostile and broken peers against running graft_trio nodes over TCP on 127.0.0.1.

* ``test_stalled_connections_are_dropped_and_the_cluster_keeps_committing``:
  a 3-node cluster under a standing attack -- 150 half-open connections
  (connect, send nothing), 30 half-sent HELLOs, 30 lone length prefixes and 6
  slow-loris peers dripping a HELLO at one byte a second (under the 1.5 s
  ``handshake_timeout``, so only a deadline for the whole HELLO stops them)
  -- each reconnecting when dropped. Asserted: every attacker's connection is
  closed by the node, the drops are counted as ``handshake_timeout``, and
  appends keep committing.

  Measured, not asserted (timings on a shared machine are not a test): the
  commit latency of sequential appends on the leader (fsync on), calm vs
  under attack. On the 2-core development machine, shared with other jobs,
  four runs gave calm medians of 1.65-2.61 ms (p90 2.15-3.72 ms) and, under
  attack, medians of 1.98-2.35 ms (p90 2.78-3.20 ms): a factor of 0.85-1.36x
  at the median and 0.80-1.42x at p90 -- within 1.5x, i.e. lost in the noise
  of the shared machine. A stalled connection costs a node one sleeping
  task, one socket and at most 64 KiB of HELLO plus one read of buffer until
  its deadline. Run with ``-s`` to see the figures for your machine.

* ``test_a_broken_member_stalled_mid_frame_is_dropped``: members a, b, c;
  only b and c run and a "broken peer" speaks as a: after a valid HELLO it
  stays silent between frames (tolerated: followers exchange nothing while a
  leader is stable), then sends a length prefix and stops, then drips a
  frame at one byte a second. Both are dropped by ``frame_timeout`` while b
  and c keep committing.

* ``test_identity_checks``: a HELLO from another cluster, a HELLO addressed
  to another node, a HELLO from a non-member, and -- after a valid HELLO -- a
  message addressed to another node and a message claiming another sender.
  Each is followed, in the same write, by an AppendRequest of term 10**6 that
  would overwrite the log if it got through. Each is rejected and counted
  under its reason in ``Node.status().rejected``; the term, log and commit
  index of the receiving node are unchanged.

About 15 s in all.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from graft_core import AppendRequest, Entry, Message, Role, VoteRequest
from graft_trio import Node, Options, StartupError
from graft_trio._wire import encode_batch, encode_hello

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from trio_helpers import HANG, until_closed, wait_until

from graft_trio.testing import free_ports

HANDSHAKE_TIMEOUT = 1.5
FRAME_TIMEOUT = 1.5
OPTIONS = Options(
    heartbeat_interval=0.05,
    election_timeout=1.0,
    handshake_timeout=HANDSHAKE_TIMEOUT,
    frame_timeout=FRAME_TIMEOUT,
)
HOSTILE_TERM = 10**6


@asynccontextmanager
async def cluster(tmp: Path, members: list[str], running: list[str]) -> AsyncIterator[
    dict[str, Node]
]:
    addrs = {i: ("127.0.0.1", p) for i, p in zip(members, free_ports(len(members)), strict=True)}
    nodes = {
        i: Node(i, addrs[i], {j: a for j, a in addrs.items() if j != i}, tmp / i,
                options=OPTIONS)
        for i in running
    }
    async with trio.open_nursery() as nursery:
        for node in nodes.values():
            await nursery.start(node.run)
        yield nodes
        nursery.cancel_scope.cancel()


async def wait_for_leader(nodes: dict[str, Node]) -> Node:
    with trio.fail_after(HANG):
        while True:
            leaders = {n.status().leader_id for n in nodes.values()}
            if len(leaders) == 1 and None not in leaders:
                leader_id = leaders.pop()
                assert leader_id is not None
                leader = nodes[leader_id]
                if leader.status().role is Role.LEADER:
                    await leader.append(b"warm-up")  # the leader's first entry is committed
                    return leader
            await trio.sleep(0.01)


async def drip(stream: trio.SocketStream, data: bytes, interval: float) -> None:
    """Send ``data`` one byte every ``interval`` seconds (a slow-loris peer)."""
    try:
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
            await trio.sleep(interval)
        await trio.sleep_forever()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await trio.sleep_forever()  # closed: until_closed will notice


async def attack_once(port: int, send: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
    """Connect, misbehave with ``send``, and return once the node has closed us."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send, stream)
        await until_closed(stream)
        nursery.cancel_scope.cancel()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def test_stalled_connections_are_dropped_and_the_cluster_keeps_committing(
    tmp_path: Path,
) -> None:
    """Half-open, half-HELLO, lone-length-prefix and slow-loris connections are
    all closed after ``handshake_timeout``; the cluster commits throughout."""
    async with cluster(tmp_path, ["a", "b", "c"], ["a", "b", "c"]) as nodes:
        leader = await wait_for_leader(nodes)

        async def timed_appends(count: int, tag: bytes) -> list[float]:
            latencies = []
            last = 0
            for k in range(count):
                t0 = trio.current_time()
                result = await leader.append(tag + b"%d" % k)
                latencies.append(trio.current_time() - t0)
                assert result.index > last  # committed, in order
                last = result.index
            return latencies

        calm = await timed_appends(40, b"calm")

        hello = encode_hello("graft", "a", "c")

        async def silent(stream: trio.SocketStream) -> None:
            await trio.sleep_forever()

        async def half_hello(stream: trio.SocketStream) -> None:
            await stream.send_all(hello[: len(hello) // 2])
            await trio.sleep_forever()

        async def lone_length_prefix(stream: trio.SocketStream) -> None:
            await stream.send_all(hello[:4])
            await trio.sleep_forever()

        async def slow_loris(stream: trio.SocketStream) -> None:
            await drip(stream, hello, 1.0)

        kinds = {"half-open": (silent, 50), "half-HELLO": (half_hello, 10),
                 "length prefix": (lone_length_prefix, 10), "slow loris": (slow_loris, 2)}
        before = sum(n.status().rejected.get("handshake_timeout", 0) for n in nodes.values())
        closed: dict[tuple[str, int], int] = {}

        async def attacker(key: tuple[str, int], port: int,
                           send: Callable[[trio.SocketStream], Awaitable[None]]) -> None:
            # A standing attack: back as soon as it is dropped.
            closed[key] = 0
            while True:
                await attack_once(port, send)
                closed[key] += 1

        under_attack: list[float] = []
        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                k = 0
                for kind, (send, per_node) in kinds.items():
                    for node in nodes.values():
                        for _ in range(per_node):
                            nursery.start_soon(attacker, (kind, k), node.port, send)
                            k += 1
                # Keep appending until every attacker has been dropped at least once.
                while len(closed) < k or min(closed.values()) == 0 or len(under_attack) < 40:
                    under_attack += await timed_appends(10, b"attack")
                nursery.cancel_scope.cancel()

        attackers = len(closed)
        assert attackers == 3 * sum(n for _, n in kinds.values()) == 216
        assert all(count >= 1 for count in closed.values())
        after = sum(n.status().rejected.get("handshake_timeout", 0) for n in nodes.values())
        assert after - before >= attackers
        # Every node still agrees on what was committed, attack or not.
        await wait_until(lambda: len({len(n.committed()) for n in nodes.values()}) == 1)
        logs = [[e.data for e in n.committed()] for n in nodes.values()]
        assert logs[0] == logs[1] == logs[2]
        assert sum(1 for d in logs[0] if d.startswith(b"attack")) == len(under_attack)

        calm_median, attack_median = statistics.median(calm), statistics.median(under_attack)
        calm_p90, attack_p90 = percentile(calm, 0.9), percentile(under_attack, 0.9)
        print(
            f"\ncommit latency, calm: median {calm_median * 1e3:.2f} ms, p90 "
            f"{calm_p90 * 1e3:.2f} ms; under attack ({attackers} stalled connections, "
            f"{after - before} dropped): median {attack_median * 1e3:.2f} ms, p90 "
            f"{attack_p90 * 1e3:.2f} ms; factor {attack_median / calm_median:.2f}x median, "
            f"{attack_p90 / calm_p90:.2f}x p90"
        )


async def test_a_broken_member_stalled_mid_frame_is_dropped(tmp_path: Path) -> None:
    """After its HELLO, a member may be silent between frames, but not mid-frame."""
    async with cluster(tmp_path, ["a", "b", "c"], ["b", "c"]) as nodes:
        leader = await wait_for_leader(nodes)
        committed = 0

        async def keep_appending() -> None:
            nonlocal committed
            while True:
                await leader.append(b"x")
                committed += 1

        async def broken_a(node: Node) -> None:
            frame = encode_batch([VoteRequest(1, "a", node.node_id, 0, 0, False, False)])
            stream = await trio.open_tcp_stream("127.0.0.1", node.port)
            async with stream, trio.open_nursery() as nursery:
                await stream.send_all(encode_hello("graft", "a", node.node_id))
                nursery.start_soon(until_closed, stream)
                # Silent between frames for longer than frame_timeout: tolerated.
                await trio.sleep(2 * FRAME_TIMEOUT)
                assert node.status().rejected.get("frame_timeout", 0) == 0
                await stream.send_all(frame[:4])  # a length prefix, then nothing
            # until_closed returned: the node closed the connection.
            await wait_until(lambda: node.status().rejected.get("frame_timeout", 0) == 1)
            stream = await trio.open_tcp_stream("127.0.0.1", node.port)
            async with stream, trio.open_nursery() as nursery:
                await stream.send_all(encode_hello("graft", "a", node.node_id))
                nursery.start_soon(drip, stream, frame, 1.0)  # slower than frame_timeout allows
                await until_closed(stream)
                nursery.cancel_scope.cancel()
            await wait_until(lambda: node.status().rejected.get("frame_timeout", 0) == 2)

        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_appending)
                async with trio.open_nursery() as attackers:
                    for node in nodes.values():
                        attackers.start_soon(broken_a, node)
                progress = committed
                await wait_until(lambda: committed > progress)  # still committing after
                nursery.cancel_scope.cancel()
        assert progress > 0
        for node in nodes.values():
            assert node.status().rejected == {"frame_timeout": 2}


async def test_identity_checks(tmp_path: Path) -> None:
    """Wrong cluster, wrong recipient, non-member sender: rejected, counted, no effect."""
    async with cluster(tmp_path, ["a", "b", "c"], ["a", "b", "c"]) as nodes:
        await wait_for_leader(nodes)
        target = nodes["c"]  # "a" and "b" dial "c": both may say HELLO to it

        def hostile(src: str = "a", dst: str = "c") -> bytes:
            # Would overwrite c's log from index 1 and commit it, were it let in.
            m: Message = AppendRequest(HOSTILE_TERM, src, dst, 0, 0,
                                       (Entry(HOSTILE_TERM, b"evil"),), 1)
            return encode_batch([m])

        cases = {
            "wrong_cluster": encode_hello("other", "a", "c") + hostile(),
            # A HELLO meant for b that reached c.
            "wrong_recipient": encode_hello("graft", "a", "b") + hostile(dst="b"),
            "unknown_sender": encode_hello("graft", "z", "c") + hostile(src="z"),
        }
        # After a valid HELLO: a message for another node, a message from another.
        message_cases = {
            "wrong_recipient": encode_hello("graft", "a", "c") + hostile(dst="b"),
            "unknown_sender": encode_hello("graft", "a", "c") + hostile(src="b"),
        }
        for reason, data in [*cases.items(), *message_cases.items()]:
            before = target.status()
            count = before.rejected.get(reason, 0)

            async def send(stream: trio.SocketStream, data: bytes = data) -> None:
                await stream.send_all(data)
                await trio.sleep_forever()

            with trio.fail_after(HANG):
                await attack_once(target.port, send)
            def counted(reason: str = reason, count: int = count) -> bool:
                return target.status().rejected.get(reason, 0) > count

            await wait_until(counted)
            after = target.status()
            assert after.rejected[reason] == count + 1, reason
            assert after.term == before.term < HOSTILE_TERM, reason
            assert after.last_index == before.last_index, reason
            assert after.commit_index == before.commit_index, reason
            assert all(e.data != b"evil" for e in target.committed())
        assert set(target.status().rejected) == {"wrong_cluster", "wrong_recipient",
                                                 "unknown_sender"}


def test_timeouts_must_be_positive(tmp_path: Path) -> None:
    for bad in (Options(handshake_timeout=0), Options(frame_timeout=-1.0),
                Options(frame_timeout=float("nan"))):
        with pytest.raises(StartupError, match="must be positive"):
            Node("a", ("127.0.0.1", 0), {"b": ("127.0.0.1", 1)}, tmp_path, options=bad)
