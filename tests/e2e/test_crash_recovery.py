"""End to end, separate processes on loopback: a domain commits a stream of signed
transactions while nodes are SIGKILLed at seeded random moments and restarted; at the end
every node holds the identical, fully verifying chain and no acknowledged transaction is
missing.

The child domain runs the protocol under test with the parent unit's three validators as
its observers (HPBFT standbys); the parent domain runs Raft and receives the child's
anchors. Kills are sequential (one node down at a time), which is within every protocol's
fault model. Parametrised over the protocols the consensus registry provides.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest
from harness import (
    Client,
    committed_hashes,
    free_base_port,
    make_network,
    read_chains,
    statuses,
    wait_converged,
)

from belep.node.protocols import registered_protocols

pytestmark = pytest.mark.e2e

#: protocol -> voters of the child domain (HPBFT: 4 seats; the 3 parent validators are standbys).
CASES = {"hpbft": 4, "pbft": 4, "raft": 3}
PROTOCOLS = [p for p in ("hpbft", "pbft", "raft") if p in registered_protocols()]

TOPOLOGY = """
[network]
name = "e2e-{protocol}"
base_port = {base}

[anchoring]
every_blocks = 4
every_ms = 1000

[consensus]
request_timeout_ms = 600
heartbeat_ms = 100
checkpoint_interval = 8
max_batch_size = 200

[[units]]
id = "parent"
protocol = "raft"
validators = 3

[[units]]
id = "child"
parent = "parent"
protocol = "{protocol}"
validators = {voters}
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_crash_and_restart_keeps_one_chain(protocol: str, tmp_path: Path) -> None:
    seed = 6_000 + sorted(CASES).index(protocol)
    rng = random.Random(seed)
    voters = CASES[protocol]
    base = free_base_port(2 * (voters + 3), rng)
    network = make_network(
        tmp_path / "net", TOPOLOGY.format(protocol=protocol, base=base, voters=voters)
    )
    child_voters = [f"child-{i}" for i in range(1, voters + 1)]
    client = Client(network, "child", child_voters, rng)
    victims: list[str] = []
    heights: dict[str, int] = {}
    try:
        network.start()
        network.wait_ready(60)
        client.start()
        victims = rng.sample(sorted(network.nodes), 2)
        for victim in victims:
            time.sleep(rng.uniform(1.0, 2.5))  # a random moment under load
            network.kill(victim)
            time.sleep(rng.uniform(0.5, 2.0))
            network.start(victim)
            network.wait_ready(60, nodes=[victim])
        time.sleep(1.0)
        client.stop()
        heights = wait_converged(network, {"child": 1, "parent": 1}, timeout_s=60)
        with httpx.Client() as http:
            assert statuses(network, http).keys() == network.nodes.keys()
    finally:
        client.stop()
        codes = network.stop()
    print(
        f"{protocol}: seed {seed}, victims {victims}, heights {heights}, submitted {client.submitted},"
        f" acknowledged {len(client.acknowledged)}, client errors {client.errors},"
        f" slowest batch {max(client.batch_seconds, default=0):.2f} s"
    )
    assert all(code == 0 for code in codes.values()), (seed, codes)
    assert client.acknowledged, (seed, client.submitted, client.errors)
    for domain in ("child", "parent"):
        chains = read_chains(network, domain)
        reference = next(iter(chains.values()))
        assert len(reference) == heights[domain], (seed, domain)
        for node_id, chain in chains.items():
            assert chain == reference, (seed, domain, node_id)
    for node_id in network.nodes:
        missing = client.acknowledged - committed_hashes(network, node_id, "child")
        assert not missing, (seed, node_id, len(missing))
    assert heights["parent"] >= 1  # the parent chain holds the child's anchors
