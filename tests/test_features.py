"""Tests for what graft adds beyond Raft §5, each citing where the feature comes from.

* Pre-vote (Ongaro's thesis §9.6) and check-quorum / leader lease (thesis §6.2,
  §4.2.3): a partitioned node cannot disrupt a live leader, and a leader cut
  off from a majority steps down.
* Follower forwarding (the original proposal's "append from any node") and
  flow control (``max_uncommitted_entries``).
* Fast log backtracking (Raft §5.3, last paragraphs; etcd-io/raft's
  ``findConflictByTerm``), batching and pipelining (etcd's Progress).
* Restart from durable state (Raft Figure 2, "persistent state on all servers").
* The ordering contract of ``graft_core._actions`` (Raft Figure 2: "respond to
  RPCs" only after updating stable storage; thesis §10.2.1 for the leader's
  parallel write).

Two styles, as in etcd-io/raft: a single node fed hand-built messages (the
``raft_paper_test.go`` style) where the point is one transition, and a
hand-driven :class:`~graft_sim.LocalCluster` where the point is a whole run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graft_core import (
    Action,
    AppendRequest,
    AppendResponse,
    Apply,
    Config,
    DropReason,
    DurableState,
    Entry,
    Event,
    ForwardProposal,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    MessageDropped,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    ProgressState,
    ProposalAccepted,
    ProposalError,
    ProposalRejected,
    Propose,
    ProposeMany,
    RejectReason,
    Restart,
    Role,
    RoleChanged,
    Send,
    Tick,
    VoteRequest,
    VoteResponse,
    start,
    step,
)
from graft_sim import LocalCluster

M = TypeVar("M", bound=Message)

IDS = ("a", "b", "c")

# --------------------------------------------------------------------------- helpers


def feed(state: NodeState, *events: Event) -> tuple[NodeState, list[Action]]:
    """Step ``state`` through ``events``; return the final state and every action."""
    out: list[Action] = []
    for e in events:
        state, actions = step(state, e)
        out.extend(actions)
    return state, out


def recv(state: NodeState, *messages: Message) -> tuple[NodeState, list[Action]]:
    return feed(state, *(MessageReceived(m) for m in messages))


def sent(actions: Iterable[Action], kind: type[M]) -> list[M]:
    """The messages of type ``kind`` among ``actions``' Sends, in order."""
    return [a.message for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def persists(actions: Iterable[Action]) -> list[Persist]:
    return [a for a in actions if isinstance(a, Persist)]


def applies(actions: Iterable[Action]) -> list[Apply]:
    return [a for a in actions if isinstance(a, Apply)]


def sync(state: NodeState) -> tuple[NodeState, list[Action]]:
    """Acknowledge every Persist ``state`` has issued."""
    if state.persist_seq == state.persisted_seq:
        return state, []
    return feed(state, PersistCompleted(state.persist_seq))


def log_of(state: NodeState) -> tuple[Entry, ...]:
    return state.log.slice(1, state.log.last_index + 1)


def make_leader(me: str = "a", ids: tuple[str, ...] = IDS, **config: Any) -> NodeState:
    """A node that won an election with the vote of its first peer, hand-driven.

    Its first-term no-op is appended and sent but its Persist is *not* yet
    acknowledged; callers decide when it becomes durable.
    """
    state = start(Config(me, ids, **config))
    state, _ = feed(state, Tick(state.election_deadline))
    voter = state.peers[0]
    if state.role is Role.PRE_CANDIDATE:
        state, _ = recv(state, VoteResponse(state.term + 1, voter, me, True, True))
    assert state.role is Role.CANDIDATE
    state, _ = sync(state)
    state, _ = recv(state, VoteResponse(state.term, voter, me, True, False))
    assert state.role is Role.LEADER
    return state


def followers(c: LocalCluster, leader: str) -> list[str]:
    return [n for n in c.ids if n != leader]


def advance(c: LocalCluster) -> None:
    """Jump to the next deadline and deliver everything that follows from it."""
    c.tick(c.next_deadline())
    c.deliver_all()


def run_until(c: LocalCluster, done: Callable[[], bool], within: int = 50_000) -> None:
    deadline = c.now + within
    while not done():
        assert c.now <= deadline, "condition not reached in time"
        advance(c)


def rounds_until_equal(c: LocalCluster, nid: str, leader: str, cap: int = 5_000) -> int:
    """Count ``deliver_round`` calls until ``nid``'s log equals ``leader``'s."""
    rounds = 0
    while log_of(c.nodes[nid]) != log_of(c.nodes[leader]):
        assert c.in_flight, f"nothing in flight after {rounds} rounds; logs still differ"
        assert rounds < cap
        c.deliver_round()
        rounds += 1
    return rounds


# --------------------------------------------------------------------------- pre-vote


class _IsolationRun(NamedTuple):
    leader_term: int  # the leader's term when the follower was cut off
    term_before: int  # the isolated follower's term then
    term_isolated: int  # its term after 20 election timeouts alone
    role_isolated: Role  # and its role then
    campaigns: int  # elections (or pre-votes) it started meanwhile
    leader_term_after: int  # the old leader's term 5 timeouts after healing
    still_leader: bool  # whether the old leader still leads then


def _isolate_a_follower(**config: Any) -> _IsolationRun:
    """Elect, cut one follower off for 20 election timeouts, heal, run 5 more."""
    campaigns = 0
    isolated = leader = ""

    def count(nid: str, a: Action) -> None:
        # One (pre-)vote request to the leader per campaign the isolated node starts.
        nonlocal campaigns
        if (
            nid == isolated
            and isinstance(a, Send)
            and isinstance(a.message, VoteRequest)
            and a.message.dst == leader
        ):
            campaigns += 1

    c = LocalCluster(on_action=count, **config)
    leader = c.elect()
    isolated = followers(c, leader)[0]
    et = c.configs[leader].election_timeout
    leader_term = c.nodes[leader].term
    term_before = c.nodes[isolated].term
    c.partition([isolated], followers(c, isolated))
    c.run(c.now + 20 * et)
    term_isolated = c.nodes[isolated].term
    campaigns_isolated = campaigns
    role_isolated = c.nodes[isolated].role
    c.heal()
    c.run(c.now + 5 * et)
    return _IsolationRun(
        leader_term,
        term_before,
        term_isolated,
        role_isolated,
        campaigns_isolated,
        c.nodes[leader].term,
        c.nodes[leader].role is Role.LEADER,
    )


def test_prevote_isolated_node_keeps_its_term_and_does_not_disrupt() -> None:
    """Thesis §9.6: with pre-vote, a partitioned server times out again and again
    but cannot win a pre-vote, so it never increments its term; when it rejoins,
    the leader is not deposed."""
    run = _isolate_a_follower()
    assert run.campaigns >= 5, "the isolated node should keep timing out"
    assert run.term_isolated == run.term_before
    assert run.role_isolated in (Role.FOLLOWER, Role.PRE_CANDIDATE)
    assert run.still_leader
    assert run.leader_term_after == run.leader_term


def test_without_prevote_isolated_node_disrupts_the_leader() -> None:
    """Thesis §9.6 (the problem pre-vote solves): without pre-vote (and without
    the leader lease), the isolated server increments its term at every timeout
    and, on rejoining, its higher term forces the leader to step down (Raft §5.1)."""
    run = _isolate_a_follower(pre_vote=False, check_quorum=False)
    assert run.campaigns >= 5
    assert run.term_isolated == run.term_before + run.campaigns
    # The old leader saw the higher term: whatever it is now, it no longer
    # leads the term it led.
    assert run.leader_term_after > run.leader_term


def test_prevote_request_changes_neither_term_nor_vote() -> None:
    """Thesis §9.6: a pre-vote is granted if the candidate's log is up to date
    (§5.4.1) and the voter has not heard from a leader, but the voter does not
    change its term or vote."""
    # (check_quorum off: a node just started refuses votes for an election
    # timeout otherwise; see test_restarted_node_refuses_votes_for_a_lease.)
    b = start(
        Config("b", IDS, check_quorum=False),
        durable=DurableState(HardState(3, "a"), (Entry(1), Entry(3))),
    )
    b2, actions = recv(b, VoteRequest(4, "c", "b", 2, 3, pre_vote=True))
    assert sent(actions, VoteResponse) == [VoteResponse(4, "b", "c", True, True)]
    assert persists(actions) == []
    assert b2.hard == HardState(3, "a")
    assert b2.role is Role.FOLLOWER


@settings(max_examples=60, deadline=None)
@given(
    voter_terms=st.lists(st.integers(1, 4), max_size=4).map(sorted),
    extra_term=st.integers(0, 2),
    voted_for=st.sampled_from([None, "a", "b", "c"]),
    ahead=st.integers(1, 3),
    cand_last_term=st.integers(0, 7),
    cand_last_index=st.integers(1, 6),
)
def test_prevote_grant_property(
    voter_terms: list[int],
    extra_term: int,
    voted_for: str | None,
    ahead: int,
    cand_last_term: int,
    cand_last_index: int,
) -> None:
    """Thesis §9.6: for any voter state, a pre-vote for a later term is granted
    exactly when the candidate's log is at least as up to date (§5.4.1), whether
    or not the voter already voted in its term, and never changes its state."""
    term = (voter_terms[-1] if voter_terms else 0) + extra_term
    hard = HardState(term, voted_for)
    b = start(
        Config("b", IDS, check_quorum=False),
        durable=DurableState(hard, tuple(Entry(t) for t in voter_terms)),
    )
    req_term = term + ahead
    cand_last_term = min(cand_last_term, req_term)
    cand_last_index = cand_last_index if cand_last_term else 0
    b2, actions = recv(
        b, VoteRequest(req_term, "c", "b", cand_last_index, cand_last_term, pre_vote=True)
    )
    my_last_term = voter_terms[-1] if voter_terms else 0
    up_to_date = cand_last_term > my_last_term or (
        cand_last_term == my_last_term and cand_last_index >= len(voter_terms)
    )
    (resp,) = sent(actions, VoteResponse)
    assert resp.granted is up_to_date
    assert resp.pre_vote
    assert persists(actions) == []
    assert b2.hard == hard
    assert b2.role is Role.FOLLOWER


def test_precandidate_that_wins_prevote_becomes_candidate_of_next_term() -> None:
    """Thesis §9.6: a pre-candidate asks for votes for term + 1 without taking
    it; once a majority would vote for it, it becomes a real candidate (§5.2):
    term + 1, voting for itself, persisted, RequestVote to everyone."""
    a = start(Config("a", IDS), durable=DurableState(HardState(3, None), (Entry(2),)))
    a, actions = feed(a, Tick(a.election_deadline))
    assert a.role is Role.PRE_CANDIDATE
    assert a.hard == HardState(3, None)
    assert persists(actions) == []
    assert sent(actions, VoteRequest) == [
        VoteRequest(4, "a", p, 1, 2, pre_vote=True) for p in ("b", "c")
    ]
    a, actions = recv(a, VoteResponse(4, "b", "a", True, True))
    assert a.role is Role.CANDIDATE
    assert a.hard == HardState(4, "a")
    assert [p.hard_state for p in persists(actions)] == [HardState(4, "a")]
    assert sent(actions, VoteRequest) == [
        VoteRequest(4, "a", p, 1, 2, pre_vote=False) for p in ("b", "c")
    ]


# --------------------------------------------------------------------------- check-quorum


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1_000), wait=st.integers(0, 3_000))
def test_check_quorum_isolated_leader_steps_down_within_two_timeouts(seed: int, wait: int) -> None:
    """Thesis §6.2: a leader steps down if an election timeout passes without a
    successful round of heartbeats to a majority. Checked once per election
    timeout, so it happens within (t_partition, t_partition + 2 * timeout]."""
    c = LocalCluster(seed=seed)
    leader = c.elect()
    c.run(c.now + wait)
    assert c.nodes[leader].role is Role.LEADER
    et = c.configs[leader].election_timeout
    t_partition = c.now
    term = c.nodes[leader].term
    c.partition([leader], followers(c, leader))
    run_until(c, lambda: c.nodes[leader].role is not Role.LEADER, within=10 * et)
    assert t_partition < c.now <= t_partition + 2 * et
    assert c.nodes[leader].role is Role.FOLLOWER
    assert c.nodes[leader].term == term  # it stepped down by itself, not by a newer term


