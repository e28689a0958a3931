"""Property tests of whole simulated runs, with Hypothesis choosing the faults.

``graft_sim._strategies`` draws :class:`~graft_sim.SimOptions` whose fault mix
and fault schedule are explicit data, so Hypothesis can shrink a failing run
to the few faults that matter and print it as a ``SimOptions(...)`` that
replays exactly.

* The property: whatever the faults, a run of the real core raises nothing --
  no safety invariant breaks (``graft_sim._checker``: election safety, log
  matching, leader append-only, leader completeness, state machine safety),
  the cluster recovers once the faults stop, and the clients' history is
  linearizable.
* The strategies themselves: every schedule they draw is valid for its
  cluster, and they shrink toward no faults at all.
* Shrinking, demonstrated: with a deliberately broken core, Hypothesis finds a
  violation and shrinks it to a schedule of a fault or two, which replays
  the violation with the broken core and passes with the real one.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings, target
from hypothesis import strategies as st

import graft_sim
from graft_core._log import RaftLog
from graft_sim import Fault, FaultMix, InvariantViolation, SimOptions, Simulation
from graft_sim._faults import FAULT_KINDS
from graft_sim._strategies import (
    SIMPLEST_FIRST,
    WorkloadOptions,
    fault_mixes,
    fault_schedules,
    sim_options,
    workloads,
)

# No explain phase: it traces every line while shrinking, which makes a
# simulated run about ten times slower.
_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)


# ---------------------------------------------------------------------------
# The strategies.


def check_fault(f: Fault, nodes: int, duration_ms: int) -> None:
    """``f`` is a fault a cluster of ``nodes`` can suffer in ``[0, duration_ms)``."""
    assert 0 <= f.at < duration_ms
    assert all(0 <= i < nodes for i in f.nodes)
    assert len(set(f.nodes)) == len(f.nodes)
    assert f.duration == 0 or f.kind == "pause"
    if f.kind in ("heal", "isolate_leader", "membership"):
        assert f.nodes == ()
    elif f.kind == "transfer":
        assert len(f.nodes) <= 1
    elif f.kind in ("isolate", "crash", "restart"):
        assert len(f.nodes) == 1
    elif f.kind == "pause":
        assert len(f.nodes) == 1 and f.duration >= 1
    elif f.kind == "partition":
        assert 1 <= len(f.nodes) < nodes and list(f.nodes) == sorted(f.nodes)
    elif f.kind == "one_way":
        assert len(f.nodes) == 2
    else:
        assert f.kind == "bridge"
        # A bridge, and a node on each side of it.
        assert 2 <= len(f.nodes) <= nodes - 1


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 7), st.integers(1, 60_000), st.integers(0, 12))
def test_fault_schedules_are_valid_and_sorted(
    data: st.DataObject, nodes: int, duration_ms: int, max_faults: int
) -> None:
    kinds = data.draw(st.lists(st.sampled_from(FAULT_KINDS), min_size=1, unique=True))
    schedule = data.draw(fault_schedules(nodes, duration_ms, max_faults=max_faults, kinds=kinds))
    assert len(schedule) <= max_faults
    assert [f.at for f in schedule] == sorted(f.at for f in schedule)
    for f in schedule:
        assert f.kind in kinds
        check_fault(f, nodes, duration_ms)


@settings(max_examples=50, deadline=None)
@given(sim_options(nodes=st.integers(1, 7), duration_ms=st.integers(0, 10_000)))
def test_sim_options_are_explicit_and_consistent(options: SimOptions) -> None:
    assert options.faults is not None and options.schedule is not None
    # The schedule is explicit, so the mix's schedule rates would be unused.
    assert options.faults.partitions_per_min == options.faults.crashes_per_min == 0
    assert options.faults.membership_per_min == options.faults.transfers_per_min == 0
    assert options.heartbeat_ms < options.election_ms
    # Every feature is explicit too, so the repr replays the run.
    assert None not in (options.spare_nodes, options.snapshot_every, options.reads)
    assert options.reads != "lease" or options.check_quorum
    assert options.spare_nodes is not None
    for f in options.schedule:
        check_fault(f, options.nodes + options.spare_nodes, options.duration_ms)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_fault_kind_can_be_drawn(kind: str) -> None:
    """A fault kind added to the simulator needs a strategy here, or this fails."""
    (fault,) = find(
        fault_schedules(5, 1_000, kinds=(kind,)),
        lambda s: len(s) == 1,
        settings=settings(database=None, phases=(Phase.generate,)),
    )
    assert fault.kind == kind
    assert kind in SIMPLEST_FIRST


def test_fault_kinds_that_need_more_nodes_are_left_out() -> None:
    one_node = fault_schedules(1, 1_000, kinds=("partition", "one_way", "bridge", "crash"))
    assert {f.kind for f in find(one_node, lambda s: len(s) >= 3)} == {"crash"}
    assert find(fault_schedules(1, 1_000, kinds=("bridge",)), lambda s: True) == ()
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_schedules(3, 1_000, kinds=("meteor",))


def test_strategies_shrink_toward_no_faults_and_early_simple_ones() -> None:
    assert find(fault_mixes(), lambda m: True) == FaultMix.calm()
    assert find(fault_schedules(5, 10_000), lambda s: True) == ()
    # Two faults, one of them late: the rest shrinks to harmless heals at time 0.
    two = find(fault_schedules(5, 10_000), lambda s: len(s) >= 2 and s[-1].at >= 5_000)
    assert [f.kind for f in two] == [SIMPLEST_FIRST[0]] * 2
    assert two[0].at == 0 and 5_000 <= two[1].at < 5_500
    o = find(sim_options(), lambda o: True)
    assert (o.seed, o.schedule, o.faults, o.max_ops) == (0, (), FaultMix.calm(), 0)
    assert find(workloads(), lambda w: True) == WorkloadOptions(
        clients=1, keys=1, op_interval_ms=5, client_timeout_ms=500, max_ops=0
    )
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim_options(kinds=("meteor",))


# ---------------------------------------------------------------------------
# Whole runs.


@settings(
    max_examples=300,
    deadline=None,
    phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    sim_options(
        nodes=st.sampled_from((3, 5)),
        duration_ms=st.integers(0, 4_000),
        election_ms=st.sampled_from((100, 300, 1_000)),
        workload=workloads(max_ops=60),
    )
)
def test_the_real_core_survives_any_fault_schedule(options: SimOptions) -> None:
    """Safety after every step, liveness after the heal, a linearizable history."""
    result = Simulation(options).run()
    assert result.schedule == options.schedule and result.faults == options.faults
    # Steer Hypothesis toward schedules that cost many elections.
    target(float(result.elections), label="elections")


def test_hypothesis_shrinks_a_stale_vote_to_a_few_faults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A core that votes for stale candidates is caught, and shrunk to three faults at most.

    The mutant skips Raft §5.4.1's up-to-date check (a vote only for a
    candidate whose log is at least as up to date as the voter's), so a node
    that missed committed entries can win an election and Leader Completeness
    (§5.4) breaks -- if the checker does not already object to the vote.
    Hypothesis finds a run where it happens -- typically several faults on a
    noisy network -- and shrinks it to the faults that matter: today one
    node isolated from the start, on a calm network.
    """
    real = RaftLog.is_up_to_date

    def votes_for_stale_logs(self: RaftLog, last_index: int, last_term: int) -> bool:
        return True  # MUTANT: every candidate's log counts as up to date

    monkeypatch.setattr(RaftLog, "is_up_to_date", votes_for_stale_logs)
    found: list[tuple[SimOptions, str]] = []

    def violates_safety(options: SimOptions) -> bool:
        try:
            Simulation(options).run()
        except InvariantViolation as e:
            found.append((options, str(e).splitlines()[0]))
            return True
        return False

    shrunk = find(
        sim_options(nodes=3, duration_ms=3_000, workload=WorkloadOptions.none()),
        violates_safety,
        settings=settings(
            max_examples=300,
            deadline=None,
            database=None,
            derandomize=True,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert shrunk.schedule is not None and shrunk.faults is not None
    first = found[0][0]
    assert first.schedule is not None and first.faults is not None
    violation = next(what for options, what in found if options == shrunk)
    print(
        f"found with {len(first.schedule)} faults ({first.faults.describe()}); "
        f"shrunk to {len(shrunk.schedule)} ({shrunk.faults.describe()}): {violation}\n"
        f"    Simulation({shrunk!r}).run()"
    )
    assert len(shrunk.schedule) <= 3, shrunk.schedule
    # The printed repr is the reproduction: it evaluates back to the same options...
    pasted = eval(repr(shrunk), vars(graft_sim))
    assert pasted == shrunk
    # ...which fail with the mutant...
    with pytest.raises(InvariantViolation) as replayed:
        Simulation(pasted).run()
    assert str(replayed.value).splitlines()[0] == violation
    monkeypatch.undo()
    assert RaftLog.is_up_to_date is real
    # ...and pass with the real core.
    Simulation(pasted).run()
