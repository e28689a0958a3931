"""graft's peer-to-peer wire format: length-prefixed msgpack frames.

Theory of operation
-------------------
A TCP connection between two graft nodes carries a sequence of *frames*::

    frame   = length payload
    length  = u32, big-endian: the payload's size in bytes, 0 .. max_frame
    payload = exactly one msgpack value

The first frame on a connection is a HELLO; every later frame is a BATCH::

    hello   = ["graft", version, cluster_id, src, dst]
    batch   = [message, ...]
    message = [tag, term, src, dst, field, ...]      (positional; see below)
    entry   = [term, kind, data]

The fields after ``[tag, term, src, dst]``, by tag (``_FIELDS``; a test keeps
this table, ``_FIELDS`` and graft_core's message classes in step)::

    tag  message                  fields
    1    VoteRequest              last_log_index last_log_term pre_vote transfer
    2    VoteResponse             granted pre_vote
    3    AppendRequest            prev_log_index prev_log_term entries leader_commit
    4    AppendResponse           success index hint_index hint_term
    5    Heartbeat                leader_commit read_seq
    6    HeartbeatResponse        read_seq
    7    ForwardProposal          request_id data
    8    ForwardResponse          request_id index entry_term rejection leader_hint
    9    InstallSnapshot          meta.index meta.term meta.membership offset data done
    10   InstallSnapshotResponse  index next_offset done match_index
    11   TimeoutNow               -
    12   ReadIndexRequest         request_id
    13   ReadIndexResponse        request_id index rejection leader_hint

``src`` and ``dst`` are node ids (str); ``entries`` is an array of ``entry``;
every ``data`` is a msgpack bin (bytes stay bytes); an InstallSnapshot's
:class:`~graft_core.SnapshotMeta` travels flattened, its ``membership`` as the
bin :meth:`graft_core.Membership.encode` writes (canonical, so one membership
has one encoding). ``rejection`` and ``leader_hint`` may be nil. Enums travel
as the small ints of ``_ENTRY_KIND_TO_WIRE`` (NORMAL 0, NOOP 1, CONFIG 2) and
``_REJECT_TO_WIRE`` (NOT_LEADER 0, NO_LEADER 1, DROPPED 2, TOO_LARGE 3,
TRANSFERRING 4, CHANGE_IN_PROGRESS 5, NOT_READY 6, INVALID_CHANGE 7), never as
Python enum values, so renaming a member cannot change the format. A CONFIG
entry's ``data`` is an encoded membership too; the wire carries it as bytes and
:func:`~graft_core._messages.malformed_reason` checks that it decodes.

Rules:

1. **Blame is split at the boundary** (as in graft_core/_errors.py). Bytes from
   a peer go through a ``*_untrusted`` function, which raises only
   :class:`WireError` subclasses, whatever the bytes. A caller's mistake (an
   encoder handed a malformed message) raises :class:`EncodeError`, which is
   not a :class:`WireError`.
2. **Sizes are checked before memory is committed.** :class:`FrameReader`
   rejects a length header announcing more than ``max_frame`` before any
   payload is read; msgpack's per-object limits are bounded by the payload's
   size; a list budget stops a frame (a HELLO too) of tiny nested arrays from
   growing into ~64x its size in Python objects (see ``_unpack_untrusted``;
   the worst amplification graft_trio._fuzz_frames has found is ~36x); an encoded
   membership is parsed only if it is within graft_core's bound
   (``MAX_ENCODED_BYTES``, checked by ``Membership.decode_untrusted``).
3. **Types are exact.** A bool is not an int, a str is not bytes, a list is
   not a message; and every decoded message is then checked by
   :func:`graft_core._messages.malformed_reason`, so what leaves the decoder
   is something the core would accept the shape of.
4. **Encoding is the inverse of decoding**: for every message ``m`` that
   :func:`encode_batch` accepts, ``decode_batch_untrusted`` of its payload
   gives back a message equal to ``m`` (checked by tests/test_wire.py and
   by :func:`fuzz_decode` on every input it decodes).

Versioning: the HELLO's ``version`` is read before anything after it, so a
future version may change the layout behind it and still be refused with a
clear :class:`UnsupportedVersion` rather than a :class:`MalformedFrame`.
Changing a tag, a field's order or an enum's int is a new version.

* Version 1: tags 1-8; VoteRequest without ``transfer``, Heartbeat without
  ``read_seq``, HeartbeatResponse without fields; entry kinds 0-1;
  rejections 0-3.
* Version 2 (this one): VoteRequest gains ``transfer``, Heartbeat and
  HeartbeatResponse ``read_seq`` (leadership transfer and ReadIndex, thesis
  §3.10 and §6.4); tags 9-13 (InstallSnapshot, InstallSnapshotResponse,
  TimeoutNow, ReadIndexRequest, ReadIndexResponse); entry kind 2 (CONFIG);
  rejections 4-7. Version 1 is not read: the arity of three messages changed,
  so a version 1 peer is refused at its HELLO.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar

import attrs
import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints

from graft_core._errors import ConfigError, GraftError
from graft_core._membership import MAX_ENCODED_BYTES, Membership
from graft_core._messages import (
    AppendRequest,
    AppendResponse,
    ForwardProposal,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RejectReason,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    malformed_reason,
)
from graft_core._types import Entry, EntryKind, SnapshotMeta

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAX_HELLO_FRAME",
    "SUPPORTED_VERSIONS",
    "WIRE_VERSION",
    "EncodeError",
    "FrameReader",
    "FrameTimeout",
    "FrameTooLarge",
    "HandshakeTimeout",
    "Hello",
    "MalformedFrame",
    "UnknownMessageType",
    "UnknownSender",
    "UnsupportedVersion",
    "WireError",
    "WrongCluster",
    "WrongRecipient",
    "decode_batch_untrusted",
    "decode_hello_untrusted",
    "encode_batch",
    "encode_batches",
    "encode_hello",
    "fuzz_decode",
]

#: The schema version this module writes in its HELLO.
WIRE_VERSION = 2
#: The schema versions this module can read.
SUPPORTED_VERSIONS: frozenset[int] = frozenset({WIRE_VERSION})
#: Default largest payload, in bytes, of one frame (the length header excluded).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
#: Largest HELLO payload this module writes, and the default limit when reading
#: one: a peer that has not yet introduced itself may not make us buffer 16 MiB.
MAX_HELLO_FRAME = 64 * 1024
#: Size of the length prefix.
HEADER_SIZE = 4

_HELLO_MAGIC = "graft"
_LENGTH = struct.Struct(">I")
_MAX_U32 = 2**32 - 1


# ---------------------------------------------------------------- errors


class WireError(GraftError):
    """A peer sent bytes this node will not accept; close the connection.

    The only family of exceptions the ``*_untrusted`` functions and
    :class:`FrameReader` raise on bad input.

    Attributes:
        reason: a short name for the kind of rejection, the key under which a
            node counts it (``graft_trio.Status.rejected``).
    """

    reason: ClassVar[str] = "wire_error"


class FrameTooLarge(WireError):
    """A frame's length exceeds the maximum frame size.

    Raised by :class:`FrameReader` as soon as a header announces too much, by
    the decoders for an oversized payload, and by the encoders for a batch
    the peer would refuse (split it with :func:`encode_batches`).
    """

    reason: ClassVar[str] = "frame_too_large"


class MalformedFrame(WireError):
    """A payload is not valid msgpack or not the shape graft's format requires."""

    reason: ClassVar[str] = "malformed"


