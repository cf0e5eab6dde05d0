"""``belep init``: turn a topology into keys, signed genesis files and node configurations.

Owns the layout of a generated network directory (``docs/spec/topology.md``)::

    OUT/topology.toml                        the topology it was made from
    OUT/genesis/<domain>/genesis.json        each domain's genesis (the reference copy)
    OUT/genesis/<domain>/genesis.sigs.json   every member's signature over its hash
    OUT/nodes/<node>/node.toml               the node's configuration
    OUT/nodes/<node>/node.key                its private key (0600)
    OUT/nodes/<node>/operator.token          its operator bearer token (0600)
    OUT/nodes/<node>/data/domains/<d>/       genesis + signatures of each domain it holds

Invariants: nothing is overwritten (``OUT`` must be absent or empty); every
secret file is created 0600 from the start; every genesis is signed by every
voter and observer it names; the ``network_id`` every node uses in its
handshake is a hash of the network name and every genesis hash, so nodes of
two different ``init`` runs never talk to each other.

I/O: writes files under ``OUT`` only.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from belep.crypto import sha256
from belep.deploy.topology import Topology
from belep.errors import ConfigError, StorageError
from belep.keys import generate_private_key, write_private_key
from belep.ledger.block import DomainId, NodeId
from belep.ledger.datadir import GENESIS_FILE, node_domain_dir
from belep.ledger.genesis import Genesis, Member
from belep.ledger.genesis_file import write_genesis
from belep.node.config import NodeConfig, PeerInfo, render_node_config
from belep.node.genesis_seal import GENESIS_SIGS_FILE, sign_genesis, write_genesis_signatures

__all__ = ["NetworkLayout", "ProvisionResult", "network_id_of", "provision", "write_secret"]

TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class NetworkLayout:
    """Paths inside a generated network directory."""

    root: Path

    @property
    def topology_path(self) -> Path:
        return self.root / "topology.toml"

    def genesis_dir(self, domain: str) -> Path:
        return self.root / "genesis" / domain

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def config_path(self, node: str) -> Path:
        return self.node_dir(node) / "node.toml"

    def token_path(self, node: str) -> Path:
        return self.node_dir(node) / "operator.token"

    def node_ids(self) -> list[str]:
        base = self.root / "nodes"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "node.toml").is_file())


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    layout: NetworkLayout
    network_id: bytes
    geneses: dict[DomainId, Genesis]
    configs: dict[NodeId, NodeConfig]


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data`` (never overwrites), fsynced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise ConfigError("refusing to overwrite a secret file", where=str(path)) from exc
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def network_id_of(name: str, geneses: dict[DomainId, Genesis]) -> bytes:
    """16 bytes naming one generated network: its name and every genesis hash."""
    material = (
        b"belep-network-v1\x00"
        + name.encode()
        + b"".join(b"\x00" + geneses[d].genesis_hash for d in sorted(geneses))
    )
    return sha256(material)[:16]


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError as exc:
        raise ConfigError("refusing to reuse an existing directory", where=str(path)) from exc
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from exc


def provision(
    topology: Topology,
    out: Path,
    *,
    topology_text: str,
    now_ms: int | None = None,
) -> ProvisionResult:
    """Generate everything a network needs under ``out`` (absent or empty)."""
    if out.exists():
        if not out.is_dir() or any(out.iterdir()):
            raise ConfigError("output directory exists and is not empty", where=str(out))
    else:
        out.mkdir(parents=True)
    layout = NetworkLayout(out)
    layout.topology_path.write_text(topology_text, encoding="utf-8")
    created = int(time.time() * 1000) if now_ms is None else now_ms
    keys = {node.node_id: generate_private_key(topology.suite) for node in topology.nodes}
    geneses: dict[DomainId, Genesis] = {}
    signatures: dict[DomainId, dict[NodeId, bytes]] = {}
    for plan in topology.domains():
        genesis = Genesis(
            domain=plan.domain,
            suite=topology.suite,
            protocol=plan.protocol,
            voters=tuple(Member(n, keys[n].public_key) for n in plan.voters),
            observers=tuple(Member(n, keys[n].public_key) for n in plan.observers),
            parent=plan.parent,
            created_ms=created,
        )
        geneses[plan.domain] = genesis
        members = (*plan.voters, *plan.observers)
        # Every member signs (here all keys are at hand; in a ceremony each operator signs).
        signatures[plan.domain] = sign_genesis(genesis, {n: keys[n] for n in members})
        directory = layout.genesis_dir(plan.domain)
        _mkdir(directory)
        write_genesis(directory / GENESIS_FILE, genesis)
        write_genesis_signatures(directory / GENESIS_SIGS_FILE, genesis, signatures[plan.domain])
    network_id = network_id_of(topology.name, geneses)
    peers = {
        node.node_id: PeerInfo(
            node.node_id,
            node.unit,
            keys[node.node_id].public_key,
            node.host,
            node.p2p_port,
            node.http_port,
        )
        for node in topology.nodes
    }
    configs: dict[NodeId, NodeConfig] = {}
    for node in topology.nodes:
        node_dir = layout.node_dir(node.node_id)
        _mkdir(node_dir)
        write_private_key(node_dir / "node.key", keys[node.node_id])
        write_secret(
            layout.token_path(node.node_id), secrets.token_hex(TOKEN_BYTES).encode() + b"\n"
        )
        data_dir = node_dir / "data"
        held = topology.domains_of(node.node_id)
        for plan, _role in held:
            domain_dir = node_domain_dir(data_dir, plan.domain)
            _mkdir(domain_dir.root)
            genesis = geneses[plan.domain]
            write_genesis(domain_dir.genesis_path, genesis)
            write_genesis_signatures(
                domain_dir.root / GENESIS_SIGS_FILE, genesis, signatures[plan.domain]
            )
        config = NodeConfig(
            node_id=node.node_id,
            unit=node.unit,
            network=topology.name,
            network_id=network_id,
            base_dir=node_dir,
            key_file=node_dir / "node.key",
            token_file=layout.token_path(node.node_id),
            data_dir=data_dir,
            host=node.host,
            p2p_port=node.p2p_port,
            http_port=node.http_port,
            domains=tuple(plan.domain for plan, _ in held),
            tuning={plan.domain: plan.tuning for plan, _ in held},
            peers=peers,
            anchoring=topology.anchoring,
        )
        layout.config_path(node.node_id).write_text(
            render_node_config(config, relative_to=node_dir), encoding="utf-8"
        )
        configs[node.node_id] = config
    return ProvisionResult(layout, network_id, geneses, configs)
