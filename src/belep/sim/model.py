"""Parameters of one simulated run and its fault schedule, as plain records.

Owns the vocabulary shared by the simulator's parts: node naming, network and
workload parameters, the fault kinds (crash intervals, partitions, link
faults), Byzantine roles, and their JSON form (so a shrunk schedule printed
by a failing run can be fed back to ``belep sim --schedule``).

Invariants:

* Every record is a frozen dataclass; a :class:`FaultSchedule` is a pure value
  and two equal schedules give the same run for the same seed.
* Times are integer virtual milliseconds.

No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from belep.errors import ConfigError
from belep.ledger.block import NodeId

__all__ = [
    "BYZANTINE_BEHAVIOURS",
    "FAULT_KINDS",
    "ByzantineRole",
    "CrashFault",
    "FaultSchedule",
    "LinkFault",
    "LinkKind",
    "NetworkParams",
    "PartitionFault",
    "SimParams",
    "WorkloadParams",
    "member_ids",
    "observer_ids",
    "schedule_from_json",
    "schedule_to_json",
    "twin_key",
]

#: Fault kinds the schedule generator can draw (``--faults``).
FAULT_KINDS = ("crash", "partition", "loss", "duplicate", "reorder")
#: Behaviours a Byzantine replica can combine (see ``docs/spec/simulator.md``).
BYZANTINE_BEHAVIOURS = ("twins", "equivocate", "forge", "replay", "withhold", "tamper")

LinkKind = Literal["loss", "duplicate", "reorder"]


def member_ids(n: int) -> tuple[NodeId, ...]:
    """Voting members ``n0 .. n{n-1}`` (zero-padded when ``n > 10`` so they sort)."""
    width = len(str(n - 1)) if n > 10 else 1
    return tuple(NodeId(f"n{i:0{width}d}") for i in range(n))


def observer_ids(k: int) -> tuple[NodeId, ...]:
    """Observers (standbys) ``s0 .. s{k-1}``."""
    return tuple(NodeId(f"s{i}") for i in range(k))


def twin_key(node: NodeId) -> str:
    """Instance key of the second copy of a Twins replica (the first is the node id)."""
    return f"{node}#twin"


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Per-link latency: each directed link draws ``base`` uniformly in
    ``[min_base_ms, max_base_ms]`` once per run, then each message takes
    ``base + jitter`` where jitter follows ``distribution`` with mean ``jitter_ms``
    (``uniform``: ``[0, 2·jitter]``; ``exponential``; ``lognormal``: heavy tail,
    capped at ``max_latency_ms``)."""

    min_base_ms: int = 2
    max_base_ms: int = 12
    jitter_ms: int = 3
    distribution: Literal["uniform", "exponential", "lognormal"] = "exponential"
    max_latency_ms: int = 400
    disk_ms: int = 1  # Persist -> Persisted delay
    fetch_batch: int = 64  # blocks served per state-transfer answer


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """Clients submitting transactions at ``rate_per_s`` (virtual), payload sizes
    drawn log-normally around ``median_payload`` bytes, capped at ``max_payload``.
    A transaction not committed after ``retry_ms`` is resubmitted to every replica."""

    rate_per_s: int = 400
    median_payload: int = 400
    max_payload: int = 4096
    retry_ms: int = 600
    clients: int = 4


@dataclass(frozen=True, slots=True)
class CrashFault:
    """``node`` is down during ``[start_ms, end_ms)``; it restarts at ``end_ms``
    with its persisted state, or with an empty disk if ``wipe``."""

    node: NodeId
    start_ms: int
    end_ms: int
    wipe: bool = False


@dataclass(frozen=True, slots=True)
class PartitionFault:
    """During ``[start_ms, end_ms)`` only instances in the same group can talk.

    Groups hold instance keys (node ids, or :func:`twin_key` for a twin);
    an instance named in no group is isolated.
    """

    groups: tuple[tuple[str, ...], ...]
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class LinkFault:
    """During ``[start_ms, end_ms)`` messages on the named directed links (all
    links if ``links`` is empty) are lost, duplicated or delayed by up to
    ``extra_ms`` (reordering) with probability ``probability``."""

    kind: LinkKind
    probability: float
    start_ms: int
    end_ms: int
    links: tuple[tuple[str, str], ...] = ()
    extra_ms: int = 0


Fault = CrashFault | PartitionFault | LinkFault


