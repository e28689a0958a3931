"""graft's wire format (graft_trio/_wire.py): round trips, HELLO checks, hostile input.

The module's rules, and where each is checked here:

* "Encoding is the inverse of decoding": ``test_round_trip`` (every message
  type and every field, terms and indexes up to 2**64-1, snapshot and CONFIG
  memberships), ``test_round_trip_each_type``, ``test_encode_batches_split``.
* The format table in _wire's docstring is the format: ``test_format_table``
  (tags and fields, and that every attribute of every graft_core message
  travels), ``test_enum_ints``, ``test_golden_bytes``.
* HELLO: ``test_hello_*``, one test per rejection.
* "Blame is split at the boundary": the ``*_untrusted`` functions and
  ``FrameReader`` raise only ``WireError`` subclasses, whatever the bytes:
  ``test_random_bytes``, ``test_mutated_frames``, ``test_mutated_payloads``,
  ``test_wrong_shape``, ``test_mutated_memberships`` (Hypothesis) and the
  targeted ``test_rejects_*`` (``test_rejects_invalid_membership`` for a
  snapshot's or a CONFIG entry's membership bytes).
* "Sizes are checked before memory is committed": ``test_oversized_header_*``,
  ``test_huge_declared_lengths``, ``test_array_budget_bounds_memory``.
* FrameReader reassembles frames across any chunking: ``test_every_prefix``,
  ``test_chunking``.

Hypothesis examples per run: 400 round trips + 13 x 25 per-type round trips +
200 splits + 150 prefix walks (every prefix of each stream) + 300 chunkings,
and 6,000 hostile inputs: 2,000 random byte strings + 1,000 mutated streams +
1,000 mutated payloads + 1,500 wrong shapes + 500 mutated memberships. 7,375 in
all, about 16 s. Every hostile input also goes through ``fuzz_decode``, the
entry point a long fuzz campaign uses.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from typing import Any

import attrs
import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft_core import (
    AppendRequest,
    AppendResponse,
    ConfigError,
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
from graft_core._membership import MAX_ENCODED_BYTES
from graft_core._messages import MESSAGE_TYPES, malformed_reason
from graft_trio import _wire
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
request_ids = st.integers(-(2**63), MAX_U64)  # any int msgpack carries
rejections = st.none() | st.sampled_from(RejectReason)
# A Membership's ids are non-empty and printable (graft_core._membership).
member_ids = st.text(min_size=1, max_size=4).filter(str.isprintable)


@st.composite
def memberships(draw: st.DrawFn) -> Membership:
    # Voters and learners are disjoint; C_old (outgoing) may overlap either.
    pool = draw(st.lists(member_ids, min_size=1, max_size=6, unique=True))
    n_voters = draw(st.integers(1, len(pool)))
    outgoing = draw(st.lists(st.sampled_from(pool) | member_ids, max_size=3, unique=True))
    addressed = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True))
    addresses = [(node, draw(member_ids)) for node in addressed]
    return Membership(pool[:n_voters], outgoing, pool[n_voters:], addresses)


def decodes_as_membership(b: object) -> bool:
    try:
        Membership.decode_untrusted(b)
    except ConfigError:
        return False
    return True


@st.composite
def vote_requests(draw: st.DrawFn) -> VoteRequest:
    term = draw(indexes)
    if term == 0 or draw(st.booleans()):
        last_index = last_term = 0
    else:
        last_term, last_index = draw(st.integers(1, term)), draw(st.integers(1, MAX_U64))
    return VoteRequest(term, draw(ids), draw(ids), last_index, last_term, draw(st.booleans()),
                       draw(st.booleans()))


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
        kinds = [draw(st.sampled_from(EntryKind)) for _ in terms]
        # A CONFIG entry's data is an encoded membership (the core checks it).
        entries = tuple(
            Entry(t, draw(memberships()).encode() if k is EntryKind.CONFIG else draw(data), k)
            for t, k in zip(terms, kinds, strict=True)
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
    rejection = draw(rejections)
    index = draw(indexes if rejection is not None else st.integers(1, MAX_U64))
    return ForwardResponse(draw(indexes), draw(ids), draw(ids), draw(request_ids), index,
                           draw(indexes), rejection, draw(st.none() | ids))


@st.composite
def install_snapshots(draw: st.DrawFn) -> InstallSnapshot:
    # Raft §7: a snapshot covers at least entry 1, whose term is a real
    # (non-zero) term no newer than the leader's.
    term = draw(indexes.filter(bool))
    meta = SnapshotMeta(draw(st.integers(1, MAX_U64)), draw(st.integers(1, term)),
                        draw(memberships()))
    return InstallSnapshot(term, draw(ids), draw(ids), meta, draw(indexes), draw(data),
                           draw(st.booleans()))


STRATEGIES: dict[type, st.SearchStrategy[Message]] = {
    VoteRequest: vote_requests(),
    VoteResponse: st.builds(VoteResponse, indexes, ids, ids, st.booleans(), st.booleans()),
    AppendRequest: append_requests(),
    AppendResponse: append_responses(),
    Heartbeat: st.builds(Heartbeat, indexes, ids, ids, indexes, indexes),
    HeartbeatResponse: st.builds(HeartbeatResponse, indexes, ids, ids, indexes),
    ForwardProposal: st.builds(ForwardProposal, indexes, ids, ids, request_ids, data),
    ForwardResponse: forward_responses(),
    InstallSnapshot: install_snapshots(),
    InstallSnapshotResponse: st.builds(InstallSnapshotResponse, indexes, ids, ids, indexes,
                                       indexes, st.booleans(), indexes),
    TimeoutNow: st.builds(TimeoutNow, indexes, ids, ids),
    ReadIndexRequest: st.builds(ReadIndexRequest, indexes, ids, ids, request_ids),
    ReadIndexResponse: st.builds(ReadIndexResponse, indexes, ids, ids, request_ids, indexes,
                                 rejections, st.none() | ids),
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
    # The batches above mix all the types; this makes sure none is left out.
    message = draw.draw(STRATEGIES[message_type])
    assert type(message) is message_type
    assert decode_batch_untrusted(payload_of(encode_batch([message]))) == [message]


def test_format_table() -> None:
    # The docstring's table, _TAGS/_FIELDS and graft_core's classes agree, and
    # every attribute of every message travels, in declaration order (a
    # SnapshotMeta flattened): a field the wire forgot would come back as its
    # default, which the round trips only catch if they draw another value.
    assert _wire.__doc__ is not None
    table = _wire.__doc__.split("    tag  message                  fields\n")[1].split("\n\n")[0]
    rows = [line.split() for line in table.splitlines()]
    assert [int(tag) for tag, *_ in rows] == list(range(1, len(MESSAGE_TYPES) + 1))
    by_name = {cls.__name__: cls for cls in MESSAGE_TYPES}
    assert sorted(name for _, name, *_ in rows) == sorted(by_name)
    assert set(_wire._TAGS) == set(MESSAGE_TYPES) == set(by_name.values())
    for tag, name, *documented in rows:
        cls = by_name[name]
        assert _wire._TAGS[cls] == int(tag)
        assert _wire._FIELDS[int(tag)] == (() if documented == ["-"] else tuple(documented))
        names = [f.name for f in attrs.fields(cls)]
        assert names[:3] == ["term", "src", "dst"]
        flat: list[str] = []
        for n in names[3:]:
            flat += [f"meta.{f.name}" for f in attrs.fields(SnapshotMeta)] if n == "meta" else [n]
        assert _wire._FIELDS[int(tag)] == tuple(flat), name


def test_enum_ints() -> None:
    # Every member has its own int, the one the docstring names, on the wire.
    assert _wire.__doc__ is not None
    doc = " ".join(_wire.__doc__.split())
    kinds = {k: wire_form(AppendRequest(1, "a", "b", 0, 0, (Entry(1, data, k),), 0))[6][0][1]
             for k, data in ((EntryKind.NORMAL, b""), (EntryKind.NOOP, b""),
                             (EntryKind.CONFIG, Membership(("a",)).encode()))}
    assert set(kinds) == set(EntryKind)
    assert sorted(kinds.values()) == list(range(len(EntryKind)))
    reasons = {r: wire_form(ReadIndexResponse(1, "a", "b", 1, 0, r))[6] for r in RejectReason}
    assert sorted(reasons.values()) == list(range(len(RejectReason)))
    for member, n in [*kinds.items(), *reasons.items()]:
        assert f"{member.name} {n}" in doc, member
    for r in RejectReason:
        forward = ForwardResponse(1, "a", "b", 1, 0, 0, r)
        assert wire_form(forward)[7] == reasons[r]


# The canonical encoding of Membership(("a",)), pinned here because the wire
# carries it: changing it is a new WIRE_VERSION too.
MEMBERSHIP_A = b'{"addresses":[],"learners":[],"outgoing":[],"voters":["a"]}'


def test_golden_bytes() -> None:
    # The format is a contract between nodes running different builds: changing
    # these bytes needs a new WIRE_VERSION.
    assert Membership(("a",)).encode() == MEMBERSHIP_A
    batch: list[Message] = [
        VoteRequest(2, "a", "b", 3, 1, transfer=True),
        VoteResponse(2, "b", "a", granted=True),
        AppendRequest(2, "a", "b", 1, 1, (Entry(2, b"x"), Entry(2, b"", EntryKind.NOOP)), 1),
        AppendResponse(2, "b", "a", False, 4, 3, 1),
        Heartbeat(2, "a", "b", 1, read_seq=9),
        HeartbeatResponse(2, "b", "a", read_seq=9),
        ForwardProposal(2, "b", "a", 7, b"op"),
        ForwardResponse(2, "a", "b", 7, 0, 0, RejectReason.TOO_LARGE, "c"),
        InstallSnapshot(2, "a", "b", SnapshotMeta(5, 1, Membership(("a",))), 0, b"snap", True),
        InstallSnapshotResponse(2, "b", "a", 5, 4, True, 5),
        TimeoutNow(2, "a", "b"),
        ReadIndexRequest(2, "b", "a", 8),
        ReadIndexResponse(2, "a", "b", 8, 0, RejectReason.NOT_READY),
    ]
    frame = encode_batch(batch)
    assert frame.hex() == (
        "000000d3"  # length: 211 bytes
        "9d"  # array of 13 messages
        "98" "01" "02" "a161" "a162" "03" "01" "c2" "c3"  # [1, term, src, dst, 3, 1,
        #                                                    pre_vote, transfer]
        "96" "02" "02" "a162" "a161" "c3" "c2"
        "98" "03" "02" "a161" "a162" "01" "01"  # [3, term, src, dst, prev index, prev term,
        "92" "930200c40178" "930201c400" "01"  #  [[term, kind, data], ...], leader_commit]
        "98" "04" "02" "a162" "a161" "c2" "04" "03" "01"
        "96" "05" "02" "a161" "a162" "01" "09"  # leader_commit, read_seq
        "95" "06" "02" "a162" "a161" "09"  # read_seq
        "96" "07" "02" "a162" "a161" "07" "c4026f70"
        "99" "08" "02" "a161" "a162" "07" "00" "00" "03" "a163"  # TOO_LARGE is 3
        "9a" "09" "02" "a161" "a162" "05" "01"  # [9, term, src, dst, meta.index, meta.term,
        "c43b" + MEMBERSHIP_A.hex() +  # meta.membership: a bin of 59 bytes,
        "00" "c404736e6170" "c3"  # offset, data, done]
        "98" "0a" "02" "a162" "a161" "05" "04" "c3" "05"
        "94" "0b" "02" "a161" "a162"
        "95" "0c" "02" "a162" "a161" "08"
        "98" "0d" "02" "a161" "a162" "08" "00" "06" "c0"  # NOT_READY is 6; no leader_hint
    )
    assert decode_batch_untrusted(payload_of(frame)) == batch
    assert encode_hello("c", "a", "b").hex() == "0000000e" "95" "a5677261667402" "a163a161a162"


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
    # The core's own checks apply to the new messages and entries too.
    members = Membership(("a",))
    with pytest.raises(EncodeError, match="malformed"):  # a snapshot of term 0
        encode_batch([InstallSnapshot(1, "a", "b", SnapshotMeta(1, 0, members), 0)])
    with pytest.raises(EncodeError, match="malformed"):  # CONFIG data is not a membership
        encode_batch([AppendRequest(1, "a", "b", 0, 0, (Entry(1, b"{}", EntryKind.CONFIG),), 0)])
    # A membership no peer would decode (graft_core bounds its encoding).
    huge = Membership([f"{i:08}" for i in range(MAX_ENCODED_BYTES // 11 + 1)])
    assert len(huge.encode()) > MAX_ENCODED_BYTES
    with pytest.raises(EncodeError, match="exceeds"):
        encode_batch([InstallSnapshot(1, "a", "b", SnapshotMeta(1, 1, huge), 0)])
    assert not issubclass(EncodeError, WireError)  # the caller's bug, not the peer's


# ---------------------------------------------------------------- HELLO


def hello_payload(
    cluster_id: str = "c", src: str = "a", dst: str = "b", version: int = WIRE_VERSION
) -> bytes:
    return payload_of(encode_hello(cluster_id, src, dst, version=version))


def check_hello(payload: bytes, **overrides: Any) -> Hello:
    kwargs: dict[str, Any] = {"cluster_id": "c", "me": "b", "members": {"a", "b", "z"}}
    kwargs.update(overrides)
    return decode_hello_untrusted(payload, **kwargs)


def test_hello_round_trip() -> None:
    assert WIRE_VERSION == 2
    assert check_hello(hello_payload()) == Hello(2, "c", "a", "b")


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
        check_hello(hello_payload(version=3))
    with pytest.raises(UnsupportedVersion):
        check_hello(hello_payload(version=0))
    # Version 1 laid out VoteRequest, Heartbeat and HeartbeatResponse with
    # fewer fields: its peers are refused at the HELLO, not mid-stream.
    with pytest.raises(UnsupportedVersion, match="version 1"):
        check_hello(hello_payload(version=1))
    # The version is read before the rest, so a future layout is refused by
    # version, not as malformed.
    with pytest.raises(UnsupportedVersion):
        check_hello(pack(["graft", 3, {"a new": "layout"}]))
    assert check_hello(hello_payload(version=3), supported_versions={2, 3}).version == 3


@pytest.mark.parametrize(
    "payload",
    [
        pack(["graft", WIRE_VERSION, "c", "a"]),  # a field missing
        pack(["graft", WIRE_VERSION, "c", "a", "b", 0]),  # a field too many
        pack(["graft", True, "c", "a", "b"]),  # bool version
        pack(["graft", WIRE_VERSION, b"c", "a", "b"]),  # bytes cluster id
        pack(["graft", WIRE_VERSION, "c", None, "b"]),
        pack(["GRAFT", WIRE_VERSION, "c", "a", "b"]),  # not graft
        pack({"version": WIRE_VERSION}),
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


HB = [5, 1, "a", "b", 0, 0]
AREQ = [3, 2, "a", "b", 1, 1, [[2, 0, b"x"]], 1]
FRESP = [8, 2, "a", "b", 7, 0, 0, 3, None]
MEMBERSHIP_AB = Membership(("a", "b")).encode()
# [9, term, src, dst, meta.index, meta.term, meta.membership, offset, data, done]
SNAP = [9, 2, "a", "b", 5, 1, MEMBERSHIP_AB, 0, b"snap", True]
RIRESP = [13, 2, "a", "b", 7, 4, None, None]


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        ([[5, True, "a", "b", 0, 0]], MalformedFrame),  # bool for int
        ([[5, 1, "a", "b", False, 0]], MalformedFrame),
        ([[5, 1.0, "a", "b", 0, 0]], MalformedFrame),  # float for int
        ([[5, -1, "a", "b", 0, 0]], MalformedFrame),  # negative term
        ([[5, 1, "a", "b", -3, 0]], MalformedFrame),
        ([[5, 1, "a", "b", 0, -1]], MalformedFrame),  # negative read_seq
        ([[5, 1, "a", "b", 0, None]], MalformedFrame),
        ([[5, 1, b"a", "b", 0, 0]], MalformedFrame),  # bytes for str
        ([[5, 1, "a", None, 0, 0]], MalformedFrame),
        ([[5, 1, "a", "b", 0]], MalformedFrame),  # version 1's Heartbeat
        ([[6, 1, "a", "b"]], MalformedFrame),  # version 1's HeartbeatResponse
        ([[6, 1, "a", "b", True]], MalformedFrame),
        ([[7, 1, "a", "b", 1, "op"]], MalformedFrame),  # str for bytes
        ([[7, 1, "a", "b", True, b"op"]], MalformedFrame),
        ([[2, 1, "a", "b", 1, False]], MalformedFrame),  # int for bool
        ([[1, 1, "a", "b", 0, 0, False, 1]], MalformedFrame),  # int transfer
        ([[1, 1, "a", "b", 0, 0, False]], MalformedFrame),  # version 1's VoteRequest
        ([[*HB, 0]], MalformedFrame),  # an extra field
        ([HB[:-1]], MalformedFrame),  # a missing field
        ([[6, 1, "a"]], MalformedFrame),
        ([[11, 1, "a", "b", 0]], MalformedFrame),  # TimeoutNow has no fields
        ([[]], MalformedFrame),
        ([HB, 5], MalformedFrame),  # a message that is not an array
        ([["5", 1, "a", "b", 0, 0]], MalformedFrame),  # str tag
        ([[True, 1, "a", "b", 0, 0]], MalformedFrame),  # bool tag
        ([[None]], MalformedFrame),
        ([[0, 1, "a", "b", 0]], UnknownMessageType),
        ([[14, 1, "a", "b", 0]], UnknownMessageType),
        ([[-1, 1, "a", "b", 0]], UnknownMessageType),
        ([[MAX_U64, 1, "a", "b", 0]], UnknownMessageType),
        ([HB, [14]], UnknownMessageType),  # one bad message rejects the frame
        ([[3, 2, "a", "b", 1, 1, [[2, 0, "x"]], 1]], MalformedFrame),  # entry data str
        ([[3, 2, "a", "b", 1, 1, [[2, False, b"x"]], 1]], MalformedFrame),  # bool kind
        ([[3, 2, "a", "b", 1, 1, [[2, 3, b"x"]], 1]], MalformedFrame),  # unknown kind
        ([[3, 2, "a", "b", 1, 1, [[2, 2, b"x"]], 1]], MalformedFrame),  # CONFIG, no membership
        ([[3, 2, "a", "b", 1, 1, [[2, 0]], 1]], MalformedFrame),  # short entry
        ([[3, 2, "a", "b", 1, 1, [[2, 0, b"x", 0]], 1]], MalformedFrame),  # long entry
        ([[3, 2, "a", "b", 1, 1, [2, 0, b"x"], 1]], MalformedFrame),  # entry not an array
        ([[3, 2, "a", "b", 1, 1, {"e": 1}, 1]], MalformedFrame),
        ([[3, 2, "a", "b", 1, 1, [[2, 0, b""], [1, 0, b""]], 1]], MalformedFrame),  # §5.3
        ([[3, 2, "a", "b", 1, 1, [[3, 0, b""]], 1]], MalformedFrame),  # newer than term
        ([[3, 2, "a", "b", 0, 1, [], 1]], MalformedFrame),  # prev index/term disagree
        ([[1, 1, "a", "b", 5, 0, False, False]], MalformedFrame),  # last index/term disagree
        ([[4, 1, "a", "b", True, 1, 1, 2]], MalformedFrame),  # hint_term > term
        ([[8, 2, "a", "b", 7, 0, 0, 8, None]], MalformedFrame),  # unknown rejection
        ([[8, 2, "a", "b", 7, 0, 0, "too large", None]], MalformedFrame),
        ([[8, 2, "a", "b", 7, 0, 0, None, None]], MalformedFrame),  # accepted at 0
        ([[8, 2, "a", "b", 7, 0, 0, 3, b"c"]], MalformedFrame),  # bytes hint
        ([[9, 2, "a", "b", 0, 1, MEMBERSHIP_AB, 0, b"", True]], MalformedFrame),  # index 0
        ([[9, 2, "a", "b", 5, 0, MEMBERSHIP_AB, 0, b"", True]], MalformedFrame),  # term 0
        ([[9, 2, "a", "b", 5, 3, MEMBERSHIP_AB, 0, b"", True]], MalformedFrame),  # > term
        ([[9, 2, "a", "b", 5, 1, MEMBERSHIP_AB, -1, b"", True]], MalformedFrame),
        ([[9, 2, "a", "b", 5, 1, MEMBERSHIP_AB, 0, "snap", True]], MalformedFrame),
        ([[9, 2, "a", "b", 5, 1, MEMBERSHIP_AB, 0, b"", 1]], MalformedFrame),  # int done
        ([[9, 2, "a", "b", 5, 1, MEMBERSHIP_AB.decode(), 0, b"", True]], MalformedFrame),
        ([[9, 2, "a", "b", 5, 1, ["a", "b"], 0, b"", True]], MalformedFrame),
        ([[9, 2, "a", "b", [5, 1, MEMBERSHIP_AB], 0, b"", True]], MalformedFrame),  # nested
        ([[10, 1, "a", "b", 5, 0, 1, 0]], MalformedFrame),  # int done
        ([[10, 1, "a", "b", 5, -1, False, 0]], MalformedFrame),  # negative next_offset
        ([[10, 1, "a", "b", 5, 0, False, None]], MalformedFrame),
        ([[11, 1, "a", 0]], MalformedFrame),  # int dst
        ([[12, 1, "a", "b", None]], MalformedFrame),
        ([[12, 1, "a", "b", False]], MalformedFrame),  # bool request_id
        ([[13, 2, "a", "b", 7, 0, 8, None]], MalformedFrame),  # unknown rejection
        ([[13, 2, "a", "b", 7, -1, None, None]], MalformedFrame),  # negative index
        ([[13, 2, "a", "b", 7, 0, 6, b"c"]], MalformedFrame),  # bytes hint
        ([[13, 2, "a", "b", 7, 0, False, None]], MalformedFrame),  # bool rejection
        ({"batch": [HB]}, MalformedFrame),  # a map
        (HB, MalformedFrame),  # a message, not a batch
        (None, MalformedFrame),
        (msgpack.ExtType(1, b"x"), MalformedFrame),
        ([[5, msgpack.ExtType(1, b""), "a", "b", 0, 0]], MalformedFrame),
    ],
)
def test_rejects_wrong_shapes(batch: object, error: type[WireError]) -> None:
    with pytest.raises(error):
        decode_batch_untrusted(pack(batch))
    # The same bytes, with the valid messages next to them, are still valid:
    assert decode_batch_untrusted(pack([HB, AREQ, FRESP, SNAP, RIRESP])) == [
        Heartbeat(1, "a", "b", 0),
        AppendRequest(2, "a", "b", 1, 1, (Entry(2, b"x"),), 1),
        ForwardResponse(2, "a", "b", 7, 0, 0, RejectReason.TOO_LARGE, None),
        InstallSnapshot(2, "a", "b", SnapshotMeta(5, 1, Membership(("a", "b"))), 0, b"snap",
                        True),
        ReadIndexResponse(2, "a", "b", 7, 4),
    ]


@pytest.mark.parametrize(
    "membership",
    [
        b"",
        b"not json",
        b"[" * 100_000,  # nested deeper than json's recursion limit
        b"\xff\xfe",  # not UTF-8
        b"{}",
        b"null",
        MEMBERSHIP_AB + b" ",  # trailing bytes
        MEMBERSHIP_AB.replace(b":", b": "),  # valid JSON, not canonical
        MEMBERSHIP_AB.replace(b'"a","b"', b'"b","a"'),  # unsorted
        MEMBERSHIP_AB.replace(b'"a","b"', b'"a","a"'),  # a duplicate id
        MEMBERSHIP_AB.replace(b'"a","b"', b""),  # no voters
        MEMBERSHIP_AB.replace(b'"a","b"', b'"a",1'),  # an int id
        MEMBERSHIP_AB.replace(b'"a","b"', b'"a",""'),  # an empty id
        MEMBERSHIP_AB.replace(b'"learners":[]', b'"learners":["a"]'),  # voter and learner
        MEMBERSHIP_AB.replace(b'"addresses":[]', b'"addresses":[["a"]]'),
        MEMBERSHIP_AB.replace(b'"addresses":[]', b'"addresses":[["a","x"],["a","y"]]'),
        MEMBERSHIP_AB.replace(b'"addresses":[]', b'"addresses":[[{},{}],[{},{}]]'),
        MEMBERSHIP_AB.replace(b"}", b',"extra":[]}'),
        b'"' + b"x" * MAX_ENCODED_BYTES + b'"',  # over graft_core's bound
    ],
)
def test_rejects_invalid_membership(membership: bytes) -> None:
    # A snapshot's membership (or a CONFIG entry's) that Membership will not
    # decode rejects the whole frame with the wire's typed error; the
    # ConfigError Membership.decode_untrusted raises does not escape.
    assert not decodes_as_membership(membership)
    snapshot = [9, 2, "a", "b", 5, 1, membership, 0, b"snap", True]
    with pytest.raises(MalformedFrame, match="membership"):
        decode_batch_untrusted(pack([HB, snapshot]))
    config = [3, 2, "a", "b", 0, 0, [[2, 2, membership]], 0]
    with pytest.raises(MalformedFrame):  # the core's check (malformed_reason)
        decode_batch_untrusted(pack([config]))
    assert decode_batch_untrusted(pack([[*snapshot[:6], MEMBERSHIP_AB, *snapshot[7:]]]))


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
    message: Message
    for message, n in (
        (TimeoutNow(0, "", ""), 20_000),
        (HeartbeatResponse(0, "", ""), 20_000),
        (AppendRequest(1, "", "", 0, 0, (), 0), 10_000),
        (AppendRequest(1, "", "", 0, 0, (Entry(1),) * 10_000, 0), 1),
        (AppendRequest(1, "", "", 0, 0, (Entry(1),), 0), 5_000),
    ):
        assert decode_batch_untrusted(payload_of(encode_batch([message] * n))) == [message] * n
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
# and ReadIndexResponse's rejection and leader_hint.
OPTIONAL_SLOTS = {(8, 7), (8, 8), (13, 6), (13, 7)}
# Int slots that may be negative: the request ids.
SIGNED_SLOTS = {(7, 4), (8, 4), (12, 4), (13, 4)}
# InstallSnapshot's meta.membership: only a canonical encoding is accepted.
MEMBERSHIP_SLOT = (9, 6)
CONFIG = 2  # EntryKind.CONFIG on the wire


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
        i = draw(st.integers(0, 2))
        new = draw(hostile_values | st.sampled_from([0, 1, CONFIG]) if i == 1 else hostile_values)
        must_fail = type(new) is not type(entry[i]) or (type(new) is int and new < 0)
        entry[i] = new
        if i == 1:  # the kind: a known one, and CONFIG only for a membership
            must_fail = must_fail or new not in (0, 1, CONFIG)
        if entry[1] == CONFIG and i != 0:
            must_fail = must_fail or not decodes_as_membership(entry[2])
        return [fields], must_fail
    i, new = draw(st.integers(0, len(fields) - 1)), draw(hostile_values)
    old, fields[i] = fields[i], new
    if (tag, i) == MEMBERSHIP_SLOT:
        must_fail = new != old  # no short hostile value is a membership
    elif i == 0 or (tag, i) in OPTIONAL_SLOTS:
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


@st.composite
def mutated_memberships(draw: st.DrawFn) -> bytes:
    return draw(mutations(draw(memberships()).encode()))


@settings(hostile, max_examples=500)
@given(mutated_memberships(), st.booleans())
def test_mutated_memberships(membership: bytes, in_snapshot: bool) -> None:
    # Damaged membership bytes, well framed: byte mutations of a whole payload
    # mostly break the msgpack around them, so these reach the JSON parser.
    # A snapshot or CONFIG entry is accepted iff its membership decodes, and
    # then carries exactly the bytes that came in (the encoding is canonical).
    if in_snapshot:
        message = [9, 2, "a", "b", 5, 1, membership, 0, b"", False]
    else:
        message = [3, 2, "a", "b", 0, 0, [[1, CONFIG, membership]], 0]
    payload = pack([message])
    fuzz_decode(payload)
    decoded = only_wire_errors(payload)
    assert (decoded is not None) == decodes_as_membership(membership)
    if decoded is not None:
        (m,) = decoded
        if isinstance(m, InstallSnapshot):
            assert m.meta.membership.encode() == membership
        else:
            assert isinstance(m, AppendRequest) and m.entries[0].data == membership


def test_fuzz_decode_swallows_only_wire_errors() -> None:
    stream = encode_hello("c", "a", "b") + encode_batch([Heartbeat(1, "a", "b", 0)])
    fuzz_decode(stream)
    fuzz_decode(b"")
    fuzz_decode(b"\xff" * 8)
    fuzz_decode(payload_of(encode_batch([Heartbeat(1, "a", "b", 0)])))
