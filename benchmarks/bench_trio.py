"""How fast does a 3-node graft_trio cluster commit, against what the machine allows?

Run: ``.venv/bin/python benchmarks/bench_trio.py [--quick] [--one-process] [--dir DIR]``.

Starts three graft_trio nodes on 127.0.0.1 -- by default one per process:
this process runs node ``n0`` and the clients, two child processes run ``n1``
and ``n2``; ``--one-process`` runs all three in this process's trio loop --
with ``fsync`` on and the default ``Options`` except the timeouts (heartbeat
50 ms; election timeout 300 ms on ``n0`` and 1 s on the others, so that ``n0``
wins the first election and the clients talk to the leader directly). Then
measures:

* append latency: sequential ``append()`` of 16-byte payloads on the leader,
  p50 and p99 (500 appends; ``--quick``: 50);
* throughput: committed appends/s with many in flight (1,000 concurrent
  appenders for 5 s; ``--quick``: 100 for 1 s), and their latency;
* the floor, in the same run: ``os.write`` + fsync of 64 bytes in the data
  directory's file system (p50/p99 of 200; ``--quick``: 50), and the round
  trip of 64 bytes over loopback TCP between two trio tasks (p50/p99 of 1,000;
  ``--quick``: 200).

One replicated append cannot beat one round trip to a follower plus that
follower's fsync (the leader's own fsync overlaps them, thesis §10.2.1), so
the latency floor is fsync + RTT; the throughput floor is what appends
sent one at a time at that latency would give, ``1 / (fsync + RTT)`` -- the
ratio says what pipelining and group commit buy. Everything is bounded by
timeouts; the child processes exit when this process closes their stdin (or
dies) and are killed if they do not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from graft_core import Role
from graft_trio import Node, NodeError, Options
from graft_trio._storage import _OsFs
from graft_trio.testing import free_ports

PAYLOAD = 16
PROBE = 64
HEARTBEAT = 0.05
# n0 (in this process, with the load) should win the first election, so its
# timeout is the shorter; but it is also its check-quorum window, and a leader
# process saturated by 10,000 in-flight writes must not miss it (at 0.3 s it
# did, and stepped down mid-run).
LEADER_ELECTION_TIMEOUT = 1.0
FOLLOWER_ELECTION_TIMEOUT = 3.0
APPEND_TIMEOUT = 5.0
IDS = ("n0", "n1", "n2")


@attrs.frozen
class Sizes:
    sequential: int
    concurrency: int
    seconds: float
    fsyncs: int
    round_trips: int
    budget: float  # seconds for the whole run, start-up included


FULL = Sizes(sequential=500, concurrency=1000, seconds=5.0, fsyncs=200, round_trips=1000,
             budget=240.0)
QUICK = Sizes(sequential=50, concurrency=100, seconds=1.0, fsyncs=50, round_trips=200,
              budget=90.0)


def options(node_id: str) -> Options:
    election = LEADER_ELECTION_TIMEOUT if node_id == IDS[0] else FOLLOWER_ELECTION_TIMEOUT
    return Options(heartbeat_interval=HEARTBEAT, election_timeout=election,
                   append_timeout=APPEND_TIMEOUT)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sample."""
    xs = sorted(samples)
    return xs[max(0, min(len(xs) - 1, math.ceil(q * len(xs)) - 1))]


# ---------------------------------------------------------------- the floor


def fsync_latencies(directory: Path, count: int) -> list[float]:
    """``os.write`` + fsync of 64 bytes, appended to one file, as graft's log does."""
    fs = _OsFs()  # the same fsync call graft's Storage makes (F_FULLFSYNC on macOS)
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, b"x" * PROBE)
            fs.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return samples


