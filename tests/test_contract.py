"""The step contract of graft_core (see ``graft_core/__init__.py`` and ``_actions.py``).

* **Purity**: no module of graft_core imports anything that does I/O, reads a
  clock, draws global randomness or starts threads.
* **Determinism and immutability**: a Hypothesis state machine drives a small
  cluster through random events (ticks, deliveries, drops, duplicates,
  proposals, partial persistence, crashes and restarts). Every single
  ``step`` is run twice and must give equal results, and must leave its input
  state equal to a deep copy taken before the call. After every step the Raft
  safety properties hold (Election Safety, State Machine Safety, monotonic
  term and commit index, in-order application) and so does the ordering
  contract: a vote grant or an AppendEntries success is never sent before
  every Persist issued before it is durable.
* **Determinism across processes**: a scripted run gives the same action trace
  under different ``PYTHONHASHSEED`` values.
* **Idle time is free**: between ``next_deadline()`` s, a Tick changes nothing
  but ``now``.
"""

from __future__ import annotations

import ast
import copy
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import graft_core
from graft_core import (
    Action,
    AppendResponse,
    Apply,
    Config,
    DurableState,
    Entry,
    Event,
    HardState,
    Message,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    Propose,
    Restart,
    Role,
    RoleChanged,
    Send,
    Tick,
    VoteResponse,
    start,
    step,
)
from graft_sim import LocalCluster

# ---------------------------------------------------------------------------
# Purity: what graft_core may import.

#: Modules whose use would make ``step`` impure: I/O, clocks, global
#: randomness, threads, processes. ``importlib`` is the way around this scan.
FORBIDDEN_MODULES = frozenset(
    {
        "trio",
        "asyncio",
        "socket",
        "time",
        "random",
        "os",
        "threading",
        "datetime",
        "secrets",
        "uuid",
        "selectors",
        "subprocess",
        "importlib",
    }
)


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every import of a forbidden module (or of one of its submodules) in ``source``."""
    hits: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    hits.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            # Relative imports (level > 0) stay inside the package.
            if (
                node.level == 0
                and node.module is not None
                and node.module.split(".")[0] in FORBIDDEN_MODULES
            ):
                hits.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            hits.append(f"{filename}:{node.lineno}: __import__(...)")
    return hits


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import os", True),
        ("import os.path", True),
        ("import time as clock", True),
        ("from time import monotonic", True),
        ("from os.path import join", True),
        ("import json, random", True),
        ("def f():\n    import threading\n", True),
        ("try:\n    import trio\nexcept ImportError:\n    pass\n", True),
        ("x = __import__('socket')", True),
        ("from datetime import datetime", True),
        ("import attrs", False),
        ("from graft_core._log import RaftLog", False),
        ("from . import _log", False),
        ("import timeit_not_time", False),
        ("from collections.abc import Iterable", False),
    ],
)
def test_purity_scanner_recognises_forbidden_imports(source: str, flagged: bool) -> None:
    """Self-check of the purity scan below (graft_core contract: "does no I/O, reads no clock").

    It must flag every forbidden form and nothing else, or that test proves nothing.
    """
    assert bool(forbidden_imports(source)) is flagged


def test_graft_core_imports_nothing_impure() -> None:
    """Core contract: ``step`` does no I/O, reads no clock, uses no global randomness.

    etcd-io/raft's "time is logical ticks; the core never reads a clock"; the
    graft_core docstring: "does no I/O, reads no clock, uses no global
    randomness, starts no threads".
    """
    package = Path(graft_core.__file__).parent
    files = sorted(package.glob("*.py"))
    assert any(f.name == "_node.py" for f in files), f"scanned the wrong directory: {package}"
    hits: list[str] = []
    for path in files:
        hits.extend(forbidden_imports(path.read_text(encoding="utf-8"), path.name))
    assert hits == [], "graft_core imports impure modules:\n" + "\n".join(hits)


# ---------------------------------------------------------------------------
# The cluster state machine.

IDS = ("n1", "n2", "n3")
HEARTBEAT = 3
ELECTION_TIMEOUT = 10


@attrs.define
class Disk:
    """What one node's storage holds: exactly the Persists it completed, applied as documented."""

    hard_state: HardState = attrs.Factory(HardState)
    entries: list[Entry] = attrs.Factory(list)

    def write(self, p: Persist) -> None:
        # The Persist docstring: truncate, then store entries at first_index,
        # first_index + 1, ..., then store the hard state.
        if p.truncate_from is not None:
            del self.entries[p.truncate_from - 1 :]
        assert p.first_index >= 1
        assert not p.entries or p.first_index <= len(self.entries) + 1, (
            f"Persist {p.seq} would leave a gap: first_index {p.first_index}, "
            f"{len(self.entries)} entries stored"
        )
        for k, e in enumerate(p.entries):
            i = p.first_index + k
            if i <= len(self.entries):
                self.entries[i - 1] = e
            else:
                self.entries.append(e)
        if p.hard_state is not None:
            self.hard_state = p.hard_state

    def durable(self) -> DurableState:
        return DurableState(self.hard_state, tuple(self.entries))


