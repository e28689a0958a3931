"""graft_trio's write-ahead log: durability, torn tails, corruption, fail-stop.

Every test compares what :class:`Storage` recovers with :class:`Model`, the
Persist contract of ``graft_core._actions`` applied to a Python list (the
same semantics as ``graft_sim``'s in-memory storage). Tests that damage files
walk the records with :func:`frames`, which reads the documented frame format
on its own, so the format is checked too.

Most tests run with ``fsync=False`` for speed; the code path with fsync is
exercised by the fault-injection and group-commit tests through :class:`FaultyFs`.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import struct
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from graft_core import (
    Action,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Persist,
)
from graft_sim import LocalCluster
from graft_trio._storage import (
    Metadata,
    Storage,
    StorageCorruption,
    StorageError,
    StorageFailure,
    StorageMismatch,
    StorageUsageError,
    _OsFs,
)

META = Metadata("cluster-1", "a", ("a", "b", "c"))
SEG0 = "0000000000000000.wal"
COMMIT = 5

# ---------------------------------------------------------------- helpers


class Model:
    """The Persist contract on a list: truncate, store entries, store hard state."""

    def __init__(self, hard: HardState | None = None, entries: Iterable[Entry] = ()) -> None:
        self.hard = hard if hard is not None else HardState()
        self.entries = list(entries)

    def apply(self, p: Persist) -> None:
        if p.truncate_from is not None:
            del self.entries[p.truncate_from - 1 :]
        if p.entries:
            del self.entries[p.first_index - 1 :]
            self.entries.extend(p.entries)
        if p.hard_state is not None:
            self.hard = p.hard_state

    def emits_records(self, p: Persist) -> bool:
        """Whether ``p`` changes what is stored (else Storage writes nothing for it)."""
        cut = p.truncate_from
        return (
            bool(p.entries)
            or p.hard_state is not None
            or (cut is not None and cut <= len(self.entries))
        )

    def copy(self) -> Model:
        return Model(self.hard, self.entries)

    def durable(self) -> DurableState:
        return DurableState(self.hard, tuple(self.entries))


def model_of(persists: Iterable[Persist]) -> Model:
    m = Model()
    for p in persists:
        m.apply(p)
    return m


def frames(path: Path) -> list[tuple[int, int, int]]:
    """``(offset, end, type)`` of each record: ``[length u32][crc u32][type u8][payload]``."""
    data = path.read_bytes()
    out = []
    off = 0
    while off < len(data):
        length, crc = struct.unpack_from("<II", data, off)
        end = off + 8 + length
        assert zlib.crc32(data[off + 8 : end]) == crc
        out.append((off, end, data[off + 8]))
        off = end
    return out


def frame(body: bytes) -> bytes:
    """A well-formed frame (good length and CRC) around ``body`` = type + payload."""
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def recovered(d: Path, **kw: object) -> DurableState:
    with Storage.open(d, fsync=False, **kw) as s:  # type: ignore[arg-type]
        return s.recovered().durable


def E(term: int, data: bytes = b"", kind: EntryKind = EntryKind.NORMAL) -> Entry:
    return Entry(term, data, kind)


# A history with every kind of record: appends, a vote, a conflicting suffix
# truncated and replaced (Raft §5.3), a NOOP, a term change with entries.
HISTORY = (
    Persist(1, HardState(1, "a"), None, 1, (E(1, b"x"), E(1, b"y"))),
    Persist(2, None, None, 3, (E(1, b"z" * 40),)),
    Persist(3, HardState(2, None), 2, 2, (E(2, b"", EntryKind.NOOP), E(2, b"w"))),
    Persist(4, HardState(2, "b"), None, 1, ()),
    Persist(5, None, 3, 3, ()),
    Persist(6, HardState(3, "c"), None, 3, (E(3, b"v" * 7), E(3, b"u"))),
    Persist(7, None, None, 5, (E(3, b"t"),)),
    Persist(8, HardState(4, None), 5, 5, (E(4, b"s"),)),
)


def write_each(d: Path, persists: Sequence[Persist], **kw: object) -> list[int]:
    """Write each Persist in its own batch; ``ends[k]``: the last segment's size after k."""
    with Storage.open(d, fsync=False, **kw) as s:  # type: ignore[arg-type]
        sizes = [segments(d)[-1].stat().st_size]
        for p in persists:
            s.write([p])
            sizes.append(segments(d)[-1].stat().st_size)
    return sizes


