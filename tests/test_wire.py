"""graft's wire format (graft_trio/_wire.py): round trips, HELLO checks, hostile input.

The module's rules, and where each is checked here:

* "Encoding is the inverse of decoding": ``test_round_trip`` (every message
  type, terms and indexes up to 2**64-1), ``test_encode_batches_split``.
* HELLO: ``test_hello_*``, one test per rejection.
* "Blame is split at the boundary": the ``*_untrusted`` functions and
  ``FrameReader`` raise only ``WireError`` subclasses, whatever the bytes:
  ``test_random_bytes``, ``test_mutated_frames``, ``test_mutated_payloads``,
  ``test_wrong_shape`` (Hypothesis) and the targeted ``test_rejects_*``.
* "Sizes are checked before memory is committed": ``test_oversized_header_*``,
  ``test_huge_declared_lengths``, ``test_array_budget_bounds_memory``.
* FrameReader reassembles frames across any chunking: ``test_every_prefix``,
  ``test_chunking``.

Hypothesis examples per run: 400 round trips + 8 x 25 per-type round trips +
200 splits + 150 prefix walks (every prefix of each stream) + 300 chunkings,
and 5,500 hostile inputs: 2,000 random byte strings + 1,000 mutated streams +
1,000 mutated payloads + 1,500 wrong shapes. 7,750 in all, about 11 s. Every
hostile input also goes through ``fuzz_decode``, the entry point a long fuzz
campaign uses.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft_core import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RejectReason,
    VoteRequest,
    VoteResponse,
)
from graft_core._messages import MESSAGE_TYPES, malformed_reason
from graft_trio._wire import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MAX_HELLO_FRAME,
    WIRE_VERSION,
    EncodeError,
    FrameReader,
    FrameTooLarge,
    Hello,
    MalformedFrame,
    UnknownMessageType,
    UnknownSender,
    UnsupportedVersion,
    WireError,
    WrongCluster,
    WrongRecipient,
    decode_batch_untrusted,
    decode_hello_untrusted,
    encode_batch,
    encode_batches,
    encode_hello,
    fuzz_decode,
)

MAX_U64 = 2**64 - 1

# ---------------------------------------------------------------- strategies

# Small values (where terms and indexes collide and relations matter) mixed
# with the whole range msgpack carries, edges included.
indexes = st.one_of(
    st.integers(0, 5),
    st.integers(0, 2**63 - 1),
    st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, MAX_U64]),
)
ids = st.text(max_size=8)
data = st.binary(max_size=48)


@st.composite
def vote_requests(draw: st.DrawFn) -> VoteRequest:
    term = draw(indexes)
    if term == 0 or draw(st.booleans()):
        last_index = last_term = 0
    else:
        last_term, last_index = draw(st.integers(1, term)), draw(st.integers(1, MAX_U64))
    return VoteRequest(term, draw(ids), draw(ids), last_index, last_term, draw(st.booleans()))


@st.composite
def append_requests(draw: st.DrawFn) -> AppendRequest:
    term = draw(indexes)
    if term == 0 or draw(st.booleans()):
        prev_index = prev_term = 0
    else:
        prev_term, prev_index = draw(st.integers(1, term)), draw(st.integers(1, MAX_U64))
    entries: tuple[Entry, ...] = ()
    if term >= 1:
        # Raft §5.3: terms never decrease along a log and none is newer than
        # the leader's, nor 0 (term 0 has no leader).
        terms = sorted(draw(st.lists(st.integers(max(prev_term, 1), term), max_size=5)))
        entries = tuple(
            Entry(t, draw(data), draw(st.sampled_from(EntryKind))) for t in terms
        )
    return AppendRequest(term, draw(ids), draw(ids), prev_index, prev_term, entries,
                         draw(indexes))


@st.composite
def append_responses(draw: st.DrawFn) -> AppendResponse:
    term = draw(indexes)
    return AppendResponse(term, draw(ids), draw(ids), draw(st.booleans()), draw(indexes),
                          draw(indexes), draw(st.integers(0, term)))


@st.composite
def forward_responses(draw: st.DrawFn) -> ForwardResponse:
    rejection = draw(st.none() | st.sampled_from(RejectReason))
    index = draw(indexes if rejection is not None else st.integers(1, MAX_U64))
    return ForwardResponse(draw(indexes), draw(ids), draw(ids),
                           draw(st.integers(-(2**63), MAX_U64)), index, draw(indexes),
                           rejection, draw(st.none() | ids))


STRATEGIES: dict[type, st.SearchStrategy[Message]] = {
    VoteRequest: vote_requests(),
    VoteResponse: st.builds(VoteResponse, indexes, ids, ids, st.booleans(), st.booleans()),
    AppendRequest: append_requests(),
    AppendResponse: append_responses(),
    Heartbeat: st.builds(Heartbeat, indexes, ids, ids, indexes),
    HeartbeatResponse: st.builds(HeartbeatResponse, indexes, ids, ids),
    ForwardProposal: st.builds(ForwardProposal, indexes, ids, ids,
                               st.integers(-(2**63), MAX_U64), data),
    ForwardResponse: forward_responses(),
}
messages: st.SearchStrategy[Message] = st.one_of(*STRATEGIES.values())
batches = st.lists(messages, max_size=6)
hello_frames = st.builds(encode_hello, ids, ids, ids, version=st.integers(0, 3))
# What a sender writes on a connection: a HELLO, then batches.
streams = st.builds(
    lambda hello, frames: hello + b"".join(frames),
    hello_frames,
    st.lists(batches.map(encode_batch), max_size=3),
)


def payload_of(frame: bytes) -> bytes:
    (length,) = struct.unpack(">I", frame[:HEADER_SIZE])
    assert length == len(frame) - HEADER_SIZE
    return frame[HEADER_SIZE:]


def wire_form(m: Message) -> list[Any]:
    """The msgpack structure a message travels as, read back with plain msgpack."""
    (fields,) = msgpack.unpackb(payload_of(encode_batch([m])), raw=False)
    assert type(fields) is list
    return fields


def pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def only_wire_errors(payload: bytes) -> list[Message] | None:
    """Decode as a batch and as a HELLO; any exception but WireError fails the test."""
    with contextlib.suppress(WireError):
        decode_hello_untrusted(payload, cluster_id="c", me="b", members={"a"})
    try:
        decoded = decode_batch_untrusted(payload)
    except WireError:
        return None
    assert all(malformed_reason(m) is None for m in decoded)
    return decoded


# ---------------------------------------------------------------- round trips


@settings(max_examples=400, deadline=None)
@given(batches)
def test_round_trip(batch: list[Message]) -> None:
    assert all(malformed_reason(m) is None for m in batch)  # the strategies are valid
    assert decode_batch_untrusted(payload_of(encode_batch(batch))) == batch


@pytest.mark.parametrize("message_type", MESSAGE_TYPES)
@settings(max_examples=25, deadline=None)
@given(st.data())
def test_round_trip_each_type(message_type: type, draw: st.DataObject) -> None:
    # The batches above mix all 8 types; this makes sure none is left out.
    message = draw.draw(STRATEGIES[message_type])
    assert type(message) is message_type
    assert decode_batch_untrusted(payload_of(encode_batch([message]))) == [message]


def test_golden_bytes() -> None:
    # The format is a contract between nodes running different builds: changing
    # these bytes needs a new WIRE_VERSION.
    batch: list[Message] = [
        VoteRequest(2, "a", "b", 3, 1, pre_vote=True),
        VoteResponse(2, "b", "a", granted=True),
        AppendRequest(2, "a", "b", 1, 1, (Entry(2, b"x"), Entry(2, b"", EntryKind.NOOP)), 1),
        AppendResponse(2, "b", "a", False, 4, 3, 1),
        Heartbeat(2, "a", "b", 1),
        HeartbeatResponse(2, "b", "a"),
        ForwardProposal(2, "b", "a", 7, b"op"),
        ForwardResponse(2, "a", "b", 7, 0, 0, RejectReason.TOO_LARGE, "c"),
    ]
    frame = encode_batch(batch)
    assert frame.hex() == (
        "0000005d"  # length: 93 bytes
        "98"  # array of 8 messages
        "97" "01" "02" "a161" "a162" "03" "01" "c3"  # [1, term, src, dst, 3, 1, True]
        "96" "02" "02" "a162" "a161" "c3" "c2"
        "98" "03" "02" "a161" "a162" "01" "01"  # [3, term, src, dst, prev index, prev term,
        "92" "930200c40178" "930201c400" "01"  #  [[term, kind, data], ...], leader_commit]
        "98" "04" "02" "a162" "a161" "c2" "04" "03" "01"
        "95" "05" "02" "a161" "a162" "01"
        "94" "06" "02" "a162" "a161"
        "96" "07" "02" "a162" "a161" "07" "c4026f70"
        "99" "08" "02" "a161" "a162" "07" "00" "00" "03" "a163"  # TOO_LARGE is 3
    )
    assert decode_batch_untrusted(payload_of(frame)) == batch
    assert encode_hello("c", "a", "b").hex() == "0000000e" "95" "a5677261667401" "a163a161a162"


@settings(max_examples=200, deadline=None)
@given(batches, st.integers(40, 400))
def test_encode_batches_split(batch: list[Message], max_frame: int) -> None:
    try:
        frames = encode_batches(batch, max_frame=max_frame)
    except FrameTooLarge:
        # Only when one message alone cannot fit.
        assert any(len(payload_of(encode_batch([m]))) > max_frame for m in batch)
        return
    assert all(len(payload_of(f)) <= max_frame for f in frames)
    decoded = [m for f in frames for m in decode_batch_untrusted(payload_of(f))]
    assert decoded == batch
    if len(payload_of(encode_batch(batch))) <= max_frame:
        assert len(frames) == (1 if batch else 0)


def test_empty_batch_is_a_keepalive() -> None:
    frame = encode_batch([])
    assert frame == b"\x00\x00\x00\x01\x90"
    assert decode_batch_untrusted(payload_of(frame)) == []


def test_encode_refuses_what_the_peer_would_refuse() -> None:
    ok = Heartbeat(1, "a", "b", 0)
    with pytest.raises(EncodeError, match="malformed"):
        encode_batch([ok, Heartbeat(-1, "a", "b", 0)])
    with pytest.raises(EncodeError, match="malformed"):
        encode_batch([True])  # type: ignore[list-item]
    with pytest.raises(EncodeError, match="not encodable"):
        encode_batch([Heartbeat(2**64, "a", "b", 0)])
    with pytest.raises(EncodeError, match="not encodable"):
        encode_batch([Heartbeat(1, "\ud800", "b", 0)])  # a lone surrogate is not UTF-8
    with pytest.raises(EncodeError):
        encode_hello("c", "a", 3)  # type: ignore[arg-type]
    big = ForwardProposal(1, "a", "b", 1, bytes(1000))
    with pytest.raises(FrameTooLarge):
        encode_batch([big], max_frame=999)
    with pytest.raises(FrameTooLarge):
        encode_batches([ok, big], max_frame=999)
    with pytest.raises(FrameTooLarge):
        encode_hello("c" * MAX_HELLO_FRAME, "a", "b")
    assert not issubclass(EncodeError, WireError)  # the caller's bug, not the peer's


# ---------------------------------------------------------------- HELLO


def hello_payload(cluster_id: str = "c", src: str = "a", dst: str = "b", version: int = 1) -> bytes:
    return payload_of(encode_hello(cluster_id, src, dst, version=version))


def check_hello(payload: bytes, **overrides: Any) -> Hello:
    kwargs: dict[str, Any] = {"cluster_id": "c", "me": "b", "members": {"a", "b", "z"}}
    kwargs.update(overrides)
    return decode_hello_untrusted(payload, **kwargs)


def test_hello_round_trip() -> None:
    assert WIRE_VERSION == 1
    assert check_hello(hello_payload()) == Hello(1, "c", "a", "b")


def test_hello_wrong_cluster() -> None:
    with pytest.raises(WrongCluster):
        check_hello(hello_payload(cluster_id="other"))


def test_hello_wrong_recipient() -> None:
    with pytest.raises(WrongRecipient):
        check_hello(hello_payload(dst="z"))


def test_hello_unknown_sender() -> None:
    with pytest.raises(UnknownSender):
        check_hello(hello_payload(src="stranger"))
    with pytest.raises(UnknownSender):  # a node dialling itself: a wrong peer address
        check_hello(hello_payload(src="b"))


def test_hello_unsupported_version() -> None:
    with pytest.raises(UnsupportedVersion):
        check_hello(hello_payload(version=2))
    with pytest.raises(UnsupportedVersion):
        check_hello(hello_payload(version=0))
    # The version is read before the rest, so a future layout is refused by
    # version, not as malformed.
    with pytest.raises(UnsupportedVersion):
        check_hello(pack(["graft", 2, {"a new": "layout"}]))
    assert check_hello(hello_payload(version=2), supported_versions={1, 2}).version == 2


@pytest.mark.parametrize(
    "payload",
    [
        pack(["graft", 1, "c", "a"]),  # a field missing
        pack(["graft", 1, "c", "a", "b", 0]),  # a field too many
        pack(["graft", True, "c", "a", "b"]),  # bool version
        pack(["graft", 1, b"c", "a", "b"]),  # bytes cluster id
        pack(["graft", 1, "c", None, "b"]),
        pack(["GRAFT", 1, "c", "a", "b"]),  # not graft
        pack({"version": 1}),
        pack([[1, 1, "a", "b", 0]]),  # a batch, not a HELLO
        hello_payload() + b"\x00",  # trailing bytes
        hello_payload()[:-1],
        b"",
    ],
)
def test_hello_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        check_hello(payload)


def test_hello_size_limit() -> None:
    payload = hello_payload(cluster_id="c" * 100)
    with pytest.raises(FrameTooLarge):
        check_hello(payload, max_frame=100)


# ---------------------------------------------------------------- batches from peers


def test_expected_src_and_dst() -> None:
    payload = payload_of(encode_batch([Heartbeat(1, "a", "b", 0)]))
    assert decode_batch_untrusted(payload, expected_src="a", expected_dst="b")
    with pytest.raises(UnknownSender):  # a peer speaking for another node
        decode_batch_untrusted(payload, expected_src="c")
    with pytest.raises(WrongRecipient):
        decode_batch_untrusted(payload, expected_dst="c")


HB = [5, 1, "a", "b", 0]
AREQ = [3, 2, "a", "b", 1, 1, [[2, 0, b"x"]], 1]
FRESP = [8, 2, "a", "b", 7, 0, 0, 3, None]


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        ([[5, True, "a", "b", 0]], MalformedFrame),  # bool for int
        ([[5, 1, "a", "b", False]], MalformedFrame),
        ([[5, 1.0, "a", "b", 0]], MalformedFrame),  # float for int
        ([[5, -1, "a", "b", 0]], MalformedFrame),  # negative term
        ([[5, 1, "a", "b", -3]], MalformedFrame),
        ([[5, 1, b"a", "b", 0]], MalformedFrame),  # bytes for str
        ([[5, 1, "a", None, 0]], MalformedFrame),
        ([[7, 1, "a", "b", 1, "op"]], MalformedFrame),  # str for bytes
        ([[7, 1, "a", "b", True, b"op"]], MalformedFrame),
        ([[2, 1, "a", "b", 1, False]], MalformedFrame),  # int for bool
        ([[*HB, 0]], MalformedFrame),  # an extra field
        ([HB[:-1]], MalformedFrame),  # a missing field
        ([[6, 1, "a"]], MalformedFrame),
        ([[]], MalformedFrame),
        ([HB, 5], MalformedFrame),  # a message that is not an array
        ([["5", 1, "a", "b", 0]], MalformedFrame),  # str tag
        ([[True, 1, "a", "b", 0]], MalformedFrame),  # bool tag
        ([[None]], MalformedFrame),
        ([[0, 1, "a", "b", 0]], UnknownMessageType),
        ([[9, 1, "a", "b", 0]], UnknownMessageType),
        ([[-1, 1, "a", "b", 0]], UnknownMessageType),
        ([[MAX_U64, 1, "a", "b", 0]], UnknownMessageType),
        ([HB, [9]], UnknownMessageType),  # one bad message rejects the frame
        ([[3, 2, "a", "b", 1, 1, [[2, 0, "x"]], 1]], MalformedFrame),  # entry data str
        ([[3, 2, "a", "b", 1, 1, [[2, False, b"x"]], 1]], MalformedFrame),  # bool kind
        ([[3, 2, "a", "b", 1, 1, [[2, 2, b"x"]], 1]], MalformedFrame),  # unknown kind
        ([[3, 2, "a", "b", 1, 1, [[2, 0]], 1]], MalformedFrame),  # short entry
        ([[3, 2, "a", "b", 1, 1, [[2, 0, b"x", 0]], 1]], MalformedFrame),  # long entry
        ([[3, 2, "a", "b", 1, 1, [2, 0, b"x"], 1]], MalformedFrame),  # entry not an array
        ([[3, 2, "a", "b", 1, 1, {"e": 1}, 1]], MalformedFrame),
        ([[3, 2, "a", "b", 1, 1, [[2, 0, b""], [1, 0, b""]], 1]], MalformedFrame),  # §5.3
        ([[3, 2, "a", "b", 1, 1, [[3, 0, b""]], 1]], MalformedFrame),  # newer than term
        ([[3, 2, "a", "b", 0, 1, [], 1]], MalformedFrame),  # prev index/term disagree
        ([[1, 1, "a", "b", 5, 0, False]], MalformedFrame),  # last index/term disagree
        ([[4, 1, "a", "b", True, 1, 1, 2]], MalformedFrame),  # hint_term > term
        ([[8, 2, "a", "b", 7, 0, 0, 4, None]], MalformedFrame),  # unknown rejection
        ([[8, 2, "a", "b", 7, 0, 0, "too large", None]], MalformedFrame),
        ([[8, 2, "a", "b", 7, 0, 0, None, None]], MalformedFrame),  # accepted at 0
        ([[8, 2, "a", "b", 7, 0, 0, 3, b"c"]], MalformedFrame),  # bytes hint
        ({"batch": [HB]}, MalformedFrame),  # a map
        (HB, MalformedFrame),  # a message, not a batch
        (None, MalformedFrame),
        (msgpack.ExtType(1, b"x"), MalformedFrame),
        ([[5, msgpack.ExtType(1, b""), "a", "b", 0]], MalformedFrame),
    ],
)
def test_rejects_wrong_shapes(batch: object, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode_batch_untrusted(pack(batch))
    # The same bytes, with the valid messages next to them, are still valid:
    assert decode_batch_untrusted(pack([HB, AREQ, FRESP])) == [
        Heartbeat(1, "a", "b", 0),
        AppendRequest(2, "a", "b", 1, 1, (Entry(2, b"x"),), 1),
        ForwardResponse(2, "a", "b", 7, 0, 0, RejectReason.TOO_LARGE, None),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        pack([HB]) + b"\x90",  # two values in one frame (msgpack.ExtraData)
        pack([HB])[:-1],  # truncated
        b"\x91" * 5000 + b"\xc0",  # nested deeper than msgpack's stack (StackError)
        b"\xd9\x02\xff\xfe",  # str that is not UTF-8
        b"\xd7\xff" + bytes(8),  # a timestamp ext
        b"\xc7\x00\xff",  # a malformed timestamp ext
        b"\x81\x90\x90",  # a map with an unhashable key
        b"\x81\x01\x02",  # a map with an int key
    ],
)
def test_rejects_invalid_msgpack(payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_batch_untrusted(payload)
    with pytest.raises(MalformedFrame):
        check_hello(payload)


def test_huge_declared_lengths() -> None:
    # Headers claiming gigabytes inside a tiny payload: refused, not allocated.
    for payload in (
        b"\xdd\xff\xff\xff\xff",  # array of 2**32-1 elements
        b"\xdb\xff\xff\xff\xff",  # str of 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin of 4 GiB
        b"\xdf\xff\xff\xff\xff",  # map of 2**32-1 pairs
        b"\xc9\xff\xff\xff\xff\x01",  # ext of 4 GiB
    ):
        with pytest.raises(MalformedFrame):
            decode_batch_untrusted(payload)


def test_array_budget_bounds_memory() -> None:
    # A valid msgpack array of a million empty arrays (1 MB) would become
    # ~64 MB of Python lists; the list budget stops it near what a real
    # payload of that size costs.
    n = 1_000_000
    payload = b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    tracemalloc.start()
    try:
        with pytest.raises(MalformedFrame, match="more arrays"):
            decode_batch_untrusted(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * len(payload)
    # The densest valid batches (the most arrays per byte) are within budget.
    for batch in (
        [HeartbeatResponse(0, "", "")] * 20_000,
        [AppendRequest(1, "", "", 0, 0, (), 0)] * 10_000,
        [AppendRequest(1, "", "", 0, 0, (Entry(1),) * 10_000, 0)],
        [AppendRequest(1, "", "", 0, 0, (Entry(1),), 0)] * 5_000,
    ):
        assert decode_batch_untrusted(payload_of(encode_batch(batch))) == batch
    # Deep nesting (within msgpack's stack limit) is refused as malformed.
    with pytest.raises(MalformedFrame):
        decode_batch_untrusted(b"\x91" * 500 + b"\x90")


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = pack([HB])
    with pytest.raises(FrameTooLarge):
        decode_batch_untrusted(payload, max_frame=len(payload) - 1)
    assert decode_batch_untrusted(payload, max_frame=len(payload))


# ---------------------------------------------------------------- FrameReader


def test_oversized_header_is_refused_before_any_payload() -> None:
    reader = FrameReader(max_frame=1000)
    reader.feed(struct.pack(">I", 1001))  # the header alone
    with pytest.raises(FrameTooLarge):
        reader.next_frame()
    assert reader.buffered == HEADER_SIZE  # no payload was waited for or kept
    with pytest.raises(FrameTooLarge):  # the stream cannot be resynchronised
        reader.next_frame()
    reader = FrameReader()
    reader.feed(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        reader.next_frame()
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024


def test_oversized_header_after_good_frames() -> None:
    reader = FrameReader(max_frame=10)
    reader.feed(b"\x00\x00\x00\x02hi" + struct.pack(">I", 11) + b"x")
    assert reader.next_frame() == b"hi"
    with pytest.raises(FrameTooLarge):
        reader.next_frame()


def test_per_frame_limit_for_the_hello() -> None:
    frame = encode_hello("c", "a", "b") + encode_batch([Heartbeat(1, "a", "b", 0)])
    reader = FrameReader()
    reader.feed(frame)
    hello = reader.next_frame(max_frame=MAX_HELLO_FRAME)
    assert hello is not None and check_hello(hello).src == "a"
    batch = reader.next_frame()
    assert batch is not None and decode_batch_untrusted(batch) == [Heartbeat(1, "a", "b", 0)]
    reader.feed(struct.pack(">I", MAX_HELLO_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        reader.next_frame(max_frame=MAX_HELLO_FRAME)


def test_frame_reader_rejects_bad_limits() -> None:
    for bad in (-1, 2**32, True):
        with pytest.raises(ValueError):
            FrameReader(max_frame=bad)


@settings(max_examples=150, deadline=None)
@given(streams)
def test_every_prefix(stream: bytes) -> None:
    # Any prefix of a valid stream yields exactly the frames it completes, and
    # never an error: a slow peer is not a hostile one.
    complete = FrameReader()
    complete.feed(stream)
    frames, ends, offset = [], [], 0
    while (frame := complete.next_frame()) is not None:
        frames.append(frame)
        offset += HEADER_SIZE + len(frame)
        ends.append(offset)
    assert offset == len(stream) and complete.buffered == 0
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        reader.feed(stream[:cut])
        got = []
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
        assert got == frames[: sum(end <= cut for end in ends)]
        reader.feed(stream[cut:])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
        assert got == frames


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_chunking(payloads: list[bytes], draw: st.DataObject) -> None:
    stream = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    reader, got = FrameReader(max_frame=300), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.feed(stream[start:end])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == payloads
    assert reader.buffered == 0


# ---------------------------------------------------------------- hostile input (Hypothesis)

hostile = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@settings(hostile, max_examples=2000)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    fuzz_decode(data)
    only_wire_errors(data)


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete"])) if b else "insert"
        if op == "insert":
            i = draw(st.integers(0, len(b)))
            b[i:i] = draw(st.binary(min_size=1, max_size=4))
            continue
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC2, 0xC3, 0xDD, 0xFF]))
        else:
            del b[i]
    return bytes(b)


@settings(hostile, max_examples=1000)
@given(streams.flatmap(mutations))
def test_mutated_frames(data: bytes) -> None:
    fuzz_decode(data)


@settings(hostile, max_examples=1000)
@given(batches.map(lambda b: payload_of(encode_batch(b))).flatmap(mutations))
def test_mutated_payloads(payload: bytes) -> None:
    fuzz_decode(payload)
    only_wire_errors(payload)


hostile_values = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-(2**63), MAX_U64),
    st.floats(),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(0, 3) | st.none(), max_size=4),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
    st.recursive(st.just([]), lambda inner: st.lists(inner, max_size=3), max_leaves=20),
)
# Slots that may hold None or another type legitimately: ForwardResponse's
# rejection and leader_hint.
OPTIONAL_SLOTS = {(8, 7), (8, 8)}
# Int slots that may be negative: the request ids.
SIGNED_SLOTS = {(7, 4), (8, 4)}


@st.composite
def wrong_shapes(draw: st.DrawFn) -> tuple[list[Any], bool]:
    """A valid message's wire form, damaged; and whether it must be refused."""
    fields = wire_form(draw(messages))
    tag = fields[0]
    op = draw(st.sampled_from(["replace", "replace", "replace", "append", "drop", "wrap",
                               "entry"]))
    if op == "append":
        return [[*fields, draw(hostile_values)]], True
    if op == "drop":
        del fields[draw(st.integers(0, len(fields) - 1))]
        return [fields], True
    if op == "wrap":
        return [[fields]], True
    if op == "entry" and tag == 3 and fields[6]:
        entry = draw(st.sampled_from(fields[6]))
        i, new = draw(st.integers(0, 2)), draw(hostile_values)
        must_fail = type(new) is not type(entry[i]) or (type(new) is int and new < 0)
        entry[i] = new
        return [fields], must_fail
    i, new = draw(st.integers(0, len(fields) - 1)), draw(hostile_values)
    old, fields[i] = fields[i], new
    if i == 0 or (tag, i) in OPTIONAL_SLOTS:
        must_fail = type(new) is not int if i == 0 else False
    else:
        negative = type(new) is int and new < 0 and (tag, i) not in SIGNED_SLOTS
        must_fail = type(new) is not type(old) or negative
    return [fields], must_fail


@settings(hostile)
@given(wrong_shapes())
def test_wrong_shape(case: tuple[list[Any], bool]) -> None:
    batch, must_fail = case
    payload = pack(batch)
    fuzz_decode(payload)
    decoded = only_wire_errors(payload)
    if must_fail:
        assert decoded is None, f"accepted {batch!r} as {decoded!r}"


def test_fuzz_decode_swallows_only_wire_errors() -> None:
    stream = encode_hello("c", "a", "b") + encode_batch([Heartbeat(1, "a", "b", 0)])
    fuzz_decode(stream)
    fuzz_decode(b"")
    fuzz_decode(b"\xff" * 8)
    fuzz_decode(payload_of(encode_batch([Heartbeat(1, "a", "b", 0)])))
