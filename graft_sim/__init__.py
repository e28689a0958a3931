"""graft_sim: many graft_core nodes in one deterministic virtual world.

* :class:`Simulation` runs a cluster of the real core under randomized
  faults (loss, duplication, delay with a long tail, partitions of every
  shape, crashes with lost unsynced writes, pauses, clock skew, membership
  changes and leadership transfers requested at random), with snapshots,
  spare servers and reads by ReadIndex or lease drawn per run (see
  :class:`Features`); it checks Raft's safety properties after every step,
  liveness after the faults stop, and the clients' key/value history for
  linearizability.
  ``python -m graft_sim`` runs seeds of it.
* :func:`check_history` is the linearizability checker on its own.
* :class:`LocalCluster` is a hand-driven in-memory cluster for tests and demos.
* :func:`failover_trial` times a leader's replacement after a crash, the
  Raft paper's Figure 16 experiment (:class:`FailoverSetup`,
  :data:`FIGURE_16_TOP`, :data:`FIGURE_16_BOTTOM`).
* Hypothesis strategies -- :func:`sim_options`, :func:`fault_schedules`,
  :func:`fault_mixes`, :func:`workloads` -- to property-test a state machine
  on top of graft; Hypothesis shrinks a failing run to a minimal schedule whose
  ``repr`` replays it. They are imported on first use, so Hypothesis is only
  needed by those who use them.
"""

from typing import Any

from graft_sim._checker import InvariantViolation
from graft_sim._failover import (
    FIGURE_16_BOTTOM,
    FIGURE_16_TOP,
    FailoverResult,
    FailoverSetup,
    failover_trial,
    failover_trials,
)
from graft_sim._faults import Fault, FaultMix
from graft_sim._linearizability import CheckResult, Operation, Verdict, check_history
from graft_sim._local import LocalCluster, Storage
from graft_sim._world import (
    READ_MODES,
    Features,
    LivenessViolation,
    SimOptions,
    SimResult,
    Simulation,
)

_STRATEGIES = ("SIMPLEST_FIRST", "WorkloadOptions", "fault_mixes", "fault_schedules",
               "sim_options", "workloads")


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        from graft_sim import _strategies

        return getattr(_strategies, name)
    raise AttributeError(f"module 'graft_sim' has no attribute {name!r}")


__all__ = [
    "SIMPLEST_FIRST",
    "WorkloadOptions",
    "fault_mixes",
    "fault_schedules",
    "sim_options",
    "workloads",
    "FIGURE_16_BOTTOM",
    "FIGURE_16_TOP",
    "READ_MODES",
    "FailoverResult",
    "FailoverSetup",
    "failover_trial",
    "failover_trials",
    "CheckResult",
    "Fault",
    "Features",
    "FaultMix",
    "InvariantViolation",
    "LivenessViolation",
    "LocalCluster",
    "Operation",
    "SimOptions",
    "SimResult",
    "Simulation",
    "Storage",
    "Verdict",
    "check_history",
]