def test_leader_with_majority_stays_leader() -> None:
    """Thesis §6.2: a leader that hears from a majority keeps leading, across
    many election timeouts, even while one follower is unreachable."""
    c = LocalCluster()
    leader = c.elect()
    term = c.nodes[leader].term
    et = c.configs[leader].election_timeout
    c.partition([followers(c, leader)[0]], [leader, followers(c, leader)[1]])
    end = c.now + 20 * et
    checks = 0
    while c.now < end:
        advance(c)
        checks += 1
        assert c.nodes[leader].role is Role.LEADER, f"stepped down at t={c.now}"
        assert c.nodes[leader].term == term
    assert checks > 20


def test_without_check_quorum_isolated_leader_stays_leader() -> None:
    """Thesis §6.2 (contrast): without check-quorum, nothing tells a leader cut
    off from everyone that it lost its majority; it keeps believing it leads."""
    c = LocalCluster(check_quorum=False)
    leader = c.elect()
    term = c.nodes[leader].term
    et = c.configs[leader].election_timeout
    c.partition([leader], followers(c, leader))
    c.run(c.now + 10 * et)
    assert c.nodes[leader].role is Role.LEADER
    assert c.nodes[leader].term == term
    # Meanwhile the majority moved on without it.
    assert any(
        c.nodes[n].role is Role.LEADER and c.nodes[n].term > term for n in followers(c, leader)
    )


