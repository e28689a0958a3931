"""Blame at the boundary: caller mistakes raise, peer input never does.

graft_core/_errors.py: "a *caller* mistake (an invalid config, a proposal that
is not bytes, time running backwards) raises ... while bad input from a *peer*
never raises: it is dropped and reported as a MessageDropped action, because a
remote node must never be able to crash this one."

The first half checks the typed errors (ConfigError, ProposalError,
EventError), each raised before any change to the state. The second half feeds
arbitrary, often hostile, messages to nodes in every role and checks that
``step`` never raises, that malformed / misaddressed / foreign messages are
dropped with the right reason and no effect, and that the node's invariants
survive everything else.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft_core import (
    Action,
    AppendRequest,
    AppendResponse,
    Config,
    ConfigError,
    DropReason,
    DurableState,
    Entry,
    EntryKind,
    EventError,
    ForwardProposal,
    ForwardResponse,
    GraftError,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    MessageDropped,
    MessageReceived,
    NodeState,
    PersistCompleted,
    ProposalAccepted,
    ProposalError,
    Propose,
    ReadIndexRequest,
    ReadIndexResponse,
    RejectReason,
    Restart,
    Role,
    Send,
    SnapshotMeta,
    Tick,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    start,
    step,
)

ME = "a"
IDS = ("a", "b", "c")
PEERS = ("b", "c")
MAX_PROPOSAL = 16


def config(**overrides: Any) -> Config:
    fields: dict[str, Any] = {
        "node_id": ME,
        "voters": IDS,
        "heartbeat_interval": 10,
        "election_timeout": 100,
        "election_timeout_max": 200,
        "max_proposal_bytes": MAX_PROPOSAL,
    }
    fields.update(overrides)
    return Config(**fields)


# ---------------------------------------------------------------------------
# Nodes in every role, built by feeding hand-made messages (etcd's
# raft_paper_test.go style).


def feed(state: NodeState, *events: object) -> tuple[NodeState, list[Action]]:
    out: list[Action] = []
    for e in events:
        state, actions = step(state, e)  # type: ignore[arg-type]
        out.extend(actions)
    return state, out


def sync(state: NodeState) -> NodeState:
    """Acknowledge every Persist issued so far."""
    if state.persist_seq > state.persisted_seq:
        state, _ = step(state, PersistCompleted(state.persist_seq))
    return state


#: A log with three terms: indexes 1-2 in term 1, 3 in term 2, 4-5 in term 3.
LOG = (Entry(1, b"x"), Entry(1, b"y"), Entry(2, b"z"), Entry(3, b""), Entry(3, b"w"))


def follower_fresh() -> NodeState:
    return start(config())


def follower_with_log() -> NodeState:
    """A follower of ``b`` in term 3 with five entries, three of them committed."""
    s = start(config(), durable=DurableState(HardState(3, "b"), LOG))
    s, _ = feed(s, MessageReceived(Heartbeat(3, "b", ME, 3)))
    assert s.role is Role.FOLLOWER and s.leader_id == "b" and s.commit_index == 3
    return s


def pre_candidate() -> NodeState:
    s = start(config(), durable=DurableState(HardState(3, None), LOG))
    s, _ = feed(s, Tick(s.next_deadline()))
    assert s.role is Role.PRE_CANDIDATE
    return s


def candidate() -> NodeState:
    s = start(config(pre_vote=False), durable=DurableState(HardState(3, None), LOG))
    s, _ = feed(s, Tick(s.next_deadline()))
    s = sync(s)
    assert s.role is Role.CANDIDATE and s.term == 4
    return s


def leader() -> NodeState:
    """Leader of term 4 over LOG plus its no-op; ``b`` has matched up to index 4."""
    s = candidate()
    s, _ = feed(s, MessageReceived(VoteResponse(4, "b", ME, True)))
    assert s.role is Role.LEADER
    s = sync(s)
    s, _ = feed(
        s,
        MessageReceived(AppendResponse(4, "b", ME, False, 5, 4, 3)),
        MessageReceived(AppendResponse(4, "b", ME, True, 4)),
    )
    pr = s.progress_of("b")
    assert pr is not None and pr.match_index == 4 and s.last_index == 6
    assert s.commit_index == 0  # index 4 is from term 3: not committed by counting (§5.4.2)
    return s


def leader_committed() -> NodeState:
    """The same leader once ``b`` holds its whole log: everything is committed."""
    s = leader()
    s, _ = feed(s, MessageReceived(AppendResponse(4, "b", ME, True, 6)))
    assert s.role is Role.LEADER and s.commit_index == 6
    return s


ROLES: dict[str, Callable[[], NodeState]] = {
    "follower_fresh": follower_fresh,
    "follower_with_log": follower_with_log,
    "pre_candidate": pre_candidate,
    "candidate": candidate,
    "leader": leader,
    "leader_committed": leader_committed,
}
STATES = {name: build() for name, build in ROLES.items()}


def test_role_fixtures() -> None:
    """Raft §5.1 (Figure 4) roles plus thesis §9.6's pre-candidate: every one is attacked below.

    (The fixtures are built by hand-fed messages; this checks they got there.)
    """
    assert {s.role for s in STATES.values()} == set(Role)


# ---------------------------------------------------------------------------
# Config validation.

INVALID_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("duplicate ids", {"voters": ("a", "b", "a")}, r"duplicate voter ids.*'a'"),
    ("empty voters", {"voters": ()}, r"voters is empty"),
    ("node not a voter", {"node_id": "z"}, r"node_id 'z' is not among voters"),
    ("heartbeat == timeout", {"heartbeat_interval": 100}, r"heartbeat_interval \(100\)"),
    ("heartbeat > timeout", {"heartbeat_interval": 150}, r"heartbeat_interval \(150\)"),
    ("max below min", {"election_timeout_max": 99}, r"election_timeout_max \(99\) is below"),
    ("voters as a list", {"voters": ["a", "b", "c"]}, r"voters must be a tuple"),
    ("non-str node id", {"node_id": 1, "voters": (1, "b")},
     r"node_id must be a non-empty printable str"),
    ("empty node id", {"node_id": "", "voters": ("", "b")},
     r"node_id must be a non-empty printable str"),
    ("node id with NUL", {"node_id": "a\x00", "voters": ("a\x00", "b")},
     r"node_id must be a non-empty printable str"),
    ("non-str voter", {"voters": ("a", 2, "c")},
     r"every voter id must be a non-empty printable str"),
    ("voter with newline", {"voters": ("a", "b\n", "c")},
     r"every voter id must be a non-empty printable str"),
    ("seed not an int", {"seed": "42"}, r"seed must be an int"),
    ("float duration", {"heartbeat_interval": 10.0}, r"heartbeat_interval must be a positive int"),
    ("bool size", {"max_inflight": True}, r"max_inflight must be a positive int"),
    ("pre_vote not bool", {"pre_vote": 1}, r"pre_vote must be a bool"),
    ("check_quorum not bool", {"check_quorum": "yes"}, r"check_quorum must be a bool"),
    ("forwarding not bool", {"forward_proposals": None}, r"forward_proposals must be a bool"),
]

SIZE_FIELDS = (
    "heartbeat_interval",
    "election_timeout",
    "election_timeout_max",
    "max_entries_per_message",
    "max_bytes_per_message",
    "max_inflight",
    "max_proposal_bytes",
    "max_uncommitted_entries",
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [pytest.param(o, m, id=name) for name, o, m in INVALID_CONFIGS],
)
def test_invalid_config_raises_config_error(overrides: dict[str, Any], message: str) -> None:
    """_errors.py: "a caller mistake (an invalid config ...) raises"; ConfigError names the problem.

    Raft §5.6's timing requirement (broadcastTime << electionTimeout) is why
    heartbeat_interval must be below election_timeout; §5.2's randomized
    timeouts come from [election_timeout, election_timeout_max].
    """
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


@pytest.mark.parametrize("value", [0, -1, -(2**70)])
@pytest.mark.parametrize("field", SIZE_FIELDS)
def test_non_positive_size_raises_config_error(field: str, value: int) -> None:
    """Config "Raises: ConfigError on any invalid field": every duration and size is positive."""
    with pytest.raises(ConfigError, match=rf"{field} must be a positive int, got {value}"):
        config(**{field: value})


def test_valid_configs_are_accepted() -> None:
    """The boundaries of the rules above are valid: Figure 16's fixed "150-150" timeout,
    a heartbeat just below the timeout, a single-server cluster (quorum 1, Raft §5.2).
    """
    assert start(config()).membership.voters == ("a", "b", "c")
    single = start(Config("solo", ("solo",)))
    assert single.membership.voters == ("solo",) and single.peers == ()
    fixed = config(heartbeat_interval=99, election_timeout=100, election_timeout_max=100)
    assert fixed.timeout_max == 100
    assert issubclass(ConfigError, GraftError)


# ---------------------------------------------------------------------------
# Proposals.


@pytest.mark.parametrize("data", ["text", bytearray(b"x"), None, 7, memoryview(b"x")])
def test_proposal_that_is_not_bytes_raises(data: object) -> None:
    """_errors.py: "a proposal that is not bytes" is a caller mistake: ProposalError at once."""
    with pytest.raises(ProposalError, match="must be bytes"):
        Propose(1, data)  # type: ignore[arg-type]


def test_proposal_request_id_must_be_int() -> None:
    """Propose: ``request_id`` is the shell's own int handle; anything else is its mistake."""
    with pytest.raises(ProposalError, match="request_id"):
        Propose("1", b"x")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(role=st.sampled_from(sorted(ROLES)), extra=st.integers(1, 1000))