def promises_durability(m: Message) -> bool:
    """Messages that promise durable state (the ``_actions`` ordering contract)."""
    if isinstance(m, VoteResponse):
        return m.granted and not m.pre_vote
    return isinstance(m, AppendResponse) and m.success


def log_terms(s: NodeState) -> list[int]:
    return [e.term for e in s.log.entries]


def check_node_invariants(s: NodeState) -> None:
    """Per-node invariants that hold after any step."""
    terms = log_terms(s)
    # Leaders only append, so terms along a log never decrease (Raft §5.3).
    assert terms == sorted(terms), f"log terms decrease: {terms}"
    assert not terms or terms[-1] <= s.term, f"entry term {terms[-1]} after current term {s.term}"
    assert s.commit_index <= s.last_index, (s.commit_index, s.last_index)
    assert 0 <= s.applied_index <= s.commit_index, (s.applied_index, s.commit_index)
    assert s.persisted_seq <= s.persist_seq
    assert s.voted_for is None or s.voted_for in s.config.voters


class ClusterContract(RuleBasedStateMachine):
    """Three nodes driven by random events; every step is checked against the contract.

    Checks Raft §5.2 Election Safety, §5.4.3 State Machine Safety, §5.1/§5.3
    monotonic term and commit index, Figure 2's "respond to RPCs" only after
    stable storage is updated (the ``_actions`` ordering contract), and the
    graft_core contract's purity: equal results for equal inputs, input untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, NodeState] = {}
        self.disks: dict[str, Disk] = {}
        self.pending: dict[str, list[Persist]] = {}
        #: The last Persist seq each node issued / the shell acknowledged.
        self.issued: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        #: Held durable-promising messages: (message, every Persist seq issued
        #: up to and including the step that produced it).
        self.held_since: dict[str, list[tuple[Message, int]]] = {}
        self.in_flight: list[Message] = []
        self.down: set[str] = set()
        #: How far each node's application has applied (this incarnation).
        self.app_applied: dict[str, int] = {}
        #: Election Safety: the leader of each term, over the whole run.
        self.leaders: dict[int, str] = {}
        #: State Machine Safety: the entry applied at each index, by anyone.
        self.applied_entries: dict[int, Entry] = {}

    @initialize(
        seed=st.integers(0, 2**32),
        pre_vote=st.booleans(),
        check_quorum=st.booleans(),
    )
    def setup(self, seed: int, pre_vote: bool, check_quorum: bool) -> None:
        for k, nid in enumerate(IDS):
            cfg = Config(
                nid,
                IDS,
                seed=seed + k,
                heartbeat_interval=HEARTBEAT,
                election_timeout=ELECTION_TIMEOUT,
                pre_vote=pre_vote,
                check_quorum=check_quorum,
                max_entries_per_message=3,
                max_inflight=2,
            )
            self.nodes[nid] = start(cfg)
            self.disks[nid] = Disk()
            self.pending[nid] = []
            self.issued[nid] = 0
            self.acked[nid] = 0
            self.held_since[nid] = []
            self.app_applied[nid] = 0

    # ------------------------------------------------------------------ the checked step

    def checked_step(self, nid: str, event: Event) -> tuple[Action, ...]:
        """Step ``nid`` with ``event``, check the contract, carry out the actions."""
        old = self.nodes[nid]
        snapshot = copy.deepcopy(old)
        new, actions = step(old, event)
        # Pure and deterministic: the same (state, event) gives an equal result...
        new2, actions2 = step(old, event)
        assert new == new2, f"step({event!r}) is not deterministic (state)"
        assert actions == actions2, f"step({event!r}) is not deterministic (actions)"
        # ...and the state passed in is never modified.
        assert old == snapshot, f"step({event!r}) modified its input state"
        assert isinstance(new, NodeState) and isinstance(actions, tuple)

        restarted = isinstance(event, Restart)
        if isinstance(event, Restart):
            self.issued[nid] = self.acked[nid] = 0
            self.held_since[nid] = []
            self.app_applied[nid] = event.applied_index
            assert new.hard == self.disks[nid].hard_state
        else:
            # A live node's term and commit index never go back (Raft §5.1, §5.3).
            assert new.term >= old.term, f"{nid}: term went back {old.term} -> {new.term}"
            assert new.commit_index >= old.commit_index, (
                f"{nid}: commit index went back {old.commit_index} -> {new.commit_index}"
            )
        self.nodes[nid] = new

        # Persists first: only their relative order is meaningful (contract rule
        # 4), and a message produced in this step comes after this step's Persist.
        for a in actions:
            if isinstance(a, Persist):
                assert a.seq == self.issued[nid] + 1, f"{nid}: Persist seq {a.seq} out of order"
                self.issued[nid] = a.seq
                if a.truncate_from is not None:
                    # Raft §5.3 / Figure 3 (Leader Completeness): committed entries
                    # are never truncated.
                    assert a.truncate_from > old.commit_index or restarted, (
                        f"{nid}: truncating from {a.truncate_from} <= commit {old.commit_index}"
                    )
                self.pending[nid].append(a)
        held = self.held_since[nid]
        for a in actions:
            if isinstance(a, Send):
                m = a.message
                assert m.src == nid
                if promises_durability(m):
                    self.check_durable_before_send(nid, m)
                self.in_flight.append(m)
            elif isinstance(a, Apply):
                self.check_apply(nid, a)
        # Record the durable-promising messages the node holds back now, with
        # every Persist issued so far: they may not leave before those are durable.
        for _, m in new.held:
            if promises_durability(m):
                tracked = sum(1 for x, _ in held if x == m)
                wanted = sum(1 for _, x in new.held if x == m)
                held.extend((m, self.issued[nid]) for _ in range(wanted - tracked))

        assert new.persist_seq == self.issued[nid]
        check_node_invariants(new)
        if new.role is Role.LEADER:
            # Election Safety (Raft §5.2): at most one leader per term.
            first = self.leaders.setdefault(new.term, nid)
            assert first == nid, f"two leaders in term {new.term}: {first} and {nid}"
        return actions

    def check_durable_before_send(self, nid: str, m: Message) -> None:
        """Ordering contract (Raft Figure 2: respond to RPCs only after stable storage)."""
        held = self.held_since[nid]
        # Produced in this very step (after its Persist), unless it was held.
        gen = self.issued[nid]
        for k, (x, since) in enumerate(held):
            if x == m:
                gen = since
                del held[k]
                break
        assert self.acked[nid] >= gen, (
            f"{nid} sent {m!r} with Persists up to {gen} issued before it "
            f"but only {self.acked[nid]} durable"
        )
        disk = self.disks[nid]
        if disk.hard_state.term == m.term:
            if isinstance(m, VoteResponse):
                assert disk.hard_state.voted_for == m.dst, f"{nid} granted {m!r}; disk: {disk}"
            else:
                assert isinstance(m, AppendResponse)
                assert len(disk.entries) >= m.index, (
                    f"{nid} acknowledged index {m.index} with {len(disk.entries)} entries durable"
                )
        else:
            # A later term already durable implies this one was, in order.
            assert disk.hard_state.term > m.term, f"{nid} sent {m!r} before its term was durable"

    def check_apply(self, nid: str, a: Apply) -> None:
        # Contract rule 3: in order, exactly once, only committed entries the
        # node itself persisted.
        assert a.entries, "an empty Apply"
        assert a.first_index == self.app_applied[nid] + 1, (
            f"{nid}: Apply at {a.first_index} after applying up to {self.app_applied[nid]}"
        )
        disk = self.disks[nid].entries
        for k, e in enumerate(a.entries):
            i = a.first_index + k
            assert i <= len(disk) and disk[i - 1] == e, f"{nid} applied non-durable entry {i}"
            # State Machine Safety (Raft §5.4.3): no two nodes apply different
            # entries at the same index.
            first = self.applied_entries.setdefault(i, e)
            assert first == e, f"index {i}: {nid} applied {e!r}, another node applied {first!r}"
        self.app_applied[nid] += len(a.entries)

    def live(self, nid: str) -> bool:
        return nid not in self.down

    # ------------------------------------------------------------------ rules

    @rule(nid=st.sampled_from(IDS), delta=st.integers(0, 3 * ELECTION_TIMEOUT))
    def tick(self, nid: str, delta: int) -> None:
        if self.live(nid):
            self.checked_step(nid, Tick(self.nodes[nid].now + delta))

    @rule(nid=st.sampled_from(IDS), offset=st.integers(0, 10**6))
    def tick_before_deadline(self, nid: str, offset: int) -> None:
        """Graft contract: nothing happens between deadlines; a Tick only moves ``now``."""
        if not self.live(nid):
            return
        old = self.nodes[nid]
        deadline = old.next_deadline()
        if deadline <= old.now:
            return
        now = old.now + offset % (deadline - old.now)
        actions = self.checked_step(nid, Tick(now))
        assert actions == (), f"Tick({now}) before deadline {deadline} produced {actions}"
        assert self.nodes[nid] == attrs.evolve(old, now=now)

    @precondition(lambda self: self.in_flight)
    @rule(k=st.integers(0, 10**6))
    def deliver(self, k: int) -> None:
        m = self.in_flight.pop(k % len(self.in_flight))
        if self.live(m.dst):
            self.checked_step(m.dst, MessageReceived(m))

    @precondition(lambda self: self.in_flight)
    @rule(k=st.integers(0, 10**6))
    def duplicate(self, k: int) -> None:
        m = self.in_flight[k % len(self.in_flight)]
        if self.live(m.dst):
            self.checked_step(m.dst, MessageReceived(m))

    @precondition(lambda self: self.in_flight)
    @rule(k=st.integers(0, 10**6))
    def drop(self, k: int) -> None:
        self.in_flight.pop(k % len(self.in_flight))

    @rule()
    def deliver_round(self) -> None:
        batch, self.in_flight = self.in_flight, []
        for m in batch:
            if self.live(m.dst):
                self.checked_step(m.dst, MessageReceived(m))

    @rule(nid=st.sampled_from(IDS), request_id=st.integers(0, 99), data=st.binary(max_size=6))
    def propose(self, nid: str, request_id: int, data: bytes) -> None:
        if self.live(nid):
            self.checked_step(nid, Propose(request_id, data))

    @rule(nid=st.sampled_from(IDS), count=st.integers(1, 4))
    def complete_persists(self, nid: str, count: int) -> None:
        pending = self.pending[nid]
        if not self.live(nid) or not pending:
            return
        done, self.pending[nid] = pending[:count], pending[count:]
        for p in done:
            self.disks[nid].write(p)
        self.acked[nid] = done[-1].seq
        self.checked_step(nid, PersistCompleted(done[-1].seq))
        if not self.pending[nid]:
            # Every Persist durable: storage holds exactly the node's state.
            s = self.nodes[nid]
            disk = self.disks[nid]
            assert disk.entries == list(s.log.entries), f"{nid}: storage and log differ"
            assert disk.hard_state == s.hard, f"{nid}: stored {disk.hard_state}, state {s.hard}"

    @precondition(lambda self: any(self.pending.values()) or self.in_flight)
    @rule()
    def settle(self) -> None:
        """Every live node's writes complete, then everything in flight is delivered."""
        for nid in IDS:
            if self.live(nid) and self.pending[nid]:
                self.complete_persists(nid, len(self.pending[nid]))
        self.deliver_round()

    @precondition(lambda self: len(self.down) < 2)
    @rule(nid=st.sampled_from(IDS), roll=st.integers(0, 3))
    def crash(self, nid: str, roll: int) -> None:
        # Rarer than the other events (roll), so that runs also make progress.
        if roll == 0:
            # Unacknowledged writes are lost with the node.
            self.down.add(nid)
            self.pending[nid] = []

    @precondition(lambda self: self.down)
    @rule(k=st.integers(0, 2), keep_applied=st.booleans())
    def restart(self, k: int, keep_applied: bool) -> None:
        down = sorted(self.down)
        nid = down[k % len(down)]
        self.down.discard(nid)
        # The application either remembers how far it applied or starts over.
        applied = self.app_applied[nid] if keep_applied else 0
        old = self.nodes[nid]
        self.checked_step(nid, Restart(old.now, self.disks[nid].durable(), applied))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def election_safety(self) -> None:
        """Raft §5.2: at most one leader per term (live nodes, right now)."""
        leaders = [
            (s.term, nid)
            for nid, s in self.nodes.items()
            if self.live(nid) and s.role is Role.LEADER
        ]
        terms = [t for t, _ in leaders]
        assert len(terms) == len(set(terms)), f"two leaders in one term: {leaders}"

    @invariant()
    def log_matching_of_applied(self) -> None:
        """Raft §5.4.3: whatever a live node applied is what it holds at that index."""
        for nid, s in self.nodes.items():
            if self.live(nid):
                for i in range(1, self.app_applied[nid] + 1):
                    assert s.log.entry_at(i) == self.applied_entries[i]