@settings(max_examples=30, deadline=None)
@given(delay=st.integers(0, 2_000))
def test_leader_lease_drops_vote_requests(delay: int) -> None:
    """Thesis §4.2.3: a server that heard from a current leader within the
    minimum election timeout does not grant a vote, nor update its term, on a
    RequestVote; after that it treats it normally (Raft §5.1, §5.2)."""
    b = start(Config("b", IDS))
    et = b.config.election_timeout
    b, _ = feed(b, Tick(100))
    b, _ = recv(b, Heartbeat(1, "a", "b", 0))
    b, _ = sync(b)
    assert (b.term, b.leader_id) == (1, "a")
    request = VoteRequest(2, "c", "b", 0, 0)
    b2, actions = feed(b, Tick(100 + delay), MessageReceived(request))
    dropped = [a for a in actions if isinstance(a, MessageDropped)]
    if delay < et:
        assert [(d.message, d.reason) for d in dropped] == [(request, DropReason.LEADER_LEASE)]
        assert b2.hard == HardState(1, None)
        assert sent(actions, VoteResponse) == []
        assert persists(actions) == []
    else:
        assert not any(d.reason is DropReason.LEADER_LEASE for d in dropped)
        assert b2.term == 2


# --------------------------------------------------------------------------- forwarding


