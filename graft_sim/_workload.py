"""The simulated clients' key/value workload and the state machine they drive.

Writes -- put and compare-and-set -- go through the log: encoded as JSON
bytes, they take effect when a node applies them, and a client learns the
result when the node it proposed to applies the operation. Gets go through the
log too in ``reads="log"`` runs; otherwise they are linearizable reads without
a log entry (thesis §6.4): the node asks for a read index (``ReadIndex``), and
answers from its own store once it has applied that index. A typed rejection
means the operation certainly did not happen. If no answer comes within the
client's timeout, the outcome is unknown and the history records it as such
(the linearizability checker lets it take effect at any point after its call,
or never).

The store serializes itself deterministically (sorted JSON, the client-session
table included) for snapshots (Raft §7): equal states give equal bytes, so the
checker can compare snapshots taken at one index on different nodes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Hashable

import attrs

from graft_sim._linearizability import Operation


def encode_op(op_id: int, kind: str, key: str, value: str | None, expected: str | None) -> bytes:
    return json.dumps([op_id, kind, key, value, expected], separators=(",", ":")).encode()


class KVStore:
    """The replicated state machine: one node's view of the key/value store.

    Each operation carries a unique id and is applied at most once, whatever
    the log holds (client sessions, thesis §6.3): a proposal that reached the
    log twice takes effect once and both copies answer the same.
    """

    __slots__ = ("data", "done")

    def __init__(self) -> None:
        self.data: dict[str, str | None] = {}
        self.done: dict[int, Hashable] = {}

    def snapshot(self) -> bytes:
        """The whole state as canonical bytes (equal stores give equal bytes)."""
        doc = {
            "data": sorted(self.data.items()),
            "done": sorted([op_id, output] for op_id, output in self.done.items()),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def restore(cls, snapshot: bytes) -> KVStore:
        """The store :meth:`snapshot` serialized."""
        doc = json.loads(snapshot)
        kv = cls()
        kv.data = {k: v for k, v in doc["data"]}
        kv.done = {op_id: output for op_id, output in doc["done"]}
        return kv

    def apply(self, payload: bytes) -> tuple[int, Hashable]:
        """Apply one entry; return ``(op_id, output)``. Non-workload entries give op_id -1."""
        try:
            op_id, kind, key, value, expected = json.loads(payload)
        except (ValueError, TypeError):
            return -1, None
        if op_id in self.done:
            return op_id, self.done[op_id]
        output: Hashable = None
        if kind == "put":
            self.data[key] = value
        elif kind == "get":
            output = self.data.get(key)
        else:
            current = self.data.get(key)
            output = current == expected
            if output:
                self.data[key] = value
        self.done[op_id] = output
        return op_id, output


@attrs.define
class PendingOp:
    op_id: int
    client: int
    node: int
    kind: str
    key: str
    value: str | None
    expected: str | None
    call_us: int
    deadline_us: int


class Workload:
    """Clients issuing operations and the history they record."""

    def __init__(
        self, rng: random.Random, clients: int, keys: int, mean_interval_ms: int, timeout_ms: int
    ) -> None:
        self.rng = rng
        self.clients = clients
        self.keys = [f"k{i}" for i in range(keys)]
        self.mean_interval_us = mean_interval_ms * 1000
        self.timeout_us = timeout_ms * 1000
        self.next_op = 0
        #: op_id -> the operation waiting for its answer.
        self.pending: dict[int, PendingOp] = {}
        #: client -> op_id it is waiting on (each client has one op at a time).
        self.busy: dict[int, int] = {}
        self.history: list[Operation] = []
        #: The last value each client saw per key: fodder for compare-and-set.
        self.seen: dict[tuple[int, str], str | None] = {}
        #: Operations whose success a client saw: must end up applied everywhere.
        self.acknowledged: list[int] = []
        self.stats = {"ok": 0, "failed": 0, "unknown": 0}
        #: How many gets were served by a read index rather than the log.
        self.index_reads = 0

    def next_interval(self) -> int:
        return 1 + int(self.rng.expovariate(1 / self.mean_interval_us))

    def new_op(self, client: int, node: int, now_us: int) -> PendingOp:
        rng = self.rng
        self.next_op += 1
        key = rng.choice(self.keys)
        r = rng.random()
        value: str | None = None
        expected: str | None = None
        if r < 0.45:
            kind = "put"
            value = f"{client}.{self.next_op}"
        elif r < 0.85:
            kind = "get"
        else:
            kind = "cas"
            expected = self.seen.get((client, key))
            value = f"{client}.{self.next_op}"
        op = PendingOp(
            self.next_op, client, node, kind, key, value, expected, now_us, now_us + self.timeout_us
        )
        self.pending[op.op_id] = op
        self.busy[client] = op.op_id
        return op

    def _record(self, op: PendingOp, ret_us: int | None, output: Hashable) -> None:
        self.history.append(
            Operation(
                client=op.client,
                key=op.key,
                kind=op.kind,
                value=op.value,
                expected=op.expected,
                call=op.call_us,
                ret=ret_us,
                output=output,
            )
        )

    def finish(self, op_id: int) -> PendingOp | None:
        op = self.pending.pop(op_id, None)
        if op is not None and self.busy.get(op.client) == op_id:
            del self.busy[op.client]
        return op

    def completed(
        self, op_id: int, now_us: int, output: Hashable, *, via_read_index: bool = False
    ) -> None:
        """``op_id`` returned ``output``. A write (or a get through the log) is
        then in the log: it must end up applied everywhere (liveness)."""
        op = self.finish(op_id)
        if op is None:
            return
        self.stats["ok"] += 1
        if op.kind == "get":
            self.seen[(op.client, op.key)] = output  # type: ignore[assignment]
        elif op.kind == "put" or output is True:
            self.seen[(op.client, op.key)] = op.value
        if not via_read_index:
            self.acknowledged.append(op_id)
        else:
            self.index_reads += 1
        self._record(op, now_us, output)

    def failed(self, op_id: int) -> None:
        """The operation certainly did not take effect: it leaves no trace in the history."""
        if self.finish(op_id) is not None:
            self.stats["failed"] += 1

    def timed_out(self, op_id: int) -> None:
        op = self.finish(op_id)
        if op is None:
            return
        self.stats["unknown"] += 1
        self._record(op, None, None)

    def close(self) -> None:
        """At the end of the run every unanswered operation's outcome is unknown."""
        for op_id in sorted(self.pending):
            self.timed_out(op_id)
