"""Raft §5, statement by statement.

Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm"
(USENIX ATC 2014), in the spirit of etcd-io/raft's ``raft_paper_test.go``:
each test names, in its docstring, the section and sentence it checks.

Most tests drive one node by hand through the public API (``start``/``step``
with hand-built messages), which is the clearest way to see one rule at work.
The longer scenarios (Figures 7 and 8, split votes, heartbeats keeping a
leader in place) use ``graft_sim.LocalCluster``.

Unless a test says otherwise, nodes run the plain algorithm of the paper:
``pre_vote=False`` and ``check_quorum=False`` (both thesis extensions, on by
default in graft). Persistence is completed at once by :func:`feed`, like a
shell with an instant disk, except where a test is about the wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
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
    EntryKind,
    Event,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    MessageDropped,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    ProposalAccepted,
    Propose,
    Role,
    Send,
    Tick,
    VoteRequest,
    VoteResponse,
    start,
    step,
)
from graft_sim import LocalCluster, Storage

M = TypeVar("M")

V3 = ("a", "b", "c")
V5 = ("a", "b", "c", "d", "e")

# ---------------------------------------------------------------------------
# Helpers


def voters(n: int) -> tuple[str, ...]:
    return tuple("abcdefg"[:n])


def peers_of(cfg: Config) -> list[str]:
    """The other members of the bootstrap configuration, sorted."""
    return sorted(v for v in cfg.voters if v != cfg.node_id)


def make_config(
    node_id: str = "a",
    members: tuple[str, ...] = V3,
    *,
    pre_vote: bool = False,
    check_quorum: bool = False,
    seed: int = 0,
    heartbeat_interval: int = 100,
    election_timeout: int = 1000,
    election_timeout_max: int | None = 2000,
) -> Config:
    return Config(
        node_id,
        members,
        seed=seed,
        heartbeat_interval=heartbeat_interval,
        election_timeout=election_timeout,
        election_timeout_max=election_timeout_max,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
    )


def entry(index: int, term: int) -> Entry:
    # The payload names (index, term), so two logs holding the same index and
    # term hold the same entry -- the Log Matching Property (§5.3) the
    # hand-built logs below must respect.
    return Entry(term, f"{index}@{term}".encode())


def log_of_terms(terms: Sequence[int]) -> tuple[Entry, ...]:
    return tuple(entry(i, t) for i, t in enumerate(terms, start=1))


def new_node(
    cfg: Config,
    *,
    term: int = 0,
    voted_for: str | None = None,
    terms: Sequence[int] = (),
    now: int = 0,
) -> NodeState:
    """A node restarted from durable state: ``term``, ``voted_for`` and a log with ``terms``."""
    return start(cfg, now, DurableState(HardState(term, voted_for), log_of_terms(terms)))


def feed(state: NodeState, event: Event) -> tuple[NodeState, list[Action]]:
    """Step ``event``, then acknowledge every Persist it issued (an instant disk)."""
    state, actions = step(state, event)
    out = list(actions)
    if state.persist_seq > state.persisted_seq:
        state, more = step(state, PersistCompleted(state.persist_seq))
        out.extend(more)
    return state, out


def recv(state: NodeState, msg: Message) -> tuple[NodeState, list[Action]]:
    return feed(state, MessageReceived(msg))


def sent(actions: Iterable[Action]) -> list[Message]:
    return [a.message for a in actions if isinstance(a, Send)]


def sent_of(actions: Iterable[Action], kind: type[M]) -> list[M]:
    return [m for m in sent(actions) if isinstance(m, kind)]


def persists(actions: Iterable[Action]) -> list[Persist]:
    return [a for a in actions if isinstance(a, Persist)]


def applied(actions: Iterable[Action]) -> list[tuple[int, Entry]]:
    out: list[tuple[int, Entry]] = []
    for a in actions:
        if isinstance(a, Apply):
            out.extend((a.first_index + k, e) for k, e in enumerate(a.entries))
    return out


def log_entries(state: NodeState) -> tuple[Entry, ...]:
    return state.log.slice(1, state.log.last_index + 1)


def log_terms(state: NodeState) -> list[int]:
    return [e.term for e in log_entries(state)]


def time_out(state: NodeState) -> NodeState:
    """Let ``state``'s election timer fire (and persist what that writes)."""
    return feed(state, Tick(state.election_deadline))[0]


def make_leader(state: NodeState) -> NodeState:
    """Time out and win the election with votes from the peers, in order."""
    state = time_out(state)
    assert state.role is Role.CANDIDATE
    for peer in state.peers:
        state, _ = recv(state, VoteResponse(state.term, peer, state.node_id, True))
        if state.role is Role.LEADER:
            return state
    raise AssertionError("a majority of votes did not make the candidate leader")


def sync_followers(state: NodeState) -> NodeState:
    """Every follower acknowledges the leader's whole log."""
    for peer in state.peers:
        state, _ = recv(
            state, AppendResponse(state.term, peer, state.node_id, True, state.last_index)
        )
    return state


def up_to_date(cand_last_term: int, cand_last_index: int, voter_terms: Sequence[int]) -> bool:
    """Raft §5.4.1, as the paper words it."""
    voter_last_term = voter_terms[-1] if voter_terms else 0
    if cand_last_term != voter_last_term:
        # "If the logs have last entries with different terms, then the log
        # with the later term is more up-to-date."
        return cand_last_term > voter_last_term
    # "If the logs end with the same term, then whichever log is longer is
    # more up-to-date."
    return cand_last_index >= len(voter_terms)


# ---------------------------------------------------------------------------
# §5.1: terms

ROLES = ("follower", "pre-candidate", "candidate", "leader")


def node_in_role(role: str) -> NodeState:
    """Node "a" of three, at term 2 (log terms 1, 2) before it takes ``role``."""
    cfg = make_config(pre_vote=role == "pre-candidate")
    state = new_node(cfg, term=2, terms=(1, 2))
    if role != "follower":
        state = time_out(state)
    if role == "leader":
        state = make_leader(state)
    assert state.role.value == role
    return state


HIGHER_TERM_MESSAGES: dict[str, Callable[[NodeState, int], Message]] = {
    "AppendEntries": lambda s, t: AppendRequest(
        t, "b", s.node_id, s.last_index, s.log.last_term, (), 0
    ),
    "Heartbeat": lambda s, t: Heartbeat(t, "b", s.node_id, 0),
    "RequestVote": lambda s, t: VoteRequest(t, "b", s.node_id, s.last_index, s.log.last_term),
    "AppendEntries response": lambda s, t: AppendResponse(t, "b", s.node_id, False, 0),
    "Heartbeat response": lambda s, t: HeartbeatResponse(t, "b", s.node_id),
    "RequestVote response": lambda s, t: VoteResponse(t, "b", s.node_id, False),
}