def test_oversized_proposal_raises_and_changes_nothing(role: str, extra: int) -> None:
    """ProposalError docstring: "larger than Config.max_proposal_bytes" raises, before any change.

    _node.py Rule 5: "Caller mistakes raise GraftError subclasses before any change."
    """
    s = STATES[role]
    before = copy.deepcopy(s)
    with pytest.raises(ProposalError, match="max_proposal_bytes"):
        step(s, Propose(1, b"p" * (MAX_PROPOSAL + extra)))
    assert s == before


def test_proposal_of_exactly_max_bytes_is_accepted() -> None:
    """The limit is inclusive: a leader appends a proposal of ``max_proposal_bytes`` (§5.3)."""
    s = STATES["leader"]
    new, actions = step(s, Propose(9, b"p" * MAX_PROPOSAL))
    assert ProposalAccepted(9, s.last_index + 1, s.term) in actions
    assert new.last_index == s.last_index + 1


# ---------------------------------------------------------------------------
# Events the caller got wrong.


@pytest.mark.parametrize("role", sorted(ROLES))
def test_time_going_backwards_raises(role: str) -> None:
    """_errors.py: "time running backwards" is a caller mistake: EventError, state unchanged.

    (Time is logical ticks, as in etcd-io/raft; Tick: "never less than the node's previous now".)
    """
    s = STATES[role]
    s, _ = step(s, Tick(s.now + 5))
    before = copy.deepcopy(s)
    with pytest.raises(EventError, match="backwards"):
        step(s, Tick(s.now - 1))
    assert s == before
    # The same time again is fine.
    step(s, Tick(s.now))


