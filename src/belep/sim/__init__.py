"""The deterministic consensus simulator (``docs/spec/simulator.md``).

Runs the real replica code of :mod:`belep.consensus` on a virtual clock against
a seeded adversarial network — latency, loss, duplication, reordering,
partitions, crashes with or without the disk, Byzantine replicas (message
rewriting and Twins) — and checks the safety invariants at every delivery.
The same seed gives a byte-identical trace.

Public API (the submodules hold the rest):

* :class:`SimParams`, :class:`FaultSchedule` and the fault records — what a run is;
* :func:`get_profile` — a registered protocol with its fault model and certificate rule;
* :func:`run_seed`, :func:`run_seeds`, :func:`summarize`, :func:`shrink` — running and judging;
* :func:`draw_scenario` — targeted schedule families;
* :class:`Simulation` — one run, step by step, for tests that need its internals.

The simulator uses ``random`` (seeded streams only) and no other I/O; it never
reads the wall clock except to report how long a run took.
"""

from belep.sim.engine import Simulation
from belep.sim.model import (
    ByzantineRole,
    CrashFault,
    FaultSchedule,
    LinkFault,
    NetworkParams,
    PartitionFault,
    SimParams,
    WorkloadParams,
)
from belep.sim.protocols import get_profile
from belep.sim.runner import RunResult, run_seed, run_seeds, shrink, summarize
from belep.sim.scenarios import draw_scenario

__all__ = [
    "ByzantineRole",
    "CrashFault",
    "FaultSchedule",
    "LinkFault",
    "NetworkParams",
    "PartitionFault",
    "RunResult",
    "SimParams",
    "Simulation",
    "WorkloadParams",
    "draw_scenario",
    "get_profile",
    "run_seed",
    "run_seeds",
    "shrink",
    "summarize",
]
