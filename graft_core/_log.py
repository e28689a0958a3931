"""The Raft log as an immutable value.

Invariant: ``terms`` are non-decreasing along the log (a leader only appends
entries of its own term after those it already has, Raft §5.3), so "the last
index at or before ``i`` whose term is at most ``t``" is a binary search.

Indexes start at 1 (Raft Figure 2). ``offset`` is the index just before the
first entry held: 0, until log compaction (Raft §7) discards a prefix that a
snapshot covers; ``offset_term`` is the term of entry ``offset``.

Entries live in a persistent vector, so appending to a log of a million
entries costs about what appending to a log of a thousand does, and every
older ``RaftLog`` value stays valid and unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from graft_core._pvector import PVector
from graft_core._types import Entry


@attrs.frozen(slots=True)
class RaftLog:
    """An immutable Raft log."""

    entries: PVector[Entry] = attrs.field(factory=PVector.empty)
    offset: int = 0
    offset_term: int = 0
    #: The index of the last entry (``offset`` when empty). Computed once per
    #: log value rather than per read: a step reads it several times (and the
    #: simulator's checks after it), while a log value is built only when
    #: entries are appended, truncated or compacted.
    last_index: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "last_index", self.offset + len(self.entries))

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> RaftLog:
        return cls(PVector.from_iterable(entries))

    @property
    def last_term(self) -> int:
        entries = self.entries
        return entries.last().term if len(entries) else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if the log does not hold it."""
        i = index - self.offset
        if i == 0:
            return self.offset_term
        if i < 0 or i > len(self.entries):
            return None
        return self.entries[i - 1].term

    def entry_at(self, index: int) -> Entry:
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with indexes ``lo <= index < hi`` (``lo > offset``)."""
        return self.entries.slice(lo - self.offset - 1, hi - self.offset - 1)

    def append(self, entries: tuple[Entry, ...]) -> RaftLog:
        if len(entries) == 1:
            return RaftLog(self.entries.append(entries[0]), self.offset, self.offset_term)
        return RaftLog(self.entries.extend(entries), self.offset, self.offset_term)

    def truncate_from(self, index: int) -> RaftLog:
        """The log without the entries at ``index`` and after (``index > offset``)."""
        return RaftLog(self.entries.take(index - self.offset - 1), self.offset, self.offset_term)

    def compact_to(self, index: int) -> RaftLog:
        """The log without the entries up to ``index`` (``offset <= index <= last_index``).

        Costs O(entries kept); it runs once per snapshot, not per entry.
        """
        term = self.term_at(index)
        assert term is not None
        kept = self.entries.slice(index - self.offset, len(self.entries))
        return RaftLog(PVector.from_iterable(kept), index, term)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last ``(i, term_at(i))`` with ``i <= index`` and ``term_at(i) <= term``.

        Used by both sides of fast log backtracking; ``index`` is clamped to the
        log. Cost: O(log n) lookups, by the invariant above.
        """
        hi = min(index, self.last_index)
        lo = self.offset
        if hi <= lo:
            return lo, self.offset_term
        t = self.term_at(hi)
        assert t is not None
        if t <= term:
            return hi, t
        # term_at(lo) <= term < term_at(hi): find the last index whose term is <= term.
        while hi - lo > 1:
            mid = (lo + hi) // 2
            tm = self.term_at(mid)
            assert tm is not None
            if tm <= term:
                lo = mid
            else:
                hi = mid
        t = self.term_at(lo)
        assert t is not None
        return lo, t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at ``(last_index, last_term)`` at least as up to date?"""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)
