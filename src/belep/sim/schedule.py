"""Random fault schedules that respect a protocol's fault model.

:func:`generate_schedule` draws, from its own ``random.Random``, the Byzantine
replicas and their behaviours, crash intervals, partitions and link faults
for one run. Within the model (the default) it guarantees, at every instant:

    Byzantine members + crashed members + wiped members  <=  f

where ``f`` is the profile's ``max_faulty(n)`` (``(n-1)//3`` for BFT protocols,
``(n-1)//2`` for Raft), Byzantine replicas are drawn only for Byzantine-tolerant
protocols, and a replica whose disk is wiped on restart counts as faulty from
its crash to the end of the run (it may have forgotten votes it cast).
Partitions, loss, duplication and reordering are asynchrony, not faults: they
are unbounded before ``heal_ms`` and absent after it. With ``beyond_model``
the bound is lifted (at least ``f + 1`` members crash together).

Every fault ends by ``heal_ms = params.duration_ms``; the run then has
``stable_ms`` of fault-free network in which liveness is judged.

No I/O.
"""

from __future__ import annotations

import random

from belep.consensus.types import NodeId
from belep.errors import ConfigError
from belep.sim.model import (
    ByzantineRole,
    CrashFault,
    FaultSchedule,
    LinkFault,
    LinkKind,
    PartitionFault,
    SimParams,
    member_ids,
    observer_ids,
    twin_key,
)
from belep.sim.protocols import ProtocolProfile

__all__ = ["check_schedule", "generate_schedule", "max_faulty_at_once"]

_MUTATING = ("equivocate", "forge", "replay", "withhold", "tamper")


def max_faulty_at_once(schedule: FaultSchedule) -> int:
    """The largest number of members that are Byzantine, down or wiped at one instant."""
    byz = schedule.byzantine_nodes()
    crashes = [f for f in schedule.faults if isinstance(f, CrashFault) and f.node not in byz]
    points = sorted({0, *(c.start_ms for c in crashes)})
    worst = len(byz)
    for t in points:
        faulty = {c.node for c in crashes if c.start_ms <= t < c.end_ms}
        faulty |= {c.node for c in crashes if c.wipe and c.start_ms <= t}
        worst = max(worst, len(byz) + len(faulty))
    return worst


def check_schedule(schedule: FaultSchedule, params: SimParams, profile: ProtocolProfile) -> None:
    """Raise :class:`ConfigError` if the schedule leaves the protocol's fault model."""
    if params.beyond_model:
        return
    f = profile.max_faulty(params.nodes)
    if schedule.byzantine and not profile.byzantine_tolerant:
        raise ConfigError(
            f"{profile.name} tolerates crash faults only", expected=0, found=len(schedule.byzantine)
        )
    if not profile.byzantine_tolerant and any(
        isinstance(c, CrashFault) and c.wipe for c in schedule.faults
    ):
        raise ConfigError(f"{profile.name} cannot lose its persisted state within its fault model")
    worst = max_faulty_at_once(schedule)
    if worst > f:
        raise ConfigError(
            "fault schedule exceeds the protocol's fault bound (use --beyond-model)",
            expected=f"<= {f}",
            found=worst,
        )