ClusterContract.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestClusterContract = ClusterContract.TestCase


# ---------------------------------------------------------------------------
# Determinism across processes.

_SCENARIO = r"""
import hashlib
from graft_sim import LocalCluster

trace = []
ids = ("alpha", "bravo", "charlie", "delta", "echo")
c = LocalCluster(ids, seed=7, on_action=lambda nid, a: trace.append((nid, a)))
leader = c.elect()
for i in range(10):
    c.propose(leader, b"first-%d" % i)
c.deliver_all()
others = [n for n in ids if n != leader]
c.partition([leader, others[0]], others[1:])
c.propose(leader, b"lost")
c.run(c.now + 5000)
c.heal()
c.run(c.now + 3000)
leader2 = c.elect()
for i in range(5):
    c.propose(others[0], b"forwarded-%d" % i)
    c.propose(leader2, b"direct-%d" % i)
c.deliver_all()
c.crash(leader2)
c.run(c.now + 5000)
c.restart(leader2)
c.run(c.now + 5000)
applies = sum(1 for _, a in trace if type(a).__name__ == "Apply")
for nid in ids:
    s = c.nodes[nid]
    trace.append((nid, (s.term, s.commit_index, s.role, tuple(s.log.entries))))
print(len(trace), applies, hashlib.sha256(repr(trace).encode()).hexdigest())
"""


