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
   hold pure helpers: ``_log``, ``_progress``, ``_quorum``).
2. ``step`` handles a message's term first (step down, or drop/answer a stale
   one), then messages every role treats alike (votes), then dispatches by
   role -- the structure of etcd-io/raft's ``Step``.
3. One step makes at most one :class:`Persist`; its hard state, truncation and
   entries are gathered while the step runs and emitted at the end.
4. Messages that promise durable state (vote grants, AppendEntries successes)
   are *held* until every Persist issued before them is acknowledged
   (``_actions`` ordering contract). A candidate counts its own vote, and a
   leader its own log, only once durable; a candidate never becomes leader
   before its new term is durable (otherwise a crash could let it lead the same
   term twice with different logs).
5. Peer input never raises: bad messages become :class:`MessageDropped`.
   Caller mistakes raise :class:`GraftError` subclasses before any change.

Inside ``step`` a private, short-lived ``_Step`` object holds the fields being
changed as plain attributes; ``finish`` builds the new ``NodeState`` once
(STYLE: "compute the changes into locals and build each record once"). It
never escapes ``step``.
"""

from __future__ import annotations

import bisect

from graft_core import _progress as prog
from graft_core._actions import (
    Action,
    Apply,
    DropReason,
    MessageDropped,
    Persist,
    ProposalAccepted,
    ProposalRejected,
    RoleChanged,
    Send,
)
from graft_core._config import Config
from graft_core._errors import ConfigError, EventError, ProposalError
from graft_core._events import (
    Event,
    MessageReceived,
    PersistCompleted,
    Propose,
    Restart,
    Tick,
)
from graft_core._log import RaftLog
from graft_core._messages import (
    AppendRequest,
    AppendResponse,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RejectReason,
    VoteRequest,
    VoteResponse,
    malformed_reason,
)
from graft_core._progress import Progress
from graft_core._quorum import VoteResult, committed_index, vote_result
from graft_core._rand import draw
from graft_core._state import NodeState, Unstable
from graft_core._types import DurableState, Entry, EntryKind, HardState, Role

FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER
_NOOP = EntryKind.NOOP
_EMPTY: frozenset[str] = frozenset()


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
        applied_index: how far the application had applied (restart only).

    Returns:
        The initial state. Feed it :class:`~graft_core.Tick` events from here;
        its first election deadline is already set.

    Raises:
        ConfigError: if ``durable`` is inconsistent (terms decreasing, an entry
            from a term after the stored term, ``applied_index`` beyond the log).
    """
    if not isinstance(config, Config):
        raise ConfigError(f"config must be a graft_core.Config, got {type(config).__name__}")
    if type(now) is not int or now < 0:
        raise EventError(f"now must be a non-negative int, got {now!r}")
    durable = durable if durable is not None else DurableState()
    hard = durable.hard_state
    if type(hard) is not HardState or type(hard.term) is not int or hard.term < 0:
        raise ConfigError(f"invalid durable hard state {hard!r}")
    if hard.voted_for is not None and hard.voted_for not in config.voters:
        raise ConfigError(f"durable vote for {hard.voted_for!r}, which is not a voter")
    previous = 0
    for i, e in enumerate(durable.entries, start=1):
        if type(e) is not Entry or type(e.term) is not int or not previous <= e.term <= hard.term:
            raise ConfigError(
                f"durable entry {i} ({e!r}) has a term out of order or after term {hard.term}"
            )
        previous = e.term
    log = RaftLog.of(durable.entries)
    if type(applied_index) is not int or not 0 <= applied_index <= log.last_index:
        raise ConfigError(
            f"applied_index {applied_index!r} is outside the durable log (0..{log.last_index})"
        )
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
        # committed entries), so the commit index can start there.
        commit_index=applied_index,
        applied_index=applied_index,
        election_deadline=now + timeout,
        heartbeat_deadline=now,
        election_timeout=timeout,
        timeout_draws=1,
        leader_contact=0,
        votes_granted=_EMPTY,
        votes_rejected=_EMPTY,
        progress=(),
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
            acknowledged, or ``event`` is not a graft_core event.
        ProposalError: a proposal larger than ``Config.max_proposal_bytes``.
    """
    if isinstance(event, MessageReceived):
        s = _Step(state)
        _advance(s, event.now)
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
    if isinstance(event, Restart):
        now = max(event.now, state.now)
        restarted = start(state.config, now, event.durable, event.applied_index)
        return restarted, (RoleChanged(FOLLOWER, restarted.term, None),)
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
    """The mutable scratchpad of one ``step`` call. Never escapes it."""

    __slots__ = (
        "actions",
        "applied_index",
        "commit_index",
        "config",
        "durable_hard",
        "election_deadline",
        "election_timeout",
        "hard",
        "heartbeat_deadline",
        "held",
        "held_new",
        "leader_contact",
        "leader_id",
        "log",
        "new_entries_from",
        "now",
        "old",
        "persist_hard",
        "persisted_seq",
        "progress",
        "progress_list",
        "role",
        "stable_index",
        "timeout_draws",
        "truncate_from",
        "unstable",
        "votes_granted",
        "votes_rejected",
    )

    def __init__(self, state: NodeState) -> None:
        self.old = state
        self.config = state.config
        self.now = state.now
        self.hard = state.hard
        self.durable_hard = state.durable_hard
        self.log = state.log
        self.stable_index = state.stable_index
        self.persisted_seq = state.persisted_seq
        self.unstable = state.unstable
        self.held = state.held
        self.role = state.role
        self.leader_id = state.leader_id
        self.commit_index = state.commit_index
        self.applied_index = state.applied_index
        self.election_deadline = state.election_deadline
        self.heartbeat_deadline = state.heartbeat_deadline
        self.election_timeout = state.election_timeout
        self.timeout_draws = state.timeout_draws
        self.leader_contact = state.leader_contact
        self.votes_granted = state.votes_granted
        self.votes_rejected = state.votes_rejected
        self.progress = state.progress
        # Copied into a list on first change (1,001-node clusters rebuild a
        # 1,000-tuple once per step, not once per update).
        self.progress_list: list[Progress] | None = None
        self.actions: list[Action] = []
        self.held_new: list[Message] = []
        # What this step must persist (Rule 3).
        self.persist_hard = False
        self.truncate_from: int | None = None
        self.new_entries_from: int | None = None

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

    def truncate(self, index: int) -> None:
        """Drop entries ``>= index``: they conflict with the leader's (Raft §5.3)."""
        self.log = self.log.truncate_from(index)
        if self.truncate_from is None or index < self.truncate_from:
            self.truncate_from = index
        if self.new_entries_from is not None and self.new_entries_from > index:
            self.new_entries_from = None
        if self.stable_index >= index:
            self.stable_index = index - 1

    def get_progress(self, i: int) -> Progress:
        pl = self.progress_list
        return pl[i] if pl is not None else self.progress[i]

    def set_progress(self, i: int, pr: Progress) -> None:
        pl = self.progress_list
        if pl is None:
            pl = self.progress_list = list(self.progress)
        pl[i] = pr

    def finish(self) -> tuple[NodeState, tuple[Action, ...]]:
        old = self.old
        actions = self.actions
        persist_seq = old.persist_seq
        unstable = self.unstable
        # Rule 3: one Persist for the whole step.
        if self.persist_hard or self.truncate_from is not None or self.new_entries_from is not None:
            persist_seq += 1
            log = self.log
            first = self.new_entries_from
            if first is None and self.truncate_from is not None:
                first = self.truncate_from
            if first is None:
                first = log.last_index + 1
            entries = log.slice(first, log.last_index + 1) if first <= log.last_index else ()
            hard = self.hard if self.persist_hard else None
            actions.append(Persist(persist_seq, hard, self.truncate_from, first, entries))
            unstable = (*unstable, Unstable(persist_seq, log.last_index, log.last_term, hard))
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
        # Raft §5.3: apply committed entries, in order, once each -- and only
        # those this node has itself made durable.
        target = min(self.commit_index, self.stable_index)
        if target > self.applied_index:
            first = self.applied_index + 1
            actions.append(Apply(first, self.log.slice(first, target + 1)))
            self.applied_index = target
        if (
            self.role is not old.role
            or self.hard.term != old.hard.term
            or self.leader_id != old.leader_id
        ):
            actions.append(RoleChanged(self.role, self.hard.term, self.leader_id))
        progress = self.progress if self.progress_list is None else tuple(self.progress_list)
        state = NodeState(
            config=self.config,
            now=self.now,
            hard=self.hard,
            durable_hard=self.durable_hard,
            log=self.log,
            stable_index=self.stable_index,
            persist_seq=persist_seq,
            persisted_seq=self.persisted_seq,
            unstable=unstable,
            held=held,
            role=self.role,
            leader_id=self.leader_id,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            election_deadline=self.election_deadline,
            heartbeat_deadline=self.heartbeat_deadline,
            election_timeout=self.election_timeout,
            timeout_draws=self.timeout_draws,
            leader_contact=self.leader_contact,
            votes_granted=self.votes_granted,
            votes_rejected=self.votes_rejected,
            progress=progress,
        )
        return state, tuple(actions)

    # ------------------------------------------------------------------ roles

    def reset_election_timer(self, redraw: bool) -> None:
        if redraw:
            self.election_timeout = _draw_timeout(self.config, self.hard.term, self.timeout_draws)
            self.timeout_draws += 1
        self.election_deadline = self.now + self.election_timeout

    def become_follower(self, term: int, leader: str | None) -> None:
        if term > self.hard.term:
            # Raft §5.1: adopt the newer term; the vote is for that term only.
            self.set_hard(HardState(term, None))
        redraw = self.role is not FOLLOWER or term != self.old.hard.term
        self.role = FOLLOWER
        self.leader_id = leader
        if leader is not None:
            self.leader_contact = self.now
        self.progress = ()
        self.progress_list = None
        self.votes_granted = self.votes_rejected = _EMPTY
        self.reset_election_timer(redraw)

    def campaign(self) -> None:
        if self.config.pre_vote:
            self.become_pre_candidate()
        else:
            self.become_candidate()

    def become_pre_candidate(self) -> None:
        # Thesis §9.6: ask first whether we *could* win, without touching the
        # term, so a node that was partitioned away cannot disrupt the cluster.
        cfg = self.config
        self.role = PRE_CANDIDATE
        self.leader_id = None
        self.progress = ()
        self.progress_list = None
        self.votes_granted = frozenset((cfg.node_id,))
        self.votes_rejected = _EMPTY
        self.reset_election_timer(True)
        if vote_result(1, 0, len(cfg.voters)) is VoteResult.WON:
            self.become_candidate()
            return
        term = self.hard.term + 1
        li, lt = self.log.last_index, self.log.last_term
        for peer in cfg.peers:
            self.send(VoteRequest(term, cfg.node_id, peer, li, lt, True))

    def become_candidate(self) -> None:
        # Raft §5.2: increment the term, vote for self, ask everyone else.
        cfg = self.config
        self.set_hard(HardState(self.hard.term + 1, cfg.node_id))
        self.role = CANDIDATE
        self.leader_id = None
        self.progress = ()
        self.progress_list = None
        # Our own vote counts once it is durable (Rule 4; see on_persisted).
        self.votes_granted = self.votes_rejected = _EMPTY
        self.reset_election_timer(True)
        term = self.hard.term
        li, lt = self.log.last_index, self.log.last_term
        for peer in cfg.peers:
            self.send(VoteRequest(term, cfg.node_id, peer, li, lt, False))

    def tally_own_vote(self) -> None:
        """Count the candidate's self-vote once its term and vote are durable."""
        me = self.config.node_id
        if self.durable_hard == self.hard and me not in self.votes_granted:
            self.votes_granted = self.votes_granted | {me}
            self.check_election()

    def check_election(self) -> None:
        n = len(self.config.voters)
        result = vote_result(len(self.votes_granted), len(self.votes_rejected), n)
        if result is VoteResult.LOST:
            self.become_follower(self.hard.term, None)
        elif result is VoteResult.WON:
            if self.role is PRE_CANDIDATE:
                self.become_candidate()
                # A single voter wins as soon as its own vote is durable.
            elif self.durable_hard.term == self.hard.term:
                self.become_leader()

    def become_leader(self) -> None:
        cfg = self.config
        self.role = LEADER
        self.leader_id = cfg.node_id
        self.votes_granted = self.votes_rejected = _EMPTY
        last = self.log.last_index
        self.progress = tuple(prog.initial(last) for _ in cfg.peers)
        self.progress_list = None
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
            if now >= self.election_deadline:
                # Thesis §6.2 check-quorum: step down if a majority has not been
                # heard from during the last election timeout.
                if cfg.check_quorum:
                    pl = [self.get_progress(i) for i in range(len(cfg.peers))]
                    active = 1 + sum(1 for pr in pl if pr.recent_active)
                    if active < cfg.quorum:
                        self.become_follower(self.hard.term, None)
                        return
                    for i, pr in enumerate(pl):
                        if pr.recent_active:
                            self.set_progress(i, prog.mark_inactive(pr))
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
            self.leader_propose(request_id, data, None)
        elif self.leader_id is not None and self.config.forward_proposals:
            me = self.config.node_id
            self.send(ForwardProposal(self.hard.term, me, self.leader_id, request_id, data))
        elif self.leader_id is not None:
            self.actions.append(
                ProposalRejected(request_id, RejectReason.NOT_LEADER, self.leader_id)
            )
        else:
            self.actions.append(ProposalRejected(request_id, RejectReason.NO_LEADER, None))

    def leader_propose(self, request_id: int, data: bytes, origin: str | None) -> None:
        if self.log.last_index - self.commit_index >= self.config.max_uncommitted_entries:
            self.answer(origin, request_id, RejectReason.DROPPED)
            return
        term = self.hard.term
        self.append((Entry(term, data),))
        index = self.log.last_index
        if origin is None:
            self.actions.append(ProposalAccepted(request_id, index, term))
        else:
            self.send(ForwardResponse(term, self.config.node_id, origin, request_id, index, term))
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

    def on_persisted(self, seq: int) -> None:
        self.persisted_seq = seq
        unstable = self.unstable
        log = self.log
        k = 0
        while k < len(unstable) and unstable[k].seq <= seq:
            u = unstable[k]
            if u.hard_state is not None:
                self.durable_hard = u.hard_state
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
        if msg.dst != cfg.node_id:
            self.drop(msg, DropReason.WRONG_RECIPIENT, f"addressed to {msg.dst!r}")
            return
        slot = self.peer_slot(msg.src)
        if slot < 0:
            self.drop(msg, DropReason.UNKNOWN_SENDER, f"{msg.src!r} is not a peer")
            return
        if isinstance(msg, ForwardProposal):
            self.on_forward(msg)
            return
        if isinstance(msg, ForwardResponse):
            self.on_forward_response(msg)
            return

        # --- Term rules first (Raft §5.1), as etcd-io/raft's Step does.
        term = self.hard.term
        if msg.term > term:
            if isinstance(msg, VoteRequest):
                if self.in_leader_lease():
                    # Thesis §4.2.3: a node that heard from a leader within the
                    # minimum election timeout ignores vote requests, so a
                    # removed or partitioned server cannot depose a live leader.
                    self.drop(msg, DropReason.LEADER_LEASE, f"leader {self.leader_id!r} is live")
                    return
                if msg.pre_vote:
                    self.on_vote_request(msg)
                    return
            if isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                # A granted pre-vote carries the term we *would* take; it does
                # not tell us of a newer term (thesis §9.6).
                pass
            else:
                leader = msg.src if isinstance(msg, AppendRequest | Heartbeat) else None
                self.become_follower(msg.term, leader)
        elif msg.term < term:
            # Tell a stale leader or candidate about our term so it steps
            # down (Raft §5.1); other stale traffic is simply dropped.
            if isinstance(msg, AppendRequest):
                self.send(AppendResponse(term, cfg.node_id, msg.src, False, 0))
            elif isinstance(msg, Heartbeat):
                self.send(HeartbeatResponse(term, cfg.node_id, msg.src))
            elif isinstance(msg, VoteRequest):
                self.send(VoteResponse(term, cfg.node_id, msg.src, False, msg.pre_vote))
            else:
                self.drop(msg, DropReason.STALE_TERM, f"term {msg.term} < {term}")
            return

        # --- Messages every role handles alike.
        if isinstance(msg, VoteRequest):
            self.on_vote_request(msg)
            return

        # --- By role.
        role = self.role
        if role is LEADER:
            if isinstance(msg, AppendResponse):
                self.leader_on_append_response(slot, msg)
            elif isinstance(msg, HeartbeatResponse):
                self.leader_on_heartbeat_response(slot)
            elif isinstance(msg, VoteResponse):
                pass  # late votes after winning: nothing to do
            else:
                # Election Safety (§5.2) makes a second leader in our term impossible.
                self.drop(msg, DropReason.UNEXPECTED, "another leader claims our term")
            return
        if isinstance(msg, AppendRequest | Heartbeat):
            if role is not FOLLOWER:
                # Raft §5.2: a candidate that hears from a leader of its term
                # (or newer) returns to follower.
                self.become_follower(msg.term, msg.src)
            if isinstance(msg, AppendRequest):
                self.follower_on_append(msg)
            else:
                self.follower_on_heartbeat(msg)
            return
        if isinstance(msg, VoteResponse):
            self.candidate_on_vote_response(msg)
            return
        self.drop(msg, DropReason.UNEXPECTED, f"{type(msg).__name__} while {role.value}")

    def peer_slot(self, node: str) -> int:
        peers = self.config.peers
        i = bisect.bisect_left(peers, node)
        return i if i < len(peers) and peers[i] == node else -1

    def in_leader_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader_id is not None
            and self.now - self.leader_contact < self.config.election_timeout
        )

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

    def follower_on_heartbeat(self, m: Heartbeat) -> None:
        if m.leader_commit > self.log.last_index:
            # The leader only sends min(match, commit), which we hold; anything
            # more is a confused or hostile leader: ignore the whole message.
            self.drop(m, DropReason.OUT_OF_RANGE, "leader_commit beyond our log")
            return
        self.leader_id = m.src
        self.leader_contact = self.now
        self.reset_election_timer(False)
        if m.leader_commit > self.commit_index:
            self.commit_index = m.leader_commit
        self.send(HeartbeatResponse(self.hard.term, self.config.node_id, m.src))

    def follower_on_append(self, m: AppendRequest) -> None:
        me = self.config.node_id
        term = self.hard.term
        self.leader_id = m.src
        self.leader_contact = self.now
        self.reset_election_timer(False)
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

    # ------------------------------------------------------------------ leader

    def broadcast_heartbeat(self) -> None:
        cfg = self.config
        me = cfg.node_id
        term = self.hard.term
        commit = self.commit_index
        for i, peer in enumerate(cfg.peers):
            pr = self.get_progress(i)
            self.send(Heartbeat(term, me, peer, min(pr.match_index, commit)))

    def broadcast_append(self, allow_empty: bool = False) -> None:
        for i in range(len(self.config.peers)):
            self.send_append(i, allow_empty)

    def send_append(self, i: int, allow_empty: bool) -> bool:
        """Send follower ``i`` what it lacks, if its Progress allows (Raft §5.3)."""
        cfg = self.config
        pr = self.get_progress(i)
        if prog.is_paused(pr, cfg.max_inflight):
            return False
        log = self.log
        nxt = pr.next_index
        last = log.last_index
        if nxt > last and not allow_empty:
            return False
        prev = nxt - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            # Unreachable while the log is never compacted; guards next_index.
            return False
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
                self.hard.term, cfg.node_id, cfg.peers[i], prev, prev_term, entries,
                self.commit_index,
            )
        )
        self.set_progress(i, prog.sent(pr, prev + len(entries), len(entries)))
        return True

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
        self.maybe_commit()
        # Refill the pipeline (etcd: "for r.maybeSendAppend(...)").
        sent = False
        while self.send_append(i, False):
            sent = True
        if not sent and pr.state is prog.PROBE and new.match_index <= self.commit_index:
            # A follower that just caught up missed the commit broadcasts while
            # it was probing: tell it the commit index now, not at the next
            # heartbeat (etcd's CanBumpCommit).
            self.send_append(i, True)

    def leader_on_heartbeat_response(self, i: int) -> None:
        cfg = self.config
        pr = prog.heard_from(self.get_progress(i), cfg.max_inflight)
        self.set_progress(i, pr)
        if pr.match_index < self.log.last_index:
            # An empty append in REPLICATE probes for lost messages: if the
            # follower lacks next_index - 1 it rejects and we fall back to probing.
            self.send_append(i, True)

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a majority holds; broadcast it if it moved."""
        cfg = self.config
        n = len(cfg.peers)
        matches = [self.stable_index]
        matches.extend(self.get_progress(i).match_index for i in range(n))
        index = committed_index(matches, n + 1)
        # Raft §5.4.2 (Figure 8): only an entry of the current term is
        # committed by counting replicas; earlier ones follow it.
        if index <= self.commit_index or self.log.term_at(index) != self.hard.term:
            return False
        self.commit_index = index
        # Let followers learn the new commit index now, not at the next heartbeat.
        for k in range(n):
            if not self.send_append(k, False):
                self.send_append(k, True)
        return True

    def on_forward(self, m: ForwardProposal) -> None:
        if self.role is not LEADER:
            self.answer(m.src, m.request_id, RejectReason.NOT_LEADER)
        elif len(m.data) > self.config.max_proposal_bytes:
            self.answer(m.src, m.request_id, RejectReason.TOO_LARGE)
        else:
            self.leader_propose(m.request_id, m.data, m.src)

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
