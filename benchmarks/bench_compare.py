"""graft against PySyncObj and against the machine's floor, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_compare.py [--quick] [--json PATH] [--dir DIR]``
(``make bench`` runs it after the other benchmarks).

On 127.0.0.1, in one invocation, with every Raft node in its own process:

* **graft**: 3- and 5-node ``graft_trio`` clusters, ``fsync`` on, the
  default ``Options`` except the timeouts (``bench_trio.options``: heartbeat
  50 ms, ``n0`` times out first and leads); each node is a child process
  (``--graft-node``) built by ``bench_trio.make_node``;
* **PySyncObj** (``pysyncobj`` from PyPI): 3- and 5-node clusters of
  ``benchmarks/pysyncobj_node.py``, default ``SyncObjConf()`` -- which does
  not persist anything (no journal, no dump file: the log, term and vote live
  in memory only, nothing is fsynced) and batches commands on its 50 ms tick;
* **the floor**: 64-byte TCP ping-pong between two processes over 127.0.0.1
  (``TCP_NODELAY``), and ``os.write`` + fsync of 64 bytes appended to a file
  in the data directory's file system (``bench_trio.fsync_latencies``).

Writes are 16-byte payloads, driven inside the leader's process (PySyncObj
has no external client; graft's nodes are driven through the same stdin
protocol, see ``pysyncobj_node.py``), so the load generator's CPU is counted
with the leader's for both. Each figure is the median of ``--repeats`` runs
(min and max kept):

* p50/p99 latency of single sequential writes (graft ``append()``,
  PySyncObj ``sync=True``);
* committed writes/s with 1,000 and 10,000 in flight (graft: that many
  concurrent ``append()`` tasks; PySyncObj: that many outstanding calls with
  callbacks, each issuing the next) -- writes that completed within the window;
* CPU seconds per 10,000 commits: user + system time of all node processes
  (from ``/proc/<pid>/stat``) over a throughput run, divided by the writes it
  committed (those finishing after the window included);
* peak RSS per node: ``VmHWM`` from ``/proc/<pid>/status`` at the end.

The floor's latency is fsync p50 + RTT p50 (one replicated write needs a round
trip to a follower and its fsync) and its throughput ``1 / (fsync + RTT)``:
one write at a time at that latency. The table prints graft/PySyncObj and
graft/floor ratios; the whole result is written as JSON for plotting
(``benchmarks/results/latest.json`` unless ``--json``). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from bench_trio import (
    FOLLOWER_ELECTION_TIMEOUT,
    LEADER_ELECTION_TIMEOUT,
    PAYLOAD,
    PROBE,
    Load,
    concurrent,
    fsync_latencies,
    make_node,
    node_spec,
    percentile,
    sequential,
)

from graft_core import Role
from graft_trio.testing import free_ports

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "latest.json"
PYSYNCOBJ_SETTINGS = (
    "SyncObjConf() defaults: autoTick every 0.05 s, appendEntriesUseBatch, "
    "appendEntriesPeriod 0.1 s, "
    "raftMinTimeout 0.4 s / raftMaxTimeout 1.4 s, commandsQueueSize 100,000, "
    "no journalFile and no fullDumpFile"
)
PYSYNCOBJ_PERSISTENCE = (
    "none: without journalFile the log, current term and vote are kept in memory only "
    "and never fsynced (graft fsyncs each batch of entries, term and vote)"
)


@attrs.frozen
class Sizes:
    repeats: int
    sequential: int  # single sequential writes per repeat
    inflight: tuple[int, ...]
    seconds: float  # per throughput run
    fsyncs: int
    round_trips: int
    clusters: tuple[int, ...]


FULL = Sizes(repeats=3, sequential=100, inflight=(1000, 10000), seconds=3.0, fsyncs=200,
             round_trips=2000, clusters=(3, 5))
# --quick: the 3-node clusters only, short runs (a smoke test, about 15 s).
QUICK = Sizes(repeats=2, sequential=10, inflight=(1000, 10000), seconds=0.5, fsyncs=20,
              round_trips=200, clusters=(3,))
REPLY_TIMEOUT = 60.0
LEADER_TIMEOUT = 30.0


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of the repeats (and the repeats themselves)."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "repeats": list(samples)}


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/<pid>/stat`` fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """``VmHWM``: the process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


# ---------------------------------------------------------------- the floor


