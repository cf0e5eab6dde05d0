"""`belep init` output: layout, secret-file permissions, signed geneses, configs that parse."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from belep.deploy.provision import provision
from belep.deploy.topology import demo_topology, demo_topology_text
from belep.errors import ConfigError, InvalidSignature
from belep.keys import read_private_key
from belep.ledger.datadir import node_domain_dir
from belep.ledger.genesis_file import read_genesis
from belep.node.config import read_node_config
from belep.node.genesis_seal import (
    GENESIS_SIGS_FILE,
    check_genesis_signatures,
    read_genesis_signatures,
)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("net") / "demo"
    provision(demo_topology("hpbft"), out, topology_text=demo_topology_text("hpbft"), now_ms=1)
    return out


def test_secret_files_are_private(network: Path) -> None:
    for node_dir in sorted((network / "nodes").iterdir()):
        for name in ("node.key", "operator.token"):
            mode = stat.S_IMODE((node_dir / name).stat().st_mode)
            assert mode == 0o600, (node_dir.name, name, oct(mode))


def test_every_genesis_is_signed_by_every_member(network: Path) -> None:
    domains = sorted(p.name for p in (network / "genesis").iterdir())
    assert domains == ["chenggong", "kunming", "longcheng", "wujiaying"]
    for domain in domains:
        directory = network / "genesis" / domain
        genesis = read_genesis(directory / "genesis.json")
        genesis_hash, signatures = read_genesis_signatures(directory / GENESIS_SIGS_FILE)
        check_genesis_signatures(genesis, genesis_hash, signatures)
        assert set(signatures) == {m.node_id for m in (*genesis.voters, *genesis.observers)}
    station = read_genesis(network / "genesis" / "wujiaying" / "genesis.json")
    assert station.protocol == "hpbft"
    assert station.parent == "chenggong"
    assert [m.node_id for m in station.observers] == ["chenggong-1", "chenggong-2", "chenggong-3"]


def test_configs_match_keys_and_domains(network: Path) -> None:
    ids = set()
    for node_dir in sorted((network / "nodes").iterdir()):
        config = read_node_config(node_dir / "node.toml")
        ids.add(config.network_id)
        key = read_private_key(config.key_file)
        assert config.peers[config.node_id].key == key.public_key
        for domain in config.domains:
            domain_dir = node_domain_dir(config.data_dir, domain)
            genesis = read_genesis(domain_dir.genesis_path)
            assert config.node_id in {m.node_id for m in (*genesis.voters, *genesis.observers)}
            assert genesis == read_genesis(network / "genesis" / domain / "genesis.json")
    assert len(ids) == 1
    chenggong = read_node_config(network / "nodes" / "chenggong-1" / "node.toml")
    assert chenggong.domains == ("chenggong", "wujiaying", "longcheng")


def test_tampered_or_missing_signature_is_refused(network: Path) -> None:
    directory = network / "genesis" / "kunming"
    genesis = read_genesis(directory / "genesis.json")
    genesis_hash, signatures = read_genesis_signatures(directory / GENESIS_SIGS_FILE)
    flipped = dict(signatures)
    first = next(iter(flipped))
    flipped[first] = bytes([flipped[first][0] ^ 1]) + flipped[first][1:]
    with pytest.raises(InvalidSignature):
        check_genesis_signatures(genesis, genesis_hash, flipped)
    missing = dict(signatures)
    del missing[first]
    with pytest.raises(ConfigError, match="not signed by every member"):
        check_genesis_signatures(genesis, genesis_hash, missing)
    with pytest.raises(ConfigError, match="another genesis"):
        check_genesis_signatures(genesis, bytes(32), signatures)
    document = json.loads((directory / GENESIS_SIGS_FILE).read_text())
    assert document["genesis_hash"] == genesis.genesis_hash.hex()


def test_refuses_a_non_empty_directory(network: Path) -> None:
    with pytest.raises(ConfigError, match="not empty"):
        provision(demo_topology("pbft"), network, topology_text="")
