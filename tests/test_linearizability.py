"""Tests for graft_sim._linearizability: the Wing & Gong / Lowe checker for k/v histories.

Definitions checked (Herlihy & Wing 1990, "Linearizability: a correctness
condition for concurrent objects"): a history is linearizable iff there is a
total order of its operations that (a) respects real time, i.e. if A returned
before B was invoked then A comes first, and (b) is a legal sequential
history of the object, here a register per key starting at None.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graft_sim._linearizability import CheckResult, Operation, Verdict, check_history

REPO = Path(__file__).resolve().parent.parent

# --- building operations ----------------------------------------------------


def put(key: str, value: Hashable, call: int, ret: int | None, client: int = 0) -> Operation:
    return Operation(client, key, "put", value, None, call, ret, None)


def get(key: str, output: Hashable, call: int, ret: int | None, client: int = 0) -> Operation:
    return Operation(client, key, "get", None, None, call, ret, output)


def cas(
    key: str,
    expected: Hashable,
    new: Hashable,
    output: bool | None,
    call: int,
    ret: int | None,
    client: int = 0,
) -> Operation:
    return Operation(client, key, "cas", new, expected, call, ret, output)


L, NL, UNKNOWN = Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE, Verdict.UNKNOWN


def verdict(*ops: Operation) -> Verdict:
    return check_history(ops).verdict


# --- independent oracles ------------------------------------------------------


def _legal(sequence: Sequence[Operation]) -> bool:
    """Is this a legal sequential history of a register per key (outputs match)?"""
    reg: dict[str, Hashable] = {}
    for op in sequence:
        current = reg.get(op.key)
        if op.kind == "put":
            reg[op.key] = op.value
        elif op.kind == "get":
            if op.ret is not None and op.output != current:
                return False
        else:
            swapped = current == op.expected
            if op.ret is not None and op.output is not swapped:
                return False
            if swapped:
                reg[op.key] = op.value
    return True


def _respects_real_time(sequence: Sequence[Operation]) -> bool:
    # A must come before B iff A.ret < B.call (strictly), so an order is
    # wrong iff some op placed later returned before an earlier one was called.
    return not any(
        later.ret is not None and later.ret < earlier.call
        for i, earlier in enumerate(sequence)
        for later in sequence[i + 1 :]
    )


def brute_force_linearizable(ops: Sequence[Operation]) -> bool:
    """The definition, by enumeration: try every order of every key's ops.

    An indeterminate op may also be left out entirely (it never took effect,
    equivalently it is linearized after everything else).
    """
    for key in {op.key for op in ops}:
        mine = [op for op in ops if op.key == key]
        done = [op for op in mine if op.ret is not None]
        maybe = [op for op in mine if op.ret is None]
        ok = any(
            _respects_real_time(order) and _legal(order)
            for r in range(len(maybe) + 1)
            for chosen in itertools.combinations(maybe, r)
            for order in itertools.permutations(done + list(chosen))
        )
        if not ok:
            return False
    return True


def assert_prefix_is_linearizable(result: CheckResult, ops: Sequence[Operation]) -> None:
    """longest_prefix must be a real linearizable prefix of the failing key."""
    prefix = result.longest_prefix
    assert all(op.key == result.key for op in prefix)
    assert len(set(map(id, prefix))) == len(prefix)  # no op used twice
    assert all(any(op is o for o in ops) for op in prefix)
    assert _respects_real_time(prefix)
    assert _legal(prefix)
    # Nothing left out may have had to come before something in the prefix.
    rest = [o for o in ops if o.key == result.key and not any(o is p for p in prefix)]
    assert not any(o.ret is not None and o.ret < p.call for o in rest for p in prefix)


# --- linearizable-by-construction histories -----------------------------------

KINDS = ("put", "get", "cas")


def build_linearizable(
    randint: Callable[[int, int], int],
    n_ops: int,
    keys: Sequence[str],
    spread: int,
    indeterminate_pct: int,
) -> list[Operation]:
    """A history that is linearizable by construction.

    Linearization points are chosen first, strictly increasing; the ops are
    applied to a real register in that order to get their outputs; then each
    op's [call, ret] interval is widened randomly around its point, so the
    points themselves are a witness order (Herlihy & Wing's definition).
    Indeterminate ops may or may not take effect at their point.
    """
    reg: dict[str, Hashable] = {}
    ops: list[Operation] = []
    point = 0
    for i in range(n_ops):
        point += randint(1, 3)
        key = keys[randint(0, len(keys) - 1)]
        kind = KINDS[randint(0, 2)]
        call, ret = point - randint(0, spread), point + randint(0, spread)
        indeterminate = randint(0, 99) < indeterminate_pct
        effective = not indeterminate or randint(0, 1) == 1
        current = reg.get(key)
        value = randint(0, 3)
        client = i % 7
        if kind == "put":
            if effective:
                reg[key] = value
            ops.append(put(key, value, call, None if indeterminate else ret, client))
        elif kind == "get":
            output = randint(0, 3) if indeterminate else current
            ops.append(get(key, output, call, None if indeterminate else ret, client))
        else:
            expected = current if randint(0, 1) else (None if randint(0, 3) == 0 else randint(0, 3))
            swapped = current == expected
            if effective and swapped:
                reg[key] = value
            if indeterminate:
                ops.append(cas(key, expected, value, randint(0, 1) == 1, call, None, client))
            else:
                ops.append(cas(key, expected, value, swapped, call, ret, client))
    return ops


@st.composite
def linearizable_histories(
    draw: st.DrawFn,
    keys: Sequence[str] = ("a", "b", "c"),
    max_ops: int = 40,
    indeterminate_pct: int = 15,
) -> list[Operation]:
    n_ops = draw(st.integers(0, max_ops))
    spread = draw(st.integers(0, 12))
    return build_linearizable(
        lambda lo, hi: draw(st.integers(lo, hi)), n_ops, keys, spread, indeterminate_pct
    )


# --- hand-written cases ------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check_history([]) == CheckResult(L, None, 0, ())


def test_sequential_history_passes() -> None:
    ops = [
        get("x", None, 0, 1),
        put("x", 1, 2, 3),
        get("x", 1, 4, 5),
        cas("x", 1, 2, True, 6, 7),
        get("x", 2, 8, 9),
        cas("x", 1, 3, False, 10, 11),
        get("x", 2, 12, 13),
    ]
    result = check_history(ops)
    assert result == CheckResult(L, None, result.steps, ())
    # Sequential: every step lifts an op, no backtracking.
    assert result.steps == len(ops)


@pytest.mark.parametrize(("seen", "expected"), [(None, L), (1, L), (2, NL)])
def test_concurrent_get_may_see_either_value(seen: Hashable, expected: Verdict) -> None:
    # The get overlaps the put, so it may be linearized before or after it.
    assert verdict(put("x", 1, 0, 10, client=1), get("x", seen, 5, 15, client=2)) == expected


def test_stale_read_after_completed_put_fails() -> None:
    ops = [put("x", 1, 0, 10), get("x", None, 11, 12)]
    result = check_history(ops)
    assert (result.verdict, result.key) == (NL, "x")
    assert_prefix_is_linearizable(result, ops)


def test_stale_read_of_overwritten_value_fails() -> None:
    ops = [put("x", 1, 0, 10), put("x", 2, 20, 30), get("x", 1, 40, 50)]
    result = check_history(ops)
    assert (result.verdict, result.key) == (NL, "x")
    assert result.longest_prefix == (ops[0], ops[1])


def test_read_of_value_never_written_fails() -> None:
    result = check_history([put("x", 1, 0, 10), get("x", 7, 0, 10)])
    assert (result.verdict, result.key) == (NL, "x")


def test_tie_is_concurrent_strictly_earlier_return_is_not() -> None:
    # Convention: A precedes B iff A.ret < B.call. At ret == call they overlap.
    assert verdict(put("x", 1, 0, 10), get("x", None, 10, 20)) == L
    assert verdict(put("x", 1, 0, 10), get("x", None, 11, 20)) == NL


def test_cas_success_and_failure() -> None:
    assert verdict(cas("x", None, 1, True, 0, 1), get("x", 1, 2, 3)) == L
    assert verdict(put("x", 5, 0, 1), cas("x", 4, 1, False, 2, 3), get("x", 5, 4, 5)) == L
    # A cas that reports failure although the expected value was there.
    assert verdict(put("x", 4, 0, 1), cas("x", 4, 1, False, 2, 3)) == NL
    # A cas that reports success although it was not.
    assert verdict(put("x", 5, 0, 1), cas("x", 4, 1, True, 2, 3)) == NL


def test_two_concurrent_cas_on_same_expected_cannot_both_succeed() -> None:
    a = cas("x", None, 1, True, 0, 10, client=1)
    b = cas("x", None, 2, True, 0, 10, client=2)
    assert verdict(a, b) == NL
    # Exactly one winner is fine, whichever it is.
    assert verdict(a, cas("x", None, 2, False, 0, 10, client=2)) == L
    assert verdict(cas("x", None, 1, False, 0, 10, client=1), b) == L


def test_indeterminate_put_later_read_passes() -> None:
    assert verdict(put("x", 1, 0, None), get("x", 1, 100, 101)) == L


def test_indeterminate_put_never_read_passes() -> None:
    assert verdict(put("x", 1, 0, None), get("x", None, 100, 101)) == L


def test_indeterminate_put_read_then_older_value_read_fails() -> None:
    ops = [
        put("x", 0, 0, 1),
        put("x", 1, 2, None),
        get("x", 1, 10, 11),
        get("x", 0, 12, 13),
    ]
    result = check_history(ops)
    assert (result.verdict, result.key) == (NL, "x")
    assert_prefix_is_linearizable(result, ops)


def test_indeterminate_put_cannot_take_effect_before_its_call() -> None:
    assert verdict(get("x", 1, 0, 1), put("x", 1, 5, None)) == NL


def test_indeterminate_cas_may_or_may_not_have_applied() -> None:
    maybe = cas("x", None, 1, None, 0, None)
    assert verdict(maybe, get("x", 1, 10, 11)) == L
    assert verdict(maybe, get("x", None, 10, 11)) == L
    assert verdict(maybe, get("x", 1, 10, 11), get("x", None, 12, 13)) == NL
    # It can only apply while the expected value is current.
    assert verdict(put("x", 9, 0, 1), cas("x", None, 1, None, 2, None), get("x", 1, 10, 11)) == NL


def test_indeterminate_output_is_ignored() -> None:
    assert verdict(put("x", 1, 0, 1), get("x", "garbage", 2, None)) == L
    assert verdict(cas("x", 3, 4, True, 0, None), get("x", None, 5, 6)) == L


def test_multi_key_history_reports_the_bad_key() -> None:
    ops = [
        put("a", 1, 0, 10),
        get("a", 1, 5, 15),
        put("b", 1, 0, 10),
        put("b", 2, 20, 30),
        get("b", 1, 40, 50),  # stale
        put("c", "v", 0, 1),
        get("c", "v", 2, 3),
    ]
    result = check_history(ops)
    assert (result.verdict, result.key) == (NL, "b")
    assert result.longest_prefix == (ops[2], ops[3])


def test_first_bad_key_in_sorted_order_is_reported() -> None:
    stale = [put("k", 1, 0, 1), get("k", None, 2, 3)]
    ops = [*(attr_key(op, "zz") for op in stale), *(attr_key(op, "b") for op in stale)]
    assert check_history(ops).key == "b"


def attr_key(op: Operation, key: str) -> Operation:
    return Operation(op.client, key, op.kind, op.value, op.expected, op.call, op.ret, op.output)


def test_keys_are_independent_registers() -> None:
    # Locality: a value written to one key is not visible on another.
    assert verdict(put("a", 1, 0, 1), get("b", 1, 2, 3)) == NL
    assert verdict(put("a", 1, 0, 1), get("b", None, 2, 3)) == L


def test_values_of_various_hashable_types() -> None:
    assert verdict(put("x", b"\x00", 0, 1), get("x", b"\x00", 2, 3)) == L
    assert verdict(put("x", ("t", 1), 0, 1), get("x", ("t", 1), 2, 3)) == L
    assert verdict(put("x", "1", 0, 1), get("x", 1, 2, 3)) == NL


def test_explain_lists_ops_and_prefix() -> None:
    ops = [put("x", 1, 0, 10, client=3), put("x", 2, 20, 30), get("x", 1, 40, 50)]
    text = check_history(ops).explain()
    assert text.startswith("NOT_LINEARIZABLE: key 'x'")
    assert "client 3: put(1)  [0, 10]" in text
    assert "get() -> 1  [40, 50]" in text
    assert "Longest linearizable prefix (2 of 3 ops)" in text
    assert "1. [0] client 3: put(1)" in text
    assert "2. [1] client 0: put(2)" in text
    assert check_history(ops[:2]).explain().startswith("LINEARIZABLE")
    unknown = check_history(ops[:2], max_steps=1).explain()
    assert unknown.startswith("UNKNOWN") and "max_steps" in unknown


def test_explain_survives_a_copy_of_the_result() -> None:
    import copy

    ops = [put("x", 1, 0, 10), put("x", 2, 20, 30), get("x", 1, 40, 50)]
    result = copy.deepcopy(check_history(ops))
    assert "1. [0] client 0: put(1)" in result.explain()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, "x", "delete", None, None, 0, 1, None), ValueError),
        ((0, "x", "put", 1, None, 5, 4, None), ValueError),
        ((0, "x", "cas", 1, 0, 0, 1, None), ValueError),
        ((0, "x", "cas", 1, 0, 0, 1, 1), ValueError),
        ((0, "x", "get", 1, None, 0, 1, None), ValueError),
        ((0, "x", "put", 1, 0, 0, 1, None), ValueError),
        ((0, "x", "put", 1, None, 0, 1, "ok"), ValueError),
        ((0, "x", "put", [1], None, 0, 1, None), TypeError),
        ((0, "x", "get", None, None, 0, 1, {}), TypeError),
    ],
)
def test_operation_validates_its_fields(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        Operation(*args)  # type: ignore[arg-type]


def test_operation_accepts_indeterminate_cas_without_bool_output() -> None:
    assert cas("x", 0, 1, None, 3, None).ret is None


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError):
        check_history([], max_steps=-1)


# --- budget ------------------------------------------------------------------


def _hard_history(key: str, n_puts: int) -> list[Operation]:
    # n concurrent puts, then a read of a value nobody wrote: the search must
    # try every (subset of puts, last value) before it can give up.
    ops = [put(key, i, 0, 100, client=i) for i in range(n_puts)]
    return [*ops, get(key, "never", 200, 201, client=n_puts)]


def test_budget_exhausted_gives_unknown_not_a_wrong_verdict() -> None:
    result = check_history(_hard_history("x", 60), max_steps=10_000)
    assert (result.verdict, result.key, result.steps) == (UNKNOWN, "x", 10_000)
    assert result.longest_prefix == ()
    # The same shape, small enough to finish, is decided.
    small = check_history(_hard_history("x", 8), max_steps=1_000_000)
    assert small.verdict == NL
    assert 1_000 < small.steps < 1_000_000


def test_budget_applies_to_linearizable_histories_too() -> None:
    # Each step lifts at most one op, so 50 ops cannot finish in 49 steps.
    ops = [put("x", i, 2 * i, 2 * i + 1) for i in range(50)]
    assert check_history(ops, max_steps=49).verdict == UNKNOWN
    assert check_history(ops, max_steps=50) == CheckResult(L, None, 50, ())


def test_budget_is_per_key() -> None:
    ops = [put(k, i, 2 * i, 2 * i + 1) for k in "abc" for i in range(10)]
    assert check_history(ops, max_steps=10) == CheckResult(L, None, 30, ())


def test_not_linearizable_beats_unknown() -> None:
    stale = [put("b", 1, 0, 1), get("b", None, 2, 3)]
    result = check_history([*_hard_history("a", 40), *stale], max_steps=1_000)
    assert (result.verdict, result.key) == (NL, "b")
    result = check_history([*_hard_history("a", 40), *stale[:1]], max_steps=1_000)
    assert (result.verdict, result.key) == (UNKNOWN, "a")


# --- properties ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(linearizable_histories())
def test_histories_built_from_linearization_points_are_linearizable(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result == CheckResult(L, None, result.steps, ())
    # The verdict cannot depend on the order the history is given in.
    assert check_history(ops[::-1]).verdict == L


@settings(max_examples=100, deadline=None)
@given(linearizable_histories(indeterminate_pct=60))
def test_mostly_indeterminate_histories_are_linearizable(ops: list[Operation]) -> None:
    assert check_history(ops).verdict == L


@settings(max_examples=150, deadline=None)
@given(
    base=linearizable_histories(keys=("a", "b", "c")),
    target=st.sampled_from(["0", "b2", "z"]),
    target_prefix=linearizable_histories(keys=("k",), max_ops=12, indeterminate_pct=0),
    old=st.integers(0, 5),
    delta=st.integers(1, 3),
    gaps=st.lists(st.integers(0, 6), min_size=5, max_size=5),
    second_is_cas=st.booleans(),
)
def test_stale_read_is_never_linearizable(
    base: list[Operation],
    target: str,
    target_prefix: list[Operation],
    old: int,
    delta: int,
    gaps: list[int],
    second_is_cas: bool,
) -> None:
    # On the target key: any determinate linearizable prefix, then
    # w1 = put(A) completes, w2 writes B != A and completes strictly after,
    # and a get invoked strictly after w2 returned reads A. No other write to
    # the key can be linearized between w2 and the get, so this is a stale read
    # whatever the other keys do.
    prefix = [attr_key(op, target) for op in target_prefix]
    t = max((op.ret for op in prefix if op.ret is not None), default=0) + 1 + gaps[0]
    new = old + delta
    w1 = put(target, old, t, t + gaps[1], client=100)
    t2 = w1.ret + 1 + gaps[2]  # type: ignore[operator]
    if second_is_cas:
        w2 = cas(target, old, new, True, t2, t2 + gaps[3], client=101)
    else:
        w2 = put(target, new, t2, t2 + gaps[3], client=101)
    t3 = w2.ret + 1 + gaps[4]  # type: ignore[operator]
    stale = get(target, old, t3, t3 + 2, client=102)
    ops = [*base, *prefix, w1, w2, stale]
    result = check_history(ops)
    assert (result.verdict, result.key) == (NL, target)
    assert_prefix_is_linearizable(result, ops)
    assert result.explain().startswith(f"NOT_LINEARIZABLE: key {target!r}")
    # Without the stale read, it is linearizable.
    assert check_history([*base, *prefix, w1, w2]).verdict == L


@st.composite
def small_arbitrary_histories(draw: st.DrawFn) -> list[Operation]:
    # Random outputs and tight, often tied times: about half are linearizable.
    ops: list[Operation] = []
    for client in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from("ab"))
        kind = draw(st.sampled_from(KINDS))
        call = draw(st.integers(0, 8))
        ret = None if draw(st.integers(0, 4)) == 0 else call + draw(st.integers(0, 4))
        value = draw(st.sampled_from([1, 2]))
        if kind == "put":
            ops.append(put(key, value, call, ret, client))
        elif kind == "get":
            ops.append(get(key, draw(st.sampled_from([None, 1, 2])), call, ret, client))
        else:
            expected = draw(st.sampled_from([None, 1, 2]))
            ops.append(cas(key, expected, value, draw(st.booleans()), call, ret, client))
    return ops


@settings(max_examples=400, deadline=None)
@given(small_arbitrary_histories())
def test_agrees_with_brute_force_enumeration(ops: list[Operation]) -> None:
    result = check_history(ops)
    expected = L if brute_force_linearizable(ops) else NL
    assert result.verdict == expected, result.explain()
    if result.verdict == NL:
        assert_prefix_is_linearizable(result, ops)


# --- scale and determinism -------------------------------------------------------


def _big_history(seed: int) -> list[Operation]:
    rng = random.Random(seed)
    keys = [f"key{i:02d}" for i in range(20)]
    return build_linearizable(rng.randint, 2_000, keys, spread=150, indeterminate_pct=5)


def _max_open_intervals(ops: Sequence[Operation], key: str) -> int:
    # Sweep over completed ops' calls and returns; calls first on ties (Rule 1).
    events = sorted(
        (t, kind)
        for op in ops
        if op.key == key and op.ret is not None
        for t, kind in ((op.call, 0), (op.ret, 1))
    )
    open_now = best = 0
    for _, kind in events:
        open_now += 1 if kind == 0 else -1
        best = max(best, open_now)
    return best


def test_two_thousand_ops_over_twenty_keys() -> None:
    ops = _big_history(seed=2024)
    keys = sorted({op.key for op in ops})
    assert len(keys) == 20
    # Moderate concurrency: several ops in flight at once on every key.
    assert min(_max_open_intervals(ops, k) for k in keys) >= 5
    result = check_history(ops)
    assert result == CheckResult(L, None, result.steps, ())


def test_same_history_same_result() -> None:
    good = _big_history(seed=7)[:300]
    bad = [*good, put("key00", "A", 10_000, 10_001), get("key00", None, 10_002, 10_003)]
    for ops in (good, bad, _hard_history("x", 30)):
        first = check_history(ops, max_steps=20_000)
        assert check_history(list(ops), max_steps=20_000) == first
    assert check_history(bad).verdict == NL


_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    from graft_sim._linearizability import Operation, check_history
    ops = []
    for i in range(30):
        ops.append(Operation(i, f"k{i % 3}", "put", ("v", str(i), bytes([i])), None, 0, 100, None))
    ops.append(Operation(99, "k0", "get", None, None, 200, 201, "never"))
    ops.append(Operation(98, "k1", "get", None, None, 200, 201, ("v", "1", b"\\x01")))
    r = check_history(ops, max_steps=50_000)
    print(r.verdict, r.key, r.steps, [op.client for op in r.longest_prefix])
    """
)


