"""Disk faults at node level: what a graft_trio node acknowledges, and when it stops.

Extends ``test_trio_failstop.py`` (fail-stop on EIO/ENOSPC, the majority
carries on, the repaired node rejoins) with what that test cannot see:

* **acks against durability**: :class:`AuditDisk` remembers, at each
  successful fsync, how many bytes of each log file it made durable. Every
  AppendEntries success the victim sends and every ``append()`` that returns
  on a survivor is checked afterwards against the log *as those fsyncs left
  it* -- reopened from the synced prefix of each file alone, what a power
  loss right then would have kept. An acknowledged index must be there, on
  the acking node, and on a majority for a committed ``append()`` (Raft
  Figure 2: persistent state is "updated on stable storage before responding
  to RPCs"; §5.3 "safely replicated").
* **fsyncgate**: a failed fsync that the disk would report as a success if
  asked again (``fsync-eio-once``, the Linux behaviour PostgreSQL hit in
  2018) -- the node never asks again: after the failure its disk sees no
  write and no fsync until it is restarted (storage Rule 5).
* **EIO on read**: a node whose data directory cannot be read at start-up
  refuses to start with the typed ``StorageFailure`` (errno EIO), and the
  other two run without it.
* **mid-log corruption**: a node whose log has a damaged record in its middle
  refuses to start with ``StorageCorruption`` naming the file, the offset and
  the way to recover (wipe the data directory, rejoin from the peers), and
  recovers exactly that way.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from test_trio_failstop import (
    DyingDisk,
    Harness,
    cluster,
    data,
    leaves,
    wait_committed,
    wait_for_leader,
)

from graft_core import AppendResponse, Message
from graft_trio import Node, _storage
from graft_trio._storage import Storage, StorageCorruption, StorageFailure

Sizes = dict[str, int]  # log file name -> bytes an fsync made durable


class AuditDisk(DyingDisk):
    """:class:`DyingDisk` that also records what each fsync made durable, and every
    write and fsync attempted after the first failure.

    Faults added: ``read-eio`` (every read fails with EIO) and ``fsync-eio-once``
    (one fsync fails; the disk then works, so a retried fsync would "succeed").
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._paths: dict[int, str] = {}
        self.synced: Sizes = {}
        self.after_failure = 0  # writes and fsyncs attempted after a failure

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        with self._lock:
            self._paths[fd] = path
        return fd

    def read(self, fd: int, n: int) -> bytes:
        if self.fault == "read-eio":
            self._raise(errno.EIO)
        return super().read(fd, n)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.failures:
            self.after_failure += 1
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.failures:
            self.after_failure += 1
        if self.fault == "fsync-eio-once":
            self.fault = None
            self._raise(errno.EIO)
        super().fsync(fd)
        path = self._paths.get(fd, "")
        if path.endswith(".wal"):
            with self._lock:
                self.synced[os.path.basename(path)] = os.fstat(fd).st_size

    def snapshot(self) -> Sizes:
        with self._lock:
            return dict(self.synced)