def test_follower_forwards_proposal_to_leader() -> None:
    """Original proposal, "append from any node": a proposal at a follower is
    forwarded to the leader, which appends it; the follower learns where
    (index, term), and the entry is then applied at that index on every node
    (Raft §5.3)."""
    c = LocalCluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    term = c.nodes[leader].term
    actions = c.step(f, Propose(7, b"from a follower"))
    assert sent(actions, ForwardProposal) == [
        ForwardProposal(term, f, leader, 7, b"from a follower")
    ]
    assert c.answers[f] == []
    c.deliver_all()
    log = log_of(c.nodes[leader])
    index = 1 + next(i for i, e in enumerate(log) if e.data == b"from a follower")
    assert c.answers[f] == [ProposalAccepted(7, index, term)]
    assert c.answers[leader] == []
    for n in c.ids:
        assert (index, Entry(term, b"from a follower")) in c.applied[n]


def test_proposal_without_known_leader_is_rejected() -> None:
    """Original proposal: forwarding needs a leader; with none known the
    proposal is rejected with NO_LEADER and nothing is sent."""
    c = LocalCluster()
    rid = c.propose("a", b"x")
    assert c.answers["a"] == [ProposalRejected(rid, RejectReason.NO_LEADER, None)]
    assert c.in_flight == []


def test_proposal_at_follower_without_forwarding_names_the_leader() -> None:
    """Raft §8 ("clients ... redirect to the leader"): with forwarding off, a
    follower rejects with NOT_LEADER and a hint naming the leader."""
    c = LocalCluster(forward_proposals=False)
    leader = c.elect()
    f = followers(c, leader)[0]
    rid = c.propose(f, b"x")
    assert c.answers[f] == [ProposalRejected(rid, RejectReason.NOT_LEADER, leader)]
    assert c.in_flight == []


def test_forward_to_a_node_that_is_no_longer_leader_is_rejected() -> None:
    """Original proposal: a forwarded proposal reaching a node that is not the
    leader (here, it restarted meanwhile) is answered NOT_LEADER, and the
    proposer reports the rejection to its client."""
    c = LocalCluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    rid = c.propose(f, b"x")
    (fwd,) = [m for m in c.in_flight if isinstance(m, ForwardProposal)]
    c.crash(leader)
    c.restart(leader)
    c.deliver(fwd)
    c.deliver_all()
    assert c.answers[f] == [ProposalRejected(rid, RejectReason.NOT_LEADER, None)]
    assert all(e.data != b"x" for e in log_of(c.nodes[leader]))


@settings(max_examples=15, deadline=None)
@given(limit=st.integers(1, 30))
def test_flow_control_drops_proposals_beyond_uncommitted_limit(limit: int) -> None:
    """etcd-io/raft's MaxUncommittedEntriesSize: a leader that cannot commit
    (cut off from its followers) accepts up to ``max_uncommitted_entries``
    proposals and drops the next one."""
    c = LocalCluster(max_uncommitted_entries=limit)
    leader = c.elect()
    c.partition([leader], followers(c, leader))
    first = c.nodes[leader].last_index + 1
    term = c.nodes[leader].term
    rids = [c.propose(leader, b"p%d" % k) for k in range(limit + 1)]
    assert c.answers[leader] == [
        *(ProposalAccepted(r, first + k, term) for k, r in enumerate(rids[:-1])),
        ProposalRejected(rids[-1], RejectReason.DROPPED, leader),
    ]
    assert c.nodes[leader].last_index == first + limit - 1


# --------------------------------------------------------------------------- fast backtracking


def test_lagging_follower_catches_up_in_a_few_rounds() -> None:
    """Raft §5.3, closing paragraphs (etcd-io/raft's findConflictByTerm): the
    rejection carries a hint so the leader skips the whole missing range at
    once; a follower 1,000 entries behind a new leader that knows nothing of it
    catches up in a handful of round trips, not ~1,000."""
    c = LocalCluster()
    old = c.elect()
    lagging, other = followers(c, old)
    c.partition([lagging], [old, other])
    for k in range(1_000):
        c.propose(old, b"e%d" % k)
    c.deliver_all()
    # A new leader among {old, other}: its Progress for `lagging` starts at its
    # own last index + 1, so it must find the point of agreement.
    c.crash(old)
    c.restart(old)
    run_until(c, lambda: c.leader() in (old, other))
    leader = c.leader()
    assert leader is not None
    behind = c.nodes[leader].last_index - c.nodes[lagging].last_index
    assert behind >= 1_000
    c.heal()
    c.tick(c.nodes[leader].heartbeat_deadline)
    rounds = rounds_until_equal(c, lagging, leader)
    print(f"follower {behind} entries behind caught up in {rounds} rounds")
    assert rounds <= 10


