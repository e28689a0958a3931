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
from graft_core._errors import EventError
from graft_core._log import RaftLog
from graft_core._membership import Membership
from graft_core._messages import Message
from graft_core._progress import Progress
from graft_core._types import HardState, Role, SnapshotMeta


@attrs.frozen(slots=True)
class Unstable:
    """A Persist issued but not yet acknowledged: what it covers once it is."""

    seq: int
    last_index: int
    last_term: int
    hard_state: HardState | None
    #: The snapshot this Persist installs (its last chunk), if any.
    snapshot: SnapshotMeta | None = None


@attrs.frozen(slots=True)
class PendingRead:
    """A ReadIndex request the leader is confirming (thesis §6.4).

    ``seq`` is the heartbeat round that must be acknowledged by a quorum;
    ``index`` is the commit index to read at, ``None`` until the leader has
    committed an entry of its own term (it may not know the latest commit
    before that, thesis §6.4 step 1). ``origin`` is the follower that asked,
    ``None`` for a local read.
    """

    request_id: int
    origin: str | None
    seq: int
    index: int | None


# Not slotted, on purpose: ``step`` rebuilds a NodeState on every event, and
# attrs' frozen ``__init__`` sets its ~35 fields one ``object.__setattr__`` at a
# time (about 3 us, a third of a heartbeat step). With an instance ``__dict__``
# the core's ``_Step`` instead works on a C-level copy of the old state's dict
# and hands that dict to the new instance (``_node._Step.finish``), about 0.4
# us for the pair. The class stays frozen to everyone else (``__setattr__``
# raises), and ``attrs.evolve``, ``==``, ``hash`` and ``repr`` are attrs' own.
@attrs.frozen(slots=False, eq=True)
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
    #: A node restarted with a durable term refuses votes until then (one
    #: election timeout), as if it had just heard from a leader: a lease it may
    #: have helped grant before the crash must still hold (thesis §6.4.1).
    quiet_until: int
    votes_granted: frozenset[str]
    votes_rejected: frozenset[str]
    #: Leader only: one Progress per peer, in ``peers`` order.
    progress: tuple[Progress, ...]
    #: Every configuration in the log (thesis §4.1): ``(index, membership)``,
    #: the first at ``log.offset`` (the bootstrap or the snapshot's), the last
    #: the one in effect.
    configs: tuple[tuple[int, Membership], ...]
    #: Every other member of the current configuration, sorted.
    peers: tuple[str, ...]
    #: The latest durable snapshot (taken here or installed from a leader).
    snapshot: SnapshotMeta | None
    #: Follower: the snapshot being received from a leader, and bytes so far.
    incoming: tuple[SnapshotMeta, int] | None
    #: Leader: the node leadership is being handed to (thesis §3.10), and when
    #: the attempt is given up.
    transfer_target: str | None
    transfer_deadline: int
    #: Leader: the current heartbeat round, the highest round each peer (in
    #: ``peers`` order) acknowledged, reads awaiting confirmation, and rounds
    #: sent but not yet confirmed by a quorum: ``(seq, sent_at)``.
    read_seq: int
    read_acks: tuple[int, ...]
    pending_reads: tuple[PendingRead, ...]
    beats: tuple[tuple[int, int], ...]
    #: Leader with ``lease_reads``: reads need no heartbeat round before this.
    lease_until: int

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

    @property
    def membership(self) -> Membership:
        """The configuration this node uses: the latest in its log (thesis §4.1)."""
        return self.configs[-1][1]

    @property
    def membership_index(self) -> int:
        """The log index of the configuration in effect."""
        return self.configs[-1][0]

    def membership_at(self, index: int) -> Membership:
        """The configuration in effect at log ``index`` (``index >= log.offset``)."""
        configs = self.configs
        k = len(configs) - 1
        while k > 0 and configs[k][0] > index:
            k -= 1
        return configs[k][1]

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The metadata of a snapshot of the state machine taken at ``index``.

        The shell saves the application's snapshot with it, then steps
        :class:`~graft_core.SnapshotSaved`.

        Raises:
            EventError: ``index`` is not applied yet or no longer in the log.
        """
        if type(index) is not int or not self.log.offset <= index <= self.applied_index:
            raise EventError(
                f"a snapshot index must be applied and in the log "
                f"({self.log.offset}..{self.applied_index}), got {index!r}"
            )
        term = self.log.term_at(index)
        assert term is not None
        return SnapshotMeta(index, term, self.membership_at(index))

    def progress_of(self, peer: str) -> Progress | None:
        """The leader's progress record for ``peer``; ``None`` if not leader or not a peer."""
        peers = self.peers
        i = bisect.bisect_left(peers, peer)
        if not self.progress or i >= len(peers) or peers[i] != peer:
            return None
        return self.progress[i]

    def next_deadline(self) -> int:
        """The logical time at which this node next needs a :class:`~graft_core.Tick`."""
        if self.role is Role.LEADER:
            deadline = min(self.heartbeat_deadline, self.election_deadline)
            if self.transfer_target is not None:
                deadline = min(deadline, self.transfer_deadline)
            return deadline
        return self.election_deadline