@pytest.mark.parametrize("kind", HIGHER_TERM_MESSAGES)
@pytest.mark.parametrize("role", ROLES)
def test_higher_term_in_any_rpc_makes_node_follower(role: str, kind: str) -> None:
    """Raft §5.1: "If one server's current term is smaller than the other's, then it
    updates its current term to the larger value. If a candidate or leader discovers
    that its term is out of date, it immediately reverts to follower state."
    (Figure 2: for requests *and* responses; currentTerm is persistent state.)"""
    state = node_in_role(role)
    newer = state.term + 2
    msg = HIGHER_TERM_MESSAGES[kind](state, newer)
    after, actions = recv(state, msg)
    assert after.term == newer
    assert after.role is Role.FOLLOWER
    # The new term is written to stable storage.
    assert newer in [p.hard_state.term for p in persists(actions) if p.hard_state is not None]
    assert after.durable_hard.term == newer
    # The vote belongs to the old term; only a RequestVote in the new term
    # (from a candidate whose log is up to date) may take it.
    assert after.voted_for == ("b" if kind == "RequestVote" else None)
    # Only a message from a leader says who leads the new term.
    assert after.leader_id == ("b" if kind in ("AppendEntries", "Heartbeat") else None)


STALE_REQUESTS: dict[str, Callable[[NodeState, int], Message]] = {
    "AppendEntries": lambda s, t: AppendRequest(t, "b", s.node_id, 0, 0, (entry(1, t),), 1),
    "Heartbeat": lambda s, t: Heartbeat(t, "b", s.node_id, 0),
    # The stale candidate's log is much longer than ours: only the term rules it out.
    "RequestVote": lambda s, t: VoteRequest(t, "b", s.node_id, 50, t),
}


@pytest.mark.parametrize("kind", STALE_REQUESTS)
@pytest.mark.parametrize("role", ROLES)
def test_stale_term_request_is_rejected_without_state_change(role: str, kind: str) -> None:
    """Raft §5.1: "If a server receives a request with a stale term number, it rejects
    the request." Figure 2: AppendEntries replies false if term < currentTerm,
    RequestVote replies false if term < currentTerm; the reply carries currentTerm
    "for leader/candidate to update itself"."""
    state = node_in_role(role)
    stale = state.term - 1
    after, actions = step(state, MessageReceived(STALE_REQUESTS[kind](state, stale)))
    assert after == state  # no change of term, vote, log, role, commit or timer
    assert persists(actions) == []
    replies = sent(actions)
    assert len(replies) == 1
    reply = replies[0]
    assert reply.dst == "b"
    assert reply.term == state.term
    if kind == "AppendEntries":
        assert isinstance(reply, AppendResponse)
        assert not reply.success
    elif kind == "Heartbeat":
        assert isinstance(reply, HeartbeatResponse)
    else:
        assert isinstance(reply, VoteResponse)
        assert not reply.granted


def test_stale_vote_grants_do_not_elect_a_candidate() -> None:
    """Raft §5.1: stale messages are ignored -- votes granted in an older term do not
    count toward a majority in the current one (§5.2: "votes from a majority of the
    servers in the full cluster for the same term")."""
    state = node_in_role("candidate")
    for peer in state.peers:
        after, actions = recv(state, VoteResponse(state.term - 1, peer, state.node_id, True))
        assert after == state
        assert [a.reason for a in actions if isinstance(a, MessageDropped)] == [
            DropReason.STALE_TERM
        ]
    assert state.role is Role.CANDIDATE


def test_stale_append_responses_do_not_advance_a_leader() -> None:
    """Raft §5.1: a response from an older term is ignored: it cannot raise a
    follower's matchIndex nor commit anything."""
    state = node_in_role("leader")
    for peer in state.peers:
        msg = AppendResponse(state.term - 1, peer, state.node_id, True, state.last_index)
        after, actions = recv(state, msg)
        assert after == state
        assert applied(actions) == []
    assert state.commit_index == 0


# ---------------------------------------------------------------------------
# §5.2: leader election


@pytest.mark.parametrize("n", [3, 5])
def test_follower_becomes_candidate_after_election_timeout(n: int) -> None:
    """Raft §5.2: "If a follower receives no communication over a period of time called
    the election timeout, then it ... begins an election ... a follower increments
    its current term and transitions to candidate state. It then votes for itself
    and issues RequestVote RPCs in parallel to each of the other servers"."""
    cfg = make_config(members=voters(n), election_timeout=1000, election_timeout_max=2000)
    start_time = 500
    state = new_node(cfg, term=2, terms=(1, 2), now=start_time)
    deadline = state.election_deadline
    assert 1000 <= deadline - start_time <= 2000

    early, actions = step(state, Tick(deadline - 1))
    assert early.role is Role.FOLLOWER and early.term == 2
    assert sent(actions) == []

    after, actions = step(early, Tick(deadline))
    assert after.role is Role.CANDIDATE
    assert after.term == state.term + 1
    assert after.voted_for == "a"
    assert [p.hard_state for p in persists(actions)] == [HardState(state.term + 1, "a")]
    requests = sent_of(actions, VoteRequest)
    assert sorted(m.dst for m in requests) == peers_of(cfg)
    for m in requests:
        assert m == VoteRequest(state.term + 1, "a", m.dst, 2, 2, pre_vote=False)


@pytest.mark.parametrize("kind", ["AppendEntries", "Heartbeat", "granting a vote"])
def test_communication_postpones_the_election(kind: str) -> None:
    """Raft §5.2: "A server remains in follower state as long as it receives valid
    RPCs from a leader or candidate." Figure 2: convert to candidate only "if
    election timeout elapses without receiving AppendEntries RPC from current
    leader or granting vote to candidate"."""
    cfg = make_config(election_timeout=1000, election_timeout_max=2000)
    state = new_node(cfg, term=1, terms=(1,))
    heard = state.election_deadline - 1
    state, _ = feed(state, Tick(heard))
    msg: Message
    if kind == "AppendEntries":
        msg = AppendRequest(1, "b", "a", 1, 1, (), 0)
    elif kind == "Heartbeat":
        msg = Heartbeat(1, "b", "a", 0)
    else:
        msg = VoteRequest(2, "b", "a", 1, 1)
    state, actions = recv(state, msg)
    assert state.role is Role.FOLLOWER
    term = state.term
    # The old deadline passes quietly, and so does a whole minimum timeout after contact.
    for now in (heard + 1, heard + 1000 - 1):
        state, actions = feed(state, Tick(now))
        assert state.role is Role.FOLLOWER and state.term == term
        assert sent_of(actions, VoteRequest) == []
    # A whole maximum timeout without contact starts an election.
    state, actions = feed(state, Tick(heard + 2000))
    assert state.role is Role.CANDIDATE
    assert state.term == term + 1


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_a_refused_candidate_does_not_postpone_the_election(role: str) -> None:
    """Figure 2: only "AppendEntries RPC from current leader or granting vote to
    candidate" resets the election timer. A newer term from a candidate whose log
    is behind ours (§5.4.1, refused) makes us adopt the term but not wait longer:
    otherwise servers that can never win would hold back the ones that can (the
    Figure 16 reproduction in notebooks/ measured it)."""
    cfg = make_config(election_timeout=1000, election_timeout_max=2000)
    state = new_node(cfg, term=2, terms=(1, 2))
    if role == "candidate":
        state = time_out(state)
        assert state.role is Role.CANDIDATE
    deadline = state.election_deadline
    state, actions = feed(state, Tick(deadline - 10))
    # "b" stands in a newer term with a log that ends in term 1: refused.
    state, actions = recv(state, VoteRequest(state.term + 5, "b", "a", 1, 1))
    assert state.role is Role.FOLLOWER and state.term == state.hard.term
    assert [m.granted for m in sent_of(actions, VoteResponse)] == [False]
    assert state.election_deadline == deadline
    state, actions = feed(state, Tick(deadline))
    assert state.role is Role.CANDIDATE  # on time, as if "b" had never asked


