"""Small value types shared by the whole core: log entries, hard state, roles."""

from __future__ import annotations

import enum

import attrs


class Role(enum.Enum):
    """A node's role (Raft §5.1, plus the pre-candidate of thesis §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(enum.Enum):
    """What a log entry carries.

    ``NOOP`` is the empty entry a new leader appends in its own term so that
    earlier entries can be committed (Raft §5.4.2, §8). Applications receive
    it in :class:`~graft_core.Apply` like any other entry and normally skip it.
    """

    NORMAL = 0
    NOOP = 1


@attrs.frozen(slots=True)
class Entry:
    """One log entry: the term in which a leader created it, and its payload."""

    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@attrs.frozen(slots=True)
class HardState:
    """The state Raft requires on stable storage before answering RPCs (Figure 2)."""

    term: int = 0
    voted_for: str | None = None


@attrs.frozen(slots=True)
class DurableState:
    """Everything a node persisted; what the shell hands back after a crash.

    Args:
        hard_state: the last persisted term and vote.
        entries: the persisted log, entry 1 first (Raft indexes start at 1).
    """

    hard_state: HardState = HardState()
    entries: tuple[Entry, ...] = ()