def echo_server(port: int) -> None:
    """A child process: echo 64-byte messages on one connection until it closes."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = recv_exactly(s, PROBE)
            if not data:
                return
            s.sendall(data)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def process_round_trips(count: int) -> list[float]:
    """64 bytes there and back over 127.0.0.1 TCP, between this process and a child."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        child = subprocess.Popen([sys.executable, __file__, "--echo", str(port)])
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                samples = []
                for k in range(count + 20):  # the first 20 warm up
                    t0 = time.perf_counter()
                    conn.sendall(b"p" * PROBE)
                    if not recv_exactly(conn, PROBE):
                        raise ConnectionError("the echo process closed the connection")
                    if k >= 20:
                        samples.append(time.perf_counter() - t0)
        finally:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return samples


def measure_floor(sizes: Sizes, root: Path) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"fsync_p50": [], "fsync_p99": [], "rtt_p50": [],
                                    "rtt_p99": []}
    for _ in range(sizes.repeats):
        fsync = fsync_latencies(root, sizes.fsyncs)
        rtt = process_round_trips(sizes.round_trips)
        runs["fsync_p50"].append(percentile(fsync, 0.5))
        runs["fsync_p99"].append(percentile(fsync, 0.99))
        runs["rtt_p50"].append(percentile(rtt, 0.5))
        runs["rtt_p99"].append(percentile(rtt, 0.99))
    floor = {k: summary(v) for k, v in runs.items()}
    latency = floor["fsync_p50"]["median"] + floor["rtt_p50"]["median"]
    floor["write_latency"] = latency
    floor["write_rate"] = 1 / latency
    floor["write_latency_p99"] = floor["fsync_p99"]["median"] + floor["rtt_p99"]["median"]
    return floor


# ---------------------------------------------------------------- a graft node


def serve_graft_node(spec: dict[str, Any], max_life: float) -> None:
    """A child process: one graft node, answering ``pysyncobj_node.py``'s stdin protocol."""

    async def answer(node: Any, command: dict[str, Any]) -> dict[str, Any]:
        if command["cmd"] == "status":
            s = node.status()
            leader = s.role is Role.LEADER
            caught_up = (len(s.peers) == len(spec["addrs"]) - 1
                         and all(p.match_index == s.last_index for p in s.peers.values()))
            return {"leader": leader, "ready": leader and caught_up, "term": s.term}
        if command["cmd"] == "seq":
            load = await sequential(node, int(command["count"]))
            return {"latencies": load.latencies, "errors": load.errors}
        if command["cmd"] == "conc":
            load, _ = await concurrent(node, int(command["inflight"]), float(command["seconds"]))
            return loaded(load)
        raise ValueError(f"unknown command {command!r}")

    def loaded(load: Load) -> dict[str, Any]:
        return {"in_window": load.in_window, "committed": len(load.latencies),
                "latencies": load.latencies, "errors": load.errors}

    async def main() -> None:
        node = make_node(spec)
        stdin = trio.wrap_file(sys.stdin)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with trio.move_on_after(max_life):
                async for line in stdin:
                    reply = await answer(node, json.loads(line))
                    sys.stdout.write(json.dumps(reply) + "\n")
                    sys.stdout.flush()
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------- a cluster of processes


class Cluster:
    """N node processes speaking the stdin/stdout protocol; stopped by closing stdin."""

    def __init__(self, argvs: Sequence[list[str]], logs: Sequence[Path]) -> None:
        self.logs = list(logs)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.buffers: list[bytes] = []
        for argv, log in zip(argvs, logs, strict=True):
            with log.open("wb") as err:
                self.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=err))
            self.buffers.append(b"")

    def ask(self, k: int, command: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> Any:
        p = self.procs[k]
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(json.dumps(command).encode() + b"\n")
        p.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = p.stdout.fileno()
        while b"\n" not in self.buffers[k]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"node {k} did not answer {command['cmd']!r} "
                                   f"in {timeout} s:\n{self.tail(k)}")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"node {k} exited ({p.wait()}):\n{self.tail(k)}")
            self.buffers[k] += chunk
        line, _, self.buffers[k] = self.buffers[k].partition(b"\n")
        return json.loads(line)

    def tail(self, k: int) -> str:
        return self.logs[k].read_text(errors="replace")[-3000:]

    def wait_for_leader(self) -> int:
        """The index of a node that leads with every follower connected (and caught up)."""
        deadline = time.monotonic() + LEADER_TIMEOUT
        while time.monotonic() < deadline:
            for k in range(len(self.procs)):
                if self.ask(k, {"cmd": "status"})["ready"]:
                    return k
            time.sleep(0.05)
        raise TimeoutError("no leader with all followers in time:\n"
                           + "\n".join(self.tail(k) for k in range(len(self.procs))))

    def cpu(self) -> list[float]:
        return [cpu_seconds(p.pid) for p in self.procs]

    def peak_rss(self) -> list[float]:
        return [peak_rss_mib(p.pid) for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            if p.stdout is not None:
                p.stdout.close()


def graft_argvs(n: int, root: Path, max_life: float) -> list[list[str]]:
    ids = [f"n{k}" for k in range(n)]
    addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(n), strict=True)}
    return [[sys.executable, __file__, "--graft-node",
             json.dumps(node_spec(i, addrs, root / f"graft-{n}")), "--max-life", str(max_life)]
            for i in ids]


