"""Cluster membership changes (thesis chapter 4), in the core.

Single-server changes (§4.1) with the 2015 fix, joint consensus (§4.3) with
automatic leave, learners (§4.2.1), a removed leader stepping down (§4.2.2),
removed servers unable to disrupt (§4.2.3), and the configuration following
the log (a truncated configuration entry rolls back).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graft_core import (
    AppendRequest,
    ChangeOp,
    Config,
    ConfigError,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MessageReceived,
    PersistCompleted,
    ProposalAccepted,
    ProposalRejected,
    RejectReason,
    Role,
    Send,
    Tick,
    VoteRequest,
    start,
    step,
)
from graft_core._membership import apply_changes
from graft_sim import LocalCluster

IDS = ("a", "b", "c")


def answer(c: LocalCluster, nid: str) -> ProposalAccepted | ProposalRejected:
    return c.answers[nid][-1]


def settled(
    ids: tuple[str, ...] = IDS, *, pre_vote: bool = True, check_quorum: bool = True
) -> tuple[LocalCluster, str]:
    """A cluster with a leader that has committed an entry of its term."""
    c = LocalCluster(ids, pre_vote=pre_vote, check_quorum=check_quorum)
    leader = c.elect()
    c.run(c.now + 300)
    return c, leader


# --------------------------------------------------------------- the value


def test_membership_encoding_is_canonical_and_validated() -> None:
    """Configurations travel in the log as bytes: equal values give equal bytes, and only
    the canonical encoding of a valid configuration decodes (input from peers/disk)."""
    m = Membership(("c", "a", "b"), learners=("d",), addresses=(("d", "10.0.0.4:1"),))
    assert m.voters == ("a", "b", "c")
    assert Membership.decode_untrusted(m.encode()) == m
    for bad in [b"", b"[]", m.encode() + b" ", b'{"voters":["a"]}', "text", None]:
        with pytest.raises(ConfigError):
            Membership.decode_untrusted(bad)
    with pytest.raises(ConfigError, match="both voter and learner"):
        Membership(("a",), learners=("a",))
    with pytest.raises(ConfigError, match="at least one voter"):
        Membership(())
    with pytest.raises(ConfigError, match="single string"):
        Membership("abc")


@given(
    voters=st.sets(st.sampled_from("abcdef"), min_size=1),
    learners=st.sets(st.sampled_from("ghij")),
    ops=st.lists(
        st.tuples(st.sampled_from(["add_voter", "add_learner", "remove"]),
                  st.sampled_from("abcdefghij")),
        min_size=1, max_size=4, unique_by=lambda t: t[1],
    ),
)
def test_apply_changes_is_single_server_or_joint(
    voters: set[str], learners: set[str], ops: list[tuple[str, str]]
) -> None:
    """Thesis §4.1/§4.3: a change moving at most one voter takes effect directly; anything
    larger goes through C_old,new, whose outgoing half is exactly the old voters."""
    current = Membership(tuple(voters), learners=tuple(learners))
    target, problem = apply_changes(current, tuple(ChangeOp(k, n) for k, n in ops))
    if problem is not None:
        assert target == current
        return
    moved = set(target.voters) ^ set(current.voters)
    if len(moved) <= 1:
        assert not target.is_joint
    else:
        assert target.outgoing == current.voters
        assert not target.leave_joint().is_joint
    assert target.voters and not set(target.voters) & set(target.learners)


# --------------------------------------------------------------- learners


def test_learner_catches_up_without_voting_or_counting() -> None:
    """Thesis §4.2.1: a new server joins as a non-voting learner: it receives the log, but
    is not asked for votes and is not needed to commit -- availability is not reduced."""
    c, leader = settled()
    for i in range(10):
        c.propose(leader, b"v%d" % i)
    c.run(c.now + 300)
    c.add_node("d")
    assert c.nodes["d"].membership.voters == IDS and not c.nodes["d"].membership.is_voter("d")
    c.change_membership(leader, ChangeOp("add_learner", "d"))
    c.run(c.now + 1000)
    assert isinstance(answer(c, leader), ProposalAccepted)
    assert c.nodes["d"].applied_index == c.nodes[leader].applied_index
    assert c.applied["d"] == c.applied[leader]
    # Cut the learner off: commits go on with the three voters.
    c.partition(["d"], IDS)
    c.propose(leader, b"without d")
    c.run(c.now + 300)
    assert c.applied_data(leader)[-1] == b"without d"
    # A learner never campaigns, however long it hears nothing.
    c.run(c.now + 20_000)
    assert c.nodes["d"].role is Role.FOLLOWER and c.nodes["d"].term == c.nodes[leader].term


def test_promoted_learner_counts_toward_the_quorum() -> None:
    """After add_voter, four voters need three for a majority (Raft §5.2 with thesis §4.1)."""
    c, leader = settled()
    c.add_node("d")
    c.change_membership(leader, ChangeOp("add_learner", "d"))
    c.run(c.now + 500)
    c.change_membership(leader, ChangeOp("add_voter", "d"))
    c.run(c.now + 500)
    assert c.nodes[leader].membership.voters == ("a", "b", "c", "d")
    others = [n for n in c.ids if n != leader]
    # Leader plus one other out of four is not a majority any more.
    c.partition([leader, others[0]], others[1:])
    c.propose(leader, b"needs three")
    c.run(c.now + 300)
    assert b"needs three" not in c.applied_data(leader)
    c.heal()
    c.run(c.now + 300)
    assert b"needs three" in c.applied_data(leader)


# --------------------------------------------------------------- one at a time


def test_second_change_waits_for_the_first() -> None:
    """Thesis §4.1: one change at a time -- the next only once the previous is committed."""
    c, leader = settled()
    c.add_node("d")
    c.add_node("e")
    c.change_membership(leader, ChangeOp("add_learner", "d"))
    c.change_membership(leader, ChangeOp("add_learner", "e"))
    first, second = c.answers[leader][-2:]
    assert isinstance(first, ProposalAccepted)
    assert isinstance(second, ProposalRejected)
    assert second.reason is RejectReason.CHANGE_IN_PROGRESS
    c.run(c.now + 500)
    c.change_membership(leader, ChangeOp("add_learner", "e"))
    assert isinstance(answer(c, leader), ProposalAccepted)


def test_change_before_current_term_commit_is_refused() -> None:
    """The 2015 fix (Ongaro, raft-dev "bug in single-server membership changes"): a new
    leader appends no configuration entry until an entry of its own term is committed."""
    # Win an election, then deliver none of the new leader's appends.
    d = LocalCluster(IDS)
    d.tick(d.next_deadline())
    while d.leader() is None:
        d.deliver_round()
        if not d.in_flight:
            d.tick(d.next_deadline())
    fresh = d.leader()
    assert fresh is not None
    d.in_flight.clear()
    s = d.nodes[fresh]
    assert s.log.term_at(s.commit_index) != s.term
    d.change_membership(fresh, ChangeOp("remove", next(n for n in IDS if n != fresh)))
    rejected = answer(d, fresh)
    assert isinstance(rejected, ProposalRejected) and rejected.reason is RejectReason.NOT_READY
    # Once its no-op commits, the same change is accepted.
    d.run(d.now + 300)
    d.change_membership(fresh, ChangeOp("remove", next(n for n in IDS if n != fresh)))
    assert isinstance(answer(d, fresh), ProposalAccepted)


def test_invalid_changes_are_reported_with_a_reason() -> None:
    """Caller mistakes against the leader's configuration come back as INVALID_CHANGE, with
    a human-readable detail, and change nothing."""
    c, leader = settled()
    before = c.nodes[leader]
    cases = [
        (ChangeOp("add_voter", "a"), "already a voter"),
        (ChangeOp("remove", "zz"), "not a member"),
    ]
    for op, why in cases:
        c.change_membership(leader, op)
        rejected = answer(c, leader)
        assert isinstance(rejected, ProposalRejected)
        assert rejected.reason is RejectReason.INVALID_CHANGE and why in rejected.detail
    c2, solo = settled(("a",))
    c2.change_membership(solo, ChangeOp("remove", "a"))
    rejected = answer(c2, solo)
    assert isinstance(rejected, ProposalRejected) and "every voter" in rejected.detail
    assert c.nodes[leader].log == before.log
    with pytest.raises(ConfigError, match="unknown membership change"):
        ChangeOp("promote", "d")


def test_followers_refuse_membership_changes() -> None:
    """Membership changes are made at the leader; a follower names it."""
    c, leader = settled()
    follower = next(n for n in IDS if n != leader)
    c.change_membership(follower, ChangeOp("remove", leader))
    rejected = answer(c, follower)
    assert isinstance(rejected, ProposalRejected)
    assert rejected.reason is RejectReason.NOT_LEADER and rejected.leader_hint == leader


# --------------------------------------------------------------- joint consensus


def test_joint_consensus_replaces_two_voters_and_leaves_automatically() -> None:
    """Thesis §4.3: replacing two voters goes through C_old,new; once it commits the leader
    appends C_new by itself (etcd's auto-leave)."""
    c, leader = settled()
    for n in ("d", "e"):
        c.add_node(n)
        c.change_membership(leader, ChangeOp("add_learner", n))
        c.run(c.now + 500)
    leaving = [n for n in IDS if n != leader]
    c.change_membership(
        leader, ChangeOp("add_voter", "d"), ChangeOp("add_voter", "e"),
        ChangeOp("remove", leaving[0]), ChangeOp("remove", leaving[1]),
    )
    c.run(c.now + 1000)
    seen = [m.membership for m in c.memberships[leader]]
    joint = [m for m in seen if m.is_joint]
    assert joint and joint[-1].outgoing == IDS
    assert joint[-1].voters == tuple(sorted((leader, "d", "e")))
    final = c.nodes[leader].membership
    assert not final.is_joint and final.voters == tuple(sorted((leader, "d", "e")))
    # Every remaining member agrees; the removed ones are no longer needed.
    c.partition(leaving, [leader, "d", "e"])
    c.propose(leader, b"new config")
    c.run(c.now + 500)
    for n in (leader, "d", "e"):
        assert c.applied_data(n)[-1] == b"new config"


def test_joint_configuration_needs_both_majorities() -> None:
    """Thesis §4.3: while joint, commitment needs a majority of C_old *and* of C_new."""
    c, leader = settled()
    for n in ("d", "e"):
        c.add_node(n)
        c.change_membership(leader, ChangeOp("add_learner", n))
        c.run(c.now + 500)
    olds = [n for n in IDS if n != leader]
    # Cut the old voters off before the joint entry can commit: C_new = {leader, d, e}
    # has a majority, C_old = {a, b, c} does not.
    c.partition([leader, "d", "e"], olds)
    c.change_membership(
        leader, ChangeOp("add_voter", "d"), ChangeOp("add_voter", "e"),
        ChangeOp("remove", olds[0]), ChangeOp("remove", olds[1]),
    )
    c.run(c.now + 500)
    state = c.nodes[leader]
    assert state.membership.is_joint
    assert state.commit_index < state.membership_index, "committed without C_old's majority"
    c.heal()
    c.run(c.now + 1000)
    assert not c.nodes[c.leader() or leader].membership.is_joint


# --------------------------------------------------------------- removal


def test_removed_leader_steps_down_once_the_new_configuration_commits() -> None:
    """Thesis §4.2.2: a leader that removes itself manages the cluster until C_new is
    committed (without counting itself), then steps down; the rest elect a new leader."""
    c, leader = settled()
    c.change_membership(leader, ChangeOp("remove", leader))
    c.run(c.now + 200)
    state = c.nodes[leader]
    assert state.role is Role.FOLLOWER
    assert leader not in state.membership.members
    assert state.commit_index >= state.membership_index
    rest = [n for n in IDS if n != leader]
    new = c.elect()
    assert new in rest
    c.propose(new, b"after removal")
    c.run(c.now + 500)
    assert all(c.applied_data(n)[-1] == b"after removal" for n in rest)
    # The removed node never campaigns again.
    term = c.nodes[leader].term
    c.run(c.now + 20_000)
    assert c.nodes[leader].role is Role.FOLLOWER and c.nodes[leader].term == term


def test_removed_server_cannot_disrupt_the_cluster() -> None:
    """Thesis §4.2.3: a removed server that never learned of its removal times out and
    campaigns; the members drop its requests (it is not a member) and keep their leader."""
    c, leader = settled(pre_vote=True, check_quorum=True)
    victim = next(n for n in IDS if n != leader)
    c.partition([victim], [n for n in IDS if n != victim])
    c.change_membership(leader, ChangeOp("remove", victim))
    c.run(c.now + 500)
    assert victim not in c.nodes[leader].membership.members
    assert c.nodes[victim].membership.is_voter(victim), "it never heard"
    term = c.nodes[leader].term
    c.heal()
    c.run(c.now + 20_000)
    assert c.leader() == leader and c.nodes[leader].term == term
    dropped = [d for n in IDS if n != victim for d in c.dropped[n]]
    assert any(isinstance(d.message, VoteRequest) for d in dropped)


def test_removed_server_cannot_disrupt_even_without_pre_vote() -> None:
    """Without pre-vote the removed server bumps its own term, but members still ignore it."""
    c, leader = settled(pre_vote=False, check_quorum=False)
    victim = next(n for n in IDS if n != leader)
    c.partition([victim], [n for n in IDS if n != victim])
    c.change_membership(leader, ChangeOp("remove", victim))
    c.run(c.now + 500)
    term = c.nodes[leader].term
    c.heal()
    c.run(c.now + 20_000)
    assert c.leader() == leader and c.nodes[leader].term == term
    assert c.nodes[victim].term > term


# --------------------------------------------------------------- the log decides


def test_truncated_configuration_entry_rolls_back() -> None:
    """Thesis §4.1: the latest configuration in the log is in effect, committed or not; a
    follower that truncates it goes back to the one before."""
    cfg = Config("b", IDS)
    new_members = Membership(("a", "b"))
    durable = DurableState(
        HardState(2), (Entry(1), Entry(1, new_members.encode(), EntryKind.CONFIG))
    )
    state = start(cfg, durable=durable)
    assert state.membership == new_members and state.membership_index == 2
    msg = AppendRequest(3, "a", "b", 1, 1, (Entry(3),), 1)
    new, actions = step(state, MessageReceived(msg))
    assert new.membership == Membership(IDS) and new.membership_index == 0
    assert new.peers == ("a", "c")
    assert any(type(a).__name__ == "MembershipChanged" for a in actions)


def test_configuration_survives_restart_and_snapshots() -> None:
    """A restarted node uses the latest configuration it stored, whether in its log or in
    its snapshot's metadata, not the bootstrap voters."""
    c, leader = settled()
    c.add_node("d")
    c.change_membership(leader, ChangeOp("add_learner", "d"))
    c.run(c.now + 500)
    follower = next(n for n in IDS if n != leader)
    expected = c.nodes[follower].membership
    c.crash(follower)
    c.restart(follower)
    assert c.nodes[follower].membership == expected
    c.run(c.now + 300)
    c.take_snapshot(follower)
    c.crash(follower)
    # Drop the log so only the snapshot's metadata knows the configuration.
    c.storage[follower].entries.clear()
    c.restart(follower)
    assert c.nodes[follower].membership == expected


def test_joining_node_accepts_the_log_from_an_unknown_leader() -> None:
    """A node started with joining=True does not know the members yet; it accepts leader
    traffic from anyone and never campaigns until it is a voter."""
    cfg = Config("d", IDS, joining=True)
    state = start(cfg)
    assert not state.membership.is_voter("d")
    later, _ = step(state, MessageReceived(AppendRequest(4, "x", "d", 0, 0, (), 0)))
    assert later.leader_id == "x"
    # Its answer leaves once the new term is durable (Figure 2).
    later, actions = step(later, PersistCompleted(later.persist_seq))
    assert [a.message.dst for a in actions if isinstance(a, Send)] == ["x"]
    quiet, actions = step(later, Tick(later.now + 100 * cfg.timeout_max))
    assert quiet.role is Role.FOLLOWER and quiet.term == later.term
    assert not any(isinstance(a, Send) for a in actions), "a non-voter never campaigns"
    with pytest.raises(ConfigError, match="joining"):
        Config("d", IDS)
    with pytest.raises(ConfigError, match="already a voter"):
        Config("a", IDS, joining=True)


@settings(max_examples=30, deadline=None)
@given(
    script=st.lists(
        st.sampled_from(["add", "promote", "remove", "demote", "swap", "cut", "heal", "crash",
                         "propose", "tick"]),
        min_size=4, max_size=25,
    ),
    seed=st.integers(0, 5),
)
def test_random_membership_changes_keep_one_history(script: list[str], seed: int) -> None:
    """State Machine Safety across configuration changes under partitions and crashes:
    every node's applied sequence is a prefix of every longer one, and at most one leader
    exists per term (Election Safety, §5.2)."""
    c = LocalCluster(IDS, seed=seed)
    c.elect()
    spare = iter("defghijklmnop")
    leaders: dict[int, str] = {}
    for k, op in enumerate(script):
        leader = c.leader()
        live = [n for n in c.ids if n not in c.down]
        if leader is not None:
            ms = c.nodes[leader].membership
            voters = [v for v in ms.voters if v != leader]
            if op == "add":
                n = next(spare)
                c.add_node(n)
                c.change_membership(leader, ChangeOp("add_learner", n))
            elif op == "promote" and ms.learners:
                c.change_membership(leader, ChangeOp("add_voter", ms.learners[0]))
            elif op == "remove" and voters:
                c.change_membership(leader, ChangeOp("remove", voters[k % len(voters)]))
            elif op == "demote" and voters:
                c.change_membership(leader, ChangeOp("add_learner", voters[0]))
            elif op == "swap" and len(voters) >= 2 and ms.learners:
                c.change_membership(
                    leader, ChangeOp("add_voter", ms.learners[0]),
                    ChangeOp("remove", voters[0]), ChangeOp("remove", voters[1]),
                )
            elif op == "propose":
                c.propose(leader, b"p%d" % k)
        if op == "cut" and live:
            n = live[k % len(live)]
            c.partition([n], [m for m in c.ids if m != n])
        elif op == "heal":
            c.heal()
        elif op == "crash" and not c.down and live:
            c.crash(live[k % len(live)])
        elif op == "tick":
            c.tick(c.next_deadline())
        c.deliver_all()
        for n in c.ids:
            s = c.nodes[n]
            if s.role is Role.LEADER:
                assert leaders.setdefault(s.term, n) == n, f"two leaders in term {s.term}"
        runs = sorted((c.applied[n] for n in c.ids), key=len)
        for i in range(len(runs) - 1):
            assert runs[i + 1][: len(runs[i])] == runs[i]


@pytest.mark.parametrize("check_quorum", [True, False])
def test_removed_leader_that_keeps_heartbeating_changes_nothing(check_quorum: bool) -> None:
    """A leader cut off right after replicating its own removal never learns C_new committed.
    It keeps heartbeating (at its old term, with check-quorum off), but the members, now in
    a newer term with a leader of their own, answer with that term (Raft §5.1) and it
    steps down; with check-quorum it steps down by itself even earlier. As its C_new is
    uncommitted as far as it knows, it may still stand (thesis §4.1) -- but its pre-votes
    and votes cannot move the members: their term and leader stay."""
    c, leader = settled(pre_vote=True, check_quorum=check_quorum)
    rest = [n for n in IDS if n != leader]
    c.change_membership(leader, ChangeOp("remove", leader))
    c.deliver_round()  # C_new reaches the others ...
    c.partition([leader], rest)  # ... but no acknowledgement gets back
    c.in_flight.clear()
    c.run(c.now + 30_000)
    new = c.leader() if c.leader() != leader else next(
        n for n in rest if c.nodes[n].role is Role.LEADER
    )
    assert new in rest
    term = c.nodes[new].term
    c.heal()
    c.run(c.now + 30_000)
    assert c.nodes[new].role is Role.LEADER and c.nodes[new].term == term
    assert all(c.nodes[n].leader_id == new for n in rest)
    old = c.nodes[leader]
    assert old.role is not Role.LEADER and old.term <= term
    assert not old.membership.is_member(leader)
