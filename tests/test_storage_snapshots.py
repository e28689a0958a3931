"""graft_trio's storage: snapshots, the Raft §7 log rule, compaction, crashes.

What recovery returns is compared with :class:`SnapModel`, the Persist contract
of ``graft_core._actions`` (snapshot chunk, truncation, entries, hard state)
applied to a Python list. Crash tests run :class:`Storage` on :class:`SimFs`, an
in-memory file system that knows what an fsync made durable, and reopen after
a crash before every file operation of a call -- both as a process crash
(everything written survives) and as a power loss (only what was fsynced does).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_storage import META, E, FaultyFs, frame, frames, segments

from graft_core import (
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Persist,
    SnapshotChunk,
    SnapshotMeta,
)
from graft_trio._storage import (
    Storage,
    StorageCorruption,
    StorageFailure,
    StorageUsageError,
)

MEMBERS = Membership(("a", "b", "c"))
SNAPSHOT = 6
CHECKPOINT = 7
COMMIT = 5


def snap(index: int, term: int, members: Membership = MEMBERS) -> SnapshotMeta:
    return SnapshotMeta(index, term, members)


def snap_name(meta: SnapshotMeta) -> str:
    return f"{meta.index:016x}-{meta.term:016x}.snap"


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def chunk_persists(
    seq: int, meta: SnapshotMeta, data: bytes, size: int, last: Persist | None = None
) -> list[Persist]:
    """One Persist per chunk of ``data``; the last chunk's Persist is ``last`` with it."""
    parts = pieces(data, size)
    out = []
    offset = 0
    for i, part in enumerate(parts):
        chunk = SnapshotChunk(meta, offset, part, i == len(parts) - 1)
        if chunk.done and last is not None:
            out.append(attrs.evolve(last, seq=seq + i, snapshot=chunk))
        else:
            out.append(Persist(seq + i, None, None, 1, (), chunk))
        offset += len(part)
    return out


class SnapModel:
    """The Persist contract on a list, with a snapshot at its start (Raft §7)."""

    def __init__(self) -> None:
        self.hard = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.entries: list[Entry] = []

    @property
    def base(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    @property
    def last(self) -> int:
        return self.base + len(self.entries)

    def term_at(self, index: int) -> int:
        if index == self.base:
            return self.snapshot.term if self.snapshot is not None else 0
        return self.entries[index - self.base - 1].term

    def land(self, meta: SnapshotMeta) -> None:
        # Raft §7: keep the entries after the snapshot only if the log holds
        # its last included entry (same index and term).
        if meta.index <= self.last and self.term_at(meta.index) == meta.term:
            self.entries = self.entries[meta.index - self.base :]
        else:
            self.entries = []
        self.snapshot = meta

    def apply(self, p: Persist) -> None:
        if p.snapshot is not None and p.snapshot.done:
            self.land(p.snapshot.meta)
        if p.truncate_from is not None:
            del self.entries[max(0, p.truncate_from - self.base - 1) :]
        if p.entries:
            del self.entries[p.first_index - self.base - 1 :]
            self.entries.extend(p.entries)
        if p.hard_state is not None:
            self.hard = p.hard_state

    def copy(self) -> SnapModel:
        m = SnapModel()
        m.hard, m.snapshot, m.entries = self.hard, self.snapshot, list(self.entries)
        return m

    def durable(self) -> DurableState:
        return DurableState(self.hard, tuple(self.entries), self.snapshot)


def log_of(n: int, term_every: int = 4, seq: int = 1) -> list[Persist]:
    """``n`` entries, one Persist each, the term rising every ``term_every``."""
    out = []
    for i in range(1, n + 1):
        term = 1 + (i - 1) // term_every
        hard = HardState(term, "a") if (i - 1) % term_every == 0 else None
        out.append(Persist(seq + i - 1, hard, None, i, (E(term, b"e%d" % i),)))
    return out


def write_each(s: Storage, persists: list[Persist]) -> None:
    """One batch per Persist: a batch never spans segments, so this rolls them."""
    for p in persists:
        s.write([p])


def model_of(persists: list[Persist]) -> SnapModel:
    m = SnapModel()
    for p in persists:
        m.apply(p)
    return m


def reopened(d: Path, **kw: object) -> tuple[DurableState, bytes | None]:
    """What a fresh open recovers, and the snapshot's data."""
    with Storage.open(d, fsync=False, **kw) as s:  # type: ignore[arg-type]
        durable = s.recovered().durable
        data = b"".join(s.iter_snapshot(5)) if durable.snapshot is not None else None
    return durable, data


def non_segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".wal"))


LOG = log_of(12)  # entries 1..12, terms 1, 1, 1, 1, 2, ... 3
DATA = bytes(range(256)) * 3


# ---------------------------------------------------------------- save and recover


def test_save_snapshot_then_recover_round_trip(tmp_path: Path) -> None:
    """Raft §7: the snapshot replaces the entries up to its index; the log holds the
    entry at that index with its term, so the entries after it stay."""
    meta = snap(6, 2)
    with Storage.open(tmp_path, metadata=META) as s:
        s.write(LOG)
        assert s.snapshot_meta() is None and s.snapshot_size() == 0
        s.save_snapshot(meta, pieces(DATA, 100))
        assert s.snapshot_meta() == meta
        assert s.snapshot_size() == len(DATA)
        assert b"".join(s.iter_snapshot(64)) == DATA
    expected = model_of(LOG)
    expected.land(meta)
    durable, data = reopened(tmp_path)
    assert durable == expected.durable()
    assert durable.first_index == 7 and durable.entries[0] == E(2, b"e7")
    assert data == DATA
    assert non_segments(tmp_path) == [snap_name(meta)]
    # The log goes on after the snapshot, and a later snapshot replaces the file.
    with Storage.open(tmp_path, metadata=META) as s:
        s.write([Persist(20, None, None, 13, (E(3, b"x"), E(3, b"y", EntryKind.CONFIG)))])
        s.save_snapshot(snap(13, 3), [b"newer"])
    durable, data = reopened(tmp_path)
    assert durable == DurableState(HardState(3, "a"), (E(3, b"y", EntryKind.CONFIG),), snap(13, 3))
    assert data == b"newer"
    assert non_segments(tmp_path) == [snap_name(snap(13, 3))]


