"""Messages exchanged between nodes, and their validation as untrusted input.

Every message names its ``term`` (Raft §5.1), its sender ``src`` and its
recipient ``dst``. The shell's wire decoder builds these classes from bytes it
read off the network; the core re-checks every field in
:func:`malformed_reason` before acting on it, because a peer's bytes are
untrusted (the shell may be buggy, the peer may be hostile).

Heartbeats are separate from AppendEntries, as in etcd-io/raft: a heartbeat
carries ``leader_commit = min(follower's match_index, commit_index)`` so a
follower may advance its commit index without a consistency check, and its
response tells the leader the follower is alive (check-quorum, thesis §6.2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from graft_core._errors import ConfigError
from graft_core._membership import Membership
from graft_core._types import Entry, EntryKind, SnapshotMeta


class RejectReason(enum.Enum):
    """Why a proposal was not accepted into a leader's log."""

    #: The node asked is not the leader; ``leader_hint`` names the leader if known.
    NOT_LEADER = "not leader"
    #: No leader is known (an election is under way, or forwarding is off).
    NO_LEADER = "no leader"
    #: The leader refused it for flow control (too many uncommitted entries).
    DROPPED = "dropped"
    #: A forwarded payload exceeded the leader's ``max_proposal_bytes``.
    TOO_LARGE = "too large"
    #: The leader is handing leadership over (thesis §3.10); retry at the new one.
    TRANSFERRING = "leadership transfer in progress"
    #: A membership change is still uncommitted (or joint): one at a time.
    CHANGE_IN_PROGRESS = "membership change in progress"
    #: The leader has not yet committed an entry of its term (the 2015 fix to
    #: single-server changes; thesis §6.4 step 1 for reads): retry shortly.
    NOT_READY = "leader not ready"
    #: The membership change is invalid against the leader's configuration.
    INVALID_CHANGE = "invalid membership change"


@attrs.frozen(slots=True)
class VoteRequest:
    """RequestVote RPC (Raft §5.2); ``pre_vote`` marks thesis §9.6's pre-vote.

    A pre-vote carries the term the candidate *would* use (its term + 1) and
    changes no state on the receiver.
    """

    term: int
    src: str
    dst: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    #: Sent on the leader's request (TimeoutNow, thesis §3.10): voters grant it
    #: even within their leader lease.
    transfer: bool = False


@attrs.frozen(slots=True)
class VoteResponse:
    """Reply to :class:`VoteRequest`."""

    term: int
    src: str
    dst: str
    granted: bool
    pre_vote: bool = False


@attrs.frozen(slots=True)
class AppendRequest:
    """AppendEntries RPC (Raft §5.3): entries after ``prev_log_index``."""

    term: int
    src: str
    dst: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@attrs.frozen(slots=True)
class AppendResponse:
    """Reply to :class:`AppendRequest`.

    On success ``index`` is the last index the follower now holds in agreement
    with the leader. On rejection ``index`` is the rejected ``prev_log_index``
    and ``(hint_index, hint_term)`` is the follower's best guess at where the
    logs agree: the last index ``<= min(prev_log_index, last index)`` whose term
    is ``<= prev_log_term`` (the fast backtracking of Raft §5.3's closing note,
    as etcd-io/raft implements it).
    """

    term: int
    src: str
    dst: str
    success: bool
    index: int
    hint_index: int = 0
    hint_term: int = 0


@attrs.frozen(slots=True)
class Heartbeat:
    """Leader liveness message (Raft §5.2); see the module docstring."""

    term: int
    src: str
    dst: str
    leader_commit: int
    #: The leader's heartbeat round: a response echoing it proves the follower
    #: still accepted this leader after the round began (ReadIndex, thesis §6.4).
    read_seq: int = 0


@attrs.frozen(slots=True)
class HeartbeatResponse:
    """Reply to :class:`Heartbeat`, echoing its ``read_seq``."""

    term: int
    src: str
    dst: str
    read_seq: int = 0


@attrs.frozen(slots=True)
class InstallSnapshot:
    """InstallSnapshot RPC (Raft §7), one chunk: bytes ``offset..`` of ``meta``'s data."""

    term: int
    src: str
    dst: str
    meta: SnapshotMeta
    offset: int
    data: bytes = b""
    done: bool = False