async def loopback_round_trips(count: int) -> list[float]:
    """64 bytes there and back over 127.0.0.1 TCP, between two trio tasks."""

    async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await stream.receive_some(n - len(data))
            if not chunk:
                raise ConnectionError("loopback peer closed the connection")
            data += chunk
        return data

    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while True:
                await stream.send_all(await receive_exactly(stream, PROBE))

    samples = []
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, [listener])
        client = await trio.open_tcp_stream("127.0.0.1", port)
        async with client:
            for k in range(count + 20):  # the first 20 warm up
                t0 = time.perf_counter()
                await client.send_all(b"p" * PROBE)
                await receive_exactly(client, PROBE)
                if k >= 20:
                    samples.append(time.perf_counter() - t0)
        nursery.cancel_scope.cancel()
    return samples


# ---------------------------------------------------------------- the cluster


def node_spec(node_id: str, addrs: dict[str, tuple[str, int]], root: Path) -> dict[str, Any]:
    return {"id": node_id, "addrs": addrs, "dir": str(root / node_id)}


def make_node(spec: dict[str, Any]) -> Node:
    node_id: str = spec["id"]
    addrs = {i: (h, p) for i, (h, p) in spec["addrs"].items()}
    peers = {i: a for i, a in addrs.items() if i != node_id}
    return Node(node_id, addrs[node_id], peers, spec["dir"], options=options(node_id))


def serve_node(spec: dict[str, Any], max_life: float) -> None:
    """A child process: run one node until stdin closes (the parent is done or dead)."""

    async def main() -> None:
        node = make_node(spec)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with trio.move_on_after(max_life):
                await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


def spawn(spec: dict[str, Any], max_life: float, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-node", json.dumps(spec),
             "--max-life", str(max_life)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
        )


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


async def wait_until_replicating(
    leader: Node, procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path]
) -> None:
    """Until ``leader`` leads and both followers hold its whole log."""
    with trio.fail_after(30):
        while True:
            for p, log in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(
                        f"a node process exited with {p.returncode}:\n{log.read_text()[-2000:]}"
                    )
            s = leader.status()
            if (s.role is Role.LEADER and len(s.peers) == len(IDS) - 1
                    and all(p.match_index == s.last_index for p in s.peers.values())):
                return
            await trio.sleep(0.02)


# ---------------------------------------------------------------- the load


@attrs.define
class Load:
    latencies: list[float] = attrs.field(factory=list)
    errors: dict[str, int] = attrs.field(factory=dict)
    in_window: int = 0

    def error(self, exc: NodeError) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def sequential(node: Node, count: int) -> Load:
    load = Load()
    for k in range(count):
        t0 = time.perf_counter()
        try:
            await node.append(b"%016d" % k)
        except NodeError as exc:
            load.error(exc)
            continue
        load.latencies.append(time.perf_counter() - t0)
    return load


async def concurrent(node: Node, concurrency: int, seconds: float) -> tuple[Load, float]:
    """``concurrency`` appenders in a loop for ``seconds``; appends committed in that window."""
    load = Load()
    start = time.perf_counter()
    end = start + seconds

    async def appender(k: int) -> None:
        n = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                await node.append(b"%08d%08d" % (k, n))
            except NodeError as exc:
                load.error(exc)
                continue
            t1 = time.perf_counter()
            load.latencies.append(t1 - t0)
            if t1 <= end:
                load.in_window += 1
            n += 1

    with trio.fail_after(seconds + APPEND_TIMEOUT + 10):
        async with trio.open_nursery() as nursery:
            for k in range(concurrency):
                nursery.start_soon(appender, k)
    return load, load.in_window / seconds


# ---------------------------------------------------------------- the run


@attrs.frozen
class Results:
    where: str
    sizes: Sizes
    fsync: list[float]
    rtt: list[float]
    seq: Load
    conc: Load
    rate: float


