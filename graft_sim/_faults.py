"""Faults: what the simulated world does to a cluster, as plain data.

A run's faults are either drawn from its seed ("swarm testing": each run
enables its own random subset of fault kinds at its own rates, so rare
combinations get explored; Groce et al., ISSTA 2012) or given explicitly as a
schedule of :class:`Fault` values -- which is what Hypothesis generates and
shrinks. Either way the schedule is data, so a failing run prints a schedule
that can be pasted back in.
"""

from __future__ import annotations

import random

import attrs

#: Fault kinds and what ``Fault.nodes`` means for each.
FAULT_KINDS = (
    "partition",  # nodes: one side; every other node is the other side
    "bridge",  # nodes: (bridge, *side_a); the rest is side_b; the bridge sees both
    "one_way",  # nodes: (src, dst); messages src -> dst are lost
    "isolate",  # nodes: (node,); cut from everyone
    "isolate_leader",  # nodes: (); cut whoever leads at that moment
    "heal",  # nodes: (); every link back
    "crash",  # nodes: (node,)
    "restart",  # nodes: (node,)
    "pause",  # nodes: (node,); resumes after ``duration``
    "membership",  # nodes: (); the leader is asked for a random valid membership change
    "transfer",  # nodes: (target,) or () for "the most up-to-date voter"; at the leader
)


@attrs.frozen
class Fault:
    """One fault at virtual time ``at`` (milliseconds)."""

    at: int
    kind: str
    nodes: tuple[int, ...] = ()
    duration: int = 0

    def __attrs_post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.at < 0 or self.duration < 0:
            raise ValueError("fault times must be non-negative")


@attrs.frozen
class FaultMix:
    """The network and node fault rates of one run.

    Probabilities are in parts per million (integers keep every run exactly
    reproducible); rates are expected events per virtual minute.
    """

    loss_ppm: int = 0
    duplicate_ppm: int = 0
    #: Latency: uniform in [base_min_us, base_max_us], plus with probability
    #: tail_ppm an extra uniform delay up to tail_max_us (the long tail that
    #: reorders messages).
    base_min_us: int = 200
    base_max_us: int = 2_000
    tail_ppm: int = 0
    tail_max_us: int = 0
    partitions_per_min: int = 0
    crashes_per_min: int = 0
    pauses_per_min: int = 0
    #: Each node's clock runs at 1 +- skew_ppm / 1e6 of virtual time.
    skew_ppm: int = 0
    #: A write takes this long to become durable (uniform, microseconds).
    disk_min_us: int = 100
    disk_max_us: int = 1_000
    #: Membership changes (thesis §4) and leadership transfers (thesis §3.10)
    #: requested at the leader, per virtual minute.
    membership_per_min: int = 0
    transfers_per_min: int = 0
    #: Each link (ordered pair of nodes) carries this many bytes per virtual
    #: millisecond, one message after another; 0 = unlimited (latency only).
    #: Never drawn: it is for benchmarks that compare transfer sizes.
    link_bytes_per_ms: int = 0

    @classmethod
    def calm(cls) -> FaultMix:
        """No faults at all: a baseline for speed and liveness."""
        return cls()

    @classmethod
    def draw(cls, rng: random.Random) -> FaultMix:
        """A swarm-style mix: each fault kind is on or off, at a random rate."""

        def on() -> bool:
            return rng.random() < 0.5

        tail = on()
        mix = cls(
            loss_ppm=rng.choice((10_000, 50_000, 200_000)) if on() else 0,
            duplicate_ppm=rng.choice((10_000, 50_000)) if on() else 0,
            base_min_us=rng.choice((100, 500, 1_000)),
            base_max_us=rng.choice((2_000, 5_000, 15_000)),
            tail_ppm=rng.choice((10_000, 100_000)) if tail else 0,
            tail_max_us=rng.choice((50_000, 300_000, 1_500_000)) if tail else 0,
            partitions_per_min=rng.choice((10, 30, 90)) if on() else 0,
            crashes_per_min=rng.choice((5, 15, 45)) if on() else 0,
            pauses_per_min=rng.choice((5, 15, 45)) if on() else 0,
            skew_ppm=rng.choice((10_000, 100_000, 300_000)) if on() else 0,
            disk_min_us=rng.choice((50, 300)),
            disk_max_us=rng.choice((1_000, 5_000, 20_000)),
        )
        # Drawn after the older kinds, so a seed keeps the rates it had before
        # these kinds existed.
        return attrs.evolve(
            mix,
            membership_per_min=rng.choice((10, 30, 120)) if on() else 0,
            transfers_per_min=rng.choice((5, 20, 60)) if on() else 0,
        )

    def describe(self) -> str:
        parts = [
            f"loss {self.loss_ppm / 1e4:g}%" if self.loss_ppm else "",
            f"dup {self.duplicate_ppm / 1e4:g}%" if self.duplicate_ppm else "",
            f"latency {self.base_min_us / 1e3:g}-{self.base_max_us / 1e3:g}ms",
            f"tail {self.tail_ppm / 1e4:g}% up to {self.tail_max_us / 1e3:g}ms"
            if self.tail_ppm
            else "",
            f"partitions {self.partitions_per_min}/min" if self.partitions_per_min else "",
            f"crashes {self.crashes_per_min}/min" if self.crashes_per_min else "",
            f"pauses {self.pauses_per_min}/min" if self.pauses_per_min else "",
            f"skew {self.skew_ppm / 1e4:g}%" if self.skew_ppm else "",
            f"disk {self.disk_min_us / 1e3:g}-{self.disk_max_us / 1e3:g}ms",
            f"membership changes {self.membership_per_min}/min"
            if self.membership_per_min
            else "",
            f"transfers {self.transfers_per_min}/min" if self.transfers_per_min else "",
            f"links {self.link_bytes_per_ms / 1e3:g} MB/s" if self.link_bytes_per_ms else "",
        ]
        return ", ".join(p for p in parts if p)


