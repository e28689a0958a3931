"""A node's stable storage in memory, exactly as the ``Persist`` contract describes it.

Shared by the randomized simulator (which queues writes and loses an
unflushed suffix on a crash) and :class:`~graft_sim.LocalCluster` (which
writes at once or on demand): one model of the contract, so the two cannot
drift apart. ``write`` returns what is wrong when the core breaks the
contract (a gap, a chunk at the wrong offset); it never raises.
"""

from __future__ import annotations

import attrs

from graft_core import DurableState, Entry, HardState, Persist, SnapshotMeta


@attrs.frozen
class SaveSnapshot:
    """The application's own write: its state ``data`` as of ``meta.index``."""

    meta: SnapshotMeta
    data: bytes


Write = Persist | SaveSnapshot


class Disk:
    """One node's stable storage, as the ``Persist`` contract describes it.

    ``entries`` holds the log after the durable snapshot: entry
    ``offset + 1`` first (``offset`` is the snapshot's index, 0 without one).
    """

    __slots__ = ("entries", "hard_state", "incoming", "snapshot", "snapshot_data")

    def __init__(
        self, hard_state: HardState | None = None, entries: list[Entry] | None = None
    ) -> None:
        self.hard_state = hard_state if hard_state is not None else HardState()
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_data = b""
        self.entries: list[Entry] = entries if entries is not None else []
        #: A snapshot being received from a leader: its metadata and bytes so far.
        self.incoming: tuple[SnapshotMeta, bytearray] | None = None

    @property
    def offset(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.index

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def holds(self, index: int, term: int | None) -> bool:
        """Is entry ``index`` of ``term`` durable here (stored, or inside the snapshot)?

        ``term=None`` means the caller no longer knows the term (it compacted
        the entry away): then only a snapshot covering ``index`` holds it.
        """
        offset = self.offset
        if index < offset or index <= 0:
            return True
        if index == offset:
            assert self.snapshot is not None
            return term is None or self.snapshot.term == term
        if index > offset + len(self.entries) or term is None:
            return False
        return self.entries[index - offset - 1].term == term

    def durable(self) -> DurableState:
        return DurableState(self.hard_state, tuple(self.entries), self.snapshot)

    def write(self, w: Write) -> str | None:
        """Carry out one write; return what is wrong with it, if the core broke the contract."""
        if isinstance(w, SaveSnapshot):
            return self.save_snapshot(w.meta, w.data)
        chunk = w.snapshot
        if chunk is not None:
            if chunk.offset == 0:
                self.incoming = (chunk.meta, bytearray(chunk.data))
            else:
                incoming = self.incoming
                if incoming is None or incoming[0] != chunk.meta or (
                    len(incoming[1]) != chunk.offset
                ):
                    have = "nothing" if incoming is None else f"{len(incoming[1])} bytes"
                    return (
                        f"Persist {w.seq} writes snapshot bytes from {chunk.offset} but the "
                        f"disk holds {have} of that snapshot"
                    )
                incoming[1].extend(chunk.data)
            if chunk.done:
                assert self.incoming is not None
                meta, data = self.incoming
                self.incoming = None
                self.install(meta, bytes(data))
        if w.truncate_from is not None:
            self.truncate(w.truncate_from)
        if w.entries:
            problem = self.store(w.first_index, w.entries)
            if problem:
                return f"Persist {w.seq}: {problem}"
        if w.hard_state is not None:
            self.hard_state = w.hard_state
        return None

    def install(self, meta: SnapshotMeta, data: bytes) -> None:
        # Persist rule 1 (Raft §7): the entries the snapshot covers go; if the
        # stored entry at its index has another term, everything after goes too.
        offset = self.offset
        if meta.index > offset and self.holds(meta.index, meta.term):
            del self.entries[: meta.index - offset]
        elif not (meta.index == offset and self.holds(meta.index, meta.term)):
            self.entries = []
        self.snapshot, self.snapshot_data = meta, data

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> str | None:
        if self.snapshot is not None and meta.index <= self.snapshot.index:
            return None  # a newer snapshot (installed meanwhile) already covers it
        if not self.holds(meta.index, meta.term):
            return f"the application saved a snapshot at {meta.index} that the log does not hold"
        del self.entries[: meta.index - self.offset]
        self.snapshot, self.snapshot_data = meta, data
        return None

    def truncate(self, index: int) -> None:
        offset = self.offset
        if index <= offset:
            self.entries = []  # into the snapshot: the checker objects separately
        else:
            del self.entries[index - offset - 1 :]

    def store(self, first: int, entries: tuple[Entry, ...]) -> str | None:
        offset = self.offset
        if first <= offset:
            entries = entries[offset + 1 - first :]
            first = offset + 1
        if first > self.last_index + 1:
            return f"entries from {first} leave a gap after {self.last_index}"
        del self.entries[first - offset - 1 :]
        self.entries.extend(entries)
        return None