@pytest.mark.parametrize("now", [-1, 1.5, True, "3", None])
def test_tick_must_be_a_non_negative_int(now: object) -> None:
    """Tick: logical time is a non-negative int (the core never reads a clock)."""
    with pytest.raises(EventError):
        Tick(now)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_acknowledging_a_persist_never_issued_raises(role: str) -> None:
    """EventError: "acknowledging a persist that was never requested"; state unchanged.

    Believing such an ack would let the node answer RPCs before stable storage
    is updated (Raft Figure 2).
    """
    s = STATES[role]
    before = copy.deepcopy(s)
    for seq in (s.persist_seq + 1, s.persist_seq + 100):
        with pytest.raises(EventError, match="issued"):
            step(s, PersistCompleted(seq))
    assert s == before


@pytest.mark.parametrize("seq", [0, -1, True, "1"])
def test_persist_completed_seq_must_be_positive_int(seq: object) -> None:
    """PersistCompleted acknowledges a Persist ``seq``; seqs are positive ints (_actions.py)."""
    with pytest.raises(EventError):
        PersistCompleted(seq)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        "tick",
        None,
        42,
        (Tick(5),),
        VoteRequest(1, "b", ME, 0, 0),  # a message not wrapped in MessageReceived
        Send(Heartbeat(1, ME, "b", 0)),  # an action, not an event
    ],
    ids=repr,
)
def test_object_that_is_not_an_event_raises(event: object) -> None:
    """EventError: "an object that is not a graft_core event" is the caller's mistake."""
    s = STATES["follower_with_log"]
    before = copy.deepcopy(s)
    with pytest.raises(EventError, match="not a graft_core event"):
        step(s, event)  # type: ignore[arg-type]
    assert s == before


INCONSISTENT_DURABLE: list[tuple[str, DurableState, int, str]] = [
    (
        "decreasing terms",
        DurableState(HardState(3), (Entry(1), Entry(3), Entry(2))),
        0,
        r"durable entry 3",
    ),
    ("entry after hard term", DurableState(HardState(1), (Entry(1), Entry(2))), 0, r"entry 2"),
    ("applied beyond log", DurableState(HardState(1), (Entry(1),)), 2, r"applied_index 2"),
    ("negative applied", DurableState(HardState(1), (Entry(1),)), -1, r"applied_index -1"),
    # (A vote for a node outside the current configuration is legitimate: the
    # configuration may have changed since, thesis §4.1. A vote for no node is not.)
    ("vote for empty id", DurableState(HardState(2, ""), ()), 0, r"vote for ''.*not a node id"),
    (
        "snapshot after term",
        DurableState(HardState(1), (), SnapshotMeta(3, 2, Membership(("a", "b", "c")))),
        0,
        r"invalid durable snapshot",
    ),
    (
        "entry before snapshot term",
        DurableState(HardState(3), (Entry(1),), SnapshotMeta(3, 2, Membership(("a", "b", "c")))),
        0,
        r"durable entry 4",
    ),
    (
        "undecodable config entry",
        DurableState(HardState(1), (Entry(1, b"{", EntryKind.CONFIG),)),
        0,
        r"configuration entry does not decode",
    ),
    ("negative term", DurableState(HardState(-1), ()), 0, r"hard state"),
]


@pytest.mark.parametrize(
    ("durable", "applied", "message"),
    [pytest.param(d, a, m, id=name) for name, d, a, m in INCONSISTENT_DURABLE],
)
def test_inconsistent_durable_state_raises_config_error(
    durable: DurableState, applied: int, message: str
) -> None:
    """Storage that breaks Raft's invariants (Figure 2, §5.3 log terms) is refused at start().

    And at Restart, which starts the node again from it, before any change.
    """
    with pytest.raises(ConfigError, match=message):
        start(config(), durable=durable, applied_index=applied)
    s = STATES["leader"]
    before = copy.deepcopy(s)
    with pytest.raises(ConfigError, match=message):
        step(s, Restart(s.now, durable, applied))
    assert s == before


# ---------------------------------------------------------------------------
# Untrusted messages: a generator that knows whether what it built is malformed.

