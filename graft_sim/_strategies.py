"""Hypothesis strategies for simulator runs: fault mixes, fault schedules, whole options.

For property-testing graft -- or a state machine of your own on top of it --
with the deterministic simulator. Every value drawn is plain data
(:class:`~graft_sim.FaultMix`, a tuple of :class:`~graft_sim.Fault`,
:class:`~graft_sim.SimOptions`), so a failure Hypothesis shrinks prints as a
``SimOptions(...)`` you can paste into ``Simulation(...).run()`` to replay it
exactly::

    from hypothesis import given, settings
    from graft_sim import Simulation, sim_options

    @settings(max_examples=50, deadline=None)
    @given(sim_options(nodes=3, duration_ms=3_000))
    def test_raft_survives_faults(options):
        Simulation(options).run()  # raises on any safety or liveness violation

Shrinking goes toward the boring: no network faults (:meth:`FaultMix.calm`'s
values), fewer faults in the schedule, simpler kinds (see
:data:`SIMPLEST_FIRST`), earlier times, lower node numbers, seed 0, no client
workload, no spare servers, no snapshots (or one-chunk ones), gets through the
log. A shrunk failure is therefore a short list of the faults that matter.

This module needs Hypothesis (``pip install graft[test]``); ``graft_sim``
itself does not import it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from graft_sim._faults import FAULT_KINDS, Fault, FaultMix
from graft_sim._world import READ_MODES, SimOptions

T = TypeVar("T")

_PREFERRED = (
    "heal",
    "isolate",
    "crash",
    "restart",
    "partition",
    "one_way",
    "isolate_leader",
    "pause",
    "bridge",
    "transfer",
    "membership",
)
#: Every fault kind, in the order the shrinker prefers them: a fault that does
#: not matter shrinks toward ``heal`` (harmless) before it is deleted, and one
#: that does toward the easiest to read.
SIMPLEST_FIRST: tuple[str, ...] = (
    *(k for k in _PREFERRED if k in FAULT_KINDS),
    *(k for k in FAULT_KINDS if k not in _PREFERRED),
)

_SEEDS = st.integers(0, 2**32 - 1)
_CALM = FaultMix.calm()
_DEFAULTS = SimOptions()


@attrs.frozen
class WorkloadOptions:
    """The client workload knobs of :class:`~graft_sim.SimOptions`, as one value.

    The fields mean what the same-named fields of ``SimOptions`` mean;
    ``max_ops=0`` turns the workload (and the linearizability check) off.
    """

    clients: int = 3
    keys: int = 3
    op_interval_ms: int = 100
    client_timeout_ms: int = 3000
    max_ops: int = 400

    @classmethod
    def none(cls) -> WorkloadOptions:
        """No clients: the run checks the Raft properties and liveness only."""
        return cls(max_ops=0)


def _just(value: T | SearchStrategy[T]) -> SearchStrategy[T]:
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _off_or(lo: int, hi: int) -> SearchStrategy[int]:
    # Swarm testing (Groce et al., ISSTA 2012): each fault is off about half
    # the time, so rare combinations come up; off is where it shrinks to.
    return st.one_of(st.just(0), _spread(lo, hi))


@functools.cache
def _spread(lo: int, hi: int) -> SearchStrategy[int]:
    """Integers in ``[lo, hi]``, about evenly spread, shrinking toward ``lo``.

    ``st.integers`` favours small values heavily (half of ``integers(0, 9999)``
    land below 1000), which would put most faults before the first election.
    A slot out of 32 then an offset inside it spreads them over the whole run.
    """
    slots = min(32, hi - lo + 1)
    width = -(-(hi - lo + 1) // slots)
    return st.builds(
        lambda slot, offset: min(hi, lo + slot * width + offset),
        st.integers(0, slots - 1),
        st.integers(0, width - 1),
    )


def fault_mixes(*, schedule_rates: bool = True) -> SearchStrategy[FaultMix]:
    """Network, disk and clock fault rates, each off or at a random rate.

    Ranges follow :meth:`FaultMix.draw`: loss up to 30%, duplication up to
    10%, base latency 0.05-15 ms, a long tail of up to 1.5 s on up to 10% of
    messages, clocks up to 30% fast or slow, disk writes of 0.05-20 ms.
    Shrinks toward :meth:`FaultMix.calm`.

    Args:
        schedule_rates: also draw ``partitions_per_min``, ``crashes_per_min``,
            ``pauses_per_min``, ``membership_per_min`` and
            ``transfers_per_min``. They only matter when the run draws its
            own schedule (``SimOptions.schedule is None``); :func:`sim_options`
            passes an explicit schedule and turns them off.

    Returns:
        A strategy for :class:`~graft_sim.FaultMix` values.

    Example::

        @given(fault_mixes(), st.integers(0, 2**32 - 1))
        def test_swarm(mix, seed):
            Simulation(SimOptions(seed=seed, nodes=3, faults=mix, max_ops=0)).run()
    """

    @st.composite
    def mixes(draw: st.DrawFn) -> FaultMix:
        base_min = draw(st.sampled_from((_CALM.base_min_us, 50, 500, 1_000)))
        base_max = draw(st.sampled_from((_CALM.base_max_us, 5_000, 15_000)))
        tail = draw(_off_or(1, 100_000))
        disk_min = draw(st.sampled_from((_CALM.disk_min_us, 50, 300)))
        disk_max = draw(st.sampled_from((_CALM.disk_max_us, 5_000, 20_000)))
        return FaultMix(
            loss_ppm=draw(_off_or(1, 300_000)),
            duplicate_ppm=draw(_off_or(1, 100_000)),
            base_min_us=base_min,
            base_max_us=max(base_min, base_max),
            tail_ppm=tail,
            tail_max_us=draw(_spread(1_000, 1_500_000)) if tail else 0,
            partitions_per_min=draw(_off_or(1, 90)) if schedule_rates else 0,
            crashes_per_min=draw(_off_or(1, 45)) if schedule_rates else 0,
            pauses_per_min=draw(_off_or(1, 45)) if schedule_rates else 0,
            skew_ppm=draw(_off_or(1, 300_000)),
            disk_min_us=disk_min,
            disk_max_us=max(disk_min, disk_max),
            membership_per_min=draw(_off_or(1, 120)) if schedule_rates else 0,
            transfers_per_min=draw(_off_or(1, 60)) if schedule_rates else 0,
        )

    return mixes()


def fault_schedules(
    nodes: int,
    duration_ms: int,
    *,
    max_faults: int = 8,
    kinds: Sequence[str] = SIMPLEST_FIRST,
    election_ms: int = 1000,
) -> SearchStrategy[tuple[Fault, ...]]:
    """Explicit schedules of node and partition faults, sorted by time.

    Every fault is valid for a cluster of ``nodes`` (node numbers in range,
    partitions with two non-empty sides, a bridge with a node on each side)
    and happens in ``[0, duration_ms)``. Crashed nodes need not restart nor
    partitions heal: the simulator heals everything at ``duration_ms`` and
    then checks liveness. A ``membership`` fault names no node (the simulator
    draws a valid change at the leader); a ``transfer`` names its target, or
    none for "the most up-to-date voter".

    Args:
        nodes: the number of simulated servers the schedule is for (spare
            ones included).
        duration_ms: faults happen before this virtual time.
        max_faults: the longest schedule drawn.
        kinds: the fault kinds to use (see ``graft_sim._faults.FAULT_KINDS``);
            earlier ones are what the shrinker prefers. Kinds that need more
            nodes than there are (``one_way``, ``partition`` need 2,
            ``bridge`` 3) are left out.
        election_ms: the run's minimum election timeout; pauses last up to
            three of them.

    Returns:
        A strategy for tuples of :class:`~graft_sim.Fault`, shrinking toward
        fewer faults, simpler kinds, earlier times and lower node numbers.

    Raises:
        ValueError: on a kind that is not a fault kind, or bad sizes.

    Example::

        @given(fault_schedules(nodes=5, duration_ms=10_000, kinds=("crash", "restart")))
        def test_crashes_only(schedule):
            Simulation(SimOptions(nodes=5, schedule=schedule, max_ops=0)).run()
    """
    if nodes < 1 or duration_ms < 0 or max_faults < 0 or election_ms < 1:
        raise ValueError("need nodes >= 1, duration_ms >= 0, max_faults >= 0, election_ms >= 1")
    for k in kinds:
        if k not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {k!r}; expected one of {FAULT_KINDS}")
    return _schedules(nodes, duration_ms, max_faults, tuple(dict.fromkeys(kinds)), election_ms)


# Cached: sim_options draws a schedule strategy per example, and building and
# validating a fresh one costs more than drawing from it.
@functools.lru_cache(maxsize=256)
def _schedules(
    nodes: int, duration_ms: int, max_faults: int, kinds: tuple[str, ...], election_ms: int
) -> SearchStrategy[tuple[Fault, ...]]:
    if duration_ms == 0 or max_faults == 0:
        return st.just(())
    node = st.integers(0, nodes - 1)
    at = _spread(0, duration_ms - 1)
    one = node.map(lambda i: (i,))

    def bridge(order: list[int], side: int) -> tuple[int, ...]:
        return (order[0], *sorted(order[1 : 1 + side]))

    per_kind: dict[str, SearchStrategy[Fault]] = {
        "heal": st.builds(Fault, at, st.just("heal")),
        "isolate_leader": st.builds(Fault, at, st.just("isolate_leader")),
        "isolate": st.builds(Fault, at, st.just("isolate"), one),
        "crash": st.builds(Fault, at, st.just("crash"), one),
        "restart": st.builds(Fault, at, st.just("restart"), one),
        "pause": st.builds(Fault, at, st.just("pause"), one, _spread(1, 3 * election_ms)),
        "membership": st.builds(Fault, at, st.just("membership")),
        "transfer": st.builds(
            Fault, at, st.just("transfer"), st.one_of(st.just(()), one)
        ),
    }
    if nodes >= 2:
        per_kind["partition"] = st.builds(
            Fault,
            at,
            st.just("partition"),
            st.lists(node, min_size=1, max_size=nodes - 1, unique=True).map(
                lambda side: tuple(sorted(side))
            ),
        )
        per_kind["one_way"] = st.builds(
            Fault,
            at,
            st.just("one_way"),
            st.lists(node, min_size=2, max_size=2, unique=True).map(tuple),
        )
    if nodes >= 3:
        per_kind["bridge"] = st.builds(
            Fault,
            at,
            st.just("bridge"),
            st.builds(bridge, st.permutations(range(nodes)), st.integers(1, nodes - 2)),
        )
    usable = [per_kind[k] for k in kinds if k in per_kind]
    if not usable:
        return st.just(())
    # The same order draw_schedule uses, so a schedule reads like a drawn one.
    return st.lists(st.one_of(usable), max_size=max_faults).map(
        lambda faults: tuple(sorted(faults, key=lambda f: (f.at, f.kind, f.nodes, f.duration)))
    )


def workloads(*, max_ops: int = 200) -> SearchStrategy[WorkloadOptions]:
    """Client workloads: 1-4 clients on 1-3 keys, an operation every 5-200 ms.

    Args:
        max_ops: the most operations a run may issue (each is checked for
            linearizability at the end; the check grows with the history).

    Returns:
        A strategy for :class:`WorkloadOptions`, shrinking toward no
        workload at all (``max_ops=0``), then toward one client on one key.

    Example::

        @given(sim_options(nodes=3, workload=workloads(max_ops=100)))
        def test_kv_is_linearizable(options):
            Simulation(options).run()
    """
    if max_ops < 0:
        raise ValueError("max_ops must be >= 0")
    return st.builds(
        WorkloadOptions,
        clients=st.integers(1, 4),
        keys=st.integers(1, 3),
        op_interval_ms=st.integers(5, 200),
        client_timeout_ms=st.integers(500, 5_000),
        max_ops=st.integers(0, max_ops),
    )


def sim_options(
    *,
    nodes: int | SearchStrategy[int] = 3,
    duration_ms: int | SearchStrategy[int] = 5_000,
    max_faults: int = 8,
    kinds: Sequence[str] = SIMPLEST_FIRST,
    faults: FaultMix | SearchStrategy[FaultMix] | None = None,
    workload: WorkloadOptions | SearchStrategy[WorkloadOptions] | None = None,
    election_ms: int | SearchStrategy[int] = 1000,
    heartbeat_ms: int | SearchStrategy[int] | None = None,
    pre_vote: bool | SearchStrategy[bool] | None = None,
    check_quorum: bool | SearchStrategy[bool] | None = None,
    liveness_timeouts: int | None = None,
    spare_nodes: int | SearchStrategy[int] | None = None,
    snapshot_every: int | SearchStrategy[int] | None = None,
    snapshot_trailing: int | SearchStrategy[int] | None = None,
    snapshot_chunk_bytes: int | SearchStrategy[int] | None = None,
    reads: str | SearchStrategy[str] | None = None,
) -> SearchStrategy[SimOptions]:
    """Whole simulator runs: a seed, a fault mix, an explicit schedule, a workload.

    Every argument is either a fixed value or a strategy to draw it from.

    Args:
        nodes: cluster size.
        duration_ms: virtual time with faults; then everything heals and
            liveness is checked for ``liveness_timeouts`` election timeouts.
        max_faults, kinds: passed to :func:`fault_schedules`.
        faults: the network/disk/clock fault mix; ``None`` draws one with
            ``fault_mixes(schedule_rates=False)``.
        workload: the clients; ``None`` draws them with :func:`workloads`.
            Pass ``WorkloadOptions.none()`` for no clients.
        election_ms: the minimum election timeout.
        heartbeat_ms: the heartbeat interval; ``None`` means a tenth of
            ``election_ms`` (at least 1).
        pre_vote, check_quorum: the core's switches; ``None`` draws them.
        liveness_timeouts: the liveness window, in election timeouts;
            ``None`` keeps ``SimOptions``'s default.
        spare_nodes: servers outside the bootstrap configuration that
            ``membership`` faults may add; ``None`` draws 0-2. The schedule
            is drawn for ``nodes + spare_nodes`` servers.
        snapshot_every, snapshot_trailing, snapshot_chunk_bytes: snapshots
            (``SimOptions``); ``None`` draws them, ``snapshot_every`` off
            about half the time.
        reads: how gets are served (one of ``graft_sim.READ_MODES``);
            ``None`` draws one (``"lease"`` only with check-quorum).

    Returns:
        A strategy for :class:`~graft_sim.SimOptions` whose ``faults`` and
        ``schedule`` are explicit, so its ``repr`` replays the run exactly.

    Raises:
        ValueError: on an unknown fault kind, or a fixed ``nodes`` below 1 or
            ``duration_ms`` below 0.

    Example::

        @settings(max_examples=30, deadline=None)
        @given(sim_options(nodes=st.sampled_from((3, 5)), duration_ms=4_000,
                           kinds=("crash", "restart", "isolate_leader"),
                           workload=WorkloadOptions.none()))
        def test_leader_crashes(options):
            Simulation(options).run()
    """
    fault_schedules(1, 0, kinds=kinds)  # validates the kinds now, not at the first draw
    if isinstance(nodes, int) and nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    if isinstance(duration_ms, int) and duration_ms < 0:
        raise ValueError(f"duration_ms must be >= 0, got {duration_ms}")
    nodes_s = _just(nodes)
    duration_s = _just(duration_ms)
    mix_s = _just(faults) if faults is not None else fault_mixes(schedule_rates=False)
    workload_s = _just(workload) if workload is not None else workloads()
    election_s = _just(election_ms)
    pre_vote_s = _just(pre_vote) if pre_vote is not None else st.booleans()
    check_quorum_s = _just(check_quorum) if check_quorum is not None else st.booleans()
    spares_s = _just(spare_nodes) if spare_nodes is not None else st.integers(0, 2)
    every_s = (
        _just(snapshot_every)
        if snapshot_every is not None
        else st.one_of(st.just(0), st.sampled_from((3, 10, 50)))
    )
    trailing_s = (
        _just(snapshot_trailing) if snapshot_trailing is not None else st.sampled_from((0, 2, 20))
    )
    chunk_s = (
        _just(snapshot_chunk_bytes)
        if snapshot_chunk_bytes is not None
        else st.sampled_from((1 << 20, 1000, 64))
    )
    reads_s = _just(reads) if reads is not None else st.sampled_from(READ_MODES)
    kinds = tuple(kinds)

    @st.composite
    def options(draw: st.DrawFn) -> SimOptions:
        n = draw(nodes_s)
        duration = draw(duration_s)
        election = draw(election_s)
        heartbeat = max(1, election // 10)
        if heartbeat_ms is not None:
            heartbeat = draw(_just(heartbeat_ms))
        w = draw(workload_s)
        cq = draw(check_quorum_s)
        spares = draw(spares_s)
        read_mode = draw(reads_s)
        if read_mode == "lease" and not cq:
            read_mode = "index"  # leases need check-quorum (thesis §6.4.1)
        return SimOptions(
            seed=draw(_SEEDS),
            nodes=n,
            duration_ms=duration,
            liveness_timeouts=(
                liveness_timeouts if liveness_timeouts is not None else _DEFAULTS.liveness_timeouts
            ),
            heartbeat_ms=heartbeat,
            election_ms=election,
            pre_vote=draw(pre_vote_s),
            check_quorum=cq,
            faults=draw(mix_s),
            schedule=draw(
                fault_schedules(
                    n + spares, duration, max_faults=max_faults, kinds=kinds,
                    election_ms=election,
                )
            ),
            clients=w.clients,
            keys=w.keys,
            op_interval_ms=w.op_interval_ms,
            client_timeout_ms=w.client_timeout_ms,
            max_ops=w.max_ops,
            spare_nodes=spares,
            snapshot_every=draw(every_s),
            snapshot_trailing=draw(trailing_s),
            snapshot_chunk_bytes=draw(chunk_s),
            reads=read_mode,
        )

    return options()
