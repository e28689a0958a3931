"""Crash states of graft_trio's storage, ALICE-style (Pillai et al., OSDI'14).

A workload -- bootstrap, appends over rolled segments, a follower replacing a
conflicting suffix (Raft §5.3), a saved snapshot with compaction and an
installed one (Raft §7) -- runs on :class:`RecordingFs`, an in-memory file
system that logs every operation that changes something: file creation,
``write``/``pwrite`` at an offset, ``truncate``, ``fsync`` of a file, ``fsync``
of the directory, ``rename``, ``unlink``.

:func:`crash_states` then builds the directories a crash can leave, under the
weakest ordering POSIX promises (ALICE's "persisted-before" rules):

* a data operation on a file (write, truncate) is durable once a later
  ``fsync`` of *that file* is; before that it may or may not be on disk,
  independently of every other unsynced operation, earlier or later;
* a directory operation (create, rename, unlink) is durable once a later
  ``fsync`` of the directory is; before that, likewise;
* the last unsynced write in a state may be torn at a 512- or 4096-byte
  boundary of the file: what lies after the boundary is missing, zeros or
  garbage.

For every crash point (every prefix of the operation list) it takes the
states "everything issued persisted", "only what an fsync forced", "all but
one unsynced operation", "the forced ones plus one unsynced operation", and
every subset when at most 8 operations are unsynced (14 in the exhaustive
run), each also with its last unsynced write torn at every 512-byte boundary
inside it (4096-byte boundaries are among them). A crash during recovery (its
torn-tail cut, its deletions, a compaction it finishes) is explored the same
way from every state whose recovery changed something. Every state is reopened with
:class:`Storage`, which must recover -- a crash cannot damage synced data, so
``StorageCorruption`` is a failure -- to exactly the effect of the first *m*
Persists (storage Rule 2), where *m* is at least the number acknowledged
before the crash: no acknowledged entry lost, term and vote never going back
(Raft Figure 2). The recovered directory must then reopen to the same state
and take a new append.

``make test`` explores a bounded sample (a few thousand states, printed with
``pytest -s``). The exhaustive run::

    GRAFT_CRASH_STATES=exhaustive .venv/bin/python -m pytest tests/test_crash_states.py -s
"""

from __future__ import annotations

import errno
import itertools
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator

import attrs
import pytest
from test_storage import META, E
from test_storage_snapshots import (
    DATA,
    SnapModel,
    chunk_persists,
    log_of,
    pieces,
    snap,
)

from graft_core import DurableState, Entry, HardState, Membership, Persist, SnapshotMeta
from graft_trio._storage import Storage

EXHAUSTIVE = os.environ.get("GRAFT_CRASH_STATES", "") == "exhaustive"
ROOT = "/crash/data"
SECTOR = 512  # a 4096-byte boundary is also a 512-byte one

# ---------------------------------------------------------------- the recorded file system


@attrs.frozen
class Create:
    name: str
    ino: int


@attrs.frozen
class Write:
    ino: int
    offset: int
    data: bytes


@attrs.frozen
class Truncate:
    ino: int
    size: int


@attrs.frozen
class Fsync:
    ino: int


@attrs.frozen
class FsyncDir:
    pass


@attrs.frozen
class Rename:
    src: str
    dst: str
    ino: int  # the file renamed: a rename is a change to that file's links


@attrs.frozen
class Unlink:
    name: str
    ino: int


Op = Create | Write | Truncate | Fsync | FsyncDir | Rename | Unlink
DATA_OPS = (Write, Truncate)
DIR_OPS = (Create, Rename, Unlink)
_DIR = -1  # the "inode" of a directory file descriptor