def test_conflicting_suffix_is_replaced_in_a_few_rounds() -> None:
    """Raft §5.3, closing paragraphs: a follower holding a long suffix from an
    old term that the leader does not have (here 500 uncommitted entries of a
    deposed leader) rejects with a hint that lets the leader jump back over the
    whole old term at once, then overwrites it."""
    c = LocalCluster()
    old = c.elect()
    old_term = c.nodes[old].term
    c.partition([old], followers(c, old))
    for k in range(500):
        c.propose(old, b"stale%d" % k)
    c.deliver_all()
    run_until(c, lambda: c.leader() not in (None, old))
    first = c.leader()
    assert first is not None
    for k in range(500):
        c.propose(first, b"new%d" % k)
    c.deliver_all()
    # A leader change among the majority: the leader that meets `old` learns
    # nothing of it beforehand and probes from its own last index + 1.
    c.crash(first)
    c.restart(first)
    run_until(c, lambda: c.leader() not in (None, old))
    leader = c.leader()
    assert leader is not None
    stale = [e for e in log_of(c.nodes[old]) if e.data.startswith(b"stale")]
    assert len(stale) == 500 and all(e.term == old_term < c.nodes[leader].term for e in stale)
    c.heal()
    c.tick(c.nodes[leader].heartbeat_deadline)
    rounds = rounds_until_equal(c, old, leader)
    print(f"500-entry conflicting suffix replaced in {rounds} rounds")
    assert rounds <= 10
    assert not any(e.data.startswith(b"stale") for e in log_of(c.nodes[old]))


# --------------------------------------------------------------------------- batching, pipelining


def _catch_up_after_partition(
    payloads: list[bytes], **config: Any
) -> tuple[LocalCluster, str, str, list[AppendRequest], list[AppendRequest]]:
    """Cut a follower off, propose ``payloads``, heal, and run until it caught up.

    Returns the cluster, leader, follower, every AppendRequest the leader sent,
    and those it sent after the heal.
    """
    appends: list[AppendRequest] = []

    def record(nid: str, a: Action) -> None:
        if isinstance(a, Send) and isinstance(a.message, AppendRequest):
            appends.append(a.message)

    c = LocalCluster(on_action=record, **config)
    leader = c.elect()
    f = followers(c, leader)[0]
    c.partition([f], followers(c, f))
    for p in payloads:
        c.propose(leader, p)
    c.deliver_all()
    c.heal()
    healed_at = len(appends)
    run_until(c, lambda: log_of(c.nodes[f]) == log_of(c.nodes[leader]))
    c.deliver_all()
    assert c.nodes[leader].role is Role.LEADER
    return c, leader, f, appends, appends[healed_at:]


def test_batches_respect_max_entries_per_message() -> None:
    """etcd-io/raft MaxSizePerMsg (entries here): catching a follower up with 50
    entries sends batches of at most 8 entries, and does batch up to 8."""
    _, leader, _f, appends, _ = _catch_up_after_partition(
        [b"x%d" % k for k in range(50)], max_entries_per_message=8
    )
    sizes = [len(m.entries) for m in appends if m.src == leader]
    assert max(sizes) == 8


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.sampled_from([0, 1, 25, 50, 99, 100, 101, 250]), st.integers(0, 250)),
        min_size=1,
        max_size=30,
    )
)
@example(sizes=[50, 50, 50, 250, 30, 30, 40, 100])
def test_batches_respect_max_bytes_per_message(sizes: list[int]) -> None:
    """etcd-io/raft MaxSizePerMsg: a batch's payload stays within
    max_bytes_per_message unless it is a single larger entry (sent alone so the
    log can still advance), and a batch stops only where the next entry would
    break the bound or the log ends."""
    bound = 100
    c, leader, _f, appends, after_heal = _catch_up_after_partition(
        [bytes(n) for n in sizes], max_bytes_per_message=bound
    )
    for m in appends:
        total = sum(len(e.data) for e in m.entries)
        assert total <= bound or len(m.entries) == 1, m
    log = c.nodes[leader].log
    for m in after_heal:
        if not m.entries:
            continue
        last = m.prev_log_index + len(m.entries)
        if last < log.last_index:
            total = sum(len(e.data) for e in m.entries)
            assert total + len(log.entry_at(last + 1).data) > bound, m


