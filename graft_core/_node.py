"""The Raft state machine: ``step(state, event) -> (state, actions)``.

Theory of operation
-------------------
A node is a frozen :class:`NodeState`. Everything that happens to it is an
event; everything it wants done is an action. ``step`` is a pure function:
it reads no clock, does no I/O, draws no global randomness, and never modifies
the state it is given. Equal inputs give equal outputs, so a simulator can
replay any run from its seed and a shell can run the same code over TCP.

Rules of this file
------------------
1. Everything that affects a state transition lives in this file (leaf modules
   hold pure helpers: ``_log``, ``_progress``, ``_quorum``, ``_membership``).
2. ``step`` handles a message's term first (step down, or drop/answer a stale
   one), then messages every role treats alike (votes), then dispatches by
   role -- the structure of etcd-io/raft's ``Step``.
3. One step makes at most one :class:`Persist`; its hard state, truncation,
   entries and snapshot chunk are gathered while the step runs and emitted at
   the end.
4. Messages that promise durable state (vote grants, AppendEntries successes,
   snapshot acknowledgements) are *held* until every Persist issued before
   them is acknowledged (``_actions`` ordering contract). A candidate counts its
   own vote, and a leader its own log, only once durable; a candidate never
   becomes leader before its new term is durable (otherwise a crash could let
   it lead the same term twice with different logs).
5. Peer input never raises: bad messages become :class:`MessageDropped`.
   Caller mistakes raise :class:`GraftError` subclasses before any change.
6. The configuration in effect is the latest one in the log, committed or not
   (thesis §4.1): appending a configuration entry changes it at once, and a
   truncation that removes one rolls it back. Quorums are always those of
   that configuration, joint or not (``_quorum``).

Inside ``step`` a private, short-lived ``_Step`` object holds the fields being
changed as plain attributes; ``finish`` builds the new ``NodeState`` once
(STYLE: "compute the changes into locals and build each record once"). It
never escapes ``step``.
"""

from __future__ import annotations

import bisect

import attrs

from graft_core import _progress as prog
from graft_core._actions import (
    Action,
    Apply,
    DropReason,
    MembershipChanged,
    MessageDropped,
    Persist,
    ProposalAccepted,
    ProposalRejected,
    ReadReady,
    ReadRejected,
    RestoreSnapshot,
    RoleChanged,
    Send,
    SendSnapshot,
    SnapshotChunk,
    TransferAborted,
)
from graft_core._config import Config
from graft_core._errors import ConfigError, EventError, ProposalError
from graft_core._events import (
    ChangeMembership,
    Event,
    MessageReceived,
    PersistCompleted,
    Propose,
    ProposeMany,
    ReadIndex,
    Restart,
    SnapshotSaved,
    Tick,
    TransferLeadership,
)
from graft_core._log import RaftLog
from graft_core._membership import ChangeOp, Membership, apply_changes
from graft_core._messages import (
    AppendRequest,
    AppendResponse,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RejectReason,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    malformed_reason,
)
from graft_core._progress import Progress
from graft_core._pvector import PVector
from graft_core._quorum import (
    VoteResult,
    has_joint_quorum,
    joint_committed_index,
    joint_vote_result,
)
from graft_core._rand import draw
from graft_core._state import NodeState, PendingRead, Unstable
from graft_core._types import DurableState, Entry, EntryKind, HardState, Role, SnapshotMeta

FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER
_NOOP = EntryKind.NOOP
_CONFIG = EntryKind.CONFIG
_EMPTY: frozenset[str] = frozenset()
# Thesis §4.1: "servers process incoming RPC requests without consulting their
# current configurations" -- a leader or candidate missing from our latest
# configuration may be legitimate (that configuration may be uncommitted and
# about to be rolled back, or older than one that added the sender). So these
# are accepted from any sender; the term rules, the leader lease and §5.4.1
# protect the cluster. Everything else must come from a member.
_LEADER_TRAFFIC = (AppendRequest, Heartbeat, InstallSnapshot)
_ANY_SENDER = (*_LEADER_TRAFFIC, VoteRequest)
# Forwarded proposals and reads are outside the term rules (see on_forward).
_OUTSIDE_TERM_RULES = (ForwardProposal, ForwardResponse, ReadIndexRequest, ReadIndexResponse)


_N_FIELDS = len(attrs.fields(NodeState))
# Build a NodeState around a finished dict of its fields (see ``_Step``),
# bypassing the frozen ``__setattr__`` on purpose and only there.
_new_state = object.__new__
_set_dict = object.__setattr__


def _peers_of(membership: Membership, me: str) -> tuple[str, ...]:
    return tuple(m for m in membership.members if m != me)


def _config_entries(
    entries: tuple[Entry, ...] | PVector[Entry], first_index: int
) -> list[tuple[int, Membership]]:
    """``(index, membership)`` of every configuration entry (already validated)."""
    out = []
    for k, e in enumerate(entries):
        if e.kind is _CONFIG:
            out.append((first_index + k, Membership.decode_untrusted(e.data)))
    return out


def start(
    config: Config,
    now: int = 0,
    durable: DurableState | None = None,
    applied_index: int = 0,
) -> NodeState:
    """Create a node: a follower, fresh or restarted from its durable state.

    Args:
        config: the validated configuration.
        now: the logical time at start.
        durable: what storage holds after a crash (``None`` for a new node).
        applied_index: how far the application had applied (restart only). If
            it is below ``durable.snapshot``, the first step restores the
            snapshot (:class:`~graft_core.RestoreSnapshot`).

    Returns:
        The initial state. Feed it :class:`~graft_core.Tick` events from here;
        its first election deadline is already set.

    Raises:
        ConfigError: if ``durable`` is inconsistent (terms decreasing, an entry
            from a term after the stored term, a configuration entry that does
            not decode, ``applied_index`` beyond the log).
    """
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a graft_core.Config, got {type(config).__name__}")
    if type(now) is not int or now < 0:
        raise EventError(f"now must be a non-negative int, got {now!r}")
    durable = durable if durable is not None else DurableState()
    if type(durable) is not DurableState:
        raise ConfigError(f"durable must be a DurableState, got {type(durable).__name__}")
    hard = durable.hard_state
    if type(hard) is not HardState or type(hard.term) is not int or hard.term < 0:
        raise ConfigError(f"invalid durable hard state {hard!r}")
    if hard.voted_for is not None and (type(hard.voted_for) is not str or not hard.voted_for):
        raise ConfigError(f"durable vote for {hard.voted_for!r}, which is not a node id")
    snap = durable.snapshot
    if snap is not None and (
        type(snap) is not SnapshotMeta
        or type(snap.index) is not int
        or type(snap.term) is not int
        or snap.index < 1
        or not 1 <= snap.term <= hard.term
        or type(snap.membership) is not Membership
    ):
        raise ConfigError(f"invalid durable snapshot {snap!r} (hard state term {hard.term})")
    offset, previous = (snap.index, snap.term) if snap is not None else (0, 0)
    for i, e in enumerate(durable.entries, start=offset + 1):
        if type(e) is not Entry or type(e.term) is not int or not previous <= e.term <= hard.term:
            raise ConfigError(
                f"durable entry {i} ({e!r}) has a term out of order or after term {hard.term}"
            )
        previous = e.term
    log = RaftLog(
        PVector.from_iterable(durable.entries), offset, snap.term if snap is not None else 0
    )
    if type(applied_index) is not int or not 0 <= applied_index <= log.last_index:
        raise ConfigError(
            f"applied_index {applied_index!r} is outside the durable log (0..{log.last_index})"
        )
    base = snap.membership if snap is not None else Membership(config.voters)
    try:
        configs = ((offset, base), *_config_entries(durable.entries, offset + 1))
    except ConfigError as e:
        raise ConfigError(f"a durable configuration entry does not decode: {e}") from None
    membership = configs[-1][1]
    timeout = _draw_timeout(config, hard.term, 0)
    return NodeState(
        config=config,
        now=now,
        hard=hard,
        durable_hard=hard,
        log=log,
        stable_index=log.last_index,
        persist_seq=0,
        persisted_seq=0,
        unstable=(),
        held=(),
        role=FOLLOWER,
        leader_id=None,
        # Entries the application applied were committed (it only ever gets
        # committed entries), and so is everything a snapshot covers.
        commit_index=max(applied_index, offset),
        applied_index=applied_index,
        election_deadline=now + timeout,
        heartbeat_deadline=now,
        election_timeout=timeout,
        timeout_draws=1,
        leader_contact=0,
        # Term 0: never heard from a leader, so part of no lease.
        quiet_until=now + config.election_timeout if hard.term > 0 else 0,
        votes_granted=_EMPTY,
        votes_rejected=_EMPTY,
        progress=(),
        configs=configs,
        peers=_peers_of(membership, config.node_id),
        snapshot=snap,
        incoming=None,
        transfer_target=None,
        transfer_deadline=0,
        read_seq=0,
        read_acks=(),
        pending_reads=(),
        beats=(),
        lease_until=0,
    )