def test_a_deposed_leader_waits_a_full_timeout_before_standing() -> None:
    """A leader that learns of a newer term becomes a follower with a fresh timer:
    as leader it kept no election deadline of its own (Raft §5.2)."""
    cfg = make_config(election_timeout=1000, election_timeout_max=2000)
    state = make_leader(new_node(cfg, term=2, terms=(1, 2)))
    state, _ = feed(state, Tick(state.now + 50))
    state, _ = recv(state, VoteRequest(9, "b", "a", 1, 1))
    assert state.role is Role.FOLLOWER and state.term == 9
    assert state.election_deadline - state.now >= 1000


def test_pre_vote_runs_before_the_election_without_changing_the_term() -> None:
    """Thesis §9.6 (the pre-vote extension of Raft §5.2): on timeout a node first asks
    whether it could win, as a pre-candidate, without incrementing its term or
    voting; only with a majority of pre-votes does it become a §5.2 candidate."""
    cfg = make_config(pre_vote=True)
    state = new_node(cfg, term=2, voted_for="b", terms=(1, 2))
    state, actions = feed(state, Tick(state.election_deadline))
    assert state.role is Role.PRE_CANDIDATE
    assert state.hard == HardState(2, "b")  # term and vote untouched
    assert persists(actions) == []
    requests = sent_of(actions, VoteRequest)
    assert sorted(m.dst for m in requests) == peers_of(cfg)
    for m in requests:
        assert m == VoteRequest(3, "a", m.dst, 2, 2, pre_vote=True)

    # A majority of pre-votes (ours and b's): now the real election of §5.2.
    state, actions = recv(state, VoteResponse(3, "b", "a", True, pre_vote=True))
    assert state.role is Role.CANDIDATE
    assert state.hard == HardState(3, "a")
    real = sent_of(actions, VoteRequest)
    assert sorted(m.dst for m in real) == peers_of(cfg)
    assert all(m.term == 3 and not m.pre_vote for m in real)


def test_pre_vote_request_changes_nothing_on_the_voter() -> None:
    """Thesis §9.6: answering a pre-vote changes no state -- neither term nor vote."""
    voter = new_node(make_config(pre_vote=True), term=2, terms=(1, 2))
    after, actions = recv(voter, VoteRequest(3, "b", "a", 2, 2, pre_vote=True))
    assert after.hard == voter.hard
    assert after.role is Role.FOLLOWER
    assert persists(actions) == []
    assert sent_of(actions, VoteResponse) == [VoteResponse(3, "a", "b", True, pre_vote=True)]


@pytest.mark.parametrize("n", [3, 5])
def test_candidate_wins_exactly_when_a_majority_grants(n: int) -> None:
    """Raft §5.2: "A candidate wins an election if it receives votes from a majority of
    the servers in the full cluster for the same term ... Once a candidate wins an
    election, it becomes leader. It then sends heartbeat messages to all of the
    other servers to establish its authority"."""
    cfg = make_config(members=voters(n))
    state = time_out(new_node(cfg))
    term = state.term
    for k, peer in enumerate(peers_of(cfg), start=1):
        was_leader = state.role is Role.LEADER
        state, actions = recv(state, VoteResponse(term, peer, "a", True))
        majority = 2 * (k + 1) > n  # k grants plus the candidate's own vote
        assert (state.role is Role.LEADER) == majority
        assert state.term == term
        if majority and not was_leader:
            # It announces itself to everyone at once.
            appends = sent_of(actions, AppendRequest)
            assert sorted(m.dst for m in appends) == peers_of(cfg)
            assert all(m.term == term for m in appends)


def test_rejections_and_duplicate_votes_do_not_count() -> None:
    """Raft §5.2: a majority of *distinct servers* must vote for the candidate: one
    server's vote counts once however often it arrives, and refusals count for
    nothing."""
    cfg = make_config(members=V5)
    state = time_out(new_node(cfg))
    term = state.term
    state, _ = recv(state, VoteResponse(term, "b", "a", False))
    state, _ = recv(state, VoteResponse(term, "c", "a", True))
    for _ in range(3):
        state, _ = recv(state, VoteResponse(term, "c", "a", True))
    assert state.role is Role.CANDIDATE
    state, _ = recv(state, VoteResponse(term, "d", "a", True))
    assert state.role is Role.LEADER


def test_split_vote_candidate_starts_new_election_after_timeout() -> None:
    """Raft §5.2: "if many followers become candidates at the same time, votes could be
    split so that no candidate obtains a majority. When this happens, each candidate
    will time out and start a new election by incrementing its term and initiating
    another round of RequestVote RPCs"."""
    cfg = make_config(members=V5, election_timeout=1000, election_timeout_max=2000)
    state = time_out(new_node(cfg))
    term = state.term
    began = state.now
    state, _ = recv(state, VoteResponse(term, "b", "a", True))
    state, _ = recv(state, VoteResponse(term, "c", "a", False))
    state, _ = recv(state, VoteResponse(term, "d", "a", False))
    # Two of five (itself and b); e never answers: no winner.
    assert state.role is Role.CANDIDATE
    deadline = state.election_deadline
    assert 1000 <= deadline - began <= 2000
    quiet, actions = feed(state, Tick(deadline - 1))
    assert quiet.role is Role.CANDIDATE and quiet.term == term
    assert sent(actions) == []
    state, actions = feed(quiet, Tick(deadline))
    assert state.role is Role.CANDIDATE
    assert state.hard == HardState(term + 1, "a")
    requests = sent_of(actions, VoteRequest)
    assert sorted(m.dst for m in requests) == peers_of(cfg)
    assert all(m.term == term + 1 for m in requests)


def test_without_randomized_timeouts_split_votes_repeat() -> None:
    """Raft §5.2: randomized election timeouts are what make split votes rare and
    short-lived. With a fixed timeout (Figure 16's "150-150" line) four nodes that
    time out together split the vote every time; randomized, one wins at once."""
    fixed = LocalCluster(
        ("a", "b", "c", "d"),
        pre_vote=False,
        check_quorum=False,
        election_timeout=1000,
        election_timeout_max=1000,
    )
    fixed.run(until=5500)
    assert fixed.leader() is None
    # An election at 1000, 2000, ..., 5000, each one split.
    rounds = 5500 // 1000
    assert [fixed.nodes[n].term for n in fixed.ids] == [rounds] * 4

    for seed in range(20):
        randomized = LocalCluster(
            ("a", "b", "c", "d"), seed=seed, pre_vote=False, check_quorum=False
        )
        leader = randomized.elect()
        assert randomized.nodes[leader].term <= 3