async def measure(sizes: Sizes, root: Path, one_process: bool) -> Results:
    with trio.fail_after(sizes.budget):
        fsync = await trio.to_thread.run_sync(fsync_latencies, root, sizes.fsyncs)
        rtt = await loopback_round_trips(sizes.round_trips)
        addrs = {i: ("127.0.0.1", p) for i, p in zip(IDS, free_ports(len(IDS)), strict=True)}
        specs = [node_spec(i, addrs, root) for i in IDS]
        procs: list[subprocess.Popen[bytes]] = []
        logs = [root / f"{s['id']}.log" for s in specs[1:]]
        try:
            async with trio.open_nursery() as nursery:
                nodes = [make_node(s) for s in (specs if one_process else specs[:1])]
                if not one_process:
                    procs = [spawn(s, sizes.budget + 30, log)
                             for s, log in zip(specs[1:], logs, strict=True)]
                for node in nodes:
                    await nursery.start(node.run)
                leader = nodes[0]
                await wait_until_replicating(leader, procs, logs if procs else [])
                await sequential(leader, 20)  # warm up
                seq = await sequential(leader, sizes.sequential)
                conc, rate = await concurrent(leader, sizes.concurrency, sizes.seconds)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):  # bounded: stop() kills after 10 s
                await trio.to_thread.run_sync(stop, procs)
    where = ("in ONE process (all three nodes share one trio loop)" if one_process
             else "in 3 processes (n0 and the clients here, n1 and n2 in child processes)")
    return Results(where, sizes, fsync, rtt, seq, conc, rate)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def report(r: Results) -> None:
    s = r.sizes
    print(f"graft_trio: 3 nodes on 127.0.0.1 {r.where}; {os.cpu_count()} CPUs; fsync on; "
          f"{PAYLOAD}-byte payloads; appends on the leader")
    f50, f99 = percentile(r.fsync, 0.5), percentile(r.fsync, 0.99)
    t50, t99 = percentile(r.rtt, 0.5), percentile(r.rtt, 0.99)
    rows: list[tuple[str, str, str, str, str]] = []
    if r.seq.latencies:
        a50, a99 = percentile(r.seq.latencies, 0.5), percentile(r.seq.latencies, 0.99)
        rows.append((f"append p50 ({s.sequential} sequential)", ms(a50), ms(f50 + t50),
                     "fsync p50 + RTT p50", f"{a50 / (f50 + t50):.1f}x"))
        rows.append((f"append p99 ({s.sequential} sequential)", ms(a99), ms(f99 + t99),
                     "fsync p99 + RTT p99", f"{a99 / (f99 + t99):.1f}x"))
    floor_rate = 1 / (f50 + t50)
    rows.append((f"throughput ({s.concurrency} in flight, {s.seconds:g} s)",
                 f"{r.rate:,.0f}/s", f"{floor_rate:,.0f}/s", "1 / (fsync + RTT) p50",
                 f"{r.rate / floor_rate:.2f}x"))
    if r.conc.latencies:
        c50, c99 = percentile(r.conc.latencies, 0.5), percentile(r.conc.latencies, 0.99)
        rows.append(("  its append latency p50", ms(c50), "", "", ""))
        rows.append(("  its append latency p99", ms(c99), "", "", ""))
    rows.append((f"fsync p50 (64 B, {len(r.fsync)} samples)", "", ms(f50),
                 "os.write + fsync", ""))
    rows.append(("fsync p99", "", ms(f99), "", ""))
    rows.append((f"loopback RTT p50 (64 B, {len(r.rtt)} samples)", "", ms(t50),
                 "two trio tasks", ""))
    rows.append(("loopback RTT p99", "", ms(t99), "", ""))
    head = ("metric", "graft", "floor", "floor is", "graft/floor")
    widths = [max(len(row[k]) for row in (*rows, head)) for k in range(5)]
    for row in (head, *rows):
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
              f"{row[3]:<{widths[3]}}  {row[4]:>{widths[4]}}".rstrip())
    for name, load in (("sequential", r.seq), ("concurrent", r.conc)):
        if load.errors:
            print(f"errors ({name}): "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(load.errors.items())))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--one-process", action="store_true",
                        help="run all three nodes in this process")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the data directories go (default: a new temporary "
                             "directory, removed afterwards)")
    parser.add_argument("--serve-node", help=argparse.SUPPRESS)
    parser.add_argument("--max-life", type=float, default=300.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_node:
        serve_node(json.loads(args.serve_node), args.max_life)
        return
    sizes = QUICK if args.quick else FULL
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="graft-bench-", dir=args.dir))
    try:
        results = trio.run(measure, sizes, root, args.one_process)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
