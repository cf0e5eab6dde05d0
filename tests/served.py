"""A served network for the node service and HTTP API tests (``tests/node``, ``tests/api``).

``served``: a provisioned network of two domains — ``parent`` (Raft, 3
voters) and ``child`` (PBFT, 4 voters, observed by the parent's voters) —
whose child chain already holds :data:`COMMITTED` in blocks 1..3, copied
fresh for each test. Its nodes are opened (stores, hosts, credentials) but
never started: no transport, no port, no replica running, so what a
service call hands to a replica stays in the host's queue for the test to
see.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey
from belep.deploy.provision import provision
from belep.deploy.topology import parse_topology
from belep.keys import read_private_key
from belep.ledger.block import DomainId, NodeId
from belep.ledger.builder import ChainBuilder
from belep.ledger.datadir import node_domain_dir
from belep.ledger.envelope import Envelope, sign_envelope
from belep.ledger.genesis_file import read_genesis
from belep.ledger.store import BlockStore
from belep.node.auth import make_peer_token
from belep.node.config import read_node_config
from belep.node.domain import now_ms
from belep.node.runtime import Node
from belep.node.service import NodeService

TOPOLOGY = """
[network]
name = "served"
base_port = 30000

[[units]]
id = "parent"
protocol = "raft"
validators = 3

[[units]]
id = "child"
parent = "parent"
protocol = "pbft"
validators = 4

[units.consensus]
admission_delay_ms = 300
max_outstanding = 50
"""

SUBMITTER = PrivateKey.from_seed(b"s" * 32)
#: On the child chain: ``COMMITTED[i]`` alone in block ``i + 1``.
COMMITTED: tuple[Envelope, ...] = tuple(
    sign_envelope(SUBMITTER, "bench", {"i": i}, timestamp_ms=1) for i in range(3)
)
CHILD = DomainId("child")
CHILD_VOTERS = tuple(NodeId(f"child-{i}") for i in range(1, 5))


@dataclass
class Served:
    """A fresh copy of the network; opens its nodes and services, closes them after."""

    root: Path
    nodes: list[Node] = field(default_factory=list)
    services: list[NodeService] = field(default_factory=list)

    def node(self, name: str) -> Node:
        node = Node(read_node_config(self.root / "nodes" / name / "node.toml"))
        node.open()
        node.ready = True
        self.nodes.append(node)
        return node

    def service(self, node: Node) -> NodeService:
        service = NodeService(node)
        self.services.append(service)
        return service

    def token(self, name: str) -> str:
        return (self.root / "nodes" / name / "operator.token").read_text().strip()

    def peer_token(self, name: str) -> str:
        """A fresh peer token of node ``name``."""
        config = read_node_config(self.root / "nodes" / name / "node.toml")
        return make_peer_token(self.key(name), config.network_id, name, now_ms())

    def key(self, name: str) -> PrivateKey:
        return read_private_key(read_node_config(self.root / "nodes" / name / "node.toml").key_file)

    def child_chain(self, node: Node) -> ChainBuilder:
        """Certifies the child blocks after ``node``'s tip (not stored anywhere)."""
        host = node.hosts[CHILD]
        keys = {n: self.key(n) for n in CHILD_VOTERS}
        builder = ChainBuilder(host.genesis, keys, application=BelepApplication())
        with node.open_reader(CHILD) as store:
            return builder.follow([block for block, _ in store.iter_committed(1, host.height)])

    def close(self) -> None:
        for service in self.services:
            service.close()
        for node in self.nodes:
            asyncio.run(node.stop())


@pytest.fixture(scope="session")
def served_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "net"
    provision(parse_topology(TOPOLOGY), root, topology_text=TOPOLOGY, now_ms=1)
    keys = {
        n: read_private_key(read_node_config(root / "nodes" / n / "node.toml").key_file)
        for n in CHILD_VOTERS
    }
    for holder in (*CHILD_VOTERS, "parent-1", "parent-2", "parent-3"):
        config = read_node_config(root / "nodes" / holder / "node.toml")
        directory = node_domain_dir(config.data_dir, "child")
        genesis = read_genesis(directory.genesis_path)
        builder = ChainBuilder(genesis, keys, application=BelepApplication())
        with BlockStore.open(directory.chain_path, genesis) as store:
            for i, envelope in enumerate(COMMITTED):
                store.append(*builder.next_block([envelope.encode()], timestamp_ms=10 + i))
    return root


@pytest.fixture
def served(served_template: Path, tmp_path: Path) -> Iterator[Served]:
    copy = Served(tmp_path / "net")
    shutil.copytree(served_template, copy.root)
    try:
        yield copy
    finally:
        copy.close()
