"""Real processes: SIGKILL the leader mid-write; nothing acknowledged lost, linearizable."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from graft_sim import Operation, Verdict, check_history
from graft_trio.kv import request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from trio_demo import IDS, Cluster


def now_us() -> int:
    return time.monotonic_ns() // 1000


async def test_sigkill_leader_mid_write_loses_nothing_and_stays_linearizable(
    tmp_path: Path,
) -> None:
    """Raft's promise end to end: durable, replicated, linearizable, across a kill -9."""
    cluster = Cluster(tmp_path)
    history: list[Operation] = []
    acknowledged: list[tuple[str, str]] = []
    try:
        for n in IDS:
            cluster.start(n)
        leader = await trio.to_thread.run_sync(cluster.wait_leader, IDS)

        async def client(c: int, stop_at: float) -> None:
            k = 0
            while time.monotonic() < stop_at:
                k += 1
                node = IDS[(c + k) % len(IDS)]
                key = f"k{k % 2}"
                put = k % 3 != 0
                req: dict[str, Any] = (
                    {"op": "put", "key": key, "value": f"{c}.{k}"} if put
                    else {"op": "get", "key": key}
                )
                call = now_us()
                try:
                    answer = await request(("127.0.0.1", cluster.client[node]), req, timeout=3)
                except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError):
                    answer = {"ok": False, "error": "connection"}
                ret = now_us()
                # NoLeader and Rejected mean "not appended"; anything else that
                # failed (a killed server, a timeout) may or may not have happened.
                if not answer["ok"] and answer["error"].startswith(("NoLeader", "Rejected")):
                    continue
                if put:
                    history.append(Operation(c, key, "put", f"{c}.{k}", None, call,
                                             ret if answer["ok"] else None, None))
                    if answer["ok"]:
                        acknowledged.append((key, f"{c}.{k}"))
                else:
                    history.append(Operation(c, key, "get", None, None, call,
                                             ret if answer["ok"] else None,
                                             answer.get("value")))
                await trio.sleep(0.005)

        stop_at = time.monotonic() + 4
        async with trio.open_nursery() as nursery:
            for c in range(4):
                nursery.start_soon(client, c, stop_at)
            await trio.sleep(1.2)
            cluster.kill(leader)  # mid-write: clients are writing through every node
            await trio.sleep(1.2)
            cluster.start(leader)
        assert len(acknowledged) > 20

        # Converge, then read every key through every node (reads go through the log).
        rest = tuple(IDS)
        await trio.to_thread.run_sync(cluster.wait_leader, rest)
        for key in ("k0", "k1"):
            for n in IDS:
                call = now_us()
                answer = await request(("127.0.0.1", cluster.client[n]), {"op": "get", "key": key})
                assert answer["ok"], answer
                history.append(Operation(99, key, "get", None, None, call, now_us(),
                                         answer["value"]))
        # Every node applies the same sequence: same state at the same applied index.
        with trio.fail_after(20):
            while True:
                dumps = [await request(("127.0.0.1", cluster.client[n]), {"op": "dump"})
                         for n in IDS]
                if len({d["applied"] for d in dumps}) == 1:
                    break
                await trio.sleep(0.05)
        assert all(d["data"] == dumps[0]["data"] for d in dumps)
        result = check_history(history)
        assert result.verdict is Verdict.LINEARIZABLE, result.explain()
        # No acknowledged write lost: each key's final value is its last acknowledged
        # write or one that overlapped or followed it -- never an older one.
        for key in ("k0", "k1"):
            puts = [op for op in history if op.kind == "put" and op.key == key]
            last = max((op for op in puts if op.ret is not None), key=lambda op: op.ret or 0)
            allowed = {last.value} | {
                op.value for op in puts if op.ret is None or op.ret > last.call
            }
            assert dumps[0]["data"][key] in allowed

        # The shipped client command talks to any node.
        def cli(*args: str) -> Any:
            out = subprocess.run(
                [sys.executable, "-m", "graft_trio.kv", *args], capture_output=True, text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stdout + out.stderr
            return json.loads(out.stdout)

        server_a = f"127.0.0.1:{cluster.client[IDS[0]]}"
        server_b = f"127.0.0.1:{cluster.client[IDS[1]]}"
        assert (await trio.to_thread.run_sync(cli, "put", "--server", server_a, "cli", "yes"))["ok"]
        got = await trio.to_thread.run_sync(cli, "get", "--server", server_b, "cli")
        assert got == {"ok": True, "value": "yes"}
    finally:
        cluster.stop_all()