def generate_schedule(
    params: SimParams, profile: ProtocolProfile, rng: random.Random
) -> FaultSchedule:
    """Draw one schedule (see the module docstring for its guarantees)."""
    members = member_ids(params.nodes)
    n = len(members)
    f = profile.max_faulty(n)
    budget = n if params.beyond_model else f
    if params.byzantine and not profile.byzantine_tolerant and not params.beyond_model:
        raise ConfigError(
            f"{profile.name} tolerates no Byzantine replica (use --beyond-model)",
            expected=0,
            found=params.byzantine,
        )
    if params.byzantine > budget:
        raise ConfigError(
            "more Byzantine replicas than the protocol tolerates (use --beyond-model)",
            expected=f"<= {f}",
            found=params.byzantine,
        )
    duration = params.duration_ms
    kinds = set(params.faults)

    roles = _byzantine_roles(members, params.byzantine, rng)
    byz = {r.node for r in roles}
    twins = [r.node for r in roles if "twins" in r.behaviours]
    faults: list[CrashFault | PartitionFault | LinkFault] = []

    if "crash" in kinds and duration > 0:
        crashable = [m for m in members if m not in byz] + list(observer_ids(params.observers))
        faults.extend(_crashes(crashable, budget - len(byz), params, profile, rng))

    instance_keys = [str(m) for m in members] + [twin_key(t) for t in twins]
    instance_keys += [str(o) for o in observer_ids(params.observers)]
    if ("partition" in kinds or twins) and duration > 0:
        faults.extend(_partitions(instance_keys, twins, duration, rng, force=bool(twins)))
    link_kinds: tuple[LinkKind, ...] = ("loss", "duplicate", "reorder")
    for kind in link_kinds:
        if kind in kinds and duration > 0 and rng.random() < 0.7:
            start = rng.randrange(0, max(duration // 2, 1))
            end = rng.randint(start + 1, duration)
            links: tuple[tuple[str, str], ...] = ()
            if rng.random() < 0.5:
                pairs = [(a, b) for a in instance_keys for b in instance_keys if a != b]
                links = tuple(sorted(rng.sample(pairs, max(1, len(pairs) // 3))))
            faults.append(
                LinkFault(
                    kind,
                    round(rng.uniform(0.05, 0.3), 3),
                    start,
                    end,
                    links,
                    rng.randint(5, 120),
                )
            )
    return FaultSchedule(tuple(faults), tuple(roles), duration)


def _byzantine_roles(
    members: tuple[NodeId, ...], count: int, rng: random.Random
) -> list[ByzantineRole]:
    if count <= 0:
        return []
    # A primary is the most dangerous Byzantine replica: half the time pick the primary
    # of view 0 or of view 1 (PBFT replicas move to view 1 at genesis, see scenarios).
    pool = list(members)
    chosen: list[NodeId] = []
    if rng.random() < 0.5:
        chosen.append(pool.pop(rng.randrange(min(2, len(pool)))))
    while len(chosen) < count:
        chosen.append(pool.pop(rng.randrange(len(pool))))
    roles = []
    for node in sorted(chosen):
        if rng.random() < 0.3:
            behaviours: tuple[str, ...] = ("twins",)
        else:
            k = rng.randint(1, len(_MUTATING))
            behaviours = tuple(sorted(rng.sample(_MUTATING, k)))
        roles.append(ByzantineRole(node, behaviours))
    return roles


def _crashes(
    nodes: list[NodeId],
    budget: int,
    params: SimParams,
    profile: ProtocolProfile,
    rng: random.Random,
) -> list[CrashFault]:
    duration = params.duration_ms
    if budget <= 0 or not nodes:
        return []
    out: list[CrashFault] = []
    want = rng.randint(1, 3) if not params.beyond_model else rng.randint(budget // 2 + 1, budget)
    if params.beyond_model:
        # Beyond the model: f+1 or more members down together, long enough to matter.
        f = profile.max_faulty(params.nodes)
        victims = rng.sample(nodes, min(len(nodes), max(f + 1, want)))
        start = rng.randrange(0, max(duration // 3, 1))
        return [CrashFault(v, start, duration, False) for v in sorted(victims)]
    for _ in range(want * 3):
        if len(out) >= want:
            break
        node = rng.choice(nodes)
        start = rng.randrange(0, max(duration - 50, 1))
        end = min(duration, start + rng.randint(50, max(duration // 2, 51)))
        wipe = profile.byzantine_tolerant and rng.random() < 0.25
        candidate = CrashFault(node, start, end, wipe)
        if any(c.node == node and c.start_ms < end and start < c.end_ms for c in out):
            continue
        trial = FaultSchedule((*out, candidate), (), duration)
        if max_faulty_at_once(trial) <= budget:
            out.append(candidate)
    return sorted(out, key=lambda c: (c.start_ms, c.node))


def _partitions(
    keys: list[str], twins: list[NodeId], duration: int, rng: random.Random, *, force: bool
) -> list[PartitionFault]:
    out: list[PartitionFault] = []
    count = rng.randint(1 if force else 0, 2)
    t = 0
    for _ in range(count):
        if t >= duration - 20:
            break
        start = rng.randint(t, max(t, duration // 2))
        end = min(duration, start + rng.randint(50, max(duration // 2, 51)))
        shuffled = keys[:]
        rng.shuffle(shuffled)
        groups: list[list[str]] = [[], []]
        for twin in twins:  # the two copies of a twin on opposite sides
            groups[0].append(str(twin))
            groups[1].append(twin_key(twin))
        for key in shuffled:
            if any(key in g for g in groups):
                continue
            groups[rng.randrange(2)].append(key)
        out.append(PartitionFault(tuple(tuple(sorted(g)) for g in groups if g), start, end))
        t = end
    return out