small_int = st.integers(0, 8)
# Mostly small (so messages line up with the nodes' logs), sometimes huge.
good_int = st.one_of(small_int, small_int, small_int, st.integers(0, 2**64), st.just(2**100))
bad_int = st.one_of(
    st.integers(max_value=-1),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=3),
)
bad_bool = st.one_of(st.integers(), st.none(), st.text(max_size=3), st.just(b"\x01"))
bad_str = st.one_of(st.none(), st.integers(), st.binary(max_size=3), st.just(("b",)))
node_ids = st.one_of(
    st.sampled_from((*IDS, "z", "", "A", "b ", "a\x00")),
    st.text(max_size=3),
)
payload = st.binary(max_size=8)
entry_kinds = st.sampled_from(EntryKind)


def positive_upto(term: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, min(term, 8)), st.integers(1, term), st.just(term))


@st.composite
def log_position(draw: st.DrawFn, term: int) -> tuple[int, int]:
    """An (index, term) pair a correct peer could send: (0, 0), or index >= 1, 1 <= term <= term."""
    if term == 0 or draw(st.booleans()):
        return 0, 0
    return draw(st.integers(1, 8) | st.integers(1, 8) | st.integers(1, 2**64)), draw(
        positive_upto(term)
    )


@st.composite
def entries_from(draw: st.DrawFn, lo: int, hi: int) -> tuple[Entry, ...]:
    """Well-formed entries: terms non-decreasing within [max(lo, 1), hi]."""
    if hi < max(lo, 1):
        return ()
    terms = sorted(draw(st.lists(st.integers(max(lo, 1), hi), max_size=4)))
    out = []
    for t in terms:
        kind = draw(entry_kinds)
        data = draw(memberships).encode() if kind is EntryKind.CONFIG else draw(payload)
        out.append(Entry(t, data, kind))
    return tuple(out)


#: Configurations a correct leader could send that keep this node a voter and
#: every peer a member (so the sender checks below stay predictable).
memberships = st.sampled_from(
    [
        Membership(IDS),
        Membership(("a", "b"), learners=("c",)),
        Membership(("a", "c"), outgoing=IDS),
        Membership(IDS, addresses=(("b", "10.0.0.2:7000"),)),
    ]
)


@st.composite
def snapshot_metas(draw: st.DrawFn, term: int) -> SnapshotMeta:
    return SnapshotMeta(
        draw(st.integers(1, 8) | st.integers(1, 2**64)), draw(positive_upto(term)),
        draw(memberships),
    )


