"""Durable storage for one graft node: a write-ahead log in a data directory.

Synchronous file I/O; the trio shell calls it from a worker thread, one call at
a time (a :class:`Storage` is not thread-safe).

Theory of operation
-------------------
The directory holds numbered *segment* files, ``0000000000000000.wal``,
``0000000000000001.wal``, ... Each is a sequence of framed records; replaying
every record of every segment in order rebuilds the node's
:class:`~graft_core.DurableState`, the way etcd's WAL does it.

Rule 1: **append-only.** Every change is a record appended to the newest
segment. Deleting a conflicting suffix of the log (Raft §5.3) is itself a
``TRUNCATE`` record ("entries >= i are void"), so bytes that an fsync made
durable are never rewritten. The one exception is recovery cutting off a torn
tail, which by definition was never acknowledged.

Rule 2: **a Persist is atomic.** One :class:`~graft_core.Persist` becomes
``[TRUNCATE] ENTRY* [HARD_STATE] COMMIT``; replay applies its records only when
it reaches the ``COMMIT``. So what recovery returns is always exactly the effect
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
the node forget a vote or an acknowledged entry (Raft §5.2, §5.4).

Rule 5: **fail-stop.** Any ``OSError`` while writing raises
:class:`StorageFailure` and the object refuses every later call. A failed
fsync is never retried: Linux may already have dropped the dirty pages and
will report the next fsync as a success ("fsyncgate", PostgreSQL 2018).

Rule 6: **records from disk are untrusted.** Lengths are bounded before
anything is sliced, every record is checked by CRC, and replay re-checks the
Raft invariants -- contiguous indexes, non-decreasing terms, hard state term
at least every entry term, at most one vote per term -- raising
:class:`StorageCorruption` on a violation. ``write`` checks the same
invariants on the way in (:class:`StorageUsageError`), so a bug cannot write a
log that will not reopen.

Record format (all integers little-endian)::

    frame       = length:u32  crc:u32  type:u8  payload
                  length = 1 + len(payload); crc = zlib.crc32(type + payload)
    METADATA  1 = str cluster_id, str node_id, u32 n, n * str voter
                  (only as the first record of segment 0)
    ENTRY     2 = index:u64  term:u64  kind:u8  data (the rest)
    TRUNCATE  3 = index:u64                     (entries >= index are void)
    HARD_STATE 4 = term:u64  has_vote:u8  voted_for (UTF-8, the rest)
    COMMIT    5 = records:u32                   (records in this Persist)
    str         = length:u32  UTF-8 bytes
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
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
    Persist,
)

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_ENTRY_BYTES",
    "Metadata",
    "RecoveredState",
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

_ENTRY_HEAD = struct.Struct("<BQQB")  # type, index, term, kind
_TRUNCATE_BODY = struct.Struct("<BQ")
_HARD_HEAD = struct.Struct("<BQB")  # type, term, has_vote
_COMMIT_BODY = struct.Struct("<BI")
_U32 = struct.Struct("<I")
_U64_MAX = (1 << 64) - 1

MAX_ENTRY_BYTES = _MAX_BODY - _ENTRY_HEAD.size
"""The largest entry payload :meth:`Storage.write` accepts."""

_KINDS = {k.value: k for k in EntryKind}
_SEGMENT = re.compile(r"^([0-9a-f]{16})\.wal$")
_TMP_SUFFIX = ".tmp"

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
    """The log on disk is damaged in a way a crash cannot explain (Rule 4).

    Attributes:
        path: the segment file.
        offset: the byte offset of the first bad record in it.
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
        durable: hard state and entries, entry 1 first; hand it to
            :class:`~graft_core.Restart` (or ``graft_core.start``).
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
    def write(self, fd: int, data: bytes | memoryview) -> int: ...
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

    def write(self, fd: int, data: bytes | memoryview) -> int:
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