def test_the_log_names_the_snapshot_in_a_committed_record(tmp_path: Path) -> None:
    """Record format: SNAPSHOT = index, term, encoded membership; then COMMIT."""
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [b"x"])
    seg = segments(tmp_path)[0]
    recs = frames(seg)
    (off, end, kind), (_, _, after) = recs[-2], recs[-1]
    assert (kind, after) == (SNAPSHOT, COMMIT)
    body = seg.read_bytes()[off + 8 : end]
    assert struct.unpack_from("<BQQ", body) == (SNAPSHOT, 6, 2)
    assert Membership.decode_untrusted(body[17:]) == MEMBERS


def test_snapshot_data_is_streamed_not_collected(tmp_path: Path) -> None:
    """Each chunk is on disk before the next is asked for (bounded memory)."""
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        tmp = tmp_path / (snap_name(snap(6, 2)) + ".tmp")

        def chunks() -> Iterator[bytes]:
            written = 0
            for part in pieces(DATA, 50):
                if written:
                    assert tmp.stat().st_size >= written  # the header comes first
                yield part
                written += len(part)

        s.save_snapshot(snap(6, 2), chunks())
        sizes = [len(c) for c in s.iter_snapshot(100)]
    assert sizes == [100] * 7 + [len(DATA) - 700]


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (snap(13, 3), "beyond the last stored entry 12"),
        (snap(6, 1), "has term 1, but the stored entry there has term 2"),
        (snap(4, 1), "not after the current one at 4"),
        (snap(3, 1), "not after the current one at 4"),
        (SnapshotMeta(0, 0, MEMBERS), "positive int"),
        (SnapshotMeta(5, 2, ("a",)), "Membership"),  # type: ignore[arg-type]
    ],
)
def test_save_snapshot_refuses_a_snapshot_the_log_does_not_hold(
    tmp_path: Path, meta: SnapshotMeta, reason: str
) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(4, 1), [b"first"])
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(StorageUsageError, match=reason):
            s.save_snapshot(meta, [b"data"])
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
        s.save_snapshot(snap(8, 2), [b"ok"])  # still usable
    assert reopened(tmp_path)[0].snapshot == snap(8, 2)


def test_an_application_error_while_saving_leaves_no_trace(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    def failing() -> Iterator[bytes]:
        yield b"some"
        raise Boom

    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(Boom):
            s.save_snapshot(snap(6, 2), failing())
        with pytest.raises(StorageUsageError, match="must be bytes"):
            s.save_snapshot(snap(6, 2), ["text"])  # type: ignore[list-item]
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
        s.save_snapshot(snap(6, 2), [b"fine"])
    assert reopened(tmp_path)[1] == b"fine"


def test_an_empty_snapshot_round_trips(tmp_path: Path) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(12, 3), [])
        assert list(s.iter_snapshot()) == []
        assert s.read_snapshot(12, 0, 10) == b""
    assert reopened(tmp_path) == (DurableState(HardState(3, "a"), (), snap(12, 3)), b"")


# ---------------------------------------------------------------- install by chunks


def test_install_by_chunks_over_several_batches_then_recover(tmp_path: Path) -> None:
    """A leader's snapshot past our log: the whole log is replaced (Raft §7)."""
    meta = snap(40, 7, Membership(("a", "b", "d"), learners=("e",)))
    follow = Persist(0, HardState(7, "b"), None, 41, (E(7, b"after"),))
    ps = chunk_persists(100, meta, DATA, 100, follow)
    with Storage.open(tmp_path, metadata=META) as s:
        s.write(LOG)
        s.write(ps[:3])
        s.write(ps[3:5])
        assert s.snapshot_meta() is None  # not the node's snapshot until the last chunk
        assert s.read_snapshot(40, 0, 10) is None
        s.write(ps[5:])
        assert s.snapshot_meta() == meta
        assert s.read_snapshot(40, 0, 1000) == DATA
    durable, data = reopened(tmp_path)
    assert durable == DurableState(HardState(7, "b"), (E(7, b"after"),), meta)
    assert data == DATA
    assert non_segments(tmp_path) == [snap_name(meta)]


def test_a_single_chunk_snapshot_in_one_persist_with_everything_else(tmp_path: Path) -> None:
    """Persist order: snapshot, then truncate_from, then entries, then hard state."""
    meta = snap(8, 2)  # the log holds entry 8 with term 2: entries 9.. stay ...
    p = Persist(50, HardState(4), 11, 11, (E(4, b"n"),), SnapshotChunk(meta, 0, b"s", True))
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.write([p])
    expected = model_of([*LOG, p])
    assert expected.entries == [E(3, b"e9"), E(3, b"e10"), E(4, b"n")]  # ... up to the cut
    assert reopened(tmp_path) == (expected.durable(), b"s")


CHUNK_MISTAKES: dict[str, list[list[SnapshotChunk]]] = {
    "a first chunk at offset 5": [[SnapshotChunk(snap(40, 7), 5, b"x", False)]],
    "a gap": [
        [SnapshotChunk(snap(40, 7), 0, b"abc", False)],
        [SnapshotChunk(snap(40, 7), 4, b"x", False)],
    ],
    "an overlap": [
        [SnapshotChunk(snap(40, 7), 0, b"abc", False)],
        [SnapshotChunk(snap(40, 7), 2, b"x", False)],
    ],
    "another snapshot's continuation": [
        [SnapshotChunk(snap(40, 7), 0, b"abc", False)],
        [SnapshotChunk(snap(41, 7), 3, b"x", True)],
    ],
    "a chunk after the last one": [
        [SnapshotChunk(snap(40, 7), 0, b"abc", True)],
        [SnapshotChunk(snap(40, 7), 3, b"x", True)],
    ],
    "a gap inside one batch": [
        [SnapshotChunk(snap(40, 7), 0, b"abc", False), SnapshotChunk(snap(40, 7), 9, b"", True)],
    ],
}


