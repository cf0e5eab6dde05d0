"""Topology parsing and validation: the demo preset, and a table of bad inputs with clear errors."""

from __future__ import annotations

import pytest

from belep.deploy.topology import demo_topology, parse_topology
from belep.errors import ConfigError

GOOD = """
[network]
name = "t"
base_port = 9000

[[units]]
id = "city"
protocol = "pbft"
validators = ["c1", "c2", "c3", "c4"]

[[units]]
id = "d1"
parent = "city"
protocol = "raft"
validators = 3

[[units]]
id = "s1"
parent = "d1"
protocol = "hpbft"
validators = 4
consensus = { max_batch_size = 50 }

[nodes.c1]
http_port = 9999
"""


def test_demo_preset_shape() -> None:
    topo = demo_topology("hpbft")
    assert [u.level for u in topo.units] == ["city", "district", "station", "station"]
    assert [len(u.validators) for u in topo.units] == [3, 3, 4, 4]
    domains = {d.domain: d for d in topo.domains()}
    station = domains["wujiaying"]
    assert station.protocol == "hpbft"
    assert station.observers == topo.unit("chenggong").validators
    assert station.parent == "chenggong"
    assert domains["chenggong"].observers == topo.unit("kunming").validators
    assert domains["kunming"].observers == ()
    roles = {p.domain: r for p, r in topo.domains_of("chenggong-2")}
    assert roles == {"chenggong": "voter", "wujiaying": "observer", "longcheng": "observer"}
    ports = [(n.p2p_port, n.http_port) for n in topo.nodes]
    assert len({p for pair in ports for p in pair}) == 2 * len(topo.nodes)


def test_good_topology_ports_and_tuning() -> None:
    topo = parse_topology(GOOD)
    assert topo.node("c1").http_port == 9999
    assert topo.node("c1").p2p_port == 9000
    assert topo.node("c2").p2p_port == 9002
    assert topo.node("d1-1").unit == "d1"
    assert topo.unit("s1").tuning.max_batch_size == 50
    assert topo.unit("d1").tuning.max_batch_size == 500


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


BAD = [
    ("not-toml", "[[units]\n", "not valid TOML"),
    ("unknown-top-key", GOOD + "\n[extra]\nx = 1\n", "unknown key"),
    ("no-units", "[network]\nname = 'x'\n", "at least one [[units]]"),
    (
        "bad-protocol",
        _replace('protocol = "raft"', 'protocol = "paxos"'),
        "unknown consensus protocol",
    ),
    ("two-roots", _replace('parent = "city"\n', ""), "exactly one root"),
    ("unknown-parent", _replace('parent = "city"', 'parent = "nowhere"'), "parent names no unit"),
    ("duplicate-unit", _replace('id = "d1"', 'id = "s1"'), "unit id used twice"),
    (
        "node-in-two-units",
        _replace("validators = 3", 'validators = ["c1"]'),
        "node listed in two units",
    ),
    ("bad-node-id", _replace('"c4"', '"c 4"'), "invalid node id"),
    (
        "zero-validators",
        _replace("validators = 3", "validators = 0"),
        "validator count out of range",
    ),
    ("empty-validators", _replace("validators = 3", "validators = []"), "non-empty list"),
    ("port-clash", _replace("http_port = 9999", "http_port = 9002"), "port used twice"),
    ("port-range", _replace("http_port = 9999", "http_port = 70000"), "out of range"),
    ("unknown-node-override", GOOD + "\n[nodes.ghost]\nhost = 'x'\n", "names nodes no unit lists"),
    ("unknown-unit-key", _replace('id = "d1"', 'id = "d1"\nvoters = 3'), "unknown key"),
    (
        "bad-suite",
        _replace('name = "t"', 'name = "t"\nsuite = "rsa"'),
        "unknown cryptographic suite",
    ),
    ("bad-tuning", _replace("max_batch_size = 50", "max_batch_size = 0"), "out of range"),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_topologies_are_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_topology(text)
    assert message in str(caught.value)


def test_too_deep_and_cycles() -> None:
    deep = GOOD + '\n[[units]]\nid = "x"\nparent = "s1"\nprotocol = "pbft"\nvalidators = 1\n'
    with pytest.raises(ConfigError, match="nest too deeply"):
        parse_topology(deep)
    cycle = _replace('id = "city"\n', 'id = "city"\nparent = "s1"\n')
    with pytest.raises(ConfigError, match=r"exactly one root|cycle"):
        parse_topology(cycle)
