"""Raft's five safety properties (Figure 3) as invariants of a hand-driven cluster.

A Hypothesis ``RuleBasedStateMachine`` drives a :class:`graft_sim.LocalCluster`
(``auto_persist=False``: every write waits until a rule completes it) one
event at a time: deliver, drop or duplicate one in-flight message, partition
the nodes at random and heal, crash and restart nodes, propose, advance time
(to a node's deadline or by some milliseconds), complete a node's writes --
or ``settle``: every write and message, until quiet. Half the runs start from
an elected leader. After every rule the invariants named after the paper's
properties must hold:

* ``election_safety`` (§5.2): at most one leader per term, over the whole run.
* ``leader_append_only`` (§5.3): a leader never overwrites or deletes entries.
* ``log_matching`` (§5.3): two logs with an entry of the same index and term
  are identical up to it -- in-memory logs and what each disk holds.
* ``leader_completeness`` (§5.4): a leader holds every entry committed in its
  term or before.
* ``state_machine_safety`` (§5.4.3): no two nodes apply different entries at
  one index; each node applies in order, once.
* ``committed_entries_are_durable_on_a_majority`` (Figure 2, "respond to
  RPCs" after stable storage is updated).
* ``terms_and_commits_never_go_back`` (§5.1): within one incarnation; a node
  is never behind its own disk's term.

``test_contract.py`` drives raw ``step`` calls to check the step contract;
this machine drives the cluster harness the simulator and demos share. A
failure prints a short program (Hypothesis also prints the invariant checks
between the rules)::

    state = ThreeNodeCluster()
    state.setup(seed=0, pre_vote=False, check_quorum=False, start_with_leader=False)
    state.tick_to_deadline(node='a')
    state.settle()
    state.teardown()

which replays after ``from test_sim_stateful import ThreeNodeCluster`` (with
the same broken core, if a mutant broke it):
``test_a_second_vote_in_one_term_fails_election_safety_with_a_replayable_run``
checks exactly that.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from mutants import BY_NAME

from graft_core import Action, Apply, Entry, NodeState, Role, RoleChanged
from graft_core._node import _Step
from graft_sim import LocalCluster

#: Small batches, a short pipeline and small snapshot chunks, so logs diverge and
#: snapshots are sent in more interesting ways.
CLUSTER_CONFIG: dict[str, object] = {
    "max_entries_per_message": 2,
    "max_inflight": 2,
    "snapshot_chunk_bytes": 64,
}


def cluster_machine(name: str, ids: tuple[str, ...]) -> type[RuleBasedStateMachine]:
    """A state machine class over a LocalCluster of ``ids``, printed as ``name``."""
    node = st.sampled_from(ids)
    # The n-th oldest message in flight (modulo how many there are): shrinks
    # toward the oldest, and reads as such in a reproduction.
    nth_oldest = st.integers(0, 7)

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.cluster = LocalCluster(ids, auto_persist=False)
            #: Election Safety: every node that led each term, over the run.
            self.leaders: dict[int, set[str]] = {}
            #: Leader Completeness: index -> (entry, lowest term it was seen committed in).
            self.committed: dict[int, tuple[Entry, int]] = {}
            #: State Machine Safety: the entry applied at each index, by anyone.
            self.applied: dict[int, Entry] = {}
            #: Leader Append-Only: each leader's log at the previous check.
            self.led: dict[str, NodeState] = {}
            #: Per node: (incarnation, term, commit index) at the previous check.
            self.seen: dict[str, tuple[int, int, int]] = {}
            self.incarnation = dict.fromkeys(ids, 0)
            self.proposals = 0

        # ------------------------------------------------------------ setup

        @initialize(
            seed=st.integers(0, 2**16),
            pre_vote=st.booleans(),
            check_quorum=st.booleans(),
            start_with_leader=st.booleans(),
            trailing=st.integers(0, 2),
        )
        def setup(
            self,
            seed: int,
            pre_vote: bool,
            check_quorum: bool,
            start_with_leader: bool,
            trailing: int = 2,
        ) -> None:
            self.cluster = LocalCluster(
                ids,
                auto_persist=False,
                seed=seed,
                on_action=self.observe,
                pre_vote=pre_vote,
                check_quorum=check_quorum,
                snapshot_trailing_entries=trailing,
                **CLUSTER_CONFIG,
            )
            if start_with_leader:
                # Half the runs start from a settled cluster, so their rules
                # spend themselves on replication and faults, not on the
                # first election.
                c = self.cluster
                for _ in range(50):
                    if c.leader() is not None:
                        break
                    c.tick(c.next_deadline())
                    self.settle()
                assert c.leader() is not None, "no leader after 50 election timeouts"
                self.settle()

        def observe(self, nid: str, action: Action) -> None:
            # Called for every action, before the next step: sees leaders and
            # commits a rule passes through, not only where it ends.
            term = self.cluster.nodes[nid].term
            if isinstance(action, RoleChanged) and action.role is Role.LEADER:
                self.leaders.setdefault(action.term, set()).add(nid)
            elif isinstance(action, Apply):
                for k, e in enumerate(action.entries):
                    self.saw_committed(action.first_index + k, e, term)

        def saw_committed(self, index: int, entry: Entry, term: int) -> None:
            known = self.committed.get(index)
            if known is None or term < known[1]:
                self.committed[index] = (entry, term)
            assert known is None or known[0] == entry, (
                f"State Machine Safety: index {index} committed as {known[0]} and {entry}"
            )

        def up(self) -> list[str]:
            return [n for n in ids if n not in self.cluster.down]

        # ------------------------------------------------------------ the network

        @precondition(lambda self: self.cluster.in_flight)
        @rule(nth_oldest=nth_oldest)
        def deliver(self, nth_oldest: int) -> None:
            flight = self.cluster.in_flight
            self.cluster.deliver(flight[nth_oldest % len(flight)])

        @precondition(lambda self: self.cluster.in_flight)
        @rule()
        def deliver_round(self) -> None:
            self.cluster.deliver_round()

        @precondition(
            lambda self: self.cluster.in_flight or any(self.cluster.pending_persists.values())
        )
        @rule()
        def settle(self) -> None:
            """Complete every write and deliver every message, until quiet (or 20 rounds).

            One rule for what a dozen single steps would do, so that runs of
            a few dozen rules get leaders elected and entries committed.
            """
            c = self.cluster
            for _ in range(20):
                for nid in self.up():
                    c.complete_persists(nid)
                if not c.in_flight:
                    return
                c.deliver_round()

        @precondition(lambda self: self.cluster.in_flight)
        @rule(nth_oldest=nth_oldest)
        def drop(self, nth_oldest: int) -> None:
            flight = self.cluster.in_flight
            del flight[nth_oldest % len(flight)]

        @precondition(lambda self: self.cluster.in_flight)
        @rule(nth_oldest=nth_oldest)
        def duplicate(self, nth_oldest: int) -> None:
            flight = self.cluster.in_flight
            flight.append(flight[nth_oldest % len(flight)])

        @rule(
            side=st.lists(node, min_size=1, max_size=len(ids) - 1, unique=True).map(
                lambda s: tuple(sorted(s))
            )
        )
        def partition(self, side: tuple[str, ...]) -> None:
            self.cluster.partition(side, [n for n in ids if n not in side])

        @precondition(lambda self: self.cluster.cut)
        @rule()
        def heal(self) -> None:
            self.cluster.heal()

        # ------------------------------------------------------------ the nodes
        # A rule naming a node that cannot do it (crash a down node, restart a
        # live one) does nothing; preconditions keep at least one node able.

        @precondition(lambda self: len(self.up()) > 1)
        @rule(node=node)
        def crash(self, node: str) -> None:
            if node not in self.cluster.down:
                self.cluster.crash(node)
                self.led.pop(node, None)

        @precondition(lambda self: self.cluster.down)
        @rule(node=node)
        def restart(self, node: str) -> None:
            if node in self.cluster.down:
                self.incarnation[node] += 1
                self.cluster.restart(node)

        @rule(node=node)
        def propose(self, node: str) -> None:
            if node not in self.cluster.down:
                self.proposals += 1
                self.cluster.propose(node, f"{node}{self.proposals}".encode())

        @precondition(lambda self: any(self.cluster.pending_persists.values()))
        @rule(node=node)
        def complete_persists(self, node: str) -> None:
            if node not in self.cluster.down:
                self.cluster.complete_persists(node)

        @rule(node=node)
        def tick_to_deadline(self, node: str) -> None:
            if node not in self.cluster.down:
                c = self.cluster
                c.tick(max(c.now, c.nodes[node].next_deadline()))

        @rule(ms=st.integers(1, 2_500))
        def tick_by(self, ms: int) -> None:
            self.cluster.tick(self.cluster.now + ms)

        @rule(node=node)
        def snapshot(self, node: str) -> None:
            """The application snapshots everything it applied (Raft §7); with a trailing
            window of 0-2 entries, lagging followers soon need InstallSnapshot."""
            c = self.cluster
            if node in c.down:
                return
            s = c.nodes[node]
            if s.applied_index > (s.snapshot.index if s.snapshot else 0):
                c.take_snapshot(node)

        # ------------------------------------------------------------ invariants

        @invariant()
        def election_safety(self) -> None:
            """Raft §5.2: at most one leader can be elected in a given term."""
            for term, leaders in self.leaders.items():
                assert len(leaders) <= 1, f"Election Safety: {sorted(leaders)} all led term {term}"

        @invariant()
        def leader_append_only(self) -> None:
            """Raft §5.3: a leader never overwrites or deletes entries in its log."""
            nodes = self.cluster.nodes
            for nid in self.up():
                s = nodes[nid]
                before = self.led.get(nid)
                if before is not None and before.term == s.term and s.role is Role.LEADER:
                    n = before.last_index
                    lo = max(s.log.offset, before.log.offset) + 1
                    assert s.last_index >= n and s.log.slice(lo, n + 1) == before.log.slice(
                        lo, n + 1
                    ), f"Leader Append-Only: {nid} changed its log in term {s.term}"
                if s.role is Role.LEADER:
                    self.led[nid] = s
                else:
                    self.led.pop(nid, None)

        @invariant()
        def log_matching(self) -> None:
            """Raft §5.3: same index and term means identical logs up to that index.

            Over every live node's log and every node's disk.
            """
            c = self.cluster
            # (first index, entries): compacted prefixes are in snapshots, not logs.
            logs = []
            for n in self.up():
                log = c.nodes[n].log
                logs.append((n, log.offset + 1, log.slice(log.offset + 1, log.last_index + 1)))
            for n in ids:
                disk = c.storage[n]
                logs.append((f"{n}'s disk", disk.offset + 1, tuple(disk.entries)))
            for i, (name_a, first_a, a) in enumerate(logs):
                for name_b, first_b, b in logs[i + 1 :]:
                    lo = max(first_a, first_b)
                    hi = min(first_a + len(a), first_b + len(b))  # exclusive
                    if hi <= lo:
                        continue  # no index in common
                    k = hi
                    while k > lo and a[k - 1 - first_a].term != b[k - 1 - first_b].term:
                        k -= 1
                    assert a[lo - first_a : k - first_a] == b[lo - first_b : k - first_b], (
                        f"Log Matching: {name_a} and {name_b} agree on the term at {k - 1} "
                        "but differ before it"
                    )

        @invariant()
        def leader_completeness(self) -> None:
            """Raft §5.4: an entry committed in a term is in the log of every later leader."""
            nodes = self.cluster.nodes
            for nid in self.up():
                s = nodes[nid]
                # Commit indexes are observations too (Apply lags behind them).
                for index in range(s.log.offset + 1, min(s.commit_index, s.last_index) + 1):
                    self.saw_committed(index, s.log.entry_at(index), s.term)
            for nid in self.up():
                s = nodes[nid]
                if s.role is not Role.LEADER:
                    continue
                for index, (entry, term) in self.committed.items():
                    if term <= s.term and index > s.log.offset:
                        held = s.log.entry_at(index) if index <= s.last_index else None
                        assert held == entry, (
                            f"Leader Completeness: leader {nid} of term {s.term} lacks "
                            f"entry {index} (term {entry.term}) committed by term {term}"
                        )

        @invariant()
        def state_machine_safety(self) -> None:
            """Raft §5.4.3: no two servers apply different entries at one index."""
            for nid in ids:
                # (A restored snapshot replaces the list by what the snapshot's
                # taker applied, so it too starts at index 1.)
                applied = self.cluster.applied[nid]
                for k, (index, entry) in enumerate(applied):
                    assert index == k + 1, f"{nid} applied index {index} as its #{k + 1}"
                    known = self.applied.setdefault(index, entry)
                    assert known == entry, (
                        f"State Machine Safety: index {index} applied as {known} and {entry}"
                    )

        @invariant()
        def committed_entries_are_durable_on_a_majority(self) -> None:
            """Figure 2: "respond to RPCs" only after stable storage is updated.

            So an entry counts toward commitment only once on a disk, and every
            committed entry survives any minority of crashes.
            """
            c = self.cluster
            quorum = len(ids) // 2 + 1
            for index, (entry, _) in self.committed.items():
                durable = 0
                for n in ids:
                    disk = c.storage[n]
                    k = index - disk.offset  # 1-based position on that disk
                    if k <= 0:
                        durable += 1  # covered by its durable snapshot
                    elif len(disk.entries) >= k and disk.entries[k - 1] == entry:
                        durable += 1
                assert durable >= quorum, (
                    f"committed entry {index} (term {entry.term}) is on {durable} disks only"
                )

        @invariant()
        def terms_and_commits_never_go_back(self) -> None:
            """Raft §5.1, Figure 2: terms only grow; a commit index only grows per incarnation."""
            c = self.cluster
            for nid in self.up():
                s = c.nodes[nid]
                durable = c.storage[nid].hard_state.term
                assert s.term >= durable, f"{nid} at term {s.term}, behind its disk's {durable}"
                now = (self.incarnation[nid], s.term, s.commit_index)
                before = self.seen.get(nid)
                if before is not None and before[0] == now[0]:
                    assert now[1] >= before[1], f"{nid}'s term went back: {before[1]} -> {now[1]}"
                    assert now[2] >= before[2], f"{nid}'s commit went back: {before[2]} -> {now[2]}"
                self.seen[nid] = now

    Machine.__name__ = Machine.__qualname__ = name
    return Machine


ThreeNodeCluster = cluster_machine("ThreeNodeCluster", ("a", "b", "c"))
FiveNodeCluster = cluster_machine("FiveNodeCluster", ("a", "b", "c", "d", "e"))

# No explain phase: its tracing slows a shrinking failure about tenfold.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

ThreeNodeCluster.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=100,
    deadline=None,
    phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)
FiveNodeCluster.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=100,
    deadline=None,
    phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)
TestThreeNodeCluster = ThreeNodeCluster.TestCase
TestFiveNodeCluster = FiveNodeCluster.TestCase

#: The invariants' names: a printed run calls them between its rules.
INVARIANTS = frozenset(
    {
        "election_safety",
        "leader_append_only",
        "log_matching",
        "leader_completeness",
        "state_machine_safety",
        "committed_entries_are_durable_on_a_majority",
        "terms_and_commits_never_go_back",
    }
)


def test_a_second_vote_in_one_term_fails_election_safety_with_a_replayable_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The invariants have teeth, and a failure prints a short program that replays it.

    The ``two_votes`` mutant (``tests/mutants.py``) grants a vote to every
    candidate whose log is up to date, even after voting in that term (Raft
    §5.2 allows one vote per term).
    """
    real = _Step.on_vote_request
    BY_NAME["two_votes"].install(monkeypatch)
    with pytest.raises(AssertionError, match="Election Safety") as failure:
        run_state_machine_as_test(
            ThreeNodeCluster,
            settings=settings(
                max_examples=100,
                stateful_step_count=50,
                deadline=None,
                database=None,
                derandomize=True,
                # Two leaders in a term soon break State Machine Safety too;
                # report one bug (the one this test is about comes first).
                report_multiple_bugs=False,
                phases=(Phase.generate, Phase.shrink),
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    report = "\n".join(getattr(failure.value, "__notes__", ()))
    begin = report.index("state = ThreeNodeCluster()")
    end = report.index("state.teardown()", begin) + len("state.teardown()")
    program = report[begin:end]
    print(program)
    rules = [
        line
        for line in program.splitlines()[1:]
        if line.split("(")[0].removeprefix("state.") not in INVARIANTS | {"teardown"}
    ]
    assert 2 <= len(rules) <= 10, rules
    # The printed run replays the failure with the mutant...
    with pytest.raises(AssertionError, match="Election Safety"):
        exec(program, {"ThreeNodeCluster": ThreeNodeCluster})
    monkeypatch.undo()
    assert _Step.on_vote_request is real
    # ...and passes on the real core.
    exec(program, {"ThreeNodeCluster": ThreeNodeCluster})
