"""Durable storage for one graft node: a write-ahead log and snapshots in a data directory.

Synchronous file I/O; the trio shell calls it from a worker thread, one call at
a time (a :class:`Storage` is not thread-safe).

Theory of operation
-------------------
The directory holds numbered *segment* files, ``0000000000000000.wal``,
``0000000000000001.wal``, ... Each is a sequence of framed records; replaying
every record of every segment in order rebuilds the node's
:class:`~graft_core.DurableState`, the way etcd's WAL does it. Next to them
lives at most one *snapshot* file, ``<index>-<term>.snap`` (both hex): the
state machine at a log index, which replaces every entry up to that index
(Raft §7). A ``SNAPSHOT`` record in the log names it.

Rule 1: **append-only.** Every change is a record appended to the newest
segment. Deleting a conflicting suffix of the log (Raft §5.3) is itself a
``TRUNCATE`` record ("entries >= i are void"), so bytes that an fsync made
durable are never rewritten. The exceptions: recovery cutting off a torn
tail, which by definition was never acknowledged, and compaction deleting
whole segments that a snapshot made unnecessary (Rule 8).

Rule 2: **a Persist is atomic.** One :class:`~graft_core.Persist` becomes
``[SNAPSHOT] [TRUNCATE] ENTRY* [HARD_STATE] COMMIT`` (the order in which the
Persist contract applies its parts); replay applies its records only when it
reaches the ``COMMIT``. So what recovery returns is always exactly the effect
of the first *k* Persists ever written, for some *k* at least the number
acknowledged -- what :class:`~graft_core.Restart` allows. Without it a crash
could keep a Persist's entries of term T+1 and lose its hard state of term T,
a state ``graft_core.start`` rejects.

Rule 3: **one write() is one group commit.** All records of a batch of
Persists are appended with one buffer and made durable with one fsync; only
after ``write`` returns may the shell step ``PersistCompleted`` for the last
one (ordering contract in ``graft_core._actions``). A batch never spans two
segments: the log rolls to a new segment *before* a batch when the current one
holds ``segment_bytes`` or more.

Rule 4: **torn tail vs corruption.** A crash in the middle of a batch leaves a
partial record (or an incomplete Persist) at the very end of the last segment;
recovery cuts the file back to the end of the last complete Persist and
fsyncs it. A bad record that is followed by *any* valid record, or that sits
in a segment other than the last, is not a crash artefact -- an earlier fsync
said those bytes were durable -- so recovery raises
:class:`StorageCorruption` and changes nothing: silently dropping it could make
the node forget a vote or an acknowledged entry (Raft §5.2, §5.4). The same
holds for the snapshot file the log names: it was fsynced before its record
was written, so a missing, short or damaged one is corruption, never ignored.

Rule 5: **fail-stop.** Any ``OSError`` while writing raises
:class:`StorageFailure` and the object refuses every later call. A failed
fsync is never retried: Linux may already have dropped the dirty pages and
will report the next fsync as a success ("fsyncgate", PostgreSQL 2018).

Rule 6: **records from disk are untrusted.** Lengths are bounded before
anything is sliced, every record is checked by CRC, and replay re-checks the
Raft invariants -- contiguous indexes starting right after the snapshot,
non-decreasing terms, hard state term at least every entry term and the
snapshot's term, at most one vote per term, snapshots only moving forward --
raising :class:`StorageCorruption` on a violation. ``write`` checks the same
invariants on the way in (:class:`StorageUsageError`), so a bug cannot write a
log that will not reopen.

Rule 7: **a snapshot file is durable before the log names it.** It is
written to a temporary file (streamed, never whole in memory), fsynced,
renamed to its final name and the directory fsynced; only then is its
``SNAPSHOT`` record appended, inside the atomic group of the Persist (or
:meth:`Storage.save_snapshot` call) that installs it. When replay commits a
``SNAPSHOT`` record it applies Raft §7: if the log holds the entry at the
snapshot's index with the snapshot's term, the entries after it stay;
otherwise every entry after it is void too. Recovery uses the latest committed
``SNAPSHOT``; any other snapshot file, and any temporary file, is a leftover
of a crash or of an older snapshot and is deleted once recovery has decided.

Rule 8: **checkpoints make compaction a file deletion.** Every segment but
segment 0 begins with a checkpoint: ``[METADATA] CHECKPOINT``, the hard state,
the snapshot's metadata and the term of every entry after it -- everything of
the log but the entries' data. So replay can start at any segment that
begins with one (replay checks it against the log before it otherwise;
segments written before checkpoints existed replay as before, but never
start a replay, so compaction keeps them and the segments before). Once
a snapshot lands, every segment before the first one holding an entry after
the snapshot's index is deleted, oldest first, the newest segment always
kept: the entries they hold are all in the snapshot, and the checkpoint plus
later records hold the rest. Replay reports an entry after the snapshot whose
record is gone as corruption. A checkpoint goes to disk with the segment's
first batch, in its one write and fsync; if that batch is torn, recovery cuts
the segment back to empty and the next write begins it with a new one.

Record format (all integers little-endian)::

    frame       = length:u32  crc:u32  type:u8  payload
                  length = 1 + len(payload); crc = zlib.crc32(type + payload)
    METADATA  1 = str cluster_id, str node_id, u32 n, n * str voter
                  (first record of segment 0 and, if it has one, of every later one)
    ENTRY     2 = index:u64  term:u64  kind:u8  data (the rest)
    TRUNCATE  3 = index:u64                     (entries >= index are void)
    HARD_STATE 4 = term:u64  has_vote:u8  voted_for (UTF-8, the rest)
    COMMIT    5 = records:u32                   (records in this Persist)
    SNAPSHOT  6 = index:u64  term:u64  membership (Membership.encode(), the rest)
    CHECKPOINT 7 = term:u64  has_vote:u8  str voted_for
                  snap_index:u64  snap_term:u64  bytes membership  (snap_index 0: none)
                  n:u32  n * (last_index:u64  term:u64)
                  (the entries after the snapshot as runs of one term: the run
                  ends at last_index; first after METADATA in a segment > 0)
    str         = length:u32  UTF-8 bytes
    bytes       = length:u32  bytes

Snapshot file format (``<index:016x>-<term:016x>.snap``)::

    header      = "GRAFTSNP"  version:u8 (1)  index:u64  term:u64  size:u64
                  data_crc:u32  bytes membership  header_crc:u32
                  header_crc = zlib.crc32(everything before it)
    data        = size bytes, data_crc = zlib.crc32(data)
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import struct
import sys
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import attrs

from graft_core import (
    ConfigError,
    DurableState,
    Entry,
    EntryKind,
    GraftError,
    HardState,
    Membership,
    Persist,
    SnapshotChunk,
    SnapshotMeta,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_ENTRY_BYTES",
    "Metadata",
    "RecoveredState",
    "SnapshotReader",
    "Storage",
    "StorageCorruption",
    "StorageError",
    "StorageFailure",
    "StorageMismatch",
    "StorageUsageError",
]

DEFAULT_SEGMENT_BYTES = 64 << 20
"""Roll to a new segment once the current one holds this many bytes (etcd's size)."""

_FRAME = struct.Struct("<II")  # length of type + payload, crc32 of type + payload
_HEADER = _FRAME.size
# The largest ``length`` accepted from disk: checked before slicing (Rule 6).
_MAX_BODY = (64 << 20) + 1024

_METADATA = 1
_ENTRY = 2
_TRUNCATE = 3
_HARD_STATE = 4
_COMMIT = 5
_SNAPSHOT = 6
_CHECKPOINT = 7

_ENTRY_HEAD = struct.Struct("<BQQB")  # type, index, term, kind
_TRUNCATE_BODY = struct.Struct("<BQ")
_HARD_HEAD = struct.Struct("<BQB")  # type, term, has_vote
_COMMIT_BODY = struct.Struct("<BI")
_SNAPSHOT_HEAD = struct.Struct("<BQQ")  # type, index, term
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RUN = struct.Struct("<QQ")  # last index of a run of entries, their term
_U64_MAX = (1 << 64) - 1

MAX_ENTRY_BYTES = _MAX_BODY - _ENTRY_HEAD.size
"""The largest entry payload :meth:`Storage.write` accepts."""

# An encoded membership lives in a WAL record and in a snapshot header.
_MAX_MEMBERSHIP_BYTES = 1 << 20
# A checkpoint is one record: this many runs of one term fit (a log would
# need millions of elections without a snapshot to reach it).
_MAX_RUNS = (_MAX_BODY - 64 - 2 * _MAX_MEMBERSHIP_BYTES) // _RUN.size

_KINDS = {k.value: k for k in EntryKind}
_SEGMENT = re.compile(r"^([0-9a-f]{16})\.wal$")
_TMP_SUFFIX = ".tmp"
_SNAP_SUFFIX = ".snap"
# Where a snapshot received in chunks grows until its last chunk: one name, as
# offset 0 always starts over (graft_core.SnapshotChunk).
_INCOMING = "incoming" + _SNAP_SUFFIX + _TMP_SUFFIX
_SNAP_MAGIC = b"GRAFTSNP"
_SNAP_VERSION = 1
_SNAP_HEAD = struct.Struct("<8sBQQQII")  # magic, version, index, term, size, crc, len(membership)
_READ_BYTES = 1 << 20

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

_RECOVERY_ADVICE = (
    "Do not edit or truncate the file by hand. To recover: stop this node, move the "
    "data directory aside (keep it for diagnosis), and start the node with an empty "
    "data directory so that it rejoins and catches up from its peers. Do this for "
    "one node at a time, and only while the rest of the cluster has a working "
    "majority: the wiped node has forgotten its log and its vote."
)


# ---------------------------------------------------------------- errors


class StorageError(GraftError):
    """Base class of every error :class:`Storage` raises."""


class StorageCorruption(StorageError):
    """The data on disk is damaged in a way a crash cannot explain (Rule 4).

    Attributes:
        path: the segment or snapshot file.
        offset: the byte offset of the first bad record (or header, or data) in it.
        reason: what is wrong there.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"graft storage is corrupt in {path} at byte offset {offset}: {reason}. "
            + _RECOVERY_ADVICE
        )


class StorageFailure(StorageError):
    """The operating system reported an I/O error; the Storage is now unusable.

    (Except after a failed *read* of the snapshot: reading changes nothing, so
    the Storage stays usable; see :meth:`Storage.read_snapshot`.)

    Attributes:
        errno: the ``errno`` of the underlying ``OSError`` (``None`` if unknown).
        path: the file or directory involved, if known.

    The ``OSError`` is the ``__cause__``.
    """

    def __init__(self, message: str, *, errno: int | None, path: Path | None) -> None:
        self.errno = errno
        self.path = path
        super().__init__(message)


class StorageMismatch(StorageError):
    """The data directory belongs to another node or cluster.

    Attributes:
        expected: the metadata the caller passed to :meth:`Storage.open`.
        found: the metadata stored in the directory (``None`` if it has none).
    """

    def __init__(self, path: Path, expected: Metadata, found: Metadata | None) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            f"data directory {path} holds metadata {found!r}, not {expected!r}; "
            "refusing to run a node on another node's log"
        )


class StorageUsageError(StorageError, ValueError):
    """The caller's mistake: a Persist that breaks the log's invariants, a closed
    Storage, a bad argument. Nothing was written; the Storage is still usable.
    """


class _Invalid(Exception):
    # Internal: a record (from write() or from disk) breaks an invariant.
    # Converted to StorageUsageError or StorageCorruption by the caller.
    pass


# ---------------------------------------------------------------- values


@attrs.frozen(slots=True)
class Metadata:
    """Who a data directory belongs to; written once, when it is created.

    Args:
        cluster_id: identifies the cluster.
        node_id: this node's id.
        voters: the cluster's voter ids.

    Raises:
        ConfigError: if a field has the wrong type.
    """

    cluster_id: str
    node_id: str
    voters: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if type(self.cluster_id) is not str:
            raise ConfigError(f"cluster_id must be a str, got {self.cluster_id!r}")
        if type(self.node_id) is not str or not self.node_id:
            raise ConfigError(f"node_id must be a non-empty str, got {self.node_id!r}")
        if type(self.voters) is not tuple or not all(type(v) is str for v in self.voters):
            raise ConfigError(f"voters must be a tuple of str, got {self.voters!r}")


@attrs.frozen(slots=True)
class RecoveredState:
    """What :meth:`Storage.open` read back from disk.

    Args:
        durable: hard state, the latest snapshot's metadata and the entries
            after it; hand it to :class:`~graft_core.Restart` (or
            ``graft_core.start``). Read the snapshot's data with
            :meth:`Storage.iter_snapshot`.
        metadata: the directory's metadata, ``None`` if it was created without.
        discarded_bytes: how many bytes of torn tail (an interrupted write)
            recovery cut off; worth a log line when non-zero.
    """

    durable: DurableState
    metadata: Metadata | None
    discarded_bytes: int = 0


# ---------------------------------------------------------------- file system


class _Fs(Protocol):
    """The file operations Storage uses; tests inject faults through it."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int: ...
    def read(self, fd: int, n: int) -> bytes: ...
    def pread(self, fd: int, n: int, offset: int) -> bytes: ...
    def write(self, fd: int, data: bytes | memoryview) -> int: ...
    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def truncate(self, fd: int, size: int) -> None: ...
    def close(self, fd: int) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def mkdir(self, path: str) -> None: ...
    def isdir(self, path: str) -> bool: ...
    def lock(self, fd: int) -> None: ...


class _OsFs:
    """The real, POSIX file system."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | _O_CLOEXEC, mode)

    def read(self, fd: int, n: int) -> bytes:
        return os.read(fd, n)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(fd, n, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if hasattr(os, "pwrite"):
            return os.pwrite(fd, data, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if sys.platform == "darwin":
            # macOS fsync() does not flush the drive's cache; F_FULLFSYNC does.
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        else:
            os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def lock(self, fd: int) -> None:
        # Two Storages on one directory would interleave their logs.
        if sys.platform != "win32":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---------------------------------------------------------------- invariants

# The terms of a stretch of the log as runs: run r holds the entries up to
# ends[r] (from the previous run's end + 1) and has term terms[r]. Terms are
# non-decreasing (Raft §5.3), so a log's terms take one run per term.
_Runs = list[tuple[int, int]]


class _Shape:
    """What validation needs to know of the log: its snapshot, every entry's term
    after it, the hard state.

    Entry terms are kept as runs, 16 bytes per term rather than 8 per entry,
    which is also what a checkpoint records (Rule 8). Changes are staged
    (``pbase``/``pbase_term``/``psnapshot``, ``keep``, ``extra``,
    ``pending_hard``) and become real on :meth:`commit`, so a batch that fails
    validation halfway leaves nothing behind.

    Invariant (committed): ``ends`` strictly increase from ``> base``;
    ``terms`` are ``>= base_term`` and strictly increase (adjacent runs of one
    term are merged), so two equal logs have equal runs.
    """

    __slots__ = (
        "base",
        "base_term",
        "ends",
        "extra",
        "hard",
        "keep",
        "pbase",
        "pbase_term",
        "pending_hard",
        "psnapshot",
        "snapshot",
        "terms",
    )

    def __init__(self) -> None:
        self.base = 0  # the snapshot's index: entries start at base + 1
        self.base_term = 0
        self.snapshot: SnapshotMeta | None = None
        self.ends: list[int] = []
        self.terms: list[int] = []
        self.hard = HardState()
        # Staged: the snapshot pbase; committed entries up to ``keep`` survive
        # (those after pbase, that is), followed by entries with terms ``extra``.
        self.pbase = 0
        self.pbase_term = 0
        self.psnapshot: SnapshotMeta | None = None
        self.keep = 0
        self.extra: list[int] = []
        self.pending_hard = self.hard

    @property
    def committed_last(self) -> int:
        return self.ends[-1] if self.ends else self.base

    @property
    def last_index(self) -> int:
        return self.keep + len(self.extra)

    def term_at(self, index: int) -> int:
        """The staged term of entry ``index``, for ``pbase <= index <= last_index``."""
        if index == self.pbase:
            return self.pbase_term
        if index <= self.keep:
            return self.terms[bisect_left(self.ends, index)]
        return self.extra[index - self.keep - 1]

    def runs(self) -> _Runs:
        """The committed entries' terms, as ``(last_index, term)`` runs."""
        return list(zip(self.ends, self.terms, strict=True))

    def truncate(self, index: int) -> None:
        last = self.last_index
        if not self.pbase < index <= last:
            inside = f" (entries up to {self.pbase} are in the snapshot)" if self.pbase else ""
            raise _Invalid(
                f"truncation at {index} outside the log {self.pbase + 1}..{last}{inside}"
            )
        if index - 1 <= self.keep:
            self.keep = index - 1
            self.extra.clear()
        else:
            del self.extra[index - 1 - self.keep :]

    def append(self, index: int, term: int) -> None:
        last = self.last_index
        if index != last + 1:
            raise _Invalid(f"entry {index} does not follow the last entry {last}")
        # Raft §5.3: a leader appends entries of its term after those it has.
        if last and term < self.term_at(last):
            what = "the snapshot's" if last == self.pbase else "its predecessor's"
            raise _Invalid(f"entry {index} has term {term} < {self.term_at(last)}, {what}")
        self.extra.append(term)

    def land(self, meta: SnapshotMeta) -> bool:
        """Stage snapshot ``meta`` as the log's new start; True if the entries
        after it survive."""
        index = meta.index
        if index <= self.pbase:
            raise _Invalid(f"snapshot at {index} is not after the current one at {self.pbase}")
        # Raft §7: "If existing log entry has same index and term as snapshot's
        # last included entry, retain log entries following it"; else discard
        # the entire log.
        keep_tail = index <= self.last_index and self.term_at(index) == meta.term
        if not keep_tail:
            self.keep = index
            self.extra.clear()
        self.pbase, self.pbase_term, self.psnapshot = index, meta.term, meta
        return keep_tail

    def set_hard(self, hard: HardState) -> None:
        old = self.pending_hard
        # Raft §5.1: terms only increase; §5.2: at most one vote per term.
        if hard.term < old.term:
            raise _Invalid(f"hard state term {hard.term} < {old.term}, the previous one")
        if hard.term == old.term and old.voted_for is not None and hard.voted_for != old.voted_for:
            raise _Invalid(
                f"vote changed from {old.voted_for!r} to {hard.voted_for!r} in term {hard.term}"
            )
        self.pending_hard = hard

    def end_persist(self) -> None:
        last = self.last_index
        # Terms are non-decreasing from the snapshot on, so the last entry's
        # term (or the snapshot's, without entries after it) is the largest.
        if last and self.term_at(last) > self.pending_hard.term:
            what = f"snapshot at {last}" if last == self.pbase else f"entry {last}"
            raise _Invalid(
                f"{what} has term {self.term_at(last)}, after the hard state's "
                f"term {self.pending_hard.term}"
            )

    def commit(self) -> None:
        ends, terms, lo = self.ends, self.terms, self.pbase
        if lo != self.base or self.keep != self.committed_last:
            _clip_runs(ends, terms, lo, self.keep)
        index = self.keep
        for term in self.extra:
            index += 1
            if index <= lo:
                continue  # appended earlier in the batch, then covered by its snapshot
            if terms and terms[-1] == term:
                ends[-1] = index
            else:
                ends.append(index)
                terms.append(term)
        self.base, self.base_term, self.snapshot = lo, self.pbase_term, self.psnapshot
        self.hard = self.pending_hard
        self.keep = self.committed_last
        self.extra.clear()

    def rollback(self) -> None:
        self.pbase, self.pbase_term, self.psnapshot = self.base, self.base_term, self.snapshot
        self.keep = self.committed_last
        self.extra.clear()
        self.pending_hard = self.hard

    def restore(self, hard: HardState, snapshot: SnapshotMeta | None, runs: _Runs) -> None:
        """Start from a checkpoint (Rule 8), checking it as untrusted input."""
        base, base_term = (snapshot.index, snapshot.term) if snapshot is not None else (0, 0)
        prev_end, prev_term = base, base_term
        for k, (end, term) in enumerate(runs):
            if end <= prev_end or term < prev_term or (k and term == prev_term):
                raise _Invalid(f"checkpoint runs out of order at ({end}, {term})")
            prev_end, prev_term = end, term
        if prev_term > hard.term:
            raise _Invalid(f"checkpoint has term {prev_term} after its hard state's {hard.term}")
        self.base, self.base_term, self.snapshot = base, base_term, snapshot
        self.ends = [e for e, _ in runs]
        self.terms = [t for _, t in runs]
        self.hard = hard
        self.rollback()


def _clip_runs(ends: list[int], terms: list[int], lo: int, hi: int) -> None:
    """Keep only the entries ``lo + 1 .. hi`` of the runs, in place."""
    if hi <= lo:
        ends.clear()
        terms.clear()
        return
    last = bisect_left(ends, hi)  # the run holding hi
    if last < len(ends):
        del ends[last + 1 :], terms[last + 1 :]
        ends[last] = hi
    first = bisect_right(ends, lo)  # the first run holding an entry after lo
    del ends[:first], terms[:first]


# ---------------------------------------------------------------- encoding


def _frame(parts: list[bytes], body: bytes) -> None:
    parts.append(_FRAME.pack(len(body), zlib.crc32(body)))
    parts.append(body)


def _encode_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return _U32.pack(len(b)) + b


def _encode_metadata(m: Metadata) -> bytes:
    out = [bytes([_METADATA]), _encode_str(m.cluster_id), _encode_str(m.node_id)]
    out.append(_U32.pack(len(m.voters)))
    out.extend(_encode_str(v) for v in m.voters)
    return b"".join(out)


def _encode_vote(vote: str | None) -> bytes:
    try:
        return b"" if vote is None else vote.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid(f"voted_for {vote!r} is not encodable as UTF-8") from exc


def _check_hard(hard: object) -> HardState:
    if type(hard) is not HardState:
        raise _Invalid(f"hard_state must be a graft_core.HardState, got {hard!r}")
    if type(hard.term) is not int or not 0 <= hard.term <= _U64_MAX:
        raise _Invalid(f"hard state has an invalid term {hard.term!r}")
    if hard.voted_for is not None and type(hard.voted_for) is not str:
        raise _Invalid(f"voted_for must be a str or None, got {hard.voted_for!r}")
    return hard


def _check_snapshot_meta(meta: object) -> bytes:
    """Validate snapshot metadata from the caller; return its encoded membership."""
    if type(meta) is not SnapshotMeta:
        raise _Invalid(f"expected a graft_core.SnapshotMeta, got {type(meta).__name__}")
    if type(meta.index) is not int or not 1 <= meta.index <= _U64_MAX:
        raise _Invalid(f"snapshot index must be a positive int, got {meta.index!r}")
    if type(meta.term) is not int or not 0 <= meta.term <= _U64_MAX:
        raise _Invalid(f"snapshot {meta.index} has an invalid term {meta.term!r}")
    if type(meta.membership) is not Membership:
        raise _Invalid(
            f"snapshot membership must be a graft_core.Membership, got {meta.membership!r}"
        )
    encoded = meta.membership.encode()
    if len(encoded) > _MAX_MEMBERSHIP_BYTES:
        raise _Invalid(f"snapshot membership encodes to {len(encoded)} bytes, over the limit")
    return encoded


def _encode_snapshot_record(meta: SnapshotMeta, membership: bytes) -> bytes:
    return _SNAPSHOT_HEAD.pack(_SNAPSHOT, meta.index, meta.term) + membership


class _Batch:
    """What validating a write() batch produced: its records, its snapshot chunks."""

    __slots__ = ("chunks", "incoming", "parts", "top")

    def __init__(self, incoming: tuple[SnapshotMeta, int] | None) -> None:
        self.parts: list[bytes] = []
        # Each chunk with its snapshot's encoded membership, in Persist order.
        self.chunks: list[tuple[SnapshotChunk, bytes]] = []
        # The snapshot being received and how many of its bytes, as of the
        # Persists validated so far.
        self.incoming = incoming
        self.top = 0  # the largest entry index written


def _encode_chunk(chunk: object, shape: _Shape, batch: _Batch) -> int:
    """Validate a snapshot chunk (Persist step 1); return how many records it adds."""
    if type(chunk) is not SnapshotChunk:
        raise _Invalid(f"snapshot must be a graft_core.SnapshotChunk or None, got {chunk!r}")
    meta = chunk.meta
    membership = _check_snapshot_meta(meta)
    offset, data, done = chunk.offset, chunk.data, chunk.done
    if type(offset) is not int or offset < 0:
        raise _Invalid(f"snapshot chunk offset must be a non-negative int, got {offset!r}")
    if not isinstance(data, bytes):
        raise _Invalid(f"snapshot chunk data must be bytes, got {type(data).__name__}")
    if type(done) is not bool:
        raise _Invalid(f"snapshot chunk done must be a bool, got {done!r}")
    incoming = batch.incoming
    if offset != 0:
        # graft_core.SnapshotChunk: a chunk continues exactly where the last ended.
        if incoming is None or incoming[0] != meta:
            raise _Invalid(
                f"snapshot chunk at offset {offset} of snapshot {meta.index}, which is not "
                "being received (offset 0 starts one)"
            )
        if incoming[1] != offset:
            raise _Invalid(
                f"snapshot chunk at offset {offset} of snapshot {meta.index}, but "
                f"{incoming[1]} bytes of it were received"
            )
    batch.chunks.append((chunk, membership))
    if not done:
        batch.incoming = (meta, offset + len(data))
        return 0
    batch.incoming = None
    shape.land(meta)
    _frame(batch.parts, _encode_snapshot_record(meta, membership))
    return 1


def _encode_persist(p: object, shape: _Shape, batch: _Batch) -> None:
    """Validate ``p`` against ``shape`` (staging its changes) and append its frames."""
    if type(p) is not Persist:
        raise _Invalid(f"expected a graft_core.Persist, got {type(p).__name__}")
    parts = batch.parts
    records = 0
    if p.snapshot is not None:
        records += _encode_chunk(p.snapshot, shape, batch)
    entries = p.entries
    first = p.first_index
    cut = p.truncate_from
    if cut is not None and (type(cut) is not int or cut < 1):
        raise _Invalid(f"truncate_from must be a positive int or None, got {cut!r}")
    if type(entries) is not tuple:
        raise _Invalid(f"entries must be a tuple, got {type(entries).__name__}")
    if entries:
        if type(first) is not int or first < 1:
            raise _Invalid(f"first_index must be a positive int, got {first!r}")
        # Storing at first_index replaces everything from there on (as the
        # simulator's reference storage does); make that an explicit TRUNCATE.
        if cut is None or first < cut:
            cut = first
    # A truncation past the end deletes nothing and is not recorded.
    if cut is not None and cut <= shape.last_index:
        shape.truncate(cut)
        _frame(parts, _TRUNCATE_BODY.pack(_TRUNCATE, cut))
        records += 1
    index = first
    for e in entries:
        if type(e) is not Entry:
            raise _Invalid(f"entry {index} is not a graft_core.Entry: {e!r}")
        term, data, kind = e.term, e.data, e.kind
        if type(term) is not int or not 0 <= term <= _U64_MAX:
            raise _Invalid(f"entry {index} has an invalid term {term!r}")
        if not isinstance(data, bytes) or len(data) > MAX_ENTRY_BYTES:
            raise _Invalid(f"entry {index}'s data must be bytes of at most {MAX_ENTRY_BYTES}")
        if type(kind) is not EntryKind:
            raise _Invalid(f"entry {index} has an invalid kind {kind!r}")
        shape.append(index, term)
        head = _ENTRY_HEAD.pack(_ENTRY, index, term, kind.value)
        # CRC in two steps so the (possibly large) data is copied only once, by join.
        parts.append(_FRAME.pack(len(head) + len(data), zlib.crc32(data, zlib.crc32(head))))
        parts.append(head)
        parts.append(data)
        index += 1
    records += len(entries)
    if entries:
        batch.top = max(batch.top, index - 1)
    hard = p.hard_state
    if hard is not None:
        hard = _check_hard(hard)
        vote_bytes = _encode_vote(hard.voted_for)
        shape.set_hard(hard)
        has_vote = hard.voted_for is not None
        _frame(parts, _HARD_HEAD.pack(_HARD_STATE, hard.term, has_vote) + vote_bytes)
        records += 1
    if records:
        shape.end_persist()
        _frame(parts, _COMMIT_BODY.pack(_COMMIT, records))


def _encode_checkpoint(shape: _Shape, metadata: Metadata | None) -> bytes:
    """The framed ``[METADATA] CHECKPOINT`` that begins a segment (Rule 8)."""
    hard, snap = shape.hard, shape.snapshot
    runs = shape.runs()
    if len(runs) > _MAX_RUNS:
        raise _Invalid(
            f"the log holds {len(runs)} terms after its snapshot, more than a checkpoint "
            f"can record ({_MAX_RUNS}); save a snapshot to compact it"
        )
    vote = _encode_vote(hard.voted_for)
    membership = snap.membership.encode() if snap is not None else b""
    body = [
        _U8.pack(_CHECKPOINT),
        _U64.pack(hard.term),
        _U8.pack(hard.voted_for is not None),
        _U32.pack(len(vote)),
        vote,
        _U64.pack(snap.index if snap is not None else 0),
        _U64.pack(snap.term if snap is not None else 0),
        _U32.pack(len(membership)),
        membership,
        _U32.pack(len(runs)),
    ]
    body.extend(_RUN.pack(end, term) for end, term in runs)
    parts: list[bytes] = []
    if metadata is not None:
        _frame(parts, _encode_metadata(metadata))
    _frame(parts, b"".join(body))
    return b"".join(parts)


def _snapshot_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}{_SNAP_SUFFIX}"


