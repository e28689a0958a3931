"""How fast does graft_sim run, and how much of that is the core itself?

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_sim.py``).

Prints, for a 5-node cluster (calm, and under swarm faults with clients) and a
1,001-node cluster: delivered messages per second on one core and the
virtual:real time ratio. The baseline, measured in the same process, is the
bare core: a hand-driven heartbeat exchange with no simulator around it, so
the ratio shows what the simulator's queue, faults and checks cost on top.
Goals (issue graft_sim): >= 200,000 messages/s/core and >= 1,000x virtual:real
for 5 nodes.

``--split`` also prints where a delivered message's time goes in the calm
5-node run: the core's ``step`` (fixed per-step cost vs. the handler), the
checker, and the simulator's own loop (queue, network model, timers, trace).
"""

from __future__ import annotations

import argparse
import time
import timeit
from typing import Any

from graft_core import (
    Action,
    Event,
    HeartbeatResponse,
    MessageReceived,
    NodeState,
    Send,
    Tick,
    step,
)
from graft_core._node import _Step
from graft_sim import FaultMix, LocalCluster, SimOptions, Simulation


def bare_core_messages_per_s(rounds: int) -> float:
    """Messages/s when a hand loop delivers heartbeats and replies between 5 cores."""
    c = LocalCluster(("a", "b", "c", "d", "e"), seed=1)
    leader = c.elect()
    state = c.nodes[leader]
    followers = {n: c.nodes[n] for n in c.ids if n != leader}
    messages = 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        state, actions = step(state, Tick(state.heartbeat_deadline))
        for a in actions:
            if isinstance(a, Send):
                m = a.message
                fs, out = step(followers[m.dst], MessageReceived(m, state.now))
                followers[m.dst] = fs
                messages += 1
                for b in out:
                    if isinstance(b, Send) and isinstance(b.message, HeartbeatResponse):
                        state, _ = step(state, MessageReceived(b.message))
                        messages += 1
    return messages / (time.perf_counter() - t0)


def sim_rate(options: SimOptions) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    r = Simulation(options).run()
    wall = time.perf_counter() - t0
    return r.messages_delivered / wall, r.virtual_ms / 1000 / wall, r.messages_delivered


def time_split(options: SimOptions) -> None:
    """Print the microseconds per delivered message spent in each part of a run."""
    pc = time.perf_counter
    core = [0.0]
    checker = [0.0]

    def timed_step(s: NodeState, e: Event) -> tuple[NodeState, tuple[Action, ...]]:
        t = pc()
        out = step(s, e)
        core[0] += pc() - t
        return out

    sim = Simulation(options, step=timed_step)
    after_step = sim.checker.after_step

    def timed_check(*args: Any) -> None:
        t = pc()
        after_step(*args)
        checker[0] += pc() - t

    sim.checker.after_step = timed_check  # type: ignore[method-assign,assignment]
    t0 = pc()
    r = sim.run()
    wall = pc() - t0
    # Two perf_counter calls per timed call are not the simulator's.
    clock = min(timeit.repeat(lambda: (pc(), pc()), number=100_000, repeat=3)) / 100_000
    n = r.messages_delivered
    us = 1e6 / n
    rest = wall - core[0] - checker[0] - 2 * r.steps * clock
    # The fixed cost of any step: the scratchpad and rebuilding the state,
    # measured on a follower with no change to make.
    c = LocalCluster(("a", "b", "c", "d", "e"), seed=1)
    leader = c.elect()
    follower = c.nodes[next(i for i in c.ids if i != leader)]
    fixed = min(timeit.repeat(lambda: _Step(follower).finish(), number=20_000, repeat=5))
    fixed /= 20_000
    per_step = core[0] / r.steps
    print(f"where a message's time goes (5 nodes, calm; {r.steps:,} steps for {n:,} messages, "
          f"{wall * us:.2f} us/message with timers):")
    print(f"  core step   {core[0] * us:5.2f} us  (per step {per_step * 1e6:.2f} us: fixed "
          f"{fixed * 1e6:.2f} us, handler {(per_step - fixed) * 1e6:.2f} us)")
    print(f"  checker     {checker[0] * us:5.2f} us")
    print(f"  simulator   {rest * us:5.2f} us  (queue, network model, timers, trace, events)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--split", action="store_true", help="also time each part of a run")
    args = parser.parse_args()
    q = args.quick
    base = bare_core_messages_per_s(200 if q else 3000)
    cases = [
        ("5 nodes, calm, no clients",
         SimOptions(seed=1, duration_ms=5_000 if q else 60_000, faults=FaultMix.calm(), max_ops=0)),
        ("5 nodes, swarm faults + clients",
         SimOptions(seed=2, duration_ms=5_000 if q else 60_000, max_ops=400)),
        ("1,001 nodes, calm",
         SimOptions(seed=1, nodes=101 if q else 1001, duration_ms=1_000, liveness_timeouts=1,
                    faults=FaultMix.calm(), max_ops=10)),
    ]
    print(f"baseline: bare core, hand-delivered heartbeats: {base:>10,.0f} messages/s")
    print(f"{'case':<34} {'messages':>10} {'messages/s':>12} {'vs bare':>8} {'virtual:real':>13}")
    for name, opts in cases:
        rate, ratio, n = sim_rate(opts)
        print(f"{name:<34} {n:>10,} {rate:>12,.0f} {rate / base:>7.2f}x {ratio:>12,.0f}x")
    if args.split:
        time_split(cases[0][1])


if __name__ == "__main__":
    main()
