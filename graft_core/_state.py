"""The state of one node: a frozen value, rebuilt (not mutated) by every step.

Fields are grouped as Raft Figure 2 groups them: persistent state (``hard``,
``log``), volatile state (``commit_index``, ``applied_index``, role, timers),
and leader state (``progress``). A few more fields track asynchronous
persistence (see ``_actions``'s ordering contract).
"""

from __future__ import annotations

import bisect

import attrs

from graft_core._config import Config
from graft_core._log import RaftLog
from graft_core._messages import Message
from graft_core._progress import Progress
from graft_core._types import HardState, Role


@attrs.frozen(slots=True)
class Unstable:
    """A Persist issued but not yet acknowledged: what it covers once it is."""

    seq: int
    last_index: int
    last_term: int
    hard_state: HardState | None


@attrs.frozen(slots=True, eq=True)
class NodeState:
    """Everything a node knows. Never mutated: ``step()`` returns a new one.

    Read any field freely; build one only with :func:`graft_core.start`.
    """

    config: Config
    now: int
    #: Current term and vote (Figure 2); may be ahead of ``durable_hard``.
    hard: HardState
    #: The last hard state storage acknowledged.
    durable_hard: HardState
    log: RaftLog
    #: The log is durable up to this index.
    stable_index: int
    #: The last Persist seq issued / acknowledged.
    persist_seq: int
    persisted_seq: int
    unstable: tuple[Unstable, ...]
    #: Messages held until ``persisted_seq >= seq``: ``(seq, message)``.
    held: tuple[tuple[int, Message], ...]
    role: Role
    leader_id: str | None
    commit_index: int
    applied_index: int
    #: Follower/candidate: when to start an election. Leader: the next check-quorum.
    election_deadline: int
    #: Leader: when the next heartbeat is due.
    heartbeat_deadline: int
    #: The current randomized election timeout, and how many have been drawn.
    election_timeout: int
    timeout_draws: int
    #: When this node last heard from ``leader_id`` (for the leader lease, §4.2.3).
    leader_contact: int
    votes_granted: frozenset[str]
    votes_rejected: frozenset[str]
    #: Leader only: one Progress per peer, in ``config.peers`` order.
    progress: tuple[Progress, ...]

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def term(self) -> int:
        return self.hard.term

    @property
    def voted_for(self) -> str | None:
        return self.hard.voted_for

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def progress_of(self, peer: str) -> Progress | None:
        """The leader's progress record for ``peer``; ``None`` if not leader or not a peer."""
        peers = self.config.peers
        i = bisect.bisect_left(peers, peer)
        if not self.progress or i >= len(peers) or peers[i] != peer:
            return None
        return self.progress[i]

    def next_deadline(self) -> int:
        """The logical time at which this node next needs a :class:`~graft_core.Tick`."""
        if self.role is Role.LEADER:
            return min(self.heartbeat_deadline, self.election_deadline)
        return self.election_deadline