def _snapshot_header(meta: SnapshotMeta, membership: bytes, size: int, crc: int) -> bytes:
    head = _SNAP_HEAD.pack(
        _SNAP_MAGIC, _SNAP_VERSION, meta.index, meta.term, size, crc, len(membership)
    )
    head += membership
    return head + _U32.pack(zlib.crc32(head))


# ---------------------------------------------------------------- decoding


def _frame_problem(data: bytearray, mv: memoryview, off: int) -> tuple[int, str | None]:
    """Check the frame at ``off``: ``(end, None)`` if whole with a good CRC, else why not."""
    n = len(data)
    if n - off < _HEADER + 1:
        return n, f"incomplete record header ({n - off} bytes)"
    length, crc = _FRAME.unpack_from(data, off)
    if not 1 <= length <= _MAX_BODY:
        return n, f"record length {length} out of range 1..{_MAX_BODY}"
    end = off + _HEADER + length
    if end > n:
        return n, f"incomplete record ({length} bytes declared, {n - off - _HEADER} present)"
    if zlib.crc32(mv[off + _HEADER : end]) != crc:
        return n, "record checksum mismatch"
    return end, None


def _next_valid_frame(data: bytearray, mv: memoryview, start: int) -> int | None:
    """The first offset >= ``start`` where a whole frame with a good CRC begins."""
    # Every byte offset, not just the bad record's declared end: its length
    # field may be the damaged byte.
    n = len(data)
    unpack = _FRAME.unpack_from
    crc32 = zlib.crc32
    for p in range(start, n - _HEADER):
        length, crc = unpack(data, p)
        if (
            0 < length <= _MAX_BODY
            and p + _HEADER + length <= n
            and crc32(mv[p + _HEADER : p + _HEADER + length]) == crc
        ):
            return p
    return None


