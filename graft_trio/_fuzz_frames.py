"""A fast mutation fuzzer for graft's frame decoders (``_wire.py``).

Usage::

    python -m graft_trio._fuzz_frames --frames 1000000 --seed 1

(``make fuzz-frames FRAMES=1000000``; ``make fuzz`` runs it after the
simulator sweep.) It prints a progress line every ``--progress`` frames and a
summary at the end, and exits 1 if any input broke a rule below; each failure
is printed with its input in hex, to replay with ``--replay HEX``.

Theory of operation
-------------------
Inputs start from *seeds*: valid frames of every message type (and HELLOs,
the empty keepalive batch, mixed batches), built by :func:`seed_frames`. Each
fuzz input is a seed put through one to four *mutations* (:class:`Mutator`):

* bytes: bit flips, interesting bytes, truncation, deletion, insertion,
  duplication, splicing two seeds, concatenating frames, random garbage;
* framing: length-field lies (0, one short, one long, the limit, the limit
  plus one, 2**32-1, random);
* msgpack headers: a str/bin/array/map/ext header announcing up to 2**32-1
  items or bytes at a random offset (*size bombs*), deep nesting and
  payloads of nothing but tiny arrays (*nesting bombs*);
* structure: a seed's decoded msgpack tree with one node replaced by a value
  of another type (bool for int, str for bytes, nil, a float, a map, an int
  outside 64 bits' worth of sense, ...), re-packed with a correct length:
  these get past msgpack and exercise graft's own type checks.

Every input goes through :func:`check_untrusted`, which feeds it to a
:class:`~graft_trio._wire.FrameReader` in random chunks and decodes every
frame it yields (and the raw bytes after the length prefix) as a BATCH and as
a HELLO. The rules checked, from ``_wire``'s docstring:

1. Only :class:`~graft_trio._wire.WireError` subclasses escape (Rule 1); any
   other exception is a failure.
2. Memory is bounded by the frame (Rule 2): on every ``--memory-every``-th
   input the decoders run under :mod:`tracemalloc`, and the peak must stay
   within ``MAX_AMPLIFICATION`` times the input's size (capped at the frame
   limit) plus ``MEMORY_SLACK``; the largest peak and ratio are reported.
3. A decoded batch survives re-encoding (Rule 4), passes
   :func:`~graft_core._messages.malformed_reason`, and the reader's output
   does not depend on how the input was chunked.
"""

from __future__ import annotations

import argparse
import collections
import random
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence

import attrs
import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints

from graft_core import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Membership,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RejectReason,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from graft_core._messages import malformed_reason
from graft_trio._wire import (
    HEADER_SIZE,
    MAX_HELLO_FRAME,
    FrameReader,
    WireError,
    decode_batch_untrusted,
    decode_hello_untrusted,
    encode_batch,
    encode_hello,
)

__all__ = [
    "MAX_AMPLIFICATION",
    "MEMORY_SLACK",
    "FuzzFailure",
    "Mutator",
    "Report",
    "check_untrusted",
    "main",
    "run",
    "seed_frames",
]

#: The frame limit the fuzzer decodes with: small, so that mutated inputs
#: cross it often (the limit checks are exercised, not just the parsers).
MAX_FRAME = 1 << 16
#: Peak traced memory allowed per byte of input while reading and decoding
#: it. Python objects are bigger than their msgpack encodings: an empty array
#: is one byte on the wire and a 56-byte list plus an 8-byte slot in its
#: parent, so _wire's array budget allows a payload of n bytes n // 4 + 1
#: arrays. The worst found is ~37x: an AppendRequest of 5-byte entries, each
#: a list, then an Entry, then a slot in the entries tuple.
MAX_AMPLIFICATION = 48
#: Fixed allowance on top (the decoders' own small objects, tracemalloc's).
MEMORY_SLACK = 64 * 1024

#: The longest fuzz input (a frame over the limit, and then some).
MAX_INPUT = HEADER_SIZE + MAX_FRAME + MAX_FRAME // 2
_LENGTH = struct.Struct(">I")
_CLUSTER, _ME, _PEER = "c", "b", "a"
_MEMBERS = frozenset({_ME, _PEER})
_MAX_U64 = 2**64 - 1


class FuzzFailure(AssertionError):
    """An input broke one of the rules in the module docstring."""


# ---------------------------------------------------------------- seeds


