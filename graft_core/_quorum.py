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
