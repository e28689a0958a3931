"""Deliberately broken variants of graft_core, for proving the simulator has teeth.

Nothing here ships: every mutant is installed with a :class:`pytest.MonkeyPatch`
for the duration of a test (or a ``with mutated(name):`` block in a notebook)
and patches the private internals of ``graft_core`` -- methods of
``graft_core._node._Step``, ``RaftLog``, or the names ``_node`` imported from
``_quorum``. Each one reproduces a classic Raft implementation bug.

Some mutants replace a whole method with a copy that differs in one line.
Such a copy can drift from the real method as graft_core evolves; each copy
says which line it breaks, and :func:`check_copies_current` compares the copy
against the real method (minus that line) so a drifted copy fails loudly
instead of testing an older core.

Helpers for running and shrinking simulations live in the test module
(``tests/test_mutants.py``); this module only defines the mutants.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import inspect
import textwrap
from collections.abc import Callable, Iterator

import attrs
import pytest

import graft_core._node as node_mod
from graft_core._actions import ProposalAccepted, ProposalRejected, SnapshotChunk
from graft_core._config import Config
from graft_core._log import RaftLog
from graft_core._membership import ChangeOp, apply_changes
from graft_core._messages import (
    AppendRequest,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RejectReason,
    VoteRequest,
    VoteResponse,
)
from graft_core._node import _CONFIG, LEADER, _Step
from graft_core._quorum import joint_committed_index
from graft_core._state import PendingRead
from graft_core._types import Entry, HardState

Installer = Callable[[pytest.MonkeyPatch], None]


@attrs.frozen
class Mutant:
    """A broken variant of the core.

    Attributes:
        name: short identifier (used in test ids and the printed table).
        bug: what is broken, in one sentence.
        install: patches graft_core through the given MonkeyPatch.
    """

    name: str
    bug: str
    install: Installer


# --------------------------------------------------------------- copied methods
#
# Copies of _Step methods with one line changed. The marker comment
# ``# MUTANT:`` names the changed line(s); check_copies_current() verifies that
# everything else still matches the real source.


def _maybe_commit(self: _Step, *, check_term: bool, own_index_is_stable: bool) -> bool:
    # Copy of _Step.maybe_commit with two switches.
    ms = self.membership
    match = {p: self.get_progress(i).match_index for i, p in enumerate(self.peers)}
    # MUTANT (leader_counts_unpersisted): the leader's unpersisted log counts.
    match[self.config.node_id] = self.stable_index if own_index_is_stable else self.log.last_index
    index = joint_committed_index(ms.voters, ms.outgoing, match)
    # MUTANT (figure8): no "entry of the current term" check (Raft §5.4.2).
    if index <= self.commit_index or (check_term and self.log.term_at(index) != self.hard.term):
        return False
    first_in_term = self.log.term_at(self.commit_index) != self.hard.term
    self.commit_index = index
    for k in range(len(self.peers)):
        if not self.send_append(k, False):
            self.send_append(k, True)
    if first_in_term and self.pending_reads:
        self.pending_reads = tuple(
            r if r.index is not None else PendingRead(r.request_id, r.origin, r.seq, index)
            for r in self.pending_reads
        )
        self.confirm_reads()
    if index >= self.configs[-1][0]:
        self.on_config_committed()
    return True


def _maybe_commit_figure8(self: _Step) -> bool:
    return _maybe_commit(self, check_term=False, own_index_is_stable=True)


def _maybe_commit_unpersisted(self: _Step) -> bool:
    return _maybe_commit(self, check_term=True, own_index_is_stable=False)


def _on_vote_request_two_votes(self: _Step, m: VoteRequest) -> None:
    # Copy of _Step.on_vote_request with canVote always true.
    me = self.config.node_id
    hard = self.hard
    can_vote = True  # MUTANT (two_votes): a second vote in the same term is granted
    if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
        if m.pre_vote:
            self.send(VoteResponse(m.term, me, m.src, True, True))
        else:
            if hard.voted_for != m.src:
                self.set_hard(HardState(hard.term, m.src))
            self.reset_election_timer(False)
            self.hold(VoteResponse(hard.term, me, m.src, True, False))
    else:
        self.send(VoteResponse(hard.term, me, m.src, False, m.pre_vote))


def _follower_on_append_no_truncate(self: _Step, m: AppendRequest) -> None:
    # Copy of _Step.follower_on_append that keeps a conflicting suffix.
    me = self.config.node_id
    term = self.hard.term
    self.heard_from_leader(m.src)
    prev = m.prev_log_index
    if prev < self.commit_index:
        self.hold(AppendResponse(term, me, m.src, True, self.commit_index))
        return
    log = self.log
    if log.term_at(prev) != m.prev_log_term:
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
        # MUTANT (no_truncate): a conflicting entry is skipped over, not truncated.
        k += 1
    if k < n:
        self.append(entries[k:] if k else entries)
    last_new = prev + n
    commit = min(m.leader_commit, last_new)
    if commit > self.commit_index:
        self.commit_index = commit
    self.hold(AppendResponse(term, me, m.src, True, last_new))


def _on_change_membership_without_term_commit(
    self: _Step, request_id: int, ops: tuple[ChangeOp, ...]
) -> None:
    # Copy of _Step.on_change_membership without the NOT_READY check.
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
        reject(RejectReason.CHANGE_IN_PROGRESS, "the previous change is not finished")
        return
    # MUTANT (change_before_term_commit): no "an entry of the leader's term is
    # committed" check -- the single-server change bug Ongaro reported in 2015.
    target, problem = apply_changes(ms, ops)
    if problem is not None:
        reject(RejectReason.INVALID_CHANGE, problem)
        return
    term = self.hard.term
    self.append((Entry(term, target.encode(), _CONFIG),))
    self.actions.append(ProposalAccepted(request_id, self.log.last_index, term))
    self.broadcast_append()


def _follower_on_snapshot_below_commit(self: _Step, m: InstallSnapshot) -> None:
    # Copy of _Step.follower_on_snapshot without the "older than our commit" guard.
    me = self.config.node_id
    term = self.hard.term
    self.heard_from_leader(m.src)
    meta = m.meta
    # MUTANT (snapshot_below_commit): a snapshot at or below the commit index
    # is installed like any other.
    incoming = self.incoming
    if m.offset != 0 and (
        incoming is None or incoming[0] != meta or incoming[1] != m.offset
    ):
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


@attrs.frozen
class _Copy:
    """A mutant copy of a real method: the only lines it may remove and add."""

    copy: Callable[..., object]
    real: Callable[..., object]
    removed: tuple[str, ...]
    added: tuple[str, ...]


_COPIES = (
    _Copy(
        _maybe_commit,
        _Step.maybe_commit,
        removed=(
            "match[self.config.node_id] = self.stable_index",
            "if index <= self.commit_index or self.log.term_at(index) != self.hard.term:",
        ),
        added=(
            "match[self.config.node_id] = self.stable_index if own_index_is_stable else "
            "self.log.last_index",
            "if index <= self.commit_index or (check_term and self.log.term_at(index) != "
            "self.hard.term):",
        ),
    ),
    _Copy(
        _on_vote_request_two_votes,
        _Step.on_vote_request,
        removed=(
            "can_vote = hard.voted_for == m.src or (hard.voted_for is None and "
            "self.leader_id is None) or (m.pre_vote and m.term > hard.term)",
        ),
        added=("can_vote = True",),
    ),
    _Copy(
        _follower_on_append_no_truncate,
        _Step.follower_on_append,
        removed=("if log.term_at(i) != entries[k].term:", "self.truncate(i)", "break"),
        added=(),
    ),
    _Copy(
        _on_change_membership_without_term_commit,
        _Step.on_change_membership,
        removed=(
            "if self.log.term_at(self.commit_index) != self.hard.term:",
            "reject(RejectReason.NOT_READY, \"no entry of the leader's term is committed yet\")",
            "return",
        ),
        added=(),
    ),
    _Copy(
        _follower_on_snapshot_below_commit,
        _Step.follower_on_snapshot,
        removed=(
            "if meta.index <= self.commit_index:",
            "self.incoming = None",
            "self.hold(InstallSnapshotResponse(term, me, m.src, meta.index, m.offset, True, "
            "self.commit_index))",
            "return",
        ),
        added=(),
    ),
)


def _code_lines(fn: Callable[..., object]) -> list[str]:
    """``fn``'s body in canonical form (``ast.unparse``): no comments, docstring or layout."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    func = tree.body[0]
    assert isinstance(func, ast.FunctionDef)
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return [ln.strip() for stmt in body for ln in ast.unparse(stmt).splitlines()]