class UnknownMessageType(WireError):
    """A message's type tag names no graft message."""

    reason: ClassVar[str] = "unknown_message_type"


class UnsupportedVersion(WireError):
    """A HELLO names a schema version this node cannot read."""

    reason: ClassVar[str] = "unsupported_version"


class WrongCluster(WireError):
    """A HELLO comes from a node of another cluster."""

    reason: ClassVar[str] = "wrong_cluster"


class WrongRecipient(WireError):
    """A HELLO (or a message) is addressed to another node."""

    reason: ClassVar[str] = "wrong_recipient"


class UnknownSender(WireError):
    """A HELLO comes from a node that is not a member.

    Also raised when a message claims a sender other than the peer that
    introduced itself on this connection.
    """

    reason: ClassVar[str] = "unknown_sender"


class HandshakeTimeout(WireError):
    """A peer did not finish its HELLO in time (``Options.handshake_timeout``).

    Raised by the node's connection tasks, not by the decoders: a connection
    that sends nothing, or a byte now and then, must not hold a task forever.
    """

    reason: ClassVar[str] = "handshake_timeout"


class FrameTimeout(WireError):
    """A peer began a frame and did not finish it in time (``Options.frame_timeout``).

    Raised by the node's read loop, not by the decoders. Silence *between*
    frames is not an error: followers exchange nothing while a leader is stable.
    """

    reason: ClassVar[str] = "frame_timeout"


