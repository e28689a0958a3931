"""``python -m graft_sim``: run seeds of the simulator, in parallel, with a summary.

Examples::

    python -m graft_sim --seed 7                    # one run, replayable
    python -m graft_sim --seeds 0:300 --processes 2 # a sweep
    python -m graft_sim --clusters 2000 --duration 60000 --processes 2
    python -m graft_sim --seeds 0:100 --snapshot-every 10 --reads lease --spare-nodes 2

Protocol features (snapshots, spare servers, how gets are read) are drawn from
each seed unless a flag pins them; so are the fault rates, membership changes
and leadership transfers included, unless ``--faults calm``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence

import attrs

from graft_sim._faults import FaultMix
from graft_sim._world import READ_MODES, SimOptions, SimResult, Simulation


@attrs.frozen
class Outcome:
    seed: int
    result: SimResult | None
    failure: str | None


def run_one(options: SimOptions) -> Outcome:
    try:
        return Outcome(options.seed, Simulation(options).run(), None)
    except AssertionError as e:  # InvariantViolation
        return Outcome(options.seed, None, str(e))
    except Exception as e:  # LivenessViolation, or a crash of the core: both fail the seed
        return Outcome(options.seed, None, f"{type(e).__name__}: {e}")


def parse_seeds(text: str) -> range:
    if ":" in text:
        lo, hi = text.split(":", 1)
        return range(int(lo), int(hi))
    return range(int(text), int(text) + 1)


def run_many(
    options: Sequence[SimOptions], processes: int, progress: bool
) -> Iterator[Outcome]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(options), unit="seed", file=sys.stderr, dynamic_ncols=True)
    try:
        if processes <= 1:
            outcomes: Iterator[Outcome] = map(run_one, options)
            for out in outcomes:
                if bar is not None:
                    bar.update()
                yield out
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(processes) as pool:
                for out in pool.imap(run_one, options, chunksize=1):
                    if bar is not None:
                        bar.update()
                    yield out
    finally:
        if bar is not None:
            bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m graft_sim", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=None, help="run this one seed")
    p.add_argument("--seeds", default=None, help="a range of seeds, A:B (B excluded)")
    p.add_argument(
        "--clusters", type=int, default=None, help="run this many clusters: seeds --seed, +1, ..."
    )
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--duration", type=int, default=10_000, help="virtual ms of faults")
    p.add_argument("--faults", choices=("swarm", "calm"), default="swarm")
    p.add_argument("--heartbeat", type=int, default=100, help="heartbeat interval, ms")
    p.add_argument("--election", type=int, default=1000, help="minimum election timeout, ms")
    p.add_argument("--no-pre-vote", action="store_true")
    p.add_argument("--no-check-quorum", action="store_true")
    p.add_argument("--max-ops", type=int, default=SimOptions().max_ops)
    p.add_argument("--spare-nodes", type=int, default=None,
                   help="servers outside the bootstrap configuration (default: drawn)")
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="snapshot every N applied entries, 0 never (default: drawn)")
    p.add_argument("--snapshot-trailing", type=int, default=None,
                   help="entries kept before a snapshot (default: drawn)")
    p.add_argument("--snapshot-chunk-bytes", type=int, default=None,
                   help="InstallSnapshot chunk size (default: drawn)")
    p.add_argument("--reads", choices=READ_MODES, default=None,
                   help="how gets are served (default: drawn)")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--fail-file", default=None, help="append failing seeds to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="print every run's summary")
    args = p.parse_args(argv)
    if args.reads == "lease" and args.no_check_quorum:
        p.error("--reads lease needs check-quorum (thesis §6.4.1)")
    first, count = args.seed or 0, args.clusters or 1
    seeds = parse_seeds(args.seeds) if args.seeds else range(first, first + count)
    options = [
        SimOptions(
            seed=s,
            nodes=args.nodes,
            duration_ms=args.duration,
            heartbeat_ms=args.heartbeat,
            election_ms=args.election,
            pre_vote=not args.no_pre_vote,
            check_quorum=not args.no_check_quorum,
            faults=FaultMix.calm() if args.faults == "calm" else None,
            max_ops=args.max_ops,
            spare_nodes=args.spare_nodes,
            snapshot_every=args.snapshot_every,
            snapshot_trailing=args.snapshot_trailing,
            snapshot_chunk_bytes=args.snapshot_chunk_bytes,
            reads=args.reads,
        )
        for s in seeds
    ]
    if len(options) == 1 and not args.quiet:
        sim = Simulation(options[0])
        print(f"seed {options[0].seed}: faults: {sim.mix.describe()}")
        print(f"features: {sim.features.describe()}")
        print(f"schedule: {len(sim.schedule)} node/partition faults")
    t0 = time.perf_counter()
    steps = messages = elections = commits = virtual_ms = 0
    failures: list[Outcome] = []
    show = not args.quiet and len(options) > 1
    for out in run_many(options, args.processes, show):
        if out.result is not None:
            r = out.result
            steps += r.steps
            messages += r.messages_delivered
            elections += r.elections
            commits += r.commits
            virtual_ms += r.virtual_ms
            if args.verbose or len(options) == 1:
                print(r.summary())
        else:
            failures.append(out)
            print(out.failure, file=sys.stderr)
            if args.fail_file:
                with open(args.fail_file, "a") as f:
                    f.write(f"{out.seed}\n")
    wall = time.perf_counter() - t0
    print(
        f"{len(options)} seeds, {args.nodes} nodes each: {steps:,} steps, "
        f"{messages:,} messages, {elections:,} elections, {commits:,} commits, "
        f"{len(failures)} violations; wall {wall:.1f}s, "
        f"virtual:real {virtual_ms / 1000 / max(wall, 1e-9):,.0f}:1, "
        f"{messages / max(wall, 1e-9) / max(1, min(args.processes, len(options))):,.0f} "
        "messages/s/process"
    )
    if failures:
        print("failing seeds: " + " ".join(str(f.seed) for f in failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
