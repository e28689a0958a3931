"""The validated configuration of one node."""

from __future__ import annotations

import attrs

from graft_core._errors import ConfigError
from graft_core._rand import stable_key


def _positive(name: str, value: object) -> int:
    if type(value) is not int or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


@attrs.frozen(slots=True)
class Config:
    """Configuration of one graft node.

    Time is logical: every duration below is in the same unit as the ``now``
    of :class:`~graft_core.Tick` (the trio shell uses milliseconds, the
    simulator virtual milliseconds). The defaults match a LAN deployment:
    heartbeats every 100, elections after 1000-2000 without a leader.

    Args:
        node_id: this node's id; must appear in ``voters``.
        voters: the ids of every voting member, this node included.
        seed: seeds this node's election-timeout draws (see ``_rand``).
        heartbeat_interval: how often a leader sends heartbeats.
        election_timeout: the minimum election timeout.
        election_timeout_max: the maximum (inclusive) randomized election
            timeout; ``None`` means ``2 * election_timeout`` (Raft §5.2 uses a
            range such as 150-300 ms). Equal to ``election_timeout`` disables
            randomization (Figure 16's "150-150" line).
        pre_vote: run a pre-vote round before a real election (thesis §9.6).
        check_quorum: a leader steps down when it has not heard from a
            quorum for an election timeout, and followers that heard from a
            leader within the minimum election timeout ignore vote requests
            (thesis §6.2, §4.2.3).
        forward_proposals: followers forward proposals to the leader (the
            original proposal's "append from any node").
        max_entries_per_message: batch bound, in entries, of one AppendEntries.
        max_bytes_per_message: batch bound, in payload bytes, of one
            AppendEntries (a single larger entry is still sent alone).
        max_inflight: AppendEntries messages in flight per follower while
            replicating (etcd's MaxInflightMsgs).
        max_proposal_bytes: the largest payload accepted by ``Propose``.
        max_uncommitted_entries: a leader drops new proposals while this many
            entries are appended but not committed (flow control).

    Raises:
        ConfigError: on any invalid field.
    """

    node_id: str
    voters: tuple[str, ...]
    seed: int = 0
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    election_timeout_max: int | None = None
    pre_vote: bool = True
    check_quorum: bool = True
    forward_proposals: bool = True
    max_entries_per_message: int = 64
    max_bytes_per_message: int = 1 << 20
    max_inflight: int = 256
    max_proposal_bytes: int = 1 << 20
    max_uncommitted_entries: int = 100_000
    # Derived, filled in by __attrs_post_init__.
    peers: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    node_key: int = attrs.field(init=False, eq=False, repr=False)
    timeout_max: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ConfigError(f"node_id must be a non-empty str, got {self.node_id!r}")
        if not isinstance(self.voters, tuple):
            raise ConfigError(f"voters must be a tuple of str, got {type(self.voters).__name__}")
        if not self.voters:
            raise ConfigError("voters is empty: a cluster needs at least one voter")
        for v in self.voters:
            if not isinstance(v, str) or not v:
                raise ConfigError(f"every voter id must be a non-empty str, got {v!r}")
        if len(set(self.voters)) != len(self.voters):
            dupes = sorted({v for v in self.voters if self.voters.count(v) > 1})
            raise ConfigError(f"duplicate voter ids: {dupes}")
        if self.node_id not in self.voters:
            raise ConfigError(f"node_id {self.node_id!r} is not among voters {self.voters}")
        if type(self.seed) is not int:
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        for name in (
            "heartbeat_interval",
            "election_timeout",
            "max_entries_per_message",
            "max_bytes_per_message",
            "max_inflight",
            "max_proposal_bytes",
            "max_uncommitted_entries",
        ):
            _positive(name, getattr(self, name))
        if self.heartbeat_interval >= self.election_timeout:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be smaller than "
                f"election_timeout ({self.election_timeout})"
            )
        tmax = self.election_timeout_max
        if tmax is None:
            tmax = 2 * self.election_timeout
        elif _positive("election_timeout_max", tmax) < self.election_timeout:
            raise ConfigError(
                f"election_timeout_max ({tmax}) is below election_timeout "
                f"({self.election_timeout})"
            )
        for flag in ("pre_vote", "check_quorum", "forward_proposals"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be a bool")
        # Peers in sorted order: every loop over them is deterministic.
        peers = tuple(sorted(v for v in self.voters if v != self.node_id))
        object.__setattr__(self, "peers", peers)
        object.__setattr__(self, "node_key", stable_key(self.node_id))
        object.__setattr__(self, "timeout_max", tmax)

    @property
    def quorum(self) -> int:
        """The size of a majority of the voters (Raft §5.2)."""
        return len(self.voters) // 2 + 1
