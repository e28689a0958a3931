"""The node's disk: every storage operation, in order, off the trio thread.

Theory of operation
-------------------
``Storage`` is synchronous and not thread-safe, and an fsync takes long
enough that the trio thread must not wait for it. So one long-lived worker
thread, :class:`DiskThread`, owns the storage while the node runs:

* the driver hands it each ``Persist`` as the core emits it
  (:meth:`DiskThread.persist`, which never blocks); the thread takes every
  ``Persist`` queued by the time it gets to them and writes them as one group
  commit (one ``Storage.write``, one fsync; thesis §10.2.1), then reports the
  last ``seq`` back to the trio thread (``on_persisted``);
* anything else -- a snapshot to save or read -- is a job queued behind the
  writes before it (:meth:`DiskThread.call`), so there is no lock to take.

Why a thread of our own rather than ``trio.to_thread.run_sync`` per write:
that costs a thread-cache hand-off and a task wake-up per call, twice on the
critical path of every replicated write (the follower's fsync); here the
driver enqueues without a task switch and the answer comes back through
``TrioToken.run_sync_soon``.

Fail-stop (storage Rule 5): the first failed write is reported
(``on_failed``) and the thread writes nothing more -- a Persist after a
failed one must never become durable, or be acknowledged, out of order.
:class:`InlineDisk` has the same interface and does the work on the spot,
for tests on trio's ``MockClock`` (a thread would let the clock jump while a
write is in progress).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import outcome
import trio

from graft_core import Persist
from graft_trio._storage import Storage

_T = TypeVar("_T")
# A job: a Persist, or (function, its args, where the outcome goes), or _STOP.
_Call = tuple[Callable[..., Any], tuple[object, ...], Callable[[outcome.Outcome[Any]], None]]
_STOP = object()


class DiskClosed(Exception):
    """The disk was stopped (or failed) before the operation could run."""


class DiskThread:
    """One worker thread doing every storage operation of a node, in order.

    Args:
        storage: the open storage; the thread closes it when stopped.
        on_persisted: called in the trio thread with the ``seq`` of the last
            Persist of each group commit, once it is durable.
        on_failed: called in the trio thread with the exception of the first
            failed write; nothing is written after it.
    """

    def __init__(
        self,
        storage: Storage,
        on_persisted: Callable[[int], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self._storage = storage
        self._on_persisted = on_persisted
        self._on_failed = on_failed
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._stopping = False
        self._failed = False
        #: Set once the thread has closed the storage and ended.
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._main, name="graft-disk", daemon=True)
        self._thread.start()

    def persist(self, p: Persist) -> None:
        """Queue ``p`` for writing (Persists are written in the order queued)."""
        self._jobs.put(p)

    async def call(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run ``fn(*args)`` in the thread after everything queued before; return its result.

        Raises:
            DiskClosed: the disk was stopped, or a write failed, first.
        """
        if self._stopping or self._failed:
            raise DiskClosed("the disk is stopped")
        done = trio.Event()
        result: list[outcome.Outcome[_T]] = []

        def deliver(o: outcome.Outcome[_T]) -> None:
            result.append(o)
            done.set()

        self._jobs.put((fn, args, deliver))
        await done.wait()
        return result[0].unwrap()

    def stop(self) -> None:
        """Drop the jobs not started yet, then close the storage and end the thread."""
        self._stopping = True
        self._jobs.put(_STOP)

    # ---------------------------------------------------------------- the thread

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        # (RunFinishedError: the node is gone; nobody is waiting for this any more.)
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _main(self) -> None:
        try:
            self._serve()
        finally:
            try:
                self._storage.close()
            finally:
                self.finished.set()

    def _serve(self) -> None:
        jobs = self._jobs
        next_job: object = None
        while True:
            job = jobs.get() if next_job is None else next_job
            next_job = None
            if job is _STOP:
                return
            if self._stopping or self._failed:
                if type(job) is not Persist:  # (nobody waits for a Persist)
                    closed = DiskClosed("the disk is stopped")
                    self._post(cast(_Call, job)[2], outcome.Error(closed))
                continue
            if type(job) is Persist:
                # Group commit: every Persist queued by now, in one write.
                batch = [job]
                while True:
                    try:
                        more = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if type(more) is not Persist:
                        next_job = more
                        break
                    batch.append(more)
                try:
                    self._storage.write(batch)
                except BaseException as e:
                    self._failed = True
                    self._post(self._on_failed, e)
                    continue
                self._post(self._on_persisted, batch[-1].seq)
            else:
                call = cast(_Call, job)
                self._post(call[2], outcome.capture(call[0], *call[1]))


class InlineDisk:
    """:class:`DiskThread`'s interface, doing each operation at once in the caller's thread."""

    def __init__(
        self,
        storage: Storage,
        on_persisted: Callable[[int], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self._storage = storage
        self._on_persisted = on_persisted
        self._on_failed = on_failed
        self._failed = False
        self.finished = threading.Event()

    def persist(self, p: Persist) -> None:
        if self._failed:
            return
        try:
            self._storage.write([p])
        except BaseException as e:
            self._failed = True
            self._on_failed(e)
            return
        self._on_persisted(p.seq)

    async def call(self, fn: Callable[..., _T], *args: object) -> _T:
        await trio.lowlevel.checkpoint()
        if self._failed or self.finished.is_set():
            raise DiskClosed("the disk is stopped")
        return fn(*args)

    def stop(self) -> None:
        if not self.finished.is_set():
            self._storage.close()
            self.finished.set()