@pytest.mark.parametrize("name", sorted(CHUNK_MISTAKES))
def test_a_chunk_at_the_wrong_offset_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str
) -> None:
    *good, bad = CHUNK_MISTAKES[name]
    with Storage.open(tmp_path, fsync=False) as s:
        s.write([*LOG, Persist(20, HardState(7), None, 1, ())])
        for seq, batch in enumerate(good):
            s.write([Persist(30 + seq, None, None, 1, (), c) for c in batch])
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(StorageUsageError, match="snapshot chunk at offset"):
            s.write([Persist(40 + i, None, None, 1, (), c) for i, c in enumerate(bad)])
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
        # Still usable: offset 0 starts over.
        s.write(chunk_persists(50, snap(45, 7), b"fresh", 2))
    assert reopened(tmp_path)[1] == b"fresh"


def test_a_partly_received_snapshot_is_forgotten_by_a_restart(tmp_path: Path) -> None:
    """Only a last chunk makes a snapshot durable; the leader starts over at offset 0."""
    meta = snap(40, 7)
    ps = chunk_persists(20, meta, DATA, 100)
    log = [*LOG, Persist(19, HardState(7), None, 1, ())]
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(log)
        s.write(ps[:3])
    assert reopened(tmp_path)[0] == model_of(log).durable()
    assert non_segments(tmp_path) == []  # the partial file was deleted
    with Storage.open(tmp_path, fsync=False) as s:
        with pytest.raises(StorageUsageError, match="not being received"):
            s.write(ps[3:])
        s.write(ps)
    assert reopened(tmp_path)[1] == DATA


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (snap(40, 9), "snapshot at 40 has term 9, after the hard state's term 7"),
        (snap(3, 1), "not after the current one at 4"),
    ],
)
def test_installing_a_snapshot_the_log_cannot_take_is_refused(
    tmp_path: Path, meta: SnapshotMeta, reason: str
) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write([*LOG, Persist(19, HardState(7), None, 1, ())])
        s.save_snapshot(snap(4, 1), [b"x"])
        with pytest.raises(StorageUsageError, match=reason):
            s.write(chunk_persists(20, meta, b"data", 10))


def test_a_truncation_into_the_snapshot_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [b"x"])
        with pytest.raises(StorageUsageError, match="in the snapshot"):
            s.write([Persist(20, None, 5, 5, ())])
        with pytest.raises(StorageUsageError, match="in the snapshot"):
            s.write([Persist(20, None, None, 6, (E(2),))])
        s.write([Persist(20, None, 7, 7, (E(3),))])  # entry 7 is the first after it
    assert reopened(tmp_path)[0].entries == (E(3),)


# ---------------------------------------------------------------- Raft §7


@pytest.mark.parametrize(
    ("meta", "kept"),
    [
        (snap(6, 2), (E(2, b"e7"), E(2, b"e8"), E(3, b"e9"))),  # entry 6 has term 2: keep
        (snap(6, 3), ()),  # entry 6 has another term: the log conflicts, discard it all
        (snap(20, 3), ()),  # entry 20 is not in the log: discard it all
        (snap(8, 2), (E(3, b"e9"),)),
        (snap(9, 3), ()),  # the last entry we hold: nothing after it to keep
    ],
)
def test_raft_7_the_entries_after_an_installed_snapshot_stay_only_if_the_log_holds_its_last(
    tmp_path: Path, meta: SnapshotMeta, kept: tuple[Entry, ...]
) -> None:
    """Raft §7: "If existing log entry has same index and term as snapshot's last
    included entry, retain log entries following it and reply"; else "discard the
    entire log". Applied when the snapshot lands, and again by recovery."""
    log = log_of(9)  # terms 1 1 1 1 2 2 2 2 3
    hard = Persist(10, HardState(4), None, 1, ())
    with Storage.open(tmp_path, fsync=False) as s:
        s.write([*log, hard])
        s.write(chunk_persists(20, meta, b"state", 2))
    expected = model_of([*log, hard])
    expected.land(meta)
    assert tuple(expected.entries) == kept
    assert reopened(tmp_path)[0] == expected.durable()


# ---------------------------------------------------------------- compaction


def top_entry(seg: Path) -> int:
    """The largest index of an ENTRY record in ``seg`` (0 if none)."""
    data = seg.read_bytes()
    tops = [int.from_bytes(data[o + 9 : o + 17], "little") for o, _, t in frames(seg) if t == 2]
    return max(tops, default=0)


def test_compaction_deletes_old_segments_and_recovery_gives_the_same_state(
    tmp_path: Path,
) -> None:
    """Rule 8: the segments before the first one holding an entry after the
    snapshot go; each remaining one begins with a checkpoint."""
    log = log_of(60)
    with Storage.open(tmp_path, metadata=META, segment_bytes=150, fsync=False) as s:
        write_each(s, log)
        before = segments(tmp_path)
        first = next(i for i, seg in enumerate(before) if top_entry(seg) > 50)
        assert len(before) > 15 and first > 10
        s.save_snapshot(snap(50, 13), [DATA])
        after = [p.name for p in segments(tmp_path)]
    # (The SNAPSHOT record itself may have started one more segment.)
    assert after[: len(before) - first] == [p.name for p in before[first:]]
    assert len(after) - (len(before) - first) in (0, 1)
    expected = model_of(log)
    expected.land(snap(50, 13))
    assert reopened(tmp_path, segment_bytes=150) == (expected.durable(), DATA)
    for seg in segments(tmp_path):
        assert [t for _, _, t in frames(seg)[:2]] == [1, CHECKPOINT]
    # Writing on, rolling, compacting again: still the model.
    more = [Persist(100 + i, None, None, 60 + i, (E(15, b"m%d" % i),)) for i in range(1, 31)]
    with Storage.open(tmp_path, metadata=META, segment_bytes=150, fsync=False) as s:
        write_each(s, more)
        s.save_snapshot(snap(85, 15), [b"2"])
    for p in more:
        expected.apply(p)
    expected.land(snap(85, 15))
    assert reopened(tmp_path, metadata=META, segment_bytes=150) == (expected.durable(), b"2")
    assert all(top_entry(seg) > 85 for seg in segments(tmp_path)[:1])


