"""How long does a follower 100,000 entries behind take to catch up: by snapshot or by log?

Run: ``.venv/bin/python benchmarks/bench_catchup.py [--entries N]``.

Three simulated nodes (graft_sim, 1 ms per message so that a link delivers in
order as TCP does, 1 Gbit/s links, 0.1-1 ms disk writes). Two of them start
from a disk holding ``N`` committed entries (puts to 1,000 keys); the third
starts empty. In the *log* case the leader holds
all ``N`` entries and sends them in AppendEntries batches (64 entries, up to 256
messages in flight); in the *snapshot* case the two full nodes hold a snapshot
at ``N`` instead (the key/value store with its client-session table, as sorted
JSON) and no entries, so the leader sends the snapshot in 1 MiB chunks.

Measured from the moment a leader is elected until the empty node's state
machine has applied index ``N``: virtual time (what the cluster would take,
given the simulated latency and bandwidth; disk bandwidth is not modelled)
and wall time (what the simulation cost: the cores, the disks, the checker,
the application). Also
printed: the most log entries any node held in memory. ``--reordering`` adds a
run of the log case on the simulator's default network (0.2-2 ms per message,
so pipelined AppendEntries overtake each other): each one that arrives before
its predecessor is rejected and sends the leader back to probing, and the
entries are sent many times over.
"""

from __future__ import annotations

import argparse
import time

from graft_core import Entry, HardState, Membership, Role, SnapshotMeta
from graft_sim import FaultMix, SimOptions, Simulation
from graft_sim._workload import KVStore, encode_op

#: 1 ms on every message and 1 Gbit/s links (125,000 bytes per ms), 0.1-1 ms
#: disk writes: messages on a link arrive in the order they were sent, as over TCP.
IN_ORDER = FaultMix(base_min_us=1_000, base_max_us=1_000, link_bytes_per_ms=125_000)
#: 0.2-2 ms, uniform per message: pipelined AppendEntries overtake each other.
REORDERING = FaultMix(link_bytes_per_ms=125_000)


def catch_up(entries: int, by_snapshot: bool, network: FaultMix = IN_ORDER) -> dict[str, float]:
    """One run; returns virtual ms, wall s and the largest in-memory log."""
    options = SimOptions(
        seed=1, nodes=3, duration_ms=0, liveness_timeouts=50, faults=network,
        max_ops=0, spare_nodes=0, snapshot_every=0, snapshot_trailing=0,
        snapshot_chunk_bytes=1 << 20, reads="index",
    )
    sim = Simulation(options)
    log = [
        Entry(1, encode_op(i + 1, "put", f"k{i % 1000}", f"value-{i}", None))
        for i in range(entries)
    ]
    voters = tuple(n.id for n in sim.nodes)
    data = b""
    if by_snapshot:
        kv = KVStore()
        for e in log:
            kv.apply(e.data)
        data = kv.snapshot()
    for n in sim.nodes[:2]:
        n.disk.hard_state = HardState(1, None)
        if by_snapshot:
            n.disk.snapshot = SnapshotMeta(entries, 1, Membership(voters))
            n.disk.snapshot_data = data
        else:
            n.disk.entries = list(log)
        n.up = False
        sim.restart(n)  # from what the disk holds
    # The preloaded entries were committed before the run began: tell the checker.
    sim.checker.committed[entries] = 1
    sim.checker.max_commit = sim.checker.max_leader_commit = entries
    behind = sim.nodes[2]
    marks: dict[str, float] = {}
    most = [0]
    real_step = sim.step

    def step(n: object, event: object) -> None:
        real_step(n, event)  # type: ignore[arg-type]
        most[0] = max(most[0], max(len(m.state.log.entries) for m in sim.nodes))
        if "elected_us" not in marks and any(m.state.role is Role.LEADER for m in sim.nodes):
            marks["elected_us"] = sim.now
            marks["elected_wall"] = time.perf_counter()
        if "done_us" not in marks and behind.applied >= entries:
            marks["done_us"] = sim.now
            marks["done_wall"] = time.perf_counter()

    sim.step = step  # type: ignore[method-assign]
    sim.run()
    assert "done_us" in marks, "the empty node never caught up"
    return {
        "virtual_ms": (marks["done_us"] - marks["elected_us"]) / 1000,
        "wall_s": marks["done_wall"] - marks["elected_wall"],
        "max_log": float(most[0]),
        "snapshot_bytes": float(len(data)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--reordering", action="store_true",
                        help="also catch up by log over a reordering network")
    args = parser.parse_args(argv)
    print(f"a follower {args.entries:,} entries behind, 3 nodes, 1 ms 1 Gbit/s links (in order)")
    cases = [("log", False, IN_ORDER), ("snapshot", True, IN_ORDER)]
    if args.reordering:
        cases.append(("log, reordering 0.2-2 ms links", False, REORDERING))
    for name, by_snapshot, network in cases:
        r = catch_up(args.entries, by_snapshot, network)
        extra = f", snapshot {r['snapshot_bytes'] / 1e6:.1f} MB" if by_snapshot else ""
        print(
            f"  by {name}: {r['virtual_ms']:,.1f} ms virtual, {r['wall_s']:.2f} s wall, "
            f"largest in-memory log {int(r['max_log']):,} entries{extra}"
        )


if __name__ == "__main__":
    main()
