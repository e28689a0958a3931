"""A linearizability checker for key/value histories, as Porcupine and Knossos do it.

Theory of operation
-------------------
A *history* is what clients saw: for each operation, when it was invoked
(``call``), when it completed (``ret``) and what it returned (``output``). The
history is *linearizable* if every operation can be given a single instant
between its call and its return such that executing the operations one at a
time in that order, against a sequential register per key, returns exactly the
outputs the clients saw (Herlihy & Wing 1990, "Linearizability: a correctness
condition for concurrent objects", TOPLAS 12(3)).

The checker works in three steps:

1. **Partition by key.** Linearizability is *local*: a history is linearizable
   iff its restriction to each object is (Herlihy & Wing 1990, the locality
   theorem). Each key is an independent register, so each key's
   sub-history is checked on its own, in sorted key order. Horn & Kroening
   ("Faster linearizability checking via P-compositionality", FORTE 2015) call
   this P-compositionality; it turns one exponential search into many small ones.

2. **Search.** For each key, Wing & Gong's depth-first search ("Testing and
   verifying concurrent objects", JPDC 17, 1993) over the call/return events,
   kept in time order in a doubly linked list. Walking the list from the front,
   every *call* met before the first *return* belongs to an operation that may
   be linearized next (nothing that completed before it was invoked is still
   pending). The search tries each such candidate against the model; on success
   it removes ("lifts") the operation's two events from the list and starts
   again from the front; when it reaches a return, the operation that return
   belongs to cannot be linearized later than this, so the current prefix is a
   dead end and the search backtracks (re-inserts the last lifted operation,
   dancing-links style, and tries the next candidate after it).

3. **Memoization.** Lowe ("Testing for linearizability", Concurrency and
   Computation: Practice and Experience 29(4), 2017) observed that two
   prefixes that linearized the *same set* of operations and reached the *same
   model state* have identical futures, so the search records every
   (set-of-linearized-operations, state) pair it has reached and never
   explores one twice. The set is a bitset (a Python ``int``).

The search is iterative with an explicit stack (histories have thousands of
operations; Python's recursion limit is ~1000) and the same shape as
Porcupine's ``checkSingle`` (anishathalye/porcupine, checker.go).

Rules
-----
Rule 1: *time order*. Operation A precedes operation B (A must be linearized
before B) iff ``A.ret < B.call``, strictly. Equal instants mean "concurrent":
when events are sorted, a call sorts before a return at the same time, as in
Porcupine (checker.go, ``byTime.Less``). This is the conservative choice for a
simulator with coarse virtual clocks: it never invents an order that the
clocks cannot prove.

Rule 2: *indeterminate operations*. ``ret is None`` means the client gave up
(timed out, lost the connection): the operation may or may not have taken
effect. Its return time is +infinity and its output is not checked, so it may
be linearized anywhere after its call, including after everything else, which
is the same as never having happened (Jepsen/Knossos treat ``:info`` operations
this way). An indeterminate ``get`` constrains nothing and is dropped before
the search.

Rule 3: *a budget, not a clock*. The search counts steps (one per visit to an
event in the linked list) and gives up with ``UNKNOWN`` after ``max_steps``
for a key. Nothing here reads a clock, uses global randomness or iterates a
hash-ordered collection, so the same history always gives the same result,
down to the step count, under any ``PYTHONHASHSEED``.

Rule 4: *values compare with ``==``*. The register's state and the outputs are
compared with Python equality and memoized by hash, so ``1``, ``1.0`` and
``True`` are the same value here. Use one type per key.

Memory is bounded by the memo table: at most one entry per step, each holding
a bitset of the key's operation count, so roughly ``max_steps * n / 8`` bytes
for a key with ``n`` operations in the worst case.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Sequence

import attrs

__all__ = ["CheckResult", "Operation", "Verdict", "check_history"]

_KINDS = ("put", "get", "cas")


class Verdict(enum.Enum):
    """The outcome of a linearizability check."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    # The step budget ran out before the search could decide.
    UNKNOWN = "unknown"


