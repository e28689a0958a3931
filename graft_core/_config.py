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
        node_id: this node's id; must appear in ``voters`` unless ``joining``.
        voters: the cluster's initial voters (its bootstrap configuration).
            Configuration entries in the log and snapshots override it
            (thesis §4.1); a restarted node uses the latest one it stored.
        joining: this node is not in the bootstrap configuration and waits to
            be added by a membership change (it never campaigns until it is a
            voter, and accepts the log from whichever leader contacts it).
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
        snapshot_trailing_entries: after a snapshot, keep this many entries
            before it in memory so that slightly slow followers catch up from
            the log rather than by a whole snapshot (etcd keeps 5,000).
        snapshot_chunk_bytes: the largest InstallSnapshot chunk (bounds memory
            on both sides of a transfer).
        lease_reads: serve ``ReadIndex`` from the leader lease when it is valid
            (no heartbeat round); requires ``check_quorum`` (thesis §6.4.1).
        lease_drift_percent: the lease is shortened by this share of the
            election timeout to allow for clock-rate drift between nodes.

    Raises:
        ConfigError: on any invalid field.
    """

    node_id: str
    voters: tuple[str, ...]
    joining: bool = False
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
    snapshot_trailing_entries: int = 1024
    snapshot_chunk_bytes: int = 1 << 20
    lease_reads: bool = False
    lease_drift_percent: int = 10
    # Derived, filled in by __attrs_post_init__.
    node_key: int = attrs.field(init=False, eq=False, repr=False)
    timeout_max: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id or not self.node_id.isprintable():
            raise ConfigError(f"node_id must be a non-empty printable str, got {self.node_id!r}")
        if not isinstance(self.voters, tuple):
            raise ConfigError(f"voters must be a tuple of str, got {type(self.voters).__name__}")
        if not self.voters:
            raise ConfigError("voters is empty: a cluster needs at least one voter")
        for v in self.voters:
            if not isinstance(v, str) or not v or not v.isprintable():
                raise ConfigError(f"every voter id must be a non-empty printable str, got {v!r}")
        if len(set(self.voters)) != len(self.voters):
            dupes = sorted({v for v in self.voters if self.voters.count(v) > 1})
            raise ConfigError(f"duplicate voter ids: {dupes}")
        if not isinstance(self.joining, bool):
            raise ConfigError("joining must be a bool")
        if (self.node_id in self.voters) == self.joining:
            if self.joining:
                raise ConfigError(f"joining node {self.node_id!r} is already a voter")
            raise ConfigError(
                f"node_id {self.node_id!r} is not among voters {self.voters} "
                "(pass joining=True for a node that waits to be added)"
            )
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
            "snapshot_chunk_bytes",
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
        for flag in ("pre_vote", "check_quorum", "forward_proposals", "lease_reads"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be a bool")
        trailing = self.snapshot_trailing_entries
        if type(trailing) is not int or trailing < 0:
            raise ConfigError(f"snapshot_trailing_entries must be an int >= 0, got {trailing!r}")
        drift = self.lease_drift_percent
        if type(drift) is not int or not 0 <= drift < 100:
            raise ConfigError(f"lease_drift_percent must be an int in 0..99, got {drift!r}")
        if self.lease_reads and not self.check_quorum:
            # Without check-quorum a deposed leader never learns it lost its
            # majority, so a lease would let it serve stale reads (§6.4.1).
            raise ConfigError("lease_reads requires check_quorum")
        object.__setattr__(self, "node_key", stable_key(self.node_id))
        object.__setattr__(self, "timeout_max", tmax)

    @property
    def lease_duration(self) -> int:
        """How long a quorum's heartbeat acknowledgements keep a leader's lease."""
        return self.election_timeout * (100 - self.lease_drift_percent) // 100