class _Shape:
    """What validation needs to know of the log: every entry's term, the hard state.

    Changes are staged (``keep``, ``extra``, ``pending_hard``) and become real
    on :meth:`commit`, so a batch that fails validation halfway leaves nothing
    behind. 8 bytes per entry; appending and truncating cost O(change).
    """

    __slots__ = ("extra", "hard", "keep", "pending_hard", "terms")

    def __init__(self) -> None:
        self.terms = array("Q")
        self.keep = 0  # staged: terms[:keep] survive ...
        self.extra: list[int] = []  # ... followed by these
        self.hard = HardState()
        self.pending_hard = self.hard

    @property
    def last_index(self) -> int:
        return self.keep + len(self.extra)

    def term_at(self, index: int) -> int:
        return self.terms[index - 1] if index <= self.keep else self.extra[index - self.keep - 1]

    def truncate(self, index: int) -> None:
        if not 1 <= index <= self.last_index:
            raise _Invalid(f"truncation at {index} outside the log 1..{self.last_index}")
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
            raise _Invalid(
                f"entry {index} has term {term} < {self.term_at(last)}, its predecessor's"
            )
        self.extra.append(term)

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
        # Terms are non-decreasing, so the last entry's term is the largest.
        if last and self.term_at(last) > self.pending_hard.term:
            raise _Invalid(
                f"entry {last} has term {self.term_at(last)}, after the hard state's "
                f"term {self.pending_hard.term}"
            )

    def commit(self) -> None:
        del self.terms[self.keep :]
        self.terms.extend(self.extra)
        self.keep = len(self.terms)
        self.extra.clear()
        self.hard = self.pending_hard

    def rollback(self) -> None:
        self.keep = len(self.terms)
        self.extra.clear()
        self.pending_hard = self.hard


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


def _encode_persist(p: object, shape: _Shape, parts: list[bytes]) -> None:
    """Validate ``p`` against ``shape`` (staging its changes) and append its frames."""
    if type(p) is not Persist:
        raise _Invalid(f"expected a graft_core.Persist, got {type(p).__name__}")
    records = 0
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
    hard = p.hard_state
    if hard is not None:
        if type(hard) is not HardState:
            raise _Invalid(f"hard_state must be a graft_core.HardState, got {hard!r}")
        term, vote = hard.term, hard.voted_for
        if type(term) is not int or not 0 <= term <= _U64_MAX:
            raise _Invalid(f"hard state has an invalid term {term!r}")
        if vote is not None and type(vote) is not str:
            raise _Invalid(f"voted_for must be a str or None, got {vote!r}")
        try:
            vote_bytes = b"" if vote is None else vote.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Invalid(f"voted_for {vote!r} is not encodable as UTF-8") from exc
        shape.set_hard(hard)
        _frame(parts, _HARD_HEAD.pack(_HARD_STATE, term, vote is not None) + vote_bytes)
        records += 1
    if records:
        shape.end_persist()
        _frame(parts, _COMMIT_BODY.pack(_COMMIT, records))


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


# A replayed change, applied to the entry list only at its Persist's COMMIT.
_Change = tuple[int, int] | Entry | HardState


class _Replay:
    """Rebuilds the durable state record by record (Rules 2 and 6)."""

    def __init__(self) -> None:
        self.shape = _Shape()
        self.entries: list[Entry] = []
        self.metadata: Metadata | None = None
        self.pending: list[_Change] = []

    def record_untrusted(
        self, data: bytearray, mv: memoryview, off: int, end: int, first_in_log: bool
    ) -> bool:
        """Apply the frame at ``off``; True if it completed a Persist (or is METADATA)."""
        body = off + _HEADER
        length = end - body
        rtype = data[body]
        shape = self.shape
        if rtype == _ENTRY:
            if length < _ENTRY_HEAD.size:
                raise _Invalid(f"ENTRY record of {length} bytes is too short")
            _, index, term, kind = _ENTRY_HEAD.unpack_from(data, body)
            if kind not in _KINDS:
                raise _Invalid(f"entry {index} has unknown kind {kind}")
            shape.append(index, term)
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
        elif rtype == _COMMIT:
            if length != _COMMIT_BODY.size:
                raise _Invalid(f"COMMIT record of {length} bytes, expected {_COMMIT_BODY.size}")
            _, count = _COMMIT_BODY.unpack_from(data, body)
            if count == 0 or count != len(self.pending):
                raise _Invalid(f"COMMIT of {count} records after {len(self.pending)} records")
            shape.end_persist()
            shape.commit()
            entries = self.entries
            for change in self.pending:
                if type(change) is Entry:
                    entries.append(change)
                elif type(change) is tuple:
                    del entries[change[1] - 1 :]
            self.pending.clear()
            return True
        elif rtype == _METADATA:
            if not first_in_log:
                raise _Invalid("METADATA record after the start of the log")
            self.metadata = _decode_metadata_untrusted(data, body + 1, end)
            return True
        else:
            raise _Invalid(f"unknown record type {rtype}")
        return False

    def discard_pending(self) -> None:
        self.pending.clear()
        self.shape.rollback()


def _replay_segment(
    replay: _Replay, data: bytearray, path: Path, is_first: bool, is_last: bool
) -> int:
    """Replay one segment; return the end of its last complete Persist (Rule 4)."""
    mv = memoryview(data)
    off = 0
    good_end = 0
    n = len(data)
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
            complete = replay.record_untrusted(data, mv, off, end, is_first and off == 0)
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
    return good_end


# ---------------------------------------------------------------- Storage


