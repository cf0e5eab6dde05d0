"""Targeted fault-schedule families: the adversarial situations a protocol bug needs.

The generic generator (:mod:`belep.sim.schedule`) spreads its faults thinly;
some bugs only show when a few things line up — a Byzantine primary
equivocating towards the replica that will lead the next view, commits lost
around a view change. Each family here draws, from the seed, one schedule of
such a situation, always **within the fault model** (one Byzantine member;
the Byzantine member's own crash or isolation does not add to the count), so
a correct protocol must stay safe and live under every one of them.
:data:`MIXTURE` cycles through the families, one per seed.

* ``equivocate-to-successor`` — the primary of view 1 (``members[1]``; view 0
  is abandoned at genesis by the PBFT replicas' start-up recovery) equivocates
  towards the primary of view 2 (and ``f-1`` more peers), one other replica's
  incoming links lose 30-70% of messages, then the primary is cut off for
  200-400 ms, forcing a view change while the successor holds a minority
  prepared certificate. Exposes a prepare quorum below ``2f+1``.
* ``late-commits`` — the primary equivocates towards its successor; just
  before it is cut off, messages into the other replicas are held back by
  300-900 ms, so blocks they commit in view 1 are delivered only after the
  successor has started view 2 from its minority certificate. Exposes the
  same bug by another path, and a view change that drops prepared blocks.
  ``late-commits-long`` holds messages back over a longer stretch (100-250 ms
  before the cut, with probability 0.5-1).
* ``lone-witness`` (crash faults only) — the primary crashes while a block's
  commits are in flight, and every replica but one (the witness) loses its
  incoming messages around the crash: the witness alone delivers the block
  before the view change. Exposes a view change that drops prepared blocks.
* ``primary-crash-mid-commit`` — the equivocating primary crashes at a random
  moment while commits are in flight and one or two replicas lose 30-95% of
  their incoming messages around the crash; it restarts (with its disk) at the
  end of the fault phase. Exposes a view change that drops prepared blocks.

No I/O; all draws come from ``random.Random(f"<family>/<seed>")``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from belep.consensus.types import NodeId
from belep.errors import ConfigError
from belep.sim.model import (
    ByzantineRole,
    CrashFault,
    FaultSchedule,
    LinkFault,
    PartitionFault,
    SimParams,
    member_ids,
)

__all__ = ["MIXTURE", "SCENARIOS", "draw_scenario"]


def _into(node: NodeId, members: tuple[NodeId, ...]) -> tuple[tuple[str, str], ...]:
    """Every directed link into ``node``."""
    return tuple((str(a), str(node)) for a in members if a != node)


def equivocate_to_successor(params: SimParams, seed: int) -> FaultSchedule:
    rng = random.Random(f"equivocate-to-successor/{seed}")
    members = member_ids(params.nodes)
    f = (len(members) - 1) // 3
    if f < 1 or len(members) < 4:
        raise ConfigError("this scenario needs a BFT committee of at least 4", found=len(members))
    primary, successor = members[1], members[2]
    others = [m for m in members if m not in (primary, successor)]
    rng.shuffle(others)
    targets = (successor, *others[: f - 1])
    victim = others[-1]
    cut = rng.randint(params.duration_ms // 5, params.duration_ms * 3 // 5)
    faults = (
        LinkFault("loss", round(rng.uniform(0.3, 0.7), 2), 0, cut, _into(victim, members)),
        PartitionFault(
            ((str(primary),), tuple(str(m) for m in members if m != primary)),
            cut,
            min(params.duration_ms, cut + rng.randint(200, 400)),
        ),
    )
    role = ByzantineRole(primary, ("equivocate",), targets)
    return FaultSchedule(faults, (role,), params.duration_ms)


def late_commits(params: SimParams, seed: int) -> FaultSchedule:
    rng = random.Random(f"late-commits/{seed}")
    members = member_ids(params.nodes)
    if len(members) < 4:
        raise ConfigError("this scenario needs a BFT committee of at least 4", found=len(members))
    primary, successor = members[1], members[2]
    others = [m for m in members if m not in (primary, successor)]
    cut = rng.randint(params.duration_ms * 3 // 20, params.duration_ms * 3 // 5)
    links = tuple(link for v in others for link in _into(v, members))
    faults = (
        LinkFault(
            "reorder",
            round(rng.uniform(0.3, 0.9), 2),
            max(0, cut - rng.randint(10, 80)),
            cut,
            links,
            rng.randint(300, 900),
        ),
        PartitionFault(
            ((str(primary),), tuple(str(m) for m in members if m != primary)),
            cut,
            min(params.duration_ms, cut + rng.randint(200, 400)),
        ),
    )
    role = ByzantineRole(primary, ("equivocate",), (successor,))
    return FaultSchedule(faults, (role,), params.duration_ms)


def primary_crash_mid_commit(params: SimParams, seed: int) -> FaultSchedule:
    rng = random.Random(f"primary-crash-mid-commit/{seed}")
    members = member_ids(params.nodes)
    if len(members) < 4:
        raise ConfigError("this scenario needs a BFT committee of at least 4", found=len(members))
    primary = members[1]
    correct = [m for m in members if m != primary]
    crash = rng.randint(params.duration_ms * 3 // 20, params.duration_ms * 7 // 10)
    victims = rng.sample(correct, rng.randint(1, len(correct) - 1))
    links = tuple(link for v in victims for link in _into(v, members))
    faults = (
        CrashFault(primary, crash, params.duration_ms),
        LinkFault(
            "loss",
            round(rng.uniform(0.3, 0.95), 2),
            max(0, crash - rng.randint(20, 150)),
            crash + rng.randint(10, 100),
            links,
        ),
    )
    role = ByzantineRole(primary, ("equivocate",))
    return FaultSchedule(faults, (role,), params.duration_ms)


def late_commits_long(params: SimParams, seed: int) -> FaultSchedule:
    rng = random.Random(f"late-commits-long/{seed}")
    members = member_ids(params.nodes)
    if len(members) < 4:
        raise ConfigError("this scenario needs a BFT committee of at least 4", found=len(members))
    primary, successor = members[1], members[2]
    others = [m for m in members if m not in (primary, successor)]
    cut = rng.randint(params.duration_ms * 3 // 20, params.duration_ms * 3 // 5)
    links = tuple(link for v in others for link in _into(v, members))
    faults = (
        LinkFault(
            "reorder",
            round(rng.uniform(0.5, 1.0), 2),
            max(0, cut - rng.randint(100, 250)),
            cut,
            links,
            rng.randint(300, 900),
        ),
        PartitionFault(
            ((str(primary),), tuple(str(m) for m in members if m != primary)),
            cut,
            min(params.duration_ms, cut + rng.randint(200, 400)),
        ),
    )
    role = ByzantineRole(primary, ("equivocate",), (successor,))
    return FaultSchedule(faults, (role,), params.duration_ms)


def lone_witness(params: SimParams, seed: int) -> FaultSchedule:
    rng = random.Random(f"lone-witness/{seed}")
    members = member_ids(params.nodes)
    if len(members) < 3:
        raise ConfigError("this scenario needs at least 3 members", found=len(members))
    primary = members[1]
    correct = [m for m in members if m != primary]
    witness = rng.choice(correct)
    crash = rng.randint(params.duration_ms * 3 // 20, params.duration_ms * 7 // 10)
    links = tuple(link for v in correct if v != witness for link in _into(v, members))
    faults = (
        CrashFault(primary, crash, params.duration_ms),
        LinkFault(
            "loss",
            round(rng.uniform(0.8, 1.0), 2),
            max(0, crash - rng.randint(10, 100)),
            crash + rng.randint(5, 40),
            links,
        ),
    )
    return FaultSchedule(faults, (), params.duration_ms)


#: Scenario families by name (``belep sim --scenario NAME``).
SCENARIOS: dict[str, Callable[[SimParams, int], FaultSchedule]] = {
    "equivocate-to-successor": equivocate_to_successor,
    "late-commits": late_commits,
    "late-commits-long": late_commits_long,
    "lone-witness": lone_witness,
    "primary-crash-mid-commit": primary_crash_mid_commit,
}


#: ``--scenario mixture``: seed ``s`` uses family ``s mod 5`` in this order.
MIXTURE = (
    "equivocate-to-successor",
    "late-commits",
    "late-commits-long",
    "lone-witness",
    "primary-crash-mid-commit",
)


def draw_scenario(name: str, params: SimParams) -> FaultSchedule:
    """The schedule of family ``name`` for ``params.seed``; raises :class:`ConfigError`."""
    if name == "mixture":
        name = MIXTURE[params.seed % len(MIXTURE)]
    family = SCENARIOS.get(name)
    if family is None:
        raise ConfigError("unknown scenario", expected=sorted(SCENARIOS), found=name)
    return family(params, params.seed)