class EncodeError(GraftError, ValueError):
    """The caller asked to encode something graft's wire format cannot carry.

    A malformed message (per :func:`graft_core._messages.malformed_reason`),
    a non-message, an int outside msgpack's range (-2**63 .. 2**64-1), a str
    that is not valid UTF-8 (lone surrogates), or a snapshot membership larger
    than any peer decodes (graft_core's ``MAX_ENCODED_BYTES``).
    """


# ---------------------------------------------------------------- framing


def _check_max_frame(max_frame: int) -> None:
    if type(max_frame) is not int or not 0 <= max_frame <= _MAX_U32:
        raise ConfigError(f"max_frame must be an int in 0..2**32-1, not {max_frame!r}")


def _array_header(n: int) -> bytes:
    # msgpack's array headers: fixarray, array 16, array 32.
    if n < 16:
        return bytes((0x90 | n,))
    if n < 2**16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class FrameReader:
    """Reassemble frames from a byte stream (sans-I/O).

    Feed it whatever the stream returns, then take frames until it has none::

        reader = FrameReader(max_frame=DEFAULT_MAX_FRAME)
        while data := await stream.receive_some(65536):
            reader.feed(data)
            while (payload := reader.next_frame()) is not None:
                ...

    Calling :meth:`next_frame` after every :meth:`feed` bounds what is
    buffered to one frame plus one read: an oversized length header is refused
    the moment its four bytes arrive, before any of its payload is kept.
    After :class:`FrameTooLarge` the stream cannot be resynchronised; every
    later call raises it again.

    Args:
        max_frame: the largest payload accepted, in bytes (0 .. 2**32-1).

    Raises:
        graft_core.ConfigError: ``max_frame`` is out of range (a ValueError).
    """

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_frame(max_frame)
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already handed out as frames

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame.

        Non-zero at end of stream means the peer stopped mid-frame.
        """
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes read from the stream.

        Args:
            data: the next bytes of the stream, in order (any chunking).
        """
        self._buf += data

    def next_frame(self, *, max_frame: int | None = None) -> bytes | None:
        """Return the next complete frame's payload, or ``None`` if incomplete.

        Args:
            max_frame: a limit for this frame only (e.g. :data:`MAX_HELLO_FRAME`
                for the first frame of a connection); default ``self.max_frame``.

        Returns:
            The payload without its length prefix, or ``None`` until the
            whole frame has been fed.

        Raises:
            FrameTooLarge: the next frame's header announces more than the limit.
        """
        limit = self.max_frame if max_frame is None else max_frame
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available >= HEADER_SIZE:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length > limit:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {limit}")
            end = pos + HEADER_SIZE + length
            if end <= len(buf):
                with memoryview(buf) as view:
                    payload = bytes(view[pos + HEADER_SIZE : end])
                self._pos = end
                return payload
        # Incomplete: drop what was handed out, once per feed rather than per
        # frame, so many small frames in one read cost linear time.
        if pos:
            del buf[:pos]
            self._pos = 0
        return None


def _frame(parts: list[bytes], size: int, max_frame: int) -> bytes:
    if size > max_frame:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_frame}")
    return b"".join([_LENGTH.pack(size), *parts])


# ---------------------------------------------------------------- HELLO


@attrs.frozen(slots=True)
class Hello:
    """The first frame on a connection: who is talking to whom, in what format.

    Attributes:
        version: the schema version the sender writes.
        cluster_id: the cluster both nodes must belong to.
        src: the sending (dialling) node's id.
        dst: the node the sender meant to reach.
    """

    version: int
    cluster_id: str
    src: str
    dst: str


def encode_hello(cluster_id: str, src: str, dst: str, *, version: int = WIRE_VERSION) -> bytes:
    """Encode a HELLO frame, length prefix included.

    Args:
        cluster_id: the cluster's id.
        src: this node's id.
        dst: the id of the node being dialled.
        version: the schema version to announce (tests use others).

    Returns:
        The complete frame, ready to write.

    Raises:
        EncodeError: an argument has the wrong type or is not encodable.
        FrameTooLarge: the HELLO exceeds :data:`MAX_HELLO_FRAME`.
    """
    if type(version) is not int or not all(type(s) is str for s in (cluster_id, src, dst)):
        raise EncodeError("a HELLO needs an int version and str cluster_id/src/dst")
    payload = _pack([_HELLO_MAGIC, version, cluster_id, src, dst])
    return _frame([payload], len(payload), MAX_HELLO_FRAME)


