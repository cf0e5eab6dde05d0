"""The network topology: units (city > districts > stations), their validators, their domains.

Owns the TOML topology format (``docs/spec/topology.md``), its strict parser
:func:`parse_topology` and the ready-made :func:`demo_topology`. A topology
says *who* runs *what*; :mod:`belep.deploy.provision` turns it into keys,
signed genesis files and node configurations.

Invariants of a :class:`Topology` (checked by :func:`build_topology`, so an
invalid one cannot exist):

* unit and node ids are valid ledger ids (``[A-Za-z0-9._-]{1,64}``), unique
  across units and across nodes; a node belongs to exactly one unit;
* the units form one tree: exactly one root (the city), every ``parent``
  names a unit, no cycle, depth at most three (city > district > station);
* every unit has at least one validator and a protocol the ledger knows
  (``pbft``, ``hpbft``, ``raft``);
* every node has a distinct ``(host, port)`` for its peer port and its HTTP
  port, all in ``1..65535``.

A unit's **domain** has the unit's validators as voters and the parent
unit's validators as observers (HPBFT standbys; plain observers under
PBFT/Raft), so a parent holds a replica of every child chain (DESIGN §2).

Pure: parsing takes text; :func:`read_topology` is the only file read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from belep.crypto import DEFAULT_SUITE, get_suite
from belep.errors import ConfigError, StorageError, ValidationError
from belep.ledger.block import DomainId, NodeId
from belep.ledger.genesis import PROTOCOLS, check_id
from belep.node.config import AnchorPolicy, TuningPlan

__all__ = [
    "LEVELS",
    "DomainPlan",
    "NodePlan",
    "Topology",
    "UnitPlan",
    "build_topology",
    "demo_topology",
    "parse_topology",
    "read_topology",
]

#: Level names by depth in the unit tree.
LEVELS = ("city", "district", "station")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 7400

_TOP_KEYS = frozenset({"network", "anchoring", "consensus", "units", "nodes"})
_NETWORK_KEYS = frozenset({"name", "suite", "host", "base_port"})
_ANCHOR_KEYS = frozenset({"every_blocks", "every_ms"})
_UNIT_KEYS = frozenset({"id", "name", "parent", "protocol", "validators", "consensus"})
_NODE_KEYS = frozenset({"host", "p2p_port", "http_port"})
_TUNING_KEYS = frozenset(f.name for f in fields(TuningPlan))


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One validator node: its unit and where it listens."""

    node_id: NodeId
    unit: DomainId
    host: str
    p2p_port: int
    http_port: int

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@dataclass(frozen=True, slots=True)
class UnitPlan:
    """A police unit and the domain (chain) it owns."""

    unit_id: DomainId
    name: str
    parent: DomainId | None
    protocol: str
    validators: tuple[NodeId, ...]
    level: str
    tuning: TuningPlan