def check_copies_current() -> list[str]:
    """Differences between each copied mutant and the real method it copies.

    Returns:
        One message per copy that drifted (empty when all are current).
    """
    problems = []
    for c in _COPIES:
        real, copy = _code_lines(c.real), _code_lines(c.copy)
        removed: list[str] = []
        added: list[str] = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=real, b=copy).get_opcodes():
            if op != "equal":
                removed.extend(real[i1:i2])
                added.extend(copy[j1:j2])
        if removed != list(c.removed) or added != list(c.added):
            problems.append(
                f"{c.copy.__name__} drifted from {c.real.__qualname__}: it removes {removed} "
                f"(expected {list(c.removed)}) and adds {added} (expected {list(c.added)})"
            )
    return problems


# --------------------------------------------------------------- installers


def _install_figure8(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "maybe_commit", _maybe_commit_figure8)


def _install_leader_counts_unpersisted(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "maybe_commit", _maybe_commit_unpersisted)


def _install_two_votes(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "on_vote_request", _on_vote_request_two_votes)


def _install_no_truncate(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "follower_on_append", _follower_on_append_no_truncate)


def _send_immediately(kind: type[Message]) -> Installer:
    """``hold`` (wait for the Persist) becomes ``send`` for messages of ``kind``."""

    def install(mp: pytest.MonkeyPatch) -> None:
        real_hold = _Step.hold

        def hold(self: _Step, message: Message) -> None:
            if isinstance(message, kind):
                self.send(message)
            else:
                real_hold(self, message)

        mp.setattr(_Step, "hold", hold)

    return install