def _seed_messages() -> list[Message]:
    # One or more valid messages of every type, with the awkward values each
    # field may take (0, 2**64-1, empty and non-ASCII ids, None hints).
    m = Membership(("a", "b", "c"), (), ("d",), (("a", "127.0.0.1:1"),))
    big = _MAX_U64
    entries = (
        Entry(1, b"x", EntryKind.NORMAL),
        Entry(2, b"", EntryKind.NOOP),
        Entry(2, m.encode(), EntryKind.CONFIG),
    )
    return [
        VoteRequest(5, "a", "b", 9, 4, False, False),
        VoteRequest(big, "a", "b", big, big, True, True),
        VoteResponse(5, "b", "a", True, False),
        AppendRequest(3, "a", "b", 0, 0, entries, 2),
        AppendRequest(big, "a", "b", 7, 3, (), big),
        AppendResponse(3, "b", "a", True, 10, 0, 0),
        AppendResponse(3, "b", "a", False, 10, 4, 2),
        Heartbeat(3, "a", "b", 7, 1),
        HeartbeatResponse(3, "b", "a", 1),
        ForwardProposal(3, "b", "a", -(2**63), b"payload"),
        ForwardResponse(3, "a", "b", 7, 12, 3, None, None),
        ForwardResponse(3, "a", "b", big, 0, 0, RejectReason.NOT_LEADER, "\u00e9\u4e2d"),
        InstallSnapshot(4, "a", "b", SnapshotMeta(9, 4, m), 0, b"snap" * 8, True),
        InstallSnapshotResponse(4, "b", "a", 9, 32, True, 9),
        TimeoutNow(4, "a", "b"),
        ReadIndexRequest(4, "b", "a", 1),
        ReadIndexResponse(4, "a", "b", 1, 9, None, "a"),
        ReadIndexResponse(4, "a", "b", 1, 0, RejectReason.INVALID_CHANGE, None),
    ]


def seed_frames() -> list[bytes]:
    """Valid frames, length prefix included, that the mutations start from.

    Returns:
        A HELLO per interesting version, an empty (keepalive) batch, one batch
        per seed message (every message type), and a batch of all of them.
    """
    messages = _seed_messages()
    frames = [
        encode_hello(_CLUSTER, _PEER, _ME),
        encode_hello(_CLUSTER, _PEER, _ME, version=1),
        encode_hello("other", "zz", "yy", version=3),
        encode_batch([]),
        encode_batch(messages),
    ]
    frames += [encode_batch([m]) for m in messages]
    return frames


# ---------------------------------------------------------------- mutations

_INTERESTING_BYTES = bytes(
    [0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3,
     0xC4, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCF, 0xD3, 0xD4, 0xD9, 0xDB, 0xDC, 0xDD,
     0xDE, 0xDF, 0xE0, 0xFF]
)
# msgpack headers that announce a size, and the width of the size after them.
_SIZED_HEADERS = [(0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4),
                  (0xDC, 2), (0xDD, 4), (0xDE, 2), (0xDF, 4), (0xC7, 1), (0xC9, 4)]
# Values of every msgpack type, to put where another type belongs.
_WRONG_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 2**63, _MAX_U64, -(2**63), 1.5, float("nan"), "", "a", "b",
    "\u00e9", b"", b"a", [], [[]], {}, {"k": 1}, "x" * 300, b"x" * 300, [0] * 20,
]


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


