"""Cluster membership: who votes, who only listens, and joint configurations.

A :class:`Membership` is a value. It lives in the log as the payload of a
``CONFIG`` entry and in every snapshot's metadata; a node always uses the
*latest* configuration in its log, committed or not (thesis §4.1) -- so a
truncated configuration entry rolls the membership back with it.

Joint consensus (thesis §4.3): while ``outgoing`` is non-empty the cluster is
in the joint configuration C_old,new. Elections and commitment then need a
majority of ``voters`` (C_new) *and* a majority of ``outgoing`` (C_old). Once
the joint entry is committed, the leader appends the final configuration by
itself (etcd's ConfChangeV2 "auto leave").

Learners (etcd's learners, thesis §4.2.1's "non-voting members") receive the
log but never vote, campaign or count toward a quorum. A voter being demoted
may be a learner in C_new while still a voter in C_old, so ``learners`` may
overlap ``outgoing`` but never ``voters``.

Invariant: every tuple is sorted and free of duplicates, so two equal
memberships encode to equal bytes and every loop over them is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import attrs

from graft_core._errors import ConfigError

#: Upper bound on an encoded membership (untrusted input is bounded first).
MAX_ENCODED_BYTES = 1 << 20
#: Upper bound on the length of a node id or an address.
MAX_NAME_BYTES = 1024


def _ids(name: str, value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise ConfigError(f"{name} must be a collection of node ids, not a single string")
    try:
        out = tuple(sorted(value))
    except TypeError:
        raise ConfigError(f"{name}: node ids must be str, got {value!r}") from None
    for v in out:
        # Ids end up in logs, file names and certificates: printable only
        # (no NUL, no newline), so a peer cannot smuggle one in a config entry.
        if type(v) is not str or not v or len(v) > MAX_NAME_BYTES or not v.isprintable():
            raise ConfigError(
                f"{name}: every node id must be a non-empty printable str, got {v!r}"
            )
    if len(set(out)) != len(out):
        raise ConfigError(f"{name}: duplicate node ids in {out}")
    return out


def _voters(v: Iterable[str]) -> tuple[str, ...]:
    return _ids("voters", v)


def _outgoing(v: Iterable[str]) -> tuple[str, ...]:
    return _ids("outgoing", v)


def _learners(v: Iterable[str]) -> tuple[str, ...]:
    return _ids("learners", v)


def _pairs(v: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(sorted(v))
    except TypeError:
        raise ConfigError(f"addresses must be (node_id, address) str pairs, got {v!r}") from None


@attrs.frozen(slots=True)
class Membership:
    """One cluster configuration.

    Args:
        voters: the voting members (C_new while joint).
        outgoing: the previous voters while in a joint configuration, else ``()``.
        learners: non-voting members that receive the log.
        addresses: ``(node_id, address)`` pairs the core carries but never
            reads -- the shell uses them to reach members added at run time.

    Raises:
        ConfigError: a field is not a collection of non-empty ids, ``voters``
            is empty, or a learner is also in ``voters``.
    """

    voters: tuple[str, ...] = attrs.field(converter=_voters)
    outgoing: tuple[str, ...] = attrs.field(default=(), converter=_outgoing)
    learners: tuple[str, ...] = attrs.field(default=(), converter=_learners)
    addresses: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    # Derived: every member, sorted.
    members: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.voters:
            raise ConfigError("a configuration needs at least one voter")
        both = set(self.voters) & set(self.learners)
        if both:
            raise ConfigError(f"{sorted(both)} cannot be both voter and learner")
        seen: set[str] = set()
        for pair in self.addresses:
            if (
                type(pair) is not tuple
                or len(pair) != 2
                or not all(type(x) is str and 0 < len(x) <= MAX_NAME_BYTES for x in pair)
            ):
                raise ConfigError(f"addresses must be (node_id, address) str pairs, got {pair!r}")
            if pair[0] in seen:
                raise ConfigError(f"two addresses for {pair[0]!r}")
            seen.add(pair[0])
        members = tuple(sorted(set(self.voters) | set(self.outgoing) | set(self.learners)))
        object.__setattr__(self, "members", members)

    @property
    def is_joint(self) -> bool:
        return bool(self.outgoing)

    def is_voter(self, node: str) -> bool:
        """A voter of either half of a joint configuration may vote and campaign."""
        return node in self.voters or node in self.outgoing

    def is_member(self, node: str) -> bool:
        return node in self.members

    def address_of(self, node: str) -> str | None:
        for n, a in self.addresses:
            if n == node:
                return a
        return None

    def leave_joint(self) -> Membership:
        """C_new: the configuration the leader appends once C_old,new is committed."""
        return Membership(self.voters, (), self.learners, self._addresses_for(self.voters,
                                                                                 self.learners))

    def _addresses_for(
        self, voters: Iterable[str], learners: Iterable[str]
    ) -> tuple[tuple[str, str], ...]:
        keep = set(voters) | set(learners)
        return tuple(p for p in self.addresses if p[0] in keep)

    # ------------------------------------------------------------ encoding

    def encode(self) -> bytes:
        """Canonical bytes (equal memberships give equal bytes)."""
        doc = {
            "voters": list(self.voters),
            "outgoing": list(self.outgoing),
            "learners": list(self.learners),
            "addresses": [list(p) for p in self.addresses],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode_untrusted(cls, data: object) -> Membership:
        """Parse bytes from a peer or from disk.

        Raises:
            ConfigError: anything that is not a valid encoded membership.
        """
        if type(data) is not bytes or len(data) > MAX_ENCODED_BYTES:
            raise ConfigError("an encoded membership must be bytes of bounded size")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"membership is not valid JSON: {e}") from None
        if type(doc) is not dict or set(doc) != {"voters", "outgoing", "learners", "addresses"}:
            raise ConfigError("membership must be an object with exactly voters, outgoing, "
                              "learners and addresses")
        for key in ("voters", "outgoing", "learners", "addresses"):
            if type(doc[key]) is not list:
                raise ConfigError(f"membership {key} must be a list")
        addresses = []
        for pair in doc["addresses"]:
            if type(pair) is not list or len(pair) != 2:
                raise ConfigError("membership addresses must be [node_id, address] pairs")
            addresses.append((pair[0], pair[1]))
        m = cls(doc["voters"], doc["outgoing"], doc["learners"], addresses)
        if m.encode() != data:
            # Only the canonical form is accepted, so bytes <-> value is one to one.
            raise ConfigError("membership is not in canonical form")
        return m


@attrs.frozen(slots=True)
class ChangeOp:
    """One step of a membership change.

    ``kind`` is ``"add_voter"`` (add, or promote a learner), ``"add_learner"``
    (add, or demote a voter) or ``"remove"``. ``address`` is carried to every
    node for the shell (see :attr:`Membership.addresses`).
    """

    kind: str
    node: str
    address: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("add_voter", "add_learner", "remove"):
            raise ConfigError(f"unknown membership change {self.kind!r}")
        if type(self.node) is not str or not self.node or len(self.node) > MAX_NAME_BYTES:
            raise ConfigError(f"node must be a non-empty str, got {self.node!r}")
        if self.address is not None and (
            type(self.address) is not str or not 0 < len(self.address) <= MAX_NAME_BYTES
        ):
            raise ConfigError(f"address must be a non-empty str, got {self.address!r}")


def apply_changes(current: Membership, ops: tuple[ChangeOp, ...]) -> tuple[Membership, str | None]:
    """The configuration ``ops`` ask for, and whether it needs joint consensus.

    Returns ``(target, problem)``. ``problem`` is ``None`` on success, else why
    the change is invalid in ``current`` (which must not be joint). ``target``
    is C_new if the change moves at most one voter (thesis §4.1's single-server
    change), else the joint C_old,new.
    """
    voters = set(current.voters)
    learners = set(current.learners)
    addresses = dict(current.addresses)
    for op in ops:
        if op.kind == "add_voter":
            if op.node in voters:
                return current, f"{op.node!r} is already a voter"
            learners.discard(op.node)
            voters.add(op.node)
        elif op.kind == "add_learner":
            if op.node in learners:
                return current, f"{op.node!r} is already a learner"
            voters.discard(op.node)
            learners.add(op.node)
        else:
            if op.node not in voters and op.node not in learners:
                return current, f"{op.node!r} is not a member"
            voters.discard(op.node)
            learners.discard(op.node)
            addresses.pop(op.node, None)
        if op.address is not None:
            addresses[op.node] = op.address
    if not voters:
        return current, "a change may not remove every voter"
    if voters == set(current.voters) and learners == set(current.learners) and (
        tuple(sorted(addresses.items())) == current.addresses
    ):
        return current, "the change leaves the configuration as it is"
    pairs = tuple(sorted(addresses.items()))
    if len(voters ^ set(current.voters)) <= 1:
        return Membership(tuple(voters), (), tuple(learners), pairs), None
    # A learner in C_new that is still a voter in C_old stays a voter until the
    # joint configuration is left (etcd's LearnersNext).
    return Membership(tuple(voters), current.voters, tuple(learners), pairs), None