def _install_vote_by_index_only(mp: pytest.MonkeyPatch) -> None:
    def is_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
        return last_index >= self.last_index  # MUTANT: the last term is ignored

    mp.setattr(RaftLog, "is_up_to_date", is_up_to_date)


def _install_commit_without_quorum(mp: pytest.MonkeyPatch) -> None:
    def max_match(
        voters: tuple[str, ...], outgoing: tuple[str, ...], match: dict[str, int]
    ) -> int:
        # MUTANT: the largest match, not the quorum-th largest.
        return max(match.get(v, 0) for v in voters)

    # _node imported the name, so patch it where it is looked up.
    assert vars(node_mod)["joint_committed_index"] is joint_committed_index
    mp.setattr(node_mod, "joint_committed_index", max_match)


def _install_apply_beyond_leader_commit(mp: pytest.MonkeyPatch) -> None:
    real = _Step.follower_on_append

    def follower_on_append(self: _Step, m: AppendRequest) -> None:
        # MUTANT: commit = last new entry, whatever the leader's commit index.
        real(self, attrs.evolve(m, leader_commit=m.prev_log_index + len(m.entries)))

    mp.setattr(_Step, "follower_on_append", follower_on_append)


def _install_prevote_bumps_term(mp: pytest.MonkeyPatch) -> None:
    real = _Step.become_pre_candidate

    def become_pre_candidate(self: _Step) -> None:
        # MUTANT: the pre-vote moves the real term (thesis §9.6 says it must not).
        self.set_hard(HardState(self.hard.term + 1, None))
        real(self)

    mp.setattr(_Step, "become_pre_candidate", become_pre_candidate)


def _install_change_before_term_commit(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "on_change_membership", _on_change_membership_without_term_commit)