def _segment_name(seq: int) -> str:
    return f"{seq:016x}.wal"


class Storage:
    """The write-ahead log of one graft node. Create it with :meth:`open`.

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
    ) -> None:
        # Private: use Storage.open(), which recovers the directory first.
        self._fs = fs
        self._dir = directory
        self._dir_fd = dir_fd
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._seq = seq
        self._fd = fd
        self._size = size
        self._shape = shape
        self._recovered = recovered
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
            StorageCorruption: the log is damaged beyond a torn tail (Rule 4).
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
        for i, seq in enumerate(seqs):
            if seq != i:
                raise StorageCorruption(
                    directory / _segment_name(i), 0, "segment file missing from the sequence"
                )
        replay = _Replay()
        last = len(seqs) - 1
        good_end = size = 0
        for i in range(len(seqs)):
            seg = directory / _segment_name(i)
            data = _read_file(fs, seg, fsync)
            good_end = _replay_segment(replay, data, seg, i == 0, i == last)
            size = len(data)
        found = replay.metadata
        if metadata is not None and found != metadata:
            raise StorageMismatch(directory, metadata, found)
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
        except BaseException:
            _close_quietly(fs, fd)
            raise
        shape = replay.shape
        recovered = RecoveredState(
            DurableState(shape.hard, tuple(replay.entries)), found, size - good_end
        )
        return cls(
            fs=fs,
            directory=directory,
            dir_fd=dir_fd,
            fsync=fsync,
            segment_bytes=segment_bytes,
            seq=last,
            fd=fd,
            size=good_end,
            shape=shape,
            recovered=recovered,
        )

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

        Args:
            persists: the Persist actions, in ``seq`` order.

        Raises:
            StorageUsageError: a Persist breaks the log's invariants (a gap,
                decreasing terms, an entry after the hard state's term, a second
                vote in a term, ...). Nothing of the batch was written.
            StorageFailure: an I/O error. The batch may or may not be durable;
                the Storage refuses every later call (Rule 5).
        """
        self._check_usable()
        shape = self._shape
        parts: list[bytes] = []
        try:
            for p in persists:
                _encode_persist(p, shape, parts)
        except _Invalid as exc:
            shape.rollback()
            raise StorageUsageError(f"invalid Persist: {exc}") from None
        if not parts:
            return
        data = b"".join(parts)
        try:
            if self._size >= self._segment_bytes:
                self._roll()
            _write_all(self._fs, self._fd, data)
            if self._fsync:
                self._fs.fsync(self._fd)
        except OSError as exc:
            raise self._fail(f"writing {len(data)} bytes to the log", exc) from exc
        except BaseException as exc:
            # Interrupted with bytes perhaps on disk: our view of the log is
            # stale, so appending more could corrupt it.
            self._fail("writing to the log (interrupted)", exc)
            raise
        self._size += len(data)
        shape.commit()

    def close(self) -> None:
        """Release the files and the directory lock. Idempotent; never fail-stopped.

        Raises:
            StorageFailure: closing a file failed (what ``write`` returned from
                is durable regardless).
        """
        if self._closed:
            return
        self._closed = True
        if self._failure is not None:
            return  # _fail already released everything
        fds, self._fd, self._dir_fd = (self._fd, self._dir_fd), -1, -1
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

    def _roll(self) -> None:
        seq = self._seq + 1
        path = self._dir / _segment_name(seq)
        fd = self._fs.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        old, self._fd, self._seq, self._size = self._fd, fd, seq, 0
        self._fs.close(old)
        if self._fsync:
            # The new file and its directory entry must be durable before any
            # record in it is acknowledged.
            self._fs.fsync(fd)
            self._fs.fsync(self._dir_fd)

    def _fail(self, what: str, exc: BaseException) -> StorageFailure:
        hint = ""
        if isinstance(exc, OSError) and exc.errno == _errno.ENOSPC:
            hint = " The disk is full."
        failure = StorageFailure(
            f"{what} failed: {exc}.{hint} This Storage is now unusable (fail-stop): a "
            "failed write or fsync is never retried, because the kernel may already have "
            "dropped the data. Restart the node; recovery keeps only complete Persists.",
            errno=exc.errno if isinstance(exc, OSError) else None,
            path=self._dir / _segment_name(self._seq),
        )
        failure.__cause__ = exc
        self._failure = failure
        for fd in (self._fd, self._dir_fd):
            _close_quietly(self._fs, fd)
        self._fd = self._dir_fd = -1
        return failure


# ---------------------------------------------------------------- helpers


def _write_all(fs: _Fs, fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = fs.write(fd, view)
        if written <= 0:
            raise OSError(_errno.EIO, "write() made no progress")
        view = view[written:]


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
