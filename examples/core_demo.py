"""`make demo` (for now): three graft_core nodes in memory, narrated.

Elects a leader, appends through the leader and through a follower (which
forwards), partitions the leader away so the majority elects a new one, heals,
crashes and restarts a node from its durable state, and checks that every node
applied the same entries in the same order.
"""

from __future__ import annotations

import sys

from graft_core import (
    Action,
    Apply,
    EntryKind,
    ProposalAccepted,
    ProposalRejected,
    Role,
    RoleChanged,
)
from graft_sim import LocalCluster

_roles: dict[str, Role] = {}


def narrate(node: str, action: Action) -> None:
    if isinstance(action, RoleChanged):
        before = _roles.get(node, Role.FOLLOWER)
        _roles[node] = action.role
        if action.role in (Role.CANDIDATE, Role.LEADER):
            print(f"  [{node}] became {action.role.value} in term {action.term}")
        elif before is Role.LEADER:
            print(f"  [{node}] stepped down to {action.role.value} in term {action.term}")
    elif isinstance(action, ProposalAccepted):
        print(
            f"  [{node}] proposal #{action.request_id} accepted at index {action.index}, "
            f"term {action.term}"
        )
    elif isinstance(action, ProposalRejected):
        print(f"  [{node}] proposal #{action.request_id} rejected: {action.reason.value}")
    elif isinstance(action, Apply) and node == "a":
        for k, e in enumerate(action.entries):
            what = "no-op" if e.kind is EntryKind.NOOP else repr(e.data.decode())
            print(f"  [a] committed #{action.first_index + k} (term {e.term}): {what}")


def main() -> int:
    c = LocalCluster(("a", "b", "c"), seed=7, on_action=narrate)
    print("== Three nodes start as followers; the first election timeout fires")
    leader = c.elect()
    print(f"-> leader is {leader}\n")

    print(f"== Append through the leader ({leader})")
    c.propose(leader, b"x=1")
    c.run(c.now + 10)
    follower = next(n for n in c.ids if n != leader)
    print(f"\n== Append through a follower ({follower}): it forwards to the leader")
    c.propose(follower, b"y=2")
    c.run(c.now + 10)

    rest = [n for n in c.ids if n != leader]
    print(f"\n== Partition the leader {leader} away from {rest}")
    c.partition([leader], rest)
    c.propose(leader, b"lost?")  # accepted by the old leader, can never commit
    c.run(c.now + 5_000)
    new_leader = c.leader()
    print(f"-> majority elected {new_leader} (term {c.nodes[new_leader or ''].term})")
    c.propose(rest[0], b"z=3")
    c.run(c.now + 10)

    print("\n== Heal: the old leader learns the new term and catches up")
    c.heal()
    c.run(c.now + 3_000)
    print(f"-> {leader} is now {c.nodes[leader].role.value}")

    current = c.leader() or rest[0]
    victim = next(n for n in c.ids if n != current)
    print(f"\n== Crash {victim} and restart it from its durable state")
    c.crash(victim)
    c.propose(current, b"w=4")
    c.run(c.now + 100)
    c.restart(victim)
    c.run(c.now + 3_000)

    print("\n== Every node applied the same entries, in the same order:")
    logs = {n: c.applied_data(n) for n in c.ids}
    for n, data in logs.items():
        print(f"  {n}: {[d.decode() for d in data]}")
    same = len({tuple(v) for v in logs.values()}) == 1
    lost = b"lost?" not in logs["a"]
    print("OK" if same and lost else "MISMATCH")
    return 0 if same and lost else 1


if __name__ == "__main__":
    sys.exit(main())
