"""Raft's safety properties, checked after every step of every node.

Figure 3 of the Raft paper lists what must always hold; each check below names
its property. They are incremental -- a step is checked against what the
checker remembers of the run, never by rescanning whole logs -- so they can run
after every step of a long simulation:

* **Election Safety** (§5.2): at most one leader per term.
* **Leader Append-Only** (§5.3): a leader never overwrites or deletes entries
  in its log.
* **Log Matching** (§5.3): if two logs hold an entry with the same index and
  term, the logs are identical up to it. Checked by induction on every entry
  written anywhere: ``(index, term)`` always names the same payload *and* the
  same term at ``index - 1``.
* **Leader Completeness** (§5.4): a new leader holds every committed entry.
  By Log Matching it is enough that it holds the highest one. The two rules
  that guarantee it are also checked where they act, because the violations
  they prevent need rare interleavings: votes go only to candidates at least
  as up to date (§5.4.1), and a leader commits only an entry of its own term
  by counting replicas (§5.4.2, Figure 8).
* **State Machine Safety** (§5.4.3): no two nodes commit or apply different
  entries at one index.
* Terms never go back (they are durable) and grow only by an election or a
  newer term heard of (§5.1); a commit index never goes back
  within one incarnation of a node; entries are applied in order, each once.
* **Nothing is promised before it is durable**: a vote grant leaves only once
  the vote is on the node's disk, an AppendEntries success only once the
  entries are, an entry is applied only once it is on the node's own disk,
  and a committed entry is on the disks of a majority.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graft_core import (
    Action,
    AppendResponse,
    Apply,
    Event,
    HardState,
    MessageReceived,
    NodeState,
    Persist,
    Restart,
    Role,
    Send,
    VoteRequest,
    VoteResponse,
)

if TYPE_CHECKING:
    from graft_sim._world import Simulation, _Node

_LEADER = Role.LEADER
_CANDIDATE = Role.CANDIDATE


class InvariantViolation(AssertionError):
    """A safety property broke. ``str()`` is the full report, replay command included."""


class Checker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.quorum = len(sim.nodes) // 2 + 1
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[bytes, object, int | None]] = {}
        self.committed: dict[int, int] = {}
        self.max_commit = 0
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.terms_before_crash: dict[int, int] = {}

    def fail(self, what: str, nodes: list[_Node]) -> None:
        raise InvariantViolation(self.sim.report(what, nodes))

    def before_restart(self, n: _Node) -> None:
        # Only what storage acknowledged must survive a crash: a term the node
        # adopted but had not yet persisted may be lost with it.
        self.terms_before_crash[n.idx] = n.state.durable_hard.term

    def after_step(
        self, n: _Node, event: Event, old: NodeState, new: NodeState, actions: tuple[Action, ...]
    ) -> None:
        term = new.hard.term
        restarted = isinstance(event, Restart)
        if restarted:
            if term < self.terms_before_crash.get(n.idx, 0):
                self.fail(f"{n.id}'s durable term went back across a restart", [n])
        elif term < old.hard.term:
            self.fail(f"{n.id}'s term went back: {old.hard.term} -> {term}", [n])
        elif new.commit_index < old.commit_index:
            self.fail(f"{n.id}'s commit index went back", [n])
        elif term > old.hard.term and not (
            (new.role is _CANDIDATE and term == old.hard.term + 1 and new.hard.voted_for == n.id)
            or (isinstance(event, MessageReceived) and getattr(event.message, "term", -1) == term)
        ):
            # §5.1: a term grows only by starting an election (by one, voting
            # for oneself) or by learning a newer term from a message; a
            # pre-vote (thesis §9.6) must not move it.
            self.fail(f"{n.id}'s term jumped {old.hard.term} -> {term} without cause", [n])
        if new.role is _LEADER:
            holder = self.leaders.setdefault(term, n.id)
            if holder != n.id:
                self.fail(f"Election Safety: {holder} and {n.id} both lead term {term}", [
                    n, self.sim.nodes[self.sim.index_of[holder]]])
            if old.role is _LEADER and old.hard.term == term and not restarted:
                if new.log.last_index < old.log.last_index:
                    self.fail(f"Leader Append-Only: {n.id}'s log shrank", [n])
            elif self.max_commit:
                c = self.max_commit
                if new.log.term_at(c) != self.committed[c]:
                    self.fail(
                        f"Leader Completeness: new leader {n.id} of term {term} lacks "
                        f"committed entry {c}", [n])
        if new.commit_index > old.commit_index and not restarted:
            if new.role is _LEADER and new.log.term_at(new.commit_index) != term:
                # §5.4.2: a leader commits only by counting replicas of an entry
                # of its own term. The State Machine Safety violation breaking
                # this can cause needs Figure 8's exact interleaving, which
                # random faults rarely produce, so the rule is checked directly.
                self.fail(f"Figure 8: leader {n.id} committed an entry of an earlier term", [n])
            self.on_commit(n, new)
        if isinstance(event, MessageReceived) and isinstance(event.message, VoteRequest):
            self.check_vote(n, event.message, old, new, actions)
        for a in actions:
            if isinstance(a, Send):
                m = a.message
                if isinstance(m, VoteResponse):
                    if m.granted and not m.pre_vote:
                        hs = n.storage.hard_state
                        if not (hs.term > m.term or (hs.term == m.term and hs.voted_for == m.dst)):
                            self.fail(f"{n.id} granted a vote before persisting it", [n])
                elif isinstance(m, AppendResponse) and m.success and term == m.term:
                    stored = n.storage.entries
                    i = m.index
                    if i and (len(stored) < i or stored[i - 1].term != new.log.term_at(i)):
                        self.fail(f"{n.id} acknowledged entry {i} before persisting it", [n])
            elif isinstance(a, Persist):
                self.on_persist(n, new, a)
            elif isinstance(a, Apply):
                self.on_apply(n, a)

    def check_vote(
        self, n: _Node, m: VoteRequest, old: NodeState, new: NodeState, actions: tuple[Action, ...]
    ) -> None:
        if m.pre_vote:
            granted = any(
                isinstance(a, Send) and isinstance(a.message, VoteResponse) and a.message.granted
                for a in actions
            )
        else:
            granted = new.hard == HardState(m.term, m.src) and old.hard != new.hard
        if granted and not (
            m.last_log_term > old.log.last_term
            or (m.last_log_term == old.log.last_term and m.last_log_index >= old.log.last_index)
        ):
            # §5.4.1: a vote goes only to a candidate whose log is at least as
            # up to date; checked directly for the same reason as Figure 8.
            self.fail(f"§5.4.1: {n.id} voted for {m.src}, whose log is less up to date", [n])

    def on_commit(self, n: _Node, new: NodeState) -> None:
        c = new.commit_index
        t = new.log.term_at(c)
        assert t is not None
        known = self.committed.setdefault(c, t)
        if known != t:
            self.fail(f"State Machine Safety: index {c} committed with terms {known} and {t}", [n])
        if c > self.max_commit:
            self.max_commit = c
        durable = 0
        for other in self.sim.nodes:
            stored = other.storage.entries
            if len(stored) >= c and stored[c - 1].term == t:
                durable += 1
        if durable < self.quorum:
            self.fail(f"entry {c} committed but durable on only {durable} nodes", [n])

    def on_persist(self, n: _Node, new: NodeState, p: Persist) -> None:
        if p.truncate_from is not None and new.role is _LEADER:
            self.fail(f"Leader Append-Only: leader {n.id} truncated its log", [n])
        entries = self.entries
        index = p.first_index
        prev_term = new.log.term_at(index - 1)
        for e in p.entries:
            record = (e.data, e.kind, prev_term)
            known = entries.setdefault((index, e.term), record)
            if known != record:
                self.fail(f"Log Matching: two entries at index {index}, term {e.term}", [n])
            prev_term = e.term
            index += 1

    def on_apply(self, n: _Node, a: Apply) -> None:
        if a.first_index != n.applied + 1:
            self.fail(f"{n.id} applied from {a.first_index} after {n.applied}", [n])
        applied = self.applied
        index = a.first_index
        for e in a.entries:
            record = (e.term, e.data)
            known = applied.setdefault(index, record)
            if known != record:
                self.fail(f"State Machine Safety: two different entries applied at {index}", [n])
            index += 1
        last = index - 1
        stored = n.storage.entries
        if a.entries and (len(stored) < last or stored[last - 1].term != a.entries[-1].term):
            self.fail(f"{n.id} applied entry {last} before persisting it", [n])