@st.composite
def well_formed_fields(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    term = draw(good_int)
    f: dict[str, Any] = {"term": term, "src": draw(node_ids), "dst": draw(node_ids)}
    if cls is VoteRequest:
        f["last_log_index"], f["last_log_term"] = draw(log_position(term))
        f["pre_vote"] = draw(st.booleans())
        f["transfer"] = draw(st.booleans())
    elif cls is VoteResponse:
        f["granted"] = draw(st.booleans())
        f["pre_vote"] = draw(st.booleans())
    elif cls is AppendRequest:
        f["prev_log_index"], f["prev_log_term"] = draw(log_position(term))
        f["entries"] = draw(entries_from(f["prev_log_term"], term))
        f["leader_commit"] = draw(good_int)
    elif cls is AppendResponse:
        f["success"] = draw(st.booleans())
        f["index"] = draw(good_int)
        f["hint_index"] = draw(good_int)
        f["hint_term"] = draw(st.integers(0, term))
    elif cls is Heartbeat:
        f["leader_commit"] = draw(good_int)
        f["read_seq"] = draw(good_int)
    elif cls is HeartbeatResponse:
        f["read_seq"] = draw(good_int)
    elif cls is InstallSnapshot:
        f["term"] = max(term, 1)
        f["meta"] = draw(snapshot_metas(f["term"]))
        f["offset"] = draw(good_int)
        f["data"] = draw(payload)
        f["done"] = draw(st.booleans())
    elif cls is InstallSnapshotResponse:
        f["index"] = draw(good_int)
        f["next_offset"] = draw(good_int)
        f["done"] = draw(st.booleans())
        f["match_index"] = draw(good_int)
    elif cls is ReadIndexRequest:
        f["request_id"] = draw(st.integers())
    elif cls is ReadIndexResponse:
        f["request_id"] = draw(st.integers())
        f["rejection"] = draw(st.none() | st.sampled_from(RejectReason))
        f["index"] = draw(good_int)
        f["leader_hint"] = draw(st.none() | node_ids)
    elif cls is ForwardProposal:
        f["request_id"] = draw(st.integers())
        f["data"] = draw(payload)
    elif cls is ForwardResponse:
        f["request_id"] = draw(st.integers())
        f["rejection"] = draw(st.none() | st.sampled_from(RejectReason))
        f["index"] = draw(good_int if f["rejection"] else st.integers(1, 2**64))
        f["entry_term"] = draw(good_int)
        f["leader_hint"] = draw(st.none() | node_ids)
    else:
        assert cls is TimeoutNow
    return f


@st.composite
def corrupt(draw: st.DrawFn, cls: type, f: dict[str, Any]) -> dict[str, Any]:
    """Break ``f`` in one way that makes the message malformed beyond doubt."""
    f = dict(f)
    term = f["term"]
    choices: list[str] = ["term", "src", "dst"]
    int_fields = {
        VoteRequest: ["last_log_index", "last_log_term"],
        AppendRequest: ["prev_log_index", "prev_log_term", "leader_commit"],
        AppendResponse: ["index", "hint_index", "hint_term"],
        Heartbeat: ["leader_commit", "read_seq"],
        HeartbeatResponse: ["read_seq"],
        ForwardResponse: ["index", "entry_term"],
        InstallSnapshot: ["offset"],
        InstallSnapshotResponse: ["index", "next_offset", "match_index"],
        ReadIndexResponse: ["index"],
    }.get(cls, [])
    bool_fields = {
        VoteRequest: ["pre_vote", "transfer"],
        VoteResponse: ["granted", "pre_vote"],
        AppendResponse: ["success"],
        InstallSnapshot: ["done"],
        InstallSnapshotResponse: ["done"],
    }.get(cls, [])
    choices += int_fields + bool_fields
    if cls is VoteRequest:
        choices += ["last_log_term>term", "log_position_mismatch"]
    if cls is AppendRequest:
        choices += [
            "prev_log_term>term",
            "prev_position_mismatch",
            "entries_not_tuple",
            "entry_not_entry",
            "entry_bad_field",
            "entry_terms_decrease",
            "entry_term>term",
            "entry_term_bad_int",
            "config_entry_undecodable",
        ]
    if cls is InstallSnapshot:
        choices += ["meta", "data"]
    if cls is ReadIndexRequest:
        choices += ["request_id"]
    if cls is ReadIndexResponse:
        choices += ["request_id", "rejection", "leader_hint"]
    if cls is AppendResponse:
        choices += ["hint_term>term"]
    if cls is ForwardProposal:
        choices += ["request_id", "data"]
    if cls is ForwardResponse:
        choices += ["request_id", "rejection", "leader_hint", "accepted_without_index"]
    what = draw(st.sampled_from(choices))

    if what == "term":
        f["term"] = draw(bad_int)
    elif what in ("src", "dst"):
        f[what] = draw(bad_str)
    elif what in int_fields:
        f[what] = draw(bad_int)
    elif what in bool_fields:
        f[what] = draw(bad_bool)
    elif what == "last_log_term>term":
        f["last_log_index"] = draw(st.integers(1, 2**64))
        f["last_log_term"] = term + draw(st.integers(1, 2**64))
    elif what == "log_position_mismatch":
        t = max(term, 1)
        f["term"] = t
        f["last_log_index"], f["last_log_term"] = draw(
            st.sampled_from([(0, draw(st.integers(1, t))), (draw(st.integers(1, 99)), 0)])
        )
    elif what == "prev_log_term>term":
        f["prev_log_index"] = draw(st.integers(1, 2**64))
        f["prev_log_term"] = term + draw(st.integers(1, 2**64))
    elif what == "prev_position_mismatch":
        # The empty log (index 0) has term 0 and nothing else does.
        t = max(term, 1)
        f["term"] = t
        f["prev_log_index"], f["prev_log_term"] = draw(
            st.sampled_from([(0, draw(st.integers(1, t))), (draw(st.integers(1, 99)), 0)])
        )
        f["entries"] = ()
    elif what == "entries_not_tuple":
        f["entries"] = draw(
            st.sampled_from([list(f["entries"]), None, Entry(term), b"", "entries"])
        )
    elif what == "entry_not_entry":
        bad = draw(st.sampled_from([None, (term, b"x"), b"x", term, "e"]))
        es = list(f["entries"])
        es.insert(draw(st.integers(0, len(es))), bad)
        f["entries"] = tuple(es)
    elif what == "entry_bad_field":
        t = max(term, f["prev_log_term"], 1)
        f["term"] = t
        bad_entry = draw(
            st.sampled_from(
                [
                    Entry(t, "text"),  # type: ignore[arg-type]
                    Entry(t, None),  # type: ignore[arg-type]
                    Entry(t, b"", 1),  # type: ignore[arg-type]
                    Entry(t, b"", "NOOP"),  # type: ignore[arg-type]
                ]
            )
        )
        f["entries"] = (*f["entries"], bad_entry)
    elif what == "entry_terms_decrease":
        t = max(term, f["prev_log_term"], 2)
        f["term"] = t
        floor = max(f["prev_log_term"], 1)
        # Below the first entry's term, or (when there is no room) below prev_log_term.
        lower = draw(st.integers(floor, t - 1)) if floor <= t - 1 else 0
        f["entries"] = (Entry(t), Entry(lower))
    elif what == "entry_term>term":
        f["entries"] = (*f["entries"], Entry(term + draw(st.integers(1, 2**64))))
    elif what == "entry_term_bad_int":
        f["entries"] = (*f["entries"], Entry(draw(bad_int)))
    elif what == "config_entry_undecodable":
        t = max(term, f["prev_log_term"], 1)
        f["term"] = t
        bad_config = draw(
            st.sampled_from(
                [b"", b"{", b"[]", b'{"voters":[]}', Membership(IDS).encode() + b" ",
                 Membership(IDS).encode().replace(b'"a"', b'"a\\u0000"'),
                 b'{"addresses":[],"learners":["a"],"outgoing":[],"voters":["a"]}']
            )
        )
        f["entries"] = (*f["entries"], Entry(t, bad_config, EntryKind.CONFIG))
    elif what == "meta":
        f["meta"] = draw(
            st.sampled_from(
                [
                    None,
                    (1, 1),
                    SnapshotMeta(0, 1, Membership(IDS)),
                    SnapshotMeta(1, 0, Membership(IDS)),
                    SnapshotMeta(1, term + 1, Membership(IDS)),
                    SnapshotMeta(1, 1, IDS),  # type: ignore[arg-type]
                    SnapshotMeta(-1, 1, Membership(IDS)),
                ]
            )
        )
    elif what == "hint_term>term":
        f["hint_term"] = term + draw(st.integers(1, 2**64))
    elif what == "request_id":
        f["request_id"] = draw(
            st.one_of(st.none(), st.text(max_size=2), st.booleans(), st.floats(allow_nan=False))
        )
    elif what == "data":
        f["data"] = draw(st.one_of(st.none(), st.text(max_size=3), st.just(bytearray(b"x"))))
    elif what == "rejection":
        f["rejection"] = draw(st.sampled_from(["not leader", 1, RejectReason, Role.LEADER]))
    elif what == "leader_hint":
        f["leader_hint"] = draw(st.sampled_from([1, b"b", ("b",), Role.LEADER]))
    else:
        assert what == "accepted_without_index"
        f["rejection"] = None
        f["index"] = 0
    return f


MESSAGE_CLASSES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    ForwardProposal,
    ForwardResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)

