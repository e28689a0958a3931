"""An immutable, persistent vector (a Clojure-style ``PersistentVector``).

Layout
------
Items live in a 32-way trie of tuples plus a *tail* tuple holding the last
1..32 items (0 only for the empty vector):

* ``_tail`` -- the last ``1..32`` items.
* ``_tailoff`` -- how many items are in the trie (always a multiple of 32);
  ``len(v) == _tailoff + len(_tail)``.
* ``_root`` -- the trie. A node at height ``shift`` (5, 10, 15, ...) is a tuple
  of up to 32 children; the children of a height-5 node are *leaves*: full
  32-tuples of items. Item ``i < _tailoff`` is reached by indexing each node
  with ``(i >> shift) & 31`` while descending, then the leaf with ``i & 31``.
* ``_shift`` -- the height of ``_root``; always the least height ``>= 5`` whose
  capacity (``1 << (_shift + 5)`` items) holds the trie. So the shape is a
  function of the length alone: two vectors of equal length have identical
  shapes, which makes ``==`` and ``hash`` plain (C-speed, identity
  short-circuiting) nested-tuple comparisons.

The trie is left-packed: every leaf is full and every node but those on the
right edge is full.

Nothing is ever mutated: every "modifying" operation builds a new vector that
shares all untouched tuples with the old one. Appending with room in the tail
is one tuple concatenation plus one object construction; otherwise (once
every 32 appends) the full tail becomes a leaf and the right edge of the trie
is copied: at most 32 slots per level, three levels for a million items.

Instances are immutable by construction: there is no public way to change
one. Attribute assignment is not blocked with a ``__setattr__`` override
because that would make building every new vector markedly slower (it is on
the hot path of ``append``); the private slots must simply not be assigned
outside this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar, final

__all__ = ["PVector"]

T = TypeVar("T")

_Node = tuple[Any, ...]

_BITS = 5
_WIDTH = 1 << _BITS  # 32
_MASK = _WIDTH - 1  # 31
_REPR_ITEMS = 10
_SHORT_SLICE = 4 * _WIDTH  # slice() copies this many trie items leaf by leaf

_new = object.__new__


@final
class PVector(Generic[T]):
    """An immutable, persistent vector with O(log32 n) indexing and appending.

    ``PVector(iterable)`` is the same as ``PVector.from_iterable(iterable)``.
    """

    __slots__ = ("_root", "_shift", "_tail", "_tailoff")

    _root: _Node
    _shift: int
    _tail: tuple[T, ...]
    _tailoff: int

    def __new__(cls, iterable: Iterable[T] = ()) -> PVector[T]:
        return PVector.from_iterable(iterable)

    # -- construction --------------------------------------------------------

    @classmethod
    def empty(cls) -> PVector[T]:
        """The empty vector (a shared singleton)."""
        return _EMPTY

    @classmethod
    def from_iterable(cls, iterable: Iterable[T]) -> PVector[T]:
        """A vector of the items of ``iterable``, in order. O(n)."""
        if type(iterable) is PVector:
            return iterable
        items = tuple(iterable)
        n = len(items)
        if n == 0:
            return _EMPTY
        tailoff = (n - 1) & ~_MASK
        if tailoff == 0:
            return _make((), _BITS, items, 0)
        nodes: list[Any] = [items[i : i + _WIDTH] for i in range(0, tailoff, _WIDTH)]
        shift = _BITS
        while len(nodes) > _WIDTH:
            nodes = [tuple(nodes[i : i + _WIDTH]) for i in range(0, len(nodes), _WIDTH)]
            shift += _BITS
        return _make(tuple(nodes), shift, items[tailoff:], tailoff)

    # -- queries -------------------------------------------------------------

    def __len__(self) -> int:
        return self._tailoff + len(self._tail)

    def __getitem__(self, i: int) -> T:
        tailoff = self._tailoff
        if i >= tailoff:
            try:
                x: T = self._tail[i - tailoff]
            except IndexError:
                raise IndexError("PVector index out of range") from None
            return x
        if i < 0:
            tail = self._tail
            i += tailoff + len(tail)
            if i < 0:
                raise IndexError("PVector index out of range")
            if i >= tailoff:
                x = tail[i - tailoff]
                return x
        node = self._root
        shift = self._shift
        while shift:
            node = node[(i >> shift) & _MASK]
            shift -= _BITS
        x = node[i & _MASK]
        return x

    def last(self) -> T:
        """The last item. O(1). Raises ``IndexError`` if the vector is empty."""
        try:
            return self._tail[-1]
        except IndexError:
            raise IndexError("last() of an empty PVector") from None

    def slice(self, lo: int, hi: int) -> tuple[T, ...]:
        """The items at ``lo <= index < hi`` as a tuple. O(log n + (hi - lo)).

        ``hi`` is clamped to ``len(self)``, like Python slicing; ``lo`` must be
        ``>= 0`` and ``hi >= lo`` (``ValueError`` otherwise).
        """
        if lo < 0 or hi < lo:
            raise ValueError(f"invalid slice bounds lo={lo}, hi={hi}")
        tail = self._tail
        tailoff = self._tailoff
        if lo >= tailoff:
            return tail[lo - tailoff : hi - tailoff]
        end = min(hi, tailoff)  # the trie part is [lo, end)
        if lo >= end:
            return ()
        root = self._root
        shift = self._shift
        out: tuple[T, ...]
        if end - lo <= _SHORT_SLICE:
            # Few leaves (the AppendEntries case): descend to each one.
            out = ()
            i = lo
            while i < end:
                node = root
                level = shift
                while level:
                    node = node[(i >> level) & _MASK]
                    level -= _BITS
                a = i & _MASK
                out += node[a : a + end - i]
                i = (i | _MASK) + 1
            if hi > tailoff:
                out += tail[: hi - tailoff]
            return out
        last = end - 1
        # Walk down level by level, keeping only the nodes that cover
        # [lo, last]: the first and last are cut, those between taken whole.
        nodes: list[Any] = [root]
        while shift:
            a = (lo >> shift) & _MASK
            b = ((last >> shift) & _MASK) + 1
            if len(nodes) == 1:
                nodes = list(nodes[0][a:b])
            else:
                below = list(nodes[0][a:])
                for node in nodes[1:-1]:
                    below.extend(node)
                below.extend(nodes[-1][:b])
                nodes = below
            shift -= _BITS
        # ``nodes`` are now the leaves holding [lo, last].
        a = lo & _MASK
        b = (last & _MASK) + 1
        if len(nodes) == 1:
            out = nodes[0][a:b]
        else:
            nodes[0] = nodes[0][a:]
            nodes[-1] = nodes[-1][:b]
            out = tuple(chain.from_iterable(nodes))
        if hi > tailoff:
            out += tail[: hi - tailoff]
        return out

    def __iter__(self) -> Iterator[T]:
        leaves: Iterator[Any] = iter(self._root)
        for _ in range(self._shift // _BITS - 1):
            leaves = chain.from_iterable(leaves)
        return chain(chain.from_iterable(leaves), self._tail)

    # -- "modifying" operations (all return a new vector) -------------------

    def append(self, x: T) -> PVector[T]:
        """A new vector with ``x`` added at the end. Amortised O(log32 n)."""
        tail = self._tail
        if len(tail) < _WIDTH:
            v: PVector[T] = _new(PVector)
            v._root = self._root
            v._shift = self._shift
            # ``tail + one`` is faster than ``(*tail, x)``, ruff's preferred spelling.
            one = (x,)
            v._tail = tail + one
            v._tailoff = self._tailoff
            return v
        root, shift = _push_leaf(self._root, self._shift, self._tailoff, tail)
        return _make(root, shift, (x,), self._tailoff + _WIDTH)

    def extend(self, iterable: Iterable[T]) -> PVector[T]:
        """A new vector with the items of ``iterable`` added. O(k + log n) for k items."""
        items = tuple(iterable)
        k = len(items)
        if k == 0:
            return self
        tail = self._tail
        tailoff = self._tailoff
        if not tail:
            return PVector.from_iterable(items)
        room = _WIDTH - len(tail)
        if k <= room:
            return _make(self._root, self._shift, tail + items, tailoff)
        # Fill the tail up to a full leaf, cut the rest into full leaves,
        # keeping the last 1..32 items as the new tail.
        full_end = room + ((k - room - 1) & ~_MASK)
        leaves: list[Any] = [tail + items[:room]]
        leaves.extend(items[i : i + _WIDTH] for i in range(room, full_end, _WIDTH))
        root, shift = _push_leaves(self._root, self._shift, leaves)
        return _make(root, shift, items[full_end:], tailoff + _WIDTH * len(leaves))

    def take(self, n: int) -> PVector[T]:
        """The vector of the first ``n`` items (``0 <= n <= len``). O(32 * log32 n)."""
        tail = self._tail
        tailoff = self._tailoff
        cnt = tailoff + len(tail)
        if not 0 <= n <= cnt:
            raise ValueError(f"take({n}) out of range for a PVector of length {cnt}")
        if n == cnt:
            return self
        if n == 0:
            return _EMPTY
        if n > tailoff:
            return _make(self._root, self._shift, tail[: n - tailoff], tailoff)
        # The leaf holding item n - 1 becomes the (cut) tail; the trie keeps
        # the ``new_tailoff`` items before it.
        root = self._root
        shift = self._shift
        new_tailoff = (n - 1) & ~_MASK
        node = root
        level = shift
        while level:
            node = node[((n - 1) >> level) & _MASK]
            level -= _BITS
        new_tail: tuple[T, ...] = node[: n - new_tailoff]
        if new_tailoff == 0:
            return _make((), _BITS, new_tail, 0)
        # Cut the trie after item ``last``: copy the path down to it, keeping
        # each node's children up to and including the one on the path.
        last = new_tailoff - 1
        parents: list[_Node] = []
        node = root
        level = shift
        while level > _BITS:
            parents.append(node)
            node = node[(last >> level) & _MASK]
            level -= _BITS
        new: _Node = node[: ((last >> _BITS) & _MASK) + 1]
        while parents:
            level += _BITS
            one = (new,)
            new = parents.pop()[: (last >> level) & _MASK] + one
        # Drop root levels left with a single child (keeps the height minimal).
        while shift > _BITS and len(new) == 1:
            new = new[0]
            shift -= _BITS
        return _make(new, shift, new_tail, new_tailoff)

    # -- value semantics -----------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, PVector):
            return NotImplemented
        # Equal lengths imply identical shapes, so the nested tuples compare
        # item by item, skipping subtrees the two vectors share.
        return (
            self._tailoff == other._tailoff
            and self._tail == other._tail
            and self._root == other._root
        )

    def __hash__(self) -> int:
        return hash((self._tailoff, self._root, self._tail))

    def __repr__(self) -> str:
        n = len(self)
        if n <= _REPR_ITEMS:
            return f"PVector({list(self)!r})"
        head = ", ".join(map(repr, self.slice(0, _REPR_ITEMS)))
        return f"PVector([{head}, ...], len={n})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PVector, (tuple(self),))

    def __copy__(self) -> PVector[T]:
        return self


def _make(root: _Node, shift: int, tail: tuple[Any, ...], tailoff: int) -> PVector[Any]:
    v: PVector[Any] = _new(PVector)
    v._root = root
    v._shift = shift
    v._tail = tail
    v._tailoff = tailoff
    return v


def _push_leaf(root: _Node, shift: int, tailoff: int, leaf: _Node) -> tuple[_Node, int]:
    """The trie ``(root, shift)`` holding ``tailoff`` items, with ``leaf`` added."""
    if (tailoff >> _BITS) >= (1 << shift):
        # The trie is full: grow a level; the new right child is a fresh path.
        path = leaf
        for _ in range(shift // _BITS):
            path = (path,)
        return (root, path), shift + _BITS
    # Copy the right edge down to the height-5 node that takes the leaf. On
    # the right edge each child index is that of the node's last child or
    # one past it, so ``parent[:i] + (child,)`` both replaces and appends.
    parents: list[_Node] = []
    node = root
    level = shift
    while level > _BITS:
        i = (tailoff >> level) & _MASK
        parents.append(node)
        node = node[i] if i < len(node) else ()
        level -= _BITS
    one = (leaf,)
    new = node + one
    while parents:
        level += _BITS
        one = (new,)
        new = parents.pop()[: (tailoff >> level) & _MASK] + one
    return new, shift


def _push_leaves(root: _Node, shift: int, leaves: list[Any]) -> tuple[_Node, int]:
    """The trie ``(root, shift)`` with all of ``leaves`` added, in O(len(leaves) + log n)."""
    # Unzip the right edge into one list per height: ``edge[0]`` holds the
    # leaves of the rightmost height-5 node; ``edge[h]`` (h >= 1) the finished
    # children of the rightmost node at height 5 * (h + 1), i.e. all but its
    # last child, which is the node described by ``edge[h - 1]``.
    edge: list[list[Any]] = []
    node = root
    level = shift
    while level > _BITS:
        edge.append(list(node[:-1]))
        node = node[-1]
        level -= _BITS
    edge.append(list(node))
    edge.reverse()
    for leaf in leaves:
        bottom = edge[0]
        if len(bottom) < _WIDTH:
            bottom.append(leaf)
            continue
        # Carry: the bottom node is full, finish it and start a new one.
        done: _Node = tuple(bottom)
        edge[0] = [leaf]
        h = 1
        while True:
            if h == len(edge):
                edge.append([done])  # the root was full: grow a level
                break
            kids = edge[h]
            kids.append(done)
            if len(kids) < _WIDTH:
                break
            # 32 finished children and no room for the new one below it.
            done = tuple(kids)
            edge[h] = []
            h += 1
    new: _Node = tuple(edge[0])
    for kids in edge[1:]:
        new = (*kids, new)
    return new, _BITS * len(edge)


_EMPTY: PVector[Any] = _make((), _BITS, (), 0)