@attrs.frozen(slots=True)
class InstallSnapshotResponse:
    """Reply to :class:`InstallSnapshot` for the snapshot at ``index``.

    ``next_offset`` is how many bytes the follower holds (the leader resumes
    there). ``done`` means the follower needs no more of it: it installed it,
    or already had everything it covers; ``match_index`` is then the last index
    the follower holds in agreement with the leader.
    """

    term: int
    src: str
    dst: str
    index: int
    next_offset: int
    done: bool = False
    match_index: int = 0


@attrs.frozen(slots=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): start an election now."""

    term: int
    src: str
    dst: str


@attrs.frozen(slots=True)
class ReadIndexRequest:
    """A follower asks the leader for a linearizable read index (thesis §6.4).

    Like forwarding, outside the term rules. ``request_id`` is unique per
    attempt, so an answer to an earlier attempt can never satisfy a retry.
    """

    term: int
    src: str
    dst: str
    request_id: int


@attrs.frozen(slots=True)
class ReadIndexResponse:
    """The leader's answer: ``index`` once leadership was confirmed, or a rejection."""

    term: int
    src: str
    dst: str
    request_id: int
    index: int = 0
    rejection: RejectReason | None = None
    leader_hint: str | None = None


@attrs.frozen(slots=True)
class ForwardProposal:
    """A proposal a follower forwards to the leader it knows.

    Forwarding is outside Raft's safety argument, so these messages do not
    follow the term rules: a stale or future term never changes anyone's state.
    """

    term: int
    src: str
    dst: str
    request_id: int
    data: bytes


@attrs.frozen(slots=True)
class ForwardResponse:
    """The leader's answer to a :class:`ForwardProposal`.

    Either ``rejection`` is ``None`` and the entry was appended at
    ``(index, entry_term)``, or ``rejection`` says why not.
    """

    term: int
    src: str
    dst: str
    request_id: int
    index: int = 0
    entry_term: int = 0
    rejection: RejectReason | None = None
    leader_hint: str | None = None


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | ForwardProposal
    | ForwardResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
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


def _bad_entry_data(e: Entry) -> str | None:
    if e.kind is EntryKind.CONFIG:
        try:
            Membership.decode_untrusted(e.data)
        except ConfigError as err:
            return f"a configuration entry does not decode: {err}"
    return None


def _bad_meta(meta: object, term: int) -> str | None:
    if type(meta) is not SnapshotMeta:
        return "meta is not a SnapshotMeta"
    if not (_is_index(meta.index) and _is_index(meta.term)) or meta.index == 0:
        return "snapshot index/term are not valid"
    if meta.term == 0 or meta.term > term:
        return "snapshot term is zero or newer than the message term"
    if type(meta.membership) is not Membership:
        return "snapshot membership is not a Membership"
    return None


def _is_index(x: object) -> bool:
    # bool is an int subclass; a wire decoder handing us True is a bug.
    return type(x) is int and x >= 0


def _check_append_request(m: AppendRequest) -> str | None:
    if not (_is_index(m.prev_log_index) and _is_index(m.prev_log_term)):
        return "prev_log_index/prev_log_term are not non-negative ints"
    if not _is_index(m.leader_commit):
        return "leader_commit is not a non-negative int"
    if type(m.entries) is not tuple:
        return "entries is not a tuple"
    if m.prev_log_term > m.term:
        return "prev_log_term is newer than the message term"
    if (m.prev_log_index == 0) != (m.prev_log_term == 0):
        return "prev_log_index and prev_log_term disagree about the empty log"
    previous = m.prev_log_term
    for e in m.entries:
        if type(e) is not Entry or type(e.data) is not bytes or type(e.kind) is not EntryKind:
            return "an entry is not a well-formed Entry"
        if type(e.term) is not int or e.term < max(previous, 1) or e.term > m.term:
            # Terms in a log never decrease (leaders only append, §5.3), no
            # leader sends entries from a term after its own, and term 0
            # has no leader, so no entry.
            return "entry terms are out of order or newer than the message term"
        previous = e.term
        bad = _bad_entry_data(e)
        if bad is not None:
            return bad
    return None


def _check_append_response(m: AppendResponse) -> str | None:
    if type(m.success) is not bool:
        return "success is not a bool"
    if not (_is_index(m.index) and _is_index(m.hint_index) and _is_index(m.hint_term)):
        return "index/hint fields are not non-negative ints"
    if m.hint_term > m.term:
        return "hint_term is newer than the message term"
    return None


def _check_vote_request(m: VoteRequest) -> str | None:
    if not (_is_index(m.last_log_index) and _is_index(m.last_log_term)):
        return "last_log_index/last_log_term are not non-negative ints"
    if type(m.pre_vote) is not bool or type(m.transfer) is not bool:
        return "pre_vote/transfer are not bools"
    if (m.last_log_index == 0) != (m.last_log_term == 0) or m.last_log_term > m.term:
        return "last_log_index/last_log_term are inconsistent"
    return None