def step(state: NodeState, event: Event) -> tuple[NodeState, tuple[Action, ...]]:
    """Advance ``state`` by one event.

    Args:
        state: the node's current state (not modified).
        event: what happened.

    Returns:
        The new state, and the actions for the shell to carry out, honouring
        the ordering contract documented in ``graft_core._actions``.

    Raises:
        EventError: time moved backwards, a Persist that was never issued was
            acknowledged, a snapshot of an index not yet applied, or ``event``
            is not a graft_core event.
        ProposalError: a proposal larger than ``Config.max_proposal_bytes``.
    """
    if isinstance(event, MessageReceived):
        s = _Step(state)
        now = event.now
        if now is not None:
            # _advance, inlined: this is the path of every message.
            if now < state.now:
                raise EventError(f"time went backwards: {now} < {state.now}")
            if now > state.now:
                s.on_tick(now)
        s.on_message(event.message)
        return s.finish()
    if isinstance(event, Tick):
        if event.now < state.now:
            raise EventError(f"time went backwards: {event.now} < {state.now}")
        s = _Step(state)
        s.on_tick(event.now)
        return s.finish()
    if isinstance(event, Propose):
        if len(event.data) > state.config.max_proposal_bytes:
            raise ProposalError(
                f"proposal of {len(event.data)} bytes exceeds max_proposal_bytes "
                f"({state.config.max_proposal_bytes})"
            )
        s = _Step(state)
        s.on_propose(event.request_id, event.data)
        return s.finish()
    if isinstance(event, ProposeMany):
        limit = state.config.max_proposal_bytes
        for p in event.proposals:
            if len(p.data) > limit:
                raise ProposalError(
                    f"proposal {p.request_id} of {len(p.data)} bytes exceeds "
                    f"max_proposal_bytes ({limit})"
                )
        s = _Step(state)
        s.on_propose_many(event.proposals)
        return s.finish()
    if isinstance(event, PersistCompleted):
        if event.seq > state.persist_seq:
            raise EventError(
                f"PersistCompleted({event.seq}) but only {state.persist_seq} were issued"
            )
        fresh = event.seq > state.persisted_seq
        if not fresh and (event.now is None or event.now == state.now):
            return state, ()
        s = _Step(state)
        _advance(s, event.now)
        if fresh:
            s.on_persisted(event.seq)
        return s.finish()
    if isinstance(event, ReadIndex):
        s = _Step(state)
        s.on_read_index(event.request_id)
        return s.finish()
    if isinstance(event, SnapshotSaved):
        if event.index > state.applied_index:
            raise EventError(
                f"SnapshotSaved({event.index}) but only {state.applied_index} is applied"
            )
        if state.snapshot is not None and event.index <= state.snapshot.index:
            return state, ()
        if event.index < state.log.offset:
            # A follower installed a newer snapshot meanwhile: the entries this
            # one covers are gone, and so is the need for it.
            return state, ()
        s = _Step(state)
        s.on_snapshot_saved(event.index)
        return s.finish()
    if isinstance(event, ChangeMembership):
        s = _Step(state)
        s.on_change_membership(event.request_id, event.ops)
        return s.finish()
    if isinstance(event, TransferLeadership):
        s = _Step(state)
        s.on_transfer(event.target)
        return s.finish()
    if isinstance(event, Restart):
        now = max(event.now, state.now)
        restarted = start(state.config, now, event.durable, event.applied_index)
        s = _Step(restarted)
        s.actions.append(RoleChanged(FOLLOWER, restarted.term, None))
        s.actions.append(MembershipChanged(restarted.membership, restarted.membership_index))
        return s.finish()
    raise EventError(f"not a graft_core event: {event!r}")


def _advance(s: _Step, now: int | None) -> None:
    """The optional ``now`` of an event: what a ``Tick(now)`` would do, first."""
    if now is None:
        return
    if now < s.now:
        raise EventError(f"time went backwards: {now} < {s.now}")
    if now > s.now:
        s.on_tick(now)


def _draw_timeout(config: Config, term: int, counter: int) -> int:
    # Raft §5.2: randomized election timeouts, here a pure function of
    # (seed, node, term, draw number) so that runs replay exactly.
    return draw(
        config.seed, config.node_key ^ (term << 20), counter, config.election_timeout,
        config.timeout_max,
    )