@dataclass(frozen=True, slots=True)
class DomainPlan:
    """Who votes and who observes in one unit's domain."""

    domain: DomainId
    parent: DomainId | None
    protocol: str
    voters: tuple[NodeId, ...]
    observers: tuple[NodeId, ...]
    tuning: TuningPlan


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated network topology."""

    name: str
    suite: str
    units: tuple[UnitPlan, ...]
    nodes: tuple[NodePlan, ...]
    anchoring: AnchorPolicy

    def unit(self, unit_id: str) -> UnitPlan:
        for unit in self.units:
            if unit.unit_id == unit_id:
                return unit
        raise ConfigError("no such unit", expected=[u.unit_id for u in self.units], found=unit_id)

    def node(self, node_id: str) -> NodePlan:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ConfigError("no such node", found=node_id)

    def children(self, unit_id: str) -> tuple[UnitPlan, ...]:
        return tuple(u for u in self.units if u.parent == unit_id)

    def domains(self) -> tuple[DomainPlan, ...]:
        """Each unit's domain: voters = its validators, observers = the parent's validators."""
        plans = []
        for unit in self.units:
            observers = () if unit.parent is None else self.unit(unit.parent).validators
            plans.append(
                DomainPlan(
                    unit.unit_id,
                    unit.parent,
                    unit.protocol,
                    unit.validators,
                    observers,
                    unit.tuning,
                )
            )
        return tuple(plans)

    def domains_of(self, node_id: str) -> tuple[tuple[DomainPlan, str], ...]:
        """The domains ``node_id`` takes part in, each with its role (voter/observer)."""
        found = []
        for plan in self.domains():
            if node_id in plan.voters:
                found.append((plan, "voter"))
            elif node_id in plan.observers:
                found.append((plan, "observer"))
        return tuple(found)


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def read_topology(path: Path) -> Topology:
    """Read and validate a topology file; :class:`ConfigError` or :class:`StorageError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read topology file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("topology file is not UTF-8", where=str(path)) from exc
    return parse_topology(text)


def parse_topology(text: str) -> Topology:
    """Parse TOML topology text strictly (unknown keys are errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"topology is not valid TOML: {exc}") from exc
    return build_topology(data)


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(
            "expected a table", expected="table", found=type(value).__name__, where=where
        )
    return value


def _keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError("unknown key", expected=sorted(allowed), found=unknown, where=where)


def _str(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError("missing key", expected=key, where=where)
    if not isinstance(value, str):
        raise ConfigError("expected a string", found=type(value).__name__, where=f"{where}.{key}")
    return value


def _int(table: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if type(value) is not int:
        raise ConfigError("expected an integer", found=type(value).__name__, where=f"{where}.{key}")
    if not lo <= value <= hi:
        raise ConfigError(
            "out of range", expected=f"{lo}..{hi}", found=value, where=f"{where}.{key}"
        )
    return value


def _id(value: str, what: str, where: str) -> str:
    try:
        return check_id(value, what)
    except ConfigError as exc:
        raise ConfigError(exc.message, expected=exc.expected, found=exc.found, where=where) from exc


def _tuning(table: Mapping[str, Any], where: str, base: TuningPlan) -> TuningPlan:
    _keys(table, _TUNING_KEYS, where)
    return TuningPlan(
        max_batch_size=_int(table, "max_batch_size", where, base.max_batch_size, 1, 100_000),
        max_batch_wait_ms=_int(
            table, "max_batch_wait_ms", where, base.max_batch_wait_ms, 0, 60_000
        ),
        window=_int(table, "window", where, base.window, 1, 1024),
        request_timeout_ms=_int(
            table, "request_timeout_ms", where, base.request_timeout_ms, 10, 600_000
        ),
        heartbeat_ms=_int(table, "heartbeat_ms", where, base.heartbeat_ms, 1, 600_000),
        checkpoint_interval=_int(
            table, "checkpoint_interval", where, base.checkpoint_interval, 1, 1_000_000
        ),
        admission_delay_ms=_int(
            table, "admission_delay_ms", where, base.admission_delay_ms, 0, 600_000
        ),
        max_outstanding=_int(table, "max_outstanding", where, base.max_outstanding, 0, 100_000),
    )


def _validators(value: object, unit_id: str, where: str) -> tuple[NodeId, ...]:
    if type(value) is int:
        if not 1 <= value <= 100:
            raise ConfigError(
                "validator count out of range", expected="1..100", found=value, where=where
            )
        return tuple(NodeId(f"{unit_id}-{i}") for i in range(1, value + 1))
    if isinstance(value, list) and value:
        ids = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    "validator ids must be strings", found=item, where=f"{where}[{index}]"
                )
            ids.append(NodeId(_id(item, "node id", f"{where}[{index}]")))
        return tuple(ids)
    raise ConfigError(
        "validators must be a count or a non-empty list of node ids", found=value, where=where
    )


def build_topology(data: Mapping[str, Any]) -> Topology:
    """Validate a parsed TOML document into a :class:`Topology`."""
    _keys(data, _TOP_KEYS, "topology")
    network = _table(data.get("network", {}), "network")
    _keys(network, _NETWORK_KEYS, "network")
    name = _id(_str(network, "name", "network", "belep"), "network name", "network.name")
    suite = _str(network, "suite", "network", DEFAULT_SUITE)
    try:
        get_suite(suite)
    except ValidationError as exc:
        raise ConfigError(
            exc.message, expected=exc.expected, found=suite, where="network.suite"
        ) from exc
    host = _str(network, "host", "network", DEFAULT_HOST)
    base_port = _int(network, "base_port", "network", DEFAULT_BASE_PORT, 1, 65535)
    anchoring_table = _table(data.get("anchoring", {}), "anchoring")
    _keys(anchoring_table, _ANCHOR_KEYS, "anchoring")
    anchoring = AnchorPolicy(
        every_blocks=_int(anchoring_table, "every_blocks", "anchoring", 16, 1, 1_000_000),
        every_ms=_int(anchoring_table, "every_ms", "anchoring", 5000, 10, 86_400_000),
    )
    default_tuning = _tuning(
        _table(data.get("consensus", {}), "consensus"), "consensus", TuningPlan()
    )

    raw_units = data.get("units")
    if not isinstance(raw_units, list) or not raw_units:
        raise ConfigError("a topology needs at least one [[units]] entry", where="units")
    units: list[UnitPlan] = []
    parents: dict[str, str | None] = {}
    owner: dict[str, str] = {}
    for index, raw in enumerate(raw_units):
        where = f"units[{index}]"
        table = _table(raw, where)
        _keys(table, _UNIT_KEYS, where)
        unit_id = _id(_str(table, "id", where), "unit id", f"{where}.id")
        if unit_id in parents:
            raise ConfigError("unit id used twice", found=unit_id, where=f"{where}.id")
        parent_raw = table.get("parent")
        parent = (
            None
            if parent_raw is None
            else _id(_str(table, "parent", where), "unit id", f"{where}.parent")
        )
        protocol = _str(table, "protocol", where)
        if protocol not in PROTOCOLS:
            raise ConfigError(
                "unknown consensus protocol",
                expected=sorted(PROTOCOLS),
                found=protocol,
                where=f"{where}.protocol",
            )
        validators = _validators(table.get("validators"), unit_id, f"{where}.validators")
        for node in validators:
            if node in owner:
                raise ConfigError(
                    "node listed in two units (or twice)",
                    expected="each node in exactly one unit",
                    found=f"{node} in {owner[node]} and {unit_id}",
                    where=f"{where}.validators",
                )
            owner[node] = unit_id
        tuning = _tuning(
            _table(table.get("consensus", {}), f"{where}.consensus"),
            f"{where}.consensus",
            default_tuning,
        )
        parents[unit_id] = parent
        units.append(
            UnitPlan(
                unit_id=DomainId(unit_id),
                name=_str(table, "name", where, unit_id),
                parent=None if parent is None else DomainId(parent),
                protocol=protocol,
                validators=validators,
                level="",
                tuning=tuning,
            )
        )
    overlap = sorted(set(owner) & set(parents))
    if overlap:
        raise ConfigError("a node id equals a unit id", found=overlap, where="units")
    levels = _levels(parents)
    units = [
        UnitPlan(u.unit_id, u.name, u.parent, u.protocol, u.validators, levels[u.unit_id], u.tuning)
        for u in units
    ]
    nodes = _nodes(units, _table(data.get("nodes", {}), "nodes"), host, base_port)
    return Topology(name, suite, tuple(units), nodes, anchoring)


def _levels(parents: Mapping[str, str | None]) -> dict[str, str]:
    roots = [u for u, p in parents.items() if p is None]
    if len(roots) != 1:
        raise ConfigError(
            "the units must have exactly one root (the city, without a parent)",
            expected=1,
            found=roots,
            where="units",
        )
    for unit, parent in parents.items():
        if parent is not None and parent not in parents:
            raise ConfigError(
                "parent names no unit", expected=sorted(parents), found=parent, where=f"unit {unit}"
            )
    levels: dict[str, str] = {}
    for unit in parents:
        chain = [unit]
        current = parents[unit]
        while current is not None:
            if current in chain:
                raise ConfigError(
                    "the unit tree has a cycle", found=[*chain, current], where=f"unit {unit}"
                )
            chain.append(current)
            current = parents[current]
        depth = len(chain) - 1
        if depth >= len(LEVELS):
            raise ConfigError(
                "units nest too deeply",
                expected="city > district > station (depth <= 3)",
                found=" > ".join(reversed(chain)),
                where=f"unit {unit}",
            )
        levels[unit] = LEVELS[depth]
    return levels


def _nodes(
    units: Sequence[UnitPlan], overrides: Mapping[str, Any], host: str, base_port: int
) -> tuple[NodePlan, ...]:
    known = {n for u in units for n in u.validators}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError("[nodes] names nodes no unit lists", found=unknown, where="nodes")
    nodes: list[NodePlan] = []
    used: dict[tuple[str, int], str] = {}
    index = 0
    for unit in units:
        for node_id in unit.validators:
            where = f"nodes.{node_id}"
            table = _table(overrides.get(node_id, {}), where)
            _keys(table, _NODE_KEYS, where)
            default_p2p = base_port + 2 * index
            index += 1
            node_host = _str(table, "host", where, host)
            p2p = _int(table, "p2p_port", where, min(default_p2p, 65535), 1, 65535)
            http = _int(table, "http_port", where, min(default_p2p + 1, 65535), 1, 65535)
            for port in (p2p, http):
                if (node_host, port) in used:
                    raise ConfigError(
                        "port used twice",
                        found=f"{node_host}:{port} ({used[(node_host, port)]} and {node_id})",
                        where=where,
                    )
                used[(node_host, port)] = node_id
            nodes.append(NodePlan(node_id, unit.unit_id, node_host, p2p, http))
    return tuple(nodes)


# --------------------------------------------------------------------------
# The demo preset
# --------------------------------------------------------------------------

DEMO_TOPOLOGY_TEMPLATE = """\
# The demo topology (DESIGN §2): one city bureau, one district bureau, two police stations.
# Station domains run {station_protocol} with the district's validators as standbys and
# anchor into the district; the district anchors into the city.
[network]
name = "belep-demo"
suite = "ed25519"
host = "127.0.0.1"
base_port = {base_port}

[anchoring]
every_blocks = 8
every_ms = 3000

[[units]]
id = "kunming"
name = "昆明市公安局"
protocol = "pbft"
validators = 3

[[units]]
id = "chenggong"
name = "呈贡分局"
parent = "kunming"
protocol = "pbft"
validators = 3

[[units]]
id = "wujiaying"
name = "吴家营派出所"
parent = "chenggong"
protocol = "{station_protocol}"
validators = 4

[[units]]
id = "longcheng"
name = "龙城派出所"
parent = "chenggong"
protocol = "{station_protocol}"
validators = 4
"""


def demo_topology_text(station_protocol: str, base_port: int = DEFAULT_BASE_PORT) -> str:
    """The demo preset as TOML text (written beside the generated network)."""
    return DEMO_TOPOLOGY_TEMPLATE.format(station_protocol=station_protocol, base_port=base_port)


def demo_topology(station_protocol: str, base_port: int = DEFAULT_BASE_PORT) -> Topology:
    """The demo preset: city (3), district (3), two stations (4 each)."""
    return parse_topology(demo_topology_text(station_protocol, base_port))
