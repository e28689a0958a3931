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
``random.Random`` streams (network, faults, workload, disk, features,
membership changes, each node's core seed), so adding a fault kind does not
reshuffle the others. Nothing reads the wall clock, the ``random`` module's
global state, ``id()`` or string hashes; ties in time are broken by the
sequence number. The run folds every step into a trace hash that must match
across processes and PYTHONHASHSEED values.

What a node is made of
----------------------
* the core's :class:`~graft_core.NodeState`;
* a simulated disk (:class:`Disk`): the hard state, the durable snapshot (its
  metadata and the application's bytes), the log after it, and a partially
  received snapshot. Writes (``Persist`` actions and the application's own
  snapshot saves) are queued in order and become durable together after a
  random delay (group commit); a crash keeps a random prefix of the queue --
  what the OS happened to flush -- and forgets a partially received snapshot;
* the application: a :class:`~graft_sim._workload.KVStore`, which the node
  snapshots every ``snapshot_every`` applied entries and replaces on
  ``RestoreSnapshot``. After a crash it is either rebuilt from the log and
  the durable snapshot by the core, or (half the time, when there is a
  snapshot) reloaded from the durable snapshot by the application itself.

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
    ChangeMembership,
    ChangeOp,
    Config,
    EntryKind,
    Event,
    Membership,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    ProposalAccepted,
    ProposalRejected,
    Propose,
    ReadIndex,
    ReadReady,
    ReadRejected,
    Restart,
    RestoreSnapshot,
    Role,
    RoleChanged,
    Send,
    SendSnapshot,
    SnapshotSaved,
    Tick,
    TransferAborted,
    TransferLeadership,
    start,
)
from graft_core import step as core_step
from graft_core._messages import ForwardProposal, ForwardResponse
from graft_core._rand import splitmix64
from graft_sim._checker import Checker, InvariantViolation
from graft_sim._disk import Disk, SaveSnapshot, Write
from graft_sim._faults import Fault, FaultMix, draw_schedule
from graft_sim._linearizability import CheckResult, Verdict, check_history
from graft_sim._workload import KVStore, Workload, encode_op

# One step's record in the trace hash (a precompiled struct: it runs every step).
_pack_trace = struct.Struct("<qqqqqq").pack
_TRACE_BLOCK = 1 << 16

# Queue entry kinds.
_DELIVER, _TIMER, _DISK, _FAULT, _CLIENT, _CLIENT_TIMEOUT, _RESUME, _PROBE, _CHANGE = range(9)
_NORMAL = EntryKind.NORMAL
_LEADER = Role.LEADER

#: How gets are served: through the log, by ReadIndex with a heartbeat round,
#: or by ReadIndex with the leader lease (thesis §6.4, §6.4.1).
READ_MODES = ("log", "index", "lease")
#: Request ids of the membership nemesis' changes (client operations count from 1).
_CHANGE_IDS = 1 << 40
#: Attempts of one membership change (rejections while another is under way).
_CHANGE_TRIES = 30


def safe_lease_skew_ppm(drift_percent: int) -> int:
    """The clock-rate skew (each clock within ``1 +- s`` of true time) leases tolerate.

    A leader's lease lasts ``(1 - drift) * election_timeout`` on its own clock;
    a follower refuses votes for ``election_timeout`` on its clock. The lease
    is safe while the fastest follower clock against the slowest leader clock
    runs below ``1 / (1 - drift)``: ``(1 + s) / (1 - s) <= 1 / (1 - d)``, that
    is ``s <= d / (2 - d)``. Half of that leaves room for clocks that read
    whole milliseconds.
    """
    d = drift_percent
    return 1_000_000 * d // (200 - d) // 2


@attrs.frozen
class SimOptions:
    """Everything that determines a run, together with ``seed``.

    Fields that default to ``None`` are drawn from the seed ("swarm"), like a
    ``None`` fault mix; give a value to pin them.

    Args:
        seed: the one seed of the run.
        nodes: cluster size (the bootstrap voters).
        duration_ms: faults happen in ``[0, duration_ms)`` of virtual time.
        liveness_timeouts: after the faults stop (network healed, nodes
            restarted and resumed), a leader must be known to every member
            and every acknowledged operation applied on every member within
            this many (maximum) election timeouts.
        heartbeat_ms, election_ms: the core's timing (election timeouts are
            drawn from ``[election_ms, 2 * election_ms]``).
        pre_vote, check_quorum: the core's switches.
        faults: the fault mix; ``None`` draws one from the seed (swarm).
        schedule: explicit node/partition faults; ``None`` draws them from the
            seed and the mix. Hypothesis passes explicit schedules to shrink.
        clients, keys, op_interval_ms, client_timeout_ms: the K/V workload.
        max_ops: stop issuing operations after this many (keeps the
            linearizability check cheap); 0 means no workload.
        spare_nodes: servers outside the bootstrap configuration, started with
            ``Config(joining=True)``, that membership changes may add (swarm:
            0-2 when the mix has membership changes, else 0).
        snapshot_every: each node snapshots its application every this many
            applied entries; 0 never (swarm: off half the time).
        snapshot_trailing: ``Config.snapshot_trailing_entries``.
        snapshot_chunk_bytes: ``Config.snapshot_chunk_bytes``.
        reads: how gets are served, one of :data:`READ_MODES` (swarm: any;
            ``"lease"`` only with check-quorum). With ``"lease"`` every clock's
            rate skew is capped at :func:`safe_lease_skew_ppm`: leases assume
            bounded clock drift (thesis §6.4.1).
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
    spare_nodes: int | None = None
    snapshot_every: int | None = None
    snapshot_trailing: int | None = None
    snapshot_chunk_bytes: int | None = None
    reads: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.duration_ms < 0 or self.liveness_timeouts < 1:
            raise ValueError("duration_ms must be >= 0 and liveness_timeouts >= 1")
        for name in ("spare_nodes", "snapshot_every", "snapshot_trailing"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.snapshot_chunk_bytes is not None and self.snapshot_chunk_bytes < 1:
            raise ValueError("snapshot_chunk_bytes must be >= 1")
        if self.reads is not None and self.reads not in READ_MODES:
            raise ValueError(f"reads must be one of {READ_MODES}, got {self.reads!r}")
        if self.reads == "lease" and not self.check_quorum:
            raise ValueError("lease reads need check_quorum (thesis §6.4.1)")

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
            for name, flag in _FEATURE_FLAGS:
                value = getattr(self, name)
                if value is not None:
                    args.append(f"{flag} {value}")
            return "python -m graft_sim " + " ".join(args)
        # repr() quotes strings with single quotes, so double quotes around it.
        return f'python -c "from graft_sim import *; print(Simulation({self!r}).run().summary())"'


#: SimOptions fields with a CLI flag of their own (see ``__main__``).
_FEATURE_FLAGS = (
    ("spare_nodes", "--spare-nodes"),
    ("snapshot_every", "--snapshot-every"),
    ("snapshot_trailing", "--snapshot-trailing"),
    ("snapshot_chunk_bytes", "--snapshot-chunk-bytes"),
    ("reads", "--reads"),
)


def _is_cli_expressible(o: SimOptions) -> bool:
    d = SimOptions()
    return (o.liveness_timeouts, o.clients, o.keys, o.op_interval_ms, o.client_timeout_ms,
            o.max_ops) == (d.liveness_timeouts, d.clients, d.keys, d.op_interval_ms,
                           d.client_timeout_ms, d.max_ops)


@attrs.frozen
class Features:
    """The protocol features of one run: :class:`SimOptions`' swarm fields, resolved."""

    spare_nodes: int
    snapshot_every: int
    snapshot_trailing: int
    snapshot_chunk_bytes: int
    reads: str

    @classmethod
    def resolve(cls, o: SimOptions, mix: FaultMix, rng: random.Random) -> Features:
        """``o``'s fields, each ``None`` drawn from ``rng`` (always drawn, so
        pinning one field does not change the others' draws)."""
        spares = rng.choice((0, 1, 2)) if mix.membership_per_min else 0
        every = rng.choice((3, 10, 50)) if rng.random() < 0.5 else 0
        trailing = rng.choice((0, 2, 20))
        chunk = rng.choice((64, 1000, 1 << 20))
        modes = READ_MODES if o.check_quorum else READ_MODES[:2]
        reads = rng.choice(modes)
        return cls(
            spare_nodes=spares if o.spare_nodes is None else o.spare_nodes,
            snapshot_every=every if o.snapshot_every is None else o.snapshot_every,
            snapshot_trailing=trailing if o.snapshot_trailing is None else o.snapshot_trailing,
            snapshot_chunk_bytes=(
                chunk if o.snapshot_chunk_bytes is None else o.snapshot_chunk_bytes
            ),
            reads=reads if o.reads is None else o.reads,
        )

    def describe(self) -> str:
        parts = [f"reads by {self.reads}"]
        if self.snapshot_every:
            parts.append(
                f"snapshot every {self.snapshot_every} (trailing {self.snapshot_trailing}, "
                f"chunks of {self.snapshot_chunk_bytes} B)"
            )
        if self.spare_nodes:
            parts.append(f"{self.spare_nodes} spare nodes")
        return ", ".join(parts)


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
    features: Features | None = None
    #: Snapshots the nodes' applications saved, and snapshots restored into
    #: an application (installed from a leader, or after a restart).
    snapshots: int = 0
    restores: int = 0
    #: Membership changes the leader accepted; transfers requested / aborted.
    membership_changes: int = 0
    transfers: int = 0
    transfers_aborted: int = 0
    #: Gets answered through ReadIndex.
    index_reads: int = 0

    def summary(self) -> str:
        lin = self.linearizability.verdict.value if self.linearizability else "not checked"
        features = f"; {self.features.describe()}" if self.features else ""
        extra = ""
        if self.snapshots or self.restores:
            extra += f", snapshots saved/restored {self.snapshots}/{self.restores}"
        if self.membership_changes:
            extra += f", {self.membership_changes} membership changes"
        if self.transfers:
            extra += f", transfers {self.transfers} ({self.transfers_aborted} aborted)"
        if self.index_reads:
            extra += f", {self.index_reads} index reads"
        return (
            f"seed {self.options.seed}: {self.steps} steps, {self.messages_delivered} messages, "
            f"{self.elections} elections, {self.commits} commits, ops ok/failed/unknown "
            f"{self.ops_ok}/{self.ops_failed}/{self.ops_unknown}{extra}, history {lin}, "
            f"trace {self.trace_hash}; faults: {self.faults.describe()}, "
            f"{len(self.schedule)} scheduled{features}"
        )


class _Node:
    """One simulated server: the core's state plus what the world knows of it."""

    __slots__ = (
        "applied",
        "config",
        "disk",
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
        "reads",
        "snap_taken",
        "state",
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
        self.disk = Disk()
        #: Writes handed to the disk, not yet durable.
        self.pending: list[Write] = []
        self.disk_busy = False
        self.disk_due = False
        self.inbox: list[Any] = []
        self.kv = KVStore()
        self.applied = 0
        #: The applied index of the last snapshot taken (or restored).
        self.snap_taken = 0
        #: Gets waiting for the store to apply their read index: (index, op id).
        self.reads: list[tuple[int, int]] = []
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
        self.change_rng = random.Random(_split(seed, "membership"))
        self.app_rng = random.Random(_split(seed, "app"))
        self.mix = o.faults if o.faults is not None else FaultMix.draw(
            random.Random(_split(seed, "mix"))
        )
        self.features = f = Features.resolve(o, self.mix, random.Random(_split(seed, "features")))
        total = o.nodes + f.spare_nodes
        self.schedule = (
            o.schedule
            if o.schedule is not None
            else draw_schedule(self.fault_rng, self.mix, total, o.duration_ms, o.election_ms)
        )
        ids = tuple(f"n{i}" for i in range(total))
        voters = ids[: o.nodes]
        skew_rng = random.Random(_split(seed, "skew"))
        skew = self.mix.skew_ppm
        if f.reads == "lease":
            skew = min(skew, safe_lease_skew_ppm(Config(ids[0], voters).lease_drift_percent))
        self.skew_ppm = skew
        self.nodes: list[_Node] = []
        for i, nid in enumerate(ids):
            config = Config(
                nid,
                voters,
                joining=i >= o.nodes,
                seed=_split(seed, f"core/{nid}"),
                heartbeat_interval=o.heartbeat_ms,
                election_timeout=o.election_ms,
                pre_vote=o.pre_vote,
                check_quorum=o.check_quorum,
                snapshot_trailing_entries=f.snapshot_trailing,
                snapshot_chunk_bytes=f.snapshot_chunk_bytes,
                lease_reads=f.reads == "lease",
            )
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
        #: With a bandwidth limit: when each link finishes sending what it has.
        self.link_free: dict[tuple[int, int], int] = {}
        self.hasher = hashlib.blake2b(digest_size=16)
        #: Trace records not yet fed to ``hasher``.
        self.trace_bytes = bytearray()
        self.faults_over = False
        self.steps = 0
        self.sent = 0
        self.delivered = 0
        self.elections = 0
        self.lost_writes = 0
        self.snapshots = 0
        self.restores = 0
        self.transfers = 0
        self.transfers_aborted = 0
        self.agreed_at: int | None = None
        self.agreed_members: tuple[str, ...] = ()
        # The membership nemesis: one change at a time.
        self.change_active = False
        self.change_seq = 0
        self.change_tries: dict[int, int] = {}
        self.changes_accepted = 0
        self.ops_until_us = 0

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
            elif kind == _CHANGE:
                self.try_change(a)
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
            trace_hash=self.trace_hash(),
            features=self.features,
            snapshots=self.snapshots,
            restores=self.restores,
            membership_changes=self.changes_accepted,
            transfers=self.transfers,
            transfers_aborted=self.transfers_aborted,
            index_reads=self.workload.index_reads,
        )

    def trace_hash(self) -> str:
        """The hash of every step so far (what must match across replays)."""
        self.hasher.update(self.trace_bytes)
        self.trace_bytes.clear()
        return self.hasher.hexdigest()

    # ------------------------------------------------------------------ stepping

    def step(self, n: _Node, event: Event) -> None:
        """Step node ``n`` with the real core and carry out its actions."""
        old = n.state
        new, actions = self.step_fn(old, event)
        n.state = new
        self.steps += 1
        n.trace.append((self.now, event, actions))
        # The trace hash is fed in blocks (blake2b of the concatenation is the
        # same however it is cut): one bytearray append per step.
        buf = self.trace_bytes
        buf += _pack_trace(
            self.now, n.idx, new.hard.term, new.commit_index, new.log.last_index, len(actions)
        )
        if len(buf) >= _TRACE_BLOCK:
            self.hasher.update(buf)
            buf.clear()
        self.checker.after_step(n, event, old, new, actions)
        for a in actions:
            # Exact-type test first: nearly every action is a Send, and one
            # ``is`` costs less than the isinstance chain below.
            if type(a) is Send or isinstance(a, Send):
                self.send(n, a.message)
            elif isinstance(a, Persist):
                self.enqueue_write(n, a)
            elif isinstance(a, Apply):
                self.on_apply(n, a)
            elif isinstance(a, SendSnapshot):
                self.on_send_snapshot(n, a)
            elif isinstance(a, RestoreSnapshot):
                self.on_restore(n, a)
            elif isinstance(a, ReadReady):
                self.on_read_ready(n, a)
            elif isinstance(a, ProposalRejected | ReadRejected):
                if a.request_id >= _CHANGE_IDS:
                    self.on_change_rejected(a.request_id)
                else:
                    self.on_client_rejected(n, a.request_id)
            elif isinstance(a, ProposalAccepted):
                if self.change_tries.pop(a.request_id, None) is not None:
                    self.changes_accepted += 1
                    self.change_active = False
            elif isinstance(a, RoleChanged) and a.role is _LEADER:
                self.elections += 1
            elif isinstance(a, TransferAborted):
                self.transfers_aborted += 1
        self.schedule_timer(n)

    def schedule_timer(self, n: _Node) -> None:
        # Only an earlier deadline needs a new queue entry: a later one is
        # found when the current entry fires (most resets move it later).
        # A deadline already past (a node's clock only moves when it is
        # stepped) fires now: virtual time never goes back.
        # (virtual_us inlined: this runs after every step.)
        t = -(-n.state.next_deadline() * 1_000_000_000 // n.rate_ppm)
        if t < self.now:
            t = self.now
        if n.timer_at is None or t < n.timer_at:
            n.timer_at = t
            self.push(t, _TIMER, n, n.incarnation)

    def catch_up_clock(self, n: _Node) -> None:
        """Tick ``n`` to the present, as a shell does before handing it a request."""
        local = n.local_ms(self.now)
        if local > n.state.now:
            self.step(n, Tick(local))

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
        sent = self.now
        if mix.link_bytes_per_ms:
            # The link sends one message after another at its bandwidth.
            link = (n.idx, dst)
            sent = max(sent, self.link_free.get(link, 0))
            sent += _wire_bytes(m) * 1000 // mix.link_bytes_per_ms
            self.link_free[link] = sent
        for _ in range(copies):
            # randint(a, b), spelled out the way CPython draws it
            # (Random._randbelow_with_getrandbits: reject draws of
            # width.bit_length() bits until one is below width), so the stream
            # is the same; this runs for every message and saves three Python
            # calls.
            width = mix.base_max_us - mix.base_min_us + 1
            if width < 1:
                rng.randint(mix.base_min_us, mix.base_max_us)  # raises, as before
            bits = width.bit_length()
            r = rng.getrandbits(bits)
            while r >= width:
                r = rng.getrandbits(bits)
            latency = mix.base_min_us + r
            if mix.tail_ppm and rng.randrange(1_000_000) < mix.tail_ppm:
                latency += rng.randint(0, mix.tail_max_us)
            self.push(sent + latency, _DELIVER, (n.idx, dst, m))

    def on_deliver(self, item: tuple[int, int, Any]) -> None:
        src, dst, m = item
        if self.cut and (src, dst) in self.cut:
            return
        n = self.nodes[dst]
        if not n.up:
            return
        if n.paused:
            n.inbox.append(item)
            return
        self.delivered += 1
        # (local_ms inlined: this runs for every message.)
        self.step(n, MessageReceived(m, self.now * n.rate_ppm // 1_000_000_000))

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

    # ------------------------------------------------------------------ disk

    def enqueue_write(self, n: _Node, w: Write) -> None:
        n.pending.append(w)
        if not n.disk_busy:
            n.disk_busy = True
            delay = self.disk_rng.randint(self.mix.disk_min_us, self.mix.disk_max_us)
            self.push(self.now + delay, _DISK, n, n.incarnation)

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
        seq = 0
        saved: list[int] = []
        for w in n.pending:
            problem = n.disk.write(w)
            if problem:
                self.checker.fail(f"{n.id}: {problem}", [n])
            if isinstance(w, Persist):
                seq = w.seq
            else:
                saved.append(w.meta.index)
        n.pending.clear()
        if seq:
            self.step(n, PersistCompleted(seq, max(n.local_ms(self.now), n.state.now)))
        for index in saved:
            self.step(n, SnapshotSaved(index))

    # ------------------------------------------------------------------ the application

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
        self.serve_reads(n)
        every = self.features.snapshot_every
        if every and n.applied - n.snap_taken >= every:
            self.take_snapshot(n)

    def take_snapshot(self, n: _Node) -> None:
        """The application saves its state as of its applied index (Raft §7)."""
        meta = n.state.snapshot_meta(n.applied)
        data = n.kv.snapshot()
        self.checker.on_snapshot_taken(n, meta, data)
        n.snap_taken = n.applied
        self.snapshots += 1
        self.enqueue_write(n, SaveSnapshot(meta, data))

    def on_send_snapshot(self, n: _Node, a: SendSnapshot) -> None:
        m = a.message
        disk = n.disk
        if disk.snapshot != m.meta:
            return  # replaced by a newer one: the leader starts over with it
        data = disk.snapshot_data[m.offset : m.offset + a.max_bytes]
        done = m.offset + len(data) >= len(disk.snapshot_data)
        self.send(n, attrs.evolve(m, data=data, done=done))

    def on_restore(self, n: _Node, a: RestoreSnapshot) -> None:
        # The checker already compared a.meta with the disk's snapshot.
        n.kv = KVStore.restore(n.disk.snapshot_data)
        n.applied = n.snap_taken = a.meta.index
        self.restores += 1
        # Clients waiting here on operations the snapshot contains get their
        # answer from the session table, as from an Apply.
        wl = self.workload
        for op_id in sorted(wl.pending):
            op = wl.pending[op_id]
            if op.node == n.idx and op_id in n.kv.done:
                wl.completed(op_id, self.now, n.kv.done[op_id])
                self.push(self.now + wl.next_interval(), _CLIENT, op.client)
        self.serve_reads(n)

    # ------------------------------------------------------------------ clients

    def on_client(self, client: int) -> None:
        wl = self.workload
        if client in wl.busy or self.now > self.ops_until_us or wl.next_op >= self.options.max_ops:
            return
        # A client talks to servers that are members as far as they know
        # (service discovery would not list a removed or joining server).
        candidates = [
            n for n in self.nodes if n.up and not n.paused and n.state.membership.is_member(n.id)
        ]
        if not candidates:
            self.push(self.now + wl.next_interval(), _CLIENT, client)
            return
        n = candidates[wl.rng.randrange(len(candidates))]
        op = wl.new_op(client, n.idx, self.now)
        self.push(op.deadline_us, _CLIENT_TIMEOUT, op.op_id)
        # Catch the node's clock up first, as a shell would before a request.
        self.catch_up_clock(n)
        if op.kind == "get" and self.features.reads != "log":
            self.checker.on_read_issued(op.op_id)
            self.step(n, ReadIndex(op.op_id))
        else:
            data = encode_op(op.op_id, op.kind, op.key, op.value, op.expected)
            self.step(n, Propose(op.op_id, data))

    def on_client_rejected(self, n: _Node, request_id: int) -> None:
        wl = self.workload
        op = wl.pending.get(request_id)
        if op is not None and op.node == n.idx:
            wl.failed(request_id)
            # Back off before retrying: no leader is known yet.
            backoff = max(wl.next_interval(), self.options.election_ms * 250)
            self.push(self.now + backoff, _CLIENT, op.client)

    def on_read_ready(self, n: _Node, a: ReadReady) -> None:
        op = self.workload.pending.get(a.request_id)
        if op is None or op.node != n.idx:
            return  # timed out meanwhile
        n.reads.append((a.index, a.request_id))
        self.serve_reads(n)

    def serve_reads(self, n: _Node) -> None:
        """Answer the gets whose read index the store has applied (thesis §6.4 step 4)."""
        if not n.reads:
            return
        waiting = []
        wl = self.workload
        for index, op_id in n.reads:
            if index > n.applied:
                waiting.append((index, op_id))
                continue
            op = wl.pending.get(op_id)
            if op is None:
                continue
            wl.completed(op_id, self.now, n.kv.data.get(op.key), via_read_index=True)
            self.push(self.now + wl.next_interval(), _CLIENT, op.client)
        n.reads = waiting

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
        elif kind == "membership":
            if not self.change_active:
                self.change_active = True
                self.try_change(_CHANGE_TRIES)
        elif kind == "transfer" and (nodes or not f.nodes):
            self.transfer(self.nodes[nodes[0]].id if nodes else None)

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

    def reachable_leader(self) -> _Node | None:
        """The current leader, if it can be asked something now (up, not paused)."""
        i = self.current_leader()
        if i is None or self.nodes[i].paused:
            return None
        return self.nodes[i]

    def crash(self, n: _Node) -> None:
        if not n.up:
            return
        n.up = False
        n.paused = False
        n.inbox.clear()
        # Writes handed to the disk but not acknowledged: the OS may have
        # flushed any prefix of them before the crash.
        keep = self.disk_rng.randint(0, len(n.pending))
        for w in n.pending[:keep]:
            problem = n.disk.write(w)
            if problem:
                self.checker.fail(f"{n.id}: {problem}", [n])
        self.lost_writes += len(n.pending) - keep
        n.pending.clear()
        # A partly received snapshot is of no use after a restart: the leader
        # sends it again from the start.
        n.disk.incoming = None
        n.reads.clear()
        n.disk_busy = n.disk_due = False
        n.timer_at = None
        n.incarnation += 1

    def restart(self, n: _Node) -> None:
        if n.up:
            return
        n.up = True
        disk = n.disk
        snap = disk.snapshot
        # The application's state was in memory. Half the time (when there is
        # a snapshot) it reloads the durable snapshot itself and says so with
        # applied_index; otherwise the core restores it (RestoreSnapshot) and
        # replays the log after it.
        if snap is not None and self.app_rng.random() < 0.5:
            n.kv = KVStore.restore(disk.snapshot_data)
            n.applied = snap.index
        else:
            n.kv = KVStore()
            n.applied = 0
        n.snap_taken = n.applied
        self.checker.before_restart(n)
        self.step(n, Restart(max(n.local_ms(self.now), n.state.now), disk.durable(), n.applied))

    def resume(self, n: _Node) -> None:
        if not n.paused or not n.up:
            return
        n.paused = False
        # The node wakes with stale beliefs and sees time jump.
        self.catch_up_clock(n)
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

    # ------------------------------------------------------------------ nemeses

    def try_change(self, tries: int) -> None:
        """Ask the leader for a random valid membership change (thesis §4)."""
        if self.faults_over or tries <= 0:
            self.change_active = False
            return
        leader = self.reachable_leader()
        if leader is None:
            self.push(self.now + self.options.heartbeat_ms * 1000, _CHANGE, tries - 1)
            return
        ops = self.draw_change(leader.state.membership)
        if not ops:
            self.change_active = False
            return
        self.change_seq += 1
        request_id = _CHANGE_IDS + self.change_seq
        self.change_tries[request_id] = tries
        self.catch_up_clock(leader)
        self.step(leader, ChangeMembership(request_id, ops))

    def on_change_rejected(self, request_id: int) -> None:
        tries = self.change_tries.pop(request_id, None)
        if tries is not None:
            # CHANGE_IN_PROGRESS, NOT_READY, TRANSFERRING: the leader is busy;
            # INVALID_CHANGE: its configuration moved. Ask again shortly.
            self.push(self.now + self.options.heartbeat_ms * 1000, _CHANGE, tries - 1)

    def draw_change(self, ms: Membership) -> tuple[ChangeOp, ...]:
        """A valid change of ``ms`` (not joint): add, promote, demote, remove, or replace.

        Never leaves fewer than one voter. Replacing one or two voters at once
        moves two or four voters, so it goes through joint consensus.
        """
        rng = self.change_rng
        voters = list(ms.voters)
        learners = list(ms.learners)
        others = [n.id for n in self.nodes if not ms.is_member(n.id)]
        nonvoters = learners + others
        kinds = []
        if others:
            kinds += ["add_learner", "add_voter"]
        if learners:
            kinds += ["promote", "remove_learner"]
        if len(voters) > 1:
            kinds += ["remove_voter", "demote"]
        if nonvoters:
            kinds.append("replace")
        if not kinds:
            return ()
        kind = rng.choice(kinds)
        if kind == "add_learner":
            return (ChangeOp("add_learner", rng.choice(others)),)
        if kind == "add_voter":
            return (ChangeOp("add_voter", rng.choice(others)),)
        if kind == "promote":
            return (ChangeOp("add_voter", rng.choice(learners)),)
        if kind == "remove_learner":
            return (ChangeOp("remove", rng.choice(learners)),)
        if kind == "remove_voter":
            return (ChangeOp("remove", rng.choice(voters)),)
        if kind == "demote":
            return (ChangeOp("add_learner", rng.choice(voters)),)
        k = rng.randint(1, min(2, len(voters), len(nonvoters)))
        out = rng.sample(voters, k)
        into = rng.sample(nonvoters, k)
        return (
            *(ChangeOp(rng.choice(("remove", "add_learner")), v) for v in sorted(out)),
            *(ChangeOp("add_voter", v) for v in sorted(into)),
        )

    def transfer(self, target: str | None) -> None:
        """Ask the leader to hand leadership to ``target`` (thesis §3.10)."""
        leader = self.reachable_leader()
        if leader is None:
            return
        self.transfers += 1
        self.catch_up_clock(leader)
        self.step(leader, TransferLeadership(target))

    # ------------------------------------------------------------------ liveness

    def members_of(self, leader: _Node) -> list[_Node]:
        ms = leader.state.membership
        return [self.nodes[self.index_of[m]] for m in ms.members if m in self.index_of]

    def probe_leader(self) -> None:
        """After the heal, look every heartbeat interval for a leader all members know."""
        leader = self.current_leader()
        if leader is not None:
            lead = self.nodes[leader]
            members = self.members_of(lead)
            if all(n.state.leader_id == lead.id for n in members):
                self.agreed_at = self.now
                self.agreed_members = tuple(n.id for n in members)
                return
        self.push(self.now + self.options.heartbeat_ms * 1000, _PROBE)

    def check_liveness(self) -> None:
        # A leader known to every member at some point of the window: requiring
        # it at the very last instant would fail a healthy cluster whose delayed
        # heartbeat just started an (equally healthy) election. Servers removed
        # from the configuration keep running but are not asked anything.
        if self.agreed_at is None:
            leader = self.current_leader()
            who = (
                "no leader" if leader is None else f"not every member knows {self.nodes[leader].id}"
            )
            raise LivenessViolation(self.report(f"liveness: {who} after the heal", []))
        leader = self.current_leader()
        if leader is not None:
            members = self.members_of(self.nodes[leader])
        else:
            members = [self.nodes[self.index_of[m]] for m in self.agreed_members]
        for op_id in self.workload.acknowledged:
            for n in members:
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
            f"  features: {self.features.describe()}",
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


def _wire_bytes(m: object) -> int:
    """About what ``m`` takes on the wire: a header, plus payloads."""
    size = 64
    entries = getattr(m, "entries", None)
    if entries:
        size += sum(16 + len(e.data) for e in entries)
    data = getattr(m, "data", None)
    if isinstance(data, bytes):
        size += len(data)
    return size


def _short(ev: object) -> str:
    text = repr(ev)
    return text if len(text) <= 160 else text[:157] + "..."
