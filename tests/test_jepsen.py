"""The Jepsen-style run (graft_trio.jepsen) and what it relies on: cas, the link proxy.

The short run here takes about 20 s; ``make jepsen`` runs the long one and
``make fuzz`` a campaign of them.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from graft_sim import Operation, Verdict
from graft_trio import kv
from graft_trio._network import MemoryNetwork
from graft_trio._node import CommittedEntry, Node, Options
from graft_trio.jepsen import (
    FAULT_KINDS,
    JepsenConfig,
    LinkProxy,
    lost_writes,
    run_jepsen,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -------------------------------------------------------------------- cas


def cas_entry(index: int, key: str, expected: Any, value: Any, token: str) -> CommittedEntry:
    doc = {"op": "cas", "key": key, "expected": expected, "value": value, "token": token}
    return CommittedEntry(index, 1, json.dumps(doc).encode())


def test_cas_swaps_iff_the_current_value_is_the_expected_one() -> None:
    sm = kv.KVStateMachine()
    # An absent key holds None: cas from None is "create if absent".
    assert sm.apply(cas_entry(1, "k", None, "v1", "t1")) == ("t1", True)
    assert sm.apply(cas_entry(2, "k", None, "v2", "t2")) == ("t2", False)
    assert sm.data == {"k": "v1"}
    assert sm.apply(cas_entry(3, "k", "v1", "v3", "t3")) == ("t3", True)
    assert sm.apply(cas_entry(4, "k", "v1", "v4", "t4")) == ("t4", False)
    # Puts keep their old entry format and semantics, and return no verdict.
    assert sm.apply(CommittedEntry(5, 1, json.dumps({"key": "k", "value": "p"}).encode())) is None
    assert sm.apply(cas_entry(6, "k", "p", "v6", "t6")) == ("t6", True)
    assert sm.data == {"k": "v6"} and sm.applied == 6
    # A cas survives a snapshot round trip like any other write.
    other = kv.KVStateMachine()
    other.restore(sm.applied, sm.snapshot())
    assert other.apply(cas_entry(7, "k", "v6", "v7", "t7")) == ("t7", True)


def test_cas_compares_json_type_and_value() -> None:
    """1, 1.0 and true are different JSON values: a cas expecting one never swaps the other."""
    sm = kv.KVStateMachine()
    assert sm.apply(cas_entry(1, "n", None, 1, "t1")) == ("t1", True)
    assert sm.apply(cas_entry(2, "n", 1.0, "float", "t2")) == ("t2", False)
    assert sm.apply(cas_entry(3, "n", True, "bool", "t3")) == ("t3", False)
    assert sm.apply(cas_entry(4, "n", 1, "int", "t4")) == ("t4", True)
    assert sm.data == {"n": "int"}


async def test_cas_through_the_log_and_the_client_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = Options(heartbeat_interval=0.05, election_timeout=0.3, fsync=False,
                      disk_in_thread=False)
    node = Node("a", ("10.0.0.1", 7000), {}, tmp_path / "a", options=options,
                network=MemoryNetwork())
    port = free_port()
    server = kv.KVServer(node, ("127.0.0.1", port))
    addr = ("127.0.0.1", port)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        cas = {"op": "cas", "key": "x", "expected": None, "value": "one"}
        assert await kv.request(addr, cas) == {"ok": True, "swapped": True}
        assert await kv.request(addr, cas) == {"ok": True, "swapped": False}
        assert await kv.request(addr, {"op": "get", "key": "x"}) == {"ok": True, "value": "one"}
        assert await kv.request(addr, {"op": "put", "key": "x", "value": "two"}) \
            == {"ok": True, "index": node.status().commit_index}
        swap = {"op": "cas", "key": "x", "expected": "two", "value": "three"}
        assert await kv.request(addr, swap) == {"ok": True, "swapped": True}
        # A cas without an expected value is the caller's mistake, not "expect absent".
        bad = await kv.request(addr, {"op": "cas", "key": "x", "value": "four"})
        assert bad == {"ok": False, "error": "missing field 'expected'"}

        # The CLI subcommand: --expected VALUE, or --absent for "never written".
        def cli(*args: str) -> int:
            return kv.main(["cas", "--server", f"127.0.0.1:{port}", *args])

        capsys.readouterr()
        assert await trio.to_thread.run_sync(cli, "x", "five", "--expected", "three") == 0
        assert await trio.to_thread.run_sync(cli, "x", "six", "--expected", "three") == 0
        assert await trio.to_thread.run_sync(cli, "y", "new", "--absent") == 0
        printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [p["swapped"] for p in printed] == [True, False, True]
        assert await kv.request(addr, {"op": "dump"}) == {
            "ok": True, "applied": server.sm.applied, "data": {"x": "five", "y": "new"}}
        nursery.cancel_scope.cancel()


# -------------------------------------------------------------------- the proxy


async def echo_server(
    received: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(1024):
                    received.append(data)
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


async def test_link_proxy_forwards_cuts_blackholes_and_heals() -> None:
    received: list[bytes] = []
    with trio.fail_after(30):  # a hang is a failure, not a stuck test run
        async with trio.open_nursery() as nursery:
            target = await nursery.start(echo_server, received)
            proxy = LinkProxy(("127.0.0.1", target))
            port = await nursery.start(proxy.run)

            live = await trio.open_tcp_stream("127.0.0.1", port)
            await live.send_all(b"ping")
            assert await live.receive_some(1024) == b"ping"
            assert proxy.connections == 1

            # Cut (refuse): the forwarded connection is closed, a new one too.
            proxy.cut()
            assert await live.receive_some(1024) == b""
            refused = await trio.open_tcp_stream("127.0.0.1", port)
            assert await refused.receive_some(1024) == b""

            # Cut (blackhole): a new connection is accepted; its bytes vanish.
            proxy.cut(blackhole=True)
            held = await trio.open_tcp_stream("127.0.0.1", port)
            await held.send_all(b"lost")
            with trio.move_on_after(0.3):
                await held.receive_some(1024)
                pytest.fail("a blackholed connection delivered an answer")
            # Healing closes the blackholed connection so its dialer redials...
            proxy.heal()
            assert await held.receive_some(1024) == b""
            # ...and forwards new ones again.
            again = await trio.open_tcp_stream("127.0.0.1", port)
            await again.send_all(b"pong")
            assert await again.receive_some(1024) == b"pong"
            assert b"lost" not in b"".join(received)
            assert b"".join(received) == b"pingpong"
            for s in (live, refused, held, again):
                await s.aclose()
            nursery.cancel_scope.cancel()


# -------------------------------------------------------------------- checks


def put(client: int, value: str, call: int, ret: int | None) -> Operation:
    return Operation(client, "k", "put", value, None, call, ret, None)


def test_lost_writes_names_a_final_value_older_than_an_acknowledged_write() -> None:
    history = [put(1, "old", 0, 10), put(2, "new", 20, 30)]
    assert lost_writes(history, {"k": "new"}) == []
    assert len(lost_writes(history, {"k": "old"})) == 1
    assert len(lost_writes(history, {"k": None})) == 1
    # A write that overlapped the last acknowledged one, or may have happened
    # (indeterminate), may legitimately be the final value.
    overlapping = [*history, put(3, "late", 25, 40), put(4, "maybe", 5, None)]
    assert lost_writes(overlapping, {"k": "late"}) == []
    assert lost_writes(overlapping, {"k": "maybe"}) == []
    # A cas that answered False wrote nothing: it cannot be the final value.
    failed_cas = Operation(5, "k", "cas", "nope", "x", 35, 36, False)
    assert len(lost_writes([*history, failed_cas], {"k": "nope"})) == 1


def test_config_rejects_caller_mistakes() -> None:
    with pytest.raises(ValueError, match="nodes"):
        JepsenConfig(nodes=2)
    with pytest.raises(ValueError, match="fault_hold"):
        JepsenConfig(fault_hold=(2.0, 1.0))
    with pytest.raises(ValueError, match="clients"):
        JepsenConfig(clients=0)


# -------------------------------------------------------------------- the run


async def test_short_jepsen_run_is_linearizable_and_loses_nothing() -> None:
    """Five real processes under kills, pauses and partitions: the history is
    linearizable, every acknowledged write survives, every node agrees."""
    lines: list[str] = []
    # Faults are short and frequent so a 12 s run sees each kind (they come in
    # shuffled bags of all three: the first three faults are one of each).
    config = JepsenConfig(nodes=5, duration=12, clients=4, seed=7, keys=4,
                          fault_hold=(0.8, 1.5), fault_quiet=(0.3, 1.0))
    report = await run_jepsen(config, out=lines.append)
    summary = report.summary()
    print("\n".join(lines) + "\n" + summary)
    assert report.check.verdict is Verdict.LINEARIZABLE, summary
    assert report.lost == (), summary
    assert report.final_agree, summary
    assert report.passed
    assert all(report.faults.get(kind, 0) >= 1 for kind in FAULT_KINDS), summary
    assert report.count("ok") > 100, summary
    assert report.outcomes.get(("cas", "ok"), 0) > 0 and report.cas_swapped > 0, summary
    # The final reads are in the checked history too: at least one per key per node.
    assert report.history >= report.count("ok") + 5 * config.keys
    assert "verdict: PASS" in summary


def test_a_node_that_exits_by_itself_fails_the_run(tmp_path: Path) -> None:
    """A node process that dies on its own (fail-stop, traceback) is recorded, never
    mistaken for the nemesis' kill -- and a recorded crash fails the report."""
    import subprocess
    import sys

    from graft_trio.jepsen import _Cluster

    cluster = _Cluster(("a", "b", "c"), tmp_path)
    cluster.procs["a"] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    cluster.procs["a"].wait()
    assert cluster.kill("a") is False  # nothing left to kill...
    assert cluster.crashed == ["a exited with status 3 (see a.log)"]  # ...but it was noticed
    assert "a" not in cluster.procs