#: Things that arrive as "messages" but are not graft messages at all.
NOT_MESSAGES: tuple[object, ...] = (
    None,
    "VoteRequest",
    42,
    b"\x00\x01",
    (1, "b", ME),
    Entry(1),
    HardState(1, "b"),
    Tick(3),
    {"term": 1},
)


@st.composite
def incoming(draw: st.DrawFn) -> tuple[object, bool]:
    """``(message, malformed)``: a peer's message, and whether the generator broke it."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(NOT_MESSAGES)), True
    cls = draw(st.sampled_from(MESSAGE_CLASSES))
    fields = draw(well_formed_fields(cls))
    # Aim most messages at this node from a peer, so they get past the
    # addressing checks and reach the protocol, with a plausible term (near
    # the nodes' terms 0-4) so they are not all stale or all from the future.
    if draw(st.integers(0, 7)) > 0:
        fields["dst"] = ME
        if draw(st.integers(0, 7)) > 0:
            fields["src"] = draw(st.sampled_from(PEERS))
    fields["term"] = draw(st.sampled_from([fields["term"], 0, 3, 4, 4, 5]))
    fields = _clamp_to_term(cls, fields)
    broken = draw(st.integers(0, 2)) == 0
    if broken:
        fields = draw(corrupt(cls, fields))
    return cls(**fields), broken


def _clamp_to_term(cls: type, f: dict[str, Any]) -> dict[str, Any]:
    """Keep a well-formed message well formed after its term was lowered."""
    term = f["term"]
    if cls is VoteRequest and f["last_log_term"] > term:
        f["last_log_index"], f["last_log_term"] = 0, 0
    if cls is AppendRequest:
        if f["prev_log_term"] > term:
            f["prev_log_index"], f["prev_log_term"] = 0, 0
        f["entries"] = tuple(e for e in f["entries"] if f["prev_log_term"] <= e.term <= term)
        if f["entries"] and f["entries"][0].term == 0:
            f["entries"] = ()
    if cls is AppendResponse and f["hint_term"] > term:
        f["hint_term"] = term
    if cls is InstallSnapshot and f["meta"].term > term:
        f["term"] = f["meta"].term
    return f


def drops(actions: tuple[Action, ...]) -> list[DropReason]:
    return [a.reason for a in actions if isinstance(a, MessageDropped)]


def assert_dropped(actions: tuple[Action, ...], msg: object, reason: DropReason) -> None:
    """``actions`` is exactly one MessageDropped of ``msg`` for ``reason``."""
    assert len(actions) == 1, actions
    (a,) = actions
    assert isinstance(a, MessageDropped), a
    assert a.message is msg and a.reason is reason, a
    assert a.detail, "a drop should say why"


def check_invariants(old: NodeState, new: NodeState) -> None:
    terms = [e.term for e in new.log.entries]
    # Raft §5.3: leaders only append, so terms along a log never decrease.
    assert terms == sorted(terms), f"log terms decrease: {terms}"
    assert new.commit_index <= new.last_index
    assert new.applied_index <= new.commit_index
    # Raft §5.1: the current term only increases; §5.3: committed stays committed.
    assert new.term >= old.term
    assert new.commit_index >= old.commit_index
    lo = max(new.log.offset, old.log.offset) + 1
    hi = min(old.commit_index, new.log.last_index, old.log.last_index) + 1
    if lo < hi:
        assert new.log.slice(lo, hi) == old.log.slice(lo, hi)
    # (A vote may go to a non-member candidate, thesis §4.1; never to nobody.)
    assert new.voted_for is None or (type(new.voted_for) is str and new.voted_for)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    role=st.sampled_from(sorted(ROLES)),
    batch=st.lists(st.tuples(incoming(), st.booleans()), min_size=1, max_size=4),
)
def test_untrusted_messages_never_raise(
    role: str, batch: list[tuple[tuple[object, bool], bool]]
) -> None:
    """Peer input never raises (graft_core/_errors.py); bad messages are dropped with no effect.

    Malformed -> MALFORMED; addressed elsewhere -> WRONG_RECIPIENT; from a
    non-member -> UNKNOWN_SENDER; all three leave the state as it was. Anything
    else may change the state, but never the Raft invariants: log terms
    non-decreasing (§5.3), commit_index <= last index, term and commit index
    never decrease (§5.1, §5.3).
    """
    s = STATES[role]
    for (msg, malformed), ack in batch:
        before = copy.deepcopy(s)
        new, actions = step(s, MessageReceived(msg))  # type: ignore[arg-type]
        assert isinstance(new, NodeState) and isinstance(actions, tuple)
        assert s == before, "step modified its input"
        reasons = drops(actions)
        if malformed:
            assert_dropped(actions, msg, DropReason.MALFORMED)
            assert new == s
            continue
        assert DropReason.MALFORMED not in reasons, f"well-formed {msg!r} dropped as malformed"
        assert isinstance(msg, MESSAGE_CLASSES)
        wrong_dst = msg.dst != ME  # type: ignore[attr-defined]
        src = msg.src  # type: ignore[attr-defined]
        # Thesis §4.1: RPC requests are processed from anyone but ourselves.
        unknown_src = src in (ME, "") or (
            src not in PEERS
            and not isinstance(msg, AppendRequest | Heartbeat | InstallSnapshot | VoteRequest)
        )
        if wrong_dst or unknown_src:
            expected: set[DropReason] = set()
            if wrong_dst:
                expected.add(DropReason.WRONG_RECIPIENT)
            if unknown_src:
                expected.add(DropReason.UNKNOWN_SENDER)
            assert len(actions) == 1 and reasons and reasons[0] in expected, actions
            assert new == s
            continue
        assert DropReason.WRONG_RECIPIENT not in reasons
        if src in PEERS or not isinstance(msg, VoteRequest):
            assert DropReason.UNKNOWN_SENDER not in reasons
        check_invariants(s, new)
        s = sync(new) if ack else new
        check_invariants(new, s)


# ---------------------------------------------------------------------------
# Specific hostile messages.



@pytest.mark.parametrize(
    "entries",
    [
        (Entry(2), Entry(1)),  # terms decrease
        (Entry(3), Entry(3), Entry(2)),
        (Entry(2), Entry(4)),  # newer than the message's term (3)
        (Entry(4),),
    ],
    ids=["decreasing", "decreasing-late", "after-term", "after-term-only"],
)
def test_append_whose_entries_do_not_line_up_is_malformed(entries: tuple[Entry, ...]) -> None:
    """Raft §5.3: a leader's log never has decreasing terms, and holds no entry after its term.

    An AppendRequest that says otherwise is malformed: dropped, state unchanged
    (no truncation, no append, no commit).
    """
    s = STATES["follower_with_log"]
    m = AppendRequest(3, "b", ME, 2, 1, entries, 3)
    new, actions = step(s, MessageReceived(m))
    assert_dropped(actions, m, DropReason.MALFORMED)
    assert new == s


def test_append_success_beyond_leaders_log_is_out_of_range() -> None:
    """An AppendEntries success for an index the leader never sent (§5.3) moves nothing."""
    s = STATES["leader"]
    for index in (s.last_index + 1, s.last_index + 10**9):
        m = AppendResponse(s.term, "b", ME, True, index)
        new, actions = step(s, MessageReceived(m))
        assert_dropped(actions, m, DropReason.OUT_OF_RANGE)
        assert new.progress == s.progress
        assert new.commit_index == s.commit_index


def test_heartbeat_commit_beyond_followers_log_is_out_of_range() -> None:
    """A follower commits only entries it holds (Figure 2: min(leaderCommit, last new entry)).

    A heartbeat claiming a commit index beyond the follower's log is dropped as
    OUT_OF_RANGE and the commit index stays where it was.
    """
    s = STATES["follower_with_log"]
    m = Heartbeat(s.term, "b", ME, s.last_index + 1)
    new, actions = step(s, MessageReceived(m))
    assert drops(actions) == [DropReason.OUT_OF_RANGE]
    assert new.commit_index == s.commit_index
    assert new.applied_index == s.applied_index
    # Dropped means without effect: no new leader, no election timer reset.
    assert new == s


def test_entry_of_term_zero_is_malformed() -> None:
    """Raft §5.1: terms start at 1 and term 0 has no leader, so no entry carries term 0."""
    s = STATES["follower_fresh"]
    m = AppendRequest(1, "b", ME, 0, 0, (Entry(0, b"x"),), 0)
    new, actions = step(s, MessageReceived(m))
    assert_dropped(actions, m, DropReason.MALFORMED)
    assert new == s


def test_forward_answer_from_a_node_that_is_not_our_leader_is_dropped() -> None:
    """Only the leader a proposal was forwarded to may answer it (the original proposal's
    "AppendEntries will just make a request to the leader"): another member cannot fake
    an acceptance."""
    s = STATES["follower_with_log"]
    assert s.leader_id == "b"
    impostor = "c"
    for m in (
        ForwardResponse(s.term, impostor, ME, 7, index=3, entry_term=s.term),
        ForwardResponse(s.term, impostor, ME, 7, rejection=RejectReason.NO_LEADER),
    ):
        new, actions = step(s, MessageReceived(m))
        assert_dropped(actions, m, DropReason.UNEXPECTED)
        assert new == s
    genuine = ForwardResponse(s.term, "b", ME, 7, index=3, entry_term=s.term)
    _, actions = step(s, MessageReceived(genuine))
    assert ProposalAccepted(7, 3, s.term) in actions


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("src", ["z", "B"])
def test_non_member_replies_and_requests_are_dropped(role: str, src: str) -> None:
    """Only members answer RPCs, forward proposals, ask for reads or hand over leadership:
    a non-member's are dropped as UNKNOWN_SENDER, and change nothing."""
    s = STATES[role]
    for m in (
        VoteResponse(s.term, src, ME, True),
        AppendResponse(s.term, src, ME, True, 1),
        HeartbeatResponse(s.term, src, ME),
        InstallSnapshotResponse(s.term, src, ME, 1, 0, True, 1),
        ForwardProposal(s.term, src, ME, 1, b"x"),
        ReadIndexRequest(s.term, src, ME, 1),
        TimeoutNow(s.term, src, ME),
    ):
        new, actions = step(s, MessageReceived(m))
        assert_dropped(actions, m, DropReason.UNKNOWN_SENDER)
        assert new == s


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("src", [ME, ""])
def test_messages_claiming_to_be_from_ourselves_are_dropped(role: str, src: str) -> None:
    """No peer may speak as this node (or as nobody), whatever it claims."""
    s = STATES[role]
    for m in (
        Heartbeat(s.term + 1, src, ME, 0),
        VoteRequest(s.term + 1, src, ME, 99, s.term + 1),
        AppendRequest(s.term + 5, src, ME, 0, 0, (Entry(s.term + 5),), 1),
    ):
        new, actions = step(s, MessageReceived(m))
        assert_dropped(actions, m, DropReason.UNKNOWN_SENDER)
        assert new == s