def decode_hello_untrusted(
    payload: bytes,
    *,
    cluster_id: str,
    me: str,
    members: Collection[str],
    supported_versions: Collection[int] = SUPPORTED_VERSIONS,
    max_frame: int = MAX_HELLO_FRAME,
) -> Hello:
    """Decode and check the HELLO a peer sent (the payload of its first frame).

    Checks, in order: the size, the format, the version, the cluster, that the
    HELLO is addressed to this node, and that the sender is a member other
    than this node (a node dialling itself is a misconfigured address).

    Args:
        payload: the frame's payload (without the length prefix).
        cluster_id: this node's cluster id.
        me: this node's id.
        members: the node ids allowed to connect.
        supported_versions: the schema versions this node reads.
        max_frame: the largest payload accepted.

    Returns:
        The decoded HELLO.

    Raises:
        FrameTooLarge: the payload exceeds ``max_frame``.
        MalformedFrame: the payload is not a HELLO.
        UnsupportedVersion: the version is not in ``supported_versions``.
        WrongCluster: the HELLO names another cluster.
        WrongRecipient: the HELLO is addressed to another node.
        UnknownSender: the sender is not a member, or is this node.
    """
    obj = _unpack_untrusted(payload, max_frame, hello=True)
    if type(obj) is not list or len(obj) < 2 or obj[0] != _HELLO_MAGIC:
        raise MalformedFrame("not a graft HELLO")
    version = obj[1]
    if type(version) is not int:
        raise MalformedFrame("HELLO version is not an int")
    if version not in supported_versions:
        raise UnsupportedVersion(
            f"peer speaks wire version {version}; supported: {sorted(supported_versions)}"
        )
    if len(obj) != 5:
        raise MalformedFrame(f"HELLO has {len(obj)} fields, not 5")
    _, _, peer_cluster, src, dst = obj
    if type(peer_cluster) is not str or type(src) is not str or type(dst) is not str:
        raise MalformedFrame("HELLO cluster_id/src/dst are not str")
    if peer_cluster != cluster_id:
        raise WrongCluster(f"peer is in cluster {peer_cluster!r}, not {cluster_id!r}")
    if dst != me:
        raise WrongRecipient(f"HELLO is addressed to {dst!r}, not {me!r}")
    if src == me or src not in members:
        raise UnknownSender(f"HELLO comes from {src!r}, not a peer of {me!r}")
    return Hello(version, peer_cluster, src, dst)


# ---------------------------------------------------------------- messages

# Wire tags and field order (the module docstring's table). Changing either is
# a new WIRE_VERSION.
_TAGS: dict[type, int] = {
    VoteRequest: 1,
    VoteResponse: 2,
    AppendRequest: 3,
    AppendResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    ForwardProposal: 7,
    ForwardResponse: 8,
    InstallSnapshot: 9,
    InstallSnapshotResponse: 10,
    TimeoutNow: 11,
    ReadIndexRequest: 12,
    ReadIndexResponse: 13,
}
# The fields after [tag, term, src, dst], in wire order (documentation and the
# arity check; the codecs below spell them out for speed).
_FIELDS: dict[int, tuple[str, ...]] = {
    1: ("last_log_index", "last_log_term", "pre_vote", "transfer"),
    2: ("granted", "pre_vote"),
    3: ("prev_log_index", "prev_log_term", "entries", "leader_commit"),
    4: ("success", "index", "hint_index", "hint_term"),
    5: ("leader_commit", "read_seq"),
    6: ("read_seq",),
    7: ("request_id", "data"),
    8: ("request_id", "index", "entry_term", "rejection", "leader_hint"),
    9: ("meta.index", "meta.term", "meta.membership", "offset", "data", "done"),
    10: ("index", "next_offset", "done", "match_index"),
    11: (),
    12: ("request_id",),
    13: ("request_id", "index", "rejection", "leader_hint"),
}
_ARITY: dict[int, int] = {tag: 4 + len(fields) for tag, fields in _FIELDS.items()}

_ENTRY_KIND_TO_WIRE: dict[EntryKind, int] = {
    EntryKind.NORMAL: 0,
    EntryKind.NOOP: 1,
    EntryKind.CONFIG: 2,
}
_ENTRY_KIND_FROM_WIRE: dict[int, EntryKind] = {v: k for k, v in _ENTRY_KIND_TO_WIRE.items()}
_REJECT_TO_WIRE: dict[RejectReason, int] = {
    RejectReason.NOT_LEADER: 0,
    RejectReason.NO_LEADER: 1,
    RejectReason.DROPPED: 2,
    RejectReason.TOO_LARGE: 3,
    RejectReason.TRANSFERRING: 4,
    RejectReason.CHANGE_IN_PROGRESS: 5,
    RejectReason.NOT_READY: 6,
    RejectReason.INVALID_CHANGE: 7,
}
_REJECT_FROM_WIRE: dict[int, RejectReason] = {v: k for k, v in _REJECT_TO_WIRE.items()}


