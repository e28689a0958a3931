"""A graft node over TCP: graft_core driven by trio, with durable storage.

Theory of operation
-------------------
One task -- the *driver* -- owns the core's state. Everything that happens to
the node (a message from a peer, an application's proposal, a write reaching
disk, a deadline passing) is put on one memory channel as a graft_core event;
the driver steps the core with it and carries out the actions:

* ``Send`` goes to that peer's outgoing queue (bounded; a full queue drops
  the message -- Raft retries -- so a slow or dead peer never blocks others);
* ``Persist`` goes straight to the node's disk thread (``_disk.py``), which
  writes everything queued so far as one group commit (one fsync) and then
  feeds back ``PersistCompleted``;
* ``Apply`` appends to the committed-entry list and wakes readers;
* ``ProposalAccepted/Rejected`` resolve the waiting ``append()`` calls.

Time is trio's clock (so tests run under ``MockClock``); the driver sleeps
until the core's ``next_deadline()`` or the next event, whichever is first.
The service owns its nursery (``run``), starts with ``task_status.started()``
and stops when cancelled; a storage failure stops the node (fail-stop).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from graft_core import (
    AppendRequest,
    Apply,
    ChangeMembership,
    ChangeOp,
    Config,
    EntryKind,
    Event,
    EventError,
    GraftError,
    Membership,
    MembershipChanged,
    Message,
    MessageDropped,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    ProposalAccepted,
    ProposalRejected,
    Propose,
    ProposeMany,
    ReadIndex,
    ReadReady,
    ReadRejected,
    RejectReason,
    RestoreSnapshot,
    Role,
    RoleChanged,
    Send,
    SendSnapshot,
    SnapshotMeta,
    SnapshotSaved,
    Tick,
    TransferAborted,
    TransferLeadership,
    start,
    step,
)
from graft_core._rand import stable_key
from graft_trio import _disk, _network, _storage, _tls, _wire

log = logging.getLogger("graft_trio")
#: accept() errors that mean "out of resources for now", not "the listener is broken".
_ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_T = TypeVar("_T")
#: How long shutdown waits for an abandoned write before leaving the storage open.
_CLOSE_WAIT = 5.0


class NodeError(GraftError):
    """Base class of errors the trio node raises to the application."""


class NotStarted(NodeError):
    """The node is not running (never started, or already closed)."""


class NoLeader(NodeError):
    """No leader was known within the timeout; the entry was not appended."""


class CommitTimeout(NodeError):
    """The entry was appended but not seen committed in time: the outcome is unknown."""


class PayloadTooLarge(NodeError, ValueError):
    """The payload exceeds ``Options.max_payload_bytes``."""


class Rejected(NodeError):
    """The leader refused the entry (for example flow control); it was not appended."""


class StartupError(NodeError):
    """The node cannot start: a bad configuration or a data directory that disagrees."""


class NotLeader(NodeError):
    """Only the leader can do this; ``leader`` names it if known."""

    def __init__(self, message: str, leader: str | None) -> None:
        super().__init__(message)
        self.leader = leader


class Compacted(NodeError, LookupError):
    """The entries asked for were compacted into a snapshot.

    Restore the state machine from :meth:`Node.read_snapshot` (it covers every
    entry up to ``snapshot_index``) and read on from the entry after it.
    """

    def __init__(self, message: str, snapshot_index: int) -> None:
        super().__init__(message)
        self.snapshot_index = snapshot_index


class MembershipError(NodeError):
    """The leader refused a membership change (see the message and ``reason``)."""

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.reason = reason


class TransferFailed(NodeError):
    """A leadership transfer did not happen (aborted, or timed out)."""


@attrs.frozen
class Options:
    """Tuning of a node. Times in seconds."""

    heartbeat_interval: float = 0.1
    election_timeout: float = 1.0
    max_payload_bytes: int = 1 << 20
    append_timeout: float = 5.0
    peer_queue: int = 4096
    max_frame_bytes: int = 16 << 20
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0
    fsync: bool = True
    pre_vote: bool = True
    check_quorum: bool = True
    #: Serve read barriers from the leader lease when valid (thesis §6.4.1).
    lease_reads: bool = False
    #: Entries kept before a snapshot for slightly slow followers.
    snapshot_trailing_entries: int = 1024
    #: The largest InstallSnapshot chunk sent to a follower.
    snapshot_chunk_bytes: int = 1 << 20
    seed: int | None = None
    #: Write to disk in a worker thread (the default, so the node keeps serving
    #: during an fsync). Tests on trio's MockClock write inline instead: a thread
    #: makes the clock jump while the write is in progress.
    disk_in_thread: bool = True
    #: A connection must deliver its whole HELLO within this time of opening,
    #: or be closed: half-open connections and slow-loris peers that never
    #: introduce themselves must not hold a task and a socket for ever.
    handshake_timeout: float = 5.0
    #: Once a frame's first byte has arrived, the whole frame must arrive within
    #: this time (a peer stalled mid-frame holds its buffer). Silence *between*
    #: frames is fine: followers exchange nothing while a leader is stable.
    #: Allow for ``max_frame_bytes`` at the slowest link's rate.
    frame_timeout: float = 30.0
    #: At most this many accepted connections may be waiting for their HELLO
    #: (or TLS handshake); more are closed at once and counted
    #: (``too_many_connections``), so a flood of connections cannot exhaust
    #: the process's file descriptors.
    max_pending_connections: int = 256


@attrs.frozen
class CommittedEntry:
    """One committed entry as the application sees it.

    ``noop`` marks the empty entries new leaders write (Raft §8); the pull API
    includes them so indexes stay dense, subscriptions and callbacks skip them.
    """

    index: int
    term: int
    data: bytes
    noop: bool = False


@attrs.frozen
class SnapshotRestored:
    """In a subscription: the entries up to ``index`` were replaced by a snapshot.

    The state machine must be restored from :meth:`Node.read_snapshot`, which
    returns the latest snapshot -- possibly newer than ``index``; skip the
    entries it covers.
    """

    index: int
    term: int


@attrs.frozen
class AppendResult:
    index: int
    term: int


@attrs.frozen
class PeerStatus:
    match_index: int
    next_index: int
    state: str


@attrs.frozen
class Status:
    node_id: str
    role: Role
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    last_index: int
    peers: Mapping[str, PeerStatus]
    membership: Membership
    snapshot_index: int
    #: Peer connections closed for bad input, by reason (a ``WireError``
    #: subclass's ``reason``: ``wrong_cluster``, ``handshake_timeout``, ...).
    rejected: Mapping[str, int] = attrs.Factory(dict)


Address = _network.Address


class Node:
    """A Raft node over TCP.

    Args:
        node_id: this node's id, unique in the cluster.
        address: where it listens, ``(host, port)``.
        peers: every *other* member's id and address.
        data_dir: where it keeps its log and hard state.
        cluster_id: checked on every connection, so two clusters never mix.
        options: timing and limits.
        network: how to reach peers; real TCP unless a test passes a
            :class:`~graft_trio.MemoryNetwork`.
        joining: this node is new to a running cluster whose members are
            ``peers``: it starts as a non-member that never campaigns, and is
            brought in by the leader's :meth:`add_learner` / :meth:`add_voter`.
        tls: mutual TLS with every peer (:class:`~graft_trio.TlsConfig`): the
            connections go through :class:`~graft_trio.TlsNetwork` over
            ``network``, and each peer's HELLO must claim the node id its
            certificate names.

    Raises:
        StartupError: ``node_id`` among ``peers``, an invalid configuration,
            or TLS files that cannot be loaded.
    """

    def __init__(
        self,
        node_id: str,
        address: Address,
        peers: Mapping[str, Address],
        data_dir: Path | str,
        *,
        cluster_id: str = "graft",
        options: Options = Options(),
        network: _network.Network | None = None,
        joining: bool = False,
        tls: _tls.TlsConfig | None = None,
    ) -> None:
        if node_id in peers:
            raise StartupError(f"node id {node_id!r} is also listed among its peers")
        if type(options.max_pending_connections) is not int or options.max_pending_connections < 1:
            raise StartupError("Options.max_pending_connections must be a positive int, "
                               f"not {options.max_pending_connections!r}")
        if not (options.handshake_timeout > 0 and options.frame_timeout > 0):
            # Checked here, not when the first peer connects (trio would raise then).
            raise StartupError("Options.handshake_timeout and frame_timeout must be positive, "
                               f"not {options.handshake_timeout!r}, {options.frame_timeout!r}")
        self.node_id = node_id
        self.address = address
        self.peers = dict(peers)
        self.data_dir = Path(data_dir)
        self.cluster_id = cluster_id
        self.options = options
        self._network: _network.Network = network if network is not None else _network.TcpNetwork()
        if tls is not None:
            try:
                self._network = _network.TlsNetwork(tls, self._network)
            except _tls.TlsConfigError as e:
                raise StartupError(str(e)) from e
        voters = tuple(sorted(peers)) if joining else tuple(sorted((node_id, *peers)))
        ms = 1000
        try:
            self.config = Config(
                node_id,
                voters,
                joining=joining,
                lease_reads=options.lease_reads,
                snapshot_trailing_entries=options.snapshot_trailing_entries,
                snapshot_chunk_bytes=options.snapshot_chunk_bytes,
                seed=options.seed if options.seed is not None else stable_key(node_id),
                heartbeat_interval=max(1, int(options.heartbeat_interval * ms)),
                election_timeout=max(2, int(options.election_timeout * ms)),
                max_proposal_bytes=options.max_payload_bytes,
                pre_vote=options.pre_vote,
                check_quorum=options.check_quorum,
            )
        except GraftError as e:
            raise StartupError(str(e)) from e
        self._running = False
        self._closed = False
        self._state: NodeState | None = None
        self._events_send, self._events_recv = trio.open_memory_channel[Event](math.inf)
        self._queues: dict[str, tuple[trio.MemorySendChannel[Message],
                                      trio.MemoryReceiveChannel[Message]]] = {}
        #: Committed entries from index ``_first`` on (earlier ones were compacted),
        #: as ``(term, data, noop)``: tuples of atoms, which the garbage collector
        #: stops tracking -- a long log of objects would make every full
        #: collection walk it. CommittedEntry objects are made as they are read.
        self._committed: list[tuple[int, bytes, bool]] = []
        self._first = 1
        self._restored: SnapshotRestored | None = None
        self._committed_changed = trio.Event()
        self._callbacks: list[
            tuple[int, Callable[[CommittedEntry], None], Callable[[SnapshotRestored], None] | None]
        ] = []
        self._membership_callbacks: list[Callable[[Membership], None]] = []
        self._reads: dict[int, _PendingRead] = {}
        self._transfers: list[_PendingTransfer] = []
        self._role_changed = trio.Event()
        self._waiting: dict[int, _Pending] = {}
        #: Appends waiting, by deadline (nearly always the order they came in).
        self._deadlines: collections.deque[_Pending] = collections.deque()
        #: Accepted appends by the index they wait for (a list when several do).
        self._by_index: dict[int, _Pending | list[_Pending]] = {}
        #: peer -> the cancel scope of its accepted connection (the newest wins).
        self._links: dict[str, trio.CancelScope] = {}
        #: peer -> the cancel scope of our dialer to it (we dial larger ids).
        self._dialers: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        #: Does every storage operation, in order (storage is not thread-safe).
        self._disk_io: _disk.DiskThread | _disk.InlineDisk | None = None
        self._disk_failed = trio.Event()
        # Request ids (proposals, forwarded proposals, reads) start at a random
        # point in every incarnation: an answer the leader queued for this
        # node's previous process (same node id, ids from 1 again) must not
        # resolve a new request that happens to reuse its id.
        self._next_request = secrets.randbits(62)
        self._t0 = 0.0
        self._storage: _storage.Storage | None = None
        self._listen_port: int | None = None
        self._failure: BaseException | None = None
        self.dropped_frames = 0
        self._rejected: collections.Counter[str] = collections.Counter()
        #: Accepted connections not yet identified by their HELLO.
        self._pending_connections = 0

    # ------------------------------------------------------------------ lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled. Use with ``await nursery.start(node.run)``.

        Raises:
            StartupError: the data directory belongs to another cluster/node or
                membership.
            StorageCorruption: the data directory is corrupt (see its message).
            ExceptionGroup[StorageFailure]: a disk error stopped the node
                (fail-stop: nothing unwritten was acknowledged); catch it with
                ``except* StorageFailure``.
        """
        if self._running or self._closed:
            raise StartupError("a Node runs once")
        meta = _storage.Metadata(self.cluster_id, self.node_id, self.config.voters)
        try:
            fsync = self.options.fsync

            def open_storage() -> _storage.Storage:
                return _storage.Storage.open(self.data_dir, metadata=meta, fsync=fsync)

            if self.options.disk_in_thread:
                storage = await trio.to_thread.run_sync(open_storage)
            else:
                storage = open_storage()
        except _storage.StorageMismatch as e:
            raise StartupError(str(e)) from e
        self._storage = storage
        recovered = storage.recovered()
        self._t0 = trio.current_time()
        self._state = start(self.config, self._now(), recovered.durable)
        make_disk = _disk.DiskThread if self.options.disk_in_thread else _disk.InlineDisk
        disk = self._disk_io = make_disk(storage, self._persisted, self._disk_failure)
        try:
            listener = await self._network.listen(self.address)
            self._listen_port = listener.port
            self._running = True
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._serve, listener)
                nursery.start_soon(self._fail_stop)
                self._sync_peers(self._state.membership)
                task_status.started()
                await self._drive()
        finally:
            self._running = False
            self._closed = True
            for pending in self._waiting.values():
                pending.wake()
            self._committed_changed.set()
            # The disk thread drops what it has not started, finishes the write
            # in progress and closes the storage (releasing the directory lock
            # for a restart). A hung disk cannot hang shutdown: after a bounded
            # wait the thread is left behind, with the storage open under it.
            disk.stop()
            if not disk.finished.is_set():
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        disk.finished.wait, _CLOSE_WAIT, abandon_on_cancel=True
                    )

    async def __aenter__(self) -> Node:
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        await nursery.start(self.run)
        self._own_nursery = nursery
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        self._own_nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(*exc)  # type: ignore[arg-type]

    @property
    def running(self) -> bool:
        """Whether the node is running (started and not yet stopped)."""
        return self._running

    @property
    def port(self) -> int:
        """The TCP port the node listens on (useful with port 0)."""
        self._check_running()
        assert self._listen_port is not None
        return self._listen_port

    def _check_running(self) -> None:
        if not self._running:
            raise NotStarted(
                f"node {self.node_id!r} is " + ("closed" if self._closed else "not started")
            )

    def _now(self) -> int:
        return int((trio.current_time() - self._t0) * 1000)

    # ------------------------------------------------------------------ driver

    async def _drive(self) -> None:
        while True:
            assert self._state is not None
            deadline = self._t0 + self._state.next_deadline() / 1000
            if self._deadlines:
                self._expire()
            wake_at = min(deadline, self._deadlines[0].deadline) if self._deadlines else deadline
            event: Event
            with trio.move_on_at(wake_at):
                event = await self._events_recv.receive()
                # Drain what is already queued before sleeping again. Runs of
                # proposals are stepped as one ProposeMany: one append, one
                # write, one AppendEntries per follower for the lot.
                proposals: list[Propose] = []
                while True:
                    if isinstance(event, Propose):
                        proposals.append(event)
                    else:
                        self._step_proposals(proposals)
                        self._step(event)
                    try:
                        event = self._events_recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                self._step_proposals(proposals)
                continue
            if trio.current_time() >= deadline:
                self._step(Tick(max(self._now(), self._state.now)))

    def _expiring(self, p: _Pending) -> None:
        q = self._deadlines
        if not q or q[-1].deadline <= p.deadline:
            q.append(p)
        else:  # a shorter timeout than earlier appends': keep the order
            q.insert(bisect.bisect(q, p.deadline, key=lambda x: x.deadline), p)

    def _expire(self) -> None:
        """Time out the appends whose deadline passed; forget those already answered."""
        q = self._deadlines
        now = trio.current_time()
        while q and (q[0].woken or q[0].deadline <= now):
            p = q.popleft()
            if not p.woken:
                p.timed_out = True
                p.wake()

    def _step_proposals(self, proposals: list[Propose]) -> None:
        if len(proposals) == 1:
            self._step(proposals[0])
        elif proposals:
            self._step(ProposeMany(tuple(proposals)))
        proposals.clear()

    def _step(self, event: Event) -> None:
        assert self._state is not None
        if isinstance(event, MessageReceived | PersistCompleted) and event.now is None:
            now = max(self._now(), self._state.now)
            event = (
                MessageReceived(event.message, now)
                if isinstance(event, MessageReceived)
                else PersistCompleted(event.seq, now)
            )
        self._state, actions = step(self._state, event)
        disk = self._disk_io
        assert disk is not None
        waiting = self._waiting
        by_index = self._by_index
        for a in actions:
            # Most frequent first: one ProposalAccepted per entry proposed.
            if type(a) is ProposalAccepted:
                p = waiting.get(a.request_id)
                if p is not None:
                    p.index, p.term = a.index, a.term
                    if a.index > self._last_delivered or not self._check_applied(p):
                        # (Rarely two appends wait on one index: the first one's
                        # entry was replaced, or not, by another leader's.)
                        earlier = by_index.get(a.index)
                        if earlier is None:
                            by_index[a.index] = p
                        elif isinstance(earlier, list):
                            earlier.append(p)
                        else:
                            by_index[a.index] = [earlier, p]
            elif type(a) is Send:
                self._send(a.message)
            elif type(a) is Persist:
                disk.persist(a)
            elif type(a) is Apply:
                self._apply(a)
            elif isinstance(a, ProposalRejected):
                p = self._waiting.get(a.request_id)
                if p is not None:
                    p.rejection = a.reason
                    p.detail = a.detail
                    p.leader_hint = a.leader_hint
                    p.wake()
            elif isinstance(a, ReadReady | ReadRejected):
                r = self._reads.get(a.request_id)
                if r is not None:
                    r.answer = a
                    r.done.set()
            elif isinstance(a, SendSnapshot):
                assert self._nursery is not None
                self._nursery.start_soon(self._send_snapshot, a)
            elif isinstance(a, RestoreSnapshot):
                self._restore(a.meta)
            elif isinstance(a, MembershipChanged):
                log.info("%s: configuration at %d: voters %s%s, learners %s", self.node_id,
                         a.index, a.membership.voters,
                         f" (joint with {a.membership.outgoing})" if a.membership.is_joint else "",
                         a.membership.learners)
                self._sync_peers(a.membership)
                for cb in self._membership_callbacks:
                    cb(a.membership)
            elif isinstance(a, TransferAborted):
                for t in self._transfers:
                    t.aborted = a.reason
                    t.done.set()
            elif isinstance(a, RoleChanged):
                log.info("%s: %s in term %d, leader %s", self.node_id, a.role.value, a.term,
                         a.leader_id)
                changed, self._role_changed = self._role_changed, trio.Event()
                changed.set()
            elif isinstance(a, MessageDropped):
                log.debug("%s: dropped %s: %s %s", self.node_id, type(a.message).__name__,
                          a.reason.value, a.detail)

    @property
    def _last_delivered(self) -> int:
        return self._first + len(self._committed) - 1

    def _restore(self, meta: SnapshotMeta) -> None:
        # Raft §7: everything up to meta.index is now in the snapshot only.
        self._committed.clear()
        self._first = meta.index + 1
        marker = SnapshotRestored(meta.index, meta.term)
        self._restored = marker
        for start_index, _, on_snapshot in self._callbacks:
            if on_snapshot is not None and start_index <= meta.index:
                on_snapshot(marker)
        self._callbacks = [
            (max(start_index, meta.index + 1), cb, on_snapshot)
            for start_index, cb, on_snapshot in self._callbacks
        ]
        changed, self._committed_changed = self._committed_changed, trio.Event()
        changed.set()

    async def _send_snapshot(self, a: SendSnapshot) -> None:
        """Fill an InstallSnapshot chunk from the durable snapshot and send it."""
        storage = self._storage
        assert storage is not None
        m = a.message

        def read_chunk() -> tuple[bytes | None, int]:
            chunk = storage.read_snapshot(m.meta.index, m.offset, a.max_bytes)
            return chunk, storage.snapshot_size()

        chunk, size = await self._disk(read_chunk)
        if chunk is None:
            return  # replaced by a newer snapshot: the leader will start over
        self._send(attrs.evolve(m, data=chunk, done=m.offset + len(chunk) >= size))

    async def _disk(self, fn: Callable[..., _T], *args: object) -> _T:
        disk = self._disk_io
        assert disk is not None
        try:
            return await disk.call(fn, *args)
        except _disk.DiskClosed:
            raise NotStarted(f"node {self.node_id!r} stopped") from self._failure

    def _sync_peers(self, membership: Membership) -> None:
        """Connect to the members of ``membership``; drop everyone else (thesis §4)."""
        nursery = self._nursery
        assert nursery is not None
        for peer, address in membership.addresses:
            if peer != self.node_id:
                host, _, port = address.rpartition(":")
                if host and port.isdigit():
                    self.peers[peer] = (host, int(port))
        wanted = set(membership.members) - {self.node_id}
        if not membership.is_member(self.node_id):
            # Joining (not added yet) or removed: keep the peers we were given,
            # so that the leader can reach us and we it.
            wanted |= set(self.peers)
        for peer in sorted(wanted):
            if peer not in self._queues:
                self._queues[peer] = trio.open_memory_channel[Message](self.options.peer_queue)
            if self.node_id < peer and peer not in self._dialers and peer in self.peers:
                scope = trio.CancelScope()
                self._dialers[peer] = scope
                nursery.start_soon(self._dialer, peer, scope)
        for peer in sorted(set(self._queues) - wanted):
            log.info("%s: %s left the configuration; disconnecting", self.node_id, peer)
            send, _ = self._queues.pop(peer)
            send.close()
            for scopes in (self._dialers, self._links):
                gone = scopes.pop(peer, None)
                if gone is not None:
                    gone.cancel()

    def _send(self, m: Message) -> None:
        queue = self._queues.get(m.dst)
        if queue is None:
            return
        # A slow peer's full queue drops the message: Raft retransmits.
        with contextlib.suppress(trio.WouldBlock):
            queue[0].send_nowait(m)

    def _apply(self, a: Apply) -> None:
        entries = a.entries
        skip = self._last_delivered + 1 - a.first_index
        if skip > 0:  # re-applied after a restart of the core: already known
            entries = entries[skip:]
        first = max(a.first_index, self._last_delivered + 1)
        normal = EntryKind.NORMAL
        committed = self._committed
        callbacks = self._callbacks
        if not callbacks:
            committed.extend([(e.term, e.data, e.kind is not normal) for e in entries])
        for k, e in enumerate(entries if callbacks else ()):
            committed.append((e.term, e.data, e.kind is not normal))
            if e.kind is normal:
                entry = CommittedEntry(first + k, e.term, e.data)
                for start_index, cb, _ in callbacks:
                    if entry.index >= start_index:
                        cb(entry)
        changed, self._committed_changed = self._committed_changed, trio.Event()
        changed.set()
        # Wake the appends waiting on these indexes (indexed: O(entries), not O(waiters)).
        by_index = self._by_index
        if by_index:
            for index in range(a.first_index, a.first_index + len(a.entries)):
                waiting = by_index.pop(index, None)
                if isinstance(waiting, _Pending):
                    self._check_applied(waiting)
                elif waiting is not None:
                    for p in waiting:
                        self._check_applied(p)

    def _check_applied(self, p: _Pending) -> bool:
        if p.index and self._last_delivered >= p.index:
            if p.index >= self._first:
                p.committed_term = self._committed[p.index - self._first][0]
            else:
                # Compacted already, so committed -- and an entry at that index
                # in the leader's term can only be the one it accepted (§5.3).
                p.committed_term = p.term
            p.wake()
            return True
        return False

    def _persisted(self, seq: int) -> None:
        # Called by the disk (in the trio thread) when Persist ``seq`` and every
        # earlier one are durable.
        self._events_send.send_nowait(PersistCompleted(seq))

    def _disk_failure(self, e: BaseException) -> None:
        self._failure = e
        log.error("%s: stopping: %s", self.node_id, e)
        self._disk_failed.set()

    async def _fail_stop(self) -> None:
        """End the node with the disk's first error (storage Rule 5: fail-stop)."""
        await self._disk_failed.wait()
        assert self._failure is not None
        raise self._failure

    # ------------------------------------------------------------------ transport

    async def _serve(self, listener: _network.Listener) -> None:
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as e:
                        if e.errno not in _ACCEPT_RESOURCE_ERRNOS:
                            raise
                        # Out of descriptors or buffers (a connection flood, or
                        # the host): wait for some to close instead of dying
                        # (trio.serve_listeners does the same).
                        self._rejected["accept_" + errno.errorcode[e.errno].lower()] += 1
                        log.warning("%s: accept failed: %s; retrying", self.node_id, e)
                        await trio.sleep(0.1)
                        continue
                    if self._pending_connections >= self.options.max_pending_connections:
                        self._rejected["too_many_connections"] += 1
                        await trio.aclose_forcefully(stream)
                        continue
                    self._pending_connections += 1
                    nursery.start_soon(self._inbound, stream)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    # One connection per peer pair: the node with the smaller id dials, the
    # other accepts; both directions share it. Each side says HELLO (cluster,
    # sender, recipient, schema version) and checks the other's.

    async def _read_hello(self, stream: trio.abc.Stream, reader: _wire.FrameReader) -> str:
        members = frozenset(self._queues)
        timeout = self.options.handshake_timeout
        # Until a peer says who it is, it may not make us buffer much, nor wait
        # long: one deadline for the whole HELLO, so a byte now and then does
        # not keep a connection alive.
        with trio.move_on_after(timeout):
            while True:
                frame = reader.next_frame(max_frame=_wire.MAX_HELLO_FRAME)
                if frame is not None:
                    hello = _wire.decode_hello_untrusted(
                        frame, cluster_id=self.cluster_id, me=self.node_id, members=members
                    )
                    return hello.src
                data = await stream.receive_some(65536)
                if not data:
                    raise _wire.MalformedFrame("the peer closed the connection before its HELLO")
                reader.feed(bytes(data))
        raise _wire.HandshakeTimeout(f"no complete HELLO within {timeout} s")

    async def _inbound(self, stream: trio.abc.Stream) -> None:
        """A connection a peer with a smaller id opened to us."""
        reader = _wire.FrameReader(max_frame=self.options.max_frame_bytes)
        pending = True  # counted in _pending_connections until the peer is identified
        try:
            async with stream:
                peer = await self._read_hello(stream, reader)
                _tls.check_peer(stream, peer)  # the HELLO's claim must match its certificate
                if not peer < self.node_id:
                    raise _wire.MalformedFrame(f"{peer!r} dialled, but {self.node_id!r} dials it")
                pending = False
                self._pending_connections -= 1
                await stream.send_all(_wire.encode_hello(self.cluster_id, self.node_id, peer))
                # The newest connection from a peer replaces an older one.
                old = self._links.pop(peer, None)
                if old is not None:
                    old.cancel()
                with trio.CancelScope() as scope:
                    self._links[peer] = scope
                    await self._pump(stream, reader, peer)
                if self._links.get(peer) is scope:
                    del self._links[peer]
        except _wire.WireError as e:
            self._wire_error(e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        finally:
            if pending:
                self._pending_connections -= 1

    async def _dialer(self, peer: str, scope: trio.CancelScope) -> None:
        """Keep our one connection to ``peer`` (a larger id) up, with backoff,
        until ``scope`` is cancelled (the peer left the configuration)."""
        with scope:
            await self._dial_forever(peer)

    async def _dial_forever(self, peer: str) -> None:
        delay = self.options.reconnect_min
        address = self.peers[peer]
        while True:
            try:
                stream = await self._network.connect(address)
            except OSError:
                await trio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max)
                continue
            reader = _wire.FrameReader(max_frame=self.options.max_frame_bytes)
            identified = False
            try:
                async with stream:
                    await stream.send_all(_wire.encode_hello(self.cluster_id, self.node_id, peer))
                    who = await self._read_hello(stream, reader)
                    if who != peer:
                        raise _wire.UnknownSender(f"{address} answered as {who!r}, not {peer!r}")
                    _tls.check_peer(stream, who)
                    # Only a peer that proved who it is resets the backoff: a
                    # refused handshake (an expired certificate, a wrong
                    # cluster) must not be retried every reconnect_min.
                    identified = True
                    delay = self.options.reconnect_min
                    await self._pump(stream, reader, peer)
            except _wire.WireError as e:
                self._wire_error(e)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if not identified:
                    # The other side hung up before introducing itself (with
                    # TLS 1.3, how a refused client certificate shows here).
                    self._rejected["closed_before_hello"] += 1
                    log.info("%s: %s closed the connection before its HELLO", self.node_id, peer)
            await trio.sleep(delay)
            delay = min(delay * 2, self.options.reconnect_max)

    def _wire_error(self, e: _wire.WireError) -> None:
        self.dropped_frames += 1
        self._rejected[e.reason] += 1
        log.warning("%s: closing a peer connection: %s: %s", self.node_id, type(e).__name__, e)

    async def _pump(self, stream: trio.abc.Stream, reader: _wire.FrameReader, peer: str) -> None:
        """Both directions of one peer connection, until either breaks."""
        async with trio.open_nursery() as nursery:

            async def guarded(loop: Callable[[], Awaitable[None]]) -> None:
                # Each direction handles its own errors, so the nursery only
                # ever sees cancellation; either one ending ends both.
                try:
                    await loop()
                except _wire.WireError as e:
                    self._wire_error(e)
                except (
                    trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel, OSError
                ):
                    pass  # (EndOfChannel: the peer left the configuration)
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(guarded, lambda: self._write_loop(stream, peer))
            nursery.start_soon(guarded, lambda: self._read_loop(stream, reader, peer))

    async def _read_loop(
        self, stream: trio.abc.Stream, reader: _wire.FrameReader, peer: str
    ) -> None:
        max_frame = self.options.max_frame_bytes
        frame_timeout = self.options.frame_timeout
        deadline = math.inf  # for the frame in progress; none between frames
        while True:
            completed = False
            while (frame := reader.next_frame()) is not None:
                completed = True
                batch = _wire.decode_batch_untrusted(
                    frame, max_frame=max_frame, expected_src=peer, expected_dst=self.node_id
                )
                for m in batch:
                    self._events_send.send_nowait(MessageReceived(m))
            if not reader.buffered:
                deadline = math.inf
            elif completed or deadline == math.inf:
                # A new frame has begun: all of it must arrive by then, however
                # it trickles in (one deadline per frame, not per read).
                deadline = trio.current_time() + frame_timeout
            if deadline == math.inf:
                data = await stream.receive_some(65536)  # the hot path: no cancel scope
            else:
                data = None
                with trio.move_on_at(deadline):
                    data = await stream.receive_some(65536)
                if data is None:
                    raise _wire.FrameTimeout(
                        f"{peer!r} left a frame unfinished for {frame_timeout} s "
                        f"({reader.buffered} bytes buffered)"
                    )
            if not data:
                if reader.buffered:
                    raise _wire.MalformedFrame("the peer stopped in the middle of a frame")
                return
            reader.feed(bytes(data))

    async def _write_loop(self, stream: trio.abc.Stream, peer: str) -> None:
        queues = self._queues.get(peer)
        if queues is None:
            return  # not (or no longer) a member
        queue = queues[1]
        while True:
            batch = [await queue.receive()]
            self._drain(queue, batch)
            if all(type(m) is AppendRequest and not m.entries for m in batch):
                # Only news of the commit index: nobody waits for it, and the
                # appends it committed were woken in this same pass of the
                # scheduler. Let them run first (a send to a peer costs more
                # than the rest of a write's hop), and take what else comes.
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._drain(queue, batch)
            for frame in _wire.encode_batches(batch, max_frame=self.options.max_frame_bytes):
                await stream.send_all(frame)

    @staticmethod
    def _drain(queue: trio.MemoryReceiveChannel[Message], batch: list[Message]) -> None:
        while len(batch) < 4096:
            try:
                batch.append(queue.receive_nowait())
            except trio.WouldBlock:
                break

    # ------------------------------------------------------------------ the API

    async def append(self, data: bytes, *, timeout: float | None = None) -> AppendResult:
        """Append ``data`` to the replicated log from any node; return once committed.

        Args:
            data: the payload.
            timeout: seconds to wait in all (default ``Options.append_timeout``).

        Returns:
            The committed entry's index and term.

        Raises:
            NotStarted: the node is not running.
            PayloadTooLarge: ``data`` exceeds ``Options.max_payload_bytes``.
            NoLeader: no leader was known within the timeout (not appended).
            Rejected: the leader refused it (not appended).
            CommitTimeout: appended but not committed in time (outcome unknown).
        """
        self._check_running()
        if not isinstance(data, bytes):
            raise TypeError(f"append() takes bytes, not {type(data).__name__}")
        if len(data) > self.options.max_payload_bytes:
            raise PayloadTooLarge(
                f"{len(data)} bytes > max_payload_bytes ({self.options.max_payload_bytes})"
            )
        timeout = self.options.append_timeout if timeout is None else timeout
        # The timeout is kept by the driver (``_expire``), not by a cancel scope
        # per call: with thousands of appends in flight, trio's per-scope
        # deadline bookkeeping was a sixth of the leader's CPU.
        deadline = trio.current_time() + timeout
        while True:
            self._next_request += 1
            rid = self._next_request
            pending = _Pending(deadline)
            self._waiting[rid] = pending
            self._expiring(pending)
            try:
                self._events_send.send_nowait(Propose(rid, data))
                await pending.wait()
            finally:
                del self._waiting[rid]
            if not self._running:
                if pending.rejection is not None:
                    raise NotStarted(f"node {self.node_id!r} stopped")
                # It was proposed; it may still commit through the others.
                raise CommitTimeout(
                    f"node {self.node_id!r} stopped while the entry was pending; "
                    "it may still commit"
                ) from self._failure
            if pending.rejection in (RejectReason.NO_LEADER, RejectReason.NOT_LEADER):
                # An election is under way: try again until the timeout.
                with trio.move_on_at(deadline):
                    await trio.sleep(self.options.heartbeat_interval)
                if trio.current_time() < deadline:
                    continue
                raise NoLeader(f"no leader accepted the entry within {timeout}s")
            if pending.timed_out:
                break
            if pending.rejection is not None:
                raise Rejected(pending.rejection.value)
            if pending.committed_term == pending.term:
                return AppendResult(pending.index, pending.term)
            raise CommitTimeout(
                f"entry {pending.index} was replaced by another leader's entry; "
                "it was not committed"
            )
        where = f"entry {pending.index} (term {pending.term})" if pending.index else "the entry"
        raise CommitTimeout(f"{where} not seen committed within {timeout}s; it may still commit")

    def committed(self, from_index: int = 1) -> list[CommittedEntry]:
        """Committed entries from ``from_index`` on (the proposal's "Idea A", pulling).

        No-op entries leaders write are included (``noop=True``) so indexes stay dense.

        Raises:
            Compacted: ``from_index`` was compacted into a snapshot; restore from
                :meth:`read_snapshot` and continue after its index.
        """
        if from_index < 1:
            raise ValueError("log indexes start at 1")
        self._check_running()
        if from_index < self._first:
            raise Compacted(
                f"entries before {self._first} were compacted into a snapshot; restore it "
                "with read_snapshot() and continue from the entry after its index",
                self._first - 1,
            )
        first = self._first
        return [CommittedEntry(first + k, term, data, noop)
                for k, (term, data, noop) in enumerate(self._committed[from_index - first :],
                                                       from_index - first)]

    async def subscribe(
        self, from_index: int = 1
    ) -> AsyncIterator[CommittedEntry | SnapshotRestored]:
        """Every committed entry from ``from_index`` on, in order, exactly once ("Idea B").

        Entries the leaders write for themselves (no-ops and configuration
        changes) are skipped. Where the entries asked for were compacted, a
        :class:`SnapshotRestored` comes first: restore from :meth:`read_snapshot`.
        """
        if from_index < 1:
            raise ValueError("log indexes start at 1")
        self._check_running()
        i = from_index
        while True:
            if i < self._first:
                marker = self._restored or SnapshotRestored(self._first - 1, 0)
                i = self._first
                yield marker
                continue
            while i <= self._last_delivered:
                term, data, noop = self._committed[i - self._first]
                i += 1
                if not noop:
                    yield CommittedEntry(i - 1, term, data)
                if i < self._first:
                    break  # a snapshot replaced the entries meanwhile
            if self._closed:
                return
            if i <= self._last_delivered or i < self._first:
                continue
            await self._committed_changed.wait()

    def on_commit(
        self,
        callback: Callable[[CommittedEntry], None],
        *,
        from_index: int = 1,
        on_snapshot: Callable[[SnapshotRestored], None] | None = None,
    ) -> None:
        """Call ``callback`` with every committed entry from ``from_index`` on, once, in order.

        No-ops are skipped. Entries already committed are delivered at once, the
        rest as they commit; after a restart, pass the index the application
        resumes from so nothing is delivered twice. ``on_snapshot`` is called
        when the entries at ``from_index`` (or later ones) were replaced by a
        snapshot: the application restores from :meth:`read_snapshot` (without
        it, those entries are simply skipped).
        """
        if from_index < 1:
            raise ValueError("log indexes start at 1")
        if from_index < self._first and on_snapshot is not None:
            on_snapshot(self._restored or SnapshotRestored(self._first - 1, 0))
        start_index = max(from_index, self._first)
        for k, (term, data, noop) in enumerate(self._committed[start_index - self._first :]):
            if not noop:
                callback(CommittedEntry(start_index + k, term, data))
        self._callbacks.append((max(start_index, self._last_delivered + 1), callback, on_snapshot))

    def on_membership(self, callback: Callable[[Membership], None]) -> None:
        """Call ``callback`` with every configuration this node starts using (thesis §4.1:
        a configuration is used from the moment it is in the log)."""
        self._membership_callbacks.append(callback)

    def status(self) -> Status:
        """Role, term, leader, commit/applied index, configuration and each peer's progress."""
        self._check_running()
        s = self._state
        assert s is not None
        peers = {}
        for peer in s.peers:
            pr = s.progress_of(peer)
            if pr is not None:
                peers[peer] = PeerStatus(pr.match_index, pr.next_index, pr.state.value)
        return Status(
            self.node_id, s.role, s.term, s.leader_id, s.commit_index, s.applied_index,
            s.last_index, peers, s.membership, s.snapshot.index if s.snapshot else 0,
            dict(self._rejected),
        )

    # ------------------------------------------------------------------ snapshots

    async def save_snapshot(self, index: int, data: bytes) -> None:
        """Hand graft a snapshot of the state machine after applying entry ``index``.

        It is written durably (temp file, fsync, rename, directory fsync); then
        the log before it is compacted and followers that need those entries are
        sent the snapshot instead (Raft §7).

        Raises:
            ValueError: ``index`` is not a committed index this node delivered,
                or is older than the current snapshot.
        """
        self._check_running()
        state = self._state
        storage = self._storage
        assert state is not None and storage is not None
        if not isinstance(data, bytes):
            raise TypeError(f"snapshot data must be bytes, not {type(data).__name__}")
        if index > self._last_delivered:
            raise ValueError(f"entry {index} has not been delivered yet")
        try:
            meta = state.snapshot_meta(index)
        except EventError as e:
            raise ValueError(str(e)) from None
        if state.snapshot is not None and index <= state.snapshot.index:
            raise ValueError(f"a snapshot at {state.snapshot.index} already covers {index}")
        await self._disk(storage.save_snapshot, meta, [data])
        self._events_send.send_nowait(SnapshotSaved(index))
        # The driver steps it next; return once it has, so status() shows it.
        while self._running and self._snapshot_index() < index:
            await trio.sleep(0)
        # Keep the same trailing window the core keeps, for slow readers.
        keep_from = max(self._first, index + 1 - self.options.snapshot_trailing_entries)
        del self._committed[: keep_from - self._first]
        self._first = keep_from
        if self._restored is None or self._restored.index < index:
            self._restored = SnapshotRestored(meta.index, meta.term)

    def _snapshot_index(self) -> int:
        s = self._state
        return s.snapshot.index if s is not None and s.snapshot is not None else 0

    def latest_snapshot(self) -> SnapshotMeta | None:
        """The metadata of the latest durable snapshot, if any."""
        self._check_running()
        storage = self._storage
        assert storage is not None
        return storage.snapshot_meta()

    async def read_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest durable snapshot and its data (``None`` if there is none)."""
        self._check_running()
        storage = self._storage
        assert storage is not None

        def read_all() -> tuple[SnapshotMeta, bytes] | None:
            meta = storage.snapshot_meta()
            if meta is None:
                return None
            return meta, b"".join(storage.iter_snapshot(1 << 20))

        return await self._disk(read_all)

    # ------------------------------------------------------------------ reads

    async def read_barrier(self, *, timeout: float | None = None) -> int:
        """Wait until a linearizable read may be served here (thesis §6.4).

        Returns an index: once the application has applied every committed
        entry up to it, its state reflects every write that completed before
        this call, on any node. No log entry is written; the leader confirms
        its leadership with a heartbeat round (or its lease, with
        ``Options.lease_reads``). Works on followers too.

        Raises:
            NoLeader: no leader could confirm within the timeout.
        """
        self._check_running()
        timeout = self.options.append_timeout if timeout is None else timeout
        answer: ReadReady | ReadRejected | None = None
        with trio.move_on_after(timeout):
            while True:
                # A fresh id per attempt: an answer to an earlier attempt can
                # never satisfy this one (etcd #20418).
                self._next_request += 1
                rid = self._next_request
                pending = _PendingRead()
                self._reads[rid] = pending
                try:
                    self._events_send.send_nowait(ReadIndex(rid))
                    await pending.done.wait()
                finally:
                    del self._reads[rid]
                answer = pending.answer
                if isinstance(answer, ReadReady):
                    while self._last_delivered < answer.index and self._running:
                        await self._committed_changed.wait()
                    self._check_running()
                    return answer.index
                self._check_running()
                await trio.sleep(self.options.heartbeat_interval)
        raise NoLeader(f"no leader confirmed a read within {timeout}s")

    # ------------------------------------------------------------------ leadership

    async def transfer_leadership(
        self, to: str | None = None, *, timeout: float | None = None
    ) -> str:
        """Hand leadership to ``to`` (or the most up-to-date voter) (thesis §3.10).

        Returns the new leader's id.

        Raises:
            NotLeader: this node is not the leader.
            TransferFailed: the transfer was aborted or did not finish in time.
        """
        self._check_running()
        state = self._state
        assert state is not None
        if state.role is not Role.LEADER:
            raise NotLeader(f"{self.node_id!r} is not the leader", state.leader_id)
        timeout = self.options.election_timeout * 2 if timeout is None else timeout
        pending = _PendingTransfer()
        self._transfers.append(pending)
        try:
            self._events_send.send_nowait(TransferLeadership(to))
            with trio.move_on_after(timeout):
                while True:
                    s = self._state
                    assert s is not None
                    if s.role is not Role.LEADER and s.leader_id is not None:
                        return s.leader_id
                    if pending.aborted is not None:
                        raise TransferFailed(f"leadership transfer aborted: {pending.aborted}")
                    self._check_running()
                    changed = self._role_changed
                    with trio.move_on_after(self.options.heartbeat_interval):
                        await changed.wait()
        finally:
            self._transfers.remove(pending)
        raise TransferFailed(f"no new leader within {timeout}s")

    # ------------------------------------------------------------------ membership

    async def add_learner(self, node_id: str, address: Address) -> Membership:
        """Add a non-voting member that catches up before promotion (thesis §4.2.1)."""
        return await self.change_membership(
            ChangeOp("add_learner", node_id, _format_address(address))
        )

    async def add_voter(self, node_id: str, address: Address | None = None) -> Membership:
        """Add a voter, or promote a learner (add it as a learner first, thesis §4.2.1)."""
        where = _format_address(address) if address is not None else None
        return await self.change_membership(ChangeOp("add_voter", node_id, where))

    async def remove(self, node_id: str) -> Membership:
        """Remove a member. A leader that removes itself steps down (thesis §4.2.2)."""
        return await self.change_membership(ChangeOp("remove", node_id))

    async def change_membership(
        self, *ops: ChangeOp, timeout: float | None = None
    ) -> Membership:
        """Change the configuration at the leader; return once the new one is committed.

        Changes of one voter are made directly (thesis §4.1); larger ones through
        the joint configuration, which is left automatically (thesis §4.3).

        Raises:
            NotLeader: this node is not the leader.
            MembershipError: the leader refused it (another change in progress,
                an invalid change, no entry of its term committed yet).
            CommitTimeout: not seen committed in time (it may still be).
        """
        self._check_running()
        timeout = self.options.append_timeout if timeout is None else timeout
        self._next_request += 1
        rid = self._next_request
        pending = _Pending()
        self._waiting[rid] = pending
        try:
            self._events_send.send_nowait(ChangeMembership(rid, tuple(ops)))
            with trio.move_on_after(timeout):
                await pending.wait()
                if pending.rejection in (RejectReason.NOT_LEADER, RejectReason.NO_LEADER):
                    raise NotLeader(
                        f"{self.node_id!r} is not the leader: {pending.detail}",
                        pending.leader_hint,
                    )
                if pending.rejection is not None:
                    raise MembershipError(
                        f"{pending.rejection.value}: {pending.detail}", pending.rejection
                    )
                if pending.committed_term != pending.term:
                    raise CommitTimeout("the configuration entry was replaced; not committed")
                # A joint configuration is left by the leader's own next entry.
                while True:
                    s = self._state
                    assert s is not None
                    if not s.membership.is_joint and s.commit_index >= s.membership_index:
                        return s.membership
                    self._check_running()
                    await self._committed_changed.wait()
        finally:
            self._waiting.pop(rid, None)
        raise CommitTimeout(f"the membership change was not seen committed within {timeout}s")


def _format_address(address: Address) -> str:
    host, port = address
    return f"{host}:{port}"


class _Pending:
    """One proposal waiting for its outcome; the driver fills it in and wakes it.

    A one-shot wake-up by hand (the waiting task is rescheduled directly)
    rather than a ``trio.Event``: there is one of these per write in flight,
    and an Event (with its parking lot) costs several objects more.
    """

    __slots__ = (
        "committed_term",
        "deadline",
        "detail",
        "index",
        "leader_hint",
        "rejection",
        "task",
        "term",
        "timed_out",
        "woken",
    )

    def __init__(self, deadline: float = math.inf) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.woken = False
        #: When the driver gives up on it (sets ``timed_out`` and wakes it).
        self.deadline = deadline
        self.timed_out = False
        self.index = 0
        self.term = 0
        self.committed_term = 0
        self.rejection: RejectReason | None = None
        self.detail = ""
        self.leader_hint: str | None = None

    def wake(self) -> None:
        self.woken = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self.woken:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


@attrs.define
class _PendingRead:
    done: trio.Event = attrs.field(factory=trio.Event)
    answer: ReadReady | ReadRejected | None = None


@attrs.define
class _PendingTransfer:
    done: trio.Event = attrs.field(factory=trio.Event)
    aborted: str | None = None