class RecordingFs:
    """One data directory in memory (storage's ``_Fs``), logging each change as an :data:`Op`.

    ``names`` maps a file name to an inode number, ``files`` an inode to its bytes.
    """

    def __init__(self, names: dict[str, int] | None = None, files: dict[int, bytes] | None = None):
        self.names: dict[str, int] = dict(names or {})
        self.files: dict[int, bytearray] = {i: bytearray(d) for i, d in (files or {}).items()}
        self.next_ino = max(self.files, default=0) + 1
        self.fds: dict[int, tuple[int, bool]] = {}  # fd -> (inode, O_APPEND)
        self.pos: dict[int, int] = {}
        self.next_fd = 100
        self.ops: list[Op] = []

    @classmethod
    def of(cls, files: dict[str, bytes]) -> RecordingFs:
        names = {n: i for i, n in enumerate(sorted(files), start=1)}
        return cls(names, {names[n]: files[n] for n in files})

    def image(self) -> dict[str, bytes]:
        return {n: bytes(self.files[i]) for n, i in self.names.items()}

    def _name(self, path: str) -> str:
        assert os.path.dirname(path) == ROOT, path
        return os.path.basename(path)

    def _ino(self, fd: int) -> int:
        ino = self.fds[fd][0]
        assert ino != _DIR
        return ino

    def _put(self, ino: int, offset: int, data: bytes | memoryview) -> int:
        data = bytes(data)
        self.ops.append(Write(ino, offset, data))
        apply_write(self.files[ino], offset, data)
        return len(data)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd, self.next_fd = self.next_fd, self.next_fd + 1
        if path == ROOT:
            self.fds[fd] = (_DIR, False)
            return fd
        name = self._name(path)
        ino = self.names.get(name)
        if ino is None:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            ino, self.next_ino = self.next_ino, self.next_ino + 1
            self.files[ino] = bytearray()
            self.names[name] = ino
            self.ops.append(Create(name, ino))
        elif flags & os.O_CREAT and flags & os.O_EXCL:
            raise FileExistsError(errno.EEXIST, "exists", path)
        if flags & os.O_TRUNC and self.files[ino]:
            self.ops.append(Truncate(ino, 0))
            del self.files[ino][:]
        self.fds[fd] = (ino, bool(flags & os.O_APPEND))
        self.pos[fd] = 0
        return fd

    def read(self, fd: int, n: int) -> bytes:
        data = bytes(self.files[self._ino(fd)][self.pos[fd] : self.pos[fd] + n])
        self.pos[fd] += len(data)
        return data

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        return bytes(self.files[self._ino(fd)][offset : offset + n])

    def write(self, fd: int, data: bytes | memoryview) -> int:
        ino, append = self.fds[fd]
        if append:
            self.pos[fd] = len(self.files[ino])
        self.pos[fd] += self._put(ino, self.pos[fd], data)
        return len(data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return self._put(self._ino(fd), offset, data)

    def fsync(self, fd: int) -> None:
        ino = self.fds[fd][0]
        self.ops.append(FsyncDir() if ino == _DIR else Fsync(ino))

    def truncate(self, fd: int, size: int) -> None:
        ino = self._ino(fd)
        self.ops.append(Truncate(ino, size))
        del self.files[ino][size:]

    def close(self, fd: int) -> None:
        if self.fds.pop(fd, None) is None:
            raise OSError(errno.EBADF, "bad file descriptor")

    def rename(self, src: str, dst: str) -> None:
        s, d = self._name(src), self._name(dst)
        self.ops.append(Rename(s, d, self.names[s]))
        self.names[d] = self.names.pop(s)

    def remove(self, path: str) -> None:
        name = self._name(path)
        if name not in self.names:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        self.ops.append(Unlink(name, self.names.pop(name)))

    def listdir(self, path: str) -> list[str]:
        assert path == ROOT
        return list(self.names)

    def mkdir(self, path: str) -> None:
        raise AssertionError(f"unexpected mkdir {path}")

    def isdir(self, path: str) -> bool:
        return path == ROOT

    def lock(self, fd: int) -> None:
        pass


def apply_write(buf: bytearray, offset: int, data: bytes) -> None:
    # A write past the end leaves a hole, which reads as zeros.
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


# ---------------------------------------------------------------- crash states


@attrs.frozen
class Tear:
    """The write ``op`` persisted only up to file offset ``at``; after it, ``fill``."""

    op: int
    at: int
    fill: str  # "cut" (nothing), "zeros" or "garbage"


def replay(
    names: dict[str, int],
    files: dict[int, bytes],
    ops: list[Op],
    keep: frozenset[int],
    tear: Tear | None,
) -> dict[str, bytes]:
    """The directory after a crash that persisted exactly the operations ``keep``."""
    names = dict(names)
    data = {i: bytearray(d) for i, d in files.items()}
    for k in sorted(keep):
        op = ops[k]
        if type(op) is Create:
            data.setdefault(op.ino, bytearray())
            names[op.name] = op.ino
        elif type(op) is Write:
            buf = data.setdefault(op.ino, bytearray())
            payload = op.data
            if tear is not None and tear.op == k:
                head = payload[: tear.at - op.offset]
                rest = len(payload) - len(head)
                if tear.fill == "zeros":
                    payload = head + bytes(rest)
                elif tear.fill == "garbage":
                    payload = head + random.Random(k * 7919 + tear.at).randbytes(rest)
                else:
                    payload = head
            apply_write(buf, op.offset, payload)
        elif type(op) is Truncate:
            del data.setdefault(op.ino, bytearray())[op.size :]
        elif type(op) is Rename:
            # It links the file it renamed under the new name, whether or not
            # that file's creation (or other name changes) persisted too.
            if names.get(op.src) == op.ino:
                del names[op.src]
            names[op.dst] = op.ino
        elif type(op) is Unlink and names.get(op.name) == op.ino:
            del names[op.name]
    return {n: bytes(data.get(i, b"")) for n, i in names.items()}


def forced(ops: list[Op], k: int) -> tuple[set[int], list[int]]:
    """Of the first ``k`` operations: those a later fsync made durable, and the rest
    (the unsynced ones, which a crash may or may not have persisted)."""
    durable: set[int] = set()
    unsynced: list[int] = []
    dir_synced = -1
    synced: dict[int, int] = {}  # inode -> position of its last fsync before k
    for j in range(k):
        op = ops[j]
        if type(op) is FsyncDir:
            dir_synced = j
        elif type(op) is Fsync:
            synced[op.ino] = j
    for j in range(k):
        op = ops[j]
        if isinstance(op, DATA_OPS):
            if synced.get(op.ino, -1) > j:
                durable.add(j)
            else:
                unsynced.append(j)
        elif isinstance(op, DIR_OPS):
            if dir_synced > j:
                durable.add(j)
            else:
                unsynced.append(j)
    return durable, unsynced


def subsets(unsynced: list[int]) -> Iterator[frozenset[int]]:
    """Which unsynced operations persisted, in the states explored."""
    everything = frozenset(unsynced)
    yield everything
    yield frozenset()
    for u in unsynced:
        yield everything - {u}  # every other one persisted "before" it: a reordering
        yield frozenset({u})  # it alone persisted, ahead of those issued before it
    if len(unsynced) <= (14 if EXHAUSTIVE else 8):
        for r in range(2, len(unsynced) - 1):
            for combo in itertools.combinations(unsynced, r):
                yield frozenset(combo)


def tears(ops: list[Op], keep: frozenset[int], unsynced: list[int]) -> Iterator[Tear]:
    """The last unsynced write in ``keep``, torn at every sector boundary inside it."""
    writes = [j for j in unsynced if j in keep and type(ops[j]) is Write]
    if not writes:
        return
    j = writes[-1]
    op = ops[j]
    assert type(op) is Write
    end = op.offset + len(op.data)
    # Every 512-byte boundary (which includes every 4096-byte one).
    for at in range(op.offset - op.offset % SECTOR + SECTOR, end, SECTOR):
        for fill in ("cut", "zeros", "garbage"):
            yield Tear(j, at, fill)


@attrs.frozen
class State:
    point: int  # the crash came before operation ``point``
    keep: frozenset[int]
    tear: Tear | None
    files: dict[str, bytes] = attrs.field(eq=False)


def crash_states(initial: dict[str, bytes], ops: list[Op]) -> Iterator[State]:
    """Every distinct directory the crash rules allow, for every crash point."""
    names = {n: i for i, n in enumerate(sorted(initial), start=1)}
    files = {names[n]: d for n, d in initial.items()}
    seen: set[tuple[frozenset[int], Tear | None]] = set()
    for k in range(len(ops) + 1):
        durable, unsynced = forced(ops, k)
        for extra in subsets(unsynced):
            keep = frozenset(durable | extra)
            for tear in (None, *tears(ops, keep, unsynced)):
                if (keep, tear) in seen:
                    continue
                seen.add((keep, tear))
                yield State(k, keep, tear, replay(names, files, ops, keep, tear))


# ---------------------------------------------------------------- workloads


@attrs.frozen
class Step:
    """One acknowledged call: ``write`` of these Persists, or ``save_snapshot``."""

    persists: tuple[Persist, ...] = ()
    save: tuple[SnapshotMeta, bytes] | None = None


Expected = tuple[DurableState, bytes | None]


def run_workload(
    steps: list[Step], segment_bytes: int
) -> tuple[list[Op], list[int], list[Expected], list[int]]:
    """Run ``steps`` from an empty directory, recording the file operations.

    Returns:
        The operations; ``acked[n]``: how many operations were issued when step
        ``n`` returned (was acknowledged); the states the log may be in, in
        order, one per Persist (Rule 2: a crash keeps a prefix of them) and per
        saved snapshot; ``step_state[n]``: the index into those states once
        step ``n`` is done (``step_state[-1]`` for the open that bootstraps).
    """
    fs = RecordingFs()
    model = SnapModel()
    snap_data: bytes | None = None
    states: list[Expected] = [(model.durable(), None)]
    acked: list[int] = []
    step_state: list[int] = []
    s = Storage.open(ROOT, fs=fs, metadata=META, segment_bytes=segment_bytes)
    boot = len(fs.ops)
    for step in steps:
        if step.save is not None:
            meta, data = step.save
            s.save_snapshot(meta, pieces(data, 300))
            model.land(meta)
            snap_data = data
            states.append((model.durable(), snap_data))
        else:
            s.write(step.persists)
            for p in step.persists:
                model.apply(p)
                if p.snapshot is not None and p.snapshot.done:
                    snap_data = INSTALLED
                states.append((model.durable(), snap_data))
        acked.append(len(fs.ops))
        step_state.append(len(states) - 1)
    s.close()
    return fs.ops, [boot, *acked], states, [0, *step_state]


INSTALLED = bytes(range(251)) * 5  # an installed snapshot's data: spans sectors


def big(term: int, i: int, size: int = 700) -> Entry:
    # Entries of a few hundred bytes: a batch spans several 512-byte sectors.
    return E(term, bytes([i % 256]) * size)


def bootstrap_and_appends() -> list[Step]:
    ps = [Persist(1, HardState(1, "a"), None, 1, ())]
    ps += [Persist(1 + i, None, None, i, (big(1, i),)) for i in range(1, 4)]
    steps = [Step((ps[0],)), Step(tuple(ps[1:3])), Step((ps[3],))]
    # A batch of several Persists, a term change, and a roll to a new segment.
    more = (
        Persist(5, HardState(2, None), None, 4, (big(2, 4, 1500), big(2, 5))),
        Persist(6, HardState(2, "b"), None, 1, ()),
        Persist(7, None, None, 6, (big(2, 6, 5000),)),
    )
    return [*steps, Step(more), Step((Persist(8, None, None, 7, (big(2, 7),)),))]


def truncation() -> list[Step]:
    # A follower holds 1..5, entries 3..5 of term 2 from a deposed leader; the
    # new leader of term 3 overwrites them from 3 on (Raft §5.3).
    steps = [
        Step((Persist(1, HardState(2, "b"), None, 1, (big(1, 1), big(1, 2))),)),
        Step((Persist(2, None, None, 3, (big(2, 3), big(2, 4), big(2, 5))),)),
        Step((Persist(3, HardState(3, None), 3, 3, (big(3, 30, 2000), big(3, 40))),)),
        Step((Persist(4, HardState(3, "c"), None, 5, (big(3, 50),)),)),
    ]
    return steps


def snapshots() -> list[Step]:
    log = log_of(16, term_every=5)
    steps = [Step((p,)) for p in log]
    steps.append(Step(save=(snap(9, 2), DATA * 3)))  # compaction deletes segments
    steps.append(Step((Persist(17, None, None, 17, (big(4, 17),)),)))
    # A leader's snapshot beyond the log, installed in chunks: the log is discarded.
    meta = snap(40, 5, Membership(("a", "b", "c")))
    last = Persist(0, HardState(5, "c"), None, 41, (big(5, 41),))
    chunks = chunk_persists(18, meta, INSTALLED, 600, last)
    steps.append(Step(tuple(chunks[:1])))
    steps.append(Step(tuple(chunks[1:])))
    return steps


WORKLOADS: dict[str, tuple[Callable[[], list[Step]], int]] = {
    "bootstrap+appends": (bootstrap_and_appends, 2048),
    "truncation": (truncation, 1 << 20),
    "snapshot+compaction": (snapshots, 400),
}

# ---------------------------------------------------------------- the check


def recover(files: dict[str, bytes], segment_bytes: int) -> tuple[Expected, RecordingFs]:
    fs = RecordingFs.of(files)
    with Storage.open(ROOT, fs=fs, metadata=META, segment_bytes=segment_bytes) as s:
        durable = s.recovered().durable
        data = b"".join(s.iter_snapshot(1000)) if durable.snapshot is not None else None
    return (durable, data), fs


def check_state(
    state: State,
    acked: list[int],
    states: list[Expected],
    step_state: list[int],
    segment_bytes: int,
) -> tuple[Expected, list[Op]]:
    """Reopen ``state``: check what it recovers; return that and recovery's own operations."""
    where = f"crash before op {state.point}, persisted {sorted(state.keep)}, tear {state.tear}"
    # Steps acknowledged before the crash, and the last one issued.
    done = sum(1 for a in acked if a <= state.point)
    lo = step_state[done - 1] if done else 0
    hi = step_state[min(done, len(step_state) - 1)]
    got, fs = recover(state.files, segment_bytes)
    # Rule 2 and Raft Figure 2: the effect of the first m Persists, m at least
    # what was acknowledged -- no acknowledged entry lost, term and vote
    # never back -- and nothing that was not yet written.
    allowed = states[lo : hi + 1]
    assert got in allowed, f"{where}: recovered {got[0]}, not one of steps {lo}..{hi}"
    hard, floor = got[0].hard_state, states[lo][0].hard_state
    assert hard.term >= floor.term, where
    assert hard.term > floor.term or floor.voted_for in (None, hard.voted_for), where
    # Recovery is idempotent, and the log goes on from where it cut.
    again, _ = recover(fs.image(), segment_bytes)
    assert again == got, where
    durable = got[0]
    base = durable.snapshot.index if durable.snapshot is not None else 0
    last = base + len(durable.entries)
    term = durable.hard_state.term
    more = RecordingFs.of(fs.image())
    with Storage.open(ROOT, fs=more, metadata=META, segment_bytes=segment_bytes) as s:
        s.write([Persist(1, None, None, last + 1, (E(term, b"after"),))])
    after, _ = recover(more.image(), segment_bytes)
    assert after[0].entries == (*durable.entries, E(term, b"after")), where
    return got, fs.ops


def explore(name: str) -> Counter[str]:
    make, segment_bytes = WORKLOADS[name]
    ops, acked, states, step_state = run_workload(make(), segment_bytes)
    counts: Counter[str] = Counter()
    outcomes: set[int] = set()
    for state in crash_states({}, ops):
        got, recovery_ops = check_state(state, acked, states, step_state, segment_bytes)
        outcomes.update(i for i, st in enumerate(states) if st == got)
        counts["states"] += 1
        counts["torn" if state.tear is not None else "untorn"] += 1
        # A second crash, during recovery (cutting the torn tail, deleting
        # leftovers, finishing a compaction): the same guarantees hold.
        if not any(not isinstance(op, (Fsync, FsyncDir)) for op in recovery_ops):
            continue
        for nested in crash_states(state.files, recovery_ops):
            if nested.point == len(recovery_ops) and nested.keep == frozenset(
                range(len(recovery_ops))
            ):
                continue  # recovery finished: checked above
            nested = attrs.evolve(nested, point=state.point)
            check_state(nested, acked, states, step_state, segment_bytes)
            counts["states"] += 1
            counts["during recovery"] += 1
    counts["ops"] = len(ops)
    # The crash points really span the workload: every step's state is reached.
    assert outcomes >= set(step_state), (name, sorted(outcomes))
    return counts


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_crash_state_recovers_without_losing_an_acknowledged_persist(name: str) -> None:
    counts = explore(name)
    print(
        f"\n{name}: {counts['ops']} operations, {counts['states']} crash states "
        f"({counts['torn']} with a torn write, {counts['during recovery']} crashed again "
        f"during recovery){' [exhaustive]' if EXHAUSTIVE else ''}"
    )
    assert counts["torn"] > 0 and counts["during recovery"] > 0


def test_the_recorded_operations_follow_the_storage_rules() -> None:
    """The workloads exercise what the crash rules are about: each acknowledged
    write was fsynced before it returned (Rule 3), new files and renames were
    made durable by a directory fsync (Rules 7, 8)."""
    for name, (make, segment_bytes) in WORKLOADS.items():
        ops, acked, _, _ = run_workload(make(), segment_bytes)
        kinds = Counter(type(op).__name__ for op in ops)
        assert kinds["Write"] and kinds["Fsync"] and kinds["FsyncDir"] and kinds["Create"], name
        created = {op.ino: op.name for op in ops if type(op) is Create}
        for a in acked:
            _, unsynced = forced(ops, a)
            # Rule 3: at an acknowledgement every log write is durable; what
            # may still be unsynced is an incoming snapshot's partial data.
            pending = {created[op.ino] for j in unsynced if isinstance(op := ops[j], DATA_OPS)}
            assert not {n for n in pending if n.endswith(".wal")}, (name, a, pending)
        if name == "snapshot+compaction":
            assert kinds["Unlink"] and kinds["Rename"], kinds
        if name == "truncation":
            assert kinds["Truncate"] == 0  # Rule 1: a truncation is a record, not a file change