def _check_vote_response(m: VoteResponse) -> str | None:
    if type(m.granted) is not bool or type(m.pre_vote) is not bool:
        return "granted/pre_vote are not bools"
    return None


def _check_heartbeat(m: Heartbeat) -> str | None:
    # (_is_index inlined: this runs once per heartbeat per follower.)
    lc = m.leader_commit
    rs = m.read_seq
    if type(lc) is int and lc >= 0 and type(rs) is int and rs >= 0:
        return None
    return "leader_commit/read_seq are not non-negative ints"


def _check_heartbeat_response(m: HeartbeatResponse) -> str | None:
    rs = m.read_seq
    if type(rs) is int and rs >= 0:
        return None
    return "read_seq is not a non-negative int"


def _check_timeout_now(m: TimeoutNow) -> str | None:
    return None


def _check_install_snapshot(m: InstallSnapshot) -> str | None:
    bad = _bad_meta(m.meta, m.term)
    if bad is not None:
        return bad
    if not _is_index(m.offset) or type(m.data) is not bytes or type(m.done) is not bool:
        return "offset/data/done are not valid"
    return None


def _check_install_snapshot_response(m: InstallSnapshotResponse) -> str | None:
    if not (_is_index(m.index) and _is_index(m.next_offset) and _is_index(m.match_index)):
        return "index/next_offset/match_index are not non-negative ints"
    return None if type(m.done) is bool else "done is not a bool"


def _check_read_index_request(m: ReadIndexRequest) -> str | None:
    return None if type(m.request_id) is int else "request_id is not an int"


def _check_read_index_response(m: ReadIndexResponse) -> str | None:
    if type(m.request_id) is not int or not _is_index(m.index):
        return "request_id/index are not ints"
    if m.rejection is not None and type(m.rejection) is not RejectReason:
        return "rejection is not a RejectReason"
    if m.leader_hint is not None and type(m.leader_hint) is not str:
        return "leader_hint is not a str"
    return None


def _check_forward_proposal(m: ForwardProposal) -> str | None:
    if type(m.request_id) is not int:
        return "request_id is not an int"
    return None if type(m.data) is bytes else "data is not bytes"


def _check_forward_response(m: ForwardResponse) -> str | None:
    if type(m.request_id) is not int or not _is_index(m.index) or not _is_index(m.entry_term):
        return "request_id/index/entry_term are not ints"
    if m.rejection is not None and type(m.rejection) is not RejectReason:
        return "rejection is not a RejectReason"
    if m.leader_hint is not None and type(m.leader_hint) is not str:
        return "leader_hint is not a str"
    if m.rejection is None and m.index == 0:
        return "an accepted forward must name its index"
    return None


# One checker per message class, looked up by exact type: a dict lookup
# instead of a chain of isinstance calls on every message received. A
# subclass of a message class is not a graft message (a wire decoder builds
# exactly these classes), so exact types lose nothing.
_CHECKS: dict[type, Callable[[Any], str | None]] = {
    VoteRequest: _check_vote_request,
    VoteResponse: _check_vote_response,
    AppendRequest: _check_append_request,
    AppendResponse: _check_append_response,
    Heartbeat: _check_heartbeat,
    HeartbeatResponse: _check_heartbeat_response,
    ForwardProposal: _check_forward_proposal,
    ForwardResponse: _check_forward_response,
    InstallSnapshot: _check_install_snapshot,
    InstallSnapshotResponse: _check_install_snapshot_response,
    TimeoutNow: _check_timeout_now,
    ReadIndexRequest: _check_read_index_request,
    ReadIndexResponse: _check_read_index_response,
}
assert set(_CHECKS) == set(MESSAGE_TYPES)


def malformed_reason(msg: object) -> str | None:
    """Check the shape of an untrusted message; ``None`` when it is well formed.

    This checks only what can be checked without the node's state (types,
    ranges, internal consistency); the node checks membership and terms.
    """
    check = _CHECKS.get(type(msg))
    if check is None:
        return f"not a graft message: {type(msg).__name__}"
    m: Message = msg  # type: ignore[assignment]
    term = m.term
    if type(term) is not int or term < 0:
        return "term is not a non-negative int"
    if type(m.src) is not str or type(m.dst) is not str:
        return "src/dst are not str"
    return check(m)
