"""The frame-decoder fuzzer (graft_trio/_fuzz_frames.py), a short run of it,
and a structure-aware Hypothesis strategy for frames.

The long run is ``make fuzz-frames`` (10^6 inputs, a few minutes); here:

* ``test_short_run``: 20,000 mutated inputs from seed 20260, every rule of
  the fuzzer's docstring checked (only WireError, bounded memory, round
  trips, chunking), and the run must reach every decoder outcome that
  matters -- a fuzzer that never gets past msgpack proves little;
* ``test_the_fuzzer_finds_a_planted_bug``: a decoder that raises KeyError
  for one message type is caught, with a replayable input;
* ``test_structured_frames`` (Hypothesis, 300 examples): msgpack trees shaped
  like graft messages and HELLOs -- right tags and arities, wrong types and
  edge values in the fields -- go through the same checks;
* ``test_hello_array_budget``: the bug the fuzzer found (a HELLO of empty
  arrays cost 64x its size in lists) stays fixed.

About 10 s in all.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft_trio import _fuzz_frames, _wire
from graft_trio._fuzz_frames import (
    MAX_AMPLIFICATION,
    MEMORY_SLACK,
    Mutator,
    check_untrusted,
    run,
    seed_frames,
)
from graft_trio._wire import (
    HEADER_SIZE,
    MAX_HELLO_FRAME,
    MalformedFrame,
    decode_hello_untrusted,
)


def test_seeds_cover_every_message_type() -> None:
    tags: set[int] = set()
    for frame in seed_frames():
        tree = msgpack.unpackb(frame[HEADER_SIZE:], raw=False)
        if tree and tree[0] != "graft":  # a batch, not a HELLO
            tags.update(message[0] for message in tree)
    assert tags == set(_wire._DECODERS)


def test_mutator_is_deterministic() -> None:
    a, b = Mutator(random.Random(7)), Mutator(random.Random(7))
    assert [a.input() for _ in range(200)] == [b.input() for _ in range(200)]


def test_short_run() -> None:
    report = run(20_000, 20260, memory_every=32)
    assert report.failures == []
    assert report.frames == 20_000
    outcomes = report.outcomes
    # The inputs reach every layer: the reader's limit, msgpack, graft's type
    # checks, the tag table, each HELLO check, and clean decodes.
    for outcome in ("reader ok", "reader frame_too_large", "batch ok", "batch malformed",
                    "batch unknown_message_type", "batch frame_too_large", "hello ok",
                    "hello unsupported_version", "hello wrong_cluster",
                    "hello wrong_recipient", "hello unknown_sender"):
        assert outcomes[outcome] > 0, outcome
    assert report.memory_samples == 20_000 // 32  # inputs 0, 32, 64, ...
    assert 0 < report.peak_ratio <= MAX_AMPLIFICATION


def test_the_fuzzer_finds_a_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(fields: list[object]) -> Any:
        raise KeyError("planted")

    monkeypatch.setitem(_wire._DECODERS, 6, buggy)  # HeartbeatResponse
    lines: list[str] = []
    report = run(5_000, 1, memory_every=0, max_failures=2, out=lines.append)
    assert len(report.failures) == 2
    data, description = report.failures[0]
    assert description == "KeyError: 'planted'"
    assert any(f"--replay {data.hex()}" in line for line in lines)
    with pytest.raises(KeyError):
        check_untrusted(data, random.Random(0))
    monkeypatch.undo()
    assert _fuzz_frames.main(["--replay", data.hex()]) == 0


# ---------------------------------------------------------------- structure-aware frames

_edge_ints = st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
# Any msgpack value, biased to what graft's fields hold, and everything else.
_leaves = st.one_of(
    st.integers(0, 5), _edge_ints, st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none(),
    st.text(max_size=4), st.sampled_from(["a", "b", "c"]), st.binary(max_size=8),
    st.floats(allow_nan=True),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=2),
    max_leaves=8,
)
# The things entries and memberships are made of, right and wrong.
_entries = st.lists(
    st.lists(_values, min_size=3, max_size=3) | st.tuples(st.integers(0, 3), st.integers(-1, 3),
                                                          st.binary(max_size=4)).map(list)
    | _values,
    max_size=4,
) | _values


@st.composite
def _message_trees(draw: st.DrawFn) -> list[object]:
    # A message's shape: a known (or nearly known) tag, the right arity give
    # or take one, each field of a plausible type or of any type at all.
    tag = draw(st.integers(0, 14) | st.sampled_from([-1, 2**64 - 1]))
    arity = _wire._ARITY.get(tag, 4) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    tree: list[object] = [tag]
    for i in range(1, max(arity, 1)):
        if i == 2 or i == 3:
            field = draw(st.sampled_from(["a", "b", "c", ""]) | _values)
        elif tag == 3 and i == 6:
            field = draw(_entries)
        else:
            field = draw(_values)
        tree.append(field)
    return tree


_hello_trees = st.tuples(
    st.sampled_from(["graft", "GRAFT"]) | _values,
    st.sampled_from([1, 2, 3]) | _values,
    st.sampled_from(["c", "x"]) | _values,
    st.sampled_from(["a", "b", "z"]) | _values,
    st.sampled_from(["a", "b", "z"]) | _values,
).map(list) | st.lists(_values, max_size=7)

_trees = st.lists(_message_trees(), max_size=4) | _hello_trees | _values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trees, st.integers(0, 2**32 - 1))
def test_structured_frames(tree: object, chunking_seed: int) -> None:
    payload = msgpack.packb(tree, use_bin_type=True)
    frame = struct.pack(">I", len(payload)) + payload
    # Only WireError, round trips, chunking independence (check_untrusted
    # raises anything else).
    check_untrusted(frame, random.Random(chunking_seed))


# ---------------------------------------------------------------- the bug it found


def test_hello_array_budget() -> None:
    # A HELLO-sized payload of empty arrays: before the fix, decoded without
    # a list budget into ~64 bytes of lists per byte.
    n = MAX_HELLO_FRAME - 8
    payload = b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFrame, match="more arrays"):
            decode_hello_untrusted(payload, cluster_id="c", me="b", members={"a"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(payload) + MEMORY_SLACK