@dataclass(frozen=True, slots=True)
class ByzantineRole:
    """A Byzantine replica and what it does (a subset of :data:`BYZANTINE_BEHAVIOURS`).

    ``targets`` names the peers it equivocates towards and withholds from; empty
    means drawn at random (half of the peers for equivocation, a third for withholding).
    """

    node: NodeId
    behaviours: tuple[str, ...]
    targets: tuple[NodeId, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """Everything that goes wrong in one run, fixed before the run starts."""

    faults: tuple[Fault, ...] = ()
    byzantine: tuple[ByzantineRole, ...] = ()
    heal_ms: int = 0  # all faults end by then; stable afterwards

    def byzantine_nodes(self) -> frozenset[NodeId]:
        return frozenset(role.node for role in self.byzantine)

    def twins(self) -> frozenset[NodeId]:
        return frozenset(role.node for role in self.byzantine if "twins" in role.behaviours)


@dataclass(frozen=True, slots=True)
class SimParams:
    """One run: which protocol, how many nodes, how long, which faults."""

    protocol: str
    nodes: int = 4
    observers: int = 0
    seed: int = 0
    duration_ms: int = 1000  # fault phase
    stable_ms: int = 3000  # fault-free tail (workload stops ``drain_ms`` before the end)
    drain_ms: int = 1000
    catchup_ms: int = 500  # lagging replicas must hold what was committed by end - drain - catchup
    faults: tuple[str, ...] = FAULT_KINDS
    byzantine: int = 0
    beyond_model: bool = False
    network: NetworkParams = field(default_factory=NetworkParams)
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    planted_bugs: frozenset[str] = frozenset()
    # Replica configuration overrides (shorter than production: runs are short).
    max_batch_size: int = 64
    max_batch_wait_ms: int = 20
    window: int = 8
    request_timeout_ms: int = 300
    heartbeat_ms: int = 50
    checkpoint_interval: int = 8
    trace: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError("a simulation needs at least one node", found=self.nodes)
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ConfigError("unknown fault kind", expected=list(FAULT_KINDS), found=unknown)
        if self.drain_ms > self.stable_ms:
            raise ConfigError(
                "drain period longer than the stable period",
                expected=f"<= {self.stable_ms}",
                found=self.drain_ms,
            )

    @property
    def end_ms(self) -> int:
        return self.duration_ms + self.stable_ms

    @property
    def catchup_deadline_ms(self) -> int:
        """Blocks committed by then must be held by every correct replica at the end."""
        return max(self.duration_ms, self.end_ms - self.drain_ms - self.catchup_ms)


# --------------------------------------------------------------------------
# JSON form of a schedule (for printing a shrunk schedule and replaying it)
# --------------------------------------------------------------------------


def schedule_to_json(schedule: FaultSchedule) -> dict[str, object]:
    faults: list[dict[str, object]] = []
    for f in schedule.faults:
        if isinstance(f, CrashFault):
            faults.append(
                {"crash": f.node, "start": f.start_ms, "end": f.end_ms, "wipe": f.wipe},
            )
        elif isinstance(f, PartitionFault):
            faults.append(
                {"partition": [list(g) for g in f.groups], "start": f.start_ms, "end": f.end_ms}
            )
        else:
            faults.append(
                {
                    "link": f.kind,
                    "p": f.probability,
                    "start": f.start_ms,
                    "end": f.end_ms,
                    "links": [list(pair) for pair in f.links],
                    "extra": f.extra_ms,
                }
            )
    return {
        "faults": faults,
        "byzantine": [
            {"node": r.node, "behaviours": list(r.behaviours)} for r in schedule.byzantine
        ],
        "heal_ms": schedule.heal_ms,
    }


def _int(obj: dict[str, object], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError("schedule field must be an integer", where=key, found=value)
    return value


def _str_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("schedule field must be a list of strings", where=what, found=value)
    return [str(v) for v in value]


def _fault_from_json(item: object) -> Fault:
    if not isinstance(item, dict):
        raise ConfigError("schedule fault must be an object", found=item)
    if "crash" in item:
        return CrashFault(
            NodeId(str(item["crash"])), _int(item, "start"), _int(item, "end"), bool(item["wipe"])
        )
    if "partition" in item:
        groups = item["partition"]
        if not isinstance(groups, list):
            raise ConfigError("partition groups must be a list", found=groups)
        return PartitionFault(
            tuple(tuple(_str_list(g, "partition")) for g in groups),
            _int(item, "start"),
            _int(item, "end"),
        )
    kind = item.get("link")
    if kind not in ("loss", "duplicate", "reorder"):
        raise ConfigError("unknown schedule fault", expected="crash, partition or link", found=item)
    links_raw = item.get("links", [])
    if not isinstance(links_raw, list):
        raise ConfigError("links must be a list", found=links_raw)
    links = []
    for pair in links_raw:
        a, b = _str_list(pair, "links")
        links.append((a, b))
    p = item.get("p")
    if not isinstance(p, int | float):
        raise ConfigError("link fault probability must be a number", found=p)
    return LinkFault(
        kind,
        float(p),
        _int(item, "start"),
        _int(item, "end"),
        tuple(links),
        _int(item, "extra"),
    )


def schedule_from_json(obj: object) -> FaultSchedule:
    """Inverse of :func:`schedule_to_json`; raises :class:`ConfigError`."""
    if not isinstance(obj, dict):
        raise ConfigError("schedule must be a JSON object", found=type(obj).__name__)
    faults_raw = obj.get("faults", [])
    byz_raw = obj.get("byzantine", [])
    if not isinstance(faults_raw, list) or not isinstance(byz_raw, list):
        raise ConfigError("schedule faults and byzantine must be lists")
    roles = []
    for r in byz_raw:
        if not isinstance(r, dict):
            raise ConfigError("byzantine role must be an object", found=r)
        roles.append(
            ByzantineRole(
                NodeId(str(r["node"])),
                tuple(_str_list(r["behaviours"], "behaviours")),
                tuple(NodeId(t) for t in _str_list(r.get("targets", []), "targets")),
            )
        )
    return FaultSchedule(
        tuple(_fault_from_json(item) for item in faults_raw),
        tuple(roles),
        _int(obj, "heal_ms"),
    )
