"""Genesis: canonical hash independent of the JSON layout, strict parsing, committee seam."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from belep.crypto import PrivateKey
from belep.errors import ChainError, ConfigError, ValidationError
from belep.ledger.block import DomainId, NodeId
from belep.ledger.builder import committee_keys, make_genesis
from belep.ledger.config import history_from_genesis
from belep.ledger.genesis import Genesis, Member, quorum_size
from belep.ledger.genesis_file import read_genesis, write_genesis


def test_hash_ignores_json_layout(genesis: Genesis) -> None:
    wire = json.loads(genesis.to_json())
    shuffled = json.dumps(dict(reversed(list(wire.items()))), separators=(",", ":"))
    again = Genesis.from_json(shuffled)
    assert again == genesis
    assert again.genesis_hash == genesis.genesis_hash
    assert Genesis.decode(genesis.encode()) == genesis


def test_hash_commits_to_every_field(genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:
    variants = [
        make_genesis("station-2", keys, created_ms=genesis.created_ms),
        make_genesis("station-1", keys, created_ms=genesis.created_ms + 1),
        make_genesis("station-1", keys, created_ms=genesis.created_ms, protocol="hpbft"),
        make_genesis("station-1", keys, created_ms=genesis.created_ms, parent="county-1"),
        make_genesis("station-1", dict(reversed(keys.items())), created_ms=genesis.created_ms),
    ]
    hashes = {genesis.genesis_hash} | {v.genesis_hash for v in variants}
    assert len(hashes) == 1 + len(variants)


def test_file_round_trip_and_no_overwrite(tmp_path: Path, genesis: Genesis) -> None:
    path = tmp_path / "genesis.json"
    write_genesis(path, genesis)
    assert read_genesis(path) == genesis
    with pytest.raises(ConfigError):
        write_genesis(path, genesis)
    assert not list(tmp_path.glob(".*.tmp"))


def edit(genesis: Genesis, **changes: Any) -> str:
    wire: dict[str, Any] = json.loads(genesis.to_json())
    for key, value in changes.items():
        if value is _DELETE:
            del wire[key]
        else:
            wire[key] = value
    return json.dumps(wire)


_DELETE = object()
OTHER_SUITE_KEY = "sm2:" + "00" * 33


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"format": "belep-genesis-v0"}, "unsupported genesis format", id="format"),
        pytest.param({"domain": "a/b"}, "invalid domain id", id="domain-slash"),
        pytest.param({"domain": ".."}, "invalid domain id", id="domain-dotdot"),
        pytest.param({"domain": ""}, "invalid domain id", id="domain-empty"),
        pytest.param({"parent": "station-1"}, "own parent", id="self-parent"),
        pytest.param({"protocol": "pow"}, "unknown consensus protocol", id="protocol"),
        pytest.param({"quorum_rule": "majority"}, "does not fit", id="rule-mismatch"),
        pytest.param({"quorum_rule": ""}, "unknown quorum rule", id="rule-empty"),
        pytest.param({"voters": []}, "at least one voter", id="no-voters"),
        pytest.param({"suite": "rot13"}, "unknown cryptographic suite", id="suite"),
        pytest.param({"created_ms": 1.5}, "integers", id="float"),
        pytest.param({"created_ms": True}, "wrong type", id="bool-as-int"),
        pytest.param({"created_ms": _DELETE}, "wrong fields", id="missing-field"),
        pytest.param({"extra": 1}, "wrong fields", id="unknown-field"),
    ],
)
def test_rejects_invalid_genesis(genesis: Genesis, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Genesis.from_json(edit(genesis, **change))


def test_rejects_duplicates_and_foreign_keys(genesis: Genesis) -> None:
    wire: dict[str, Any] = json.loads(genesis.to_json())
    twice = dict(wire, voters=[*wire["voters"], wire["voters"][0]])
    with pytest.raises(ConfigError, match="node id listed twice"):
        Genesis.from_json(json.dumps(twice))
    same_key = dict(wire, observers=[{"id": "obs-1", "key": wire["voters"][0]["key"]}])
    with pytest.raises(ConfigError, match="public key listed twice"):
        Genesis.from_json(json.dumps(same_key))
    text = genesis.to_json().replace('"domain"', '"domain": "x", "domain"', 1)
    with pytest.raises(ConfigError, match="duplicate key"):
        Genesis.from_json(text)
    with pytest.raises(ConfigError, match="not valid JSON"):
        Genesis.from_json("{")
    bad_member = dict(wire, voters=[{"id": "v-1", "key": OTHER_SUITE_KEY}])
    with pytest.raises(ConfigError):
        Genesis.from_json(json.dumps(bad_member))


@pytest.mark.parametrize(
    ("rule", "sizes"),
    [("bft", [1, 2, 2, 3, 4, 4, 5, 6, 6, 7]), ("majority", [1, 2, 2, 3, 3, 4, 4, 5, 5, 6])],
)
def test_quorum_sizes(rule: str, sizes: list[int]) -> None:
    assert [quorum_size(rule, n) for n in range(1, 11)] == sizes


def test_a_pbft_committee_comes_from_the_genesis_at_every_height(genesis: Genesis) -> None:
    history = history_from_genesis(genesis)
    committee = history.committee(1, 0)
    assert committee == history.committee(10**6, 0) == genesis.committee()
    assert committee.quorum == 3
    assert (committee.commit_kind, committee.epoch) == ("commit", 0)
    assert committee.node_ids == tuple(m.node_id for m in genesis.voters)
    assert not genesis.reconfigurable
    with pytest.raises(ChainError):
        history.committee(0, 0)  # nothing is certified at the genesis
    with pytest.raises(ChainError):
        history.committee(1, 1)  # an epoch that never began


def test_raft_genesis_uses_majority_and_its_commit_kind() -> None:
    keys = committee_keys("r", 5)
    g = make_genesis("city", keys, protocol="raft")
    assert (g.quorum_rule, g.quorum, g.commit_kind) == ("majority", 3, "raft-append")


def test_observers_never_vote(keys: dict[NodeId, PrivateKey]) -> None:
    standby = committee_keys("s", 3)
    g = make_genesis("station-1", keys, observers=standby, parent="county-1")
    assert set(g.committee().keys) == set(keys)
    assert [m.node_id for m in g.observers] == list(standby)
    assert g.parent == DomainId("county-1")
    assert Member(NodeId("s-1"), standby[NodeId("s-1")].public_key) in g.observers


def test_commit_kinds_match_the_consensus_modules() -> None:
    from belep.consensus.pbft_rules import COMMIT_KIND
    from belep.consensus.raft_cert import RAFT_CERT_KIND
    from belep.ledger.genesis import PROTOCOLS

    assert PROTOCOLS["raft"][1] == RAFT_CERT_KIND
    assert PROTOCOLS["pbft"][1] == COMMIT_KIND