def draw_schedule(
    rng: random.Random, mix: FaultMix, nodes: int, duration_ms: int, election_ms: int
) -> tuple[Fault, ...]:
    """Node and partition faults for ``[0, duration_ms)`` at the mix's rates.

    Crashed nodes restart and paused nodes resume after one to a few election
    timeouts; partitions last about as long before the next one or a heal.
    ``nodes`` counts every simulated server, spare ones included. Membership
    changes and transfers come after the older kinds, so a seed draws the same
    partitions, crashes and pauses whether or not they are on.
    """
    faults: list[Fault] = []

    def poisson_times(per_min: int) -> list[int]:
        times: list[int] = []
        if per_min <= 0:
            return times
        t = 0.0
        while True:
            t += rng.expovariate(per_min / 60_000)
            if t >= duration_ms:
                return times
            times.append(int(t))

    kinds = ("partition", "bridge", "one_way", "isolate", "isolate_leader")
    for at in poisson_times(mix.partitions_per_min):
        kind = rng.choice(kinds)
        if kind == "partition":
            size = rng.randint(1, max(1, nodes // 2))
            side = tuple(sorted(rng.sample(range(nodes), size)))
            faults.append(Fault(at, kind, side))
        elif kind == "bridge" and nodes >= 3:
            order = rng.sample(range(nodes), nodes)
            half = (nodes - 1) // 2
            faults.append(Fault(at, kind, (order[0], *sorted(order[1 : 1 + half]))))
        elif kind == "one_way" and nodes >= 2:
            src, dst = rng.sample(range(nodes), 2)
            faults.append(Fault(at, kind, (src, dst)))
        elif kind == "isolate":
            faults.append(Fault(at, kind, (rng.randrange(nodes),)))
        else:
            faults.append(Fault(at, "isolate_leader"))
        heal = at + rng.randint(election_ms // 2, 4 * election_ms)
        if heal < duration_ms:
            faults.append(Fault(heal, "heal"))
    for at in poisson_times(mix.crashes_per_min):
        node = rng.randrange(nodes)
        faults.append(Fault(at, "crash", (node,)))
        back = at + rng.randint(election_ms // 4, 3 * election_ms)
        if back < duration_ms:
            faults.append(Fault(back, "restart", (node,)))
    for at in poisson_times(mix.pauses_per_min):
        node = rng.randrange(nodes)
        faults.append(Fault(at, "pause", (node,), rng.randint(election_ms // 4, 3 * election_ms)))
    for at in poisson_times(mix.membership_per_min):
        faults.append(Fault(at, "membership"))
    for at in poisson_times(mix.transfers_per_min):
        # About a third of transfers name no target: the leader picks the most
        # up-to-date voter. A named target may be a learner or a removed node
        # (the leader refuses); that is part of the test.
        target = rng.randrange(nodes + nodes // 2)
        faults.append(Fault(at, "transfer", (target,) if target < nodes else ()))
    # Sorted by time, ties broken by the fault itself: the order is a pure
    # function of the draws.
    faults.sort(key=lambda f: (f.at, f.kind, f.nodes, f.duration))
    return tuple(faults)
