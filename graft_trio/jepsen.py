"""A Jepsen-style run: real K/V processes, concurrent clients, a nemesis, a checker.

Run it::

    python -m graft_trio.jepsen --nodes 5 --duration 30 --clients 8 --seed 1

Theory of operation
-------------------
The harness starts ``--nodes`` separate ``python -m graft_trio.kv serve``
processes on 127.0.0.1 (free ports, a temporary data directory each) and, in
its own trio process, three kinds of task:

* **Clients** (``--clients``) loop until the run's end: each picks a random
  node and a random key and does a ``put`` (a value no other write uses), a
  ``get`` or a ``cas`` (from the last value anyone saw on that key to a fresh
  one), and records the operation with the harness's monotonic clock just
  before the request and just after the answer (Jepsen's invoke/complete).
* **The nemesis** injects one fault at a time, picked at random: ``kill``
  (SIGKILL a node, later restart it on the same data directory: only what
  reached its disk survives), ``pause`` (SIGSTOP, later SIGCONT: a process
  that is alive but silent, the classic cause of a stale leader) and
  ``partition`` (cut the links between chosen pairs of nodes, later heal).
  Kinds are drawn from shuffled bags of all three, so a short run still
  sees every kind.
* **Link proxies.** Every node's ``--peer`` address for another node is a
  :class:`LinkProxy` in the harness that forwards to that node's real peer
  port. Cutting a pair closes the pair's proxied connections and refuses or
  blackholes (accepts and then drops every byte of) new ones until healed;
  healing closes the blackholed ones so the nodes dial afresh.

Then everything heals, the harness waits for a leader, reads every key from
every node (rounds of reads, until every node answers the same values and
has applied the same index), and checks:

(a) the whole history, final reads included, with
    :func:`graft_sim.check_history` (Wing & Gong search with Lowe's
    memoization, one register per key);
(b) no acknowledged write was lost: each key's final value is its last
    acknowledged write or a write that overlapped or followed it
    (:func:`lost_writes`; the checker implies it, this says it directly);
    and every node's final state is the same.

Rules
-----
Rule 1: *an operation's outcome is what the client can prove.* ``ok`` is an
answer with ``"ok": true``. ``failed`` is certain not to have happened: the
connection was never made (nothing was sent) or the server said the entry was
not appended (``NoLeader``, ``Rejected``, ``NotStarted``, a bad request).
Everything else -- a client timeout, a connection that broke after sending,
``CommitTimeout``, ``OutcomeUnknown`` -- is *indeterminate* and is recorded
with ``ret=None``: it may take effect at any later time, or never (Knossos'
``:info``).

Rule 2: *unique values.* Every put and cas writes a value no other operation
writes (``"client.seq"``), so a read names the one write it saw, and the
checker's memo stays small.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from graft_sim import CheckResult, Operation, Verdict, check_history
from graft_trio.testing import free_ports

__all__ = [
    "FAULT_KINDS",
    "ClusterUnavailable",
    "JepsenConfig",
    "JepsenReport",
    "LinkProxy",
    "lost_writes",
    "main",
    "run_jepsen",
]

FAULT_KINDS = ("kill", "pause", "partition")

# Server answers that prove the request had no effect (Rule 1); the prefix is
# the exception's class name (kv.KVServer._answer) or the server's own text.
_NOT_DONE = ("NoLeader", "Rejected", "NotStarted", "PayloadTooLarge", "bad request",
             "missing field", "unknown op")


class ClusterUnavailable(Exception):
    """The cluster elected no leader in time (at the start, or once the faults healed)."""


@attrs.frozen
class JepsenConfig:
    """What to run.

    Attributes:
        nodes: Cluster size (at least 3: a kill or a pause must leave a majority).
        duration: Seconds of workload and faults.
        clients: Concurrent clients.
        seed: Seeds the nemesis's and the clients' choices (trio's scheduling
            and the OS are not seeded, so two runs are alike, not identical).
        keys: Registers the clients share; fewer keys mean more contention,
            more keys a cheaper check.
        client_timeout: Seconds a client waits for an answer before it
            records the operation as indeterminate.
        fault_hold: (min, max) seconds a fault lasts.
        fault_quiet: (min, max) seconds between faults.
        max_steps: Linearizability search budget per key.
        keep: Keep the data directories and node logs (they are always kept
            when the run fails).

    Raises:
        ValueError: On a field out of range.
    """

    nodes: int = 5
    duration: float = 30.0
    clients: int = 8
    seed: int = 0
    keys: int = 5
    client_timeout: float = 2.0
    fault_hold: tuple[float, float] = (1.0, 3.0)
    fault_quiet: tuple[float, float] = (0.5, 2.0)
    max_steps: int = 2_000_000
    keep: bool = False

    def __attrs_post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError(f"nodes must be >= 3, got {self.nodes}")
        if self.duration <= 0 or self.client_timeout <= 0:
            raise ValueError("duration and client_timeout must be > 0")
        if self.clients < 1 or self.keys < 1:
            raise ValueError(f"clients and keys must be >= 1, got {self.clients}, {self.keys}")
        for name in ("fault_hold", "fault_quiet"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max")


@attrs.frozen
class JepsenReport:
    """What a run saw and concluded.

    Attributes:
        outcomes: Operation counts by (kind, outcome); outcome is ``ok``,
            ``failed`` or ``indeterminate`` (Rule 1). Final reads not included.
        faults: Faults injected, by kind.
        cas_swapped: Completed cas operations that swapped (the rest found
            another value).
        failures: Failed operations by reason (the server's error class, or
            ``connection refused``).
        check: The linearizability checker's result on the whole history.
        lost: One line per key whose final value proves an acknowledged
            write was lost (empty if none).
        final_agree: Every node ended with the same data at the same index.
        final: The agreed final value of every key (``None``: never written).
        history: Operations checked (client operations and final reads).
        data_dir: Where the nodes' data and logs are, if kept; else ``None``.
        crashed: Node processes that exited without the nemesis killing them
            (a fail-stop, an assertion, a traceback): each fails the run.
    """

    outcomes: Mapping[tuple[str, str], int]
    faults: Mapping[str, int]
    cas_swapped: int
    failures: Mapping[str, int]
    check: CheckResult
    lost: tuple[str, ...]
    final_agree: bool
    final: Mapping[str, Any]
    history: int
    data_dir: Path | None
    crashed: tuple[str, ...] = ()

    def count(self, outcome: str) -> int:
        """Operations with this outcome (``ok``, ``failed``, ``indeterminate``), all kinds."""
        return sum(n for (_, o), n in self.outcomes.items() if o == outcome)

    @property
    def passed(self) -> bool:
        """Linearizable, nothing lost, every node agrees, no node crashed by itself.

        ``UNKNOWN`` does not pass.
        """
        return (self.check.verdict is Verdict.LINEARIZABLE and not self.lost
                and self.final_agree and not self.crashed)

    def summary(self) -> str:
        """The run's figures and verdict, for humans."""
        kinds = ("put", "get", "cas")
        lines = [
            f"operations: {self.count('ok')} ok, {self.count('failed')} failed, "
            f"{self.count('indeterminate')} indeterminate",
        ]
        if self.failures:
            lines.append("  failed: " + ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.failures.items())))
        for kind in kinds:
            parts = [f"{self.outcomes.get((kind, o), 0)} {o}"
                     for o in ("ok", "failed", "indeterminate")]
            if kind == "cas":
                parts[0] += f" ({self.cas_swapped} swapped)"
            lines.append(f"  {kind:4}: " + ", ".join(parts))
        lines.append("faults: " + ", ".join(f"{k} {self.faults.get(k, 0)}" for k in FAULT_KINDS))
        agree = "every node agrees" if self.final_agree else "NODES DISAGREE"
        lines.append(f"final state: {agree}")
        lines.append(f"lost acknowledged writes: {len(self.lost)}")
        lines.append(f"nodes that exited by themselves: {len(self.crashed)}")
        lines.extend(f"  {line}" for line in self.crashed)
        lines.extend(f"  {line}" for line in self.lost)
        lines.append(f"linearizability ({self.history} operations): {self.check.verdict.name} "
                     f"({self.check.steps} search steps)")
        if self.check.verdict is not Verdict.LINEARIZABLE:
            lines.append(self.check.explain())
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'}")
        if self.data_dir is not None:
            lines.append(f"data and node logs kept in {self.data_dir}")
        return "\n".join(lines)