def _install_snapshot_below_commit(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(_Step, "follower_on_snapshot", _follower_on_snapshot_below_commit)


def _install_lease_never_expires(mp: pytest.MonkeyPatch) -> None:
    # MUTANT: a quorum's acknowledgements keep the lease for ~forever, so a
    # deposed leader that has not noticed yet still answers reads from it.
    mp.setattr(Config, "lease_duration", property(lambda self: 1 << 40))


def _install_lease_without_vote_lease(mp: pytest.MonkeyPatch) -> None:
    def in_leader_lease(self: _Step) -> bool:
        # MUTANT: followers grant votes while they hear from a leader, as with
        # check-quorum off -- but the leader still serves reads from its lease.
        return False

    mp.setattr(_Step, "in_leader_lease", in_leader_lease)


def _install_read_index_unconfirmed(mp: pytest.MonkeyPatch) -> None:
    def leader_read(self: _Step, request_id: int, origin: str | None) -> None:
        # MUTANT: answer at once at the commit index, without a heartbeat
        # round proving we still lead (thesis §6.4 step 3) nor an entry of
        # our term committed (step 1).
        self.answer_read(request_id, origin, self.commit_index, None)

    mp.setattr(_Step, "leader_read", leader_read)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "figure8",
        "a leader commits an earlier-term entry by counting replicas (Raft §5.4.2, Figure 8)",
        _install_figure8,
    ),
    Mutant(
        "two_votes",
        "a node grants a second vote in a term it already voted in (Raft §5.2)",
        _install_two_votes,
    ),
    Mutant(
        "vote_before_persist",
        "a vote grant is sent before the vote is durable (Figure 2: persist before responding)",
        _send_immediately(VoteResponse),
    ),
    Mutant(
        "vote_by_index_only",
        "the up-to-date check compares only last indexes, not last terms (Raft §5.4.1)",
        _install_vote_by_index_only,
    ),
    Mutant(
        "no_truncate",
        "a follower keeps a conflicting suffix instead of truncating it (Raft §5.3)",
        _install_no_truncate,
    ),
    Mutant(
        "commit_without_quorum",
        "the commit index follows the largest match, not a majority's (Raft §5.3)",
        _install_commit_without_quorum,
    ),
    Mutant(
        "apply_beyond_leader_commit",
        "a follower commits its last new entry, ignoring leader_commit (Figure 2)",
        _install_apply_beyond_leader_commit,
    ),
    Mutant(
        "prevote_bumps_term",
        "a pre-vote increments the real term (thesis §9.6)",
        _install_prevote_bumps_term,
    ),
    Mutant(
        "leader_counts_unpersisted",
        "a leader counts its own unpersisted log toward commitment (thesis §10.2.1)",
        _install_leader_counts_unpersisted,
    ),
    Mutant(
        "ack_before_persist",
        "an AppendEntries success is sent before the entries are durable (Figure 2)",
        _send_immediately(AppendResponse),
    ),
    Mutant(
        "change_before_term_commit",
        "a new leader appends a single-server change before committing an entry of its "
        "term (the 2015 bug, Ongaro on raft-dev)",
        _install_change_before_term_commit,
    ),
    Mutant(
        "lease_never_expires",
        "a leader's read lease never expires, so a deposed leader serves stale reads "
        "(thesis §6.4.1)",
        _install_lease_never_expires,
    ),
    Mutant(
        "lease_without_vote_lease",
        "followers vote while they hear from a leader (check-quorum's vote side off), yet "
        "the leader serves reads from its lease (thesis §6.4.1, §4.2.3)",
        _install_lease_without_vote_lease,
    ),
    Mutant(
        "read_index_unconfirmed",
        "ReadIndex is answered at once at the commit index, without confirming "
        "leadership (thesis §6.4)",
        _install_read_index_unconfirmed,
    ),
    Mutant(
        "snapshot_below_commit",
        "a follower installs a snapshot older than its commit index (Raft §7)",
        _install_snapshot_below_commit,
    ),
)

BY_NAME = {m.name: m for m in MUTANTS}


@contextlib.contextmanager
def mutated(name: str) -> Iterator[Mutant]:
    """Run the block with mutant ``name`` installed (for notebooks and scripts)."""
    mutant = BY_NAME[name]
    with pytest.MonkeyPatch.context() as mp:
        mutant.install(mp)
        yield mutant