def test_result_does_not_depend_on_hash_seed() -> None:
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1, outputs
    assert next(iter(outputs)).startswith("Verdict.")


def test_regression_simulator_seed_100_put_may_take_effect_late() -> None:
    """A history from graft_sim's seed 100 that an early checker wrongly rejected.

    ``put('1.43')`` overlaps the cas and may take effect after it, which is the
    only order that explains the final read of ``'1.43'``.
    """
    ops = [
        Operation(0, "k0", "put", "0.41", None, 1261419, 1373494, None),
        Operation(1, "k0", "get", None, None, 1297926, 1300854, "0.41"),
        Operation(1, "k0", "put", "1.43", None, 1313117, 1673472, None),
        Operation(2, "k0", "put", "2.44", None, 1334059, 1339428, None),
        Operation(2, "k0", "put", "2.48", None, 1557521, 1563041, None),
        Operation(2, "k0", "cas", "2.49", "2.48", 1571448, 1578056, True),
        Operation(1, "k0", "get", None, None, 1752268, 1758378, "1.43"),
    ]
    assert check_history(ops).verdict is Verdict.LINEARIZABLE
    # Without the overlap (the put returns before the cas starts) it is not.
    late = [*ops[:2], attrs.evolve(ops[2], ret=1400000), *ops[3:]]
    assert check_history(late).verdict is Verdict.NOT_LINEARIZABLE