@pytest.mark.parametrize("kind", ["AppendEntries", "Heartbeat"])
def test_candidate_returns_to_follower_on_leader_message_of_its_term(kind: str) -> None:
    """Raft §5.2: "If the leader's term (included in its RPC) is at least as large as
    the candidate's current term, then the candidate recognizes the leader as
    legitimate and returns to follower state"."""
    state = node_in_role("candidate")
    term = state.term
    msg: Message
    if kind == "AppendEntries":
        msg = AppendRequest(term, "b", "a", state.last_index, state.log.last_term, (), 0)
    else:
        msg = Heartbeat(term, "b", "a", 0)
    state, actions = recv(state, msg)
    assert state.role is Role.FOLLOWER
    assert state.hard == HardState(term, "a")  # same term, the vote it cast stays
    assert state.leader_id == "b"
    if kind == "AppendEntries":
        assert sent_of(actions, AppendResponse) == [
            AppendResponse(term, "a", "b", True, state.last_index)
        ]
    else:
        assert sent_of(actions, HeartbeatResponse) == [HeartbeatResponse(term, "a", "b")]


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """Raft §5.2: "Leaders send periodic heartbeats ... to all followers in order to
    maintain their authority"; Figure 2: "repeat during idle periods to prevent
    election timeouts". Heartbeats also carry the commit index (§5.3)."""
    hb = 10
    cfg = make_config(heartbeat_interval=hb, election_timeout=100, election_timeout_max=200)
    state = sync_followers(make_leader(new_node(cfg)))
    elected = state.now
    beats: list[int] = []
    for now in range(elected + 1, elected + 10 * hb + 1):
        state, actions = feed(state, Tick(now))
        heartbeats = sent_of(actions, Heartbeat)
        if heartbeats:
            beats.append(now)
            assert sorted(m.dst for m in heartbeats) == peers_of(cfg)
            for m in heartbeats:
                assert m.term == state.term
                assert m.leader_commit == state.commit_index == state.last_index
    assert beats == [elected + k * hb for k in range(1, 11)]
    assert state.role is Role.LEADER


def test_heartbeats_keep_the_leader_in_place() -> None:
    """Raft §5.2: as long as a leader's heartbeats arrive, no follower times out: the
    same leader stays in the same term for many election timeouts."""
    cluster = LocalCluster(V3, pre_vote=False, check_quorum=False)
    leader = cluster.elect()
    term = cluster.nodes[leader].term
    cluster.run(until=cluster.now + 20 * 2000)
    assert cluster.leader() == leader
    assert {cluster.nodes[n].term for n in cluster.ids} == {term}
    assert {cluster.nodes[n].leader_id for n in cluster.ids} == {leader}


def test_follower_votes_once_per_term_first_come_first_served() -> None:
    """Raft §5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis". Figure 2: votedFor is persistent, and a vote is
    granted "if votedFor is null or candidateId"."""
    cfg = make_config()
    state = new_node(cfg, term=1, terms=(1,))
    state, actions = recv(state, VoteRequest(2, "b", "a", 1, 1))
    assert sent_of(actions, VoteResponse) == [VoteResponse(2, "a", "b", True)]
    assert state.durable_hard == HardState(2, "b")
    # A second candidate in the same term is refused, even with a longer log.
    state, actions = recv(state, VoteRequest(2, "c", "a", 5, 1))
    assert sent_of(actions, VoteResponse) == [VoteResponse(2, "a", "c", False)]
    assert state.voted_for == "b"
    # A retransmitted request from the same candidate gets the same answer.
    state, actions = recv(state, VoteRequest(2, "b", "a", 1, 1))
    assert sent_of(actions, VoteResponse) == [VoteResponse(2, "a", "b", True)]
    # The vote survives a crash: it is durable state.
    restarted = start(cfg, state.now, DurableState(state.durable_hard, log_entries(state)))
    restarted, actions = recv(restarted, VoteRequest(2, "c", "a", 5, 1))
    assert sent_of(actions, VoteResponse) == [VoteResponse(2, "a", "c", False)]
    # A new term brings a new vote.
    restarted, actions = recv(restarted, VoteRequest(3, "c", "a", 1, 1))
    assert sent_of(actions, VoteResponse) == [VoteResponse(3, "a", "c", True)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(V5[1:]), min_size=1, max_size=10))
def test_at_most_one_vote_per_term_whatever_the_order(candidates: list[str]) -> None:
    """Raft §5.2: whatever order requests arrive in, a server grants its vote in a term
    to one candidate only -- the first to ask (all logs here are equally up to date)."""
    state = new_node(make_config(members=V5), term=1)
    granted: set[str] = set()
    for cand in candidates:
        state, actions = recv(state, VoteRequest(2, cand, "a", 0, 0))
        (reply,) = sent_of(actions, VoteResponse)
        assert reply.dst == cand
        if reply.granted:
            granted.add(cand)
    assert granted == {candidates[0]}


def test_vote_is_sent_only_once_it_is_durable() -> None:
    """Raft Figure 2 ("Persistent state on all servers: updated on stable storage
    before responding to RPCs"): the grant leaves only after votedFor is written."""
    state = new_node(make_config(), term=1)
    state, actions = step(state, MessageReceived(VoteRequest(2, "b", "a", 0, 0)))
    (write,) = persists(actions)
    assert write.hard_state == HardState(2, "b")
    assert sent_of(actions, VoteResponse) == []
    state, actions = step(state, PersistCompleted(write.seq))
    assert sent_of(actions, VoteResponse) == [VoteResponse(2, "a", "b", True)]