class FaultyFs(_OsFs):
    """The real file system, counting calls, failing the chosen one.

    ``arm(method, err, n)`` makes the ``n``-th call of ``method`` from now on
    raise ``OSError(err)`` (or ``err`` itself, if an exception); ``space`` is how
    many more bytes ``write`` accepts before it writes short and then fails with
    ENOSPC, as a full disk does.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fail: tuple[str, int, int | BaseException] | None = None
        self.space: int | None = None

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.fail is not None and self.fail[0] == name:
            method, n, err = self.fail
            if n == 1:
                self.fail = None
                raise err if isinstance(err, BaseException) else OSError(err, os.strerror(err))
            self.fail = (method, n - 1, err)

    def arm(self, method: str, err: int | BaseException, n: int = 1) -> None:
        self.fail = (method, n, err)
        self.calls.clear()

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        self._call("open")
        return super().open(path, flags, mode)

    def read(self, fd: int, n: int) -> bytes:
        self._call("read")
        return super().read(fd, n)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._call("write")
        if self.space is not None:
            if self.space == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = data[: self.space]
            self.space -= len(data)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._call("fsync")
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._call("truncate")
        super().truncate(fd, size)

    def rename(self, src: str, dst: str) -> None:
        self._call("rename")
        super().rename(src, dst)

    def listdir(self, path: str) -> list[str]:
        self._call("listdir")
        return super().listdir(path)


# ---------------------------------------------------------------- round trip


def test_open_creates_missing_directories_and_starts_empty(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "data"
    with Storage.open(d, metadata=META) as s:
        r = s.recovered()
        assert r.durable == DurableState()
        assert r.metadata == META
        assert r.discarded_bytes == 0
    assert [p.name for p in d.iterdir()] == [SEG0]
    assert Storage.open(d).recovered().metadata == META


def test_round_trip_equals_the_model(tmp_path: Path) -> None:
    with Storage.open(tmp_path, metadata=META) as s:
        s.write(HISTORY[:3])
        s.write(HISTORY[3:])
    expected = model_of(HISTORY).durable()
    assert expected.entries[-1] == E(4, b"s")  # the history really truncates
    assert recovered(tmp_path) == expected
    # Reopening twice changes nothing (recovery is idempotent).
    before = snapshot(tmp_path)
    assert recovered(tmp_path) == expected
    assert snapshot(tmp_path) == before


def test_entries_at_first_index_replace_the_suffix_as_in_the_simulator(tmp_path: Path) -> None:
    """``first_index`` inside the log without ``truncate_from`` replaces from there on."""
    ps = [
        Persist(1, HardState(2), None, 1, (E(1), E(1), E(1))),
        Persist(2, None, None, 2, (E(2, b"new"),)),
    ]
    write_each(tmp_path, ps)
    assert recovered(tmp_path).entries == (E(1), E(2, b"new"))


def test_truncation_past_the_end_is_a_no_op_and_writes_nothing(tmp_path: Path) -> None:
    ends = write_each(tmp_path, [HISTORY[0], Persist(2, None, 9, 9, ())])
    assert ends[1] == ends[2]
    assert recovered(tmp_path) == model_of(HISTORY[:1]).durable()


def test_large_entries_round_trip(tmp_path: Path) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    ps = [Persist(1, HardState(1), None, 1, (E(1, big), E(1, big[::-1])))]
    write_each(tmp_path, ps)
    assert recovered(tmp_path) == model_of(ps).durable()


class StorageMachine(RuleBasedStateMachine):
    """Random Persist sequences, batches, reopens and crashes mid-batch vs the model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="graft-storage-"))
        self.storage: Storage | None = None
        self.durable = Model()  # what completed writes hold
        self.staged = Model()  # ... plus the batch being built
        self.batch: list[Persist] = []
        self.seq = 0
        self.segment_bytes = 0

    @initialize(segment_bytes=st.sampled_from([1, 200, 1 << 20]))
    def open_storage(self, segment_bytes: int) -> None:
        self.segment_bytes = segment_bytes
        self.storage = Storage.open(self.dir, fsync=False, segment_bytes=segment_bytes)

    def teardown(self) -> None:
        if self.storage is not None:
            self.storage.close()
        shutil.rmtree(self.dir)

    def add(self, p: Persist) -> None:
        self.batch.append(p)
        self.staged.apply(p)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def entries(self, data: st.DataObject, after: int, n: int) -> tuple[Entry, ...]:
        """``n`` entries whose terms follow entry ``after`` and stay <= the hard term."""
        low = self.staged.entries[after - 1].term if after else 0
        hi = self.staged.hard.term
        terms = sorted(data.draw(st.lists(st.integers(low, hi), min_size=n, max_size=n)))
        kinds = st.sampled_from(EntryKind)
        return tuple(E(t, data.draw(st.binary(max_size=24)), data.draw(kinds)) for t in terms)

    @rule(data=st.data(), n=st.integers(1, 4), new_term=st.booleans())
    def append(self, data: st.DataObject, n: int, new_term: bool) -> None:
        hard = None
        if new_term:
            hard = HardState(self.staged.hard.term + 1, None)
            self.staged.hard = hard  # so entries() may use the new term
        last = len(self.staged.entries)
        self.add(Persist(self.next_seq(), hard, None, last + 1, self.entries(data, last, n)))

    @precondition(lambda self: self.staged.entries)
    @rule(data=st.data(), n=st.integers(0, 3), explicit=st.booleans())
    def replace_suffix(self, data: st.DataObject, n: int, explicit: bool) -> None:
        """A follower deletes a conflicting suffix and appends the leader's (Raft §5.3)."""
        at = data.draw(st.integers(1, len(self.staged.entries)))
        hard = HardState(self.staged.hard.term + 1, None)
        self.staged.hard = hard
        es = self.entries(data, at - 1, n)
        # Without truncate_from, entries at ``at`` replace the suffix implicitly.
        cut = at if explicit or not es else None
        self.add(Persist(self.next_seq(), hard, cut, at, es))

    @rule(bump=st.booleans(), vote=st.sampled_from([None, "a", "b", "c"]))
    def hard_state(self, bump: bool, vote: str | None) -> None:
        old = self.staged.hard
        if not bump and old.voted_for is not None:
            vote = old.voted_for  # Raft §5.2: one vote per term
        self.add(Persist(self.next_seq(), HardState(old.term + bump, vote), None, 1, ()))

    @rule()
    def flush(self) -> None:
        assert self.storage is not None
        self.storage.write(self.batch)
        self.batch = []
        self.durable = self.staged.copy()

    @rule()
    def reopen(self) -> None:
        """A clean restart: the unwritten batch is lost, everything written is back."""
        assert self.storage is not None
        self.storage.close()
        self.batch = []
        self.staged = self.durable.copy()
        self.storage = Storage.open(self.dir, fsync=False, segment_bytes=self.segment_bytes)
        assert self.storage.recovered().durable == self.durable.durable()

    @precondition(lambda self: self.batch)
    @rule(data=st.data())
    def crash_mid_write(self, data: st.DataObject) -> None:
        """Write the batch, keep a random prefix of its bytes, recover."""
        assert self.storage is not None
        before = {p.name: p.stat().st_size for p in segments(self.dir)}
        self.storage.write(self.batch)
        self.storage.close()
        last = segments(self.dir)[-1]
        start, end = before.get(last.name, 0), last.stat().st_size
        cut = data.draw(st.integers(start, end), label="cut")
        with open(last, "r+b") as f:
            f.truncate(cut)
        # Expected: the Persists whose COMMIT record survived, in order.
        commits = [e for off, e, t in frames_upto(last, cut) if t == COMMIT and off >= start]
        model = self.durable.copy()
        for p in self.batch:
            if model.emits_records(p):
                if not commits:
                    break
                commits.pop(0)
            model.apply(p)
        good = max([start, *(e for _, e, t in frames_upto(last, cut) if t == COMMIT)])
        self.storage = Storage.open(self.dir, fsync=False, segment_bytes=self.segment_bytes)
        assert self.storage.recovered().durable == model.durable()
        assert last.stat().st_size == good  # the torn tail was cut off
        self.durable = model
        self.staged = model.copy()
        self.batch = []


