"""graft_sim: determinism, faults that bite, liveness, the CLI and the CI sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graft_core import Action, Apply, Entry, Event, NodeState
from graft_core import step as real_step
from graft_sim import Fault, FaultMix, InvariantViolation, SimOptions, Simulation
from graft_sim.__main__ import main as cli_main
from graft_sim.__main__ import run_many

ROOT = Path(__file__).resolve().parent.parent


def test_same_seed_same_trace_hash_in_process() -> None:
    """One seed plus the options determines the whole run (graft_sim contract §1)."""
    a = Simulation(SimOptions(seed=11, duration_ms=3000)).run()
    b = Simulation(SimOptions(seed=11, duration_ms=3000)).run()
    c = Simulation(SimOptions(seed=12, duration_ms=3000)).run()
    assert a == b
    assert a.trace_hash != c.trace_hash


def _hash_in_subprocess(hashseed: str) -> str:
    code = (
        "from graft_sim import SimOptions, Simulation;"
        "print(Simulation(SimOptions(seed=5, duration_ms=4000)).run().trace_hash)"
    )
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_trace_hash_is_identical_across_processes_and_hash_seeds() -> None:
    """No string hashing, set order or id() leaks into a run: PYTHONHASHSEED 1 vs 2."""
    h1 = _hash_in_subprocess("1")
    h2 = _hash_in_subprocess("2")
    assert len(h1) == 32
    assert h1 == h2


def test_idle_time_is_free() -> None:
    """The simulator jumps between deadlines: an idle minute costs a handful of steps.

    A calm 3-node cluster with no clients runs 60 virtual seconds in about one
    step per heartbeat message, not one per millisecond.
    """
    opts = SimOptions(seed=1, nodes=3, duration_ms=60_000, faults=FaultMix.calm(), max_ops=0)
    r = Simulation(opts).run()
    heartbeats = r.virtual_ms // opts.heartbeat_ms * (opts.nodes - 1)
    # Each heartbeat: leader tick + follower step + leader step on the reply.
    assert r.steps < 4 * heartbeats
    assert r.virtual_ms > 60_000


def test_isolating_the_leader_forces_a_new_election() -> None:
    """A partition fault bites: cutting the leader off elects another (Raft §5.2)."""
    opts = SimOptions(
        seed=3, nodes=5, duration_ms=8000, faults=FaultMix.calm(), max_ops=0,
        schedule=(Fault(3000, "isolate_leader"),),
    )
    sim = Simulation(opts)
    r = sim.run()
    assert r.elections >= 2
    leaders_by_term = sim.checker.leaders
    assert len(set(leaders_by_term.values())) >= 2


def test_crash_loses_unacknowledged_writes_and_restart_recovers() -> None:
    """Crash and restart: only what was persisted survives, and the node catches up.

    Nodes crash one after another under a steady write load with a slow disk,
    so some crashes catch writes not yet durable (they are lost, as an OS may
    lose them); every invariant holds and every node ends with the same log.
    """
    crashes: list[Fault] = []
    for i in range(16):
        at, node = 1500 + 300 * i, (i % 5,)
        crashes += [Fault(at, "crash", node), Fault(at + 200, "restart", node)]
    opts = SimOptions(
        seed=4, nodes=5, duration_ms=7000, max_ops=400, op_interval_ms=10,
        faults=FaultMix(disk_min_us=5_000, disk_max_us=20_000), schedule=tuple(crashes),
        snapshot_every=0,
    )
    sim = Simulation(opts)
    r = sim.run()
    assert r.ops_ok > 0
    assert sim.lost_writes > 0  # some crashes did catch writes on their way to disk
    logs = [tuple(n.disk.entries) for n in sim.nodes]
    assert all(log == logs[0] for log in logs)
    assert all(n.state.commit_index == len(logs[0]) for n in sim.nodes)


def test_paused_leader_resumes_with_stale_beliefs_and_steps_down() -> None:
    """A paused leader wakes up still believing it leads; the others moved on (§5.1).

    Each node in turn is paused for five election timeouts; in the run where the
    paused node was the leader, another node leads a later term and the old
    leader ends as its follower in that term.
    """
    replaced = 0
    for k in range(3):
        opts = SimOptions(
            seed=2, nodes=3, duration_ms=9000, faults=FaultMix.calm(), max_ops=0,
            schedule=(Fault(3000, "pause", (k,), 5000),),
        )
        sim = Simulation(opts)
        sim.run()
        paused = sim.nodes[k]
        led = [t for t, who in sim.checker.leaders.items() if who == paused.id]
        if not led:
            continue
        later = [t for t, who in sim.checker.leaders.items() if t > max(led)]
        assert later, "nobody replaced the paused leader"
        assert paused.state.hard.term >= max(later)
        assert paused.state.leader_id == sim.checker.leaders[max(sim.checker.leaders)]
        assert paused.state.leader_id != paused.id
        replaced += 1
    assert replaced == 1  # exactly one node led at the time of its pause


def test_checker_catches_a_planted_violation() -> None:
    """The checks are live: a node that applies a different entry is stopped at once (§5.4.3)."""

    def tampering(state: NodeState, event: Event) -> tuple[NodeState, tuple[Action, ...]]:
        new, actions = real_step(state, event)
        if new.node_id != "n1":
            return new, actions
        return new, tuple(
            Apply(a.first_index, tuple(Entry(e.term, e.data + b"!", e.kind) for e in a.entries))
            if isinstance(a, Apply)
            else a
            for a in actions
        )

    opts = SimOptions(seed=0, nodes=3, duration_ms=3000, faults=FaultMix.calm(), max_ops=20)
    with pytest.raises(InvariantViolation) as err:
        Simulation(opts, step=tampering).run()
    report = str(err.value)
    assert "State Machine Safety" in report
    assert "replay:" in report and "seed 0" in report
    assert "last events of n1" in report


def test_cli_runs_one_seed_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m graft_sim --seed N` runs and summarises one replayable run."""
    assert cli_main(["--seed", "3", "--duration", "2000", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "1 seeds, 5 nodes each" in out
    assert "0 violations" in out
    # The CLI's run is the library's run with the same options.
    assert Simulation(SimOptions(seed=3, duration_ms=2000)).run().trace_hash in out


def test_ci_sweep_of_300_seeds_with_mixed_faults() -> None:
    """The CI sweep: 300 seeds of 5-node clusters, swarm faults, both cores (graft_sim §9)."""
    options = [SimOptions(seed=s, duration_ms=5000, max_ops=120) for s in range(300)]
    failures = [o for o in run_many(options, processes=2, progress=False) if o.failure]
    assert not failures, failures[0].failure


def test_a_1001_node_cluster_elects_a_leader_and_commits() -> None:
    """Scale: one 1,001-node cluster elects a leader and commits client writes (graft_sim §8)."""
    opts = SimOptions(
        seed=1, nodes=1001, duration_ms=0, liveness_timeouts=2, faults=FaultMix.calm(),
        max_ops=30, clients=2,
    )
    sim = Simulation(opts)
    r = sim.run()  # its liveness check: a leader every node knows, acknowledged ops everywhere
    assert r.elections == 1
    assert r.ops_ok >= 1
    leader = sim.current_leader()
    assert leader is not None
    assert all(n.state.leader_id == sim.nodes[leader].id for n in sim.nodes)
    assert min(n.state.commit_index for n in sim.nodes) >= 1 + r.ops_ok


def test_replay_command_of_an_explicit_schedule_runs_the_same_run() -> None:
    """A violation report's replay command is pasteable: it reruns exactly this run."""
    opts = SimOptions(
        seed=9, nodes=3, duration_ms=2000, max_ops=20,
        faults=FaultMix(loss_ppm=20_000),
        schedule=(Fault(500, "isolate", (1,)), Fault(900, "heal")),
    )
    expected = Simulation(opts).run()
    command = opts.command_line()
    assert command.startswith("python -c ")
    out = subprocess.run(
        command.replace("python", sys.executable, 1), shell=True, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert expected.trace_hash in out.stdout
    cli = "python -m graft_sim --seed 9 --nodes 5 --duration 10000"
    assert SimOptions(seed=9).command_line() == cli


def test_local_cluster_with_every_node_down_lets_time_pass() -> None:
    """No live node, no deadline: run() only moves the clock; restarts resume the cluster."""
    from graft_sim import LocalCluster

    c = LocalCluster(("a", "b", "c"))
    c.elect()
    for n in c.ids:
        c.crash(n)
    with pytest.raises(RuntimeError, match="every node is down"):
        c.next_deadline()
    c.run(c.now + 5_000)
    assert c.now >= 5_000 and c.leader() is None
    for n in c.ids:
        c.restart(n)
    assert c.elect() in c.ids