@attrs.frozen
class Operation:
    """One client operation on one key, as the client observed it.

    Attributes:
        client: Which client issued it (reported in explanations; the checker
            does not assume a client's operations are sequential).
        key: The register the operation acts on.
        kind: ``"put"``, ``"get"`` or ``"cas"``.
        value: For ``put``, the value written; for ``cas``, the new value;
            ``None`` for ``get``.
        expected: For ``cas``, the value compared against; otherwise ``None``.
        call: Invocation time (any integer clock, e.g. virtual microseconds).
        ret: Completion time, ``>= call``; ``None`` if the outcome is unknown
            (the operation may or may not have taken effect).
        output: For a completed ``get``, the value read; for a completed
            ``cas``, whether it swapped (a ``bool``); ``None`` for ``put``.
            Ignored when ``ret is None``.

    Raises:
        ValueError: On an unknown kind, ``ret < call``, a field that does not
            apply to the kind being set, or a completed ``cas`` whose output is
            not a ``bool``.
        TypeError: If ``value``, ``expected`` or ``output`` is not hashable.
    """

    client: int
    key: str
    kind: str
    value: Hashable
    expected: Hashable
    call: int
    ret: int | None
    output: Hashable

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"ret ({self.ret}) must be >= call ({self.call})")
        if self.kind == "get" and self.value is not None:
            raise ValueError(f"a get carries no value, got {self.value!r}")
        if self.kind != "cas" and self.expected is not None:
            raise ValueError(f"only a cas has an expected value, got {self.expected!r}")
        if self.ret is not None:
            if self.kind == "put" and self.output is not None:
                raise ValueError(f"a put returns None, got {self.output!r}")
            if self.kind == "cas" and not isinstance(self.output, bool):
                raise ValueError(f"a completed cas returns a bool, got {self.output!r}")
        # The search memoizes states by hash; fail here, not deep inside it.
        for name in ("value", "expected", "output"):
            try:
                hash(getattr(self, name))
            except TypeError as e:
                raise TypeError(f"Operation.{name} must be hashable: {e}") from None


@attrs.frozen
class CheckResult:
    """The verdict on a whole history, with what is needed to debug a failure.

    Attributes:
        verdict: ``NOT_LINEARIZABLE`` if any key is; else ``UNKNOWN`` if any
            key ran out of budget; else ``LINEARIZABLE``.
        key: The first key, in sorted order, with the reported verdict
            (``NOT_LINEARIZABLE`` or ``UNKNOWN``); ``None`` if linearizable.
        steps: Search steps used over all keys checked. Checking stops at the
            first non-linearizable key.
        longest_prefix: For ``NOT_LINEARIZABLE``, the longest sequence of the
            failing key's operations that the search managed to linearize, in
            linearization order; otherwise ``()``.
        key_ops: The reported key's operations, sorted by call time (``()`` if
            linearizable). Not part of the repr: it can be long.
    """

    verdict: Verdict
    key: str | None
    steps: int
    longest_prefix: tuple[Operation, ...]
    key_ops: tuple[Operation, ...] = attrs.field(default=(), repr=False)

    def explain(self) -> str:
        """Describe the result for a human: verdict, key, its ops and the best prefix.

        Returns:
            A multi-line string. For a failing key it lists the key's
            operations by call time (``[i]`` numbers them), then the longest
            linearizable prefix in order, citing those numbers.
        """
        if self.verdict is Verdict.LINEARIZABLE:
            return f"LINEARIZABLE: every key has a linearization ({self.steps} search steps)."
        if self.verdict is Verdict.NOT_LINEARIZABLE:
            lines = [
                f"NOT_LINEARIZABLE: key {self.key!r} has no linearization "
                f"({self.steps} search steps)."
            ]
        else:
            lines = [
                f"UNKNOWN: the search budget ran out on key {self.key!r} "
                f"({self.steps} search steps); raise max_steps to decide."
            ]
        # Number the prefix by position in key_ops; equal duplicates take
        # successive numbers.
        unused: dict[Operation, list[int]] = {}
        for i, op in reversed(list(enumerate(self.key_ops))):
            unused.setdefault(op, []).append(i)
        lines.append(f"Operations on {self.key!r}, by call time ([call, ret]):")
        lines.extend(f"  [{i}] {_describe(op)}" for i, op in enumerate(self.key_ops))
        if self.verdict is Verdict.NOT_LINEARIZABLE:
            lines.append(
                f"Longest linearizable prefix ({len(self.longest_prefix)} of "
                f"{len(self.key_ops)} ops):"
            )
            if not self.longest_prefix:
                lines.append("  (none: no operation can be linearized first)")
            for step, op in enumerate(self.longest_prefix, 1):
                free = unused.get(op)
                number = free.pop() if free else "?"
                lines.append(f"  {step}. [{number}] {_describe(op)}")
        return "\n".join(lines)


def _describe(op: Operation) -> str:
    if op.kind == "put":
        what = f"put({op.value!r})"
    elif op.kind == "get":
        what = "get()"
    else:
        what = f"cas({op.expected!r} -> {op.value!r})"
    if op.ret is None:
        return f"client {op.client}: {what} -> ?  [{op.call}, ?) indeterminate"
    if op.kind != "put":
        what = f"{what} -> {op.output!r}"
    return f"client {op.client}: {what}  [{op.call}, {op.ret}]"


