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
   itself persisted.
4. Within one step's output the relative order of actions is meaningful only
   among Persists (by ``seq``) and among Applies (by index).
"""

from __future__ import annotations

import enum

import attrs

from graft_core._messages import Message, RejectReason
from graft_core._types import Entry, HardState, Role


@attrs.frozen(slots=True)
class Send:
    """Send ``message`` to ``message.dst``. Loss, delay and reordering are fine."""

    message: Message


@attrs.frozen(slots=True)
class Persist:
    """Make state durable, then acknowledge with ``PersistCompleted(seq)``.

    In order: if ``truncate_from`` is set, delete every stored entry with index
    ``>= truncate_from``; then store ``entries`` at ``first_index``,
    ``first_index + 1``, ...; then, if ``hard_state`` is set, store it.
    """

    seq: int
    hard_state: HardState | None
    truncate_from: int | None
    first_index: int
    entries: tuple[Entry, ...]


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
    Send | Persist | Apply | ProposalAccepted | ProposalRejected | RoleChanged | MessageDropped
)