@pytest.mark.parametrize(("lo", "hi"), [(150, 300), (1000, 2000), (10, 13)])
def test_election_timeouts_are_randomized_over_their_whole_range(lo: int, hi: int) -> None:
    """Raft §5.2: "election timeouts are chosen randomly from a fixed interval (e.g.,
    150-300ms)", and each candidate "restarts its randomized election timeout at the
    start of an election". Many successive draws cover [lo, hi] evenly."""
    cfg = make_config(heartbeat_interval=lo // 2, election_timeout=lo, election_timeout_max=hi)
    state = new_node(cfg)
    draws = [state.election_deadline - state.now]
    for _ in range(400):
        term = state.term
        state = time_out(state)
        assert state.role is Role.CANDIDATE and state.term == term + 1
        draws.append(state.election_deadline - state.now)
    assert all(lo <= d <= hi for d in draws)
    width = hi - lo + 1
    if width <= 10:
        assert set(draws) == set(range(lo, hi + 1))
        return
    assert min(draws) - lo < width / 20
    assert hi - max(draws) < width / 20
    assert len(set(draws)) > min(width, len(draws)) / 2
    bins = [0] * 10
    for d in draws:
        bins[(d - lo) * 10 // width] += 1
    assert min(bins) > len(draws) / 10 / 3  # every tenth of the range is drawn from


def test_election_timeouts_differ_between_nodes() -> None:
    """Raft §5.2: randomization spreads servers out "so that in most cases only a
    single server will time out". Nodes with the same config and seed still draw
    different timeouts (the node id enters the draw)."""
    equal_pairs = 0
    pairs = 0
    for seed in range(200):
        firsts = [start(make_config(nid, V5, seed=seed)).election_deadline for nid in V5]
        assert len(set(firsts)) > 1
        for i in range(len(firsts)):
            for j in range(i + 1, len(firsts)):
                pairs += 1
                equal_pairs += firsts[i] == firsts[j]
    # Independent draws from 1001 values coincide about 0.1% of the time.
    assert equal_pairs / pairs < 0.01


# ---------------------------------------------------------------------------
# §5.3: log replication


def test_leader_appends_proposal_and_sends_append_entries_to_all() -> None:
    """Raft §5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the
    entry". Each carries prevLogIndex/prevLogTerm of the entry before it."""
    cfg = make_config(members=V5)
    state = sync_followers(make_leader(new_node(cfg, term=1, terms=(1,))))
    before = state.last_index
    state, actions = step(state, Propose(7, b"x"))
    new = Entry(state.term, b"x")
    assert state.last_index == before + 1
    assert state.log.entry_at(before + 1) == new
    assert [a for a in actions if isinstance(a, ProposalAccepted)] == [
        ProposalAccepted(7, before + 1, state.term)
    ]
    (write,) = persists(actions)
    assert (write.first_index, write.entries) == (before + 1, (new,))
    appends = sent_of(actions, AppendRequest)
    assert sorted(m.dst for m in appends) == peers_of(cfg)
    for m in appends:
        assert m.term == state.term
        assert (m.prev_log_index, m.prev_log_term) == (before, state.log.term_at(before))
        assert m.entries == (new,)
        assert m.leader_commit == state.commit_index


@pytest.mark.parametrize("n", [3, 5])
def test_entry_is_committed_once_on_a_majority_then_applied(n: int) -> None:
    """Raft §5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers ... Once the leader has applied the
    entry to its state machine" -- and not before. Figure 2: the leader counts
    matchIndex of a majority; "If commitIndex > lastApplied ... apply"."""
    cfg = make_config(members=voters(n))
    state = sync_followers(make_leader(new_node(cfg)))
    state, _ = feed(state, Propose(1, b"x"))
    index = state.last_index
    for k, peer in enumerate(peers_of(cfg), start=1):
        committed_before = state.commit_index
        state, actions = recv(state, AppendResponse(state.term, peer, "a", True, index))
        on_majority = 2 * (k + 1) > n  # k followers and the leader
        assert (state.commit_index == index) == on_majority
        newly = applied(actions)
        if on_majority and committed_before < index:
            assert newly == [(index, Entry(state.term, b"x"))]
        else:
            assert newly == []


def test_leader_and_followers_apply_the_same_entries_in_log_order() -> None:
    """Raft §5.3 / Figure 3 (State Machine Safety): each server applies committed entries
    in log order, exactly once, and all servers apply the same sequence."""
    cluster = LocalCluster(V3, pre_vote=False, check_quorum=False)
    leader = cluster.elect()
    follower = next(n for n in cluster.ids if n != leader)
    payloads = [f"cmd{i}".encode() for i in range(6)]
    for i, data in enumerate(payloads):
        # Half the commands are proposed at a follower, which forwards them.
        cluster.propose(leader if i % 2 == 0 else follower, data)
        cluster.deliver_all()
    cluster.run(until=cluster.now + 500)  # heartbeats spread the final commit index
    log = log_entries(cluster.nodes[leader])
    assert [e.data for e in log if e.kind is EntryKind.NORMAL] == payloads
    for nid in cluster.ids:
        assert cluster.applied[nid] == list(enumerate(log, start=1))


def test_leader_retries_append_entries_until_every_follower_has_every_entry() -> None:
    """Raft §5.3: "If followers crash or run slowly, or if network packets are lost, the
    leader retries AppendEntries RPCs indefinitely (even after it has responded to the
    client) until all followers eventually store all log entries"."""
    cluster = LocalCluster(V3, pre_vote=False, check_quorum=False)
    leader = cluster.elect()
    slow = next(n for n in cluster.ids if n != leader)
    cluster.cut.add((leader, slow))  # everything the leader sends it is lost
    for data in (b"x", b"y", b"z"):
        cluster.propose(leader, data)
    cluster.deliver_all()
    assert cluster.applied_data(leader) == [b"x", b"y", b"z"]  # committed without it
    assert cluster.applied_data(slow) == []
    cluster.heal()
    cluster.run(until=cluster.now + 3 * cluster.configs[leader].heartbeat_interval)
    assert cluster.leader() == leader
    assert log_entries(cluster.nodes[slow]) == log_entries(cluster.nodes[leader])
    assert cluster.applied[slow] == cluster.applied[leader]


def test_append_success_is_sent_only_once_the_entries_are_durable() -> None:
    """Raft Figure 2 ("updated on stable storage before responding to RPCs"): a
    follower acknowledges entries only once it has persisted them, since the leader
    counts the acknowledgement toward commitment."""
    state = new_node(make_config(), term=1)
    new = (entry(1, 1), entry(2, 1))
    state, actions = step(state, MessageReceived(AppendRequest(1, "b", "a", 0, 0, new, 0)))
    (write,) = persists(actions)
    assert (write.first_index, write.entries) == (1, new)
    assert sent_of(actions, AppendResponse) == []
    state, actions = step(state, PersistCompleted(write.seq))
    assert sent_of(actions, AppendResponse) == [AppendResponse(1, "a", "b", True, 2)]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "accepted"),
    [
        (0, 0, True),  # the empty prefix always matches
        (2, 1, True),
        (3, 2, True),  # our last entry
        (4, 2, False),  # we have no entry 4
        (9, 2, False),
        (3, 1, False),  # entry 3 is from term 2, not 1
        (2, 2, False),  # entry 2 is from term 1, not 2
    ],
)
def test_follower_rejects_append_entries_without_matching_prev_entry(
    prev_index: int, prev_term: int, accepted: bool
) -> None:
    """Raft §5.3: "If the follower does not find an entry in its log with the same index
    and term, then it refuses the new entries" (Figure 2: "Reply false if log doesn't
    contain an entry at prevLogIndex whose term matches prevLogTerm")."""
    state = new_node(make_config(), term=2, terms=(1, 1, 2))
    new = entry(prev_index + 1, 2)
    after, actions = recv(state, AppendRequest(2, "b", "a", prev_index, prev_term, (new,), 0))
    (reply,) = sent_of(actions, AppendResponse)
    assert reply.success == accepted
    assert reply.term == 2
    if accepted:
        assert log_entries(after) == (*log_entries(state)[:prev_index], new)
        assert reply.index == prev_index + 1
    else:
        assert log_entries(after) == log_entries(state)
        assert persists(actions) == []


def test_follower_deletes_conflicting_entry_and_all_that_follow() -> None:
    """Raft §5.3: "the leader handles inconsistencies by forcing the followers' logs to
    duplicate its own"; Figure 2: "If an existing entry conflicts with a new one
    (same index but different terms), delete the existing entry and all that follow
    it". The deletion is part of what the follower persists."""
    state = new_node(make_config(), term=2, terms=(1, 1, 2, 2, 2))
    new = (entry(3, 3), entry(4, 3))
    state, actions = recv(state, AppendRequest(3, "b", "a", 2, 1, new, 0))
    assert log_entries(state) == (*log_of_terms((1, 1)), *new)
    (write,) = persists(actions)
    assert write.truncate_from == 3
    assert (write.first_index, write.entries) == (3, new)
    assert sent_of(actions, AppendResponse) == [AppendResponse(3, "a", "b", True, 4)]


def test_follower_keeps_matching_entries_after_a_shorter_append() -> None:
    """Raft Figure 2: only a *conflicting* entry is deleted -- an AppendEntries that
    re-sends entries the follower already holds (e.g. a delayed duplicate) leaves
    the entries after them in place, and reports the index of its last new entry."""
    state = new_node(make_config(), term=1, terms=(1, 1, 1, 1))
    after, actions = recv(state, AppendRequest(1, "b", "a", 1, 1, (entry(2, 1),), 0))
    assert log_entries(after) == log_entries(state)
    assert all(p.truncate_from is None and p.entries == () for p in persists(actions))
    assert sent_of(actions, AppendResponse) == [AppendResponse(1, "a", "b", True, 2)]


