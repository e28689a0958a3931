"""How fast is one step of graft_core, and does it depend on the log's length?

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_core.py``).

Three cases, each measured on a log of 1,000 entries (the baseline) and of
1,000,000 entries, in the same process:

* heartbeat round: leader Tick -> Heartbeat to 2 followers -> their responses
  -> leader handles both (5 steps);
* AppendEntries of 1 entry at a follower, plus the PersistCompleted that
  releases its ack (2 steps);
* AppendEntries of 64 entries at a follower, plus its PersistCompleted.

It prints steps/s for each and the ratio of the per-step cost at 1M over 1k
(the goal is <= 1.2: a step costs O(size of the event), not O(log length)).
Each figure is the best of several repeats, to keep a shared machine's noise out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from graft_core import (
    AppendRequest,
    Config,
    DurableState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    MessageReceived,
    NodeState,
    Persist,
    PersistCompleted,
    Role,
    Send,
    Tick,
    start,
    step,
)
from graft_sim import LocalCluster

IDS = ("a", "b", "c")
PAYLOAD = b"x" * 16


def _durable(n: int) -> DurableState:
    entry = Entry(1, PAYLOAD)
    return DurableState(HardState(1, None), (entry,) * n)


def _leader_cluster(n: int) -> LocalCluster:
    c = LocalCluster(IDS, seed=1)
    durable = _durable(n)
    for nid in IDS:
        c.nodes[nid] = start(c.configs[nid], 0, durable)
        c.storage[nid].entries = list(durable.entries)
        c.storage[nid].hard_state = durable.hard_state
    c.elect()
    c.run(c.now + 10)
    return c


def bench_heartbeat(n: int, rounds: int) -> float:
    """Seconds per step of a full heartbeat round with an n-entry log."""
    c = _leader_cluster(n)
    leader = c.leader()
    assert leader is not None
    state = c.nodes[leader]
    followers = {nid: c.nodes[nid] for nid in IDS if nid != leader}
    t0 = time.perf_counter()
    steps = 0
    for _ in range(rounds):
        state, actions = step(state, Tick(state.heartbeat_deadline))
        steps += 1
        for a in actions:
            if isinstance(a, Send) and isinstance(a.message, Heartbeat):
                m = a.message
                fs, out = step(followers[m.dst], MessageReceived(m))
                followers[m.dst] = fs
                steps += 1
                for b in out:
                    if isinstance(b, Send) and isinstance(b.message, HeartbeatResponse):
                        state, _ = step(state, MessageReceived(b.message))
                        steps += 1
    elapsed = time.perf_counter() - t0
    assert state.role is Role.LEADER
    return elapsed / steps


def bench_append(n: int, batch: int, messages: int) -> float:
    """Seconds per step of a follower taking AppendEntries(batch) + PersistCompleted."""
    config = Config("b", IDS, seed=1)
    state: NodeState = start(config, 0, _durable(n))
    entries = (Entry(1, PAYLOAD),) * batch
    prev = state.last_index
    t0 = time.perf_counter()
    for _ in range(messages):
        m = AppendRequest(1, "a", "b", prev, 1, entries, 0)
        state, actions = step(state, MessageReceived(m))
        seq = next(a.seq for a in actions if isinstance(a, Persist))
        state, _ = step(state, PersistCompleted(seq))
        prev += batch
    elapsed = time.perf_counter() - t0
    assert state.last_index == n + batch * messages
    return elapsed / (2 * messages)


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    small, big = (1_000, 20_000) if args.quick else (1_000, 1_000_000)
    repeats = 2 if args.quick else 5
    scale = 1 if args.quick else 10
    cases: list[tuple[str, Callable[[int], float]]] = [
        ("heartbeat round", lambda n: bench_heartbeat(n, 200 * scale)),
        ("AppendEntries(1)", lambda n: bench_append(n, 1, 500 * scale)),
        ("AppendEntries(64)", lambda n: bench_append(n, 64, 50 * scale)),
    ]
    print(f"graft_core step cost: log of {small:,} (baseline) vs {big:,} entries; "
          f"best of {repeats}")
    print(f"{'case':<20} {'steps/s @' + format(small, ','):>16} "
          f"{'steps/s @' + format(big, ','):>18} {'cost ratio':>11}")
    for name, fn in cases:
        base = best_of(repeats, lambda fn=fn: fn(small))  # type: ignore[misc]
        large = best_of(repeats, lambda fn=fn: fn(big))  # type: ignore[misc]
        print(f"{name:<20} {1 / base:>16,.0f} {1 / large:>18,.0f} {large / base:>10.2f}x")


if __name__ == "__main__":
    main()