def frames_upto(path: Path, cut: int) -> list[tuple[int, int, int]]:
    """The whole frames in the first ``cut`` bytes of ``path``."""
    data = path.read_bytes()[:cut]
    out = []
    off = 0
    while off + 9 <= len(data):
        (length,) = struct.unpack_from("<I", data, off)
        if off + 8 + length > len(data):
            break
        out.append((off, off + 8 + length, data[off + 8]))
        off += 8 + length
    return out


TestStorageMachine = StorageMachine.TestCase
TestStorageMachine.settings = settings(
    max_examples=250,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------- torn tails


def test_torn_tail_at_every_byte_of_the_last_three_persists(tmp_path: Path) -> None:
    """A crash mid-write leaves a prefix of the bytes: recovery keeps whole Persists."""
    d = tmp_path / "d"
    ends = write_each(d, HISTORY, metadata=META)
    seg = d / SEG0
    original = seg.read_bytes()
    assert len(frames(seg)) > 20 and len(set(ends[-4:])) == 4
    for cut in range(ends[-4], len(original) + 1):
        seg.write_bytes(original[:cut])
        done = max(k for k, end in enumerate(ends) if end <= cut)
        with Storage.open(d, fsync=False, metadata=META) as s:
            r = s.recovered()
            assert r.durable == model_of(HISTORY[:done]).durable(), cut
            assert r.discarded_bytes == cut - ends[done]
            assert seg.stat().st_size == ends[done]  # cut back
            # The log goes on from the cut as if the torn write never happened.
            s.write([HISTORY[done]] if done < len(HISTORY) else [])
        expected = model_of(HISTORY[: done + 1]).durable()
        assert recovered(d) == expected, cut


def test_checksum_mismatch_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    ends = write_each(tmp_path, HISTORY)
    seg = tmp_path / SEG0
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x40  # inside the last COMMIT record
    seg.write_bytes(bytes(data))
    assert recovered(tmp_path) == model_of(HISTORY[:-1]).durable()
    assert seg.stat().st_size == ends[-2]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_garbage_after_the_last_record_is_cut_off(tmp_path: Path, garbage: bytes) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    ends = write_each(d, HISTORY)
    seg = d / SEG0
    with open(seg, "ab") as f:
        f.write(garbage)
    with Storage.open(d, fsync=False) as s:
        assert s.recovered().durable == model_of(HISTORY).durable()
        assert s.recovered().discarded_bytes == len(garbage)
    assert seg.stat().st_size == ends[-1]


def test_a_zero_filled_tail_is_cut_off(tmp_path: Path) -> None:
    """Some file systems extend a file with zeros on a crash; a zero length is never valid."""
    ends = write_each(tmp_path, HISTORY)
    with open(tmp_path / SEG0, "ab") as f:
        f.write(bytes(8192))
    assert recovered(tmp_path) == model_of(HISTORY).durable()
    assert (tmp_path / SEG0).stat().st_size == ends[-1]


def test_a_stale_temporary_first_segment_is_removed(tmp_path: Path) -> None:
    """A crash while creating segment 0 leaves only its temporary file."""
    (tmp_path / (SEG0 + ".tmp")).write_bytes(b"\x01\x02")
    with Storage.open(tmp_path, fsync=False, metadata=META) as s:
        assert s.recovered().metadata == META
    assert sorted(p.name for p in tmp_path.iterdir()) == [SEG0]


# ---------------------------------------------------------------- corruption


def test_any_flipped_byte_in_a_record_followed_by_valid_ones_is_corruption(
    tmp_path: Path,
) -> None:
    """Rule 4: never drop a record that valid data follows; change nothing on disk."""
    write_each(tmp_path, HISTORY, metadata=META)
    seg = tmp_path / SEG0
    records = frames(seg)
    off, end, _ = records[len(records) // 2]
    original = seg.read_bytes()
    for i in range(off, end):
        damaged = bytearray(original)
        damaged[i] ^= 0xFF
        seg.write_bytes(bytes(damaged))
        with pytest.raises(StorageCorruption) as info:
            Storage.open(tmp_path, fsync=False, metadata=META)
        assert (info.value.path, info.value.offset) == (seg, off), i
        assert str(seg) in str(info.value) and f"offset {off}" in str(info.value)
        assert "empty data directory" in str(info.value)  # tells the operator what to do
        assert seg.read_bytes() == bytes(damaged)  # nothing was "repaired"
    seg.write_bytes(original)
    assert recovered(tmp_path) == model_of(HISTORY).durable()


def test_a_flipped_byte_anywhere_but_the_last_record_is_corruption(tmp_path: Path) -> None:
    """Rule 4 over the whole log: the only damage recovery may cut off silently is
    in the very last record (indistinguishable from a torn write, and never
    followed by anything); everywhere else it refuses, naming file and offset."""
    write_each(tmp_path, HISTORY, metadata=META)
    seg = tmp_path / SEG0
    original = seg.read_bytes()
    last_off = frames(seg)[-1][0]
    starts = [off for off, _, _ in frames(seg)]
    for i in range(len(original)):
        damaged = bytearray(original)
        damaged[i] ^= 0x5A
        seg.write_bytes(bytes(damaged))
        if i >= last_off:
            # The last COMMIT: the last Persist was torn, the rest is whole.
            assert recovered(tmp_path, metadata=META) == model_of(HISTORY[:-1]).durable(), i
            continue
        with pytest.raises(StorageCorruption) as info:
            Storage.open(tmp_path, fsync=False, metadata=META)
        assert info.value.path == seg and info.value.offset in starts, i
        assert info.value.offset <= i, i  # the damaged record or (length damage) its start
        assert seg.read_bytes() == bytes(damaged), i


def _tail(records: bytes) -> Callable[[Path], None]:
    def append(seg: Path) -> None:
        with open(seg, "ab") as f:
            f.write(records)

    return append


ENTRY = struct.Struct("<BQQB")
# Records with good CRCs and bad content, appended after HISTORY (9 entries
# deep at term 4): crash damage cannot produce them, so none is a torn tail.
BAD_TAILS = {
    "index gap": frame(ENTRY.pack(2, 9, 4, 0)) + frame(struct.pack("<BI", 5, 1)),
    "term after the hard state": frame(ENTRY.pack(2, 6, 5, 0)) + frame(struct.pack("<BI", 5, 1)),
    "term going back": frame(ENTRY.pack(2, 6, 3, 0)) + frame(struct.pack("<BI", 5, 1)),
    "hard state term going back": frame(struct.pack("<BQB", 4, 3, 0))
    + frame(struct.pack("<BI", 5, 1)),
    "second vote in a term": frame(struct.pack("<BQB", 4, 4, 1) + b"a")
    + frame(struct.pack("<BQB", 4, 4, 1) + b"b")
    + frame(struct.pack("<BI", 5, 2)),
    "unknown kind": frame(ENTRY.pack(2, 6, 4, 7)) + frame(struct.pack("<BI", 5, 1)),
    "unknown record type": frame(b"\x09abc"),
    "truncation outside the log": frame(struct.pack("<BQ", 3, 99)) + frame(b"\x05\x01\0\0\0"),
    "wrong COMMIT count": frame(struct.pack("<BQ", 3, 2)) + frame(struct.pack("<BI", 5, 3)),
    "METADATA after the start": frame(b"\x01" + bytes(12)),
    "bad length followed by a record": struct.pack("<II", 0xFFFFFFF0, 0) + frame(b"\x05\x01\0\0\0"),
}


@pytest.mark.parametrize("name", sorted(BAD_TAILS))
def test_records_that_break_invariants_are_corruption_not_torn(tmp_path: Path, name: str) -> None:
    write_each(tmp_path, HISTORY)
    seg = tmp_path / SEG0
    size = seg.stat().st_size
    _tail(BAD_TAILS[name])(seg)
    before = seg.read_bytes()
    with pytest.raises(StorageCorruption) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == seg and info.value.offset >= size
    assert seg.read_bytes() == before


def test_a_huge_length_alone_at_the_tail_is_torn(tmp_path: Path) -> None:
    """Lengths are bounded before slicing; one at the very end is a torn header."""
    write_each(tmp_path, HISTORY)
    _tail(struct.pack("<II", 0xFFFFFFF0, 0) + b"\x02")(tmp_path / SEG0)
    assert recovered(tmp_path) == model_of(HISTORY).durable()


# ---------------------------------------------------------------- segments


def test_segments_roll_and_recover_in_order(tmp_path: Path) -> None:
    ps = [Persist(1, HardState(1), None, 1, ())] + [
        Persist(i, None, None, i - 1, (E(1, b"%d" % i * 10),)) for i in range(2, 40)
    ]
    write_each(tmp_path, ps, segment_bytes=150)
    segs = segments(tmp_path)
    assert len(segs) > 5
    assert [p.name for p in segs] == [f"{i:016x}.wal" for i in range(len(segs))]
    assert all(p.stat().st_size >= 150 for p in segs[:-1])
    assert recovered(tmp_path, segment_bytes=150) == model_of(ps).durable()
    # Every segment ends on a Persist boundary: its last record is a COMMIT.
    assert all(frames(p)[-1][2] == COMMIT for p in segs)


def _rolled(tmp_path: Path) -> list[Path]:
    ps = [Persist(1, HardState(1), None, 1, ())] + [
        Persist(i, None, None, i - 1, (E(1, b"e"),)) for i in range(2, 12)
    ]
    write_each(tmp_path, ps, segment_bytes=100)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    return segs


def test_a_torn_record_in_a_segment_before_the_last_is_corruption(tmp_path: Path) -> None:
    """Only the last segment can have been mid-write at a crash."""
    segs = _rolled(tmp_path)
    data = bytearray(segs[1].read_bytes())
    data[-2] ^= 1  # last record of a middle segment: nothing valid after it there
    segs[1].write_bytes(bytes(data))
    with pytest.raises(StorageCorruption) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == segs[1]
    assert info.value.offset == frames_upto(segs[1], len(data))[-1][0]


def test_a_shortened_segment_before_the_last_is_corruption(tmp_path: Path) -> None:
    segs = _rolled(tmp_path)
    with open(segs[0], "r+b") as f:
        f.truncate(segs[0].stat().st_size - 1)
    with pytest.raises(StorageCorruption) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == segs[0]


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_missing_or_emptied_segment_is_corruption(tmp_path: Path, damage: str) -> None:
    segs = _rolled(tmp_path)
    if damage == "missing":
        segs[1].unlink()
    else:
        segs[1].write_bytes(b"")
    with pytest.raises(StorageCorruption) as info:
        Storage.open(tmp_path, fsync=False)
    assert info.value.path == segs[1]


# ---------------------------------------------------------------- metadata


def test_metadata_mismatch_is_refused(tmp_path: Path) -> None:
    Storage.open(tmp_path, metadata=META).close()
    other = Metadata("cluster-1", "b", ("a", "b", "c"))
    with pytest.raises(StorageMismatch) as info:
        Storage.open(tmp_path, metadata=other)
    assert (info.value.expected, info.value.found) == (other, META)
    with pytest.raises(StorageMismatch):
        Storage.open(tmp_path, metadata=Metadata("cluster-2", "a", ("a", "b", "c")))
    with Storage.open(tmp_path) as s:  # no expectation: accepted, and reported
        assert s.recovered().metadata == META


def test_a_directory_created_without_metadata_does_not_match_some(tmp_path: Path) -> None:
    Storage.open(tmp_path).close()
    with pytest.raises(StorageMismatch) as info:
        Storage.open(tmp_path, metadata=META)
    assert info.value.found is None


# ---------------------------------------------------------------- usage errors

BASE = (Persist(1, HardState(2, "a"), None, 1, (E(1), E(1), E(2))),)
BAD_PERSISTS: dict[str, tuple[object, str]] = {
    "gap": (Persist(2, None, None, 5, (E(2),)), "does not follow"),
    "term going back": (Persist(2, None, None, 4, (E(1),)), "predecessor"),
    "entry after the hard state's term": (Persist(2, None, None, 4, (E(3),)), "after the hard"),
    "hard state term going back": (Persist(2, HardState(1), None, 1, ()), "term 1 < 2"),
    "second vote in a term": (Persist(2, HardState(2, "b"), None, 1, ()), "vote changed"),
    "truncate_from 0": (Persist(2, None, 0, 1, ()), "truncate_from"),
    "not a Persist": (HardState(3), "expected a graft_core.Persist"),
    "data not bytes": (Persist(2, None, None, 4, (Entry(2, "text"),)), "bytes"),  # type: ignore[arg-type]
    "term too large": (Persist(2, HardState(1 << 64), None, 1, ()), "invalid term"),
}


@pytest.mark.parametrize("name", sorted(BAD_PERSISTS))
def test_a_persist_that_breaks_the_log_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str
) -> None:
    bad, reason = BAD_PERSISTS[name]
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(BASE)
        size = (tmp_path / SEG0).stat().st_size
        with pytest.raises(StorageUsageError, match=reason):
            s.write([bad])  # type: ignore[list-item]
        assert (tmp_path / SEG0).stat().st_size == size
        s.write([Persist(2, None, None, 4, (E(2),))])  # still usable
    assert recovered(tmp_path) == DurableState(HardState(2, "a"), (E(1), E(1), E(2), E(2)))


def test_a_refused_batch_leaves_no_trace(tmp_path: Path) -> None:
    """Validation is all-or-nothing: a valid Persist before a bad one is not kept."""
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(BASE)
        size = (tmp_path / SEG0).stat().st_size
        ok = Persist(2, HardState(3), None, 4, (E(3),))
        with pytest.raises(StorageUsageError):
            s.write([ok, Persist(3, None, None, 9, (E(3),))])
        assert (tmp_path / SEG0).stat().st_size == size
        # Valid only if ``ok`` left nothing behind: term 2 again, and index 4 next.
        with pytest.raises(StorageUsageError, match="does not follow"):
            s.write([Persist(4, None, None, 5, (E(2),))])
        s.write([Persist(5, HardState(2, "a"), None, 4, (E(2),))])
    assert recovered(tmp_path).entries == (E(1), E(1), E(2), E(2))


def test_calls_after_close_are_refused(tmp_path: Path) -> None:
    s = Storage.open(tmp_path, fsync=False)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageUsageError):
        s.write(BASE)
    with pytest.raises(StorageUsageError):
        s.recovered()