def test_follower_applies_entries_the_leader_reports_committed() -> None:
    """Raft §5.3: "Once a follower learns that a log entry is committed, it applies the
    entry to its local state machine (in log order)". Figure 2: "If leaderCommit >
    commitIndex, set commitIndex = min(leaderCommit, index of last new entry)"."""
    state = new_node(make_config(), term=1, terms=(1, 1, 1, 1))
    entries = log_of_terms((1, 1, 1, 1))
    # The leader has committed 4, but this message only vouches for entries up to 2.
    state, actions = recv(state, AppendRequest(1, "b", "a", 1, 1, (entries[1],), 4))
    assert state.commit_index == 2
    assert applied(actions) == [(1, entries[0]), (2, entries[1])]
    # A later append (here, empty) vouches for the rest.
    state, actions = recv(state, AppendRequest(1, "b", "a", 4, 1, (), 3))
    assert state.commit_index == 3
    assert applied(actions) == [(3, entries[2])]
    # Heartbeats carry the commit index too.
    state, actions = recv(state, Heartbeat(1, "b", "a", 4))
    assert state.commit_index == 4
    assert applied(actions) == [(4, entries[3])]


@st.composite
def diverging_logs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """A leader's and a follower's log terms: a shared prefix, then suffixes from
    disjoint terms (so Log Matching holds: same index and term, same prefix)."""
    prefix = sorted(draw(st.lists(st.integers(1, 3), max_size=5)))
    leader = prefix + sorted(draw(st.lists(st.sampled_from([4, 6, 8]), max_size=5)))
    follower = prefix + sorted(draw(st.lists(st.sampled_from([5, 7]), max_size=5)))
    return leader, follower


def figure2_append(follower: list[Entry], prev: int, entries: Sequence[Entry]) -> list[Entry]:
    """Receiver rules 3 and 4 of AppendEntries in Figure 2, literally."""
    log = list(follower)
    for k, e in enumerate(entries):
        i = prev + k  # 0-based position of index prev + 1 + k
        if i < len(log) and log[i].term != e.term:
            del log[i:]  # 3. delete the existing entry and all that follow it
        if i >= len(log):
            log.extend(entries[k:])  # 4. append any new entries not already in the log
            break
    return log


