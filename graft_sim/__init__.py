"""graft_sim: drive many graft_core nodes deterministically.

Today this holds :class:`LocalCluster`, a hand-driven in-memory cluster used by
the core's tests, the demo and the notebooks. The randomized, fault-injecting
simulator with invariant checking and shrinking is built on top of it by the
graft_sim issue.
"""

from graft_sim._local import LocalCluster, Storage

__all__ = ["LocalCluster", "Storage"]
