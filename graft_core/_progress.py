"""A leader's view of one follower: the small state machine of etcd-io/raft's Progress.

Three states:

* ``PROBE``: the leader does not know where the follower's log agrees with its
  own. It sends one AppendEntries at a time (``probe_sent`` pauses it until a
  reply or heartbeat response arrives) and backs ``next_index`` off on each
  rejection, using the follower's hint (Raft §5.3, fast backtracking).
* ``REPLICATE``: the last AppendEntries succeeded, so the leader streams
  entries optimistically: ``next_index`` advances as it sends, and up to
  ``max_inflight`` messages may be unacknowledged (pipelining). A rejection
  sends the follower back to ``PROBE`` from ``match_index + 1``.
* ``SNAPSHOT``: the follower needs entries the leader has compacted away, so
  it is sent the snapshot at ``snap_index`` (Raft §7), one chunk at a time;
  ``snap_offset`` is how many bytes the follower acknowledged and
  ``probe_sent`` means a chunk is in flight. A lost chunk is resent from
  ``snap_offset`` when the follower next answers a heartbeat, so a transfer
  resumes rather than restarts. Once the follower has it: ``PROBE`` from
  ``snap_index + 1``.

Invariant: ``match_index < next_index``; in REPLICATE, ``inflight`` holds the
last index of each unacknowledged AppendEntries, ascending, each one
``> match_index`` and ``< next_index``; in PROBE it is empty.

Every function here is pure and returns a new ``Progress``; the whole state
machine lives in this file.
"""

from __future__ import annotations

import enum

import attrs


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


@attrs.frozen(slots=True)
class Progress:
    """Replication progress of one follower, as the leader sees it."""

    match_index: int
    next_index: int
    state: ProgressState = PROBE
    probe_sent: bool = False
    inflight: tuple[int, ...] = ()
    #: Heard from since the last check-quorum round (thesis §6.2).
    recent_active: bool = False
    #: SNAPSHOT only: the snapshot being sent, and the bytes acknowledged.
    snap_index: int = 0
    snap_offset: int = 0


def initial(last_index: int) -> Progress:
    """A new leader knows nothing: probe from just after its last entry (Raft §5.3)."""
    return Progress(0, last_index + 1)


def is_paused(pr: Progress, max_inflight: int) -> bool:
    if pr.state is REPLICATE:
        return len(pr.inflight) >= max_inflight
    return pr.probe_sent


def become_snapshot(pr: Progress, snap_index: int) -> Progress:
    """The follower needs entries before our log's first: send snapshot ``snap_index``."""
    return Progress(
        pr.match_index, pr.next_index, SNAPSHOT, False, (), pr.recent_active, snap_index, 0
    )


def chunk_sent(pr: Progress) -> Progress:
    return attrs.evolve(pr, probe_sent=True)


def chunk_acked(pr: Progress, snap_index: int, next_offset: int) -> Progress | None:
    """The follower holds ``next_offset`` bytes of ``snap_index``; ``None`` if stale."""
    if pr.state is not SNAPSHOT or snap_index != pr.snap_index:
        return None
    return attrs.evolve(pr, probe_sent=False, snap_offset=next_offset, recent_active=True)


def snapshot_done(pr: Progress, match_index: int) -> Progress:
    """The follower has everything up to ``match_index``: probe from just after it."""
    match = max(pr.match_index, match_index)
    return Progress(match, match + 1, PROBE, False, (), True)


def sent(pr: Progress, last_sent: int, n_entries: int) -> Progress:
    """Record an AppendEntries whose last entry is ``last_sent``."""
    if pr.state is PROBE:
        return Progress(pr.match_index, pr.next_index, PROBE, True, (), pr.recent_active)
    if n_entries == 0:
        return pr
    return Progress(
        pr.match_index, last_sent + 1, REPLICATE, False, (*pr.inflight, last_sent),
        pr.recent_active,
    )


def acked(pr: Progress, index: int) -> Progress | None:
    """A success reply covering up to ``index``; ``None`` if it taught us nothing."""
    if index <= pr.match_index:
        if pr.state is PROBE and pr.probe_sent:
            # A stale success still proves the follower is responsive.
            return Progress(pr.match_index, pr.next_index, PROBE, False, (), True)
        return None
    if pr.state is SNAPSHOT:
        if index < pr.snap_index:
            # A late answer to an AppendEntries sent before the snapshot began.
            return attrs.evolve(pr, match_index=index, recent_active=True)
        # It caught up past the snapshot some other way: stop sending it.
        return Progress(index, index + 1, REPLICATE, False, (), True)
    if pr.state is PROBE:
        # Found the point of agreement: start streaming (etcd's BecomeReplicate).
        return Progress(index, index + 1, REPLICATE, False, (), True)
    inflight = pr.inflight
    k = 0
    while k < len(inflight) and inflight[k] <= index:
        k += 1
    return Progress(
        index, max(pr.next_index, index + 1), REPLICATE, False, inflight[k:], True
    )


def rejected(pr: Progress, rejected_index: int, match_hint: int) -> Progress | None:
    """A rejection of the AppendEntries whose ``prev_log_index`` was ``rejected_index``.

    ``match_hint`` is the leader's best guess of the last agreeing index (from the
    follower's hint). Returns ``None`` for a stale rejection (an old message
    overtaken by events), which must be ignored.
    """
    if pr.state is SNAPSHOT:
        return None  # a late rejection of an append sent before the snapshot
    if pr.state is REPLICATE:
        if rejected_index <= pr.match_index:
            return None
        # Something was lost or reordered: fall back to probing (etcd
        # BecomeProbe) -- from just after where the follower's log agrees, not
        # from match_index + 1: over a reordering network the follower is
        # usually only missing a message still in flight, and resending all it
        # already holds on every overtaken message would multiply the traffic.
        nxt = max(min(rejected_index, match_hint + 1), pr.match_index + 1)
        return Progress(pr.match_index, nxt, PROBE, False, (), True)
    if pr.next_index - 1 != rejected_index:
        return None
    nxt = max(min(rejected_index, match_hint + 1), pr.match_index + 1)
    return Progress(pr.match_index, nxt, PROBE, False, (), True)


def heard_from(pr: Progress, max_inflight: int) -> Progress:
    """A heartbeat reply: the follower is alive; unpause a probe, free a stuck slot.

    Freeing the oldest in-flight slot when the window is full lets a leader whose
    AppendEntries were all lost make progress again (etcd does the same).
    """
    inflight = pr.inflight
    if pr.state is REPLICATE and len(inflight) >= max_inflight:
        inflight = inflight[1:]
    if pr.recent_active and not pr.probe_sent and inflight is pr.inflight:
        return pr
    return Progress(
        pr.match_index, pr.next_index, pr.state, False, inflight, True, pr.snap_index,
        pr.snap_offset,
    )


def mark_inactive(pr: Progress) -> Progress:
    if not pr.recent_active:
        return pr
    return attrs.evolve(pr, recent_active=False)