def _to_wire(m: Message) -> list[object]:
    # Trusted input (malformed_reason passed), so no checks here but the one
    # malformed_reason cannot make: the size of a snapshot's membership.
    # Most frequent first.
    if type(m) is AppendRequest:
        kinds = _ENTRY_KIND_TO_WIRE
        entries = [[e.term, kinds[e.kind], e.data] for e in m.entries]
        return [3, m.term, m.src, m.dst, m.prev_log_index, m.prev_log_term, entries,
                m.leader_commit]
    if type(m) is AppendResponse:
        return [4, m.term, m.src, m.dst, m.success, m.index, m.hint_index, m.hint_term]
    if type(m) is Heartbeat:
        return [5, m.term, m.src, m.dst, m.leader_commit, m.read_seq]
    if type(m) is HeartbeatResponse:
        return [6, m.term, m.src, m.dst, m.read_seq]
    if type(m) is VoteRequest:
        return [1, m.term, m.src, m.dst, m.last_log_index, m.last_log_term, m.pre_vote,
                m.transfer]
    if type(m) is VoteResponse:
        return [2, m.term, m.src, m.dst, m.granted, m.pre_vote]
    if type(m) is ForwardProposal:
        return [7, m.term, m.src, m.dst, m.request_id, m.data]
    if type(m) is ForwardResponse:
        return [8, m.term, m.src, m.dst, m.request_id, m.index, m.entry_term,
                _rejection_to_wire(m.rejection), m.leader_hint]
    if type(m) is InstallSnapshot:
        meta = m.meta
        membership = meta.membership.encode()
        if len(membership) > MAX_ENCODED_BYTES:
            # Rule 4: the peer's decoder would refuse it.
            raise EncodeError(f"a membership of {len(membership)} bytes exceeds "
                              f"{MAX_ENCODED_BYTES}: {m!r}")
        return [9, m.term, m.src, m.dst, meta.index, meta.term, membership, m.offset, m.data,
                m.done]
    if type(m) is InstallSnapshotResponse:
        return [10, m.term, m.src, m.dst, m.index, m.next_offset, m.done, m.match_index]
    if type(m) is TimeoutNow:
        return [11, m.term, m.src, m.dst]
    if type(m) is ReadIndexRequest:
        return [12, m.term, m.src, m.dst, m.request_id]
    assert type(m) is ReadIndexResponse
    return [13, m.term, m.src, m.dst, m.request_id, m.index, _rejection_to_wire(m.rejection),
            m.leader_hint]


def _rejection_to_wire(rejection: RejectReason | None) -> int | None:
    return None if rejection is None else _REJECT_TO_WIRE[rejection]


def _pack(obj: object) -> bytes:
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=True)
    except (OverflowError, ValueError, TypeError) as e:  # ints out of range, surrogates
        raise EncodeError(f"not encodable: {e}") from e
    return packed


def _pack_messages(messages: Sequence[Message]) -> list[bytes]:
    packer = msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=True)
    packed: list[bytes] = []
    for m in messages:
        reason = malformed_reason(m)
        if reason is not None:
            raise EncodeError(f"refusing to encode a malformed message ({reason}): {m!r}")
        wire = _to_wire(m)
        try:
            packed.append(packer.pack(wire))
        except (OverflowError, ValueError, TypeError) as e:  # ints out of range, surrogates
            raise EncodeError(f"not encodable: {e}: {m!r}") from e
    return packed