def test_a_second_storage_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path, fsync=False), pytest.raises(StorageFailure, match="in use"):
        Storage.open(tmp_path, fsync=False)
    Storage.open(tmp_path, fsync=False).close()


# ---------------------------------------------------------------- disk errors and fsync


def test_a_batch_is_one_write_and_one_fsync(tmp_path: Path) -> None:
    """Group commit (Rule 3): N Persists, one fsync; no reads, so O(batch) not O(log)."""
    fs = FaultyFs()
    with Storage.open(tmp_path, metadata=META, fs=fs) as s:
        s.write(HISTORY[:2])
        fs.calls.clear()
        s.write(HISTORY[2:])
        assert fs.calls == Counter({"write": 1, "fsync": 1})
        fs.calls.clear()
        s.write([])
        s.write([Persist(9, None, 99, 99, ())])  # changes nothing: nothing to sync
        assert fs.calls == Counter()
    assert recovered(tmp_path) == model_of(HISTORY).durable()


def test_without_fsync_nothing_is_synced(tmp_path: Path) -> None:
    fs = FaultyFs()
    with Storage.open(tmp_path, fs=fs, fsync=False) as s:
        s.write(HISTORY)
    assert fs.calls["fsync"] == 0


def test_rolling_syncs_the_new_segment_and_the_directory(tmp_path: Path) -> None:
    fs = FaultyFs()
    with Storage.open(tmp_path, fs=fs, segment_bytes=50) as s:
        s.write(HISTORY[:1])
        fs.calls.clear()
        s.write(HISTORY[1:2])
        assert fs.calls == Counter({"open": 1, "fsync": 3, "write": 1})
    assert len(segments(tmp_path)) == 2