@settings(max_examples=200, deadline=None)
@given(diverging_logs(), st.data())
def test_append_entries_makes_follower_log_match_leader(
    logs: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    """Raft §5.3 (Figure 2, AppendEntries receiver rules 2-5): from any point where the
    logs agree, the follower ends with the leader's entries through the last one
    sent, drops exactly the conflicting suffix, and commits min(leaderCommit, index
    of last new entry)."""
    leader_terms, follower_terms = logs
    shared = 0
    while (
        shared < min(len(leader_terms), len(follower_terms))
        and leader_terms[shared] == follower_terms[shared]
    ):
        shared += 1
    prev = data.draw(st.integers(0, shared), label="prev_log_index")
    count = data.draw(st.integers(0, len(leader_terms) - prev), label="entries")
    leader_commit = data.draw(st.integers(0, len(leader_terms)), label="leader_commit")
    leader_log = log_of_terms(leader_terms)
    sent_entries = leader_log[prev : prev + count]
    prev_term = leader_terms[prev - 1] if prev else 0
    term = 9
    state = new_node(make_config(), term=max(follower_terms, default=0), terms=follower_terms)
    state, actions = recv(
        state, AppendRequest(term, "b", "a", prev, prev_term, sent_entries, leader_commit)
    )
    expected = figure2_append(list(log_of_terms(follower_terms)), prev, sent_entries)
    assert list(log_entries(state)) == expected
    assert list(log_entries(state))[: prev + count] == list(leader_log[: prev + count])
    assert sent_of(actions, AppendResponse) == [AppendResponse(term, "a", "b", True, prev + count)]
    commit = min(leader_commit, prev + count)
    assert state.commit_index == commit
    assert applied(actions) == list(enumerate(expected[:commit], start=1))


# Figure 7: the leader's log and six possible follower logs when the leader of term 8
# comes to power (terms of entries 1, 2, 3, ...).
FIGURE_7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7_FOLLOWERS = {
    "a": (1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 1, 4),
    "c": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 1, 4, 4, 4, 4),
    "f": (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


def load_durable(cluster: LocalCluster, nid: str, hard: HardState, terms: Sequence[int]) -> None:
    """Put ``nid``'s disk in the given state and restart it from there."""
    cluster.storage[nid] = Storage(hard, list(log_of_terms(terms)))
    cluster.crash(nid)
    cluster.restart(nid)


def test_figure_7_every_follower_log_converges_to_the_leaders() -> None:
    """Raft §5.3, Figure 7: whatever the follower's log -- missing entries (a, b),
    extra uncommitted entries (c, d), or both (e, f) -- the leader finds the latest
    point where they agree (nextIndex starts just after its last entry, 11, and
    backs off on rejections), and the follower's log ends identical to the leader's.
    The term-8 leader is elected by the followers whose logs are not more up to date
    (§5.4.1)."""
    messages: list[Message] = []

    def record(_nid: str, action: Action) -> None:
        if isinstance(action, Send):
            messages.append(action.message)

    ids = ("leader", *FIGURE_7_FOLLOWERS)
    cluster = LocalCluster(ids, pre_vote=False, check_quorum=False, on_action=record)
    load_durable(cluster, "leader", HardState(7, None), FIGURE_7_LEADER)
    # The followers restart when the leader's timer fires, so it fires first: it
    # stands for term 8.
    cluster.now = cluster.nodes["leader"].election_deadline
    for nid, terms in FIGURE_7_FOLLOWERS.items():
        load_durable(cluster, nid, HardState(max(terms), None), terms)
    cluster.step("leader", Tick(cluster.now))
    cluster.deliver_all()
    leader = cluster.nodes["leader"]
    assert leader.role is Role.LEADER
    assert leader.term == 8

    voters_for = {m.src for m in messages if isinstance(m, VoteResponse) and m.granted}
    assert voters_for == {
        nid
        for nid, terms in FIGURE_7_FOLLOWERS.items()
        if up_to_date(FIGURE_7_LEADER[-1], len(FIGURE_7_LEADER), terms)
    }
    # nextIndex starts at 11: every first AppendEntries has prevLogIndex 10 (term 6).
    appends = [m for m in messages if isinstance(m, AppendRequest)]
    for nid in FIGURE_7_FOLLOWERS:
        first = next(m for m in appends if m.dst == nid)
        assert (first.prev_log_index, first.prev_log_term) == (10, 6)
    # Exactly the followers lacking entry 10 of term 6 refuse it.
    rejecters = {m.src for m in messages if isinstance(m, AppendResponse) and not m.success}
    assert rejecters == {
        nid
        for nid, terms in FIGURE_7_FOLLOWERS.items()
        if len(terms) < 10 or terms[9] != FIGURE_7_LEADER[9]
    }

    # Followers that caught up after the commit learn it from the next heartbeat
    # ("future AppendEntries RPCs (including heartbeats)", §5.3).
    cluster.run(until=cluster.now + 2 * cluster.configs["leader"].heartbeat_interval)
    assert cluster.leader() == "leader"
    expected = (*log_of_terms(FIGURE_7_LEADER), Entry(8, b"", EntryKind.NOOP))
    assert log_entries(leader) == expected  # the leader only appended (§5.3)
    for nid in ids:
        assert log_entries(cluster.nodes[nid]) == expected, nid
        assert tuple(cluster.storage[nid].entries) == expected, nid
        # The term-8 entry commits everything before it, everywhere.
        assert cluster.applied[nid] == list(enumerate(expected, start=1)), nid


# ---------------------------------------------------------------------------
# §5.4.1: election restriction


@pytest.mark.parametrize(
    ("voter_terms", "cand_last_term", "cand_last_index", "granted"),
    [
        pytest.param((1, 1, 2), 1, 10, False, id="lower-last-term-longer-log"),
        pytest.param((1, 2, 2), 2, 2, False, id="same-last-term-shorter"),
        pytest.param((1, 2, 2), 2, 3, True, id="same-last-term-same-length"),
        pytest.param((1, 2, 2), 2, 4, True, id="same-last-term-longer"),
        pytest.param((1, 1, 1, 1), 2, 2, True, id="higher-last-term-shorter"),
        pytest.param((1,), 0, 0, False, id="empty-log-vs-non-empty"),
        pytest.param((), 0, 0, True, id="both-empty"),
    ],
)
def test_vote_denied_to_candidate_with_less_up_to_date_log(
    voter_terms: tuple[int, ...], cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """Raft §5.4.1: "The RequestVote RPC ... includes information about the candidate's
    log, and the voter denies its vote if its own log is more up-to-date than that
    of the candidate". Later last term wins; with equal last terms, the longer log."""
    voter = new_node(make_config(), term=max(voter_terms, default=0), terms=voter_terms)
    term = voter.term + 1
    voter, actions = recv(voter, VoteRequest(term, "b", "a", cand_last_index, cand_last_term))
    assert sent_of(actions, VoteResponse) == [VoteResponse(term, "a", "b", granted)]
    assert voter.voted_for == ("b" if granted else None)
    assert voter.term == term


@settings(max_examples=300, deadline=None)
@given(
    voter_terms=st.lists(st.integers(1, 5), max_size=6).map(sorted),
    cand_last_index=st.integers(0, 8),
    cand_last_term=st.integers(1, 6),
    pre_vote=st.booleans(),
)
def test_election_restriction_property(
    voter_terms: list[int], cand_last_index: int, cand_last_term: int, pre_vote: bool
) -> None:
    """Raft §5.4.1, over all (candidate last term/index, voter log) pairs: the vote (or,
    thesis §9.6, the pre-vote) is granted exactly when the candidate's log is at
    least as up-to-date as the voter's."""
    if cand_last_index == 0:
        cand_last_term = 0  # an empty log has no last term
    cfg = make_config(pre_vote=pre_vote)
    voter_term = max(voter_terms, default=0)
    voter = new_node(cfg, term=voter_term, terms=voter_terms)
    term = max(voter_term, cand_last_term) + 1
    request = VoteRequest(term, "b", "a", cand_last_index, cand_last_term, pre_vote=pre_vote)
    voter, actions = recv(voter, request)
    (reply,) = sent_of(actions, VoteResponse)
    assert reply.granted == up_to_date(cand_last_term, cand_last_index, voter_terms)
    assert reply.pre_vote == pre_vote
    if not pre_vote:
        assert voter.voted_for == ("b" if reply.granted else None)


def test_node_missing_a_committed_entry_cannot_be_elected() -> None:
    """Raft §5.4.1: "a candidate must contact a majority of the cluster in order to be
    elected, which means that every committed entry must be present in at least one
    of those servers" -- so a node lacking a committed entry loses, and the leader
    that is elected has the entry (Leader Completeness)."""
    cluster = LocalCluster(V3, pre_vote=False, check_quorum=False)
    leader = cluster.elect()
    up_to_date_node, lagging = (n for n in cluster.ids if n != leader)
    cluster.partition([leader, up_to_date_node], [lagging])
    cluster.propose(leader, b"x")
    cluster.deliver_all()
    assert b"x" in cluster.applied_data(leader)  # committed on two of three
    cluster.heal()
    cluster.crash(leader)
    # The lagging node times out first: the only other voter refuses it.
    cluster.now = cluster.nodes[lagging].election_deadline
    cluster.step(lagging, Tick(cluster.now))
    cluster.deliver_all()
    assert cluster.nodes[lagging].role is not Role.LEADER
    assert cluster.elect() == up_to_date_node
    cluster.run(until=cluster.now + 500)
    assert cluster.applied_data(lagging) == cluster.applied_data(leader) == [b"x"]


# ---------------------------------------------------------------------------
# §5.4.2: committing entries from previous terms


def test_leader_does_not_commit_previous_term_entry_by_counting_replicas() -> None:
    """Raft §5.4.2: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by
    counting replicas; once an entry from the current term has been committed in
    this way, then all prior entries are committed indirectly"."""
    state = make_leader(new_node(make_config(members=V5), term=3, terms=(1, 2)))
    assert state.term == 4
    assert log_terms(state) == [1, 2, 4]  # the term-4 no-op at index 3
    # Entry 2 (term 2) reaches every follower: still not committed.
    for peer in ("b", "c", "d", "e"):
        state, actions = recv(state, AppendResponse(4, peer, "a", True, 2))
        assert state.commit_index == 0
        assert applied(actions) == []
    # The term-4 entry on the leader and one follower: not yet a majority.
    state, actions = recv(state, AppendResponse(4, "b", "a", True, 3))
    assert state.commit_index == 0
    assert applied(actions) == []
    # On a majority: it commits, and entries 1 and 2 with it.
    state, actions = recv(state, AppendResponse(4, "c", "a", True, 3))
    assert state.commit_index == 3
    assert applied(actions) == list(enumerate(log_entries(state), start=1))


@settings(max_examples=200, deadline=None)
@given(
    n=st.sampled_from([3, 5]),
    old_terms=st.lists(st.integers(1, 3), max_size=6).map(sorted),
    extra_term=st.integers(0, 2),
    proposals=st.integers(0, 3),
    data=st.data(),
)
def test_leader_commit_rule_property(
    n: int, old_terms: list[int], extra_term: int, proposals: int, data: st.DataObject
) -> None:
    """Raft Figure 2 (Rules for Servers, leaders) with §5.4.2: commitIndex becomes the
    largest N such that a majority of matchIndex[i] >= N *and* log[N].term ==
    currentTerm; it never lands on an entry of an earlier term."""
    cfg = make_config(members=voters(n))
    start_term = max(old_terms, default=0) + extra_term
    state = make_leader(new_node(cfg, term=start_term, terms=old_terms))
    for k in range(proposals):
        state, _ = feed(state, Propose(k, b"p%d" % k))
    last = state.last_index
    matches = {
        peer: data.draw(st.integers(0, last), label=f"match[{peer}]") for peer in peers_of(cfg)
    }
    order = data.draw(st.permutations(peers_of(cfg)), label="order")
    for peer in order:
        if matches[peer]:
            state, _ = recv(state, AppendResponse(state.term, peer, "a", True, matches[peer]))
        assert state.commit_index == 0 or state.log.term_at(state.commit_index) == state.term
    expected = 0
    for index in range(1, last + 1):
        replicas = 1 + sum(m >= index for m in matches.values())
        if 2 * replicas > n and state.log.term_at(index) == state.term:
            expected = index
    assert state.commit_index == expected


FIG8 = ("s1", "s2", "s3", "s4", "s5")
S1_ENTRY = Entry(2, b"s1 in term 2")  # Figure 8's index-2 entry from term 2
S5_ENTRY = Entry(3, b"s5 in term 3")  # and the one S5 wrote there in term 3


def deliver_where(cluster: LocalCluster, ok: Callable[[Message], bool]) -> None:
    """Deliver in-flight messages passing ``ok`` (and their consequences) until none is left."""
    while batch := [m for m in cluster.in_flight if ok(m)]:
        for m in batch:
            cluster.deliver(m)


def is_vote(m: Message) -> bool:
    return isinstance(m, VoteRequest | VoteResponse)


def campaign(cluster: LocalCluster, nid: str) -> None:
    """Fire ``nid``'s election timer (no one else's) and deliver the election's messages."""
    cluster.now = max(cluster.now, cluster.nodes[nid].election_deadline)
    cluster.step(nid, Tick(cluster.now))
    deliver_where(cluster, is_vote)


def heartbeat(cluster: LocalCluster, leader: str) -> None:
    """Fire ``leader``'s heartbeat timer (no one else's) and deliver what follows."""
    cluster.now = max(cluster.now, cluster.nodes[leader].heartbeat_deadline)
    cluster.step(leader, Tick(cluster.now))
    cluster.deliver_all()


def figure_8_c() -> LocalCluster:
    """Figure 8 up to (c): S1, leader of term 4, has replicated the term-2 entry at
    index 2 to a majority, but not yet its own term-4 entry (its no-op)."""
    cluster = LocalCluster(FIG8, pre_vote=False, check_quorum=False, max_entries_per_message=1)
    first = Entry(1, b"committed in term 1")
    # (b): S1 led term 2 and reached only S2 before crashing; S5 won term 3 with the
    # votes of S3, S4 and itself and wrote a different entry at index 2.
    disks = {
        "s1": (HardState(2, "s1"), [first, S1_ENTRY]),
        "s2": (HardState(2, "s1"), [first, S1_ENTRY]),
        "s3": (HardState(3, "s5"), [first]),
        "s4": (HardState(3, "s5"), [first]),
        "s5": (HardState(3, "s5"), [first, S5_ENTRY]),
    }
    for nid, (hard, entries) in disks.items():
        cluster.storage[nid] = Storage(hard, list(entries))
        cluster.crash(nid)
        cluster.restart(nid)
    # (c): S5 crashes; S1 restarts and is elected for term 4.
    cluster.crash("s5")
    while cluster.nodes["s1"].role is not Role.LEADER:
        campaign(cluster, "s1")
    s1 = cluster.nodes["s1"]
    assert s1.term == 4
    assert log_terms(s1) == [1, 2, 4]
    # S1 replicates entry 2 to S3 and S4; its term-4 entry reaches no one.
    cluster.cut.add(("s1", "s2"))

    def places_term_4_entry(m: Message) -> bool:
        if not isinstance(m, AppendRequest) or not any(e.term == 4 for e in m.entries):
            return False
        return cluster.nodes[m.dst].log.term_at(m.prev_log_index) == m.prev_log_term

    deliver_where(cluster, lambda m: not places_term_4_entry(m))
    for nid in ("s2", "s3", "s4"):
        assert log_entries(cluster.nodes[nid]) == (first, S1_ENTRY)
    return cluster


def test_figure_8_entry_from_previous_term_is_not_committed_by_replication() -> None:
    """Raft §5.4.2, Figure 8 (c)-(d): the term-2 entry is stored on a majority (S1, S2,
    S3, S4) and S1 knows it, yet it is not committed -- rightly, because S5 can still
    be elected (votes from S2, S3, S4) and overwrite it with its own term-3 entry.
    No server ever applies the term-2 entry."""
    cluster = figure_8_c()
    s1 = cluster.nodes["s1"]
    known = [p for p in ("s3", "s4") if (pr := s1.progress_of(p)) and pr.match_index >= 2]
    assert len(known) + 1 >= 3  # S1 counts itself and two followers holding entry 2
    assert s1.commit_index < 2
    assert all(cluster.applied[nid] == [] for nid in FIG8)

    # (d): S1 crashes before its term-4 entry spreads; S5 comes back and is elected.
    cluster.crash("s1")
    cluster.in_flight.clear()
    cluster.heal()
    cluster.restart("s5")
    for _ in range(5):
        if cluster.nodes["s5"].role is Role.LEADER:
            break
        campaign(cluster, "s5")
    assert cluster.nodes["s5"].role is Role.LEADER
    cluster.deliver_all()
    heartbeat(cluster, "s5")  # tells a follower that caught up late the commit index
    s5 = cluster.nodes["s5"]
    assert s5.role is Role.LEADER
    for nid in ("s2", "s3", "s4", "s5"):
        assert log_entries(cluster.nodes[nid]) == log_entries(s5)
        assert cluster.nodes[nid].log.entry_at(2) == S5_ENTRY
        assert cluster.applied[nid][1] == (2, S5_ENTRY)
    for nid in FIG8:
        assert all(e != S1_ENTRY for _, e in cluster.applied[nid]), nid


def test_figure_8_entry_commits_once_a_current_term_entry_is_on_a_majority() -> None:
    """Raft §5.4.2, Figure 8 (e): once S1's term-4 entry is on a majority, it is
    committed and the term-2 entry before it with it; S5 can then no longer win an
    election, and every server ends up applying the term-2 entry at index 2."""
    cluster = figure_8_c()
    noops = [m for m in cluster.in_flight if isinstance(m, AppendRequest) and m.dst in ("s3", "s4")]
    assert sorted(m.dst for m in noops) == ["s3", "s4"]
    cluster.deliver(noops[0])
    deliver_where(cluster, lambda m: m.dst == "s1")  # the acknowledgement
    # The term-4 entry is on S1 and one follower: two of five.
    assert cluster.nodes["s1"].commit_index == 0
    cluster.deliver(noops[1])
    deliver_where(cluster, lambda m: m.dst == "s1")
    s1 = cluster.nodes["s1"]
    assert s1.commit_index == 3
    assert cluster.applied["s1"] == list(enumerate(log_entries(s1), start=1))
    assert cluster.applied["s1"][1] == (2, S1_ENTRY)

    # (e): S1 crashes; S5 cannot win: S3 and S4 hold a more up-to-date log.
    cluster.crash("s1")
    cluster.in_flight.clear()
    cluster.heal()
    cluster.restart("s5")
    for _ in range(5):
        campaign(cluster, "s5")
        assert cluster.nodes["s5"].role is not Role.LEADER
    new_leader = cluster.elect()
    assert new_leader in ("s3", "s4")
    cluster.run(until=cluster.now + 500)
    for nid in ("s2", "s3", "s4", "s5"):
        assert cluster.nodes[nid].log.entry_at(2) == S1_ENTRY
        assert cluster.applied[nid][1] == (2, S1_ENTRY)
