"""Node parts without processes: sync codec, tokens, anchoring decisions, config, KV store,
commit tracker and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from belep.app.anchors import ANCHOR_KIND, anchors_in, read_anchor
from belep.app.machine import BelepApplication
from belep.app.policy import transaction_policy
from belep.crypto import PrivateKey
from belep.deploy.provision import provision
from belep.deploy.topology import demo_topology, demo_topology_text
from belep.errors import ConfigError, ValidationError
from belep.ledger.block import Digest, DomainId, Height, NodeId, Transaction, make_block
from belep.ledger.builder import ChainBuilder, make_genesis
from belep.ledger.envelope import EnvelopeValidator, parse_envelope, sign_envelope
from belep.node.anchoring import Anchorer
from belep.node.auth import OperatorAuth, PeerTokenVerifier, make_peer_token
from belep.node.commits import CommitTracker
from belep.node.config import AnchorPolicy, parse_node_config, render_node_config
from belep.node.kvstore import ConsensusState
from belep.node.metrics import NodeMetrics, NodeSample
from belep.node.runtime import relay_targets
from belep.node.sync import SyncBlocks, SyncRequest, SyncTip, decode_sync, encode_sync

KEYS = {NodeId(f"v{i}"): PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 5)}
GENESIS = make_genesis("d", KEYS)


def test_sync_round_trip_and_refusals() -> None:
    builder = ChainBuilder(GENESIS, KEYS, application=BelepApplication())
    blocks = tuple(builder.next_block([b"tx%d" % i], timestamp_ms=i) for i in range(3))
    for message in (SyncRequest(Height(4), 10), SyncTip(Height(9)), SyncBlocks(Height(1), blocks)):
        assert decode_sync(encode_sync(message)) == message
    assert decode_sync(encode_sync(SyncRequest(Height(1), 10_000))) == SyncRequest(Height(1), 256)
    for bad in (b"", b"\xa0", encode_sync(SyncTip(Height(1))) + b"x"):
        with pytest.raises(ValidationError):
            decode_sync(bad)


def test_operator_and_peer_tokens() -> None:
    auth = OperatorAuth("secret-token-0123456789\n")
    assert auth.allows("Bearer secret-token-0123456789")
    assert not auth.allows("Bearer secret-token-012345678")
    assert not auth.allows("Basic secret-token-0123456789")
    assert not auth.allows(None)
    network = b"net-id"
    verifier = PeerTokenVerifier({n: k.public_key for n, k in KEYS.items()}, network)
    token = make_peer_token(KEYS[NodeId("v1")], network, "v1", 1_000_000)
    assert verifier.allows(f"Bearer {token}", 1_000_000 + 60_000)
    assert not verifier.allows(f"Bearer {token}", 1_000_000 + 10 * 60_000)  # expired
    assert not verifier.allows(
        f"Bearer {make_peer_token(KEYS[NodeId('v1')], b'other', 'v1', 1_000_000)}", 1_000_000
    )
    forged = make_peer_token(KEYS[NodeId("v2")], network, "v1", 1_000_000)  # v2 claims to be v1
    assert not verifier.allows(f"Bearer {forged}", 1_000_000)
    stranger = make_peer_token(PrivateKey.from_seed(b"s" * 32), network, "zz", 1_000_000)
    assert not verifier.allows(f"Bearer {stranger}", 1_000_000)
    assert not verifier.allows("Bearer v1.notanumber.00", 1_000_000)


def _tip(height: int) -> tuple[int, Digest]:
    return height, Digest(bytes([height % 256]) * 32)


def test_anchorer_takes_turns_and_stops_once_anchored() -> None:
    submitted: dict[str, list[Transaction]] = {"v1": [], "v2": []}
    voters = (NodeId("v1"), NodeId("v2"), NodeId("v3"))
    anchorers = {
        name: Anchorer(
            node_id=NodeId(name),
            key=KEYS[NodeId(name)],
            parent=DomainId("d"),
            voters=voters,
            policy=AnchorPolicy(every_blocks=4, every_ms=10_000),
            submit=submitted[name].append,
        )
        for name in submitted
    }
    for a in anchorers.values():
        a.add_child(DomainId("c"))
    # Below the threshold nothing is due.
    for a in anchorers.values():
        a.tick({DomainId("c"): _tip(3)}, 1_000)
    assert submitted == {"v1": [], "v2": []}
    # Due: the rank-0 voter (v1 while nothing is anchored) submits at once, v2 waits its turn.
    for a in anchorers.values():
        a.tick({DomainId("c"): _tip(4)}, 2_000)
    assert len(submitted["v1"]) == 1
    assert submitted["v2"] == []
    envelope = parse_envelope(submitted["v1"][0].payload)
    record = read_anchor(envelope)
    assert record is not None
    assert (record.domain, record.height) == ("c", 4)
    # Once the anchor commits in the parent chain, nobody submits it again.
    block = make_block(
        domain=DomainId("d"), height=Height(1), epoch=0, view=0,  # type: ignore[arg-type]
        prev_hash=GENESIS.genesis_hash, transactions=(submitted["v1"][0],), timestamp_ms=1,
        proposer=NodeId("v1"),
    )  # fmt: skip
    assert [a.height for a in anchors_in(block)] == [4]
    for a in anchorers.values():
        a.on_parent_commit(block, 3_000)
        a.tick({DomainId("c"): _tip(4)}, 60_000)
    assert (len(submitted["v1"]), len(submitted["v2"])) == (1, 0)


def test_anchor_policy_accepts_only_voters() -> None:
    policy = transaction_policy({NodeId("v1"): KEYS[NodeId("v1")].public_key})
    body = {"domain": "c", "height": 1, "block_hash": bytes(32)}
    good = sign_envelope(KEYS[NodeId("v1")], ANCHOR_KIND, body, timestamp_ms=1)
    stranger = sign_envelope(KEYS[NodeId("v2")], ANCHOR_KIND, body, timestamp_ms=1)
    malformed = sign_envelope(KEYS[NodeId("v1")], ANCHOR_KIND, {"domain": "c"}, timestamp_ms=1)
    other = sign_envelope(KEYS[NodeId("v2")], "register-dispatch", {}, timestamp_ms=1)
    validator = EnvelopeValidator(policy=policy)
    results = [validator(e.to_transaction()) for e in (good, stranger, malformed, other)]
    assert results == [True, False, False, True]


def test_node_config_round_trip_and_errors(tmp_path: Path) -> None:
    result = provision(
        demo_topology("pbft"), tmp_path / "n", topology_text=demo_topology_text("pbft")
    )
    config = result.configs[NodeId("chenggong-2")]
    node_dir = config.base_dir
    text = render_node_config(config, relative_to=node_dir)
    again = parse_node_config(text, node_dir)
    assert again == config
    for old, new, message in (
        ('format = "belep-node-v1"', 'format = "v0"', "unsupported"),
        ("p2p_port = 7408", "p2p_port = 0", "port out of range"),
        ("[listen]", "[listen]\nextra = 1", "unknown key"),
        ('network_id = "', 'network_id = "zz', "not hex"),
    ):
        assert old in text
        with pytest.raises(ConfigError, match=message):
            parse_node_config(text.replace(old, new, 1), node_dir)


def test_consensus_state_group_commit(tmp_path: Path) -> None:
    state = ConsensusState(tmp_path / "c.sqlite3")
    state.stage("a", b"1")
    state.stage("b", b"2")
    state.stage("a", b"3")
    assert state.load() == {}  # staged is not durable
    state.commit()
    state.stage("b", None)
    state.commit()
    state.close()
    reopened = ConsensusState(tmp_path / "c.sqlite3")
    assert reopened.load() == {"a": b"3"}
    reopened.close()


def test_commit_tracker_waits_latency_and_overdue() -> None:
    latencies: list[tuple[str, float]] = []

    async def scenario() -> None:
        tracker = CommitTracker(lambda d, s: latencies.append((d, s)))
        key = KEYS[NodeId("v1")]
        txs = [
            sign_envelope(key, "bench", {"i": i}, timestamp_ms=1).to_transaction() for i in range(2)
        ]
        for tx in txs:
            tracker.submitted(DomainId("d"), tx)
        assert tracker.overdue(0.0) == [(DomainId("d"), txs[0]), (DomainId("d"), txs[1])]
        assert tracker.overdue(0.0) == []  # handed back once
        waiter = asyncio.ensure_future(tracker.wait(txs[0].tx_hash, 5))
        await asyncio.sleep(0)
        builder = ChainBuilder(GENESIS, KEYS, application=BelepApplication())
        block, _ = builder.next_block([txs[0].payload], timestamp_ms=1)
        tracker.committed(DomainId("d"), block)
        info = await waiter
        assert info is not None
        assert (info.height, info.index) == (1, 0)
        assert await tracker.wait(txs[1].tx_hash, 0.01) is None
        assert tracker.waiting == 0

    asyncio.run(scenario())
    assert [d for d, _ in latencies] == ["d"]


def test_metrics_render() -> None:
    sample = NodeSample(3, 4, 0, 0, 1, 0, 0, 2, 0, ())
    metrics = NodeMetrics(lambda: sample)
    metrics.observe_latency("d", 0.012)
    text = metrics.render().decode()
    assert 'belep_commit_latency_seconds_bucket{domain="d",le="0.02"} 1.0' in text
    assert "belep_peers_connected 3.0" in text
    assert "belep_anchors_submitted_total 2.0" in text


RELAY_MEMBERS = tuple(NodeId(f"v{i}") for i in range(4))
RELAY_CASES = [
    ("progressing-to-leader", NodeId("v1"), "v2", True, ("v2",)),
    ("progressing-i-am-leader", NodeId("v2"), "v2", True, ()),
    ("stalled-to-every-other-voter", NodeId("v1"), "v2", False, ("v0", "v2", "v3")),
    ("no-leader-known", NodeId("v1"), None, True, ("v0", "v2", "v3")),
    ("leader-not-a-voter", NodeId("v1"), "x9", True, ("v0", "v2", "v3")),
]


@pytest.mark.parametrize(
    ("me", "leader", "progressing", "expected"),
    [c[1:] for c in RELAY_CASES],
    ids=[c[0] for c in RELAY_CASES],
)
def test_relay_targets(
    me: NodeId, leader: str | None, progressing: bool, expected: tuple[str, ...]
) -> None:
    assert relay_targets(RELAY_MEMBERS, me, leader, progressing) == expected