def _replicating_leader(**config: Any) -> NodeState:
    """Leader ``a`` whose no-op is durable and acknowledged by b and c (REPLICATE)."""
    a = make_leader(**config)
    a, _ = sync(a)
    a, _ = recv(
        a,
        AppendResponse(a.term, "b", "a", True, a.last_index),
        AppendResponse(a.term, "c", "a", True, a.last_index),
    )
    assert a.commit_index == a.last_index
    return a


def test_pipelining_bounded_by_max_inflight() -> None:
    """etcd-io/raft MaxInflightMsgs: in REPLICATE the leader streams
    AppendEntries without waiting for replies (pipelining), but never more than
    max_inflight unacknowledged to a follower that stopped answering."""
    inflight = 4
    a = _replicating_leader(max_inflight=inflight)
    pr = a.progress_of("b")
    assert pr is not None and pr.state is ProgressState.REPLICATE
    to_b = 0
    for k in range(3 * inflight):
        a, actions = feed(a, Propose(k, b"p%d" % k))
        to_b += sum(1 for m in sent(actions, AppendRequest) if m.dst == "b")
    assert to_b == inflight
    pr = a.progress_of("b")
    assert pr is not None and len(pr.inflight) == inflight


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.sampled_from(["propose", "hb-response", "tick"]), max_size=30))
def test_probe_sends_one_append_per_heartbeat_response(ops: list[str]) -> None:
    """etcd-io/raft Progress PROBE: while the leader does not know where a
    follower's log agrees, it has at most one AppendEntries outstanding, and a
    follower that does not answer appends gets one more per heartbeat response."""
    a = make_leader()
    a, _ = sync(a)
    pr = a.progress_of("b")
    assert pr is not None and pr.state is ProgressState.PROBE and pr.probe_sent
    now = a.now
    for k, op in enumerate(ops):
        if op == "propose":
            a, actions = feed(a, Propose(k, b"p"))
        elif op == "tick":
            now += a.config.heartbeat_interval
            a, actions = feed(a, Tick(now))
        else:
            a, actions = recv(a, HeartbeatResponse(a.term, "b", "a"))
        to_b = [m for m in sent(actions, AppendRequest) if m.dst == "b"]
        # b has acknowledged nothing, so its match index stays 0 < last index:
        # each heartbeat response unpauses the probe for exactly one append.
        expected = 1 if op == "hb-response" and a.role is Role.LEADER else 0
        assert len(to_b) == expected, (k, op, to_b)


# --------------------------------------------------------------------------- restart


def _settle(c: LocalCluster, hold: str | None = None) -> None:
    """Deliver everything and complete every node's Persists except ``hold``'s."""
    while True:
        for n in c.ids:
            if n != hold and n not in c.down:
                c.complete_persists(n)
        if not c.in_flight:
            return
        c.deliver_round()


def test_restarted_follower_recovers_exactly_its_durable_state() -> None:
    """Raft Figure 2, "persistent state on all servers": after a crash a server
    has exactly what it persisted (writes not yet acknowledged are lost); it
    catches up from the leader (§5.3) and applies the same sequence as every
    other server (State Machine Safety, §5.4.3)."""
    c = LocalCluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    for k in range(3):
        c.propose(leader, b"before%d" % k)
    c.deliver_all()
    # From here on Persists wait for complete_persists (LocalCluster reads the
    # flag at every step).
    c.auto_persist = False
    c.propose(leader, b"durable")
    _settle(c)
    durable = tuple(c.storage[f].entries)
    durable_hard = c.storage[f].hard_state
    assert durable == log_of(c.nodes[f]) and durable[-1].data == b"durable"
    c.propose(leader, b"lost1")
    c.propose(leader, b"lost2")
    _settle(c, hold=f)
    assert c.pending_persists[f], "f's last write must still be in progress"
    assert c.nodes[f].last_index == len(durable) + 2
    assert c.nodes[leader].commit_index == c.nodes[leader].last_index  # leader + other follower
    c.crash(f)
    c.restart(f)
    assert log_of(c.nodes[f]) == durable
    assert c.nodes[f].hard == durable_hard
    assert durable_hard.term == c.nodes[leader].term
    c.auto_persist = True
    c.run(c.now + 3 * c.configs[leader].election_timeout)
    assert c.leader() == leader
    assert log_of(c.nodes[f]) == log_of(c.nodes[leader])
    assert len(c.applied[leader]) == c.nodes[leader].commit_index
    for n in c.ids:
        assert c.applied[n] == c.applied[leader]
    assert c.applied_data(f)[-2:] == [b"lost1", b"lost2"]


