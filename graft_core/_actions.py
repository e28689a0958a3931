"""Actions: everything the world must do for a node comes out of ``step()`` as these.

Ordering contract (the shell must honour it; the core relies on it)
-------------------------------------------------------------------
1. **Persist is asynchronous.** A :class:`Persist` may take as long as it
   takes. When it (and every earlier one) is durable, the shell steps
   :class:`~graft_core.PersistCompleted` with its ``seq``. Persists are carried
   out in ``seq`` order, each one whole (its truncation, its entries, its hard
   state) before the next.
2. **Send may go out at once.** Any :class:`Send` the core emits may be sent
   immediately, before earlier Persists complete. The core itself holds back the
   messages that promise durable state -- a vote grant, an AppendEntries
   success -- until a PersistCompleted covers every Persist issued before them
   (Raft Figure 2: "respond to RPCs" only after updating stable storage). A
   leader's AppendEntries may leave before its own write completes (thesis
   §10.2.1), and the leader counts its own log toward the commit quorum only up
   to what it has persisted.
3. **Apply is in order, exactly once.** :class:`Apply` batches follow each other
   without gaps or repeats, and only contain committed entries the node has
   itself persisted. A :class:`RestoreSnapshot` replaces everything applied so
   far by a durable snapshot; the next Apply continues right after it.
4. Within one step's output the relative order of actions is meaningful only
   among Persists (by ``seq``) and among Applies (by index).
"""

from __future__ import annotations

import enum

import attrs

from graft_core._membership import Membership
from graft_core._messages import InstallSnapshot, Message, RejectReason
from graft_core._types import Entry, HardState, Role, SnapshotMeta


@attrs.frozen(slots=True)
class Send:
    """Send ``message`` to ``message.dst``. Loss, delay and reordering are fine."""

    message: Message


@attrs.frozen(slots=True)
class SnapshotChunk:
    """Bytes ``offset ..`` of the snapshot ``meta`` that a leader is sending us.

    ``offset == 0`` starts a new incoming snapshot (forget any partial one);
    otherwise ``offset`` is exactly the number of bytes received so far.
    ``done`` marks the last chunk.
    """

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@attrs.frozen(slots=True)
class Persist:
    """Make state durable, then acknowledge with ``PersistCompleted(seq)``.

    In order:

    1. if ``snapshot`` is set, write its chunk into the incoming snapshot; if it
       is the last chunk, make the whole snapshot durable and then make it the
       node's snapshot: stored entries up to ``snapshot.meta.index`` are no
       longer needed, and if the stored entry at that index does not have the
       snapshot's term, every later stored entry is void too (Raft §7 -- a
       recovery that finds the snapshot applies the same rule);
    2. if ``truncate_from`` is set, delete every stored entry with index
       ``>= truncate_from``;
    3. store ``entries`` at ``first_index``, ``first_index + 1``, ...;
    4. if ``hard_state`` is set, store it.
    """

    seq: int
    hard_state: HardState | None
    truncate_from: int | None
    first_index: int
    entries: tuple[Entry, ...]
    snapshot: SnapshotChunk | None = None


@attrs.frozen(slots=True)
class SendSnapshot:
    """Send a chunk of this node's durable snapshot to a follower (Raft §7).

    Fill ``message.data`` with up to ``max_bytes`` bytes of the snapshot at
    ``message.meta.index``, starting at ``message.offset``; set
    ``message.done`` if they reach its end; send it (``attrs.evolve`` builds
    the filled message). If the shell no longer holds that snapshot (a newer
    one replaced it), it sends nothing: the leader restarts the transfer with
    its current snapshot when the follower next answers a heartbeat.
    """

    message: InstallSnapshot
    max_bytes: int


@attrs.frozen(slots=True)
class RestoreSnapshot:
    """Replace the state machine by the durable snapshot ``meta`` (Raft §7).

    Everything applied so far is superseded; the next :class:`Apply` starts at
    ``meta.index + 1``.
    """

    meta: SnapshotMeta


@attrs.frozen(slots=True)
class Apply:
    """Committed entries ``first_index, first_index + 1, ...`` for the state machine."""

    first_index: int
    entries: tuple[Entry, ...]


@attrs.frozen(slots=True)
class ProposalAccepted:
    """The proposal ``request_id`` was appended to the leader's log at ``(index, term)``.

    It is committed once an :class:`Apply` delivers an entry at ``index`` with
    this ``term``; if a different term shows up at ``index``, it was lost.
    """

    request_id: int
    index: int
    term: int


@attrs.frozen(slots=True)
class ProposalRejected:
    """The proposal ``request_id`` was not appended; ``leader_hint`` may help retry."""

    request_id: int
    reason: RejectReason
    leader_hint: str | None = None
    #: Why, for humans (e.g. what is invalid about a membership change).
    detail: str = ""


@attrs.frozen(slots=True)
class ReadReady:
    """The read ``request_id`` is linearizable once the state machine has
    applied ``index`` (thesis §6.4): answer it from local state then."""

    request_id: int
    index: int


@attrs.frozen(slots=True)
class ReadRejected:
    """The read ``request_id`` could not be served; ``leader_hint`` may help retry."""

    request_id: int
    reason: RejectReason
    leader_hint: str | None = None


@attrs.frozen(slots=True)
class MembershipChanged:
    """For observers and the shell: the configuration this node uses changed.

    ``index`` is the log index of the configuration entry (or snapshot) it came
    from. It is in effect at once (thesis §4.1), before it is committed, and may
    still be rolled back by a truncation -- which reports the older one again.
    """

    membership: Membership
    index: int


@attrs.frozen(slots=True)
class TransferAborted:
    """A leadership transfer to ``target`` was given up (thesis §3.10)."""

    target: str
    reason: str


@attrs.frozen(slots=True)
class RoleChanged:
    """For observers: this node's role, term or known leader changed."""

    role: Role
    term: int
    leader_id: str | None


class DropReason(enum.Enum):
    """Why an incoming message was dropped without effect."""

    MALFORMED = "malformed"
    UNKNOWN_SENDER = "unknown sender"
    WRONG_RECIPIENT = "wrong recipient"
    STALE_TERM = "stale term"
    OUT_OF_RANGE = "index out of range"
    LEADER_LEASE = "vote request while a leader is known"
    UNEXPECTED = "unexpected in this role"


@attrs.frozen(slots=True)
class MessageDropped:
    """An incoming message was dropped; ``detail`` is a human-readable why.

    Stale-term traffic is normal in Raft; the other reasons point at a buggy or
    hostile peer and are worth logging.
    """

    message: object
    reason: DropReason
    detail: str = ""


Action = (
    Send
    | Persist
    | Apply
    | ProposalAccepted
    | ProposalRejected
    | RoleChanged
    | MessageDropped
    | SendSnapshot
    | RestoreSnapshot
    | ReadReady
    | ReadRejected
    | MembershipChanged
    | TransferAborted
)
