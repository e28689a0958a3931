"""Tests for graft_core._pvector.PVector, the persistent vector holding the Raft log."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from graft_core._pvector import PVector

# Capacity of a trie of height 5 (one level) and 10 (two levels), in items.
L1 = 32 * 32
L2 = 32 * 32 * 32

# Sizes at which the shape changes: the tail fills, the first leaf enters the
# trie, the root gains a level (that happens when the trie is full *and* the
# tail is full, i.e. at capacity + 32 + 1 items).
BOUNDARY_SIZES = [
    0,
    1,
    2,
    31,
    32,
    33,
    63,
    64,
    65,
    1023,
    1024,
    1025,
    L1 + 32,
    L1 + 33,
    L2 - 1,
    L2,
    L2 + 1,
    L2 + 32,
    L2 + 33,
]


def well_formed(v: PVector[Any]) -> None:
    """Assert the structural invariants of ``v`` (peeks at private slots)."""
    assert not hasattr(v, "__dict__")
    root, shift, tail, tailoff = v._root, v._shift, v._tail, v._tailoff
    assert type(tail) is tuple
    assert type(root) is tuple
    assert 0 <= len(tail) <= 32
    assert (len(tail) == 0) == (len(v) == 0)
    assert tailoff % 32 == 0
    assert len(v) == tailoff + len(tail)
    assert shift >= 5 and shift % 5 == 0
    # The height is the least that holds the trie.
    assert tailoff <= 1 << (shift + 5)
    assert shift == 5 or tailoff > 1 << shift
    if tailoff == 0:
        assert root == ()
        return

    def count(node: tuple[Any, ...], height: int, is_right_edge: bool) -> int:
        assert type(node) is tuple
        if height == 0:  # a leaf
            assert len(node) == 32
            return 32
        assert 1 <= len(node) <= 32
        total = 0
        for j, child in enumerate(node):
            last = j == len(node) - 1
            n = count(child, height - 5, is_right_edge and last)
            if not last:  # left-packed: only the right edge may be partial
                assert n == 1 << height
            total += n
        if not is_right_edge:
            assert total == 1 << (height + 5)
        return total

    assert count(root, shift, True) == tailoff


def check_equal(v: PVector[int], expected: list[int] | tuple[int, ...]) -> None:
    """Assert ``v`` holds exactly ``expected``, by every read path."""
    exp = list(expected)
    n = len(exp)
    assert len(v) == n
    assert list(v) == exp
    assert v.slice(0, n) == tuple(exp)
    assert [v[i] for i in range(n)] == exp
    assert [v[i] for i in range(-n, 0)] == exp
    if n:
        assert v.last() == exp[-1]
    for bad in (n, n + 1, -n - 1, -n - 100, 10**12, -(10**12)):
        with pytest.raises(IndexError):
            v[bad]


def build_by_appends(n: int) -> PVector[int]:
    v: PVector[int] = PVector.empty()
    for i in range(n):
        v = v.append(i)
    return v


def build_by_extends(n: int, chunk: int) -> PVector[int]:
    v: PVector[int] = PVector.empty()
    for start in range(0, n, chunk):
        v = v.extend(range(start, min(n, start + chunk)))
    return v


# -- construction and boundaries ---------------------------------------------


@pytest.mark.parametrize("n", BOUNDARY_SIZES)
def test_from_iterable_at_boundaries(n: int) -> None:
    v = PVector.from_iterable(range(n))
    well_formed(v)
    check_equal(v, list(range(n)))


@pytest.mark.parametrize("n", BOUNDARY_SIZES)
def test_appends_match_from_iterable_at_boundaries(n: int) -> None:
    v = build_by_appends(n)
    well_formed(v)
    w = PVector.from_iterable(range(n))
    assert v == w
    # The shape is a function of the length alone.
    assert (v._root, v._shift, v._tail, v._tailoff) == (w._root, w._shift, w._tail, w._tailoff)
    check_equal(v, list(range(n)))


@pytest.mark.parametrize("chunk", [1, 7, 31, 32, 33, 100, 1024, 1025, 5000])
@pytest.mark.parametrize("n", [0, 33, 1057, L2 + 33, 3 * L2 + 5])
def test_extends_match_from_iterable(n: int, chunk: int) -> None:
    v = build_by_extends(n, chunk)
    well_formed(v)
    w = PVector.from_iterable(range(n))
    assert v == w
    assert (v._root, v._shift, v._tail, v._tailoff) == (w._root, w._shift, w._tail, w._tailoff)
    assert list(v) == list(range(n))


@pytest.mark.parametrize("base", BOUNDARY_SIZES)
@pytest.mark.parametrize("k", [1, 31, 32, 33, 1024, 1057, L2 + 33])
def test_extend_from_every_boundary(base: int, k: int) -> None:
    v = PVector.from_iterable(range(base))
    w = v.extend(range(base, base + k))
    well_formed(w)
    assert w == PVector.from_iterable(range(base + k))
    assert w[base] == base and w[-1] == base + k - 1
    check_equal(v, list(range(base)))  # the original is unchanged


def test_root_grows_a_level_exactly_when_full() -> None:
    v = PVector.from_iterable(range(L1 + 32))
    assert v._shift == 5
    assert v.append(0)._shift == 10
    w = PVector.from_iterable(range(L2 + 32))
    assert w._shift == 10
    assert w.append(0)._shift == 15
    assert w.extend([0])._shift == 15


def test_million_items_four_levels() -> None:
    n = 32**4 + 33  # the root gains a 4th level (shift 20)
    v = PVector.from_iterable(range(n))
    well_formed(v)
    assert v._shift == 20
    assert v == build_by_extends(n, 4099)
    for i in (0, 31, 32, 1023, 1024, L2 - 1, L2, 32**4 - 1, 32**4, n - 1):
        assert v[i] == i
        assert v[i - n] == i
    assert v.slice(32**4 - 40, 32**4 + 20) == tuple(range(32**4 - 40, 32**4 + 20))
    assert v.slice(32**4 - 40, n + 99) == tuple(range(32**4 - 40, n))
    t = v.take(32**4)
    well_formed(t)
    assert t._shift == 15
    assert len(t) == 32**4 and t[-1] == 32**4 - 1


def test_empty() -> None:
    e: PVector[int] = PVector.empty()
    assert e is PVector.empty()
    assert len(e) == 0
    assert not e
    assert list(e) == []
    assert e == PVector.from_iterable([])
    assert PVector.from_iterable([]) is e
    assert PVector() is e
    assert e.slice(0, 10) == ()
    assert e.take(0) is e
    assert e.extend([]) is e
    with pytest.raises(IndexError):
        e[0]
    with pytest.raises(IndexError):
        e[-1]
    with pytest.raises(IndexError):
        e.last()
    well_formed(e)


def test_constructor_and_from_iterable_inputs() -> None:
    assert list(PVector([1, 2, 3])) == [1, 2, 3]
    assert list(PVector.from_iterable(x * 2 for x in range(100))) == list(range(0, 200, 2))
    assert list(PVector.from_iterable("abc")) == ["a", "b", "c"]
    v = PVector.from_iterable(range(40))
    assert PVector.from_iterable(v) is v
    assert PVector(v) is v
    assert v.extend(v) == PVector.from_iterable([*range(40), *range(40)])


# -- getitem / last --------------------------------------------------------------


def test_getitem_rejects_non_integers() -> None:
    v = PVector.from_iterable(range(100))
    for bad in ("1", 1.0, 1.5, None, slice(0, 2)):
        with pytest.raises(TypeError):
            v[bad]  # type: ignore[index]
    assert v[True] == 1  # bool is an int, as for tuples


def test_last_and_negative_indexes_cross_the_tail() -> None:
    v = PVector.from_iterable(range(65))  # tail holds exactly one item
    assert len(v._tail) == 1
    assert v.last() == 64
    assert v[-1] == 64
    assert v[-2] == 63  # in the trie
    assert v[-65] == 0
    w = PVector.from_iterable(range(64))  # tail full
    assert w[-32] == 32 and w[-33] == 31


# -- take --------------------------------------------------------------------------

TAKE_POINTS = sorted(
    {
        n
        for b in (0, 32, 64, L1, L1 + 32, 2 * L1, L2, L2 + 32, 2 * L2)
        for n in (b - 1, b, b + 1, b + 31, b + 32, b + 33)
        if n >= 0
    }
)


@pytest.mark.parametrize("size", [L1 + 33, L2 + 33, 2 * L2 + 40])
def test_take_at_every_level_boundary(size: int) -> None:
    v = PVector.from_iterable(range(size))
    for n in TAKE_POINTS:
        if n > size:
            continue
        t = v.take(n)
        well_formed(t)
        w = PVector.from_iterable(range(n))
        assert t == w
        assert (t._root, t._shift, t._tail, t._tailoff) == (w._root, w._shift, w._tail, w._tailoff)
        assert len(t) == n
        if n:
            assert t.last() == n - 1
            assert t[n // 2] == n // 2
        # Still a working vector: grows back to the original.
        assert t.extend(range(n, size)) == v
        assert t.append(-1)[n] == -1
    check_equal(v, list(range(size)))


def test_take_edges_and_errors() -> None:
    v = PVector.from_iterable(range(100))
    assert v.take(100) is v
    assert v.take(0) is PVector.empty()
    for bad in (-1, 101, 10**9):
        with pytest.raises(ValueError):
            v.take(bad)


def test_take_shares_structure() -> None:
    v = PVector.from_iterable(range(L2 * 3))
    near_end = v.take(len(v) - 5)
    assert near_end._root is v._root  # only the tail was cut
    mid = v.take(L2 + 100)
    assert mid._shift == v._shift == 15
    # Everything left of the cut is the very same objects: a whole height-10
    # subtree, and the leaves on the cut path.
    assert mid._root[0] is v._root[0]
    assert mid._root[1][0][0] is v._root[1][0][0]
    assert mid._root[1][0][1] is v._root[1][0][1]


# -- slice ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 32, 33, 100, L1 + 40, L2 + 70])
def test_slice_windows(size: int) -> None:
    v = PVector.from_iterable(range(size))
    model = list(range(size))
    points = sorted(
        {p for b in (0, 31, 32, 33, 64, L1, size - 33, size - 32, size) for p in (b - 1, b, b + 1)}
    )
    points = [p for p in points if 0 <= p <= size + 2]
    for lo in points:
        for hi in points:
            if hi < lo:
                continue
            assert v.slice(lo, hi) == tuple(model[lo:hi]), (lo, hi)
    assert v.slice(0, size + 1000) == tuple(model)
    assert v.slice(size + 5, size + 10) == ()


def test_slice_long_range_returns_tuple() -> None:
    v = PVector.from_iterable(range(L2 + 70))
    s = v.slice(5, L2 + 60)
    assert type(s) is tuple
    assert s == tuple(range(5, L2 + 60))


def test_slice_errors() -> None:
    v = PVector.from_iterable(range(10))
    with pytest.raises(ValueError):
        v.slice(-1, 3)
    with pytest.raises(ValueError):
        v.slice(5, 4)
    assert v.slice(4, 4) == ()


# -- immutability and sharing -----------------------------------------------------


def test_append_shares_the_trie() -> None:
    v = PVector.from_iterable(range(L2 + 10))
    w = v.append(-1)
    assert w._root is v._root
    assert len(v) == L2 + 10 and v.last() == L2 + 9
    assert w.last() == -1


def test_cannot_add_attributes() -> None:
    v = PVector.from_iterable([1])
    with pytest.raises(AttributeError):
        v.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(v, "__dict__")


def test_old_versions_survive_branching() -> None:
    base = PVector.from_iterable(range(L1 + 32))
    a = base.append(-1)
    b = base.append(-2)
    c = base.take(L1 - 1).extend([-3] * 2000)
    d = a.take(5)
    assert a[-1] == -1 and b[-1] == -2
    check_equal(base, list(range(L1 + 32)))
    check_equal(a, [*range(L1 + 32), -1])
    check_equal(b, [*range(L1 + 32), -2])
    check_equal(c, [*range(L1 - 1), *([-3] * 2000)])
    check_equal(d, [0, 1, 2, 3, 4])
    for x in (base, a, b, c, d):
        well_formed(x)


# -- equality, hashing, repr, pickling ---------------------------------------------


def test_equality_and_hash() -> None:
    n = L1 + 50
    v = PVector.from_iterable(range(n))
    w = build_by_appends(n)
    assert v is not w
    assert v == w
    assert (v != w) is False
    assert hash(v) == hash(w)
    same = v
    assert v == same  # the identity fast path
    assert v != v.take(n - 1)
    assert v != v.append(0)
    # Same length, one item differs: in the trie, then in the tail.
    in_trie = v.take(10).append(-1).extend(range(11, n))
    in_tail = v.take(n - 1).append(-1)
    assert len(in_trie) == len(in_tail) == n
    assert v != in_trie
    assert v != in_tail
    assert v != tuple(range(n))
    assert v != list(range(n))
    assert PVector.from_iterable([]) != ()
    assert {v: 1}[w] == 1
    assert hash(PVector.empty()) == hash(PVector.from_iterable([]))


def test_equality_uses_item_equality() -> None:
    assert PVector.from_iterable([1, 2]) == PVector.from_iterable([1.0, 2.0])
    nan = float("nan")
    assert PVector.from_iterable([nan]) == PVector.from_iterable([nan])  # identity, like tuples
    assert PVector.from_iterable([float("nan")]) != PVector.from_iterable([float("nan")])


def test_unhashable_items_make_an_unhashable_vector() -> None:
    v = PVector.from_iterable([[1], [2]])
    with pytest.raises(TypeError):
        hash(v)


def test_repr() -> None:
    assert repr(PVector.empty()) == "PVector([])"
    assert repr(PVector.from_iterable([1, "a"])) == "PVector([1, 'a'])"
    assert repr(PVector.from_iterable(range(10))) == f"PVector({list(range(10))!r})"
    long = repr(PVector.from_iterable(range(1000)))
    assert long == "PVector([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...], len=1000)"


def test_pickle_and_copy() -> None:
    v = PVector.from_iterable(range(L1 + 77))
    w = pickle.loads(pickle.dumps(v))
    assert w == v and w is not v
    well_formed(w)
    assert copy.copy(v) is v
    d = copy.deepcopy(PVector.from_iterable([[1], [2]]))
    assert d == PVector.from_iterable([[1], [2]])
    assert d[0] is not None and list(d) == [[1], [2]]
    e = pickle.loads(pickle.dumps(PVector.empty()))
    assert e is PVector.empty()
    # Unpickling never writes into the shared empty vector.
    assert len(PVector.empty()) == 0 and list(PVector.empty()) == []


# -- stateful comparison against a list -------------------------------------------

MAX_SNAPSHOTS = 4


class PVectorMachine(RuleBasedStateMachine):
    """Drive a PVector and a list through the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.v: PVector[int] = PVector.empty()
        self.model: list[int] = []
        self.next_value = 0
        self.snapshots: list[tuple[PVector[int], tuple[int, ...]]] = []

    def fresh(self, k: int) -> list[int]:
        # Distinct values, so any misplaced item is noticed.
        xs = list(range(self.next_value, self.next_value + k))
        self.next_value += k
        return xs

    @initialize(n=st.integers(0, 100))
    def start(self, n: int) -> None:
        xs = self.fresh(n)
        self.v = PVector.from_iterable(xs)
        self.model = xs

    @rule()
    def append(self) -> None:
        (x,) = self.fresh(1)
        self.v = self.v.append(x)
        self.model.append(x)

    @rule(k=st.integers(0, 70))
    def extend_small(self, k: int) -> None:
        xs = self.fresh(k)
        self.v = self.v.extend(xs)
        self.model.extend(xs)

    @rule(k=st.one_of(st.integers(0, 1100), st.sampled_from([1024, 1025, 1056, 1057, 2049])))
    def extend_large(self, k: int) -> None:
        xs = self.fresh(k)
        self.v = self.v.extend(iter(xs))  # any iterable, not just a sequence
        self.model.extend(xs)

    @rule(n=st.one_of(st.integers(0, 40_000), st.sampled_from([L2 - 1, L2 + 32, L2 + 33])))
    def from_iterable(self, n: int) -> None:
        xs = self.fresh(n)
        self.v = PVector.from_iterable(xs)
        self.model = xs

    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        size = len(self.model)
        n = data.draw(
            st.one_of(
                st.integers(0, size),
                st.integers(max(0, size - 40), size),  # the common Raft case
            ),
            label="n",
        )
        self.v = self.v.take(n)
        del self.model[n:]

    @rule(data=st.data())
    def take_out_of_range(self, data: st.DataObject) -> None:
        size = len(self.model)
        n = data.draw(st.one_of(st.integers(-50, -1), st.integers(size + 1, size + 50)))
        with pytest.raises(ValueError):
            self.v.take(n)

    @rule(data=st.data())
    def slice(self, data: st.DataObject) -> None:
        size = len(self.model)
        lo = data.draw(st.integers(0, size + 3), label="lo")
        hi = data.draw(st.integers(lo, size + 70), label="hi")
        assert self.v.slice(lo, hi) == tuple(self.model[lo:hi])

    @rule(data=st.data())
    def bad_slice(self, data: st.DataObject) -> None:
        lo = data.draw(st.integers(-5, 50))
        hi = data.draw(st.integers(-60, 60))
        if lo >= 0 and hi >= lo:
            assert self.v.slice(lo, hi) == tuple(self.model[lo:hi])
        else:
            with pytest.raises(ValueError):
                self.v.slice(lo, hi)

    @rule(data=st.data())
    def getitem(self, data: st.DataObject) -> None:
        size = len(self.model)
        i = data.draw(
            st.one_of(
                st.integers(-size - 3, size + 3),
                st.integers(-40, -1),  # around the tail / trie border, from the end
                st.integers(size - 40, size + 3),
            ),
            label="i",
        )
        if -size <= i < size:
            assert self.v[i] == self.model[i]
        else:
            with pytest.raises(IndexError):
                self.v[i]

    @rule()
    def iterate(self) -> None:
        assert list(self.v) == self.model

    @rule(data=st.data())
    def equality(self, data: st.DataObject) -> None:
        other = PVector.from_iterable(self.model)
        assert self.v == other and hash(self.v) == hash(other)
        assert self.v == self.v
        size = len(self.model)
        if size:
            assert self.v != self.v.take(size - 1).append(-1)
            assert self.v != self.v.take(size - 1)
            # Same length, one item different (anywhere: trie or tail).
            i = data.draw(st.integers(0, size - 1), label="changed index")
            changed = self.v.take(i).append(-1).extend(self.model[i + 1 :])
            assert len(changed) == size
            assert self.v != changed
        assert self.v != self.v.append(-1)

    @rule()
    def snapshot(self) -> None:
        self.snapshots.append((self.v, tuple(self.model)))
        if len(self.snapshots) > MAX_SNAPSHOTS:
            self.snapshots.pop(0)

    @precondition(lambda self: bool(self.snapshots))
    @rule(data=st.data())
    def restore_snapshot(self, data: st.DataObject) -> None:
        """Continue from an old version: branching must not disturb either branch."""
        v, items = data.draw(st.sampled_from(self.snapshots))
        self.v = v
        self.model = list(items)

    @invariant()
    def cheap_agreement(self) -> None:
        size = len(self.model)
        assert len(self.v) == size
        if size:
            assert self.v.last() == self.model[-1]
            assert self.v[0] == self.model[0]
            assert self.v[size // 2] == self.model[size // 2]
        else:
            with pytest.raises(IndexError):
                self.v.last()

    @invariant()
    def snapshots_unchanged(self) -> None:
        for v, items in self.snapshots:
            assert len(v) == len(items)
            if items:
                assert v.last() == items[-1]
                assert v[len(items) // 3] == items[len(items) // 3]

    def teardown(self) -> None:
        well_formed(self.v)
        assert list(self.v) == self.model
        for v, items in self.snapshots:
            well_formed(v)
            assert tuple(v) == items
            assert v.slice(0, len(items)) == items


PVectorMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_pvector_against_list = PVectorMachine.TestCase