def pysyncobj_argvs(n: int, root: Path, max_life: float) -> list[list[str]]:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
    script = str(HERE / "pysyncobj_node.py")
    return [[sys.executable, script, "--self", a, *(x for b in addrs if b != a
                                                     for x in ("--other", b)),
             "--max-life", str(max_life)]
            for a in addrs]


def measure_system(name: str, argvs: list[list[str]], sizes: Sizes,
                   root: Path) -> dict[str, Any]:
    """Start the cluster, find its leader, run the repeats, stop it."""
    logs = [root / f"{name}-{k}.log" for k in range(len(argvs))]
    cluster = Cluster(argvs, logs)
    try:
        leader = cluster.wait_for_leader()
        start_term = cluster.ask(leader, {"cmd": "status"})["term"]
        cluster.ask(leader, {"cmd": "seq", "count": 20})  # warm up
        runs: dict[str, list[float]] = {"latency_p50": [], "latency_p99": []}
        samples: list[float] = []  # every sequential write's latency, all repeats
        errors: dict[str, int] = {}

        def count_errors(reply: dict[str, Any]) -> None:
            for k, v in reply["errors"].items():
                errors[k] = errors.get(k, 0) + v

        for _ in range(sizes.repeats):
            seq = cluster.ask(leader, {"cmd": "seq", "count": sizes.sequential})
            count_errors(seq)
            samples.extend(seq["latencies"])
            if seq["latencies"]:
                runs["latency_p50"].append(percentile(seq["latencies"], 0.5))
                runs["latency_p99"].append(percentile(seq["latencies"], 0.99))
            for inflight in sizes.inflight:
                before = cluster.cpu()
                conc = cluster.ask(leader, {"cmd": "conc", "inflight": inflight,
                                            "seconds": sizes.seconds},
                                   timeout=REPLY_TIMEOUT + sizes.seconds)
                after = cluster.cpu()
                count_errors(conc)
                runs.setdefault(f"rate_{inflight}", []).append(conc["in_window"] / sizes.seconds)
                if conc["committed"]:
                    used = [a - b for a, b in zip(after, before, strict=True)]
                    runs.setdefault(f"cpu_{inflight}", []).append(
                        sum(used) / conc["committed"] * 10_000)
                    runs.setdefault(f"leader_cpu_{inflight}", []).append(
                        used[leader] / conc["committed"] * 10_000)
                    runs.setdefault(f"in_flight_p50_{inflight}", []).append(
                        percentile(conc["latencies"], 0.5))
        rss = cluster.peak_rss()
        end_term = cluster.ask(leader, {"cmd": "status"})["term"]
    finally:
        cluster.stop()
    return {
        "nodes": len(argvs),
        "leader": leader,
        # A different term at the end means elections happened during the run.
        "leader_term": {"start": start_term, "end": end_term},
        "latency_p50": summary(runs["latency_p50"]) if runs["latency_p50"] else None,
        "latency_p99": summary(runs["latency_p99"]) if runs["latency_p99"] else None,
        # Seconds, in the order measured (notebooks/04_performance draws the CDF).
        "latency_samples": samples,
        "throughput": {str(i): summary(runs[f"rate_{i}"]) for i in sizes.inflight},
        "in_flight_latency_p50": {str(i): summary(runs[f"in_flight_p50_{i}"])
                                  for i in sizes.inflight if runs.get(f"in_flight_p50_{i}")},
        "cpu_s_per_10k_commits": {str(i): summary(runs[f"cpu_{i}"])
                                  for i in sizes.inflight if runs.get(f"cpu_{i}")},
        "leader_cpu_s_per_10k_commits": {str(i): summary(runs[f"leader_cpu_{i}"])
                                         for i in sizes.inflight if runs.get(f"leader_cpu_{i}")},
        "peak_rss_mib": {"per_node": rss, "max": max(rss), "leader": rss[leader]},
        "errors": errors,
    }


