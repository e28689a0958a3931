"""Events: everything that happens *to* a node enters ``step()`` as one of these.

Events say what happened. Public constructors validate what the caller can get
wrong (a proposal that is not bytes); messages from peers are validated later,
inside ``step()``, because their content is the peer's responsibility.
"""

from __future__ import annotations

import attrs

from graft_core._errors import ConfigError, EventError, ProposalError
from graft_core._membership import ChangeOp
from graft_core._messages import Message
from graft_core._types import DurableState


@attrs.frozen(slots=True)
class Tick:
    """Logical time is now ``now`` (never less than the node's previous ``now``).

    The shell sends one whenever the node's :func:`~graft_core.next_deadline`
    has passed (or more often; extra ticks are harmless). Idle time is free:
    nothing happens between deadlines, so a simulator may jump straight to one.
    """

    now: int

    def __attrs_post_init__(self) -> None:
        if type(self.now) is not int or self.now < 0:
            raise EventError(f"Tick.now must be a non-negative int, got {self.now!r}")


@attrs.frozen(slots=True)
class MessageReceived:
    """A message from a peer arrived. Its content is untrusted.

    ``now``, if given, is the current logical time: the step first does what a
    ``Tick(now)`` would, then handles the message -- one step instead of two for
    a shell or simulator that knows the time anyway. The resulting state is the
    same as from the two steps; their role changes and persists are coalesced.
    """

    message: Message
    now: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.now is not None and (type(self.now) is not int or self.now < 0):
            raise EventError(f"MessageReceived.now must be a non-negative int, got {self.now!r}")


@attrs.frozen(slots=True)
class Propose:
    """A client asks to append ``data`` to the replicated log.

    ``request_id`` is the shell's own handle: the answer
    (:class:`~graft_core.ProposalAccepted` or
    :class:`~graft_core.ProposalRejected`) carries it back.

    Raises:
        ProposalError: if ``data`` is not ``bytes``.
    """

    request_id: int
    data: bytes

    def __attrs_post_init__(self) -> None:
        if type(self.data) is not bytes:
            raise ProposalError(f"a proposal must be bytes, got {type(self.data).__name__}")
        if type(self.request_id) is not int:
            raise ProposalError(f"request_id must be an int, got {self.request_id!r}")


@attrs.frozen(slots=True)
class ProposeMany:
    """Several proposals at once: the same as stepping each :class:`Propose` in
    order, except that a leader appends them as one batch -- one Persist and one
    AppendEntries per follower for all of them (thesis §10.2: batching is what
    makes a leader's throughput). A shell drains its queue of proposals into one.

    Raises:
        ProposalError: ``proposals`` is not a tuple of :class:`Propose`.
    """

    proposals: tuple[Propose, ...]

    def __attrs_post_init__(self) -> None:
        if type(self.proposals) is not tuple or not all(
            type(p) is Propose for p in self.proposals
        ):
            raise ProposalError("proposals must be a tuple of Propose")


@attrs.frozen(slots=True)
class PersistCompleted:
    """Every :class:`~graft_core.Persist` with ``seq`` up to this one is durable.

    Persist actions must be carried out in ``seq`` order; acknowledging ``seq``
    acknowledges all earlier ones too. ``now``, if given, advances time first,
    as for :class:`MessageReceived`.
    """

    seq: int
    now: int | None = None

    def __attrs_post_init__(self) -> None:
        if type(self.seq) is not int or self.seq < 1:
            raise EventError(f"PersistCompleted.seq must be a positive int, got {self.seq!r}")
        if self.now is not None and (type(self.now) is not int or self.now < 0):
            raise EventError(f"PersistCompleted.now must be a non-negative int, got {self.now!r}")


@attrs.frozen(slots=True)
class Restart:
    """The node crashed and came back with only its durable state.

    All volatile state (role, leader, commit index, progress, unacknowledged
    writes) is forgotten. Writes that were requested but not acknowledged may or
    may not be in ``durable``; either is fine. Acknowledgements of writes issued
    before the restart must not be delivered after it.

    Args:
        now: the logical time at restart.
        durable: what storage holds.
        applied_index: how far the application had applied before the crash
            (entries up to it are not applied again); at most the last index of
            ``durable.entries``.
    """

    now: int
    durable: DurableState
    applied_index: int = 0


@attrs.frozen(slots=True)
class SnapshotSaved:
    """The shell durably saved a snapshot of the state machine at ``index``.

    Its metadata is ``state.snapshot_meta(index)``, taken when the application
    had applied ``index``. The node compacts its log up to ``index`` (keeping
    ``Config.snapshot_trailing_entries`` for slow followers) and sends the
    snapshot to followers that need entries it no longer has (Raft §7). An
    index at or below the node's current snapshot is ignored.
    """

    index: int

    def __attrs_post_init__(self) -> None:
        if type(self.index) is not int or self.index < 1:
            raise EventError(f"SnapshotSaved.index must be a positive int, got {self.index!r}")


@attrs.frozen(slots=True)
class ChangeMembership:
    """Ask the leader to change the configuration (thesis §4).

    A change that adds or removes at most one voter is made directly (the
    single-server change of thesis §4.1); a larger one goes through the joint
    configuration C_old,new and leaves it automatically once it is committed
    (thesis §4.3). The answer is a ``ProposalAccepted``/``ProposalRejected``
    carrying ``request_id``, like a proposal's.

    Raises:
        ConfigError: ``ops`` is empty or not a tuple of :class:`ChangeOp`.
    """

    request_id: int
    ops: tuple[ChangeOp, ...]

    def __attrs_post_init__(self) -> None:
        if type(self.request_id) is not int:
            raise ProposalError(f"request_id must be an int, got {self.request_id!r}")
        if type(self.ops) is not tuple or not self.ops:
            raise ConfigError("ops must be a non-empty tuple of ChangeOp")
        for op in self.ops:
            if type(op) is not ChangeOp:
                raise ConfigError(f"not a ChangeOp: {op!r}")
        nodes = [op.node for op in self.ops]
        if len(set(nodes)) != len(nodes):
            raise ConfigError(f"one change names a node twice: {nodes}")


@attrs.frozen(slots=True)
class TransferLeadership:
    """Ask the leader to hand leadership to ``target`` (thesis §3.10).

    ``None`` picks the most up-to-date voter. The leader brings the target's
    log up to date, then tells it to start an election at once (TimeoutNow);
    new proposals are rejected meanwhile. A transfer not done within an
    election timeout is aborted (:class:`~graft_core.TransferAborted`).
    """

    target: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.target is not None and (type(self.target) is not str or not self.target):
            raise EventError(f"target must be a node id or None, got {self.target!r}")


@attrs.frozen(slots=True)
class ReadIndex:
    """Ask for a linearizable read point (thesis §6.4) without writing the log.

    Answered by :class:`~graft_core.ReadReady` (serve the read once the state
    machine has applied its ``index``) or :class:`~graft_core.ReadRejected`.
    Use a fresh ``request_id`` for every attempt.
    """

    request_id: int

    def __attrs_post_init__(self) -> None:
        if type(self.request_id) is not int:
            raise EventError(f"request_id must be an int, got {self.request_id!r}")


Event = (
    Tick
    | MessageReceived
    | Propose
    | ProposeMany
    | PersistCompleted
    | Restart
    | SnapshotSaved
    | ChangeMembership
    | TransferLeadership
    | ReadIndex
)