def encode_batch(messages: Sequence[Message], *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode messages as one BATCH frame, length prefix included.

    Args:
        messages: the messages, in sending order (may be empty: a keepalive).
        max_frame: the largest payload the peer accepts.

    Returns:
        The complete frame, ready to write.

    Raises:
        EncodeError: a message is malformed or not encodable (a caller bug).
        FrameTooLarge: the payload would exceed ``max_frame``; use
            :func:`encode_batches` to split.
    """
    parts = _pack_messages(messages)
    parts.insert(0, _array_header(len(parts)))
    return _frame(parts, sum(map(len, parts)), max_frame)


def encode_batches(
    messages: Sequence[Message], *, max_frame: int = DEFAULT_MAX_FRAME
) -> list[bytes]:
    """Encode messages as as few BATCH frames as fit in ``max_frame`` each.

    Messages keep their order, across frames and within them.

    Args:
        messages: the messages, in sending order.
        max_frame: the largest payload the peer accepts.

    Returns:
        Complete frames, ready to write in order (none for no messages).

    Raises:
        EncodeError: a message is malformed or not encodable (a caller bug).
        FrameTooLarge: a single message does not fit in ``max_frame``.
    """
    frames: list[bytes] = []
    group: list[bytes] = []
    size = 0  # of the messages in group, without the array header
    for packed in _pack_messages(messages):
        if group and len(_array_header(len(group) + 1)) + size + len(packed) > max_frame:
            frames.append(_frame([_array_header(len(group)), *group],
                                 len(_array_header(len(group))) + size, max_frame))
            group, size = [], 0
        group.append(packed)
        size += len(packed)
    if group:
        header = _array_header(len(group))
        frames.append(_frame([header, *group], len(header) + size, max_frame))
    return frames


class _ListBudget:
    # msgpack's list_hook, called on every array as it is completed: counts
    # them and aborts the unpack once there are more than a well-formed payload
    # of this size could hold. Every array graft writes, bar the batch and an
    # empty entries list, is a message or an entry of at least 5 bytes (the
    # smallest are TimeoutNow and an empty entry), so a
    # legitimate payload of n bytes holds at most n // 4 + 1 arrays. Without
    # this, a frame of one-byte empty arrays becomes ~64 bytes of Python
    # objects per byte; with it, no frame costs much more than a real one.
    __slots__ = ("left",)

    def __init__(self, size: int) -> None:
        self.left = size // 4 + 1

    def __call__(self, array: list[object]) -> list[object]:
        self.left -= 1
        if self.left < 0:
            raise MalformedFrame("more arrays than a payload of this size can hold")
        return array


def _unpack_untrusted(payload: bytes, max_frame: int, *, hello: bool = False) -> object:
    size = len(payload)
    if size > max_frame:
        raise FrameTooLarge(f"payload of {size} bytes exceeds the limit of {max_frame}")
    try:
        # Every limit is bounded by the payload itself, so no header can make
        # msgpack allocate past what arrived. A future version's HELLO may hold
        # maps, so that it is refused by its version, not as malformed; but it
        # gets the list budget too: a peer that has not introduced itself may
        # not turn 64 KiB of empty arrays into 4 MiB of lists (found by
        # graft_trio._fuzz_frames: 64x the payload without the budget).
        return msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            list_hook=_ListBudget(size),
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2 if hello else 0,
            max_ext_len=0,  # graft writes no exts
        )
    except MalformedFrame:
        raise
    except Exception as e:
        # msgpack documents no closed set: ExtraData, FormatError, StackError,
        # ValueError (truncation, limits), UnicodeDecodeError, TypeError, ...
        raise MalformedFrame(f"not valid msgpack: {type(e).__name__}: {e}") from None


def _fail(tag: int, what: str) -> MalformedFrame:
    return MalformedFrame(f"message type {tag}: {what}")


def _int(tag: int, x: object, name: str) -> int:
    if type(x) is not int:
        raise _fail(tag, f"{name} is not an int")
    return x


def _str(tag: int, x: object, name: str) -> str:
    if type(x) is not str:
        raise _fail(tag, f"{name} is not a str")
    return x


def _bool(tag: int, x: object, name: str) -> bool:
    if type(x) is not bool:
        raise _fail(tag, f"{name} is not a bool")
    return x


def _bytes(tag: int, x: object, name: str) -> bytes:
    if type(x) is not bytes:
        raise _fail(tag, f"{name} is not bytes")
    return x


def _entries(x: object) -> tuple[Entry, ...]:
    if type(x) is not list:
        raise _fail(3, "entries is not an array")
    kinds = _ENTRY_KIND_FROM_WIRE
    out: list[Entry] = []
    for e in x:
        if type(e) is not list or len(e) != 3:
            raise _fail(3, "an entry is not a [term, kind, data] array")
        term, kind, data = e
        if type(term) is not int or type(kind) is not int or type(data) is not bytes:
            raise _fail(3, "an entry's term/kind/data are not int/int/bytes")
        entry_kind = kinds.get(kind)
        if entry_kind is None:
            raise _fail(3, f"unknown entry kind {kind}")
        out.append(Entry(term, data, entry_kind))
    return tuple(out)


def _rejection(tag: int, x: object) -> RejectReason | None:
    if x is None:
        return None
    rejection = _REJECT_FROM_WIRE.get(_int(tag, x, "rejection"))
    if rejection is None:
        raise _fail(tag, f"unknown rejection {x}")
    return rejection


def _leader_hint(tag: int, x: object) -> str | None:
    return None if x is None else _str(tag, x, "leader_hint")


def _membership(tag: int, x: object) -> Membership:
    data = _bytes(tag, x, "membership")
    try:
        return Membership.decode_untrusted(data)
    except ConfigError as e:
        # The reason may quote the peer's whole membership: keep logs short.
        raise _fail(tag, f"membership does not decode: {str(e)[:200]}") from None


def _decode_vote_request(f: list[object]) -> Message:
    return VoteRequest(_int(1, f[1], "term"), _str(1, f[2], "src"), _str(1, f[3], "dst"),
                       _int(1, f[4], "last_log_index"), _int(1, f[5], "last_log_term"),
                       _bool(1, f[6], "pre_vote"), _bool(1, f[7], "transfer"))


def _decode_vote_response(f: list[object]) -> Message:
    return VoteResponse(_int(2, f[1], "term"), _str(2, f[2], "src"), _str(2, f[3], "dst"),
                        _bool(2, f[4], "granted"), _bool(2, f[5], "pre_vote"))


def _decode_append_request(f: list[object]) -> Message:
    return AppendRequest(_int(3, f[1], "term"), _str(3, f[2], "src"), _str(3, f[3], "dst"),
                         _int(3, f[4], "prev_log_index"), _int(3, f[5], "prev_log_term"),
                         _entries(f[6]), _int(3, f[7], "leader_commit"))


def _decode_append_response(f: list[object]) -> Message:
    return AppendResponse(_int(4, f[1], "term"), _str(4, f[2], "src"), _str(4, f[3], "dst"),
                          _bool(4, f[4], "success"), _int(4, f[5], "index"),
                          _int(4, f[6], "hint_index"), _int(4, f[7], "hint_term"))


def _decode_heartbeat(f: list[object]) -> Message:
    return Heartbeat(_int(5, f[1], "term"), _str(5, f[2], "src"), _str(5, f[3], "dst"),
                     _int(5, f[4], "leader_commit"), _int(5, f[5], "read_seq"))


def _decode_heartbeat_response(f: list[object]) -> Message:
    return HeartbeatResponse(_int(6, f[1], "term"), _str(6, f[2], "src"), _str(6, f[3], "dst"),
                             _int(6, f[4], "read_seq"))


def _decode_forward_proposal(f: list[object]) -> Message:
    return ForwardProposal(_int(7, f[1], "term"), _str(7, f[2], "src"), _str(7, f[3], "dst"),
                           _int(7, f[4], "request_id"), _bytes(7, f[5], "data"))


def _decode_forward_response(f: list[object]) -> Message:
    return ForwardResponse(_int(8, f[1], "term"), _str(8, f[2], "src"), _str(8, f[3], "dst"),
                           _int(8, f[4], "request_id"), _int(8, f[5], "index"),
                           _int(8, f[6], "entry_term"), _rejection(8, f[7]),
                           _leader_hint(8, f[8]))


def _decode_install_snapshot(f: list[object]) -> Message:
    term, src, dst = _int(9, f[1], "term"), _str(9, f[2], "src"), _str(9, f[3], "dst")
    index, meta_term = _int(9, f[4], "meta.index"), _int(9, f[5], "meta.term")
    offset, data, done = _int(9, f[7], "offset"), _bytes(9, f[8], "data"), _bool(9, f[9], "done")
    # The membership last: parsing it is the only costly check.
    meta = SnapshotMeta(index, meta_term, _membership(9, f[6]))
    return InstallSnapshot(term, src, dst, meta, offset, data, done)


def _decode_install_snapshot_response(f: list[object]) -> Message:
    return InstallSnapshotResponse(_int(10, f[1], "term"), _str(10, f[2], "src"),
                                   _str(10, f[3], "dst"), _int(10, f[4], "index"),
                                   _int(10, f[5], "next_offset"), _bool(10, f[6], "done"),
                                   _int(10, f[7], "match_index"))


def _decode_timeout_now(f: list[object]) -> Message:
    return TimeoutNow(_int(11, f[1], "term"), _str(11, f[2], "src"), _str(11, f[3], "dst"))


def _decode_read_index_request(f: list[object]) -> Message:
    return ReadIndexRequest(_int(12, f[1], "term"), _str(12, f[2], "src"),
                            _str(12, f[3], "dst"), _int(12, f[4], "request_id"))


def _decode_read_index_response(f: list[object]) -> Message:
    return ReadIndexResponse(_int(13, f[1], "term"), _str(13, f[2], "src"),
                             _str(13, f[3], "dst"), _int(13, f[4], "request_id"),
                             _int(13, f[5], "index"), _rejection(13, f[6]),
                             _leader_hint(13, f[7]))


_DECODERS: dict[int, Callable[[list[object]], Message]] = {
    1: _decode_vote_request,
    2: _decode_vote_response,
    3: _decode_append_request,
    4: _decode_append_response,
    5: _decode_heartbeat,
    6: _decode_heartbeat_response,
    7: _decode_forward_proposal,
    8: _decode_forward_response,
    9: _decode_install_snapshot,
    10: _decode_install_snapshot_response,
    11: _decode_timeout_now,
    12: _decode_read_index_request,
    13: _decode_read_index_response,
}


def decode_batch_untrusted(
    payload: bytes,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    expected_src: str | None = None,
    expected_dst: str | None = None,
) -> list[Message]:
    """Decode the payload of a BATCH frame a peer sent.

    Every message is type-checked field by field and then by
    :func:`graft_core._messages.malformed_reason`; one bad message rejects the
    whole frame (the peer is buggy or hostile; close the connection).

    Args:
        payload: the frame's payload (without the length prefix).
        max_frame: the largest payload accepted.
        expected_src: if given, every message must claim this sender (the
            HELLO's ``src``): a peer may not speak for another node.
        expected_dst: if given, every message must be addressed to this node.

    Returns:
        The messages, in the order they were sent.

    Raises:
        FrameTooLarge: the payload exceeds ``max_frame``.
        MalformedFrame: the payload is not valid msgpack, not a batch, or a
            message is malformed (the reason is in the message).
        UnknownMessageType: a message's type tag is unknown.
        UnknownSender: a message's ``src`` is not ``expected_src``.
        WrongRecipient: a message's ``dst`` is not ``expected_dst``.
    """
    obj = _unpack_untrusted(payload, max_frame)
    if type(obj) is not list:
        raise MalformedFrame("a batch is not an array")
    messages: list[Message] = []
    for item in obj:
        if type(item) is not list or not item:
            raise MalformedFrame("a message is not a non-empty array")
        tag = item[0]
        if type(tag) is not int:
            raise MalformedFrame("a message's type tag is not an int")
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise UnknownMessageType(f"unknown message type {tag}")
        if len(item) != _ARITY[tag]:
            raise _fail(tag, f"{len(item)} fields, not {_ARITY[tag]}")
        m = decoder(item)
        reason = malformed_reason(m)
        if reason is not None:
            raise _fail(tag, reason)
        if expected_src is not None and m.src != expected_src:
            raise UnknownSender(f"message claims src {m.src!r} on {expected_src!r}'s connection")
        if expected_dst is not None and m.dst != expected_dst:
            raise WrongRecipient(f"message for {m.dst!r} reached {expected_dst!r}")
        messages.append(m)
    return messages


# ---------------------------------------------------------------- fuzzing


def fuzz_decode(data: bytes) -> None:
    """Run one input through every decoder; the entry point for long fuzzing.

    Feeds ``data`` to a :class:`FrameReader` (whole, then byte by byte) and
    decodes every frame it yields, plus ``data`` itself, as a HELLO and as a
    BATCH. Only :class:`WireError` is swallowed: anything else is a bug. Every
    batch that decodes is re-encoded and must decode to the same messages.
    For atheris: ``atheris.Setup(sys.argv, fuzz_decode); atheris.Fuzz()``.
    Without it, ``python -m graft_trio._fuzz_frames`` (``make fuzz-frames``)
    runs 10^6 mutated frames through the same decoders, with memory bounds.

    Args:
        data: arbitrary bytes.

    Raises:
        AssertionError: a decoded batch does not survive re-encoding, or the
            reader's output depends on how the input was chunked.
        Exception: anything else a decoder raised that is not a WireError.
    """
    limit = 1 << 16
    frames: list[bytes] = [data]
    for chunked in (False, True):
        reader, got = FrameReader(max_frame=limit), []
        try:
            for chunk in [data[i : i + 1] for i in range(len(data))] if chunked else [data]:
                reader.feed(chunk)
                while (frame := reader.next_frame()) is not None:
                    got.append(frame)
        except WireError:
            pass
        if chunked:
            assert got == frames[1:], "FrameReader output depends on chunking"
        else:
            frames.extend(got)
    for payload in frames:
        with contextlib.suppress(WireError):
            decode_hello_untrusted(payload, cluster_id="c", me="a", members=("a", "b"))
        try:
            messages = decode_batch_untrusted(payload, max_frame=limit)
        except WireError:
            continue
        again = decode_batch_untrusted(encode_batch(messages, max_frame=limit)[HEADER_SIZE:],
                                       max_frame=limit)
        assert again == messages, "a decoded batch does not survive re-encoding"
