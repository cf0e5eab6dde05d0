"""The simulated network: per-link latency, partitions, loss, duplication, reordering.

:class:`Network` answers one question for the engine: a message sent now from
instance ``src`` to instance ``dst`` arrives after which delays? (``[]`` =
lost, one delay = delivered, two = duplicated.) Partitions and link faults are
switched on and off by the engine at their scheduled times.

Invariants:

* All randomness comes from the ``random.Random`` the engine passes in, drawn
  in a fixed order, so the same seed and schedule give the same answers.
* A partition is checked when a message is sent (in-flight messages still
  arrive); a message from an instance to itself is never lost or delayed.
* Delays are integers ``>= 1`` ms (``0`` only for a message to oneself) and at most
  ``max_latency_ms`` plus any reordering delay.

No I/O, no clock: time is the ``now`` argument.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from belep.sim.model import LinkFault, NetworkParams, PartitionFault

__all__ = ["Network"]


class Network:
    """Latency and faults between instance keys."""

    __slots__ = (
        "_base",
        "_dist",
        "_group",
        "_jitter",
        "_link_faults",
        "_max",
        "_rng",
        "messages_dropped",
        "messages_duplicated",
        "params",
    )

    def __init__(self, params: NetworkParams, instances: Iterable[str], rng: random.Random) -> None:
        self.params = params
        self._rng = rng
        keys = sorted(instances)
        self._base: dict[tuple[str, str], int] = {}
        for a in keys:
            for b in keys:
                if a != b:
                    self._base[(a, b)] = rng.randint(params.min_base_ms, params.max_base_ms)
        self._jitter = max(params.jitter_ms, 0)
        self._dist = params.distribution
        self._max = params.max_latency_ms
        self._group: dict[str, int] | None = None
        self._link_faults: list[LinkFault] = []
        self.messages_dropped = 0
        self.messages_duplicated = 0

    def add_instance(self, key: str, like: str) -> None:
        """Give a new instance (a twin) the links of an existing one."""
        for (a, b), base in list(self._base.items()):
            if a == like and b != key:
                self._base[(key, b)] = base
            if b == like and a != key:
                self._base[(a, key)] = base

    # -- faults ---------------------------------------------------------------

    def set_partition(self, fault: PartitionFault | None) -> None:
        if fault is None:
            self._group = None
            return
        self._group = {key: i for i, group in enumerate(fault.groups) for key in group}

    def add_link_fault(self, fault: LinkFault) -> None:
        self._link_faults.append(fault)

    def remove_link_fault(self, fault: LinkFault) -> None:
        if fault in self._link_faults:
            self._link_faults.remove(fault)

    def reachable(self, src: str, dst: str) -> bool:
        """Whether the current partition lets ``src`` talk to ``dst``."""
        if src == dst or self._group is None:
            return True
        g = self._group.get(src)
        return g is not None and g == self._group.get(dst)

    # -- routing --------------------------------------------------------------

    def latency(self, src: str, dst: str) -> int:
        """One draw of the link's latency (ms, >= 1)."""
        base = self._base.get((src, dst), self.params.max_base_ms)
        j = self._jitter
        if j == 0:
            return max(base, 1)
        rng = self._rng
        if self._dist == "exponential":
            extra = rng.expovariate(1.0 / j)
        elif self._dist == "uniform":
            extra = rng.random() * 2 * j
        else:  # lognormal with median j and a heavy tail
            extra = rng.lognormvariate(math.log(j), 0.9)
        return max(1, min(base + int(extra), self._max))

    def route(self, src: str, dst: str) -> list[int]:
        """Delays after which copies of a message from ``src`` reach ``dst``."""
        if src == dst:
            return [0]
        if self._group is not None and not self.reachable(src, dst):
            self.messages_dropped += 1
            return []
        delay = self.latency(src, dst)
        if not self._link_faults:
            return [delay]
        rng = self._rng
        delays = [delay]
        for fault in self._link_faults:
            if fault.links and (src, dst) not in fault.links:
                continue
            if rng.random() >= fault.probability:
                continue
            if fault.kind == "loss":
                self.messages_dropped += 1
                return []
            if fault.kind == "duplicate":
                self.messages_duplicated += 1
                delays.append(self.latency(src, dst) + rng.randint(0, max(fault.extra_ms, 1)))
            else:  # reorder: hold this copy back so later messages overtake it
                delays[0] += rng.randint(1, max(fault.extra_ms, 1))
        return delays