def check_history(ops: Sequence[Operation], *, max_steps: int = 1_000_000) -> CheckResult:
    """Decide whether a key/value history is linearizable.

    Each key is a register that starts as ``None``; see the module docstring
    for the algorithm and its rules (time order, indeterminate operations).

    Args:
        ops: The history, in any order.
        max_steps: Search budget *per key*. A key that needs more steps is
            reported ``UNKNOWN``.

    Returns:
        The verdict. ``NOT_LINEARIZABLE`` takes precedence over ``UNKNOWN``:
        one key that certainly has no linearization decides the history even
        if another key was undecided (Porcupine does the same).

    Raises:
        ValueError: If ``max_steps`` is negative.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)

    total_steps = 0
    unknown_key: str | None = None
    for key in sorted(by_key):
        key_ops = by_key[key]
        verdict, steps, longest = _check_key(key_ops, max_steps)
        total_steps += steps
        if verdict is Verdict.NOT_LINEARIZABLE:
            return CheckResult(
                verdict=verdict,
                key=key,
                steps=total_steps,
                longest_prefix=longest,
                key_ops=_by_call(key_ops),
            )
        if verdict is Verdict.UNKNOWN and unknown_key is None:
            unknown_key = key
    if unknown_key is not None:
        return CheckResult(
            verdict=Verdict.UNKNOWN,
            key=unknown_key,
            steps=total_steps,
            longest_prefix=(),
            key_ops=_by_call(by_key[unknown_key]),
        )
    return CheckResult(verdict=Verdict.LINEARIZABLE, key=None, steps=total_steps, longest_prefix=())


def _by_call(ops: list[Operation]) -> tuple[Operation, ...]:
    # Stable sort: ties keep input order, so explanations are reproducible.
    return tuple(sorted(ops, key=lambda op: op.call))


_PUT, _GET, _CAS = 0, 1, 2
_KIND_CODE = {"put": _PUT, "get": _GET, "cas": _CAS}


def _check_key(
    history: list[Operation], max_steps: int
) -> tuple[Verdict, int, tuple[Operation, ...]]:
    """Search one key's sub-history. Returns (verdict, steps used, longest prefix)."""
    # Rule 2: an indeterminate get has no effect and no checked output, so it
    # can always be linearized last; leaving it out only shrinks the search.
    ops = [op for op in history if not (op.kind == "get" and op.ret is None)]
    n = len(ops)
    kinds = [_KIND_CODE[op.kind] for op in ops]
    values = [op.value for op in ops]
    expecteds = [op.expected for op in ops]
    outputs = [op.output for op in ops]
    determinate = [op.ret is not None for op in ops]

    # Events sorted by time; Rule 1 (call before return on ties) via the
    # second component; op index breaks the remaining ties deterministically;
    # indeterminate returns (Rule 2: +infinity) sort after every finite time.
    events: list[tuple[int, int, int, int]] = []
    for j, op in enumerate(ops):
        events.append((0, op.call, 0, j))
        events.append((0, op.ret, 1, j) if op.ret is not None else (1, 0, 1, j))
    events.sort()

    # The doubly linked list over list positions: 0 is the head sentinel,
    # 1..2n the events, 2n+1 the tail sentinel.
    head, tail = 0, 2 * n + 1
    nxt = [*range(1, 2 * n + 2), -1]
    prv = [-1, *range(2 * n + 1)]
    op_of = [-1] * (2 * n + 2)
    # match[pos] is the position of a call's return event; -1 for a return.
    match = [-1] * (2 * n + 2)
    call_pos = [0] * n
    for pos, (_, _, is_return, j) in enumerate(events, 1):
        op_of[pos] = j
        if is_return:
            match[call_pos[j]] = pos
        else:
            call_pos[j] = pos

    state: Hashable = None  # the register's initial value
    linearized = 0  # bitset of op indices
    # Lowe 2017: (linearized set, state) pairs already explored.
    seen: set[tuple[int, Hashable]] = set()
    # The explicit DFS stack: (call position, state before that op).
    stack: list[tuple[int, Hashable]] = []
    best: tuple[int, ...] = ()
    steps = 0
    entry = nxt[head]
    while nxt[head] != tail:
        if steps >= max_steps:
            return Verdict.UNKNOWN, steps, ()
        steps += 1
        ret_pos = match[entry]
        if ret_pos >= 0:
            # A call: try to linearize its operation now.
            j = op_of[entry]
            kind = kinds[j]
            if kind == _PUT:
                ok, new_state = True, values[j]
            elif kind == _GET:
                ok, new_state = outputs[j] == state, state
            elif state == expecteds[j]:
                ok, new_state = (not determinate[j]) or outputs[j] is True, values[j]
            else:
                ok, new_state = (not determinate[j]) or outputs[j] is False, state
            if ok:
                new_linearized = linearized | (1 << j)
                memo = (new_linearized, new_state)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    # Lift the call and its return out of the list.
                    p, q = prv[entry], nxt[entry]
                    nxt[p], prv[q] = q, p
                    p, q = prv[ret_pos], nxt[ret_pos]
                    nxt[p], prv[q] = q, p
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            # A return: its operation had to be linearized by now. Dead end.
            if len(stack) > len(best):
                best = tuple(op_of[pos] for pos, _ in stack)
            if not stack:
                return Verdict.NOT_LINEARIZABLE, steps, tuple(ops[j] for j in best)
            entry, state = stack.pop()
            linearized &= ~(1 << op_of[entry])
            # Unlift in the reverse order of the lift (dancing links).
            ret_pos = match[entry]
            nxt[prv[ret_pos]] = ret_pos
            prv[nxt[ret_pos]] = ret_pos
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            entry = nxt[entry]
    return Verdict.LINEARIZABLE, steps, ()
