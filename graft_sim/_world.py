"""The simulated world: many graft_core nodes, one virtual clock, faults, checks.

Theory of operation
-------------------
Everything that will happen is an entry in one priority queue ordered by
``(virtual time in microseconds, sequence number)``: a message arriving, a
node's timer, a write reaching disk, a fault, a client's next operation. The
loop pops the earliest entry and steps the node concerned with the *real*
``graft_core.step``; the actions that come out schedule further entries. Idle
time is free: the queue jumps straight to the next entry, and a node's timer
is scheduled at its ``next_deadline()``, never tick by tick.

Determinism: one seed, split with SplitMix64 into independent
``random.Random`` streams (network, faults, workload, disk, each node's core
seed), so adding a fault kind does not reshuffle the others. Nothing reads the
wall clock, the ``random`` module's global state, ``id()`` or string hashes;
ties in time are broken by the sequence number. The run folds every step into
a trace hash that must match across processes and PYTHONHASHSEED values.

After every step the :class:`~graft_sim._checker.Checker` checks Raft's safety
properties; at the end the liveness window and the client history are checked.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from graft_core import (
    Action,
    Apply,
    Config,
    DurableState,
    EntryKind,
    Event,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    ProposalRejected,
    Propose,
    Restart,
    Role,
    RoleChanged,
    Send,
    Tick,
    start,
)
from graft_core import step as core_step
from graft_core._messages import ForwardProposal, ForwardResponse
from graft_core._rand import splitmix64
from graft_sim._checker import Checker, InvariantViolation
from graft_sim._faults import Fault, FaultMix, draw_schedule
from graft_sim._linearizability import CheckResult, Verdict, check_history
from graft_sim._local import Storage
from graft_sim._workload import KVStore, Workload, encode_op

# Queue entry kinds.
_DELIVER, _TIMER, _DISK, _FAULT, _CLIENT, _CLIENT_TIMEOUT, _RESUME, _PROBE = range(8)
_NORMAL = EntryKind.NORMAL
_LEADER = Role.LEADER


@attrs.frozen
class SimOptions:
    """Everything that determines a run, together with ``seed``.

    Args:
        seed: the one seed of the run.
        nodes: cluster size.
        duration_ms: faults happen in ``[0, duration_ms)`` of virtual time.
        liveness_timeouts: after the faults stop (network healed, nodes
            restarted and resumed), a leader must be known to every node and
            every acknowledged operation applied everywhere within this many
            (maximum) election timeouts.
        heartbeat_ms, election_ms: the core's timing (election timeouts are
            drawn from ``[election_ms, 2 * election_ms]``).
        pre_vote, check_quorum: the core's switches.
        faults: the fault mix; ``None`` draws one from the seed (swarm).
        schedule: explicit node/partition faults; ``None`` draws them from the
            seed and the mix. Hypothesis passes explicit schedules to shrink.
        clients, keys, op_interval_ms, client_timeout_ms: the K/V workload.
        max_ops: stop issuing operations after this many (keeps the
            linearizability check cheap); 0 means no workload.
    """

    seed: int = 0
    nodes: int = 5
    duration_ms: int = 10_000
    liveness_timeouts: int = 10
    heartbeat_ms: int = 100
    election_ms: int = 1000
    pre_vote: bool = True
    check_quorum: bool = True
    faults: FaultMix | None = None
    schedule: tuple[Fault, ...] | None = None
    clients: int = 3
    keys: int = 3
    op_interval_ms: int = 100
    client_timeout_ms: int = 3000
    max_ops: int = 400

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.duration_ms < 0 or self.liveness_timeouts < 1:
            raise ValueError("duration_ms must be >= 0 and liveness_timeouts >= 1")

    def command_line(self) -> str:
        """One command that replays exactly this run."""
        if self.schedule is None and self.faults is None and _is_cli_expressible(self):
            args = [f"--seed {self.seed}", f"--nodes {self.nodes}"]
            args.append(f"--duration {self.duration_ms}")
            if not self.pre_vote:
                args.append("--no-pre-vote")
            if not self.check_quorum:
                args.append("--no-check-quorum")
            if self.heartbeat_ms != 100 or self.election_ms != 1000:
                args.append(f"--heartbeat {self.heartbeat_ms} --election {self.election_ms}")
            return "python -m graft_sim " + " ".join(args)
        # repr() quotes strings with single quotes, so double quotes around it.
        return f'python -c "from graft_sim import *; print(Simulation({self!r}).run().summary())"'



def _is_cli_expressible(o: SimOptions) -> bool:
    d = SimOptions()
    return (o.liveness_timeouts, o.clients, o.keys, o.op_interval_ms, o.client_timeout_ms,
            o.max_ops) == (d.liveness_timeouts, d.clients, d.keys, d.op_interval_ms,
                           d.client_timeout_ms, d.max_ops)


class LivenessViolation(Exception):
    """No leader, or an acknowledged operation not applied everywhere, after the heal."""


@attrs.frozen
class SimResult:
    """What one run did."""

    options: SimOptions
    faults: FaultMix
    schedule: tuple[Fault, ...]
    steps: int
    messages_sent: int
    messages_delivered: int
    elections: int
    commits: int
    ops_ok: int
    ops_failed: int
    ops_unknown: int
    linearizability: CheckResult | None
    virtual_ms: int
    trace_hash: str

    def summary(self) -> str:
        lin = self.linearizability.verdict.value if self.linearizability else "not checked"
        return (
            f"seed {self.options.seed}: {self.steps} steps, {self.messages_delivered} messages, "
            f"{self.elections} elections, {self.commits} commits, ops ok/failed/unknown "
            f"{self.ops_ok}/{self.ops_failed}/{self.ops_unknown}, history {lin}, "
            f"trace {self.trace_hash}; faults: {self.faults.describe()}, "
            f"{len(self.schedule)} scheduled"
        )


class _Node:
    """One simulated server: the core's state plus what the world knows of it."""

    __slots__ = (
        "applied",
        "config",
        "disk_busy",
        "disk_due",
        "id",
        "idx",
        "inbox",
        "incarnation",
        "kv",
        "paused",
        "pending",
        "rate_ppm",
        "state",
        "storage",
        "timer_at",
        "trace",
        "up",
    )

    def __init__(self, idx: int, config: Config, rate_ppm: int) -> None:
        self.idx = idx
        self.id = config.node_id
        self.config = config
        self.state: NodeState = start(config)
        self.up = True
        self.paused = False
        self.rate_ppm = rate_ppm
        self.incarnation = 0
        self.timer_at: int | None = None
        self.storage = Storage()
        self.pending: list[Persist] = []
        self.disk_busy = False
        self.disk_due = False
        self.inbox: list[Any] = []
        self.kv = KVStore()
        self.applied = 0
        # The last few (time, event, actions) for violation reports.
        self.trace: deque[tuple[int, object, tuple[Action, ...]]] = deque(maxlen=16)

    def local_ms(self, t_us: int) -> int:
        return t_us * self.rate_ppm // 1_000_000_000

    def virtual_us(self, local_ms: int) -> int:
        # The first virtual microsecond at which this node's clock reads local_ms.
        return -(-local_ms * 1_000_000_000 // self.rate_ppm)


def _split(seed: int, stream: str) -> int:
    h = splitmix64(seed & 0xFFFFFFFFFFFFFFFF)
    for ch in stream.encode():
        h = splitmix64(h ^ ch)
    return h


StepFn = Callable[[NodeState, Event], tuple[NodeState, tuple[Action, ...]]]


class Simulation:
    """One deterministic run of a cluster under faults.

    Args:
        options: the run's options (seed included).
        step: the step function (tests inject broken variants to prove the
            checks have teeth; nothing else should pass it).
    """

    def __init__(self, options: SimOptions, *, step: StepFn = core_step) -> None:
        self.options = o = options
        self.step_fn = step
        seed = o.seed
        self.net_rng = random.Random(_split(seed, "network"))
        self.fault_rng = random.Random(_split(seed, "faults"))
        self.disk_rng = random.Random(_split(seed, "disk"))
        self.mix = o.faults if o.faults is not None else FaultMix.draw(
            random.Random(_split(seed, "mix"))
        )
        self.schedule = (
            o.schedule
            if o.schedule is not None
            else draw_schedule(self.fault_rng, self.mix, o.nodes, o.duration_ms, o.election_ms)
        )
        ids = tuple(f"n{i}" for i in range(o.nodes))
        skew_rng = random.Random(_split(seed, "skew"))
        self.nodes: list[_Node] = []
        for i, nid in enumerate(ids):
            config = Config(
                nid,
                ids,
                seed=_split(seed, f"core/{nid}"),
                heartbeat_interval=o.heartbeat_ms,
                election_timeout=o.election_ms,
                pre_vote=o.pre_vote,
                check_quorum=o.check_quorum,
            )
            skew = self.mix.skew_ppm
            rate = 1_000_000 + (skew_rng.randint(-skew, skew) if skew else 0)
            self.nodes.append(_Node(i, config, rate))
        self.index_of = {nid: i for i, nid in enumerate(ids)}
        self.workload = Workload(
            random.Random(_split(seed, "workload")),
            o.clients,
            o.keys,
            o.op_interval_ms,
            o.client_timeout_ms,
        )
        self.checker = Checker(self)
        self.queue: list[tuple[int, int, int, Any, Any]] = []
        self.seq = 0
        self.now = 0
        self.cut: set[tuple[int, int]] = set()
        self.hasher = hashlib.blake2b(digest_size=16)
        self.faults_over = False
        self.steps = 0
        self.sent = 0
        self.delivered = 0
        self.elections = 0
        self.lost_writes = 0
        self.agreed_at: int | None = None

    # ------------------------------------------------------------------ queue

    def push(self, t: int, kind: int, a: Any = None, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, a, b))

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        """Run to the end; raise on the first violated invariant or liveness failure.

        Raises:
            InvariantViolation: a safety property broke (its report says how
                to replay the run).
            LivenessViolation: the cluster did not recover after the faults.
        """
        o = self.options
        for n in self.nodes:
            self.schedule_timer(n)
        for f in self.schedule:
            self.push(f.at * 1000, _FAULT, f)
        heal_us = o.duration_ms * 1000
        self.push(heal_us, _FAULT, None)  # the end of faults: heal everything
        window_us = o.liveness_timeouts * 2 * o.election_ms * 1000
        end_us = heal_us + window_us
        # Clients stop asking halfway through the window, so that everything
        # acknowledged has time to reach every node before the check.
        self.ops_until_us = heal_us + window_us // 2
        if o.max_ops > 0:
            for c in range(o.clients):
                self.push(self.workload.next_interval(), _CLIENT, c)
        queue = self.queue
        pop = heapq.heappop
        while queue and queue[0][0] <= end_us:
            t, _, kind, a, b = pop(queue)
            if t < self.now:
                raise AssertionError(f"virtual time went back: {t} < {self.now}")
            self.now = t
            if kind == _DELIVER:
                self.on_deliver(a)
            elif kind == _TIMER:
                self.on_timer(a, b)
            elif kind == _DISK:
                self.on_disk(a, b)
            elif kind == _CLIENT:
                self.on_client(a)
            elif kind == _CLIENT_TIMEOUT:
                if a in self.workload.pending:
                    client = self.workload.pending[a].client
                    self.workload.timed_out(a)
                    self.push(t + self.workload.next_interval(), _CLIENT, client)
            elif kind == _FAULT:
                self.on_fault(a)
            elif kind == _PROBE:
                self.probe_leader()
            else:
                self.resume(a)
        self.now = end_us
        self.check_liveness()
        self.workload.close()
        lin = check_history(self.workload.history) if self.workload.history else None
        if lin is not None and lin.verdict is Verdict.NOT_LINEARIZABLE:
            raise InvariantViolation(
                self.report("linearizability", [], lin.explain())
            )
        stats = self.workload.stats
        return SimResult(
            options=o,
            faults=self.mix,
            schedule=self.schedule,
            steps=self.steps,
            messages_sent=self.sent,
            messages_delivered=self.delivered,
            elections=self.elections,
            commits=self.checker.max_commit,
            ops_ok=stats["ok"],
            ops_failed=stats["failed"],
            ops_unknown=stats["unknown"],
            linearizability=lin,
            virtual_ms=end_us // 1000,
            trace_hash=self.hasher.hexdigest(),
        )

    # ------------------------------------------------------------------ stepping

    def step(self, n: _Node, event: Event) -> None:
        """Step node ``n`` with the real core and carry out its actions."""
        old = n.state
        new, actions = self.step_fn(old, event)
        n.state = new
        self.steps += 1
        n.trace.append((self.now, event, actions))
        self.hasher.update(
            struct.pack(
                "<qqqqqq", self.now, n.idx, new.hard.term, new.commit_index,
                new.log.last_index, len(actions),
            )
        )
        self.checker.after_step(n, event, old, new, actions)
        for a in actions:
            if isinstance(a, Send):
                self.send(n, a.message)
            elif isinstance(a, Persist):
                n.pending.append(a)
                if not n.disk_busy:
                    n.disk_busy = True
                    delay = self.disk_rng.randint(self.mix.disk_min_us, self.mix.disk_max_us)
                    self.push(self.now + delay, _DISK, n, n.incarnation)
            elif isinstance(a, Apply):
                self.on_apply(n, a)
            elif isinstance(a, ProposalRejected):
                op = self.workload.pending.get(a.request_id)
                if op is not None and op.node == n.idx:
                    self.workload.failed(a.request_id)
                    # Back off before retrying: no leader is known yet.
                    backoff = max(self.workload.next_interval(), self.options.election_ms * 250)
                    self.push(self.now + backoff, _CLIENT, op.client)
            elif isinstance(a, RoleChanged) and a.role is _LEADER:
                self.elections += 1
        self.schedule_timer(n)

    def schedule_timer(self, n: _Node) -> None:
        # Only an earlier deadline needs a new queue entry: a later one is
        # found when the current entry fires (most resets move it later).
        # A deadline already past (a node's clock only moves when it is
        # stepped) fires now: virtual time never goes back.
        t = max(n.virtual_us(n.state.next_deadline()), self.now)
        if n.timer_at is None or t < n.timer_at:
            n.timer_at = t
            self.push(t, _TIMER, n, n.incarnation)

    def send(self, n: _Node, m: Any) -> None:
        self.sent += 1
        mix = self.mix
        rng = self.net_rng
        dst = self.index_of.get(m.dst)
        if dst is None:
            return
        if mix.loss_ppm and not self.faults_over and rng.randrange(1_000_000) < mix.loss_ppm:
            return
        copies = 1
        # Forwarded proposals travel at most once, as over TCP: duplicating
        # them would model a client retry, which the state machine handles.
        if (
            mix.duplicate_ppm
            and not isinstance(m, ForwardProposal | ForwardResponse)
            and rng.randrange(1_000_000) < mix.duplicate_ppm
        ):
            copies = 2
        for _ in range(copies):
            latency = rng.randint(mix.base_min_us, mix.base_max_us)
            if mix.tail_ppm and rng.randrange(1_000_000) < mix.tail_ppm:
                latency += rng.randint(0, mix.tail_max_us)
            self.push(self.now + latency, _DELIVER, (n.idx, dst, m))

    def on_deliver(self, item: tuple[int, int, Any]) -> None:
        src, dst, m = item
        if (src, dst) in self.cut:
            return
        n = self.nodes[dst]
        if not n.up:
            return
        if n.paused:
            n.inbox.append(item)
            return
        self.delivered += 1
        self.step(n, MessageReceived(m, n.local_ms(self.now)))

    def on_timer(self, n: _Node, incarnation: int) -> None:
        if incarnation != n.incarnation or not n.up or n.timer_at != self.now:
            return  # superseded
        n.timer_at = None
        if n.paused:
            return  # rescheduled on resume
        local = n.local_ms(self.now)
        if local >= n.state.next_deadline():
            self.step(n, Tick(local))
        else:
            self.schedule_timer(n)

    def on_disk(self, n: _Node, incarnation: int) -> None:
        if incarnation != n.incarnation or not n.up:
            return
        if n.paused:
            n.disk_due = True
            return
        n.disk_busy = False
        if not n.pending:
            return
        # Group commit: everything written so far becomes durable at once.
        for p in n.pending:
            n.storage.write(p)
        seq = n.pending[-1].seq
        n.pending.clear()
        self.step(n, PersistCompleted(seq, max(n.local_ms(self.now), n.state.now)))

    def on_apply(self, n: _Node, a: Apply) -> None:
        wl = self.workload
        kv = n.kv
        for e in a.entries:
            if e.kind is not _NORMAL:
                continue
            op_id, output = kv.apply(e.data)
            op = wl.pending.get(op_id)
            if op is not None and op.node == n.idx:
                wl.completed(op_id, self.now, output)
                self.push(self.now + wl.next_interval(), _CLIENT, op.client)
        n.applied = a.first_index + len(a.entries) - 1

    # ------------------------------------------------------------------ clients

    def on_client(self, client: int) -> None:
        wl = self.workload
        if client in wl.busy or self.now > self.ops_until_us or wl.next_op >= self.options.max_ops:
            return
        candidates = [n for n in self.nodes if n.up and not n.paused]
        if not candidates:
            self.push(self.now + wl.next_interval(), _CLIENT, client)
            return
        n = candidates[wl.rng.randrange(len(candidates))]
        op = wl.new_op(client, n.idx, self.now)
        data = encode_op(op.op_id, op.kind, op.key, op.value, op.expected)
        self.push(op.deadline_us, _CLIENT_TIMEOUT, op.op_id)
        # Catch the node's clock up first, as a shell would before a proposal.
        local = n.local_ms(self.now)
        if local > n.state.now:
            self.step(n, Tick(local))
        self.step(n, Propose(op.op_id, data))

    # ------------------------------------------------------------------ faults

    def on_fault(self, f: Fault | None) -> None:
        if f is None:
            self.heal_all()
            return
        kind = f.kind
        size = len(self.nodes)
        nodes = tuple(i for i in f.nodes if 0 <= i < size)
        if kind == "heal":
            self.cut.clear()
        elif kind == "partition":
            self.cut_between(set(nodes), set(range(size)) - set(nodes))
        elif kind == "bridge" and nodes:
            bridge, side_a = nodes[0], set(nodes[1:]) - {nodes[0]}
            side_b = set(range(size)) - side_a - {bridge}
            self.cut_between(side_a, side_b)
        elif kind == "one_way" and len(nodes) == 2:
            self.cut.add((nodes[0], nodes[1]))
        elif kind == "isolate" and nodes:
            self.cut_between({nodes[0]}, set(range(size)) - {nodes[0]})
        elif kind == "isolate_leader":
            leader = self.current_leader()
            if leader is not None:
                self.cut_between({leader}, set(range(size)) - {leader})
        elif kind == "crash" and nodes:
            self.crash(self.nodes[nodes[0]])
        elif kind == "restart" and nodes:
            self.restart(self.nodes[nodes[0]])
        elif kind == "pause" and nodes:
            n = self.nodes[nodes[0]]
            if n.up and not n.paused:
                n.paused = True
                self.push(self.now + f.duration * 1000, _RESUME, n)

    def cut_between(self, a: set[int], b: set[int]) -> None:
        self.cut.clear()
        for x in sorted(a):
            for y in sorted(b):
                self.cut.add((x, y))
                self.cut.add((y, x))

    def current_leader(self) -> int | None:
        best: tuple[int, int] | None = None
        for n in self.nodes:
            s = n.state
            if n.up and s.role is _LEADER and (best is None or s.hard.term > best[0]):
                best = (s.hard.term, n.idx)
        return None if best is None else best[1]

    def crash(self, n: _Node) -> None:
        if not n.up:
            return
        n.up = False
        n.paused = False
        n.inbox.clear()
        # Writes handed to the disk but not acknowledged: the OS may have
        # flushed any prefix of them before the crash.
        keep = self.disk_rng.randint(0, len(n.pending))
        for p in n.pending[:keep]:
            n.storage.write(p)
        self.lost_writes += len(n.pending) - keep
        n.pending.clear()
        n.disk_busy = n.disk_due = False
        n.timer_at = None
        n.incarnation += 1

    def restart(self, n: _Node) -> None:
        if n.up:
            return
        n.up = True
        # The application's state was in memory: rebuild it from the log.
        n.kv = KVStore()
        n.applied = 0
        durable = DurableState(n.storage.hard_state, tuple(n.storage.entries))
        self.checker.before_restart(n)
        self.step(n, Restart(max(n.local_ms(self.now), n.state.now), durable))

    def resume(self, n: _Node) -> None:
        if not n.paused or not n.up:
            return
        n.paused = False
        # The node wakes with stale beliefs and sees time jump.
        local = n.local_ms(self.now)
        if local > n.state.now:
            self.step(n, Tick(local))
        inbox, n.inbox = n.inbox, []
        for item in inbox:
            self.on_deliver(item)
        if n.disk_due:
            n.disk_due = False
            self.on_disk(n, n.incarnation)
        self.schedule_timer(n)

    def heal_all(self) -> None:
        self.faults_over = True
        self.push(self.now, _PROBE)
        self.cut.clear()
        for n in self.nodes:
            if not n.up:
                self.restart(n)
            elif n.paused:
                self.resume(n)

    # ------------------------------------------------------------------ liveness

    def probe_leader(self) -> None:
        """After the heal, look every heartbeat interval for a leader all nodes know."""
        leader = self.current_leader()
        if leader is not None:
            lid = self.nodes[leader].id
            if all(n.state.leader_id == lid for n in self.nodes):
                self.agreed_at = self.now
                return
        self.push(self.now + self.options.heartbeat_ms * 1000, _PROBE)

    def check_liveness(self) -> None:
        # A leader known to every node at some point of the window: requiring it
        # at the very last instant would fail a healthy cluster whose delayed
        # heartbeat just started an (equally healthy) election.
        if self.agreed_at is None:
            leader = self.current_leader()
            who = "no leader" if leader is None else f"not every node knows {self.nodes[leader].id}"
            raise LivenessViolation(self.report(f"liveness: {who} after the heal", []))
        for op_id in self.workload.acknowledged:
            for n in self.nodes:
                if op_id not in n.kv.done:
                    raise LivenessViolation(
                        self.report(f"liveness: acknowledged op {op_id} not applied on {n.id}", [n])
                    )

    # ------------------------------------------------------------------ reports

    def report(self, what: str, involved: list[_Node], detail: str = "") -> str:
        o = self.options
        lines = [
            f"VIOLATION: {what}",
            f"  seed {o.seed}, virtual time {self.now / 1000:.3f} ms",
            f"  options: {o!r}",
            f"  faults: {self.mix.describe()}",
        ]
        if detail:
            lines.append("  " + detail.replace("\n", "\n  "))
        for n in involved or self.nodes:
            s = n.state
            lines.append(
                f"  last events of {n.id} ({s.role.value}, term {s.hard.term}, "
                f"commit {s.commit_index}, last {s.log.last_index}):"
            )
            for t, ev, actions in n.trace:
                names = ", ".join(type(a).__name__ for a in actions) or "-"
                lines.append(f"    {t / 1000:>10.3f} ms  {_short(ev)}  ->  {names}")
        lines.append(f"  replay: {o.command_line()}")
        return "\n".join(lines)


def _short(ev: object) -> str:
    text = repr(ev)
    return text if len(text) <= 160 else text[:157] + "..."
