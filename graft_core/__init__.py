"""graft_core: the Raft protocol as a pure function.

    state = graft_core.start(config)
    state, actions = graft_core.step(state, event)

The contract
------------
* **Pure and deterministic.** ``step`` does no I/O, reads no clock, uses no
  global randomness, starts no threads and keeps no global mutable state. The
  same ``(state, event)`` always gives an equal result, and the ``state``
  passed in is never modified (it is a frozen value).
* **Time is logical.** Time enters only through events (:class:`Tick`, or
  the optional ``now`` of :class:`MessageReceived` and :class:`PersistCompleted`).
  ``state.next_deadline()`` says when the node next needs one; nothing happens
  in between, so a simulator jumps over idle time. Election timeouts are drawn
  from a counter-based PRNG seeded by ``Config.seed`` that lives in the state.
* **Events in, actions out.** Events: :class:`Tick`, :class:`MessageReceived`,
  :class:`Propose`, :class:`PersistCompleted`, :class:`Restart`. Actions:
  :class:`Send`, :class:`Persist`, :class:`Apply`, :class:`ProposalAccepted`,
  :class:`ProposalRejected`, :class:`RoleChanged`, :class:`MessageDropped`.
* **Ordering** (see ``graft_core._actions``): persistence is asynchronous;
  a vote grant or an AppendEntries success leaves only after the Persist it
  depends on is acknowledged; a leader's own log counts toward commitment only
  once durable; a leader's AppendEntries may leave before its own write
  completes (thesis §10.2.1).
* **Blame.** Bad input from peers is dropped and reported as
  :class:`MessageDropped`; caller mistakes raise :class:`GraftError`.
"""

from graft_core._actions import (
    Action,
    Apply,
    DropReason,
    MembershipChanged,
    MessageDropped,
    Persist,
    ProposalAccepted,
    ProposalRejected,
    ReadReady,
    ReadRejected,
    RestoreSnapshot,
    RoleChanged,
    Send,
    SendSnapshot,
    SnapshotChunk,
    TransferAborted,
)
from graft_core._config import Config
from graft_core._errors import ConfigError, EventError, GraftError, ProposalError
from graft_core._events import (
    ChangeMembership,
    Event,
    MessageReceived,
    PersistCompleted,
    Propose,
    ProposeMany,
    ReadIndex,
    Restart,
    SnapshotSaved,
    Tick,
    TransferLeadership,
)
from graft_core._log import RaftLog
from graft_core._membership import ChangeOp, Membership
from graft_core._messages import (
    AppendRequest,
    AppendResponse,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RejectReason,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from graft_core._node import start, step
from graft_core._progress import Progress, ProgressState
from graft_core._state import NodeState
from graft_core._types import DurableState, Entry, EntryKind, HardState, Role, SnapshotMeta

__all__ = [
    "Action",
    "AppendRequest",
    "AppendResponse",
    "Apply",
    "ChangeMembership",
    "ChangeOp",
    "Config",
    "ConfigError",
    "DropReason",
    "DurableState",
    "Entry",
    "EntryKind",
    "Event",
    "EventError",
    "ForwardProposal",
    "ForwardResponse",
    "GraftError",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Membership",
    "MembershipChanged",
    "Message",
    "MessageDropped",
    "MessageReceived",
    "NodeState",
    "Persist",
    "PersistCompleted",
    "Progress",
    "ProgressState",
    "ProposalAccepted",
    "ProposalError",
    "ProposalRejected",
    "Propose",
    "ProposeMany",
    "RaftLog",
    "ReadIndex",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadReady",
    "ReadRejected",
    "RejectReason",
    "Restart",
    "RestoreSnapshot",
    "Role",
    "RoleChanged",
    "Send",
    "SendSnapshot",
    "SnapshotChunk",
    "SnapshotMeta",
    "SnapshotSaved",
    "Tick",
    "TimeoutNow",
    "TransferAborted",
    "TransferLeadership",
    "VoteRequest",
    "VoteResponse",
    "start",
    "step",
]