@pytest.mark.parametrize("role", sorted(ROLES))
def test_non_member_behind_us_cannot_move_our_term(role: str) -> None:
    """Thesis §4.2.3: a removed server lacks the entry that removed it, so its log is
    behind ours; its vote request is dropped without adopting its newer term."""
    s = STATES[role]
    behind = VoteRequest(s.term + 3, "z", ME, 0, 0)
    if s.last_index == 0:
        pytest.skip("an empty log is never ahead")
    new, actions = step(s, MessageReceived(behind))
    # (Within a leader lease the lease rule drops it first; either way, no effect.)
    assert len(actions) == 1 and isinstance(actions[0], MessageDropped)
    assert actions[0].reason in (DropReason.UNKNOWN_SENDER, DropReason.LEADER_LEASE)
    assert new == s


@pytest.mark.parametrize("role", sorted(ROLES))
def test_leader_traffic_from_a_non_member_is_processed(role: str) -> None:
    """Thesis §4.1: "servers process incoming RPC requests without consulting their current
    configurations" -- a leader missing from our latest configuration may be legitimate
    (that configuration may be uncommitted, or older than the one that added it)."""
    s = STATES[role]
    m = Heartbeat(s.term + 1, "z", ME, 0)
    new, actions = step(s, MessageReceived(m))
    assert not any(isinstance(a, MessageDropped) for a in actions)
    assert new.term == s.term + 1 and new.leader_id == "z" and new.role is Role.FOLLOWER


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("dst", ["b", "z", ""])
def test_message_for_another_node_is_dropped(role: str, dst: str) -> None:
    """Raft §5.1: servers talk by RPCs to each other; one addressed elsewhere is not ours.

    Dropped as WRONG_RECIPIENT with no effect, even if it claims a newer term.
    """
    s = STATES[role]
    for m in (
        Heartbeat(s.term + 1, "b", dst, 0),
        VoteRequest(s.term + 1, "c", dst, 99, s.term + 1),
        AppendResponse(s.term, "b", dst, True, 1),
    ):
        new, actions = step(s, MessageReceived(m))
        assert_dropped(actions, m, DropReason.WRONG_RECIPIENT)
        assert new == s


def test_error_messages_are_clear() -> None:
    """_errors.py blame split (after h11): the caller's errors name the offending value."""
    with pytest.raises(ConfigError) as info:
        config(voters=("a", "b", "b", "c", "c"))
    assert re.search(r"\['b', 'c'\]", str(info.value))
    s = STATES["follower_fresh"]
    with pytest.raises(EventError) as ev:
        step(s, PersistCompleted(7))
    assert "7" in str(ev.value) and str(s.persist_seq) in str(ev.value)