def lost_writes(history: Iterable[Operation], final: Mapping[str, Any]) -> list[str]:
    """Keys whose final value shows an acknowledged write was lost.

    A write that completed before the last acknowledged write *began* must be
    linearized before it, so it cannot be the final value; only the last
    acknowledged write itself, or a write that overlapped or followed it
    (including indeterminate ones), can be.

    Args:
        history: Operations with unique write values (Rule 2).
        final: Each key's final value, as every node agrees.

    Returns:
        One description per key that lost a write.
    """
    writes: dict[str, list[Operation]] = {}
    for op in history:
        # A cas that answered False wrote nothing.
        if op.kind == "put" or (op.kind == "cas" and op.output is not False):
            writes.setdefault(op.key, []).append(op)
    lost = []
    for key in sorted(writes):
        acked = [op for op in writes[key] if op.ret is not None]
        if not acked:
            continue
        last = max(acked, key=lambda op: op.ret or 0)
        allowed = {last.value} | {
            op.value for op in writes[key] if op.ret is None or op.ret > last.call
        }
        if final.get(key) not in allowed:
            lost.append(f"{key!r}: final value {final.get(key)!r}, but {last.value!r} was "
                        f"acknowledged later than the write of it")
    return lost


class LinkProxy:
    """One node's link to one peer, forwarded through the harness so it can be cut.

    Args:
        target: The peer's real listening address.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.is_cut = False
        self.blackhole = False
        self._live: set[trio.CancelScope] = set()
        self._held: set[trio.CancelScope] = set()

    @property
    def connections(self) -> int:
        """Connections currently forwarded."""
        return len(self._live)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free 127.0.0.1 port (started with it) and forward until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    def cut(self, *, blackhole: bool = False) -> None:
        """Close every forwarded connection; refuse new ones, or accept and drop their bytes."""
        self.is_cut = True
        self.blackhole = blackhole
        for scope in self._live:
            scope.cancel()

    def heal(self) -> None:
        """Forward new connections again; close the blackholed ones so their dialers redial."""
        self.is_cut = False
        for scope in self._held:
            scope.cancel()

    async def _handle(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            if self.is_cut:
                if self.blackhole:
                    await self._hold(downstream)
                return  # refused: closed at once
            with trio.CancelScope() as scope:
                self._live.add(scope)
                try:
                    await self._forward(downstream)
                finally:
                    self._live.discard(scope)

    async def _hold(self, downstream: trio.SocketStream) -> None:
        # A blackhole: the dialer believes it is connected; nothing arrives.
        with trio.CancelScope() as scope:
            self._held.add(scope)
            try:
                while await downstream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._held.discard(scope)

    async def _forward(self, downstream: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            return  # the peer is down: so is the link, and the dialer retries
        async with upstream, trio.open_nursery() as nursery:

            async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                try:
                    while data := await src.receive_some(65536):
                        await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                # Either side closing ends the link, as a real connection would.
                nursery.cancel_scope.cancel()

            nursery.start_soon(pipe, downstream, upstream)
            nursery.start_soon(pipe, upstream, downstream)


#: Every node snapshots its K/V state this often (entries), so a run exercises
#: InstallSnapshot, snapshot restores after restarts, and cas answers across them.
SNAPSHOT_EVERY = 100


class _Cluster:
    """The node processes and the proxies between them."""

    def __init__(self, ids: Sequence[str], root: Path) -> None:
        self.ids = tuple(ids)
        self.root = root
        ports = free_ports(2 * len(ids))
        self.peer_port = {n: ports[i] for i, n in enumerate(ids)}
        self.client_port = {n: ports[len(ids) + i] for i, n in enumerate(ids)}
        # proxies[(a, b)]: a's link to b (whichever of the two dials uses it).
        self.proxies = {(a, b): LinkProxy(("127.0.0.1", self.peer_port[b]))
                        for a in ids for b in ids if a != b}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        #: Node processes that exited without the harness killing them.
        self.crashed: list[str] = []

    async def start_proxies(self, nursery: trio.Nursery) -> None:
        for proxy in self.proxies.values():
            await nursery.start(proxy.run)

    def start(self, n: str) -> None:
        cmd = [
            sys.executable, "-m", "graft_trio.kv", "serve", "--id", n,
            "--listen", f"127.0.0.1:{self.peer_port[n]}",
            "--client", f"127.0.0.1:{self.client_port[n]}",
            "--data", str(self.root / n),
            # Snapshot often, so restarted and lagging nodes catch up by
            # InstallSnapshot and restore, not only by the log.
            "--snapshot-every", str(SNAPSHOT_EVERY),
        ]
        for m in self.ids:
            if m != n:
                cmd += ["--peer", f"{m}=127.0.0.1:{self.proxies[(n, m)].port}"]
        with open(self.root / f"{n}.log", "ab") as log:
            self.procs[n] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def reap(self) -> None:
        """Note every node process that exited without being killed by us."""
        for n, p in list(self.procs.items()):
            if p.poll() is not None:
                self.crashed.append(f"{n} exited with status {p.returncode} (see {n}.log)")
                del self.procs[n]
                self.paused.discard(n)

    def kill(self, n: str) -> bool:
        """SIGKILL ``n``; False if it was not running (it had exited by itself:
        reap() recorded that, and heal_all() restarts it)."""
        self.reap()
        if n not in self.procs:
            return False
        p = self.procs.pop(n)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.paused.discard(n)
        return True

    def pause(self, n: str) -> bool:
        """SIGSTOP ``n``; False if it was not running."""
        self.reap()
        if n not in self.procs:
            return False
        self.procs[n].send_signal(signal.SIGSTOP)
        self.paused.add(n)
        return True

    def resume(self, n: str) -> None:
        self.procs[n].send_signal(signal.SIGCONT)
        self.paused.discard(n)

    def cut(self, pairs: Iterable[tuple[str, str]], *, blackhole: bool) -> None:
        for a, b in pairs:
            self.proxies[(a, b)].cut(blackhole=blackhole)
            self.proxies[(b, a)].cut(blackhole=blackhole)

    def heal_links(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def heal_all(self) -> None:
        self.reap()
        for n in list(self.paused):
            self.resume(n)
        for n in self.ids:
            if n not in self.procs:
                self.start(n)
        self.heal_links()

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait()
        self.procs.clear()
        self.paused.clear()


async def _call(port: int, req: dict[str, Any], timeout: float) -> tuple[bool, Any]:
    """One request to a node's client port. Returns (sent, answer or None).

    ``sent`` is False only if the connection was never made (Rule 1: nothing
    happened); an answer of None after sending means the outcome is unknown.
    """
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return False, None
        try:
            async with stream:
                await stream.send_all(json.dumps(req).encode() + b"\n")
                buf = b""
                while b"\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return True, None
                    buf += data
                return True, json.loads(buf.split(b"\n", 1)[0])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
            return True, None
    return True, None


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class _Run:
    def __init__(self, config: JepsenConfig, cluster: _Cluster, out: Callable[[str], None]):
        self.config = config
        self.cluster = cluster
        self.out = out
        self.history: list[Operation] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.keys = [f"k{i}" for i in range(config.keys)]
        # The last value anyone saw on each key: what a cas expects.
        self.seen: dict[str, Any] = {}
        self.swaps: Counter[bool] = Counter()
        self.failures: Counter[str] = Counter()

    async def client(self, c: int, stop_at: float) -> None:
        rng = random.Random(self.config.seed * 7919 + c)
        seq = 0
        while trio.current_time() < stop_at:
            seq += 1
            node = rng.choice(self.cluster.ids)
            key = rng.choice(self.keys)
            kind = rng.choices(("put", "get", "cas"), (2, 2, 1))[0]
            value = f"{c}.{seq}" if kind != "get" else None  # Rule 2
            expected = self.seen.get(key) if kind == "cas" else None
            req: dict[str, Any] = {"op": kind, "key": key}
            if kind != "get":
                req["value"] = value
            if kind == "cas":
                req["expected"] = expected
            call = _now_us()
            sent, answer = await _call(self.cluster.client_port[node], req,
                                       self.config.client_timeout)
            ret = _now_us()
            if answer is not None and answer.get("ok"):
                outcome = "ok"
                output: Any = None
                if kind == "get":
                    output = answer.get("value")
                    self.seen[key] = output
                elif kind == "cas":
                    output = bool(answer.get("swapped"))
                    if output:
                        self.seen[key] = value
                    self.swaps[output] += 1
                else:
                    self.seen[key] = value
                self.history.append(Operation(c, key, kind, value, expected, call, ret, output))
            elif not sent or (answer is not None
                              and str(answer.get("error", "")).startswith(_NOT_DONE)):
                outcome = "failed"
                reason = "connection refused" if not sent else str(answer["error"])
                self.failures[reason.split(":")[0]] += 1
            else:
                outcome = "indeterminate"
                self.history.append(Operation(c, key, kind, value, expected, call, None, None))
            self.outcomes[(kind, outcome)] += 1
            if outcome != "ok":
                await trio.sleep(rng.uniform(0.05, 0.2))  # back off from a sick node
            await trio.sleep(rng.uniform(0, 0.02))

    async def nemesis(self, stop_at: float) -> None:
        rng = random.Random(self.config.seed)
        bag: list[str] = []
        ids = self.cluster.ids
        with trio.move_on_at(stop_at):
            while True:
                await trio.sleep(rng.uniform(*self.config.fault_quiet))
                if not bag:
                    bag = list(FAULT_KINDS)
                    rng.shuffle(bag)
                kind = bag.pop()
                hold = rng.uniform(*self.config.fault_hold)
                # Half the time the victim is the leader: the faults that matter most.
                leader = await self.current_leader(rng)
                victim = leader if leader is not None and rng.random() < 0.5 else rng.choice(ids)
                try:
                    if kind == "kill":
                        n = victim
                        self.out(f"  nemesis: SIGKILL {n}, restart in {hold:.1f}s")
                        if self.cluster.kill(n):
                            self.faults[kind] += 1  # counted once it happened, not before
                        await trio.sleep(hold)
                    elif kind == "pause":
                        n = victim
                        self.out(f"  nemesis: SIGSTOP {n} for {hold:.1f}s")
                        if self.cluster.pause(n):
                            self.faults[kind] += 1
                        await trio.sleep(hold)
                    else:
                        pairs, shape = _partition(rng, ids, victim)
                        blackhole = rng.random() < 0.5
                        self.out(f"  nemesis: cut {shape} "
                                 f"({'blackhole' if blackhole else 'refuse'}) "
                                 f"{' '.join(a + '-' + b for a, b in pairs)} for {hold:.1f}s")
                        self.cluster.cut(pairs, blackhole=blackhole)
                        self.faults[kind] += 1
                        await trio.sleep(hold)
                finally:
                    # Also when the run's end cancels the hold: no fault outlives it.
                    self.cluster.heal_all()

    async def progress(self, stop_at: float) -> None:
        t0 = trio.current_time()
        with trio.move_on_at(stop_at):
            while True:
                await trio.sleep(5)
                ok = sum(n for (_, o), n in self.outcomes.items() if o == "ok")
                total = sum(self.outcomes.values())
                self.out(f"  t={trio.current_time() - t0:4.0f}s: {total} operations, {ok} ok, "
                         f"faults {dict(self.faults)}")

    async def current_leader(self, rng: random.Random) -> str | None:
        """The leader some live node names (None if it does not know or does not answer)."""
        live = [n for n in self.cluster.ids
                if n in self.cluster.procs and n not in self.cluster.paused]
        if not live:
            return None
        _, answer = await _call(self.cluster.client_port[rng.choice(live)], {"op": "status"}, 0.5)
        leader = answer.get("leader") if answer is not None else None
        return str(leader) if leader in self.cluster.ids else None

    async def wait_leader(self, timeout: float = 30) -> str | None:
        """The leader every node names, or None if they never agree within ``timeout``."""
        with trio.move_on_after(timeout):
            while True:
                statuses = [await _call(self.cluster.client_port[n], {"op": "status"}, 1)
                            for n in self.cluster.ids]
                answers = [a for _, a in statuses if a is not None and a.get("ok")]
                leaders = {a["leader"] for a in answers}
                if len(answers) == len(self.cluster.ids) and len(leaders) == 1:
                    leader = leaders.pop()
                    if leader in self.cluster.ids:
                        return str(leader)
                await trio.sleep(0.1)
        return None

    async def final_reads(self, timeout: float = 60) -> tuple[bool, dict[str, Any]]:
        """Rounds of reads of every key from every node until they all agree.

        Every read goes into the history. Returns (agreed, each key's value).
        """
        ids = self.cluster.ids
        final: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                values: dict[str, set[str]] = {k: set() for k in self.keys}
                complete = True
                for i, n in enumerate(ids):
                    for key in self.keys:
                        call = _now_us()
                        _, answer = await _call(self.cluster.client_port[n],
                                                {"op": "get", "key": key}, 5)
                        if answer is None or not answer.get("ok"):
                            complete = False
                            continue
                        self.history.append(Operation(1000 + i, key, "get", None, None, call,
                                                      _now_us(), answer["value"]))
                        values[key].add(json.dumps(answer["value"]))
                        final[key] = answer["value"]
                dumps = [(await _call(self.cluster.client_port[n], {"op": "dump"}, 5))[1]
                         for n in ids]
                if (complete and all(len(v) == 1 for v in values.values())
                        and all(d is not None and d.get("ok") for d in dumps)
                        and len({json.dumps([d["applied"], d["data"]], sort_keys=True)
                                 for d in dumps}) == 1
                        and all(dumps[0]["data"].get(k) == final[k] for k in self.keys)):
                    return True, final
                await trio.sleep(0.2)
        return False, final


def _partition(
    rng: random.Random, ids: Sequence[str], victim: str
) -> tuple[list[tuple[str, str]], str]:
    """Pairs to cut, and the shape's name: ``victim`` isolated, a majority/minority
    split with ``victim`` in the minority, or a random set of pairs (which may
    leave no clean majority)."""
    shape = rng.choice(("isolate", "split", "pairs"))
    all_pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    if shape == "isolate":
        return [(a, b) for a, b in all_pairs if victim in (a, b)], shape
    if shape == "split":
        others = [n for n in ids if n != victim]
        minority = {victim, *rng.sample(others, len(ids) // 2 - 1)}
        return [(a, b) for a, b in all_pairs if (a in minority) != (b in minority)], shape
    pairs = [p for p in all_pairs if rng.random() < 0.4]
    return pairs or [rng.choice(all_pairs)], shape


async def run_jepsen(config: JepsenConfig, *, out: Callable[[str], None] = print) -> JepsenReport:
    """Run the whole experiment; see the module docstring.

    Args:
        config: What to run.
        out: Where progress lines go.

    Returns:
        The report; ``report.passed`` is the verdict.

    Raises:
        ClusterUnavailable: The nodes agreed on no leader within 30 s at the
            start, or after the faults were healed (the node logs are kept).
    """
    root = Path(tempfile.mkdtemp(prefix="graft-jepsen-"))
    ids = [chr(ord("a") + i) for i in range(config.nodes)]
    cluster = _Cluster(ids, root)
    run = _Run(config, cluster, out)
    keep = True
    try:
        unavailable = ""
        agree, final = False, dict[str, Any]()
        async with trio.open_nursery() as nursery:
            await cluster.start_proxies(nursery)
            out(f"== Jepsen-style run: {config.nodes} nodes, {config.clients} clients, "
                f"{config.duration:g}s, {config.keys} keys, seed {config.seed} (data in {root})")
            for n in ids:
                cluster.start(n)
            leader = await run.wait_leader()
            if leader is None:
                unavailable = "at the start"
            else:
                out(f"  leader {leader}; starting clients and the nemesis")
                stop_at = trio.current_time() + config.duration
                async with trio.open_nursery() as work:
                    for c in range(config.clients):
                        work.start_soon(run.client, c, stop_at)
                    work.start_soon(run.nemesis, stop_at)
                    work.start_soon(run.progress, stop_at)
                cluster.heal_all()
                leader = await run.wait_leader()
                if leader is None:
                    unavailable = "after the faults healed"
                else:
                    out(f"  healed; leader {leader}; reading every key from every node")
                    agree, final = await run.final_reads()
            nursery.cancel_scope.cancel()
        if unavailable:
            raise ClusterUnavailable(f"no leader within 30 s {unavailable}; logs in {root}")
        cluster.reap()
        out(f"  checking {len(run.history)} operations")
        check = check_history(run.history, max_steps=config.max_steps)
        lost = tuple(lost_writes(run.history, final))
        report = JepsenReport(
            outcomes=dict(run.outcomes), faults=dict(run.faults),
            cas_swapped=run.swaps[True], failures=dict(run.failures), check=check, lost=lost,
            final_agree=agree, final=final, history=len(run.history),
            crashed=tuple(cluster.crashed),
            data_dir=root if (config.keep or not agree or lost or cluster.crashed
                              or check.verdict is not Verdict.LINEARIZABLE) else None,
        )
        keep = report.data_dir is not None
        return report
    finally:
        cluster.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m graft_trio.jepsen``: exit status 0 iff the run passed."""
    p = argparse.ArgumentParser(prog="python -m graft_trio.jepsen",
                                description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of workload")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keys", type=int, default=5)
    p.add_argument("--runs", type=int, default=1, help="runs with seeds seed, seed+1, ...")
    p.add_argument("--keep", action="store_true", help="keep data directories and node logs")
    args = p.parse_args(argv)
    failed = []
    for k in range(args.runs):
        config = JepsenConfig(nodes=args.nodes, duration=args.duration, clients=args.clients,
                              seed=args.seed + k, keys=args.keys, keep=args.keep)
        report = trio.run(functools.partial(run_jepsen, config, out=_print))
        print(report.summary(), flush=True)
        if not report.passed:
            failed.append(config.seed)
    if args.runs > 1:
        print(f"== {args.runs - len(failed)} of {args.runs} runs passed"
              + (f"; failing seeds: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