class _Step:
    """The mutable scratchpad of one ``step`` call. Never escapes it.

    The node's fields live in the instance ``__dict__``: a copy of the old
    state's (one C-level dict copy instead of ~35 attribute copies), changed in
    place while the step runs and handed over whole to the new ``NodeState`` by
    ``finish``. The step's own bookkeeping lives in slots, so it can never leak
    into the state; ``finish`` checks that no stray attribute did either.
    """

    __slots__ = (
        "__dict__",
        "actions",
        "held_new",
        "installed",
        "membership",
        "new_entries_from",
        "old",
        "persist_hard",
        "progress_list",
        "read_broadcast",
        "snapshot_chunk",
        "truncate_from",
    )

    # NodeState's fields (in ``__dict__``), as mypy should see them.
    config: Config
    now: int
    hard: HardState
    durable_hard: HardState
    log: RaftLog
    stable_index: int
    persist_seq: int
    persisted_seq: int
    unstable: tuple[Unstable, ...]
    held: tuple[tuple[int, Message], ...]
    role: Role
    leader_id: str | None
    commit_index: int
    applied_index: int
    election_deadline: int
    heartbeat_deadline: int
    election_timeout: int
    timeout_draws: int
    leader_contact: int
    quiet_until: int
    votes_granted: frozenset[str]
    votes_rejected: frozenset[str]
    progress: tuple[Progress, ...]
    configs: tuple[tuple[int, Membership], ...]
    peers: tuple[str, ...]
    snapshot: SnapshotMeta | None
    incoming: tuple[SnapshotMeta, int] | None
    transfer_target: str | None
    transfer_deadline: int
    read_seq: int
    read_acks: tuple[int, ...]
    pending_reads: tuple[PendingRead, ...]
    beats: tuple[tuple[int, int], ...]
    lease_until: int

    def __init__(self, state: NodeState) -> None:
        self.__dict__ = state.__dict__.copy()
        self.old = state
        self.membership = state.configs[-1][1]
        # Copied into a list on first change (1,001-node clusters rebuild a
        # 1,000-tuple once per step, not once per update).
        self.progress_list: list[Progress] | None = None
        self.actions: list[Action] = []
        self.held_new: list[Message] = []
        # What this step must persist (Rule 3).
        self.persist_hard = False
        self.truncate_from: int | None = None
        self.new_entries_from: int | None = None
        self.snapshot_chunk: SnapshotChunk | None = None
        self.installed: SnapshotMeta | None = None
        self.read_broadcast = False

    # ------------------------------------------------------------------ output

    def send(self, message: Message) -> None:
        self.actions.append(Send(message))

    def hold(self, message: Message) -> None:
        """Send ``message`` once everything persisted so far is durable (Rule 4)."""
        self.held_new.append(message)

    def drop(self, message: object, reason: DropReason, detail: str = "") -> None:
        self.actions.append(MessageDropped(message, reason, detail))

    def set_hard(self, hard: HardState) -> None:
        self.hard = hard
        self.persist_hard = True

    def append(self, entries: tuple[Entry, ...]) -> None:
        first = self.log.last_index + 1
        self.log = self.log.append(entries)
        if self.new_entries_from is None:
            self.new_entries_from = first
        for k, e in enumerate(entries):
            if e.kind is _CONFIG:
                # Rule 6: in effect from the moment it is in the log.
                self.set_configs((*self.configs, (first + k, Membership.decode_untrusted(e.data))))

    def truncate(self, index: int) -> None:
        """Drop entries ``>= index``: they conflict with the leader's (Raft §5.3)."""
        self.log = self.log.truncate_from(index)
        if self.truncate_from is None or index < self.truncate_from:
            self.truncate_from = index
        if self.new_entries_from is not None and self.new_entries_from > index:
            self.new_entries_from = None
        if self.stable_index >= index:
            self.stable_index = index - 1
        if self.configs[-1][0] >= index:
            # Rule 6: a configuration that leaves the log stops being in effect.
            self.set_configs(tuple(c for c in self.configs if c[0] < index))

    def set_configs(self, configs: tuple[tuple[int, Membership], ...]) -> None:
        old = self.membership
        self.configs = configs
        new = configs[-1][1]
        self.membership = new
        if new.members == old.members:
            return
        me = self.config.node_id
        peers = _peers_of(new, me)
        if self.role is LEADER:
            # Keep what we know of members that stay; new ones start probing.
            known = {p: self.get_progress(i) for i, p in enumerate(self.peers)}
            acks = dict(zip(self.peers, self.read_acks, strict=True))
            last = self.log.last_index
            self.progress = tuple(known.get(p) or prog.initial(last) for p in peers)
            self.read_acks = tuple(acks.get(p, 0) for p in peers)
            self.progress_list = None
        self.peers = peers

    def get_progress(self, i: int) -> Progress:
        pl = self.progress_list
        return pl[i] if pl is not None else self.progress[i]

    def set_progress(self, i: int, pr: Progress) -> None:
        pl = self.progress_list
        if pl is None:
            if self.progress[i] is pr:
                return  # unchanged (a heartbeat answer from an active peer)
            pl = self.progress_list = list(self.progress)
        pl[i] = pr

    def finish(self) -> tuple[NodeState, tuple[Action, ...]]:
        old = self.old
        actions = self.actions
        if self.read_broadcast and self.role is LEADER:
            self.broadcast_heartbeat()
        persist_seq = old.persist_seq
        unstable = self.unstable
        # Rule 3: one Persist for the whole step.
        if (
            self.persist_hard
            or self.truncate_from is not None
            or self.new_entries_from is not None
            or self.snapshot_chunk is not None
        ):
            persist_seq += 1
            log = self.log
            first = self.new_entries_from
            if first is None and self.truncate_from is not None:
                first = self.truncate_from
            if first is None:
                first = log.last_index + 1
            entries = log.slice(first, log.last_index + 1) if first <= log.last_index else ()
            hard = self.hard if self.persist_hard else None
            actions.append(
                Persist(persist_seq, hard, self.truncate_from, first, entries, self.snapshot_chunk)
            )
            unstable = (
                *unstable,
                Unstable(persist_seq, log.last_index, log.last_term, hard, self.installed),
            )
        # Rule 4: release held messages whose Persists are durable.
        held = self.held
        if self.held_new:
            if self.persisted_seq >= persist_seq and not held:
                for m in self.held_new:
                    actions.append(Send(m))
            else:
                held = held + tuple((persist_seq, m) for m in self.held_new)
        if held and held[0][0] <= self.persisted_seq:
            k = 0
            while k < len(held) and held[k][0] <= self.persisted_seq:
                actions.append(Send(held[k][1]))
                k += 1
            held = held[k:]
        # Raft §7: a durable snapshot newer than what the state machine holds
        # replaces it; the log continues after it.
        snap = self.snapshot
        if snap is not None and snap.index > self.applied_index:
            actions.append(RestoreSnapshot(snap))
            self.applied_index = snap.index
        # Raft §5.3: apply committed entries, in order, once each -- and only
        # those this node has itself made durable (and still holds: while a
        # snapshot install is not yet durable, nothing is applied).
        target = min(self.commit_index, self.stable_index)
        if target > self.applied_index >= self.log.offset:
            first = self.applied_index + 1
            actions.append(Apply(first, self.log.slice(first, target + 1)))
            self.applied_index = target
        # (``is`` first: these are nearly always the very same objects.)
        now_hard = self.hard
        leader_id = self.leader_id
        if (
            self.role is not old.role
            or (now_hard is not old.hard and now_hard.term != old.hard.term)
            or (leader_id is not old.leader_id and leader_id != old.leader_id)
        ):
            actions.append(RoleChanged(self.role, now_hard.term, leader_id))
        old_ms = old.configs[-1][1]
        if self.membership is not old_ms and self.membership != old_ms:
            # (Compaction moves the index of the base configuration without
            # changing it: nothing to report then.)
            actions.append(MembershipChanged(self.membership, self.configs[-1][0]))
        d = self.__dict__
        if self.progress_list is not None:
            d["progress"] = tuple(self.progress_list)
        if persist_seq != old.persist_seq:
            d["persist_seq"] = persist_seq
            d["unstable"] = unstable
        d["held"] = held
        assert len(d) == _N_FIELDS, sorted(d)  # nothing but NodeState's fields
        state = _new_state(NodeState)
        _set_dict(state, "__dict__", d)
        return state, tuple(actions)

    # ------------------------------------------------------------------ roles

    def reset_election_timer(self, redraw: bool) -> None:
        if redraw:
            self.election_timeout = _draw_timeout(self.config, self.hard.term, self.timeout_draws)
            self.timeout_draws += 1
        self.election_deadline = self.now + self.election_timeout

    def leave_leadership(self) -> None:
        """Drop everything only a leader keeps; answer what is still waiting."""
        if self.role is LEADER:
            for r in self.pending_reads:
                self.answer_read(r.request_id, r.origin, None, RejectReason.NOT_LEADER)
            if self.transfer_target is not None and self.leader_id != self.transfer_target:
                # (A transfer that worked ends with the target as our leader.)
                self.actions.append(TransferAborted(self.transfer_target, "leadership lost"))
        self.progress = ()
        self.progress_list = None
        self.transfer_target = None
        self.read_acks = ()
        self.pending_reads = ()
        self.beats = ()
        self.lease_until = 0

    def become_follower(self, term: int, leader: str | None) -> None:
        if term > self.hard.term:
            # Raft §5.1: adopt the newer term; the vote is for that term only.
            self.set_hard(HardState(term, None))
        redraw = self.role is not FOLLOWER or term != self.old.hard.term
        was_leader = self.role is LEADER
        self.leader_id = leader
        self.leave_leadership()
        self.role = FOLLOWER
        if leader is not None:
            self.leader_contact = self.now
        self.votes_granted = self.votes_rejected = _EMPTY
        if was_leader or leader is not None:
            self.reset_election_timer(redraw)
        elif redraw:
            # Raft Figure 2: only AppendEntries from the current leader or a
            # granted vote put an election off. Learning of a newer term from
            # a candidate -- one we may refuse -- keeps our timer running (as
            # LogCabin does); resetting it would let servers that cannot win
            # (§5.4.1) delay the ones that can, one timeout per attempt (the
            # Figure 16 reproduction in notebooks/ measures the difference).
            # The new term still gets its own randomized timeout for next time.
            self.election_timeout = _draw_timeout(self.config, self.hard.term, self.timeout_draws)
            self.timeout_draws += 1

    def may_campaign(self) -> bool:
        me = self.config.node_id
        if self.membership.is_voter(me):
            return True
        # Thesis §4.1: a server missing from its latest configuration still
        # stands while that configuration is uncommitted -- it may still be
        # needed (Figure 4.6) -- but does not count its own vote (the joint
        # vote count only counts the configuration's voters).
        configs = self.configs
        return (
            configs[-1][0] > self.commit_index
            and len(configs) > 1
            and configs[-2][1].is_voter(me)
        )

    def campaign(self, transfer: bool = False) -> None:
        if not self.may_campaign():
            # Learners, joining and removed nodes never campaign (thesis §4.2.1).
            self.reset_election_timer(False)
            return
        # A server standing only as a voter of its previous configuration
        # always asks first (pre-vote): it cannot win without a real quorum,
        # so it must not move everyone's term while trying.
        pre_vote = self.config.pre_vote or not self.membership.is_voter(self.config.node_id)
        if pre_vote and not transfer:
            self.become_pre_candidate()
        else:
            self.become_candidate(transfer)

    def voters_to_ask(self) -> list[str]:
        ms = self.membership
        me = self.config.node_id
        if ms.is_voter(me):
            return [p for p in self.peers if ms.is_voter(p)]
        # Standing for an uncommitted configuration that left us out (thesis
        # §4.1): ask the voters of both, so our term reaches everyone involved.
        previous = self.configs[-2][1]
        return [p for p in self.peers if ms.is_voter(p) or previous.is_voter(p)]

    def become_pre_candidate(self) -> None:
        # Thesis §9.6: ask first whether we *could* win, without touching the
        # term, so a node that was partitioned away cannot disrupt the cluster.
        cfg = self.config
        self.role = PRE_CANDIDATE
        self.leader_id = None
        self.votes_granted = frozenset((cfg.node_id,))
        self.votes_rejected = _EMPTY
        self.reset_election_timer(True)
        if self.election_result() is VoteResult.WON:
            self.become_candidate(False)
            return
        term = self.hard.term + 1
        li, lt = self.log.last_index, self.log.last_term
        for peer in self.voters_to_ask():
            self.send(VoteRequest(term, cfg.node_id, peer, li, lt, True))

    def become_candidate(self, transfer: bool) -> None:
        # Raft §5.2: increment the term, vote for self, ask everyone else.
        cfg = self.config
        # Thesis §4.1: a server outside its latest configuration "does not count
        # its own vote" -- nor casts it, so it may still vote for another
        # candidate of this term, which may be the one that can win.
        me_votes = self.membership.is_voter(cfg.node_id)
        self.set_hard(HardState(self.hard.term + 1, cfg.node_id if me_votes else None))
        self.role = CANDIDATE
        self.leader_id = None
        # Our own vote counts once it is durable (Rule 4; see on_persisted).
        self.votes_granted = self.votes_rejected = _EMPTY
        self.reset_election_timer(True)
        term = self.hard.term
        li, lt = self.log.last_index, self.log.last_term
        for peer in self.voters_to_ask():
            self.send(VoteRequest(term, cfg.node_id, peer, li, lt, False, transfer))

    def tally_own_vote(self) -> None:
        """Count the candidate's self-vote once its term and vote are durable."""
        me = self.config.node_id
        if self.durable_hard == self.hard and me not in self.votes_granted:
            self.votes_granted = self.votes_granted | {me}
            self.check_election()

    def election_result(self) -> VoteResult:
        ms = self.membership
        return joint_vote_result(ms.voters, ms.outgoing, self.votes_granted, self.votes_rejected)

    def check_election(self) -> None:
        result = self.election_result()
        if result is VoteResult.LOST:
            self.become_follower(self.hard.term, None)
        elif result is VoteResult.WON:
            if self.role is PRE_CANDIDATE:
                self.become_candidate(False)
                # A single voter wins as soon as its own vote is durable.
            elif self.durable_hard.term == self.hard.term:
                self.become_leader()

    def become_leader(self) -> None:
        cfg = self.config
        self.role = LEADER
        self.leader_id = cfg.node_id
        self.votes_granted = self.votes_rejected = _EMPTY
        last = self.log.last_index
        self.progress = tuple(prog.initial(last) for _ in self.peers)
        self.progress_list = None
        self.read_acks = tuple(0 for _ in self.peers)
        self.read_seq = 0
        self.pending_reads = ()
        self.beats = ()
        self.lease_until = 0
        self.transfer_target = None
        self.heartbeat_deadline = self.now + cfg.heartbeat_interval
        # For a leader, election_deadline is the next check-quorum round.
        self.election_deadline = self.now + cfg.election_timeout
        self.leader_contact = self.now
        # Raft §5.4.2 / §8: commit a no-op of our own term so that entries of
        # earlier terms become committed through it.
        self.append((Entry(self.hard.term, b"", _NOOP),))
        self.broadcast_append()

    # ------------------------------------------------------------------ events

    def on_tick(self, now: int) -> None:
        self.now = now
        cfg = self.config
        if self.role is LEADER:
            if self.transfer_target is not None and now >= self.transfer_deadline:
                # Thesis §3.10: give up after an election timeout and accept
                # proposals again.
                self.actions.append(TransferAborted(self.transfer_target, "timed out"))
                self.transfer_target = None
            if now >= self.election_deadline:
                # Thesis §6.2 check-quorum: step down if a majority (of each
                # half, when joint) has not been heard from during the last
                # election timeout.
                if cfg.check_quorum:
                    me = cfg.node_id
                    active = {me}
                    for i, peer in enumerate(self.peers):
                        pr = self.get_progress(i)
                        if pr.recent_active:
                            active.add(peer)
                            self.set_progress(i, prog.mark_inactive(pr))
                    ms = self.membership
                    if not has_joint_quorum(ms.voters, ms.outgoing, frozenset(active)):
                        self.become_follower(self.hard.term, None)
                        return
                # A leader confirmed by a quorum is within its own lease too:
                # it ignores disruptive vote requests like its followers do.
                self.leader_contact = now
                self.election_deadline = now + cfg.election_timeout
            if now >= self.heartbeat_deadline:
                self.heartbeat_deadline = now + cfg.heartbeat_interval
                self.broadcast_heartbeat()
        elif now >= self.election_deadline:
            self.campaign()

    def on_propose(self, request_id: int, data: bytes) -> None:
        if self.role is LEADER:
            self.leader_propose([(request_id, data)], None)
        elif self.leader_id is not None and self.config.forward_proposals:
            me = self.config.node_id
            self.send(ForwardProposal(self.hard.term, me, self.leader_id, request_id, data))
        elif self.leader_id is not None:
            self.actions.append(
                ProposalRejected(request_id, RejectReason.NOT_LEADER, self.leader_id)
            )
        else:
            self.actions.append(ProposalRejected(request_id, RejectReason.NO_LEADER, None))

    def on_propose_many(self, proposals: tuple[Propose, ...]) -> None:
        if self.role is LEADER:
            self.leader_propose([(p.request_id, p.data) for p in proposals], None)
        else:
            for p in proposals:
                self.on_propose(p.request_id, p.data)

    def leader_propose(self, proposals: list[tuple[int, bytes]], origin: str | None) -> None:
        """Append ``(request_id, data)`` proposals as one batch: one append, one
        Persist, one broadcast (``origin``: the follower that forwarded them)."""
        if self.transfer_target is not None:
            # Thesis §3.10: the old leader stops accepting client requests
            # while the transfer is under way.
            for request_id, _ in proposals:
                self.answer(origin, request_id, RejectReason.TRANSFERRING)
            return
        room = self.config.max_uncommitted_entries - (self.log.last_index - self.commit_index)
        term = self.hard.term
        first = self.log.last_index + 1
        me = self.config.node_id
        entries: list[Entry] = []
        for request_id, data in proposals:
            if len(entries) >= room:
                # Flow control (etcd's MaxUncommittedEntriesSize).
                self.answer(origin, request_id, RejectReason.DROPPED)
                continue
            index = first + len(entries)
            entries.append(Entry(term, data))
            if origin is None:
                self.actions.append(ProposalAccepted(request_id, index, term))
            else:
                self.send(ForwardResponse(term, me, origin, request_id, index, term))
        if entries:
            self.append(tuple(entries))
            self.broadcast_append()

    def answer(self, origin: str | None, request_id: int, reason: RejectReason) -> None:
        hint = self.leader_id
        if origin is None:
            self.actions.append(ProposalRejected(request_id, reason, hint))
        else:
            self.send(
                ForwardResponse(
                    self.hard.term, self.config.node_id, origin, request_id, 0, 0, reason, hint
                )
            )

    def on_change_membership(self, request_id: int, ops: tuple[ChangeOp, ...]) -> None:
        def reject(reason: RejectReason, detail: str) -> None:
            self.actions.append(ProposalRejected(request_id, reason, self.leader_id, detail))

        if self.role is not LEADER:
            if self.leader_id is None:
                reject(RejectReason.NO_LEADER, "no leader is known")
            else:
                reject(RejectReason.NOT_LEADER, "membership changes are made at the leader")
            return
        if self.transfer_target is not None:
            reject(RejectReason.TRANSFERRING, "a leadership transfer is under way")
            return
        ms = self.membership
        if ms.is_joint or self.configs[-1][0] > self.commit_index:
            # One change at a time (thesis §4.1): the next may start only once
            # the previous one is committed (and, if joint, left).
            reject(RejectReason.CHANGE_IN_PROGRESS, "the previous change is not finished")
            return
        if self.log.term_at(self.commit_index) != self.hard.term:
            # The 2015 fix to single-server changes (raft-dev, Ongaro): a leader
            # may not append a configuration entry until it has committed an
            # entry of its own term, or a change from an earlier term that was
            # never committed could combine with this one into two disjoint
            # majorities.
            reject(RejectReason.NOT_READY, "no entry of the leader's term is committed yet")
            return
        target, problem = apply_changes(ms, ops)
        if problem is not None:
            reject(RejectReason.INVALID_CHANGE, problem)
            return
        term = self.hard.term
        self.append((Entry(term, target.encode(), _CONFIG),))
        self.actions.append(ProposalAccepted(request_id, self.log.last_index, term))
        self.broadcast_append()

    def on_transfer(self, target: str | None) -> None:
        me = self.config.node_id
        if self.role is not LEADER:
            self.actions.append(TransferAborted(target or "", "not the leader"))
            return
        ms = self.membership
        if target is None:
            # The most up-to-date voter: the fastest to catch up (thesis §3.10).
            best = -1
            for i, peer in enumerate(self.peers):
                match = self.get_progress(i).match_index
                if ms.is_voter(peer) and match > best:
                    target, best = peer, match
            if target is None:
                self.actions.append(TransferAborted("", "no other voter"))
                return
        if target == me:
            return
        if not ms.is_voter(target):
            self.actions.append(TransferAborted(target, "not a voter"))
            return
        if self.transfer_target is not None:
            if self.transfer_target == target:
                return
            self.actions.append(TransferAborted(self.transfer_target, "superseded"))
        self.transfer_target = target
        self.transfer_deadline = self.now + self.config.election_timeout
        # A lease must not outlive our leadership: the target's election
        # bypasses the followers' lease, so stop serving lease reads now.
        self.lease_until = 0
        self.maybe_send_timeout_now()

    def maybe_send_timeout_now(self) -> None:
        target = self.transfer_target
        assert target is not None
        i = self.peer_slot(target)
        if i < 0 or not self.membership.is_voter(target):
            # A configuration change removed (or demoted) it meanwhile.
            self.actions.append(TransferAborted(target, "not a voter"))
            self.transfer_target = None
            return
        if self.get_progress(i).match_index >= self.log.last_index:
            self.send(TimeoutNow(self.hard.term, self.config.node_id, target))
        else:
            # Bring its log up to date first (thesis §3.10 step 1).
            self.send_append(i, True)

    def on_snapshot_saved(self, index: int) -> None:
        cfg = self.config
        term = self.log.term_at(index)
        assert term is not None
        self.snapshot = SnapshotMeta(index, term, self.old.membership_at(index))
        # Raft §7: the snapshot replaces the log up to it; keep a trailing
        # window so that a follower just behind catches up from the log.
        offset = max(self.log.offset, index - cfg.snapshot_trailing_entries)
        if offset > self.log.offset:
            base = self.old.membership_at(offset)
            self.log = self.log.compact_to(offset)
            kept = tuple(c for c in self.configs if c[0] > offset)
            self.configs = ((offset, base), *kept)

    def on_persisted(self, seq: int) -> None:
        self.persisted_seq = seq
        unstable = self.unstable
        log = self.log
        k = 0
        while k < len(unstable) and unstable[k].seq <= seq:
            u = unstable[k]
            if u.hard_state is not None:
                self.durable_hard = u.hard_state
            if u.snapshot is not None and (
                self.snapshot is None or u.snapshot.index > self.snapshot.index
            ):
                self.snapshot = u.snapshot
            # The write covered up to (last_index, last_term). If that entry is
            # still in the log, everything before it is the same too (Log
            # Matching, §5.3) and is now durable.
            if u.last_index > self.stable_index and log.term_at(u.last_index) == u.last_term:
                self.stable_index = u.last_index
            k += 1
        self.unstable = unstable[k:]
        if self.role is CANDIDATE:
            self.tally_own_vote()
        elif self.role is LEADER:
            self.maybe_commit()

    def on_message(self, m: object) -> None:
        reason = malformed_reason(m)
        if reason is not None:
            self.drop(m, DropReason.MALFORMED, reason)
            return
        msg: Message = m  # type: ignore[assignment]
        cfg = self.config
        me = cfg.node_id
        if msg.dst != me:
            self.drop(msg, DropReason.WRONG_RECIPIENT, f"addressed to {msg.dst!r}")
            return
        if msg.src == me or not msg.src:
            self.drop(msg, DropReason.UNKNOWN_SENDER, f"claims to come from {msg.src!r}")
            return
        # malformed_reason admitted only the exact message classes, so from
        # here ``cls is X`` is ``isinstance(msg, X)``, at a fraction of the cost.
        cls = type(msg)
        slot = self.peer_slot(msg.src)
        if slot < 0 and cls not in _ANY_SENDER:
            self.drop(msg, DropReason.UNKNOWN_SENDER, f"{msg.src!r} is not a member")
            return
        if cls in _OUTSIDE_TERM_RULES:
            if isinstance(msg, ForwardProposal):
                self.on_forward(msg)
            elif isinstance(msg, ForwardResponse):
                self.on_forward_response(msg)
            elif isinstance(msg, ReadIndexRequest):
                if self.role is LEADER:
                    self.leader_read(msg.request_id, msg.src)
                else:
                    self.answer_read(msg.request_id, msg.src, None, RejectReason.NOT_LEADER)
            else:
                assert isinstance(msg, ReadIndexResponse)
                self.on_read_index_response(msg)
            return

        # --- Term rules first (Raft §5.1), as etcd-io/raft's Step does.
        term = self.hard.term
        if msg.term > term:
            if isinstance(msg, VoteRequest):
                if not msg.transfer and self.in_leader_lease():
                    # Thesis §4.2.3: a node that heard from a leader within the
                    # minimum election timeout ignores vote requests, so a
                    # removed or partitioned server cannot depose a live
                    # leader. A transfer's election is the leader's own wish.
                    self.drop(msg, DropReason.LEADER_LEASE, f"leader {self.leader_id!r} is live")
                    return
                if (
                    slot < 0
                    and not msg.pre_vote
                    and not self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
                ):
                    # A non-member that could never get our vote (§5.4.1) must
                    # not make us adopt its term either: this is the removed
                    # server of thesis §4.2.3, which lacks the entry removing it.
                    self.drop(
                        msg, DropReason.UNKNOWN_SENDER,
                        f"{msg.src!r} is not a member and its log is behind ours",
                    )
                    return
                if msg.pre_vote:
                    self.on_vote_request(msg)
                    return
            if isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                # A granted pre-vote carries the term we *would* take; it does
                # not tell us of a newer term (thesis §9.6).
                pass
            else:
                if msg.src == self.transfer_target:
                    # The transfer worked: the target moved to a new term, as asked.
                    self.transfer_target = None
                leader = msg.src if isinstance(msg, _LEADER_TRAFFIC) else None
                self.become_follower(msg.term, leader)
        elif msg.term < term:
            # Tell a stale leader or candidate about our term so it steps
            # down (Raft §5.1); other stale traffic is simply dropped.
            if isinstance(msg, AppendRequest):
                self.send(AppendResponse(term, me, msg.src, False, 0))
            elif isinstance(msg, Heartbeat):
                self.send(HeartbeatResponse(term, me, msg.src))
            elif isinstance(msg, InstallSnapshot):
                self.send(InstallSnapshotResponse(term, me, msg.src, msg.meta.index, 0))
            elif isinstance(msg, VoteRequest):
                self.send(VoteResponse(term, me, msg.src, False, msg.pre_vote))
            else:
                self.drop(msg, DropReason.STALE_TERM, f"term {msg.term} < {term}")
            return

        # --- Messages every role handles alike.
        if cls is VoteRequest:
            self.on_vote_request(msg)  # type: ignore[arg-type]
            return

        # --- By role.
        role = self.role
        if role is LEADER:
            if cls is HeartbeatResponse:
                self.leader_on_heartbeat_response(slot, msg.read_seq)  # type: ignore[union-attr]
            elif cls is AppendResponse:
                self.leader_on_append_response(slot, msg)  # type: ignore[arg-type]
            elif cls is InstallSnapshotResponse:
                self.leader_on_snapshot_response(slot, msg)  # type: ignore[arg-type]
            elif cls is VoteResponse:
                pass  # late votes after winning: nothing to do
            else:
                # Election Safety (§5.2) makes a second leader in our term impossible.
                self.drop(msg, DropReason.UNEXPECTED, "another leader claims our term")
            return
        if cls in _LEADER_TRAFFIC:
            if role is not FOLLOWER:
                # Raft §5.2: a candidate that hears from a leader of its term
                # (or newer) returns to follower.
                self.become_follower(msg.term, msg.src)
            if cls is Heartbeat:
                self.follower_on_heartbeat(msg)  # type: ignore[arg-type]
            elif cls is AppendRequest:
                self.follower_on_append(msg)  # type: ignore[arg-type]
            else:
                self.follower_on_snapshot(msg)  # type: ignore[arg-type]
            return
        if isinstance(msg, TimeoutNow):
            if role is FOLLOWER and msg.src == self.leader_id:
                # Thesis §3.10: the leader asks us to take over; skip the
                # pre-vote (the leader itself wants this election).
                self.campaign(transfer=True)
            else:
                self.drop(msg, DropReason.UNEXPECTED, "TimeoutNow not from our leader")
            return
        if isinstance(msg, VoteResponse):
            self.candidate_on_vote_response(msg)
            return
        self.drop(msg, DropReason.UNEXPECTED, f"{type(msg).__name__} while {role.value}")

    def peer_slot(self, node: str) -> int:
        peers = self.peers
        i = bisect.bisect_left(peers, node)
        return i if i < len(peers) and peers[i] == node else -1

    def in_leader_lease(self) -> bool:
        if not self.config.check_quorum:
            return False
        if self.leader_id is not None:
            return self.now - self.leader_contact < self.config.election_timeout
        # Just restarted: we may have acknowledged a leader's heartbeats right
        # before a crash, and its lease counts on us not to vote for an
        # election timeout (thesis §6.4.1).
        return self.now < self.old.quiet_until

    def on_vote_request(self, m: VoteRequest) -> None:
        me = self.config.node_id
        hard = self.hard
        # etcd-io/raft's canVote: we already voted for this candidate (a
        # retransmission), or we have no vote and no leader in this term, or
        # it is a pre-vote for a later term.
        can_vote = (
            hard.voted_for == m.src
            or (hard.voted_for is None and self.leader_id is None)
            or (m.pre_vote and m.term > hard.term)
        )
        # Raft §5.4.1: only for a candidate whose log is at least as up to date.
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            if m.pre_vote:
                self.send(VoteResponse(m.term, me, m.src, True, True))
            else:
                if hard.voted_for != m.src:
                    self.set_hard(HardState(hard.term, m.src))
                # Figure 2: granting a vote resets the election timer.
                self.reset_election_timer(False)
                self.hold(VoteResponse(hard.term, me, m.src, True, False))
        else:
            self.send(VoteResponse(hard.term, me, m.src, False, m.pre_vote))

    def candidate_on_vote_response(self, m: VoteResponse) -> None:
        role = self.role
        if (role is PRE_CANDIDATE) != m.pre_vote or role is FOLLOWER:
            return  # a late answer to a round we already left: normal, ignore
        if m.granted:
            if m.src not in self.votes_granted:
                self.votes_granted = self.votes_granted | {m.src}
        elif m.src not in self.votes_rejected:
            self.votes_rejected = self.votes_rejected | {m.src}
        self.check_election()

    # ------------------------------------------------------------------ follower

    def heard_from_leader(self, leader: str) -> None:
        """Any message from the current leader: note it, and put off the election."""
        self.leader_id = leader
        self.leader_contact = self.now
        self.reset_election_timer(False)

    def follower_on_heartbeat(self, m: Heartbeat) -> None:
        if m.leader_commit > self.log.last_index:
            # The leader only sends min(match, commit), which we hold; anything
            # more is a confused or hostile leader: ignore the whole message.
            self.drop(m, DropReason.OUT_OF_RANGE, "leader_commit beyond our log")
            return
        self.heard_from_leader(m.src)
        if m.leader_commit > self.commit_index:
            self.commit_index = m.leader_commit
        self.send(HeartbeatResponse(self.hard.term, self.config.node_id, m.src, m.read_seq))

    def follower_on_append(self, m: AppendRequest) -> None:
        me = self.config.node_id
        term = self.hard.term
        self.heard_from_leader(m.src)
        prev = m.prev_log_index
        if prev < self.commit_index:
            # Everything up to our commit index already matches the leader's
            # (Leader Completeness, §5.4); tell it where we are.
            self.hold(AppendResponse(term, me, m.src, True, self.commit_index))
            return
        log = self.log
        if log.term_at(prev) != m.prev_log_term:
            # Raft §5.3 consistency check failed. Hint at where our logs may
            # agree so the leader skips a whole term per round trip.
            hint_index, hint_term = log.find_conflict_by_term(
                min(prev, log.last_index), m.prev_log_term
            )
            self.send(AppendResponse(term, me, m.src, False, prev, hint_index, hint_term))
            return
        entries = m.entries
        n = len(entries)
        last = log.last_index
        k = 0
        while k < n:
            i = prev + 1 + k
            if i > last:
                break
            if log.term_at(i) != entries[k].term:
                # Raft §5.3: a conflicting entry and all that follow it go.
                # (i > prev >= commit_index, so no committed entry is touched.)
                self.truncate(i)
                break
            k += 1
        if k < n:
            self.append(entries[k:] if k else entries)
        last_new = prev + n
        commit = min(m.leader_commit, last_new)
        if commit > self.commit_index:
            self.commit_index = commit
        self.hold(AppendResponse(term, me, m.src, True, last_new))

    def follower_on_snapshot(self, m: InstallSnapshot) -> None:
        me = self.config.node_id
        term = self.hard.term
        self.heard_from_leader(m.src)
        meta = m.meta
        if meta.index <= self.commit_index:
            # We already hold everything it covers, committed: installing it
            # would move our state machine backwards. Say where we are.
            self.incoming = None
            self.hold(
                InstallSnapshotResponse(
                    term, me, m.src, meta.index, m.offset, True, self.commit_index
                )
            )
            return
        incoming = self.incoming
        if m.offset != 0 and (
            incoming is None or incoming[0] != meta or incoming[1] != m.offset
        ):
            # A lost, duplicated or reordered chunk, or we restarted: tell the
            # leader how much of this snapshot we hold; it resumes there.
            have = incoming[1] if incoming is not None and incoming[0] == meta else 0
            self.send(InstallSnapshotResponse(term, me, m.src, meta.index, have))
            return
        self.snapshot_chunk = SnapshotChunk(meta, m.offset, m.data, m.done)
        received = m.offset + len(m.data)
        if not m.done:
            self.incoming = (meta, received)
            self.hold(InstallSnapshotResponse(term, me, m.src, meta.index, received))
            return
        self.incoming = None
        self.install_snapshot(meta)
        self.hold(InstallSnapshotResponse(term, me, m.src, meta.index, received, True, meta.index))

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Raft §7: the snapshot replaces the log up to it (and all of it, unless
        our log holds the snapshot's last entry, in which case what follows stays)."""
        log = self.log
        keep_tail = meta.index <= log.last_index and log.term_at(meta.index) == meta.term
        if keep_tail:
            self.log = log.compact_to(meta.index)
            kept = tuple(c for c in self.configs if c[0] > meta.index)
        else:
            if log.last_index > meta.index:
                self.truncate_from = meta.index + 1
            self.log = RaftLog(PVector.empty(), meta.index, meta.term)
            self.new_entries_from = None
            kept = ()
            # Nothing after the snapshot survives; what it covers becomes
            # durable with it (see on_persisted).
            self.stable_index = min(self.stable_index, meta.index)
        self.set_configs(((meta.index, meta.membership), *kept))
        self.installed = meta
        if meta.index > self.commit_index:
            self.commit_index = meta.index

    # ------------------------------------------------------------------ leader

    def broadcast_heartbeat(self) -> None:
        cfg = self.config
        me = cfg.node_id
        term = self.hard.term
        commit = self.commit_index
        self.read_broadcast = False
        if self.pending_reads or cfg.lease_reads:
            # A new round: acknowledgements of it prove leadership at a time
            # after everything registered so far (thesis §6.4 step 3).
            self.read_seq += 1
            if cfg.lease_reads:
                # Thesis §6.4.1: the lease runs from when the heartbeats were
                # *sent*, never from when their answers arrived. A round older
                # than a lease can no longer give one: forget it.
                horizon = self.now - cfg.lease_duration
                kept = tuple(b for b in self.beats if b[1] > horizon)
                self.beats = (*kept, (self.read_seq, self.now))
        seq = self.read_seq
        for i, peer in enumerate(self.peers):
            pr = self.get_progress(i)
            self.send(Heartbeat(term, me, peer, min(pr.match_index, commit), seq))
        if self.pending_reads:
            # With no other voter (only learners, or nobody) we are the quorum.
            self.confirm_reads()

    def broadcast_append(self, allow_empty: bool = False) -> None:
        for i in range(len(self.peers)):
            # Fill the pipeline: a batch longer than max_entries_per_message
            # goes out as several messages at once (bounded by max_inflight).
            if self.send_append(i, allow_empty):
                while self.send_append(i, False):
                    pass

    def send_append(self, i: int, allow_empty: bool) -> bool:
        """Send follower ``i`` what it lacks, if its Progress allows (Raft §5.3)."""
        cfg = self.config
        pr = self.get_progress(i)
        if prog.is_paused(pr, cfg.max_inflight):
            return False
        if pr.state is prog.SNAPSHOT:
            return self.send_snapshot_chunk(i, pr)
        log = self.log
        nxt = pr.next_index
        last = log.last_index
        if nxt > last and not allow_empty:
            return False
        prev = nxt - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            # Raft §7: the follower needs entries we compacted away.
            snap = self.snapshot
            if snap is None or snap.index < log.offset:
                # Our snapshot (an installed one) is not durable yet: wait.
                return False
            pr = prog.become_snapshot(pr, snap.index)
            self.set_progress(i, pr)
            return self.send_snapshot_chunk(i, pr)
        if nxt <= last:
            entries = log.slice(nxt, min(last + 1, nxt + cfg.max_entries_per_message))
            budget = cfg.max_bytes_per_message
            size = 0
            for k, e in enumerate(entries):
                size += len(e.data)
                if size > budget and k > 0:
                    entries = entries[:k]
                    break
        else:
            entries = ()
        self.send(
            AppendRequest(
                self.hard.term, cfg.node_id, self.peers[i], prev, prev_term, entries,
                self.commit_index,
            )
        )
        self.set_progress(i, prog.sent(pr, prev + len(entries), len(entries)))
        return True

    def send_snapshot_chunk(self, i: int, pr: Progress) -> bool:
        snap = self.snapshot
        assert snap is not None
        if pr.snap_index != snap.index:
            # A newer snapshot replaced the one being sent: start over with it.
            pr = prog.become_snapshot(pr, snap.index)
        cfg = self.config
        message = InstallSnapshot(
            self.hard.term, cfg.node_id, self.peers[i], snap, pr.snap_offset
        )
        self.actions.append(SendSnapshot(message, cfg.snapshot_chunk_bytes))
        self.set_progress(i, prog.chunk_sent(pr))
        return False  # one chunk at a time: never loop on it

    def leader_on_append_response(self, i: int, m: AppendResponse) -> None:
        cfg = self.config
        pr = self.get_progress(i)
        if not m.success:
            hint = min(m.hint_index, self.log.last_index)
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(hint, m.hint_term)
            new = prog.rejected(pr, m.index, hint)
            if new is None:
                if not pr.recent_active:
                    self.set_progress(i, prog.heard_from(pr, cfg.max_inflight))
                return
            self.set_progress(i, new)
            self.send_append(i, True)
            return
        if m.index > self.log.last_index:
            self.drop(m, DropReason.OUT_OF_RANGE, f"acknowledges {m.index} > our last index")
            return
        new = prog.acked(pr, m.index)
        if new is None:
            if not pr.recent_active:
                self.set_progress(i, prog.heard_from(pr, cfg.max_inflight))
            return
        self.set_progress(i, new)
        self.after_ack(i, pr, new)

    def after_ack(self, i: int, old: Progress, new: Progress) -> None:
        peer = self.peers[i]
        self.maybe_commit()
        if self.role is not LEADER:
            return  # a removed leader stepped down in maybe_commit
        # A configuration committed in maybe_commit may have changed the peers.
        i = self.peer_slot(peer)
        if i < 0:
            return
        # Refill the pipeline (etcd: "for r.maybeSendAppend(...)").
        sent = False
        while self.send_append(i, False):
            sent = True
        if (
            not sent
            and old.state is not prog.REPLICATE
            and old.match_index < new.match_index <= self.commit_index
        ):
            # A follower that just caught up missed the commit broadcasts while
            # it was probing: tell it the commit index now, not at the next
            # heartbeat (etcd's CanBumpCommit).
            self.send_append(i, True)
        if self.transfer_target == peer:
            self.maybe_send_timeout_now()

    def leader_on_snapshot_response(self, i: int, m: InstallSnapshotResponse) -> None:
        pr = self.get_progress(i)
        if m.done:
            if m.match_index > self.log.last_index:
                self.drop(m, DropReason.OUT_OF_RANGE, f"acknowledges {m.match_index}")
                return
            if pr.state is not prog.SNAPSHOT and m.match_index <= pr.match_index:
                return  # a duplicate answer to a transfer already finished
            new = prog.snapshot_done(pr, m.match_index)
            self.set_progress(i, new)
            self.after_ack(i, pr, new)
            return
        chunked = prog.chunk_acked(pr, m.index, m.next_offset)
        if chunked is None:
            if pr.state is not prog.SNAPSHOT and m.next_offset == 0 and m.match_index == 0:
                # A stale-term or restarted follower: probing will sort it out.
                self.set_progress(i, prog.heard_from(pr, self.config.max_inflight))
            return
        self.set_progress(i, chunked)
        self.send_snapshot_chunk(i, chunked)

    def leader_on_heartbeat_response(self, i: int, read_seq: int) -> None:
        cfg = self.config
        pr = prog.heard_from(self.get_progress(i), cfg.max_inflight)
        self.set_progress(i, pr)
        if read_seq > self.read_acks[i] and read_seq <= self.read_seq:
            acks = list(self.read_acks)
            acks[i] = read_seq
            self.read_acks = tuple(acks)
            self.confirm_reads()
        if pr.match_index < self.log.last_index:
            # An empty append in REPLICATE probes for lost messages: if the
            # follower lacks next_index - 1 it rejects and we fall back to
            # probing. In SNAPSHOT this resends the unacknowledged chunk.
            self.send_append(i, True)

    def confirmed_seq(self) -> int:
        """The highest heartbeat round a quorum (each half, if joint) acknowledged."""
        acks = dict(zip(self.peers, self.read_acks, strict=True))
        acks[self.config.node_id] = self.read_seq
        ms = self.membership
        return joint_committed_index(ms.voters, ms.outgoing, acks)

    def confirm_reads(self) -> None:
        seq = self.confirmed_seq()
        if self.beats and self.beats[0][0] <= seq:
            k = 0
            sent_at = 0
            while k < len(self.beats) and self.beats[k][0] <= seq:
                sent_at = self.beats[k][1]
                k += 1
            self.beats = self.beats[k:]
            self.lease_until = max(self.lease_until, sent_at + self.config.lease_duration)
        pending = self.pending_reads
        if not pending or pending[0].seq > seq or pending[0].index is None:
            return
        k = 0
        while k < len(pending) and pending[k].seq <= seq and pending[k].index is not None:
            r = pending[k]
            assert r.index is not None
            self.answer_read(r.request_id, r.origin, r.index, None)
            k += 1
        self.pending_reads = pending[k:]

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds; broadcast it if it moved."""
        ms = self.membership
        match = {p: self.get_progress(i).match_index for i, p in enumerate(self.peers)}
        match[self.config.node_id] = self.stable_index
        index = joint_committed_index(ms.voters, ms.outgoing, match)
        # Raft §5.4.2 (Figure 8): only an entry of the current term is
        # committed by counting replicas; earlier ones follow it.
        if index <= self.commit_index or self.log.term_at(index) != self.hard.term:
            return False
        first_in_term = self.log.term_at(self.commit_index) != self.hard.term
        self.commit_index = index
        # Let followers learn the new commit index now, not at the next heartbeat.
        for k in range(len(self.peers)):
            if not self.send_append(k, False):
                self.send_append(k, True)
        if first_in_term and self.pending_reads:
            # Thesis §6.4 step 1: only now does the leader know the latest
            # commit index; reads that waited for it read at it.
            self.pending_reads = tuple(
                r if r.index is not None else PendingRead(r.request_id, r.origin, r.seq, index)
                for r in self.pending_reads
            )
            self.confirm_reads()
        if index >= self.configs[-1][0]:
            self.on_config_committed()
        return True

    def on_config_committed(self) -> None:
        ms = self.membership
        me = self.config.node_id
        if ms.is_joint:
            # Thesis §4.3 / etcd auto-leave: C_old,new is committed, so C_new
            # alone may now decide.
            term = self.hard.term
            self.append((Entry(term, ms.leave_joint().encode(), _CONFIG),))
            self.broadcast_append()
        elif me not in ms.voters:
            # Thesis §4.2.2: a leader that is not part of C_new steps down once
            # C_new is committed (it managed the cluster until then without
            # counting itself).
            self.become_follower(self.hard.term, None)

    def on_forward(self, m: ForwardProposal) -> None:
        if self.role is not LEADER:
            self.answer(m.src, m.request_id, RejectReason.NOT_LEADER)
        elif len(m.data) > self.config.max_proposal_bytes:
            self.answer(m.src, m.request_id, RejectReason.TOO_LARGE)
        else:
            self.leader_propose([(m.request_id, m.data)], m.src)

    def on_forward_response(self, m: ForwardResponse) -> None:
        if m.src != self.leader_id:
            # Only the leader we forward to may answer. An answer that arrives
            # after the leader changed is dropped too: the shell then reports
            # the outcome as unknown, which it is.
            self.drop(m, DropReason.UNEXPECTED, f"forward answer from non-leader {m.src!r}")
            return
        if m.rejection is None:
            self.actions.append(ProposalAccepted(m.request_id, m.index, m.entry_term))
        else:
            self.actions.append(ProposalRejected(m.request_id, m.rejection, m.leader_hint))

    # ------------------------------------------------------------------ reads

    def on_read_index(self, request_id: int) -> None:
        if self.role is LEADER:
            self.leader_read(request_id, None)
        elif self.leader_id is not None and self.config.forward_proposals:
            me = self.config.node_id
            self.send(ReadIndexRequest(self.hard.term, me, self.leader_id, request_id))
        elif self.leader_id is not None:
            self.actions.append(ReadRejected(request_id, RejectReason.NOT_LEADER, self.leader_id))
        else:
            self.actions.append(ReadRejected(request_id, RejectReason.NO_LEADER, None))

    def leader_read(self, request_id: int, origin: str | None) -> None:
        """Thesis §6.4: read at the commit index once a quorum confirms we lead."""
        committed_in_term = self.log.term_at(self.commit_index) == self.hard.term
        if (
            committed_in_term
            and self.config.lease_reads
            and self.transfer_target is None
            and self.now < self.lease_until
        ):
            # Thesis §6.4.1: within the lease no other leader can exist.
            self.answer_read(request_id, origin, self.commit_index, None)
            return
        if len(self.pending_reads) >= self.config.max_uncommitted_entries:
            # Flow control: reads that cannot be confirmed must not pile up.
            self.answer_read(request_id, origin, None, RejectReason.DROPPED)
            return
        # Every read gets a round of its own that starts after it arrived, so
        # an acknowledgement of an earlier round can never answer it (etcd
        # #20418 was a retried read answered by an older round).
        index = self.commit_index if committed_in_term else None
        self.pending_reads = (
            *self.pending_reads, PendingRead(request_id, origin, self.read_seq + 1, index)
        )
        self.read_broadcast = True

    def answer_read(
        self, request_id: int, origin: str | None, index: int | None, rejection: RejectReason | None
    ) -> None:
        if origin is None:
            if rejection is None:
                assert index is not None
                self.actions.append(ReadReady(request_id, index))
            else:
                hint = self.leader_id if self.leader_id != self.config.node_id else None
                self.actions.append(ReadRejected(request_id, rejection, hint))
            return
        me = self.config.node_id
        if rejection is None:
            assert index is not None
            self.send(ReadIndexResponse(self.hard.term, me, origin, request_id, index))
        else:
            hint = self.leader_id if self.leader_id != me else None
            self.send(
                ReadIndexResponse(self.hard.term, me, origin, request_id, 0, rejection, hint)
            )

    def on_read_index_response(self, m: ReadIndexResponse) -> None:
        if m.src != self.leader_id:
            # Like forwarded proposals: only the leader we asked may answer.
            self.drop(m, DropReason.UNEXPECTED, f"read answer from non-leader {m.src!r}")
            return
        if m.rejection is None:
            self.actions.append(ReadReady(m.request_id, m.index))
        else:
            self.actions.append(ReadRejected(m.request_id, m.rejection, m.leader_hint))