def _decode_str(data: bytearray, pos: int, end: int) -> tuple[str, int]:
    if end - pos < _U32.size:
        raise _Invalid("string length runs past the record")
    (size,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if size > end - pos:
        raise _Invalid("string runs past the record")
    try:
        return bytes(data[pos : pos + size]).decode("utf-8"), pos + size
    except UnicodeDecodeError as exc:
        raise _Invalid("string is not UTF-8") from exc


def _decode_metadata_untrusted(data: bytearray, pos: int, end: int) -> Metadata:
    cluster_id, pos = _decode_str(data, pos, end)
    node_id, pos = _decode_str(data, pos, end)
    if end - pos < _U32.size:
        raise _Invalid("metadata voter count runs past the record")
    (count,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if count > end - pos:  # each voter takes at least 4 bytes: bound before looping
        raise _Invalid(f"metadata claims {count} voters")
    voters = []
    for _ in range(count):
        v, pos = _decode_str(data, pos, end)
        voters.append(v)
    if pos != end:
        raise _Invalid("trailing bytes after metadata")
    try:
        return Metadata(cluster_id, node_id, tuple(voters))
    except ConfigError as exc:
        raise _Invalid(f"invalid metadata: {exc}") from exc


def _decode_bytes(data: bytearray, pos: int, end: int) -> tuple[bytes, int]:
    if end - pos < _U32.size:
        raise _Invalid("length runs past the record")
    (size,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if size > end - pos:
        raise _Invalid("field runs past the record")
    return bytes(data[pos : pos + size]), pos + size


def _decode_membership_untrusted(encoded: bytes) -> Membership:
    try:
        return Membership.decode_untrusted(encoded)
    except ConfigError as exc:
        raise _Invalid(f"invalid snapshot membership: {exc}") from None


def _decode_checkpoint_untrusted(
    data: bytearray, pos: int, end: int
) -> tuple[HardState, SnapshotMeta | None, _Runs]:
    fixed = _U64.size + _U8.size
    if end - pos < fixed:
        raise _Invalid("CHECKPOINT record is too short")
    (term,) = _U64.unpack_from(data, pos)
    has_vote = data[pos + _U64.size]
    raw_vote, pos = _decode_bytes(data, pos + fixed, end)
    if has_vote not in (0, 1) or (has_vote == 0 and raw_vote):
        raise _Invalid("malformed vote in CHECKPOINT record")
    try:
        vote = raw_vote.decode("utf-8") if has_vote else None
    except UnicodeDecodeError as exc:
        raise _Invalid("voted_for is not UTF-8") from exc
    if end - pos < 2 * _U64.size:
        raise _Invalid("CHECKPOINT record is too short")
    snap_index, snap_term = struct.unpack_from("<QQ", data, pos)
    membership, pos = _decode_bytes(data, pos + 2 * _U64.size, end)
    snapshot = None
    if snap_index:
        snapshot = SnapshotMeta(snap_index, snap_term, _decode_membership_untrusted(membership))
    elif snap_term or membership:
        raise _Invalid("CHECKPOINT record without a snapshot has snapshot fields")
    if end - pos < _U32.size:
        raise _Invalid("CHECKPOINT run count runs past the record")
    (count,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if count * _RUN.size != end - pos:  # bound before looping
        raise _Invalid(f"CHECKPOINT record claims {count} runs in {end - pos} bytes")
    runs = [_RUN.unpack_from(data, pos + k * _RUN.size) for k in range(count)]
    return HardState(term, vote), snapshot, runs


@attrs.frozen(slots=True)
class _Landed:
    # A replayed SNAPSHOT record: the snapshot and whether the entries after it
    # survive (Raft §7, decided against the log as it was when it landed).
    meta: SnapshotMeta
    keep_tail: bool


# A replayed change, applied to the entry list only at its Persist's COMMIT.
_Change = tuple[int, int] | Entry | HardState | _Landed


class _Replay:
    """Rebuilds the durable state record by record (Rules 2, 6, 7 and 8)."""

    def __init__(self) -> None:
        self.shape = _Shape()
        # The entries after ``unknown``, in order. Entries base+1..unknown are
        # known by their term only (a checkpoint's runs): their records went
        # with compacted segments, which is fine only if a snapshot covers
        # them by the end of the replay.
        self.entries: list[Entry] = []
        self.unknown = 0
        self.metadata: Metadata | None = None
        self.pending: list[_Change] = []
        # Per segment: the largest ENTRY index in it, whether it begins with a
        # checkpoint (what compaction needs to know, Rule 8).
        self.tops: list[int] = []
        self.checkpoints: list[bool] = []
        self.first_segment = False
        self.at_start = False
        self.need_checkpoint = False
        self.segment_metadata = False

    def begin_segment(self, seq: int, first: bool) -> None:
        self.first_segment = first
        self.at_start = True
        # Rule 8: replay may start after segment 0 only from a checkpoint.
        self.need_checkpoint = first and seq > 0
        self.segment_metadata = False
        self.tops.append(0)
        self.checkpoints.append(False)

    def record_untrusted(self, data: bytearray, mv: memoryview, off: int, end: int) -> bool:
        """Apply the frame at ``off``; True if it ends a stretch recovery keeps
        (a Persist, or the METADATA/CHECKPOINT replay starts from)."""
        body = off + _HEADER
        length = end - body
        rtype = data[body]
        shape = self.shape
        at_start = self.at_start
        if rtype != _METADATA:
            self.at_start = False
        if self.need_checkpoint and rtype not in (_METADATA, _CHECKPOINT):
            raise _Invalid(
                "the earlier segments are gone (compacted), but this one does not begin "
                "with a checkpoint"
            )
        if rtype == _ENTRY:
            if length < _ENTRY_HEAD.size:
                raise _Invalid(f"ENTRY record of {length} bytes is too short")
            _, index, term, kind = _ENTRY_HEAD.unpack_from(data, body)
            if kind not in _KINDS:
                raise _Invalid(f"entry {index} has unknown kind {kind}")
            shape.append(index, term)
            self.tops[-1] = max(self.tops[-1], index)
            self.pending.append(Entry(term, bytes(mv[body + _ENTRY_HEAD.size : end]), _KINDS[kind]))
        elif rtype == _TRUNCATE:
            if length != _TRUNCATE_BODY.size:
                raise _Invalid(f"TRUNCATE record of {length} bytes, expected {_TRUNCATE_BODY.size}")
            _, index = _TRUNCATE_BODY.unpack_from(data, body)
            shape.truncate(index)
            self.pending.append((_TRUNCATE, index))
        elif rtype == _HARD_STATE:
            if length < _HARD_HEAD.size:
                raise _Invalid(f"HARD_STATE record of {length} bytes is too short")
            _, term, has_vote = _HARD_HEAD.unpack_from(data, body)
            vote: str | None = None
            if has_vote == 1:
                try:
                    vote = bytes(mv[body + _HARD_HEAD.size : end]).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _Invalid("voted_for is not UTF-8") from exc
            elif has_vote != 0 or length != _HARD_HEAD.size:
                raise _Invalid("malformed HARD_STATE record")
            hard = HardState(term, vote)
            shape.set_hard(hard)
            self.pending.append(hard)
        elif rtype == _SNAPSHOT:
            if length < _SNAPSHOT_HEAD.size:
                raise _Invalid(f"SNAPSHOT record of {length} bytes is too short")
            _, index, term = _SNAPSHOT_HEAD.unpack_from(data, body)
            if index < 1:
                raise _Invalid("SNAPSHOT record at index 0")
            encoded = bytes(mv[body + _SNAPSHOT_HEAD.size : end])
            meta = SnapshotMeta(index, term, _decode_membership_untrusted(encoded))
            keep_tail = shape.land(meta)
            self.pending.append(_Landed(meta, keep_tail))
        elif rtype == _COMMIT:
            if length != _COMMIT_BODY.size:
                raise _Invalid(f"COMMIT record of {length} bytes, expected {_COMMIT_BODY.size}")
            _, count = _COMMIT_BODY.unpack_from(data, body)
            if count == 0 or count != len(self.pending):
                raise _Invalid(f"COMMIT of {count} records after {len(self.pending)} records")
            shape.end_persist()
            self._apply_pending()
            shape.commit()
            return True
        elif rtype == _METADATA:
            if off != 0:
                raise _Invalid("METADATA record after the start of a segment")
            metadata = _decode_metadata_untrusted(data, body + 1, end)
            self.segment_metadata = True
            if self.first_segment:
                self.metadata = metadata
            elif metadata != self.metadata:
                raise _Invalid(f"METADATA {metadata!r} differs from the first segment's")
            return self.first_segment
        elif rtype == _CHECKPOINT:
            if not at_start:
                raise _Invalid("CHECKPOINT record after the start of a segment")
            self._checkpoint_untrusted(data, body + 1, end)
            return self.first_segment
        else:
            raise _Invalid(f"unknown record type {rtype}")
        return False

    def _checkpoint_untrusted(self, data: bytearray, pos: int, end: int) -> None:
        hard, snapshot, runs = _decode_checkpoint_untrusted(data, pos, end)
        shape = self.shape
        self.checkpoints[-1] = True
        if self.first_segment:
            shape.restore(hard, snapshot, runs)
            self.unknown = shape.committed_last
            self.need_checkpoint = False
            return
        # Not where replay started: the checkpoint must describe the log
        # exactly as the records before it left it.
        if self.segment_metadata != (self.metadata is not None):
            raise _Invalid("segment METADATA does not match the first segment's")
        if hard != shape.hard:
            raise _Invalid(f"CHECKPOINT hard state {hard} differs from the log's {shape.hard}")
        if snapshot != shape.snapshot:
            raise _Invalid(
                f"CHECKPOINT snapshot {snapshot} differs from the log's {shape.snapshot}"
            )
        if runs != shape.runs():
            raise _Invalid("CHECKPOINT entry terms differ from the log's")

    def _apply_pending(self) -> None:
        entries = self.entries
        unknown = self.unknown
        for change in self.pending:
            if type(change) is Entry:
                entries.append(change)
            elif type(change) is tuple:
                cut = change[1]
                if cut - 1 >= unknown:
                    del entries[cut - 1 - unknown :]
                else:
                    entries.clear()
                    unknown = cut - 1
            elif type(change) is _Landed:
                index = change.meta.index
                if not change.keep_tail:
                    entries.clear()
                    unknown = index
                elif index >= unknown:
                    del entries[: index - unknown]
                    unknown = index
        self.unknown = unknown
        self.pending.clear()

    def discard_pending(self) -> None:
        self.pending.clear()
        self.shape.rollback()

    def durable(self, where: Path) -> DurableState:
        """The replayed state; ``where`` is blamed if entries are missing."""
        shape = self.shape
        if self.unknown > shape.base:
            raise StorageCorruption(
                where,
                0,
                f"entries {shape.base + 1}..{self.unknown} come after the snapshot, but "
                "the segments that held them are gone",
            )
        return DurableState(shape.hard, tuple(self.entries), shape.snapshot)


def _replay_segment(
    replay: _Replay, data: bytearray, path: Path, seq: int, is_first: bool, is_last: bool
) -> int:
    """Replay one segment; return the end of its last complete Persist (Rule 4)."""
    mv = memoryview(data)
    off = 0
    good_end = 0
    n = len(data)
    replay.begin_segment(seq, is_first)
    while off < n:
        end, problem = _frame_problem(data, mv, off)
        if problem is not None:
            if not is_last:
                raise StorageCorruption(
                    path, off, f"{problem}, in a segment that is not the last one"
                )
            later = _next_valid_frame(data, mv, off + 1)
            if later is not None:
                raise StorageCorruption(
                    path, off, f"{problem}, followed by a valid record at offset {later}"
                )
            break  # a torn tail: the expected result of a crash mid-write
        try:
            complete = replay.record_untrusted(data, mv, off, end)
        except _Invalid as exc:
            raise StorageCorruption(path, off, str(exc)) from None
        if complete:
            good_end = end
        off = end
    if replay.pending:
        if not is_last:
            raise StorageCorruption(
                path, good_end, "the segment ends inside a Persist (no COMMIT record)"
            )
        replay.discard_pending()
    if n == 0 and not is_last:
        # A segment is rolled only once full, so an empty one lost its records.
        raise StorageCorruption(path, 0, "empty segment before the last one")
    if replay.need_checkpoint:
        raise StorageCorruption(
            path, 0, "the earlier segments are gone, but this one holds no checkpoint"
        )
    if good_end == 0:
        # A torn tail cut back to nothing takes the checkpoint with it; the
        # next write begins the segment with a new one.
        replay.checkpoints[-1] = False
    return good_end


# ---------------------------------------------------------------- snapshot files


@attrs.frozen(slots=True)
class _SnapFile:
    # A durable, verified snapshot file: its data is bytes
    # data_offset .. data_offset + size, with CRC crc.
    path: Path
    meta: SnapshotMeta
    data_offset: int
    size: int
    crc: int


class _SnapshotWriter:
    """A snapshot file being written: a header, then the data streamed through.

    The header's size and CRC are filled in by :meth:`finish`; until the file
    is renamed to its final name (Rule 7) nothing reads it.
    """

    __slots__ = ("crc", "fd", "fs", "head_size", "membership", "meta", "path", "size")

    def __init__(self, fs: _Fs, path: Path, meta: SnapshotMeta, membership: bytes) -> None:
        self.fs, self.path, self.meta, self.membership = fs, path, meta, membership
        self.size = 0
        self.crc = 0
        self.fd = fs.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        head = _snapshot_header(meta, membership, 0, 0)
        self.head_size = len(head)
        try:
            _write_all(fs, self.fd, head)
        except BaseException:
            self.close_quietly()
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        _write_all(self.fs, self.fd, data)
        # Incrementally: the snapshot is never whole in memory.
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def finish(self, fsync: bool) -> _SnapFile:
        head = _snapshot_header(self.meta, self.membership, self.size, self.crc)
        _pwrite_all(self.fs, self.fd, head, 0)
        if fsync:
            self.fs.fsync(self.fd)
        fd, self.fd = self.fd, -1
        self.fs.close(fd)
        return _SnapFile(self.path, self.meta, self.head_size, self.size, self.crc)

    def close_quietly(self) -> None:
        _close_quietly(self.fs, self.fd)
        self.fd = -1


def _verify_snapshot_untrusted(fs: _Fs, path: Path, meta: SnapshotMeta) -> _SnapFile:
    """Check the snapshot file the log names, header and every data byte (Rule 4)."""
    try:
        fd = fs.open(str(path), os.O_RDONLY)
    except FileNotFoundError:
        raise StorageCorruption(
            path, 0, f"the snapshot file for snapshot {meta.index} (term {meta.term}) is missing"
        ) from None
    try:
        head = _pread_exact(fs, fd, _SNAP_HEAD.size, 0)
        if len(head) < _SNAP_HEAD.size:
            raise StorageCorruption(path, 0, f"snapshot header incomplete ({len(head)} bytes)")
        magic, version, index, term, size, crc, mlen = _SNAP_HEAD.unpack(head)
        if magic != _SNAP_MAGIC:
            raise StorageCorruption(path, 0, "not a graft snapshot file (bad magic)")
        if version != _SNAP_VERSION:
            raise StorageCorruption(path, 0, f"unknown snapshot format version {version}")
        if mlen > _MAX_MEMBERSHIP_BYTES:
            raise StorageCorruption(path, 0, f"snapshot membership length {mlen} out of range")
        rest = _pread_exact(fs, fd, mlen + _U32.size, _SNAP_HEAD.size)
        if len(rest) < mlen + _U32.size:
            raise StorageCorruption(path, 0, "snapshot header incomplete")
        (head_crc,) = _U32.unpack_from(rest, mlen)
        membership = rest[:mlen]
        if zlib.crc32(head + membership) != head_crc:
            raise StorageCorruption(path, 0, "snapshot header checksum mismatch")
        if (index, term, membership) != (meta.index, meta.term, meta.membership.encode()):
            raise StorageCorruption(
                path,
                0,
                f"the header describes snapshot {index} (term {term}), not the "
                f"log's snapshot {meta.index} (term {meta.term}) and its membership",
            )
        data_offset = _SNAP_HEAD.size + mlen + _U32.size
        pos = 0
        got = 0
        while pos < size:
            chunk = fs.pread(fd, min(_READ_BYTES, size - pos), data_offset + pos)
            if not chunk:
                raise StorageCorruption(
                    path, data_offset + pos, f"snapshot data ends after {pos} of {size} bytes"
                )
            got = zlib.crc32(chunk, got)
            pos += len(chunk)
        if fs.pread(fd, 1, data_offset + size):
            raise StorageCorruption(path, data_offset + size, "bytes after the snapshot data")
        if got != crc:
            raise StorageCorruption(path, data_offset, "snapshot data checksum mismatch")
    finally:
        fs.close(fd)
    return _SnapFile(path, meta, data_offset, size, crc)


class SnapshotReader:
    """The data of one snapshot, chunk by chunk (:meth:`Storage.iter_snapshot`).

    An iterator of ``bytes``. It reads through its own file descriptor, so a
    newer snapshot landing meanwhile does not disturb it. Every byte is checked
    against the snapshot's CRC: if the file changed since it was written, the
    last chunk is not returned and :class:`StorageCorruption` is raised instead
    (restore the state machine only once the iteration ended normally).
    Close it (or use ``with``) when not reading to the end.

    Attributes:
        meta: the snapshot's metadata.
        size: its data's length in bytes.

    Raises (from ``next``):
        StorageCorruption: the file is shorter than its header says, or its
            data does not match the CRC.
        StorageFailure: an I/O error (the Storage itself stays usable).
    """

    def __init__(self, fs: _Fs, snap: _SnapFile, chunk_bytes: int) -> None:
        self.meta = snap.meta
        self.size = snap.size
        self._fs = fs
        self._snap = snap
        self._chunk_bytes = chunk_bytes
        self._pos = 0
        self._crc = 0
        self._fd = -1
        try:
            self._fd = fs.open(str(snap.path), os.O_RDONLY)
        except OSError as exc:
            raise StorageFailure(
                f"cannot open snapshot file {snap.path}: {exc}", errno=exc.errno, path=snap.path
            ) from exc

    def __iter__(self) -> SnapshotReader:
        return self

    def __next__(self) -> bytes:
        if self._fd < 0:
            raise StopIteration
        snap = self._snap
        n = min(self._chunk_bytes, snap.size - self._pos)
        offset = snap.data_offset + self._pos
        try:
            data = _pread_exact(self._fs, self._fd, n, offset) if n else b""
        except OSError as exc:
            self.close()
            raise StorageFailure(
                f"reading snapshot file {snap.path}: {exc}", errno=exc.errno, path=snap.path
            ) from exc
        if len(data) < n:
            self.close()
            raise StorageCorruption(
                snap.path, offset + len(data), "the snapshot data is shorter than its header says"
            )
        self._pos += n
        self._crc = zlib.crc32(data, self._crc)
        if self._pos == snap.size:
            self.close()
            if self._crc != snap.crc:
                raise StorageCorruption(
                    snap.path, snap.data_offset, "snapshot data checksum mismatch"
                )
            if not data:
                raise StopIteration
        return data

    def close(self) -> None:
        """Release the file. Idempotent."""
        fd, self._fd = self._fd, -1
        _close_quietly(self._fs, fd)

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# ---------------------------------------------------------------- Storage


def _segment_name(seq: int) -> str:
    return f"{seq:016x}.wal"


class Storage:
    """The write-ahead log and snapshot of one graft node. Create it with :meth:`open`.

    Not thread-safe: call it from one thread at a time.
    """

    def __init__(
        self,
        *,
        fs: _Fs,
        directory: Path,
        dir_fd: int,
        fsync: bool,
        segment_bytes: int,
        seq: int,
        fd: int,
        size: int,
        shape: _Shape,
        recovered: RecoveredState,
        tops: list[int],
        checkpoints: list[bool],
        snapshot: _SnapFile | None,
    ) -> None:
        # Private: use Storage.open(), which recovers the directory first.
        self._fs = fs
        self._dir = directory
        self._dir_fd = dir_fd
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._seq = seq  # the newest segment, the one appended to
        self._fd = fd
        self._size = size
        self._shape = shape
        self._recovered = recovered
        self._metadata = recovered.metadata
        # Per segment, oldest first (the first is _first_seq): its largest
        # entry index and whether it begins with a checkpoint (Rule 8).
        self._tops = tops
        self._checkpoints = checkpoints
        self._first_seq = seq - len(tops) + 1
        self._snapshot = snapshot  # the file of _shape.snapshot
        self._incoming: _SnapshotWriter | None = None  # a snapshot being received
        self._failure: StorageFailure | None = None
        self._closed = False

    @property
    def path(self) -> Path:
        """The data directory."""
        return self._dir

    # -------------------------------------------------------- open / recover

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        metadata: Metadata | None = None,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fs: _Fs | None = None,
    ) -> Storage:
        """Open (creating it if missing) and recover the data directory ``path``.

        Reads every segment and checks the snapshot file's every byte; then
        deletes leftover snapshot and temporary files and the segments the
        snapshot made unnecessary (Rules 7 and 8).

        Args:
            path: the data directory; created, with missing parents, if absent.
            metadata: if given, the directory must hold exactly this metadata,
                or, if new, is created with it.
            fsync: make writes durable before returning. ``False`` is for tests
                and benchmarks: a process crash loses nothing ``write`` returned
                from, a power loss may lose or tear any suffix of the log.
            segment_bytes: roll to a new segment file after this many bytes.
            fs: the file-system layer (tests inject faults through it).

        Returns:
            The open Storage; :meth:`recovered` holds what it read back.

        Raises:
            StorageCorruption: the log or its snapshot file is damaged beyond a
                torn tail (Rule 4).
            StorageMismatch: the directory holds other metadata.
            StorageFailure: an I/O error, or another Storage holds the directory.
            StorageUsageError: an invalid argument.
        """
        if type(fsync) is not bool:
            raise StorageUsageError(f"fsync must be a bool, got {fsync!r}")
        if type(segment_bytes) is not int or segment_bytes < 1:
            raise StorageUsageError(f"segment_bytes must be a positive int, got {segment_bytes!r}")
        if metadata is not None and type(metadata) is not Metadata:
            raise StorageUsageError(f"metadata must be a Metadata or None, got {metadata!r}")
        fs = fs if fs is not None else _OsFs()
        directory = Path(path)
        where = directory
        dir_fd = -1
        try:
            _make_dirs(fs, directory, fsync)
            dir_fd = fs.open(str(directory), os.O_RDONLY | _O_DIRECTORY)
            try:
                fs.lock(dir_fd)
            except OSError as exc:
                raise StorageFailure(
                    f"data directory {directory} is in use by another Storage ({exc})",
                    errno=exc.errno,
                    path=directory,
                ) from exc
            return cls._recover(fs, directory, dir_fd, metadata, fsync, segment_bytes)
        except OSError as exc:
            where = Path(exc.filename) if isinstance(exc.filename, str) else where
            _close_quietly(fs, dir_fd)
            raise StorageFailure(
                f"cannot open data directory {directory}: {exc}", errno=exc.errno, path=where
            ) from exc
        except BaseException:
            _close_quietly(fs, dir_fd)
            raise

    @classmethod
    def _recover(
        cls,
        fs: _Fs,
        directory: Path,
        dir_fd: int,
        metadata: Metadata | None,
        fsync: bool,
        segment_bytes: int,
    ) -> Storage:
        names = fs.listdir(str(directory))
        # A leftover of a crash while creating segment 0 (see _create).
        stale = [n for n in names if n.endswith(".wal" + _TMP_SUFFIX)]
        for name in stale:
            fs.remove(str(directory / name))
        seqs = sorted(int(m.group(1), 16) for n in names if (m := _SEGMENT.match(n)))
        if not seqs:
            return cls._create(fs, directory, dir_fd, metadata, fsync, segment_bytes)
        first, last = seqs[0], seqs[-1]
        for i, seq in enumerate(seqs):
            if seq != first + i:
                raise StorageCorruption(
                    directory / _segment_name(first + i),
                    0,
                    "segment file missing from the sequence",
                )
        replay = _Replay()
        good_end = size = 0
        for seq in seqs:
            seg = directory / _segment_name(seq)
            data = _read_file(fs, seg, fsync)
            good_end = _replay_segment(replay, data, seg, seq, seq == first, seq == last)
            size = len(data)
        found = replay.metadata
        if metadata is not None and found != metadata:
            raise StorageMismatch(directory, metadata, found)
        durable = replay.durable(directory / _segment_name(first))
        snap = None
        if durable.snapshot is not None:
            meta = durable.snapshot
            snap_path = directory / _snapshot_name(meta.index, meta.term)
            snap = _verify_snapshot_untrusted(fs, snap_path, meta)
        last_path = directory / _segment_name(last)
        fd = fs.open(str(last_path), os.O_WRONLY | os.O_APPEND)
        try:
            if good_end < size:
                # Rule 4: cut the torn tail, durably, before appending after it.
                fs.truncate(fd, good_end)
                if fsync:
                    fs.fsync(fd)
            if fsync:
                # Make earlier creations, renames and removals durable too.
                fs.fsync(dir_fd)
            storage = cls(
                fs=fs,
                directory=directory,
                dir_fd=dir_fd,
                fsync=fsync,
                segment_bytes=segment_bytes,
                seq=last,
                fd=fd,
                size=good_end,
                shape=replay.shape,
                recovered=RecoveredState(durable, found, size - good_end),
                tops=replay.tops,
                checkpoints=replay.checkpoints,
                snapshot=snap,
            )
            # Recovery has decided: every other snapshot file is garbage (Rule 7),
            # and a crash may have come between a snapshot and its compaction.
            keep = snap.path.name if snap is not None else None
            for name in names:
                if name != keep and (
                    name.endswith(_SNAP_SUFFIX) or name.endswith(_SNAP_SUFFIX + _TMP_SUFFIX)
                ):
                    fs.remove(str(directory / name))
            storage._compact()
        except BaseException:
            _close_quietly(fs, fd)
            raise
        return storage

    @classmethod
    def _create(
        cls,
        fs: _Fs,
        directory: Path,
        dir_fd: int,
        metadata: Metadata | None,
        fsync: bool,
        segment_bytes: int,
    ) -> Storage:
        final = directory / _segment_name(0)
        size = 0
        if metadata is not None:
            # Write-then-rename, so segment 0 never exists without its metadata.
            parts: list[bytes] = []
            _frame(parts, _encode_metadata(metadata))
            data = b"".join(parts)
            size = len(data)
            tmp = directory / (final.name + _TMP_SUFFIX)
            fd = fs.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fs, fd, data)
                if fsync:
                    fs.fsync(fd)
            finally:
                fs.close(fd)
            fs.rename(str(tmp), str(final))
        else:
            fd = fs.open(str(final), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            fs.close(fd)
        if fsync:
            fs.fsync(dir_fd)
        fd = fs.open(str(final), os.O_WRONLY | os.O_APPEND)
        return cls(
            fs=fs,
            directory=directory,
            dir_fd=dir_fd,
            fsync=fsync,
            segment_bytes=segment_bytes,
            seq=0,
            fd=fd,
            size=size,
            shape=_Shape(),
            recovered=RecoveredState(DurableState(), metadata, 0),
            tops=[0],
            checkpoints=[False],
            snapshot=None,
        )

    # -------------------------------------------------------- public API

    def recovered(self) -> RecoveredState:
        """What was read back when the Storage was opened (not later writes).

        Raises:
            StorageFailure: the Storage failed earlier (fail-stop).
            StorageUsageError: the Storage is closed.
        """
        self._check_usable()
        return self._recovered

    def write(self, persists: Sequence[Persist]) -> None:
        """Make a batch of Persists durable, in order, with one fsync (Rules 2, 3).

        When it returns, the shell may step
        ``PersistCompleted(persists[-1].seq)``.

        A Persist's ``snapshot`` chunk goes into the incoming snapshot file
        (not synced: until its last chunk nothing depends on it). The last
        chunk makes the file durable and the snapshot the node's (Rule 7):
        entries up to its index are dropped -- and, if the log does not hold
        the entry at that index with the snapshot's term, every later one
        (Raft §7) -- and segments it made unnecessary are deleted (Rule 8).

        Args:
            persists: the Persist actions, in ``seq`` order.

        Raises:
            StorageUsageError: a Persist breaks the log's invariants (a gap,
                decreasing terms, an entry after the hard state's term, a second
                vote in a term, a truncation into the snapshot, a snapshot chunk
                that does not continue the incoming snapshot, a snapshot not
                after the current one ...). Nothing of the batch was written.
            StorageFailure: an I/O error. The batch may or may not be durable;
                the Storage refuses every later call (Rule 5).
        """
        self._check_usable()
        shape = self._shape
        incoming = self._incoming
        batch = _Batch((incoming.meta, incoming.size) if incoming is not None else None)
        try:
            for p in persists:
                _encode_persist(p, shape, batch)
            head = self._segment_head() if batch.parts else b""
        except _Invalid as exc:
            shape.rollback()
            raise StorageUsageError(f"invalid Persist: {exc}") from None
        if not batch.parts and not batch.chunks:
            return
        landed: list[_SnapFile] = []
        for chunk, membership in batch.chunks:
            with self._io(f"writing snapshot {chunk.meta.index}", self._dir / _INCOMING):
                done = self._receive_chunk(chunk, membership)
            if done is not None:
                landed.append(done)
        if batch.parts:
            data = b"".join(batch.parts)
            with self._io(f"writing {len(data)} bytes to the log"):
                self._append(data, batch.top, head)
        shape.commit()
        if landed:
            self._installed(landed)

    def save_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        """Make the application's snapshot at an applied index durable, and the node's.

        Streams ``chunks`` into a new snapshot file, makes it durable, then
        appends and fsyncs its ``SNAPSHOT`` record (Rule 7). The entries up to
        ``meta.index`` are then dropped (those after it stay: the log holds
        the entry at ``meta.index`` with ``meta.term``), and segments the
        snapshot made unnecessary are deleted (Rule 8). Step
        :class:`~graft_core.SnapshotSaved` once it returns.

        Args:
            meta: what the snapshot covers: ``state.snapshot_meta(index)``.
            chunks: the state machine's data, as ``bytes`` pieces of any size;
                read once, never held whole.

        Raises:
            StorageUsageError: ``meta`` is not after the current snapshot, or
                beyond the last stored entry, or its term is not that entry's;
                or a chunk is not bytes. Nothing was kept; still usable.
            StorageFailure: an I/O error; the Storage refuses every later call
                (Rule 5). The snapshot may or may not be durable.

        Any exception ``chunks`` raises propagates; nothing was kept.
        """
        self._check_usable()
        shape = self._shape
        try:
            membership = _check_snapshot_meta(meta)
            index, last = meta.index, shape.last_index
            if index <= shape.base:
                raise _Invalid(f"snapshot at {index} is not after the current one at {shape.base}")
            if index > last:
                raise _Invalid(f"snapshot at {index} is beyond the last stored entry {last}")
            if shape.term_at(index) != meta.term:
                raise _Invalid(
                    f"snapshot at {index} has term {meta.term}, but the stored entry there "
                    f"has term {shape.term_at(index)}"
                )
            shape.land(meta)
            shape.end_persist()
            parts: list[bytes] = []
            _frame(parts, _encode_snapshot_record(meta, membership))
            _frame(parts, _COMMIT_BODY.pack(_COMMIT, 1))
            head = self._segment_head()
        except _Invalid as exc:
            shape.rollback()
            raise StorageUsageError(f"invalid snapshot: {exc}") from None
        tmp = self._dir / (_snapshot_name(meta.index, meta.term) + _TMP_SUFFIX)
        writer: _SnapshotWriter | None = None
        try:
            with self._io(f"creating snapshot file {tmp.name}", tmp):
                writer = _SnapshotWriter(self._fs, tmp, meta, membership)
            for chunk in chunks:  # the application's code runs here
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise StorageUsageError(
                        f"snapshot chunks must be bytes, got {type(chunk).__name__}"
                    )
                with self._io(f"writing snapshot file {tmp.name}", tmp):
                    writer.write(chunk)
        except BaseException:
            shape.rollback()
            if writer is not None:
                writer.close_quietly()
            if self._failure is None:
                # The application's error, not the disk's: leave no trace.
                with contextlib.suppress(OSError):
                    self._fs.remove(str(tmp))
            raise
        with self._io(f"making snapshot file {tmp.name} durable", tmp):
            snap = self._publish(writer)
        with self._io("appending the SNAPSHOT record to the log"):
            self._append(b"".join(parts), 0, head)
        shape.commit()
        self._installed([snap])

    def snapshot_meta(self) -> SnapshotMeta | None:
        """The current snapshot's metadata, ``None`` before the first one.

        Raises:
            StorageFailure: the Storage failed earlier (fail-stop).
            StorageUsageError: the Storage is closed.
        """
        self._check_usable()
        return self._shape.snapshot

    def snapshot_size(self) -> int:
        """The current snapshot's data length in bytes (0 without a snapshot).

        Raises:
            StorageFailure: the Storage failed earlier (fail-stop).
            StorageUsageError: the Storage is closed.
        """
        self._check_usable()
        return self._snapshot.size if self._snapshot is not None else 0

    def read_snapshot(self, index: int, offset: int, length: int) -> bytes | None:
        """Bytes ``offset ..`` of the current snapshot's data, for ``SendSnapshot``.

        Checks bounds only, not the CRC (the follower's own restore checks
        nothing either: :meth:`iter_snapshot` is the verifying read).

        Args:
            index: the snapshot the caller means (``SendSnapshot``'s
                ``message.meta.index``).
            offset: where to start, at most :meth:`snapshot_size`.
            length: how many bytes at most.

        Returns:
            Up to ``length`` bytes (fewer only at the end of the data), or
            ``None`` if the current snapshot is not at ``index`` (a newer one
            replaced it, or there is none).

        Raises:
            StorageUsageError: a bad argument, or ``offset`` past the end.
            StorageCorruption: the file is shorter than its header says.
            StorageFailure: the Storage failed earlier, or reading failed (a
                failed read changes nothing: the Storage stays usable).
        """
        self._check_usable()
        for name, value in (("index", index), ("offset", offset), ("length", length)):
            if type(value) is not int or value < 0:
                raise StorageUsageError(f"{name} must be a non-negative int, got {value!r}")
        snap = self._snapshot
        if snap is None or snap.meta.index != index:
            return None
        if offset > snap.size:
            raise StorageUsageError(f"offset {offset} is past the snapshot's {snap.size} bytes")
        n = min(length, snap.size - offset)
        if n == 0:
            return b""
        fs = self._fs
        try:
            fd = fs.open(str(snap.path), os.O_RDONLY)
            try:
                data = _pread_exact(fs, fd, n, snap.data_offset + offset)
            finally:
                fs.close(fd)
        except OSError as exc:
            raise StorageFailure(
                f"reading snapshot file {snap.path}: {exc}", errno=exc.errno, path=snap.path
            ) from exc
        if len(data) < n:
            raise StorageCorruption(
                snap.path,
                snap.data_offset + offset + len(data),
                "the snapshot data is shorter than its header says",
            )
        return data

    def iter_snapshot(self, chunk_bytes: int = _READ_BYTES) -> SnapshotReader:
        """The current snapshot's data, ``chunk_bytes`` at a time, CRC-checked.

        For the application to restore its state machine (``RestoreSnapshot``,
        or at start-up from ``recovered().durable.snapshot``) in bounded memory.

        Args:
            chunk_bytes: the size of each chunk (the last may be shorter).

        Returns:
            A :class:`SnapshotReader`: an iterator of ``bytes`` holding its own
            file open; close it if not read to the end.

        Raises:
            StorageUsageError: there is no snapshot, or ``chunk_bytes`` < 1.
            StorageFailure: the Storage failed earlier, or the file cannot be
                opened (the Storage stays usable).
        """
        self._check_usable()
        if type(chunk_bytes) is not int or chunk_bytes < 1:
            raise StorageUsageError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        if self._snapshot is None:
            raise StorageUsageError("there is no snapshot to read")
        return SnapshotReader(self._fs, self._snapshot, chunk_bytes)

    def close(self) -> None:
        """Release the files and the directory lock. Idempotent; never fail-stopped.

        A snapshot being received is abandoned (its next chunk must be offset 0).

        Raises:
            StorageFailure: closing a file failed (what ``write`` returned from
                is durable regardless).
        """
        if self._closed:
            return
        self._closed = True
        if self._failure is not None:
            return  # _fail already released everything
        fds = [self._fd, self._dir_fd]
        if self._incoming is not None:
            fds.append(self._incoming.fd)
            self._incoming.fd = -1
            self._incoming = None
        self._fd = self._dir_fd = -1
        error: OSError | None = None
        for fd in fds:
            try:
                self._fs.close(fd)
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise StorageFailure(
                f"closing the log failed: {error}", errno=error.errno, path=self._dir
            ) from error

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------- internals

    def _check_usable(self) -> None:
        failure = self._failure
        if failure is not None:
            raise StorageFailure(
                f"storage failed earlier and is unusable (fail-stop): {failure}",
                errno=failure.errno,
                path=failure.path,
            ) from failure
        if self._closed:
            raise StorageUsageError(f"storage {self._dir} is closed")

    @contextlib.contextmanager
    def _io(self, what: str, path: Path | None = None) -> Iterator[None]:
        """Rule 5: an error in the block fails the Storage stop."""
        try:
            yield
        except OSError as exc:
            raise self._fail(what, exc, path) from exc
        except BaseException as exc:
            # Interrupted with bytes perhaps on disk: our view of the files is
            # stale, so writing more could corrupt them.
            self._fail(f"{what} (interrupted)", exc, path)
            raise

    def _segment_head(self) -> bytes:
        """The checkpoint the next append must begin with, if it starts a segment."""
        if self._size >= self._segment_bytes or (self._size == 0 and self._seq > 0):
            return _encode_checkpoint(self._shape, self._metadata)
        return b""

    def _append(self, data: bytes, top: int, head: bytes) -> None:
        """Append one group of records (after a checkpoint, in a new segment) and sync."""
        if self._size >= self._segment_bytes:
            self._roll()
        starts = self._size == 0 and self._seq > 0
        if starts:
            # Rule 8: the checkpoint and the batch in one write and one fsync;
            # a torn one is cut back to an empty segment by recovery.
            data = head + data
        _write_all(self._fs, self._fd, data)
        if self._fsync:
            self._fs.fsync(self._fd)
        self._size += len(data)
        self._tops[-1] = max(self._tops[-1], top)
        if starts:
            self._checkpoints[-1] = True

    def _roll(self) -> None:
        seq = self._seq + 1
        path = self._dir / _segment_name(seq)
        fd = self._fs.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        old, self._fd, self._seq, self._size = self._fd, fd, seq, 0
        self._tops.append(0)
        self._checkpoints.append(False)
        self._fs.close(old)
        if self._fsync:
            # The new file and its directory entry must be durable before any
            # record in it is acknowledged.
            self._fs.fsync(fd)
            self._fs.fsync(self._dir_fd)

    def _receive_chunk(self, chunk: SnapshotChunk, membership: bytes) -> _SnapFile | None:
        """Persist step 1: write a chunk; the last one makes the file durable."""
        if chunk.offset == 0:
            old, self._incoming = self._incoming, None
            if old is not None:
                old.close_quietly()
            self._incoming = _SnapshotWriter(
                self._fs, self._dir / _INCOMING, chunk.meta, membership
            )
        writer = self._incoming
        assert writer is not None  # write() checked that the chunk continues it
        writer.write(chunk.data)
        if not chunk.done:
            return None  # no fsync: nothing depends on a partial snapshot
        self._incoming = None
        return self._publish(writer)

    def _publish(self, writer: _SnapshotWriter) -> _SnapFile:
        """Rule 7: temp file durable, then renamed to its final name, durably."""
        written = writer.finish(self._fsync)
        meta = written.meta
        final = self._dir / _snapshot_name(meta.index, meta.term)
        self._fs.rename(str(written.path), str(final))
        if self._fsync:
            self._fs.fsync(self._dir_fd)
        return attrs.evolve(written, path=final)

    def _installed(self, landed: list[_SnapFile]) -> None:
        """The log names ``landed[-1]`` now: delete what it replaced (Rules 7, 8)."""
        old = [s for s in (self._snapshot, *landed[:-1]) if s is not None]
        self._snapshot = landed[-1]
        with self._io("deleting files the new snapshot replaced"):
            for s in old:
                if s.path != self._snapshot.path:
                    self._fs.remove(str(s.path))
            self._compact()

    def _compact(self) -> None:
        """Delete the segments before the first one holding an entry after the
        snapshot (Rule 8): everything in them is in the snapshot or a checkpoint."""
        base = self._shape.base
        tops, checkpoints = self._tops, self._checkpoints
        if not base or len(tops) < 2:
            return
        keep = next((i for i, top in enumerate(tops) if top > base), len(tops) - 1)
        while keep > 0 and not checkpoints[keep]:
            keep -= 1  # replay can start only at a checkpoint
        for _ in range(keep):
            self._fs.remove(str(self._dir / _segment_name(self._first_seq)))
            if self._fsync:
                # Oldest first, each durable before the next: a crash never
                # leaves a gap in the sequence.
                self._fs.fsync(self._dir_fd)
            self._first_seq += 1
            del tops[0], checkpoints[0]

    def _fail(self, what: str, exc: BaseException, path: Path | None = None) -> StorageFailure:
        hint = ""
        if isinstance(exc, OSError) and exc.errno == _errno.ENOSPC:
            hint = " The disk is full."
        failure = StorageFailure(
            f"{what} failed: {exc}.{hint} This Storage is now unusable (fail-stop): a "
            "failed write or fsync is never retried, because the kernel may already have "
            "dropped the data. Restart the node; recovery keeps only complete Persists.",
            errno=exc.errno if isinstance(exc, OSError) else None,
            path=path if path is not None else self._dir / _segment_name(self._seq),
        )
        failure.__cause__ = exc
        self._failure = failure
        fds = [self._fd, self._dir_fd]
        if self._incoming is not None:
            fds.append(self._incoming.fd)
            self._incoming = None
        for fd in fds:
            _close_quietly(self._fs, fd)
        self._fd = self._dir_fd = -1
        return failure


# ---------------------------------------------------------------- helpers


def _write_all(fs: _Fs, fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = fs.write(fd, view)
        if written <= 0:
            raise OSError(_errno.EIO, "write() made no progress")
        view = view[written:]


def _pwrite_all(fs: _Fs, fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = fs.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(_errno.EIO, "pwrite() made no progress")
        view = view[written:]
        offset += written


def _pread_exact(fs: _Fs, fd: int, n: int, offset: int) -> bytes:
    """``n`` bytes at ``offset``, fewer only at the end of the file."""
    data = fs.pread(fd, n, offset)
    if len(data) == n or not data:
        return data
    out = bytearray(data)
    while len(out) < n and (more := fs.pread(fd, n - len(out), offset + len(out))):
        out += more
    return bytes(out)


def _read_file(fs: _Fs, path: Path, fsync: bool) -> bytearray:
    fd = fs.open(str(path), os.O_RDONLY)
    try:
        data = bytearray()
        while chunk := fs.read(fd, 1 << 20):
            data += chunk
        if fsync:
            # What we read may sit only in the page cache (the last process
            # crashed before its fsync); make it durable before acting on it,
            # as PostgreSQL does at the start of crash recovery.
            fs.fsync(fd)
        return data
    finally:
        fs.close(fd)


def _make_dirs(fs: _Fs, directory: Path, fsync: bool) -> None:
    missing = []
    p = directory
    while not fs.isdir(str(p)) and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        fs.mkdir(str(d))
        if fsync:
            # A new directory entry is durable only once its parent is synced.
            fd = fs.open(str(d.parent), os.O_RDONLY | _O_DIRECTORY)
            try:
                fs.fsync(fd)
            finally:
                fs.close(fd)


def _close_quietly(fs: _Fs, fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            fs.close(fd)
