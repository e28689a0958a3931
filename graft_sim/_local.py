"""LocalCluster: several graft_core nodes wired together in memory, by hand.

A small, synchronous, deterministic driver: the messages a node sends wait in
an in-flight queue until the caller delivers them (all at once, in rounds, or
selectively), links can be cut, persistence can complete at once or on demand,
and nodes can crash and restart from exactly what they persisted. It is what
the core's own tests, the demo and the first notebook use to push the core
around; the randomized fault-injecting simulator builds on the same idea.

Everything is ordered: nodes are visited in sorted id order and messages in
the order they were sent, so a LocalCluster run is reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import attrs

from graft_core import (
    Action,
    Apply,
    ChangeMembership,
    ChangeOp,
    Config,
    Entry,
    EntryKind,
    Event,
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
    ReadIndex,
    ReadReady,
    ReadRejected,
    Restart,
    RestoreSnapshot,
    Role,
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
from graft_sim._disk import Disk

#: What one node's disk holds: exactly the Persists it completed (the same
#: model of the Persist contract as the simulator's).
Storage = Disk


def encode_applied(applied: list[tuple[int, Entry]]) -> bytes:
    """A LocalCluster node's state machine -- everything it applied -- as snapshot bytes."""
    return json.dumps(
        [[i, e.term, e.kind.value, e.data.hex()] for i, e in applied], separators=(",", ":")
    ).encode()


def decode_applied(data: bytes) -> list[tuple[int, Entry]]:
    return [(i, Entry(t, bytes.fromhex(d), EntryKind(k))) for i, t, k, d in json.loads(data)]