def _run_scenario(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", _SCENARIO],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_same_trace_under_different_hash_seeds() -> None:
    """Graft contract: ``step`` is deterministic -- no hidden dependence on ``hash()`` order.

    Python's str hashing changes with PYTHONHASHSEED, so anything that lets
    set/dict iteration order or ``hash(str)`` leak into the protocol (e.g.
    into election timeouts, Raft §5.2) shows up as a different trace.
    """
    results = [_run_scenario(seed) for seed in ("1", "2", "3")]
    n_actions, n_applies, _ = results[0].split()
    assert int(n_actions) > 100 and int(n_applies) > 0, f"scenario did too little: {results[0]}"
    assert results[1] == results[0]
    assert results[2] == results[0]


# ---------------------------------------------------------------------------
# Idle time, on a scripted run.


def _assert_quiet_until_deadline(s: NodeState) -> int:
    """Tick ``s`` at several times before its deadline; return how many were checked."""
    deadline = s.next_deadline()
    if deadline <= s.now:
        return 0
    span = deadline - s.now
    checked = 0
    for now in sorted({s.now, s.now + span // 3, s.now + span // 2, deadline - 1}):
        new, actions = step(s, Tick(now))
        assert not any(isinstance(a, Send) for a in actions), (s, now, actions)
        assert actions == (), (now, deadline, actions)
        assert new == attrs.evolve(s, now=now), f"Tick({now}) before {deadline} changed state"
        checked += 1
    # The deadline itself is where something happens (for a follower: an
    # election, Raft §5.2; for a leader: a heartbeat).
    at, at_actions = step(s, Tick(deadline))
    assert at_actions or at != attrs.evolve(s, now=deadline), (
        f"Tick at next_deadline() {deadline} did nothing ({s.role})"
    )
    return checked


@pytest.mark.parametrize("auto_persist", [True, False])
def test_nothing_happens_between_deadlines(auto_persist: bool) -> None:
    """Graft contract: "nothing happens in between" deadlines (time only enters via Tick).

    Checked on every node state reached by a run with elections, replication,
    a partition and a crash, with persistence immediate or left pending.
    """
    c = LocalCluster(("a", "b", "c"), auto_persist=auto_persist, seed=3)
    seen: list[NodeState] = []

    def snap() -> None:
        seen.extend(c.nodes[n] for n in c.ids if n not in c.down)

    for _ in range(60):
        snap()
        c.tick(c.next_deadline())
        snap()
        c.deliver_round()
        if not auto_persist:
            snap()
            for n in c.ids:
                if n not in c.down:
                    c.complete_persists(n)
        leader = c.leader()
        if leader is not None:
            c.propose(leader, b"x")
            if c.now > 20_000 and not c.down:
                c.crash(leader)
        if c.now > 30_000 and c.down:
            c.restart(sorted(c.down)[0])
    roles = {s.role for s in seen}
    assert Role.LEADER in roles and Role.FOLLOWER in roles, roles
    assert sum(_assert_quiet_until_deadline(s) for s in seen) > 100


def effects(actions: tuple[Action, ...]) -> list[Action]:
    # One step coalesces what two steps report separately: role changes (only
    # the last one matters) and persists (one write instead of two).
    return [a for a in actions if not isinstance(a, RoleChanged | Persist)]


def test_message_with_now_equals_tick_then_message() -> None:
    """``MessageReceived(m, now)`` acts as ``Tick(now)`` followed by ``MessageReceived(m)``.

    Same resulting state, same messages, applies and answers in the same order;
    only role changes and persists within the one step are coalesced.

    The simulator relies on it to deliver a message and advance a node's clock
    in one step; every message of a run with an election, proposals and a
    partition is checked at several clock offsets, including past deadlines.
    """
    cluster = LocalCluster(("a", "b", "c"), seed=3)
    checked = 0
    for phase in range(40):
        if phase == 10:
            cluster.propose(cluster.elect(), b"x")
        if phase == 20:
            cluster.partition(["a"], ["b", "c"])
        if phase == 30:
            cluster.heal()
        for m in list(cluster.in_flight):
            s = cluster.nodes[m.dst]
            for offset in (0, 1, s.next_deadline() - s.now):
                now = s.now + max(0, offset)
                one, actions_one = step(s, MessageReceived(m, now))
                mid, actions_tick = step(s, Tick(now))
                two, actions_msg = step(mid, MessageReceived(m))
                assert one == two
                assert effects(actions_one) == effects(actions_tick + actions_msg)
                checked += 1
        cluster.tick(cluster.next_deadline())
        cluster.deliver_round()
    assert checked > 100


def test_state_is_frozen_and_a_fresh_value_after_every_step() -> None:
    """NodeState is built by a fast path inside ``step`` (it adopts the step's
    dict of fields); to users it must still be an ordinary frozen attrs value."""
    c = LocalCluster(("a", "b", "c"), seed=3)
    leader = c.elect()
    old = c.nodes[leader]
    new, actions = graft_core.step(old, Tick(old.heartbeat_deadline))
    assert any(isinstance(a, Send) for a in actions)
    assert new is not old and new.now == old.heartbeat_deadline
    assert new.__dict__ is not old.__dict__
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        new.now = 0  # type: ignore[misc]
    assert sorted(new.__dict__) == sorted(f.name for f in attrs.fields(NodeState))
    rebuilt = attrs.evolve(new)
    assert rebuilt == new and hash(rebuilt) == hash(new) and repr(rebuilt) == repr(new)
    # The old state is untouched by the step.
    assert old == attrs.evolve(new, now=old.now, heartbeat_deadline=old.heartbeat_deadline,
                               read_seq=old.read_seq, beats=old.beats)
