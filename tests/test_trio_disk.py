"""graft_trio's disk thread (``_disk.py``) and the append timeouts the driver keeps.

The disk thread must keep graft_core's ordering contract (``_actions.py``
rule 1: Persists are carried out in ``seq`` order, each whole, and
``PersistCompleted(seq)`` means it and every earlier one are durable), group
queued Persists into one write (thesis §10.2.1's group commit), and stop at
the first failed write (storage Rule 5, fail-stop). These tests drive it with
a recording storage; the timeout test runs a cluster on trio's MockClock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing
from test_trio_mockclock import leader_of, memory_cluster

from graft_core import Entry, Persist
from graft_trio import CommitTimeout
from graft_trio._disk import DiskClosed, DiskThread
from graft_trio._storage import Storage


def persist(seq: int) -> Persist:
    return Persist(seq, None, None, seq, (Entry(1, b"%d" % seq),))


class RecordingStorage:
    """Records each write's seqs; the first write waits for ``release``; ``fail_at`` raises."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.writing = threading.Event()
        self.closed = False
        self.fail_at = fail_at

    def write(self, persists: Sequence[Persist]) -> None:
        self.writing.set()
        self.release.wait(10)
        seqs = [p.seq for p in persists]
        if self.fail_at is not None and self.fail_at in seqs:
            raise OSError(5, "injected EIO")
        self.batches.append(seqs)

    def close(self) -> None:
        self.closed = True


async def test_queued_persists_are_one_group_commit_in_seq_order() -> None:
    """Rule 1 of the contract: in seq order; one write for everything queued meanwhile."""
    storage = RecordingStorage()
    persisted: list[int] = []
    failed: list[BaseException] = []
    disk = DiskThread(cast(Storage, storage), persisted.append, failed.append)
    disk.persist(persist(1))
    await trio.to_thread.run_sync(storage.writing.wait, 10)
    for seq in (2, 3, 4):  # queued while the first write is in progress
        disk.persist(persist(seq))
    storage.release.set()
    # A job queued behind the writes runs after them.
    assert await disk.call(lambda: list(storage.batches)) == [[1], [2, 3, 4]]
    with trio.fail_after(10):
        while persisted != [1, 4]:
            await trio.sleep(0.001)
    disk.stop()
    await trio.to_thread.run_sync(disk.finished.wait, 10)
    assert storage.closed and not failed


async def test_the_first_failed_write_stops_the_disk() -> None:
    """Storage Rule 5: nothing after a failed write is written or acknowledged."""
    storage = RecordingStorage(fail_at=2)
    storage.release.set()
    persisted: list[int] = []
    failed: list[BaseException] = []
    disk = DiskThread(cast(Storage, storage), persisted.append, failed.append)
    disk.persist(persist(1))
    with trio.fail_after(10):
        while persisted != [1]:
            await trio.sleep(0.001)
    disk.persist(persist(2))
    disk.persist(persist(3))
    with trio.fail_after(10):
        while not failed:
            await trio.sleep(0.001)
    with pytest.raises(DiskClosed):
        await disk.call(lambda: None)
    disk.stop()
    await trio.to_thread.run_sync(disk.finished.wait, 10)
    assert storage.batches == [[1]]
    assert persisted == [1]
    assert isinstance(failed[0], OSError)


async def test_append_without_a_quorum_times_out_after_its_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The driver keeps append()'s timeout: accepted, never committed -> CommitTimeout."""
    async with memory_cluster(tmp_path, 3) as (nodes, scopes, _):
        leader = await leader_of(nodes)
        await nodes[leader].append(b"with a quorum")
        for i in nodes:
            if i != leader:
                scopes[i].cancel()
        t0 = trio.current_time()
        # Shorter than the election timeout (10 s): still the leader, so the
        # entry is accepted -- and cannot commit.
        with pytest.raises(CommitTimeout):
            await nodes[leader].append(b"no quorum", timeout=3)
        assert 3 <= trio.current_time() - t0 < 4