def test_an_interrupted_compaction_is_finished_on_open(tmp_path: Path) -> None:
    """A crash between the SNAPSHOT record and the deletions leaves extra segments."""
    log = log_of(40)
    with Storage.open(tmp_path, segment_bytes=150, fsync=False) as s:
        write_each(s, log)
        kept = {p.name: p.read_bytes() for p in segments(tmp_path)}
        s.save_snapshot(snap(35, 9), [b"s"])
        after = [p.name for p in segments(tmp_path)]
    for name, data in kept.items():  # as if the deletions never happened
        if name not in after:
            (tmp_path / name).write_bytes(data)
    assert len(segments(tmp_path)) > len(after)
    expected = model_of(log)
    expected.land(snap(35, 9))
    assert reopened(tmp_path, segment_bytes=150) == (expected.durable(), b"s")
    assert [p.name for p in segments(tmp_path)] == after


def test_a_segment_deleted_while_its_entries_are_needed_is_corruption(tmp_path: Path) -> None:
    """Replay may start at a checkpoint, but the entries after the snapshot must all
    still have their records."""
    with Storage.open(tmp_path, segment_bytes=150, fsync=False) as s:
        write_each(s, log_of(30))
    segs = segments(tmp_path)
    segs[0].unlink()
    with pytest.raises(StorageCorruption, match="segments that held them are gone") as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == segs[1]


def test_a_checkpoint_that_disagrees_with_the_log_before_it_is_corruption(
    tmp_path: Path,
) -> None:
    with Storage.open(tmp_path, segment_bytes=150, fsync=False) as s:
        write_each(s, log_of(30))
    seg = segments(tmp_path)[2]
    off, end, kind = frames(seg)[0]
    assert kind == CHECKPOINT
    data = bytearray(seg.read_bytes())
    body = bytearray(data[off + 8 : end])
    body[1] += 1  # the hard state's term, with a valid CRC
    data[off:end] = frame(bytes(body))
    seg.write_bytes(bytes(data))
    with pytest.raises(StorageCorruption, match="CHECKPOINT hard state") as info:
        Storage.open(tmp_path, fsync=False)
    assert (info.value.path, info.value.offset) == (seg, 0)


def test_a_segment_without_its_checkpoint_cannot_start_the_replay(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=150, fsync=False) as s:
        write_each(s, log_of(30))
        s.save_snapshot(snap(28, 7), [b"s"])
    first = segments(tmp_path)[0]
    assert first.name != "0000000000000000.wal"
    data = first.read_bytes()
    _, end, _ = frames(first)[0]  # cut the checkpoint away
    first.write_bytes(data[end:])
    with pytest.raises(StorageCorruption, match="does not begin with a checkpoint"):
        Storage.open(tmp_path, fsync=False)


def test_segments_from_before_checkpoints_still_replay_but_are_never_a_start(
    tmp_path: Path,
) -> None:
    """A log rolled by an older graft: no segment begins with a checkpoint."""
    log = log_of(30)
    with Storage.open(tmp_path, metadata=META, segment_bytes=150, fsync=False) as s:
        write_each(s, log)
    old = segments(tmp_path)
    for seg in old[1:]:
        skip = frames(seg)[1][1]  # past METADATA and CHECKPOINT
        seg.write_bytes(seg.read_bytes()[skip:])
    assert reopened(tmp_path, segment_bytes=150)[0] == model_of(log).durable()
    with Storage.open(tmp_path, metadata=META, segment_bytes=150, fsync=False) as s:
        s.save_snapshot(snap(29, 8), [b"s"])
        assert segments(tmp_path)[: len(old)] == old  # no checkpoint to start from
        more = Persist(40, None, None, 31, (E(8),))
        s.write([more])  # into a new segment, which begins with a checkpoint
        s.save_snapshot(snap(31, 8), [b"t"])
        assert segments(tmp_path)[0] not in old
    expected = model_of([*log, more])
    expected.land(snap(31, 8))
    assert reopened(tmp_path, segment_bytes=150) == (expected.durable(), b"t")


# Records with good CRCs appended after a snapshot at 6 (term 2) of LOG: crash
# damage cannot produce them, so none is a torn tail.
BAD_SNAPSHOT_TAILS = {
    "a snapshot going back": frame(struct.pack("<BQQ", 6, 5, 2) + MEMBERS.encode())
    + frame(struct.pack("<BI", 5, 1)),
    "a snapshot term after the hard state": frame(struct.pack("<BQQ", 6, 12, 9) + MEMBERS.encode())
    + frame(struct.pack("<BI", 5, 1)),
    "a bad membership": frame(struct.pack("<BQQ", 6, 12, 3) + b"{}") + frame(b"\x05\x01\0\0\0"),
    "a truncation into the snapshot": frame(struct.pack("<BQ", 3, 6)) + frame(b"\x05\x01\0\0\0"),
    "an entry inside the snapshot": frame(struct.pack("<BQQB", 2, 6, 2, 0))
    + frame(b"\x05\x01\0\0\0"),
    "a checkpoint mid-segment": frame(b"\x07" + bytes(33)),
}