class LocalCluster:
    """A hand-driven cluster of graft_core nodes.

    Args:
        ids: the node ids (the bootstrap voters).
        auto_persist: complete every Persist as soon as it is emitted; if
            ``False``, Persists wait until :meth:`complete_persists`.
        config: extra :class:`~graft_core.Config` fields shared by every node
            (each node's ``seed`` is ``seed`` plus its position).
        seed: the base seed.
        on_action: called with ``(node_id, action)`` for every action, e.g. to
            narrate a run.
    """

    def __init__(
        self,
        ids: Iterable[str] = ("a", "b", "c"),
        *,
        auto_persist: bool = True,
        seed: int = 0,
        on_action: Callable[[str, Action], None] | None = None,
        **config: object,
    ) -> None:
        self.ids = tuple(sorted(ids))
        self.auto_persist = auto_persist
        self.on_action = on_action
        self.now = 0
        self.configs = {
            nid: Config(nid, self.ids, seed=seed + k, **config)  # type: ignore[arg-type]
            for k, nid in enumerate(self.ids)
        }
        self.nodes: dict[str, NodeState] = {nid: start(c) for nid, c in self.configs.items()}
        self.storage = {nid: Storage() for nid in self.ids}
        self.pending_persists: dict[str, list[Persist]] = {nid: [] for nid in self.ids}
        self.in_flight: list[Message] = []
        self.cut: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.applied: dict[str, list[tuple[int, Entry]]] = {nid: [] for nid in self.ids}
        self.answers: dict[str, list[ProposalAccepted | ProposalRejected]] = {
            nid: [] for nid in self.ids
        }
        self.dropped: dict[str, list[MessageDropped]] = {nid: [] for nid in self.ids}
        self.reads: dict[str, list[ReadReady | ReadRejected]] = {nid: [] for nid in self.ids}
        self.memberships: dict[str, list[MembershipChanged]] = {nid: [] for nid in self.ids}
        self.aborted: dict[str, list[TransferAborted]] = {nid: [] for nid in self.ids}
        self.restored: dict[str, list[SnapshotMeta]] = {nid: [] for nid in self.ids}
        self.delivered = 0
        self._next_request = 0
        self._seed = seed
        self._config = config

    def add_node(self, nid: str) -> None:
        """Start a new node that waits to be added (``Config(joining=True)``)."""
        if nid in self.nodes:
            raise ValueError(f"{nid!r} already exists")
        k = len(self.configs)
        cfg = Config(
            nid, self.ids, joining=True, seed=self._seed + k, **self._config  # type: ignore[arg-type]
        )
        self.configs[nid] = cfg
        self.ids = tuple(sorted((*self.ids, nid)))
        self.nodes[nid] = start(cfg, self.now)
        self.storage[nid] = Storage()
        self.pending_persists[nid] = []
        for table in (
            self.applied, self.answers, self.dropped, self.reads, self.memberships, self.aborted,
            self.restored,
        ):
            table[nid] = []

    # ------------------------------------------------------------------ driving

    def step(self, nid: str, event: Event) -> tuple[Action, ...]:
        """Step node ``nid`` with ``event`` and carry out its actions."""
        if nid in self.down:
            raise RuntimeError(f"node {nid} is down")
        state, actions = step(self.nodes[nid], event)
        self.nodes[nid] = state
        acks: list[int] = []
        for a in actions:
            if self.on_action is not None:
                self.on_action(nid, a)
            if isinstance(a, Send):
                m = a.message
                if (m.src, m.dst) not in self.cut:
                    self.in_flight.append(m)
            elif isinstance(a, Persist):
                if self.auto_persist:
                    self._write(nid, a)
                    acks.append(a.seq)
                else:
                    self.pending_persists[nid].append(a)
            elif isinstance(a, Apply):
                first = a.first_index
                applied = self.applied[nid]
                assert not applied or applied[-1][0] == first - 1, "Apply skipped or repeated"
                applied.extend((first + k, e) for k, e in enumerate(a.entries))
            elif isinstance(a, ProposalAccepted | ProposalRejected):
                self.answers[nid].append(a)
            elif isinstance(a, MessageDropped):
                self.dropped[nid].append(a)
            elif isinstance(a, SendSnapshot):
                self._send_snapshot(nid, a)
            elif isinstance(a, RestoreSnapshot):
                disk = self.storage[nid]
                assert disk.snapshot == a.meta, "restore of a snapshot that is not durable"
                self.applied[nid] = decode_applied(disk.snapshot_data)
                self.restored[nid].append(a.meta)
            elif isinstance(a, ReadReady | ReadRejected):
                self.reads[nid].append(a)
            elif isinstance(a, MembershipChanged):
                self.memberships[nid].append(a)
            elif isinstance(a, TransferAborted):
                self.aborted[nid].append(a)
        out = list(actions)
        if acks:
            out.extend(self.step(nid, PersistCompleted(acks[-1])))
        return tuple(out)

    def _write(self, nid: str, p: Persist) -> None:
        problem = self.storage[nid].write(p)
        if problem is not None:
            raise AssertionError(f"{nid}: the core broke the Persist contract: {problem}")

    def _send_snapshot(self, nid: str, a: SendSnapshot) -> None:
        disk = self.storage[nid]
        m = a.message
        if disk.snapshot != m.meta:
            return  # replaced by a newer snapshot: the leader starts over
        data = disk.snapshot_data[m.offset : m.offset + a.max_bytes]
        filled = attrs.evolve(m, data=data, done=m.offset + len(data) >= len(disk.snapshot_data))
        if (m.src, m.dst) not in self.cut:
            self.in_flight.append(filled)

    def take_snapshot(self, nid: str, index: int | None = None) -> SnapshotMeta:
        """Save node ``nid``'s state machine at ``index`` (default: all it applied)."""
        state = self.nodes[nid]
        index = state.applied_index if index is None else index
        meta = state.snapshot_meta(index)
        applied = [(i, e) for i, e in self.applied[nid] if i <= index]
        problem = self.storage[nid].save_snapshot(meta, encode_applied(applied))
        assert problem is None, problem
        self.step(nid, SnapshotSaved(index))
        return meta

    def change_membership(self, nid: str, *ops: ChangeOp) -> int:
        """Ask node ``nid`` to change the configuration; return the request id."""
        self._next_request += 1
        self.step(nid, ChangeMembership(self._next_request, ops))
        return self._next_request

    def transfer(self, nid: str, target: str | None = None) -> None:
        self.step(nid, TransferLeadership(target))

    def read(self, nid: str) -> int:
        """Ask node ``nid`` for a read index; return the request id."""
        self._next_request += 1
        self.step(nid, ReadIndex(self._next_request))
        return self._next_request

    def complete_persists(self, nid: str) -> tuple[Action, ...]:
        """Make node ``nid``'s pending Persists durable and acknowledge them."""
        pending = self.pending_persists[nid]
        if not pending:
            return ()
        for p in pending:
            self._write(nid, p)
        seq = pending[-1].seq
        pending.clear()
        return self.step(nid, PersistCompleted(seq))

    def deliver(self, message: Message) -> tuple[Action, ...]:
        self.in_flight.remove(message)
        return self._deliver(message)

    def _deliver(self, m: Message) -> tuple[Action, ...]:
        if m.dst in self.down or m.dst not in self.nodes or (m.src, m.dst) in self.cut:
            return ()
        self.delivered += 1
        return self.step(m.dst, MessageReceived(m))

    def deliver_round(self) -> int:
        """Deliver every message in flight now (not those sent meanwhile); return how many."""
        batch, self.in_flight = self.in_flight, []
        for m in batch:
            self._deliver(m)
        return len(batch)

    def deliver_all(self, max_rounds: int = 10_000) -> int:
        """Deliver rounds until nothing is in flight; return the number of rounds."""
        rounds = 0
        while self.in_flight:
            if rounds >= max_rounds:
                raise RuntimeError(f"messages still in flight after {max_rounds} rounds")
            self.deliver_round()
            rounds += 1
        return rounds

    def tick(self, now: int) -> None:
        """Advance time to ``now`` on every live node, in id order."""
        self.now = max(self.now, now)
        for nid in self.ids:
            if nid not in self.down:
                self.step(nid, Tick(self.now))

    def next_deadline(self) -> int:
        """The earliest deadline of a live node.

        Raises:
            RuntimeError: every node is down, so nothing is due, ever.
        """
        live = [self.nodes[nid].next_deadline() for nid in self.ids if nid not in self.down]
        if not live:
            raise RuntimeError("every node is down: no deadline")
        return min(live)

    def run(self, until: int) -> None:
        """Deliver messages with zero latency and jump from deadline to deadline until ``until``."""
        self.deliver_all()
        while True:
            if self.down.issuperset(self.ids):
                # Every node is down: time passes and nothing happens.
                self.now = max(self.now, until)
                return
            t = self.next_deadline()
            if t > until:
                self.now = max(self.now, until)
                return
            self.tick(t)
            self.deliver_all()

    def elect(self, within: int = 100_000) -> str:
        """Run until some node leads and every live member of its configuration knows it;
        return its id."""
        deadline = self.now + within
        while self.now <= deadline:
            leader = self.leader()
            if leader is not None and all(
                self.nodes[n].leader_id == leader
                for n in self.nodes[leader].membership.members
                if n not in self.down and n in self.nodes
            ):
                return leader
            self.tick(self.next_deadline())
            self.deliver_all()
        raise RuntimeError("no leader elected")

    def propose(self, nid: str, data: bytes) -> int:
        """Propose ``data`` at node ``nid``; return the request id."""
        self._next_request += 1
        self.step(nid, Propose(self._next_request, data))
        return self._next_request

    # ------------------------------------------------------------------ faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (both directions)."""
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1 :]:
                for x in g:
                    for y in h:
                        self.cut.add((x, y))
                        self.cut.add((y, x))

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, nid: str) -> None:
        """Stop ``nid``: its volatile state and unacknowledged writes are gone."""
        self.down.add(nid)
        self.pending_persists[nid].clear()

    def restart(self, nid: str) -> None:
        """Restart ``nid`` from its storage; the application re-applies from scratch
        (restoring the snapshot first, if there is one)."""
        self.down.discard(nid)
        self.applied[nid].clear()
        self.storage[nid].incoming = None  # a partly received snapshot is lost
        self.step(nid, Restart(self.now, self.storage[nid].durable()))

    # ------------------------------------------------------------------ views

    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, str] | None = None
        for nid in self.ids:
            s = self.nodes[nid]
            if nid not in self.down and s.role is Role.LEADER and (
                best is None or s.term > best[0]
            ):
                best = (s.term, nid)
        return None if best is None else best[1]

    def applied_data(self, nid: str) -> list[bytes]:
        """The payloads node ``nid`` applied, no-ops left out."""
        return [e.data for _, e in self.applied[nid] if e.kind is EntryKind.NORMAL]
