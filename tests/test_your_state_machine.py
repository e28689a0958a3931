"""An example for users: property-test *your* state machine on top of graft.

Copy this file and replace :class:`Bank` with your own deterministic state
machine. The recipe:

1. Encode your commands as bytes (``Bank.encode``) and apply them, in log
   order, to one instance of your state machine per node (``Bank.replay``).
2. Let Hypothesis draw the commands (your own strategy, ``commands``) and the
   faults (:func:`graft_sim.fault_schedules`, which draws explicit, sorted
   schedules of partitions, crashes and restarts, and shrinks toward fewer,
   simpler, earlier faults).
3. Run them against :class:`graft_sim.LocalCluster` (the real core, in memory,
   zero latency, jumping from deadline to deadline), heal, restart, settle.
4. Assert your invariants -- on every node, and across nodes.

When a property fails, Hypothesis prints the shrunk schedule and commands;
they are plain values, so the failing example replays exactly.

The other public strategies: :func:`graft_sim.fault_mixes` (network loss,
duplication, latency, clock skew, disk latency), :func:`graft_sim.workloads`
(the simulator's key/value clients) and :func:`graft_sim.sim_options` (whole
:class:`graft_sim.Simulation` runs, checked for Raft safety and
linearizability after every step).
"""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft_sim import Fault, LocalCluster, fault_schedules

ACCOUNTS = ("alice", "bob", "carol")
START_BALANCE = 100
NODES = ("n0", "n1", "n2")
DURATION = 5_000  # LocalCluster time units: heartbeats every 100, elections after 1000-2000


@attrs.frozen
class Transfer:
    """Move ``amount`` from ``src`` to ``dst`` -- refused if ``src`` would go negative."""

    op_id: int
    src: str
    dst: str
    amount: int

    def encode(self) -> bytes:
        return f"{self.op_id} {self.src} {self.dst} {self.amount}".encode()

    @staticmethod
    def decode(data: bytes) -> Transfer:
        op_id, src, dst, amount = data.decode().split()
        return Transfer(int(op_id), src, dst, int(amount))


class Bank:
    """The example state machine: deterministic, driven only by committed commands."""

    def __init__(self) -> None:
        self.balances = dict.fromkeys(ACCOUNTS, START_BALANCE)
        self.applied: list[int] = []

    def apply(self, t: Transfer) -> None:
        self.applied.append(t.op_id)
        if t.src != t.dst and self.balances[t.src] >= t.amount:
            self.balances[t.src] -= t.amount
            self.balances[t.dst] += t.amount

    @classmethod
    def replay(cls, log: list[bytes]) -> Bank:
        bank = cls()
        for data in log:
            bank.apply(Transfer.decode(data))
        return bank


# Hypothesis: (time, node, transfer) proposals; op ids are their positions.
proposals = st.lists(
    st.tuples(
        st.integers(0, DURATION - 1),
        st.sampled_from(NODES),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.integers(1, 150),
    ),
    max_size=25,
)
KINDS = ("heal", "crash", "restart", "isolate", "isolate_leader", "partition")


def run_cluster(schedule: tuple[Fault, ...], proposed: list[Transfer], times: list[int],
                nodes: list[str]) -> LocalCluster:
    """Apply faults and proposals in time order, then heal and let the cluster settle."""
    c = LocalCluster(NODES, seed=len(proposed))
    events = sorted(
        [(f.at, 0, k) for k, f in enumerate(schedule)]
        + [(t, 1, k) for k, t in enumerate(times)]
    )
    for at, what, k in events:
        c.run(at)
        if what == 1:
            if nodes[k] not in c.down:
                c.propose(nodes[k], proposed[k].encode())
            continue
        f = schedule[k]
        node = NODES[f.nodes[0]] if f.nodes else None
        if f.kind == "heal":
            c.heal()
        elif f.kind == "crash" and node is not None:
            c.crash(node)
        elif f.kind == "restart" and node is not None and node in c.down:
            c.restart(node)
        elif f.kind == "isolate" and node is not None:
            c.partition([node], [n for n in NODES if n != node])
        elif f.kind == "isolate_leader" and (leader := c.leader()) is not None:
            c.partition([leader], [n for n in NODES if n != leader])
        elif f.kind == "partition":
            side = [NODES[i] for i in f.nodes]
            c.partition(side, [n for n in NODES if n not in side])
    c.heal()
    for n in sorted(c.down):
        c.restart(n)
    c.run(c.now + 20_000)  # ten maximum election timeouts: a leader, everything applied
    return c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fault_schedules(len(NODES), DURATION, kinds=KINDS, election_ms=1000), proposals)
def test_the_bank_stays_consistent_under_faults(
    schedule: tuple[Fault, ...], drawn: list[tuple[int, str, str, str, int]]
) -> None:
    proposed = [Transfer(k, src, dst, amount) for k, (_, _, src, dst, amount) in enumerate(drawn)]
    c = run_cluster(schedule, proposed, [t for t, *_ in drawn], [n for _, n, *_ in drawn])
    banks = {n: Bank.replay(c.applied_data(n)) for n in NODES}
    for n, bank in banks.items():
        # Your invariants, on every replica: money is neither made nor lost,
        # no balance goes negative, and no command is applied twice.
        assert sum(bank.balances.values()) == START_BALANCE * len(ACCOUNTS), n
        assert min(bank.balances.values()) >= 0, n
        assert len(set(bank.applied)) == len(bank.applied), n
        assert set(bank.applied) <= {t.op_id for t in proposed}, n
    # Across replicas: after the heal, every node applied the same commands in
    # the same order, so every replica holds the same state.
    reference = banks[NODES[0]]
    for bank in banks.values():
        assert bank.applied == reference.applied
        assert bank.balances == reference.balances


def test_a_calm_cluster_commits_every_transfer() -> None:
    """Without faults every proposal commits: the harness really drives the cluster."""
    proposed = [Transfer(k, "alice", "bob", 10) for k in range(5)]
    c = run_cluster((), proposed, [2_000 + 100 * k for k in range(5)], ["n1"] * 5)
    bank = Bank.replay(c.applied_data("n2"))
    assert bank.applied == [0, 1, 2, 3, 4]
    assert bank.balances == {"alice": 50, "bob": 150, "carol": 100}