# ---------------------------------------------------------------- the run


def pysyncobj_version() -> str:
    from importlib.metadata import version

    return version("pysyncobj")


def measure(sizes: Sizes, root: Path, log: Callable[[str], None]) -> dict[str, Any]:
    max_life = 600.0
    log("floor: fsync and process-to-process TCP round trips")
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "host": "127.0.0.1, every node in its own process",
            "payload_bytes": PAYLOAD,
            "repeats": sizes.repeats,
            "sequential_writes": sizes.sequential,
            "inflight": list(sizes.inflight),
            "seconds_per_throughput_run": sizes.seconds,
            "graft": "graft_trio Node, fsync on, default Options except timeouts "
                     f"(heartbeat 50 ms, election {LEADER_ELECTION_TIMEOUT:g} s on n0 and "
                     f"{FOLLOWER_ELECTION_TIMEOUT:g} s on the others)",
            "pysyncobj": {"version": pysyncobj_version(), "settings": PYSYNCOBJ_SETTINGS,
                          "persistence": PYSYNCOBJ_PERSISTENCE},
            "load": "driven inside the leader's process; its CPU counts with the leader's",
        },
        "floor": measure_floor(sizes, root),
        "systems": {},
    }
    for n in sizes.clusters:
        for system, argvs in (("graft", graft_argvs), ("pysyncobj", pysyncobj_argvs)):
            name = f"{system}-{n}"
            log(f"{name}: {n} processes")
            results["systems"][name] = measure_system(name, argvs(n, root, max_life), sizes,
                                                      root)
    results["ratios"] = ratios(results, sizes)
    return results


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def median(stat: dict[str, Any] | None) -> float | None:
    return None if stat is None else float(stat["median"])


