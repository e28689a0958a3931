"""Small value types shared by the whole core: log entries, hard state, roles."""

from __future__ import annotations

import enum

import attrs

from graft_core._membership import Membership


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
    #: A configuration change: ``data`` is an encoded
    #: :class:`~graft_core.Membership`, in effect from the moment it is in the
    #: log (thesis §4.1). Applications receive it in ``Apply`` too.
    CONFIG = 2


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
class SnapshotMeta:
    """What a snapshot covers (Raft §7): every entry up to ``index``.

    ``term`` is the term of entry ``index`` and ``membership`` the
    configuration in effect at it -- what a node needs to continue the log
    after the snapshot without the entries it replaces.
    """

    index: int
    term: int
    membership: Membership


@attrs.frozen(slots=True)
class DurableState:
    """Everything a node persisted; what the shell hands back after a crash.

    Args:
        hard_state: the last persisted term and vote.
        entries: the persisted log after the snapshot: entry
            ``snapshot.index + 1`` first (entry 1 without a snapshot).
        snapshot: the latest durable snapshot's metadata, if any.
    """

    hard_state: HardState = HardState()
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None

    @property
    def first_index(self) -> int:
        """The index of ``entries[0]``."""
        return 1 if self.snapshot is None else self.snapshot.index + 1