@pytest.mark.parametrize("name", sorted(BAD_SNAPSHOT_TAILS))
def test_snapshot_records_that_break_invariants_are_corruption(tmp_path: Path, name: str) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [b"x"])
    seg = segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(BAD_SNAPSHOT_TAILS[name])
    with pytest.raises(StorageCorruption) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == seg and info.value.offset >= size


# ---------------------------------------------------------------- reading


def test_read_snapshot_bounds(tmp_path: Path) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        assert s.read_snapshot(1, 0, 10) is None  # no snapshot yet
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [DATA])
        size = len(DATA)
        assert s.read_snapshot(6, 0, 10) == DATA[:10]
        assert s.read_snapshot(6, 700, 1000) == DATA[700:]  # short only at the end
        assert s.read_snapshot(6, size, 10) == b""
        assert s.read_snapshot(6, 3, 0) == b""
        assert s.read_snapshot(5, 0, 10) is None  # not the current snapshot
        assert b"".join(s.read_snapshot(6, o, 77) or b"" for o in range(0, size, 77)) == DATA
        with pytest.raises(StorageUsageError, match="past the snapshot"):
            s.read_snapshot(6, size + 1, 1)
        for bad in ((6, -1, 1), (6, 0, -1), ("6", 0, 1)):
            with pytest.raises(StorageUsageError):
                s.read_snapshot(*bad)
        with pytest.raises(StorageUsageError):
            s.iter_snapshot(0)
        s.save_snapshot(snap(8, 2), [b"newer"])
        assert s.read_snapshot(6, 0, 10) is None  # replaced: the leader starts over
    with Storage.open(tmp_path / "empty", fsync=False) as s:
        with pytest.raises(StorageUsageError, match="no snapshot"):
            s.iter_snapshot()
        assert s.snapshot_size() == 0


def test_a_reader_outlives_the_snapshot_it_reads(tmp_path: Path) -> None:
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [DATA])
        reader = s.iter_snapshot(100)
        first = next(reader)
        s.save_snapshot(snap(8, 2), [b"newer"])  # deletes the old file
        assert first + b"".join(reader) == DATA
        assert reader.meta == snap(6, 2)
        with s.iter_snapshot() as unread:
            assert unread.size == 5


# ---------------------------------------------------------------- corruption


def _saved(d: Path) -> Path:
    with Storage.open(d, fsync=False, metadata=META) as s:
        s.write(LOG)
        s.save_snapshot(snap(6, 2), [DATA[:50]])
    return d / snap_name(snap(6, 2))


def test_any_flipped_byte_of_the_snapshot_file_is_corruption(tmp_path: Path) -> None:
    """Header and data are both checked by CRC: never silently used."""
    path = _saved(tmp_path)
    original = path.read_bytes()
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(StorageCorruption) as info:
            Storage.open(tmp_path, fsync=False)
        assert info.value.path == path, i
        assert "empty data directory" in str(info.value)  # tells the operator what to do
        assert path.read_bytes() == bytes(damaged)  # nothing was "repaired" or deleted
    path.write_bytes(original)
    assert reopened(tmp_path)[1] == DATA[:50]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-1], "ends after 49 of 50"),
        (lambda b: b[:20], "header incomplete"),
        (lambda b: b"", "header incomplete"),
        (lambda b: b + b"\0", "bytes after the snapshot data"),
        (None, "is missing"),
    ],
)
def test_a_truncated_extended_or_missing_snapshot_file_is_corruption(
    tmp_path: Path, damage: Callable[[bytes], bytes] | None, reason: str
) -> None:
    path = _saved(tmp_path)
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StorageCorruption, match=reason) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == path