def test_restarted_leader_rejoins_new_leader() -> None:
    """Raft §5.2/§5.4: when the leader crashes the others elect a new one, and
    the old leader, restarted from its durable state, follows it and converges."""
    c = LocalCluster()
    old = c.elect()
    old_term = c.nodes[old].term
    for k in range(3):
        c.propose(old, b"old%d" % k)
    c.deliver_all()
    c.crash(old)
    new = c.elect()
    assert new != old and c.nodes[new].term > old_term
    for k in range(3):
        c.propose(new, b"new%d" % k)
    c.deliver_all()
    c.restart(old)
    c.run(c.now + 3 * c.configs[old].election_timeout)
    assert c.leader() == new
    assert c.nodes[old].role is Role.FOLLOWER and c.nodes[old].leader_id == new
    assert log_of(c.nodes[old]) == log_of(c.nodes[new])
    for n in c.ids:
        assert c.applied[n] == c.applied[new]
    assert c.applied_data(old) == [b"old0", b"old1", b"old2", b"new0", b"new1", b"new2"]


@settings(max_examples=40, deadline=None)
@given(
    terms=st.lists(st.integers(1, 5), min_size=1, max_size=20).map(sorted),
    data=st.data(),
    via_event=st.booleans(),
)
def test_restart_does_not_reapply(terms: list[int], data: st.DataObject, via_event: bool) -> None:
    """Raft Figure 2 (lastApplied) and the Restart contract: a node restarted
    with applied_index=k applies k+1.. once they are known committed, never
    1..k again."""
    n = len(terms)
    k = data.draw(st.integers(0, n), label="applied_index")
    entries = tuple(Entry(t, b"%d" % i) for i, t in enumerate(terms, start=1))
    durable = DurableState(HardState(terms[-1], None), entries)
    config = Config("b", IDS)
    if via_event:
        b, actions = feed(start(config), Restart(50, durable, k))
        assert applies(actions) == []
    else:
        b = start(config, 50, durable, k)
    b, actions = recv(b, Heartbeat(terms[-1], "a", "b", n))
    assert b.commit_index == n
    expected = [Apply(k + 1, entries[k:])] if k < n else []
    assert applies(actions) == expected


# --------------------------------------------------------------------------- ordering contract


def test_follower_acknowledges_append_only_after_persist() -> None:
    """Raft Figure 2 ("respond to RPCs" after updating stable storage) and the
    _actions ordering contract: an AppendEntries success leaves only once every
    earlier Persist is durable -- even a success that itself needs no write."""
    b = start(Config("b", IDS), durable=DurableState(HardState(1, None)))
    first = AppendRequest(1, "a", "b", 0, 0, (Entry(1, b"x"),), 0)
    b, actions = recv(b, first)
    (p,) = persists(actions)
    assert (p.first_index, p.entries) == (1, (Entry(1, b"x"),))
    assert sent(actions, AppendResponse) == []
    # A retransmission needs no new write but promises the same durable entry.
    b, actions = recv(b, first)
    assert persists(actions) == []
    assert sent(actions, AppendResponse) == []
    second = AppendRequest(1, "a", "b", 1, 1, (Entry(1, b"y"),), 0)
    b, actions = recv(b, second)
    (p2,) = persists(actions)
    assert sent(actions, AppendResponse) == []
    b, actions = feed(b, PersistCompleted(p.seq))
    assert sent(actions, AppendResponse) == [AppendResponse(1, "b", "a", True, 1)] * 2
    b, actions = feed(b, PersistCompleted(p2.seq))
    assert sent(actions, AppendResponse) == [AppendResponse(1, "b", "a", True, 2)]


def test_restarted_node_refuses_votes_for_a_lease() -> None:
    """Thesis §6.4.1 / §4.2.3: with check-quorum, a node that just started behaves as if it
    had just heard from a leader: before its crash it may have acknowledged a leader whose
    lease counts on it not voting for an election timeout."""
    cfg = Config("b", IDS)
    b = start(cfg, now=500, durable=DurableState(HardState(3), (Entry(1), Entry(3))))
    request = VoteRequest(4, "c", "b", 2, 3)
    b2, actions = feed(b, MessageReceived(request, 500 + cfg.election_timeout - 1))
    assert [a.reason for a in actions if isinstance(a, MessageDropped)] == [
        DropReason.LEADER_LEASE
    ]
    assert b2.term == 3
    b3, actions = feed(b, MessageReceived(request, 500 + cfg.election_timeout))
    assert b3.term == 4 and b3.voted_for == "c"
    # A node that never saw a term (a new cluster) is in no lease: it votes at once.
    fresh = start(cfg, now=500)
    voted, _ = feed(fresh, MessageReceived(VoteRequest(1, "c", "b", 0, 0), 500))
    assert voted.voted_for == "c"