def test_open_syncs_what_it_recovered(tmp_path: Path) -> None:
    """Recovered bytes may be only in the page cache; sync them before acting on them."""
    write_each(tmp_path, HISTORY, segment_bytes=100)
    fs = FaultyFs()
    Storage.open(tmp_path, fs=fs, segment_bytes=100).close()
    assert fs.calls["fsync"] == len(segments(tmp_path)) + 1  # every segment, the directory


FAULTS = [
    ("write", errno.EIO, None),
    ("fsync", errno.EIO, None),
    ("write", errno.ENOSPC, None),
    ("write", errno.ENOSPC, 50),  # a short write, then the disk is full
    ("open", errno.EIO, None),  # the new segment of a roll
]


@pytest.mark.parametrize(("method", "err", "space"), FAULTS)
def test_a_disk_error_fails_stop_and_recovery_keeps_whole_persists(
    tmp_path: Path, method: str, err: int, space: int | None
) -> None:
    fs = FaultyFs()
    s = Storage.open(tmp_path, fs=fs, segment_bytes=200 if method == "open" else 1 << 20)
    s.write(HISTORY[:4])
    if space is None:
        fs.arm(method, err)
    else:
        fs.calls.clear()
        fs.space = space
    with pytest.raises(StorageFailure) as info:
        s.write(HISTORY[4:])
    assert info.value.errno == err
    assert isinstance(info.value.__cause__, OSError)
    if space is not None:
        assert fs.calls["write"] == 2  # the short write really happened
    # Fail-stop: every later call refuses, without touching the disk (a failed
    # fsync is never retried as if it had worked).
    fs.calls.clear()
    for call in (lambda: s.write(HISTORY[4:]), s.recovered, lambda: s.write([])):
        with pytest.raises(StorageFailure):
            call()
    assert fs.calls == Counter()
    s.close()
    with Storage.open(tmp_path, fsync=False) as healthy:
        got = healthy.recovered().durable
    # Rule 2: whole Persists, in order -- before the batch, all of it, or a
    # prefix of its Persists (never part of one).
    prefixes = [model_of(HISTORY[:k]).durable() for k in range(4, len(HISTORY) + 1)]
    assert got in prefixes
    if method == "write":
        assert got != prefixes[-1]  # the batch never fully reached the file
        if space is None:
            assert got == prefixes[0]