def test_damage_after_open_is_caught_by_the_verifying_read(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with Storage.open(tmp_path, fsync=False) as s:
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        reader = s.iter_snapshot(30)
        assert next(reader) == DATA[:30]
        with pytest.raises(StorageCorruption, match="checksum"):
            next(reader)  # the last chunk is withheld
        path.write_bytes(bytes(data[:-5]))
        with pytest.raises(StorageCorruption, match="shorter"):
            list(s.iter_snapshot(30))


def test_leftover_snapshot_files_are_deleted_on_open(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    for name in (snap_name(snap(3, 1)), snap_name(snap(9, 3)), "incoming.snap.tmp", "x.snap.tmp"):
        (tmp_path / name).write_bytes(b"junk")
    assert reopened(tmp_path)[1] == DATA[:50]
    assert non_segments(tmp_path) == [path.name]


# ---------------------------------------------------------------- crashes


class Crash(BaseException):
    """The process dies at this file operation."""


@attrs.define
class _Inode:
    data: bytearray
    synced: bytes  # what an fsync made durable


class SimFs:
    """One data directory in memory, knowing what an fsync made durable.

    Records each operation that changes something (``ops``); raises
    :class:`Crash` instead of the operation numbered ``crash_at``.
    :meth:`after_crash` is the directory a restarted process finds: after a
    process crash, everything written; after a power loss, the file contents
    of each file's last fsync, under the names of the directory's last fsync.
    """

    def __init__(self, root: str, files: dict[str, bytes] | None = None) -> None:
        self.root = root
        self.names = {n: _Inode(bytearray(d), bytes(d)) for n, d in (files or {}).items()}
        self.durable = dict(self.names)
        self.fds: dict[int, tuple[_Inode | None, bool]] = {}
        self.pos: dict[int, int] = {}
        self.next_fd = 100
        self.ops: list[str] = []
        self.crash_at: int | None = None

    def after_crash(self, power_loss: bool) -> SimFs:
        if power_loss:
            return SimFs(self.root, {n: i.synced for n, i in self.durable.items()})
        return SimFs(self.root, {n: bytes(i.data) for n, i in self.names.items()})

    def _op(self, what: str) -> None:
        if self.crash_at is not None and len(self.ops) >= self.crash_at:
            raise Crash(what)
        self.ops.append(what)

    def _name(self, path: str) -> str:
        assert os.path.dirname(path) == self.root, path
        return os.path.basename(path)

    def _file(self, fd: int) -> _Inode:
        inode = self.fds[fd][0]
        assert inode is not None
        return inode

    @staticmethod
    def _put(inode: _Inode, offset: int, data: bytes | memoryview) -> int:
        if offset > len(inode.data):
            inode.data.extend(bytes(offset - len(inode.data)))
        inode.data[offset : offset + len(data)] = data
        return len(data)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd, self.next_fd = self.next_fd, self.next_fd + 1
        if path == self.root:
            self.fds[fd] = (None, False)
            return fd
        name = self._name(path)
        inode = self.names.get(name)
        if flags & os.O_CREAT:
            self._op(f"create {name}")
            if inode is not None and flags & os.O_EXCL:
                raise FileExistsError(errno.EEXIST, "exists", path)
            if inode is None:
                inode = self.names[name] = _Inode(bytearray(), b"")
        elif inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if flags & os.O_TRUNC:
            del inode.data[:]
        self.fds[fd] = (inode, bool(flags & os.O_APPEND))
        self.pos[fd] = 0
        return fd

    def read(self, fd: int, n: int) -> bytes:
        data = bytes(self._file(fd).data[self.pos[fd] : self.pos[fd] + n])
        self.pos[fd] += len(data)
        return data

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return bytes(self._file(fd).data[offset : offset + n])

    def write(self, fd: int, data: bytes | memoryview) -> int:
        inode, append = self.fds[fd]
        assert inode is not None
        self._op(f"write {len(data)}")
        if append:
            self.pos[fd] = len(inode.data)
        self.pos[fd] += self._put(inode, self.pos[fd], data)
        return len(data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._op(f"pwrite {len(data)}@{offset}")
        return self._put(self._file(fd), offset, data)

    def fsync(self, fd: int) -> None:
        inode = self.fds[fd][0]
        self._op("fsync dir" if inode is None else "fsync")
        if inode is None:
            self.durable = dict(self.names)
        else:
            inode.synced = bytes(inode.data)

    def truncate(self, fd: int, size: int) -> None:
        self._op(f"truncate {size}")
        del self._file(fd).data[size:]

    def close(self, fd: int) -> None:
        if self.fds.pop(fd, None) is None:
            raise OSError(errno.EBADF, "bad file descriptor")

    def rename(self, src: str, dst: str) -> None:
        self._op(f"rename {self._name(src)} {self._name(dst)}")
        self.names[self._name(dst)] = self.names.pop(self._name(src))

    def remove(self, path: str) -> None:
        self._op(f"remove {self._name(path)}")
        if self.names.pop(self._name(path), None) is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)

    def listdir(self, path: str) -> list[str]:
        assert path == self.root
        return list(self.names)

    def mkdir(self, path: str) -> None:
        raise AssertionError(f"unexpected mkdir {path}")

    def isdir(self, path: str) -> bool:
        return path == self.root

    def lock(self, fd: int) -> None:
        pass


ROOT = "/sim/data"
# Small segments: the call rolls one and compaction deletes some. One big
# segment: no roll, whose directory fsync could hide a missing one.
SEGMENT_SIZES = [200, 1 << 20]


def _crash_everywhere(
    setup: Callable[[Storage], None], act: Callable[[Storage], None], segment_bytes: int
) -> tuple[list[str], list[tuple[int, bool, DurableState, bytes | None]]]:
    """Run setup then act on a SimFs, crashing before each operation of act in turn
    (and once not at all); reopen each crashed directory both ways."""
    fs = SimFs(ROOT)
    s = Storage.open(ROOT, fs=fs, metadata=META, segment_bytes=segment_bytes)
    setup(s)
    start = len(fs.ops)
    act(s)
    ops = fs.ops[start:]
    s.close()
    seen = []
    for k in range(len(ops) + 1):
        fs = SimFs(ROOT)
        s = Storage.open(ROOT, fs=fs, metadata=META, segment_bytes=segment_bytes)
        setup(s)
        fs.crash_at = len(fs.ops) + k
        try:
            act(s)
        except Crash:
            assert k < len(ops)
            with pytest.raises(StorageFailure):  # the crashed object is fail-stopped
                s.recovered()
        else:
            assert k == len(ops)
        s.close()
        for power_loss in (False, True):
            after = fs.after_crash(power_loss)
            with Storage.open(ROOT, fs=after, metadata=META, segment_bytes=segment_bytes) as r:
                durable = r.recovered().durable
                data = None if durable.snapshot is None else b"".join(r.iter_snapshot(64))
                snaps = sorted(n for n in after.names if not n.endswith(".wal"))
                assert snaps == ([snap_name(durable.snapshot)] if durable.snapshot else []), k
            # Reopening again changes nothing: recovery is idempotent.
            with Storage.open(ROOT, fs=after, metadata=META, segment_bytes=segment_bytes) as r:
                assert r.recovered().durable == durable
            seen.append((k, power_loss, durable, data))
    return ops, seen


def _old_or_new(
    seen: list[tuple[int, bool, DurableState, bytes | None]],
    old: tuple[DurableState, bytes | None],
    new: tuple[DurableState, bytes | None],
    ops: list[str],
) -> None:
    """Every crash recovers exactly the old state or the new one: the call is atomic,
    nothing acknowledged before it is lost, and the hard state never goes back."""
    for k, power_loss, durable, data in seen:
        where = f"crash before op {k} ({ops[k] if k < len(ops) else 'none'}), {power_loss=}"
        assert (durable, data) in (old, new), where
        assert durable.hard_state.term >= old[0].hard_state.term, where
    # Both outcomes happen: the crash points really straddle the commit point.
    assert (seen[0][2], seen[0][3]) == old
    assert (seen[-1][2], seen[-1][3]) == new and seen[-1][:2] == (len(ops), True)


def in_order(ops: list[str], *patterns: str) -> None:
    """Each pattern (a regular expression) matches an operation of ``ops``, in this order."""
    at = 0
    for pattern in patterns:
        at = next((i for i in range(at, len(ops)) if re.fullmatch(pattern, ops[i])), -1) + 1
        assert at, f"{pattern!r} missing or out of order in {ops}"


def header_bytes(meta: SnapshotMeta) -> int:
    # magic, version, index, term, size, data crc, membership length, ..., header crc
    return 8 + 1 + 8 + 8 + 8 + 4 + 4 + len(meta.membership.encode()) + 4


CRASH_LOG = log_of(24, term_every=6)


def _crash_setup(s: Storage) -> None:
    write_each(s, CRASH_LOG[:12])
    s.save_snapshot(snap(5, 1), [b"old snapshot"])
    write_each(s, CRASH_LOG[12:])


@pytest.mark.parametrize("segment_bytes", SEGMENT_SIZES)
def test_a_crash_anywhere_in_save_snapshot_leaves_the_old_or_the_new_state(
    segment_bytes: int,
) -> None:
    meta = snap(20, 4)
    ops, seen = _crash_everywhere(
        _crash_setup, lambda s: s.save_snapshot(meta, pieces(DATA, 200)), segment_bytes
    )
    name, head = snap_name(meta), header_bytes(meta)
    # Rule 7's file protocol, then the record, then the deletions (Rule 8).
    in_order(
        ops,
        f"create {name}.tmp",
        *[f"write {n}" for n in (head, 200, 200, 200, 168)],
        f"pwrite {head}@0",
        "fsync",
        f"rename {name}.tmp {name}",
        "fsync dir",
        r"write \d+",  # the SNAPSHOT record
        "fsync",
        f"remove {snap_name(snap(5, 1))}",
    )
    rolled = any(re.fullmatch(r"create \w+\.wal", op) for op in ops)
    assert rolled == (segment_bytes < 1000)
    if rolled:  # compaction deleted segments, oldest first, each durably
        in_order(ops, r"remove \w+\.wal", "fsync dir", r"remove \w+\.wal", "fsync dir")
    old = model_of(CRASH_LOG)
    old.land(snap(5, 1))
    new = old.copy()
    new.land(meta)
    _old_or_new(seen, (old.durable(), b"old snapshot"), (new.durable(), DATA), ops)


@pytest.mark.parametrize("segment_bytes", SEGMENT_SIZES)
def test_a_crash_anywhere_in_installing_the_last_chunk_leaves_the_old_or_the_new_state(
    segment_bytes: int,
) -> None:
    meta = snap(40, 6, Membership(("a", "b", "c", "d")))
    follow = Persist(0, HardState(6, "c"), None, 41, (E(6, b"next"),))
    ps = chunk_persists(100, meta, DATA, 300, follow)

    def setup(s: Storage) -> None:
        _crash_setup(s)
        s.write(ps[:1])
        s.write(ps[1:2])  # two chunks received, in two batches

    ops, seen = _crash_everywhere(setup, lambda s: s.write(ps[2:]), segment_bytes)
    name = snap_name(meta)
    in_order(
        ops,
        f"write {len(DATA) - 600}",  # the last chunk's data
        f"pwrite {header_bytes(meta)}@0",
        "fsync",
        f"rename incoming.snap.tmp {name}",
        "fsync dir",
        r"write \d+",  # the Persist's group: SNAPSHOT ENTRY HARD_STATE COMMIT
        "fsync",
        f"remove {snap_name(snap(5, 1))}",
    )
    old = model_of(CRASH_LOG)
    old.land(snap(5, 1))
    new = old.copy()
    new.apply(ps[-1])
    assert new.durable() == DurableState(HardState(6, "c"), (E(6, b"next"),), meta)
    _old_or_new(seen, (old.durable(), b"old snapshot"), (new.durable(), DATA), ops)


# ---------------------------------------------------------------- disk errors


@pytest.mark.parametrize(
    ("method", "n"),
    [("fsync", 1), ("fsync", 2), ("fsync", 3), ("write", 1), ("write", 3), ("rename", 1)],
)
def test_a_disk_error_in_save_snapshot_fails_stop(tmp_path: Path, method: str, n: int) -> None:
    """EIO on any fsync of save_snapshot (file, directory, log): StorageFailure, and
    the object refuses every later call without touching the disk (Rule 5)."""
    fs = FaultyFs()
    s = Storage.open(tmp_path, fs=fs)
    s.write(LOG)
    fs.arm(method, errno.EIO, n)
    with pytest.raises(StorageFailure) as info:
        s.save_snapshot(snap(6, 2), pieces(DATA, 300))
    assert info.value.errno == errno.EIO
    assert isinstance(info.value.__cause__, OSError)
    fs.calls.clear()
    for call in (
        lambda: s.save_snapshot(snap(6, 2), [b"x"]),
        lambda: s.write(LOG[:1]),
        s.recovered,
        s.snapshot_meta,
        lambda: s.read_snapshot(6, 0, 1),
        s.iter_snapshot,
    ):
        with pytest.raises(StorageFailure):
            call()
    assert fs.calls == Counter()
    s.close()
    new = model_of(LOG)
    new.land(snap(6, 2))
    assert reopened(tmp_path) in ((model_of(LOG).durable(), None), (new.durable(), DATA))


def test_a_disk_error_writing_a_chunk_fails_stop(tmp_path: Path) -> None:
    fs = FaultyFs()
    s = Storage.open(tmp_path, fs=fs)
    s.write([*LOG, Persist(20, HardState(7), None, 1, ())])
    ps = chunk_persists(30, snap(40, 7), DATA, 100)
    s.write(ps[:2])
    fs.arm("write", errno.ENOSPC)
    with pytest.raises(StorageFailure, match="disk is full"):
        s.write(ps[2:4])
    with pytest.raises(StorageFailure):
        s.write(ps[2:])
    s.close()
    assert reopened(tmp_path)[1] is None


def test_save_snapshot_syncs_the_file_then_the_directory_then_the_log(tmp_path: Path) -> None:
    fs = FaultyFs()
    with Storage.open(tmp_path, fs=fs) as s:
        s.write(LOG)
        fs.calls.clear()
        s.save_snapshot(snap(6, 2), pieces(DATA, 300))
        assert fs.calls["fsync"] == 3 and fs.calls["rename"] == 1
        fs.calls.clear()
        # Chunks before the last are not synced; the last one is, like a save.
        ps = chunk_persists(20, snap(9, 3), DATA, 300)
        s.write(ps[:2])
        assert fs.calls["fsync"] == 0
        s.write(ps[2:])
        assert fs.calls["fsync"] == 3


# ---------------------------------------------------------------- the model, at random


class SnapshotMachine(RuleBasedStateMachine):
    """Random appends, suffix replacements, votes, saved and installed snapshots,
    reopens, on small segments: recovery always equals the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="graft-snapshots-"))
        self.storage: Storage | None = None
        self.model = SnapModel()
        self.data: bytes | None = None
        self.seq = 0
        self.segment_bytes = 0

    @initialize(segment_bytes=st.sampled_from([1, 150, 1 << 20]))
    def open_storage(self, segment_bytes: int) -> None:
        self.segment_bytes = segment_bytes
        self.storage = Storage.open(self.dir, fsync=False, segment_bytes=segment_bytes)

    def teardown(self) -> None:
        if self.storage is not None:
            self.storage.close()
        shutil.rmtree(self.dir)

    def write(self, ps: list[Persist]) -> None:
        assert self.storage is not None
        self.storage.write(ps)
        for p in ps:
            self.model.apply(p)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def entries(self, data: st.DataObject, after: int, n: int, hard: int) -> tuple[Entry, ...]:
        low = self.model.term_at(after) if after else 0
        terms = sorted(data.draw(st.lists(st.integers(low, hard), min_size=n, max_size=n)))
        return tuple(E(t, data.draw(st.binary(max_size=12))) for t in terms)

    @rule(data=st.data(), n=st.integers(1, 4), new_term=st.booleans())
    def append(self, data: st.DataObject, n: int, new_term: bool) -> None:
        m = self.model
        hard = HardState(m.hard.term + 1) if new_term else None
        es = self.entries(data, m.last, n, (hard or m.hard).term)
        self.write([Persist(self.next_seq(), hard, None, m.last + 1, es)])

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data(), n=st.integers(0, 3))
    def replace_suffix(self, data: st.DataObject, n: int) -> None:
        """Raft §5.3, after the snapshot only."""
        m = self.model
        at = data.draw(st.integers(m.base + 1, m.last))
        hard = HardState(m.hard.term + 1)
        es = self.entries(data, at - 1, n, hard.term)
        self.write([Persist(self.next_seq(), hard, at, at, es)])

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data(), body=st.binary(max_size=300))
    def save_snapshot(self, data: st.DataObject, body: bytes) -> None:
        m = self.model
        index = data.draw(st.integers(m.base + 1, m.last))
        meta = snap(index, m.term_at(index))
        assert self.storage is not None
        self.storage.save_snapshot(meta, pieces(body, 64))
        m.land(meta)
        self.data = body
        self.check_compacted()

    @rule(
        data=st.data(),
        how=st.sampled_from(["match", "conflict", "beyond"]),
        body=st.binary(max_size=300),
        size=st.integers(1, 120),
        batches=st.integers(1, 3),
        follow=st.integers(0, 2),
    )
    def install_snapshot(
        self, data: st.DataObject, how: str, body: bytes, size: int, batches: int, follow: int
    ) -> None:
        """A leader's snapshot (Raft §7), in chunks over ``batches`` writes."""
        m = self.model
        term = m.hard.term + 1
        if how != "beyond" and m.entries:
            index = data.draw(st.integers(m.base + 1, m.last))
            meta = snap(index, m.term_at(index) + (how == "conflict"))
        else:
            meta = snap(m.last + data.draw(st.integers(1, 5)), term)
        after = Persist(0, HardState(term), None, meta.index + 1, (E(term),) * follow)
        ps = chunk_persists(self.seq + 1, meta, body, size, after)
        self.seq += len(ps)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(ps)), max_size=batches - 1)))
        for lo, hi in zip([0, *cuts], [*cuts, len(ps)], strict=True):
            self.write(ps[lo:hi])
        self.data = body
        self.check_compacted()

    @rule()
    def reopen(self) -> None:
        assert self.storage is not None
        self.storage.close()
        self.storage = Storage.open(self.dir, fsync=False, segment_bytes=self.segment_bytes)
        assert self.storage.recovered().durable == self.model.durable()
        names = [p.name for p in self.dir.iterdir() if not p.name.endswith(".wal")]
        assert names == ([snap_name(self.model.snapshot)] if self.model.snapshot else [])
        self.check_compacted()

    @invariant()
    def the_snapshot_is_the_model_s(self) -> None:
        if self.storage is None:
            return
        assert self.storage.snapshot_meta() == self.model.snapshot
        if self.model.snapshot is not None:
            assert b"".join(self.storage.iter_snapshot(100)) == self.data

    def check_compacted(self) -> None:
        """Rule 8: right after a snapshot lands (or an open), the oldest segment
        holds an entry after it, unless it is the only one."""
        segs = segments(self.dir)
        if self.model.snapshot is not None and len(segs) > 1:
            assert top_entry(segs[0]) > self.model.snapshot.index


TestSnapshotMachine = SnapshotMachine.TestCase
TestSnapshotMachine.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