def test_vote_is_sent_only_after_persist() -> None:
    """Raft Figure 2: currentTerm and votedFor are persisted before answering a
    RequestVote, so a vote granted is never forgotten by a crash."""
    b = start(Config("b", IDS, check_quorum=False))
    b, actions = recv(b, VoteRequest(1, "c", "b", 0, 0))
    (p,) = persists(actions)
    assert p.hard_state == HardState(1, "c")
    assert sent(actions, VoteResponse) == []
    b, actions = feed(b, PersistCompleted(p.seq))
    assert sent(actions, VoteResponse) == [VoteResponse(1, "b", "c", True, False)]


def test_leader_sends_before_its_write_but_commits_only_after_it() -> None:
    """Thesis §10.2.1: the leader may write its log to disk in parallel with
    replicating to followers, but counts itself toward the majority only once
    its own write is durable. With c unreachable, b's acknowledgement alone is
    not a majority until the leader's write completes."""
    a = _replicating_leader()
    base = a.commit_index
    a, actions = feed(a, Propose(1, b"x"))
    index = base + 1
    (p,) = persists(actions)
    assert p.first_index == index and p.entries == (Entry(a.term, b"x"),)
    assert [m.dst for m in sent(actions, AppendRequest) if Entry(a.term, b"x") in m.entries] == [
        "b",
        "c",
    ]
    a, actions = recv(a, AppendResponse(a.term, "b", "a", True, index))
    assert a.commit_index == base
    assert applies(actions) == []
    a, actions = feed(a, PersistCompleted(p.seq))
    assert a.commit_index == index
    assert applies(actions) == [Apply(index, (Entry(a.term, b"x"),))]
    # Contrast: once the leader's own write is durable first, b's ack suffices.
    a, actions = feed(a, Propose(2, b"y"))
    a, _ = sync(a)
    assert a.commit_index == index
    a, actions = recv(a, AppendResponse(a.term, "b", "a", True, index + 1))
    assert a.commit_index == index + 1


@pytest.mark.parametrize("pre_vote", [True, False])
def test_single_node_becomes_leader_only_after_vote_is_durable(pre_vote: bool) -> None:
    """Raft Figure 2 / _node Rule 4: a candidate's vote for itself counts once
    persisted; a single-node cluster therefore leads only after the
    PersistCompleted of its new term and vote."""
    a = start(Config("a", ("a",), pre_vote=pre_vote))
    a, actions = feed(a, Tick(a.election_deadline))
    assert a.role is Role.CANDIDATE
    (p,) = persists(actions)
    assert p.hard_state == HardState(1, "a")
    a, actions = feed(a, Tick(a.now + 1))
    assert a.role is Role.CANDIDATE
    a, actions = feed(a, PersistCompleted(p.seq))
    assert a.role is Role.LEADER
    assert RoleChanged(Role.LEADER, 1, "a") in actions


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=200),
    room=st.integers(1, 300),
)
def test_propose_many_is_propose_in_order_but_batched(sizes: list[int], room: int) -> None:
    """ProposeMany = each Propose in order (same log, same answers, same flow control),
    with one Persist for all of them and the AppendEntries pipeline filled at once
    (thesis §10.2: batching is what gives a leader its throughput)."""
    a = _replicating_leader(max_uncommitted_entries=room, max_entries_per_message=16)
    proposals = tuple(Propose(k, b"x" * n) for k, n in enumerate(sizes))
    one_by_one = a
    answers_single: list[Action] = []
    for p in proposals:
        one_by_one, actions = feed(one_by_one, p)
        answers_single += [x for x in actions if isinstance(x, ProposalAccepted | ProposalRejected)]
    batched, actions = feed(a, ProposeMany(proposals))
    answers_batch = [x for x in actions if isinstance(x, ProposalAccepted | ProposalRejected)]
    assert batched.log == one_by_one.log
    assert answers_batch == answers_single
    accepted = [x for x in answers_batch if isinstance(x, ProposalAccepted)]
    assert len(persists(actions)) == (1 if accepted else 0)
    to_b = [m for m in sent(actions, AppendRequest) if m.dst == "b"]
    n = len(accepted)
    assert len(to_b) == -(-n // 16), "one message per 16 entries, all sent at once"
    assert sum(len(m.entries) for m in to_b) == n


def test_propose_many_on_a_follower_forwards_each() -> None:
    b = start(Config("b", IDS, check_quorum=False))
    b, _ = recv(b, Heartbeat(1, "a", "b", 0))
    _, actions = feed(b, ProposeMany((Propose(1, b"p"), Propose(2, b"q"))))
    assert [(m.request_id, m.data) for m in sent(actions, ForwardProposal)] == [
        (1, b"p"), (2, b"q")
    ]


def test_propose_many_too_large_is_refused_before_any_change() -> None:
    a = _replicating_leader(max_proposal_bytes=4)
    with pytest.raises(ProposalError, match="proposal 2"):
        step(a, ProposeMany((Propose(1, b"ok"), Propose(2, b"too big"))))
    with pytest.raises(ProposalError):
        ProposeMany([Propose(1, b"x")])  # type: ignore[arg-type]