def durable_last_index(directory: Path, sizes: Sizes) -> int:
    """The last index of the log a power loss would have left: each file cut to
    what its last fsync covered, reopened."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in sizes.items():
            with open(directory / name, "rb") as f:
                (Path(tmp) / name).write_bytes(f.read(size))
        with Storage.open(tmp, fsync=False) as s:
            durable = s.recovered().durable
    base = durable.snapshot.index if durable.snapshot is not None else 0
    return base + len(durable.entries)


@pytest.fixture
def audit_disks(monkeypatch: pytest.MonkeyPatch) -> None:
    # test_trio_failstop's cluster() gives each node a DyingDisk: make it ours.
    import test_trio_failstop

    monkeypatch.setattr(test_trio_failstop, "DyingDisk", AuditDisk)


def record_acks(node: Node, disk: AuditDisk, acks: list[tuple[int, Sizes]]) -> None:
    """Record each AppendEntries success ``node`` sends, with what was durable then."""
    send = node._send

    def audited(m: Message) -> None:
        if type(m) is AppendResponse and m.success:
            acks.append((m.index, disk.snapshot()))
        send(m)

    node._send = audited  # type: ignore[method-assign]


FAULTS = {
    "write-eio": errno.EIO,
    "fsync-eio": errno.EIO,
    "fsync-eio-once": errno.EIO,
    "write-enospc": errno.ENOSPC,
}


@pytest.mark.usefixtures("audit_disks")
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_a_follower_acknowledges_only_what_it_made_durable_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    async with cluster(tmp_path, monkeypatch) as h:
        leader = await wait_for_leader(h.nodes)
        victim = min(set(h.nodes) - {leader})
        disk = h.disks[victim]
        assert isinstance(disk, AuditDisk)
        acks: list[tuple[int, Sizes]] = []
        record_acks(h.nodes[victim], disk, acks)
        committed: list[tuple[int, dict[str, Sizes]]] = []
        audits = {i: d for i, d in h.disks.items() if isinstance(d, AuditDisk)}
        assert len(audits) == 3

        async def append(payload: bytes) -> None:
            index = (await h.nodes[leader].append(payload, timeout=5)).index
            # What each node had made durable when the append returned.
            committed.append((index, {i: d.snapshot() for i, d in audits.items()}))

        for k in range(3):
            await append(b"before %d" % k)
        await wait_committed(h.nodes, [b"before 0", b"before 1", b"before 2"])
        failing_index = h.nodes[victim].status().last_index + 1
        disk.arm(fault)
        for k in range(3):  # the victim's disk fails on the first; the rest commit without it
            await append(b"after %d" % k)
        with trio.fail_after(5):
            await h.ended[victim].wait()

        exc = h.outcome[victim]
        assert exc is not None and [type(e) for e in leaves(exc)] == [StorageFailure]
        failure = leaves(exc)[0]
        assert isinstance(failure, StorageFailure) and failure.errno == FAULTS[fault]
        # Rule 5: after the failure the disk saw no other write or fsync -- in
        # particular no retried fsync, which fsync-eio-once would have passed.
        assert disk.after_failure == 0
        # The victim's acks: each index it acknowledged was durable on it.
        assert acks and max(i for i, _ in acks) < failing_index
        for index, sizes in acks:
            assert durable_last_index(tmp_path / victim, sizes) >= index, (index, sizes)
        # Every append() that returned was durable on a majority at that moment.
        for index, by_node in committed:
            holders = [
                i for i, sizes in by_node.items()
                if durable_last_index(tmp_path / i, sizes) >= index
            ]
            assert len(holders) >= 2, (index, holders)
        alive = h.alive()
        await wait_committed(alive, data(alive[leader]))
        assert data(alive[leader])[-3:] == [b"after 0", b"after 1", b"after 2"]


async def _run_cluster_once(tmp: Path, addrs: dict[str, tuple[str, int]]) -> None:
    """Start three nodes on ``tmp``, commit one entry, stop them all."""
    async with trio.open_nursery() as nursery:
        h = Harness(tmp, addrs, {}, nursery)
        for i in addrs:
            await h.start(i)
        leader = await wait_for_leader(h.nodes)
        await h.nodes[leader].append(b"first life", timeout=5)
        await wait_committed(h.nodes, [b"first life"])
        nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("audit_disks")
async def test_eio_reading_the_log_at_start_up_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft_trio.testing import free_ports

    ids = ["n0", "n1", "n2"]
    addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(3), strict=True)}
    await _run_cluster_once(tmp_path, addrs)
    disk = AuditDisk()
    disk.arm("read-eio")
    real_open = _storage.Storage.open

    def open_with_disk(path: Path | str, **kw: Any) -> Storage:
        if Path(path) == tmp_path / "n0":
            kw["fs"] = disk
        return real_open(path, **kw)

    monkeypatch.setattr(_storage.Storage, "open", open_with_disk)
    async with trio.open_nursery() as nursery:
        h = Harness(tmp_path, addrs, {}, nursery)
        with pytest.raises(StorageFailure) as info:
            await nursery.start(h.make("n0").run)
        assert info.value.errno == errno.EIO and disk.failures >= 1
        for i in ("n1", "n2"):
            await h.start(i)
        alive = h.alive()
        assert sorted(alive) == ["n1", "n2"]
        leader = await wait_for_leader(alive)
        await alive[leader].append(b"without n0", timeout=5)
        await wait_committed(alive, [b"first life", b"without n0"])
        nursery.cancel_scope.cancel()


async def test_mid_log_corruption_refuses_to_start_and_names_the_way_back(
    tmp_path: Path,
) -> None:
    """Rule 4 at node level: never start on a log that lost a synced record."""
    from test_storage import frames

    from graft_trio.testing import free_ports

    ids = ["n0", "n1", "n2"]
    addrs = {i: ("127.0.0.1", p) for i, p in zip(ids, free_ports(3), strict=True)}
    await _run_cluster_once(tmp_path, addrs)
    seg = sorted((tmp_path / "n0").glob("*.wal"))[-1]
    records = frames(seg)
    off, end, _ = records[len(records) // 2]
    damaged = bytearray(seg.read_bytes())
    damaged[(off + end) // 2] ^= 0x5A
    seg.write_bytes(bytes(damaged))

    async with trio.open_nursery() as nursery:
        h = Harness(tmp_path, addrs, {}, nursery)
        with pytest.raises(StorageCorruption) as info:
            await nursery.start(h.make("n0").run)
        message = str(info.value)
        assert info.value.path == seg and info.value.offset == off
        assert str(seg) in message and f"offset {off}" in message
        assert "empty data directory" in message and "catches up from its peers" in message
        assert seg.read_bytes() == bytes(damaged)  # nothing "repaired" away
        for i in ("n1", "n2"):
            await h.start(i)
        leader = await wait_for_leader(h.alive())
        await h.alive()[leader].append(b"without n0", timeout=5)

        # The documented way back: move the directory aside, start empty, catch up.
        shutil.move(tmp_path / "n0", tmp_path / "n0.corrupt")
        await h.start("n0")
        await wait_committed(h.alive(), [b"first life", b"without n0"])
        nursery.cancel_scope.cancel()


def test_the_audit_sees_an_unsynced_tail(tmp_path: Path) -> None:
    """The audit itself: bytes written but not fsynced do not count as durable."""
    disk = AuditDisk()
    from test_storage import HISTORY

    with Storage.open(tmp_path, fs=disk) as s:
        s.write(HISTORY[:1])
        synced = disk.snapshot()
        assert durable_last_index(tmp_path, synced) == 2
    with Storage.open(tmp_path, fsync=False) as s:
        s.write(HISTORY[1:2])  # entry 3, never fsynced
        assert s.recovered().durable.entries  # (the log before it)
    assert durable_last_index(tmp_path, disk.snapshot()) == 2
    assert durable_last_index(tmp_path, {name: 1 << 30 for name in synced}) == 3
