"""Majority arithmetic (Raft §5.2, §5.3). Pure functions of small inputs."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def quorum_size(voters: int) -> int:
    """Invariant: any two sets of this size drawn from ``voters`` intersect."""
    return voters // 2 + 1


def committed_index(matches: Iterable[int], voters: int) -> int:
    """The largest index replicated on a majority: the quorum-th largest match."""
    ordered = sorted(matches, reverse=True)
    return ordered[quorum_size(voters) - 1]


def vote_result(granted: int, rejected: int, voters: int) -> VoteResult:
    """Won once a majority granted; lost once a majority can no longer grant."""
    q = quorum_size(voters)
    if granted >= q:
        return VoteResult.WON
    if voters - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING


# ---------------------------------------------------------------- joint majorities
#
# Thesis §4.3: in C_old,new "agreement (for elections and entry commitment)
# requires separate majorities from both the old and new configurations". A
# non-joint configuration is the special case with no outgoing half.


def joint_committed_index(
    voters: tuple[str, ...], outgoing: tuple[str, ...], match: dict[str, int]
) -> int:
    """The largest index held by a majority of ``voters`` and of ``outgoing``."""
    index = committed_index([match.get(v, 0) for v in voters], len(voters))
    if outgoing:
        index = min(index, committed_index([match.get(v, 0) for v in outgoing], len(outgoing)))
    return index


def joint_vote_result(
    voters: tuple[str, ...],
    outgoing: tuple[str, ...],
    granted: frozenset[str],
    rejected: frozenset[str],
) -> VoteResult:
    """Won once both halves have a majority; lost once either half cannot."""

    def half(members: tuple[str, ...]) -> VoteResult:
        g = sum(1 for v in members if v in granted)
        r = sum(1 for v in members if v in rejected)
        return vote_result(g, r, len(members))

    first = half(voters)
    if not outgoing:
        return first
    second = half(outgoing)
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    if first is VoteResult.WON and second is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def has_joint_quorum(
    voters: tuple[str, ...], outgoing: tuple[str, ...], active: frozenset[str]
) -> bool:
    """Does ``active`` contain a majority of each half?"""
    return joint_vote_result(voters, outgoing, active, frozenset()) is VoteResult.WON