@attrs.define
class Mutator:
    """Derives fuzz inputs from seed frames; deterministic given its ``rng``.

    Attributes:
        rng: the source of every choice (seed it to reproduce a run).
        seeds: the valid frames to start from.
    """

    rng: random.Random
    seeds: Sequence[bytes] = attrs.field(factory=seed_frames)
    _trees: list[object] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        # The seeds' decoded msgpack trees, for the structural mutations.
        self._trees = [msgpack.unpackb(f[HEADER_SIZE:], raw=False) for f in self.seeds]

    def input(self) -> bytes:
        """Return the next fuzz input: a seed put through 1-4 mutations."""
        rng = self.rng
        if rng.random() < 0.03:
            return rng.randbytes(rng.randrange(64))
        data = rng.choice(self.seeds)
        for _ in range(rng.randint(1, 4)):
            data = rng.choice(_MUTATIONS)(self, data)
        if len(data) >= HEADER_SIZE and rng.random() < 0.5:
            # Tell the truth about the length half of the time, so that the
            # payload's mutations reach the decoders instead of the reader
            # waiting for bytes that never come.
            data = _frame(data[HEADER_SIZE:])
        # Long enough to cross the frame limit, short enough that the memory
        # bound (proportional to the input) stays tight and the run fast.
        return data[:MAX_INPUT]

    # Each mutation takes a frame (or what is left of one) and returns bytes.

    def _flip_bits(self, data: bytes) -> bytes:
        if not data:
            return data
        b = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
        return bytes(b)

    def _interesting_byte(self, data: bytes) -> bytes:
        if not data:
            return data
        b = bytearray(data)
        b[self.rng.randrange(len(b))] = self.rng.choice(_INTERESTING_BYTES)
        return bytes(b)

    def _truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(len(data) + 1)]

    def _delete(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        return data[:i] + data[i + self.rng.randint(1, 8) :]

    def _insert(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        return data[:i] + self.rng.randbytes(self.rng.randint(1, 8)) + data[i:]

    def _duplicate(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        j = self.rng.randrange(i, len(data) + 1)
        return data[:j] + data[i:j] * self.rng.randint(1, 64) + data[j:]

    def _splice(self, data: bytes) -> bytes:
        other = self.rng.choice(self.seeds)
        return data[: self.rng.randrange(len(data) + 1)] + other[self.rng.randrange(len(other)) :]

    def _concatenate(self, data: bytes) -> bytes:
        return data + self.rng.choice(self.seeds)

    def _lie_about_length(self, data: bytes) -> bytes:
        true = max(len(data) - HEADER_SIZE, 0)
        lie = self.rng.choice([0, max(true - 1, 0), true + 1, MAX_FRAME, MAX_FRAME + 1,
                               MAX_HELLO_FRAME + 1, 2**32 - 1, self.rng.randrange(2**32)])
        return _LENGTH.pack(lie) + data[HEADER_SIZE:]

    def _size_bomb(self, data: bytes) -> bytes:
        # A header announcing a huge (or merely wrong) count at a random offset.
        header, width = self.rng.choice(_SIZED_HEADERS)
        size = self.rng.choice([(1 << 8 * width) - 1, 1 << (8 * width - 1), len(data), 1])
        size %= 1 << 8 * width
        bomb = bytes([header]) + size.to_bytes(width, "big")
        i = self.rng.randrange(HEADER_SIZE, max(len(data), HEADER_SIZE) + 1)
        return data[:i] + bomb + data[i + self.rng.randint(0, 1 + width) :]

    def _nesting_bomb(self, data: bytes) -> bytes:
        rng = self.rng
        # Mostly small, sometimes as large as the frame limit allows (slow).
        n = rng.choice([10, 100, 1000, 1025, 3000]) if rng.random() < 0.9 else MAX_FRAME // 2
        kind = rng.randrange(5)
        if kind == 0:  # deep nesting: [[[[...]]]]
            payload = b"\x91" * n + b"\x90"
        elif kind == 1:  # one array of n empty arrays
            payload = b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
        elif kind == 2:  # a batch of n messages that are empty arrays
            payload = b"\xdd" + n.to_bytes(4, "big") + b"\x91\x90" * (n // 2)
        elif kind == 3:  # nested maps
            payload = b"\x81\xa1k" * n + b"\xc0"
        else:  # an AppendRequest with n tiny entries (arrays inside the message)
            head = _pack([3, 1, _PEER, _ME, 0, 0])[1:]
            entries = b"\xdd" + n.to_bytes(4, "big") + b"\x93\x01\x00\xc4\x00" * n
            payload = b"\x98" + head + entries + b"\x00"
        if rng.random() < 0.5:
            payload = b"\x91" + payload  # inside a batch
        return _frame(payload)

    def _wrong_type(self, data: bytes) -> bytes:
        # Structural: replace one node of a seed's tree with another type's
        # value, so msgpack accepts it and graft's own checks must not.
        rng = self.rng
        tree = msgpack.unpackb(_pack(rng.choice(self._trees)), raw=False)
        node = tree
        while type(node) is list and node and rng.random() < 0.8:
            i = rng.randrange(len(node))
            child = node[i]
            if type(child) is not list or not child or rng.random() < 0.3:
                roll = rng.random()
                if roll < 0.7:
                    node[i] = rng.choice(_WRONG_VALUES)
                elif roll < 0.85:
                    del node[i]  # one field short
                else:
                    node.insert(i, rng.choice(_WRONG_VALUES))  # one field too many
                break
            node = child
        return _frame(_pack(tree))


_MUTATIONS: tuple[Callable[[Mutator, bytes], bytes], ...] = (
    Mutator._flip_bits, Mutator._interesting_byte, Mutator._truncate, Mutator._delete,
    Mutator._insert, Mutator._duplicate, Mutator._splice, Mutator._concatenate,
    Mutator._lie_about_length, Mutator._size_bomb, Mutator._nesting_bomb,
    # The mutations that get furthest into the decoders: more often.
    Mutator._wrong_type, Mutator._wrong_type, Mutator._wrong_type,
)


# ---------------------------------------------------------------- checking


def _decode_all(payload: bytes, outcomes: collections.Counter[str]) -> list[Message] | None:
    # Rule 1: only WireError escapes (anything else propagates to the caller).
    try:
        decode_hello_untrusted(payload, cluster_id=_CLUSTER, me=_ME, members=_MEMBERS)
        outcomes["hello ok"] += 1
    except WireError as e:
        outcomes["hello " + e.reason] += 1
    try:
        messages = decode_batch_untrusted(payload, max_frame=MAX_FRAME)
    except WireError as e:
        outcomes["batch " + e.reason] += 1
        return None
    outcomes["batch ok"] += 1
    return messages


def _check_round_trip(messages: list[Message]) -> None:
    # Rule 4: what decodes is well formed and re-encodes to itself.
    for m in messages:
        reason = malformed_reason(m)
        if reason is not None:
            raise FuzzFailure(f"the decoder let a malformed message through ({reason}): {m!r}")
    again = decode_batch_untrusted(encode_batch(messages, max_frame=MAX_FRAME)[HEADER_SIZE:],
                                   max_frame=MAX_FRAME)
    if again != messages:
        raise FuzzFailure("a decoded batch does not survive re-encoding")


def _read_frames(data: bytes, cuts: Sequence[int]) -> tuple[list[bytes], str | None]:
    reader, frames = FrameReader(max_frame=MAX_FRAME), []
    start = 0
    try:
        for end in [*cuts, len(data)]:
            reader.feed(data[start:end])
            start = end
            while (frame := reader.next_frame()) is not None:
                frames.append(frame)
    except WireError as e:
        return frames, e.reason
    # Rule 2: never more buffered than one frame plus the last read.
    if reader.buffered > HEADER_SIZE + MAX_FRAME + len(data):
        raise FuzzFailure(f"the reader buffers {reader.buffered} bytes")
    return frames, None


def check_untrusted(
    data: bytes,
    rng: random.Random,
    outcomes: collections.Counter[str] | None = None,
    *,
    decoded: Callable[[], None] | None = None,
) -> None:
    """Put one input through the reader and every decoder, checking the rules.

    Args:
        data: arbitrary bytes (a stream's worth: zero or more frames).
        rng: where the chunking comes from.
        outcomes: counts of each decoder's outcome, updated in place.
        decoded: called once decoding is over, before the round-trip checks
            (whose encoder allocates its own buffers): where memory is measured.

    Raises:
        FuzzFailure: a decoded batch did not survive re-encoding, or the
            reader's output depended on chunking (rules 3 and 4).
        Exception: anything else a decoder raised that is not a WireError
            (rule 1): a bug.
    """
    counts = outcomes if outcomes is not None else collections.Counter()
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
    frames, error = _read_frames(data, cuts)
    counts["reader " + (error or "ok")] += 1
    if rng.random() < 0.1:
        # Chunking must not matter: compare with the input fed whole, or a
        # byte at a time (slow: only for short inputs).
        other = range(1, len(data)) if len(data) < 512 and rng.random() < 0.5 else []
        if _read_frames(data, other) != (frames, error):
            raise FuzzFailure("the reader's output depends on how the input is chunked")
    payloads = frames
    raw = data[HEADER_SIZE:]
    if raw and (not frames or frames[0] != raw):
        # The bytes after the prefix, whatever the prefix claims: the
        # decoders' size checks see payloads the reader would have refused.
        payloads = [*frames, raw]
    batches = [_decode_all(payload, counts) for payload in payloads]
    if decoded is not None:
        decoded()
    for messages in batches:
        if messages is not None:
            _check_round_trip(messages)


# ---------------------------------------------------------------- the run


@attrs.define
class Report:
    """What a run did: inputs, outcomes, memory, failures.

    Attributes:
        frames: inputs checked.
        outcomes: how many times each decoder ended each way (``"batch ok"``,
            ``"hello wrong_cluster"``, ``"reader frame_too_large"``, ...).
        memory_samples: inputs decoded under tracemalloc.
        peak_bytes: the largest traced peak of one input's decoding.
        peak_ratio: the largest peak divided by its input's size (where the
            input was at least 4 KiB: below that the fixed slack dominates).
        failures: ``(input, description)`` for each input that broke a rule.
        seconds: wall time.
    """

    frames: int = 0
    outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    memory_samples: int = 0
    peak_bytes: int = 0
    peak_ratio: float = 0.0
    failures: list[tuple[bytes, str]] = attrs.field(factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One paragraph for people: counts, rate, memory, failures."""
        ok = self.outcomes["batch ok"] + self.outcomes["hello ok"]
        rate = self.frames / self.seconds if self.seconds else 0.0
        return (
            f"{self.frames} inputs in {self.seconds:.1f} s ({rate:,.0f}/s); "
            f"{ok} clean decodes, {len(self.failures)} failures; tracemalloc on "
            f"{self.memory_samples} inputs: peak {self.peak_bytes:,} bytes, at most "
            f"{self.peak_ratio:.1f}x the input (bound {MAX_AMPLIFICATION}x + "
            f"{MEMORY_SLACK:,} bytes)"
        )


def _measured(data: bytes, rng: random.Random, report: Report) -> None:
    peaks: list[int] = []
    tracemalloc.start()
    try:
        check_untrusted(data, rng, report.outcomes,
                        decoded=lambda: peaks.append(tracemalloc.get_traced_memory()[1]))
    finally:
        tracemalloc.stop()
    (peak,) = peaks
    report.memory_samples += 1
    report.peak_bytes = max(report.peak_bytes, peak)
    size = len(data)
    if size >= 4096:
        report.peak_ratio = max(report.peak_ratio, peak / size)
    if peak > MAX_AMPLIFICATION * size + MEMORY_SLACK:
        raise FuzzFailure(f"decoding {len(data)} bytes peaked at {peak} bytes")


def run(
    frames: int,
    seed: int,
    *,
    memory_every: int = 64,
    progress: int = 0,
    max_failures: int = 10,
    out: Callable[[str], None] = print,
) -> Report:
    """Fuzz the decoders with ``frames`` inputs derived from ``seed``.

    Args:
        frames: how many inputs.
        seed: the random seed; the same seed gives the same inputs.
        memory_every: decode every n-th input under tracemalloc (0: never).
        progress: print a progress line every this many inputs (0: never).
        max_failures: stop after this many failing inputs.
        out: where progress lines go.

    Returns:
        The report; ``report.failures`` is empty if every rule held.
    """
    rng = random.Random(seed)
    mutator = Mutator(random.Random(rng.getrandbits(64)))
    report = Report()
    started = time.perf_counter()
    for i in range(frames):
        data = mutator.input()
        try:
            if memory_every and i % memory_every == 0:
                _measured(data, rng, report)
            else:
                check_untrusted(data, rng, report.outcomes)
        except Exception as e:  # anything but a WireError is a finding: keep it
            report.failures.append((data, f"{type(e).__name__}: {e}"))
            out(f"FAIL input {i}: {type(e).__name__}: {e}\n  --replay {data.hex()}")
            if len(report.failures) >= max_failures:
                report.frames = i + 1
                break
        report.frames = i + 1
        if progress and report.frames % progress == 0:
            report.seconds = time.perf_counter() - started
            out(f"[fuzz-frames] {report.frames:,}/{frames:,} inputs, "
                f"{report.frames / report.seconds:,.0f}/s, "
                f"{report.outcomes['batch ok']:,} batches decoded, "
                f"peak {report.peak_bytes:,} B ({report.peak_ratio:.1f}x), "
                f"{len(report.failures)} failures")
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m graft_trio._fuzz_frames",
                                     description="Fuzz graft's frame decoders.")
    parser.add_argument("--frames", type=int, default=1_000_000, help="inputs to try")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--memory-every", type=int, default=64,
                        help="decode every n-th input under tracemalloc (0: never)")
    parser.add_argument("--progress", type=int, default=50_000,
                        help="a progress line every n inputs")
    parser.add_argument("--replay", metavar="HEX", help="check one input (from a FAIL line)")
    args = parser.parse_args(argv)
    if args.replay is not None:
        check_untrusted(bytes.fromhex(args.replay), random.Random(args.seed))
        print("no failure")
        return 0
    report = run(args.frames, args.seed, memory_every=args.memory_every,
                 progress=args.progress)
    print(report.summary())
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report.outcomes.items()))
    print(f"outcomes: {outcomes}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