def test_an_interrupted_write_also_fails_stop(tmp_path: Path) -> None:
    """Interrupted between write and fsync, the Storage no longer knows what the
    file holds; appending more could corrupt it, so it refuses."""
    fs = FaultyFs()
    s = Storage.open(tmp_path, fs=fs)
    s.write(HISTORY[:4])
    fs.arm("fsync", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        s.write(HISTORY[4:])
    with pytest.raises(StorageFailure):
        s.write(HISTORY[4:])
    s.close()
    assert recovered(tmp_path) == model_of(HISTORY).durable()


def test_an_error_while_opening_is_a_storage_failure(tmp_path: Path) -> None:
    write_each(tmp_path, HISTORY)
    fs = FaultyFs()
    fs.arm("read", errno.EIO)
    with pytest.raises(StorageFailure) as info:
        Storage.open(tmp_path, fs=fs)
    assert info.value.errno == errno.EIO
    # The lock was released: a healthy open works.
    assert recovered(tmp_path) == model_of(HISTORY).durable()


def test_errors_form_one_hierarchy() -> None:
    from graft_core import GraftError

    for cls in (StorageCorruption, StorageFailure, StorageMismatch, StorageUsageError):
        assert issubclass(cls, StorageError) and issubclass(cls, GraftError)


# ---------------------------------------------------------------- the real core


def test_a_cluster_s_persists_round_trip_through_crashes_and_a_truncation(
    tmp_path: Path,
) -> None:
    """The core's own Persist stream (votes, terms, a §5.3 truncation) passes
    write()'s checks, and every restart recovers what the simulator's storage holds."""
    ids = ("a", "b", "c")
    disks = {n: Storage.open(tmp_path / n, fsync=False) for n in ids}
    truncations: list[str] = []

    def capture(nid: str, action: Action) -> None:
        if isinstance(action, Persist):
            disks[nid].write([action])
            if action.truncate_from is not None:
                truncations.append(nid)

    def restart(nid: str) -> None:
        disks[nid].close()
        disks[nid] = Storage.open(tmp_path / nid, fsync=False)
        assert disks[nid].recovered().durable == c.storage[nid].durable()
        c.restart(nid)

    c = LocalCluster(ids, on_action=capture, seed=3)
    old = c.elect()
    for i in range(5):
        c.propose(old, b"committed %d" % i)
    c.deliver_all()
    # The leader, cut off, appends entries nobody else will ever hold ...
    c.partition([old], [n for n in ids if n != old])
    for i in range(3):
        c.propose(old, b"doomed %d" % i)
    c.deliver_all()
    c.crash(old)
    new = c.elect()
    for i in range(3):
        c.propose(new, b"new %d" % i)
    c.deliver_all()
    # ... which it must delete when it comes back (Raft §5.3).
    c.heal()
    restart(old)
    c.run(c.now + 5000)
    assert old in truncations
    for n in ids:
        c.crash(n)
        restart(n)
    for s in disks.values():
        s.close()


def test_random_reopen_orders_agree(tmp_path: Path) -> None:
    """Reopening after every write (any write boundary is a clean restart point)."""
    rng = random.Random(7)
    model = Model()
    persists: list[Persist] = []
    for seq in range(1, 60):
        term = model.hard.term + (rng.random() < 0.2)
        es = tuple(E(term, rng.randbytes(rng.randrange(20))) for _ in range(rng.randrange(3)))
        cut = (
            rng.randrange(1, len(model.entries) + 1)
            if model.entries and rng.random() < 0.2
            else None
        )
        first = cut or len(model.entries) + 1
        p = Persist(seq, HardState(term, None) if term > model.hard.term else None, cut, first, es)
        model.apply(p)
        persists.append(p)
        with Storage.open(tmp_path, fsync=False, segment_bytes=300) as s:
            s.write([p])
        assert recovered(tmp_path, segment_bytes=300) == model.durable()
