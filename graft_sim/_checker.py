"""Raft's safety properties, checked after every step of every node.

Figure 3 of the Raft paper lists what must always hold; each check below names
its property. They are incremental -- a step is checked against what the
checker remembers of the run, never by rescanning whole logs -- so they can run
after every step of a long simulation:

* **Election Safety** (§5.2): at most one leader per term. A node votes for at
  most one candidate per term, and a new leader holds the votes of a majority
  of the voters of *its* configuration -- of each half while it is joint
  (thesis §4.3) -- its own vote counting only once it is on its disk, and only
  if it is a voter of that configuration (a server removed by a configuration
  not yet committed may still campaign, thesis §4.1, but not vote for itself).
* **Leader Append-Only** (§5.3): a leader never overwrites or deletes entries
  in its log.
* **Log Matching** (§5.3): if two logs hold an entry with the same index and
  term, the logs are identical up to it. Checked by induction on every entry
  written anywhere: ``(index, term)`` always names the same payload *and* the
  same term at ``index - 1``.
* **Leader Completeness** (§5.4): a new leader holds every committed entry
  (or a snapshot covering it). By Log Matching it is enough that it holds the
  highest one. The rules that guarantee it are also checked where they act,
  because the violations they prevent need rare interleavings: votes go only
  to candidates at least as up to date (§5.4.1); a leader commits only an
  entry of its own term by counting replicas (§5.4.2, Figure 8); and a leader
  appends a membership change only once an entry of its term is committed
  (the 2015 fix to single-server changes) and only when the previous change
  is committed (one at a time, thesis §4.1).
* **State Machine Safety** (§5.4.3): no two nodes commit or apply different
  entries at one index, and no two snapshots taken at one index differ; a
  node restores only the snapshot its disk holds, never one older than what
  its state machine already applied.
* Terms never go back (they are durable) and grow only by an election or a
  newer term heard of (§5.1); a commit index never goes back within one
  incarnation of a node and never passes the end of its log; committed
  entries are never truncated; entries are applied in order, each once.
* **Nothing is promised before it is durable**: a vote grant leaves only once
  the vote is on the node's disk, an AppendEntries success or a snapshot
  acknowledgement only once the entries (or snapshot) are, an entry is applied
  only once it is on the node's own disk, and a committed entry is on the
  disks of a majority of the committing leader's configuration (each half if
  joint). A follower never commits past what some leader committed.
* **Reads** (thesis §6.4): a read index is never below the highest commit
  index of the cluster at the moment the read was issued -- else the read may
  miss a write that completed before it began.

Which configuration decides a commitment: the leader's, the latest in its log
(thesis §4.1), not the one in effect at the committed index. A leader that
removed a voter at index 10 commits index 9 with a majority of the smaller
configuration; a majority of the one in effect at 9 is not required (and not
guaranteed), because every configuration that can elect a later leader
overlaps the smaller one's majorities.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from graft_core import (
    Action,
    AppendRequest,
    AppendResponse,
    Apply,
    EntryKind,
    Event,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshotResponse,
    MessageReceived,
    NodeState,
    Persist,
    ReadReady,
    Restart,
    RestoreSnapshot,
    Role,
    Send,
    SnapshotMeta,
    VoteRequest,
    VoteResponse,
)

if TYPE_CHECKING:
    from graft_sim._world import Simulation, _Node

_LEADER = Role.LEADER
_CANDIDATE = Role.CANDIDATE
_CONFIG = EntryKind.CONFIG
_NOTHING_TO_CHECK = (Heartbeat, HeartbeatResponse, AppendRequest, VoteRequest)


class InvariantViolation(AssertionError):
    """A safety property broke. ``str()`` is the full report, replay command included."""


def _majority(size: int) -> int:
    return size // 2 + 1


class Checker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.leaders: dict[int, str] = {}
        #: (index, term) -> (payload, kind, term at index - 1 or None if unknown).
        self.entries: dict[tuple[int, int], tuple[bytes, object, int | None]] = {}
        self.committed: dict[int, int] = {}
        self.max_commit = 0
        #: The highest commit index any leader reached (followers only learn it).
        self.max_leader_commit = 0
        self.applied: dict[int, tuple[int, bytes]] = {}
        #: Per node: the last index its state machine holds (applied or restored).
        self.applied_upto: dict[int, int] = {}
        self.terms_before_crash: dict[int, int] = {}
        #: (term, voter) -> the candidate it granted its vote to.
        self.votes: dict[tuple[int, str], str] = {}
        #: index -> digest of the application's snapshot at that index.
        self.snapshots: dict[int, bytes] = {}
        #: read request id -> the cluster's highest commit index when it was issued.
        self.read_floor: dict[int, int] = {}

    def fail(self, what: str, nodes: list[_Node]) -> None:
        raise InvariantViolation(self.sim.report(what, nodes))

    def before_restart(self, n: _Node) -> None:
        # Only what storage acknowledged must survive a crash: a term the node
        # adopted but had not yet persisted may be lost with it.
        self.terms_before_crash[n.idx] = n.state.durable_hard.term

    def on_read_issued(self, request_id: int) -> None:
        self.read_floor[request_id] = self.max_commit

    def on_snapshot_taken(self, n: _Node, meta: SnapshotMeta, data: bytes) -> None:
        """A node's application saved its state as of ``meta.index``."""
        if meta.index != self.applied_upto.get(n.idx, 0):
            self.fail(
                f"{n.id} snapshotted index {meta.index} but its state machine is at "
                f"{self.applied_upto.get(n.idx, 0)}", [n])
        known = self.applied.get(meta.index)
        if known is not None and known[0] != meta.term:
            self.fail(f"snapshot of {n.id} at {meta.index} names term {meta.term}, "
                      f"the entry applied there has term {known[0]}", [n])
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if self.snapshots.setdefault(meta.index, digest) != digest:
            self.fail(f"State Machine Safety: two different snapshots at index {meta.index}", [n])

    def after_step(
        self, n: _Node, event: Event, old: NodeState, new: NodeState, actions: tuple[Action, ...]
    ) -> None:
        term = new.hard.term
        old_term = old.hard.term
        restarted = isinstance(event, Restart)
        if restarted:
            assert isinstance(event, Restart)
            self.applied_upto[n.idx] = event.applied_index
            if term < self.terms_before_crash.get(n.idx, 0):
                self.fail(f"{n.id}'s durable term went back across a restart", [n])
        elif term < old_term:
            self.fail(f"{n.id}'s term went back: {old_term} -> {term}", [n])
        elif new.commit_index < old.commit_index:
            self.fail(f"{n.id}'s commit index went back", [n])
        elif term > old_term and not (
            (new.role is _CANDIDATE and term == old_term + 1 and new.hard.voted_for == n.id)
            or (isinstance(event, MessageReceived) and getattr(event.message, "term", -1) == term)
        ):
            # §5.1: a term grows only by starting an election (by one, voting
            # for oneself) or by learning a newer term from a message; a
            # pre-vote (thesis §9.6) must not move it.
            self.fail(f"{n.id}'s term jumped {old_term} -> {term} without cause", [n])
        if new.commit_index > new.log.last_index:
            self.fail(f"{n.id}'s commit index {new.commit_index} is past the end of its log "
                      f"({new.log.last_index})", [n])
        if new.role is _LEADER:
            holder = self.leaders.setdefault(term, n.id)
            if holder != n.id:
                self.fail(f"Election Safety: {holder} and {n.id} both lead term {term}", [
                    n, self.sim.nodes[self.sim.index_of[holder]]])
            if old.role is _LEADER and old.hard.term == term and not restarted:
                if new.log.last_index < old.log.last_index:
                    self.fail(f"Leader Append-Only: {n.id}'s log shrank", [n])
            else:
                self.check_election(n, new)
        leader_step = not restarted and (
            new.role is _LEADER or (old.role is _LEADER and old.hard.term == term)
        )
        if new.commit_index > old.commit_index and not restarted:
            if leader_step and new.log.term_at(new.commit_index) != term:
                # §5.4.2: a leader commits only by counting replicas of an entry
                # of its own term. The State Machine Safety violation breaking
                # this can cause needs Figure 8's exact interleaving, which
                # random faults rarely produce, so the rule is checked directly.
                self.fail(f"Figure 8: leader {n.id} committed an entry of an earlier term", [n])
            self.on_commit(n, new, leader_step)
        if isinstance(event, MessageReceived) and isinstance(event.message, VoteRequest):
            self.check_vote(n, event.message, old, new, actions)
        for a in actions:
            if type(a) is Send:
                m = a.message
                # check_send has nothing to check on these (exact types only),
                # the bulk of all traffic: skip the call.
                if type(m) not in _NOTHING_TO_CHECK:
                    self.check_send(n, new, m)
            elif isinstance(a, Send):
                self.check_send(n, new, a.message)
            elif isinstance(a, Persist):
                self.on_persist(n, old, new, a, leader_step)
            elif isinstance(a, Apply):
                self.on_apply(n, a)
            elif isinstance(a, RestoreSnapshot):
                self.on_restore(n, a)
            elif isinstance(a, ReadReady):
                floor = self.read_floor.pop(a.request_id, None)
                if floor is not None and a.index < floor:
                    self.fail(
                        f"stale read: {n.id} got read index {a.index} for a read issued when "
                        f"index {floor} was already committed", [n])

    def check_send(self, n: _Node, new: NodeState, m: object) -> None:
        """Figure 2: respond to RPCs only after updating stable storage."""
        term = new.hard.term
        if isinstance(m, VoteResponse):
            if m.granted and not m.pre_vote:
                hs = n.disk.hard_state
                if not (hs.term > m.term or (hs.term == m.term and hs.voted_for == m.dst)):
                    self.fail(f"{n.id} granted a vote before persisting it", [n])
                # §5.2: "each server will vote for at most one candidate in a given term".
                first = self.votes.setdefault((m.term, n.id), m.dst)
                if first != m.dst:
                    self.fail(f"Election Safety: {n.id} voted for {first} and {m.dst} in term "
                              f"{m.term}", [n])
        elif isinstance(m, AppendResponse) and m.success and term == m.term:
            i = m.index
            if not n.disk.holds(i, new.log.term_at(i)):
                self.fail(f"{n.id} acknowledged entry {i} before persisting it", [n])
        elif isinstance(m, InstallSnapshotResponse) and m.done and term == m.term:
            i = m.match_index
            if not n.disk.holds(i, new.log.term_at(i)):
                self.fail(f"{n.id} acknowledged snapshot up to {i} before persisting it", [n])

    def check_election(self, n: _Node, new: NodeState) -> None:
        """A new leader holds a majority of its configuration's votes, and every committed entry."""
        term = new.hard.term
        ms = new.membership
        own = n.disk.hard_state == HardState(term, n.id)
        for half in (ms.voters, ms.outgoing):
            if not half:
                continue
            got = [v for v in half if (own if v == n.id else self.votes.get((term, v)) == n.id)]
            if len(got) < _majority(len(half)):
                self.fail(
                    f"Election Safety: {n.id} leads term {term} with the votes of {got} "
                    f"(its own {'durable' if own else 'not durable'}), not a majority of the "
                    f"voters {half} of its configuration", [n])
        c = self.max_commit
        if c and c >= new.log.offset and new.log.term_at(c) != self.committed[c]:
            # (Below the log's offset the leader holds a snapshot covering c.)
            self.fail(
                f"Leader Completeness: new leader {n.id} of term {term} lacks "
                f"committed entry {c}", [n])

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

    def durable_on(self, index: int, term: int, ids: tuple[str, ...]) -> list[str]:
        sim = self.sim
        return [
            v for v in ids
            if v in sim.index_of and sim.nodes[sim.index_of[v]].disk.holds(index, term)
        ]

    def on_commit(self, n: _Node, new: NodeState, by_leader: bool) -> None:
        c = new.commit_index
        t = new.log.term_at(c)
        if t is None:
            self.fail(f"{n.id} committed index {c}, which its log does not hold", [n])
            return
        known = self.committed.setdefault(c, t)
        if known != t:
            self.fail(f"State Machine Safety: index {c} committed with terms {known} and {t}", [n])
        if c > self.max_commit:
            self.max_commit = c
        if not by_leader:
            if c > self.max_leader_commit:
                self.fail(
                    f"entry {c} committed by {n.id}, beyond any leader's commit index "
                    f"({self.max_leader_commit})", [n])
            return
        self.max_leader_commit = max(self.max_leader_commit, c)
        # The configuration the leader counted with: the latest in its log
        # (each half when joint).
        ms = new.membership
        for half in (ms.voters, ms.outgoing):
            if not half:
                continue
            durable = self.durable_on(c, t, half)
            if len(durable) < _majority(len(half)):
                self.fail(
                    f"entry {c} committed but durable on only {len(durable)} of the voters "
                    f"{half} ({durable})", [n])

    def on_persist(
        self, n: _Node, old: NodeState, new: NodeState, p: Persist, leader_step: bool
    ) -> None:
        if p.truncate_from is not None:
            if new.role is _LEADER:
                self.fail(f"Leader Append-Only: leader {n.id} truncated its log", [n])
            if p.truncate_from <= old.commit_index:
                self.fail(f"{n.id} truncated its log from {p.truncate_from}, below its commit "
                          f"index {old.commit_index}: committed entries are never removed", [n])
        entries = self.entries
        index = p.first_index
        prev_term = new.log.term_at(index - 1)
        for e in p.entries:
            record = (e.data, e.kind, prev_term)
            key = (index, e.term)
            known = entries.setdefault(key, record)
            if known != record:
                if known[:2] != record[:2] or None not in (known[2], prev_term):
                    self.fail(f"Log Matching: two entries at index {index}, term {e.term}", [n])
                if known[2] is None:
                    entries[key] = record
            if e.kind is _CONFIG and leader_step and e.term == new.hard.term:
                self.check_config_append(n, old, new, index)
            prev_term = e.term
            index += 1

    def check_config_append(self, n: _Node, old: NodeState, new: NodeState, index: int) -> None:
        """A leader appends a configuration entry (thesis §4.1, the 2015 fix)."""
        if index <= old.log.last_index:
            return  # not new in this step
        previous = [i for i, _ in new.configs if i < index]
        prev_index = previous[-1] if previous else 0
        prev = new.membership_at(prev_index) if prev_index >= new.log.offset else None
        leaving = (
            prev is not None and prev.is_joint and new.membership_at(index) == prev.leave_joint()
        )
        if prev_index > new.commit_index:
            self.fail(f"{n.id} appended configuration entry {index} while the one at "
                      f"{prev_index} is not committed (one change at a time, thesis §4.1)", [n])
        if prev is not None and prev.is_joint and not leaving:
            self.fail(f"{n.id} appended configuration entry {index} while still joint", [n])
        if new.log.term_at(new.commit_index) != new.hard.term:
            self.fail(
                f"single-server change rule (Ongaro, 2015): leader {n.id} appended "
                f"configuration entry {index} before committing an entry of its term "
                f"{new.hard.term}", [n])

    def on_apply(self, n: _Node, a: Apply) -> None:
        upto = self.applied_upto.get(n.idx, 0)
        if a.first_index != upto + 1:
            self.fail(f"{n.id} applied from {a.first_index} after {upto}", [n])
        applied = self.applied
        index = a.first_index
        for e in a.entries:
            record = (e.term, e.data)
            known = applied.setdefault(index, record)
            if known != record:
                self.fail(f"State Machine Safety: two different entries applied at {index}", [n])
            index += 1
        last = index - 1
        if a.entries and not n.disk.holds(last, a.entries[-1].term):
            self.fail(f"{n.id} applied entry {last} before persisting it", [n])
        self.applied_upto[n.idx] = last

    def on_restore(self, n: _Node, a: RestoreSnapshot) -> None:
        meta = a.meta
        disk = n.disk
        if disk.snapshot != meta:
            self.fail(f"{n.id} restored snapshot {meta} but its disk holds {disk.snapshot}", [n])
        upto = self.applied_upto.get(n.idx, 0)
        if meta.index <= upto:
            self.fail(f"{n.id} restored a snapshot at {meta.index} over a state machine already "
                      f"at {upto}", [n])
        digest = hashlib.blake2b(disk.snapshot_data, digest_size=16).digest()
        if self.snapshots.setdefault(meta.index, digest) != digest:
            self.fail(f"State Machine Safety: {n.id} restored a snapshot at {meta.index} that "
                      f"differs from the one taken there", [n])
        self.applied_upto[n.idx] = meta.index