def ratios(results: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """graft/PySyncObj per cluster size and graft/floor for each headline figure."""
    floor = results["floor"]
    out: dict[str, Any] = {}
    for n in sizes.clusters:
        g, p = results["systems"][f"graft-{n}"], results["systems"][f"pysyncobj-{n}"]
        r: dict[str, float | None] = {}
        for key in ("latency_p50", "latency_p99"):
            r[f"{key} graft/pysyncobj"] = ratio(median(g[key]), median(p[key]))
        r["latency_p50 graft/floor"] = ratio(median(g["latency_p50"]), floor["write_latency"])
        r["latency_p99 graft/floor"] = ratio(median(g["latency_p99"]),
                                             floor["write_latency_p99"])
        for i in map(str, sizes.inflight):
            r[f"throughput_{i} graft/pysyncobj"] = ratio(median(g["throughput"][i]),
                                                         median(p["throughput"][i]))
            r[f"throughput_{i} graft/floor"] = ratio(median(g["throughput"][i]),
                                                     floor["write_rate"])
            r[f"cpu_{i} graft/pysyncobj"] = ratio(
                median(g["cpu_s_per_10k_commits"].get(i)),
                median(p["cpu_s_per_10k_commits"].get(i)))
        r["peak_rss graft/pysyncobj"] = ratio(g["peak_rss_mib"]["max"], p["peak_rss_mib"]["max"])
        out[str(n)] = r
    return out


# ---------------------------------------------------------------- the table


def cell(stat: dict[str, Any] | None, scale: float, fmt: str) -> str:
    if stat is None:
        return "-"
    return (f"{stat['median'] * scale:{fmt}} "
            f"({stat['min'] * scale:{fmt}}-{stat['max'] * scale:{fmt}})")


def times(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(results: dict[str, Any], sizes: Sizes) -> str:
    meta, floor, systems = results["meta"], results["floor"], results["systems"]
    lines = [
        f"{meta['date']}  {meta['cpus']} CPUs  Python {meta['python']}  {meta['platform']}",
        f"127.0.0.1, one process per node, {PAYLOAD}-byte writes; each cell: median "
        f"(min-max) of {sizes.repeats} repeats",
        f"graft: fsync on.  PySyncObj {meta['pysyncobj']['version']}: {PYSYNCOBJ_SETTINGS}.",
        f"PySyncObj persistence: {PYSYNCOBJ_PERSISTENCE}.",
        "",
    ]
    head = ["metric"]
    for n in sizes.clusters:
        head += [f"graft-{n}", f"pysyncobj-{n}", "g/p"]
    head += ["floor", f"graft-{sizes.clusters[0]}/floor"]
    rows: list[list[str]] = []

    def row(label: str, key: Callable[[dict[str, Any]], dict[str, Any] | None], scale: float,
            fmt: str, floor_value: float | None, floor_fmt: str) -> None:
        r = [label]
        for n in sizes.clusters:
            g, p = key(systems[f"graft-{n}"]), key(systems[f"pysyncobj-{n}"])
            r += [cell(g, scale, fmt), cell(p, scale, fmt), times(ratio(median(g), median(p)))]
        first = key(systems[f"graft-{sizes.clusters[0]}"])
        r += ["" if floor_value is None else f"{floor_value * scale:{floor_fmt}}",
              "" if floor_value is None else times(ratio(median(first), floor_value))]
        rows.append(r)

    row("write latency p50 (ms, sequential)", lambda s: s["latency_p50"], 1000, ".2f",
        floor["write_latency"], ".3f")
    row("write latency p99 (ms, sequential)", lambda s: s["latency_p99"], 1000, ".2f",
        floor["write_latency_p99"], ".3f")
    def throughput(i: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        return lambda s: s["throughput"][i]

    def cpu(key: str, i: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        return lambda s: s[key].get(i)

    for i in map(str, sizes.inflight):
        row(f"writes/s, {int(i):,} in flight", throughput(i), 1, ",.0f", floor["write_rate"],
            ",.0f")
    for i in map(str, sizes.inflight):
        row(f"CPU s / 10k commits, all nodes ({int(i):,})", cpu("cpu_s_per_10k_commits", i),
            1, ".2f", None, "")
        row(f"  of which the leader's ({int(i):,})", cpu("leader_cpu_s_per_10k_commits", i),
            1, ".2f", None, "")
    row("peak RSS per node, max (MiB)", lambda s: {"median": s["peak_rss_mib"]["max"],
                                                   "min": min(s["peak_rss_mib"]["per_node"]),
                                                   "max": s["peak_rss_mib"]["max"]},
        1, ".1f", None, "")
    widths = [max(len(r[k]) for r in (head, *rows)) for k in range(len(head))]
    for r in (head, *rows):
        lines.append("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                               for k, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    lines += [
        "",
        f"floor: fsync p50 {cell(floor['fsync_p50'], 1000, '.3f')} ms, "
        f"p99 {cell(floor['fsync_p99'], 1000, '.3f')} ms (64 B appends, data directory's fs); "
        f"TCP RTT p50 {cell(floor['rtt_p50'], 1000, '.3f')} ms, "
        f"p99 {cell(floor['rtt_p99'], 1000, '.3f')} ms (64 B, two processes).",
        "floor latency = fsync + RTT; floor writes/s = 1 / (fsync p50 + RTT p50), "
        "one write at a time.",
        "peak RSS row: max over nodes (min-max over nodes).",
    ]
    for name, s in systems.items():
        if s["leader_term"]["start"] != s["leader_term"]["end"]:
            lines.append(f"{name}: the first leader's term went from {s['leader_term']['start']} "
                         f"to {s['leader_term']['end']} during the run (elections)")
        if s["errors"]:
            lines.append(f"errors ({name}): "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(s["errors"].items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where the results go (default {DEFAULT_JSON})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the data directories go (default: a new temporary "
                             "directory, removed afterwards)")
    parser.add_argument("--graft-node", help=argparse.SUPPRESS)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-life", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.graft_node:
        serve_graft_node(json.loads(args.graft_node), args.max_life)
        return
    if args.echo:
        echo_server(args.echo)
        return
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = attrs.evolve(sizes, repeats=args.repeats)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="graft-compare-", dir=args.dir))
    started = time.monotonic()
    try:
        results = measure(sizes, root, lambda m: print(f"[{time.monotonic() - started:5.1f} s] "
                                                        f"{m}", file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["meta"]["wall_seconds"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results, sizes))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
