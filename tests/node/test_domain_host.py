"""DomainHost: real replicas (from the registry) on real stores, wired in memory (no sockets).

Four hosts of one domain exchange messages through the event loop; the tests wait for
conditions (commit events), never for a fixed time. Covered: a stream of signed
transactions commits identically everywhere; a host restarted from its files (block store
and consensus state) rejoins with the same chain; a stored block that conflicts with what
consensus delivers halts the host instead of being overwritten; garbage from a peer and
messages from a non-member are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from belep.app.machine import BelepApplication
from belep.consensus.types import ReplicaConfig
from belep.crypto import PrivateKey
from belep.ledger.block import Block, DomainId, NodeId, QuorumCertificate, Transaction
from belep.ledger.builder import ChainBuilder, make_genesis
from belep.ledger.envelope import EnvelopeValidator, sign_envelope
from belep.ledger.execution import Application, BlockContext, StateView, TxResult, Writes
from belep.ledger.genesis import Genesis
from belep.ledger.state_store import StateDatabase
from belep.ledger.store import BlockStore
from belep.node.domain import DomainHost, ExecutionDiverged, SafetyHalt
from belep.node.kvstore import ConsensusState
from belep.node.protocols import registered_protocols, replica_factory

NODES = tuple(NodeId(f"n{i}") for i in range(1, 5))
KEYS = {n: PrivateKey.from_seed(n.encode().ljust(32, b"#")) for n in NODES}
CLIENT = PrivateKey.from_seed(b"c" * 32)
PROTOCOLS = [p for p in ("pbft", "raft") if p in registered_protocols()]


class Cluster:
    def __init__(
        self,
        root: Path,
        genesis: Genesis,
        applications: dict[NodeId, Application] | None = None,
    ) -> None:
        self.root = root
        self.genesis = genesis
        self.applications = applications or {}
        self.hosts: dict[NodeId, DomainHost] = {}
        self.files: dict[NodeId, tuple[BlockStore, ConsensusState, StateDatabase]] = {}
        self.down: set[NodeId] = set()
        self.waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []

    def open(self, node: NodeId) -> DomainHost:
        directory = self.root / node
        directory.mkdir(exist_ok=True)
        store = BlockStore.open(directory / "chain.sqlite3", self.genesis)
        state = ConsensusState(directory / "consensus.sqlite3")
        execution = StateDatabase.open(directory / "state.sqlite3", self.genesis)
        self.files[node] = (store, state, execution)
        config = ReplicaConfig(
            node_id=node,
            domain=self.genesis.domain,
            members=NODES,
            keys={n: k.public_key for n, k in KEYS.items()},
            private_key=KEYS[node],
            genesis_hash=self.genesis.genesis_hash,
            max_batch_wait_ms=2,
            request_timeout_ms=400,
            validate_transaction=EnvelopeValidator(),
        )
        host = DomainHost(
            config=config,
            genesis=self.genesis,
            factory=replica_factory(self.genesis.protocol),
            store=store,
            state=state,
            execution=execution,
            application=self.applications.get(node, BelepApplication()),
            send=lambda peer, channel, payload, me=node: self._route(me, peer, channel, payload),
            on_commit=self._committed,
            is_connected=lambda peer: peer not in self.down,
        )
        self.hosts[node] = host
        return host

    def _route(self, sender: NodeId, peer: NodeId, channel: str, payload: bytes) -> None:
        host = self.hosts.get(peer)
        if host is None or sender in self.down or peer in self.down:
            return
        if channel.endswith("/sync"):
            asyncio.get_running_loop().call_soon(host.on_sync, sender, payload)
        else:
            asyncio.get_running_loop().call_soon(host.on_message, sender, payload)

    def _committed(self, _domain: DomainId, _block: Block, _qc: QuorumCertificate) -> None:
        for condition, event in self.waiters:
            if condition():
                event.set()

    async def housekeeping(self) -> None:
        """What the node's 250 ms tick does for its hosts: tip gossip and fetch timeouts."""
        while True:
            await asyncio.sleep(0.25)
            for node, host in self.hosts.items():
                if node not in self.down:
                    host.check_fetch_timeout()
                    host.gossip_tip()

    async def until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        event = asyncio.Event()
        if condition():
            return
        self.waiters.append((condition, event))
        await asyncio.wait_for(event.wait(), timeout)

    async def close(self, node: NodeId) -> None:
        self.down.add(node)
        await self.hosts[node].stop()
        store, state, execution = self.files.pop(node)
        store.close()
        state.close()
        execution.close()

    def chain(self, node: NodeId) -> list[bytes]:
        store = self.files[node][0]
        return [store.get_header(h).block_hash for h in range(1, store.tip().height + 1)]


def _txs(start: int, count: int) -> list[Transaction]:
    return [
        sign_envelope(CLIENT, "bench", {"i": i}, timestamp_ms=1, nonce=i).to_transaction()
        for i in range(start, start + count)
    ]


def _genesis(protocol: str) -> Genesis:
    return make_genesis("d", KEYS, protocol=protocol)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_commits_everywhere_and_restarts_from_disk(protocol: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, _genesis(protocol))
        tick = asyncio.get_running_loop().create_task(cluster.housekeeping())
        for node in NODES:
            cluster.open(node).start()
        for tx in _txs(0, 40):
            cluster.hosts[NODES[0]].submit(tx)
        await cluster.until(lambda: all(cluster.hosts[n].height >= 1 for n in NODES))
        first = cluster.hosts[NODES[0]]
        await cluster.until(
            lambda: (
                sum(len(first._store.get_block(h).transactions) for h in range(1, first.height + 1))
                == 40
            )
        )
        await cluster.until(lambda: len({cluster.hosts[n].height for n in NODES}) == 1)
        restarted = NODES[3]
        await cluster.close(restarted)
        for tx in _txs(40, 20):
            cluster.hosts[NODES[1]].submit(tx)
        await cluster.until(
            lambda: first.height > cluster.hosts[NODES[1]].height - 1 and first.height >= 2
        )
        cluster.down.discard(restarted)
        cluster.open(restarted).start()
        await cluster.until(
            lambda: (
                len({cluster.hosts[n].height for n in NODES}) == 1
                and cluster.hosts[restarted].height >= 2
            )
        )
        await cluster.until(
            lambda: (
                sum(len(first._store.get_block(h).transactions) for h in range(1, first.height + 1))
                == 60
            )
        )
        await cluster.until(lambda: len({cluster.hosts[n].height for n in NODES}) == 1)
        chains = {n: cluster.chain(n) for n in NODES}
        tick.cancel()
        for node in NODES:
            await cluster.close(node)
        assert all(chain == chains[NODES[0]] for chain in chains.values())
        assert len(chains[NODES[0]]) >= 2

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_conflicting_stored_block_halts_the_host(tmp_path: Path) -> None:
    genesis = _genesis(PROTOCOLS[0])

    async def scenario() -> None:
        cluster = Cluster(tmp_path, genesis)
        victim = NODES[2]
        # Plant a certified block at height 1 that consensus will not choose.
        planted = cluster.open(victim)
        builder = ChainBuilder(genesis, KEYS, application=BelepApplication())
        block, qc = builder.next_block([b"not what consensus commits"], timestamp_ms=1)
        planted._store.append(block, qc)
        await cluster.close(victim)
        cluster.down.discard(victim)
        for node in NODES:
            cluster.open(node).start()
        for tx in _txs(0, 5):
            cluster.hosts[NODES[0]].submit(tx)
        host = cluster.hosts[victim]
        await cluster.until(lambda: cluster.hosts[NODES[0]].height >= 1)
        with contextlib.suppress(SafetyHalt):
            await asyncio.wait_for(host._task, 30)  # type: ignore[arg-type]
        assert isinstance(host.failure, SafetyHalt)
        assert cluster.chain(victim) == [block.block_hash]  # nothing overwritten
        for node in NODES:
            await cluster.close(node)

    asyncio.run(scenario())


def test_garbage_and_strangers_are_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, _genesis(PROTOCOLS[0]))
        host = cluster.open(NODES[0])
        host.start()
        host.on_message(NODES[1], b"\xff\x00garbage")
        host.on_sync(NODES[1], b"\xa1")
        host.on_message(NodeId("stranger"), b"")
        assert (host.decode_errors, host.foreign_messages) == (2, 1)
        assert host.queued_events == 0
        await cluster.close(NODES[0])

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_view_change_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, _genesis("pbft"))
        for node in NODES:
            cluster.open(node).start()
        for tx in _txs(0, 5):
            cluster.hosts[NODES[1]].submit(tx)
        await cluster.until(lambda: all(cluster.hosts[n].height >= 1 for n in NODES))
        primary = NodeId(str(cluster.hosts[NODES[1]].leader))
        other = next(n for n in NODES if n != primary)
        await cluster.close(primary)
        for tx in _txs(5, 5):
            cluster.hosts[other].submit(tx)
        await cluster.until(lambda: cluster.hosts[other].height >= 2)
        assert cluster.hosts[other].view_changes >= 1
        for node in NODES:
            if node != primary:
                await cluster.close(node)

    with caplog.at_level("INFO", logger="belep.node"):
        asyncio.run(scenario())
    changes = [r for r in caplog.records if getattr(r, "event", None) == "node.view"]
    assert changes
    assert changes[0].getMessage().startswith("domain d: view 0 -> 1")


class _Quirky:
    """The BELEP rules, except that this node refuses the transaction it was told to."""

    def __init__(self, odd: bytes) -> None:
        self.odd = odd
        self.inner = BelepApplication()

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        if tx.payload == self.odd:
            return TxResult("node-local-quirk"), {}
        return self.inner.apply_transaction(state, tx, context)


@pytest.mark.timeout(60)
def test_a_node_whose_execution_differs_halts_at_the_next_block(tmp_path: Path) -> None:
    odd = _txs(0, 1)[0]
    victim = NODES[3]

    async def scenario() -> None:
        cluster = Cluster(tmp_path, _genesis("pbft"), {victim: _Quirky(odd.payload)})
        for node in NODES:
            cluster.open(node).start()
        cluster.hosts[NODES[0]].submit(odd)
        first = cluster.hosts[NODES[0]]
        await cluster.until(lambda: first.height >= 1)
        diverged = first.height  # the block carrying the odd transaction
        host = cluster.hosts[victim]
        for tx in _txs(1, 5):
            cluster.hosts[NODES[0]].submit(tx)
        with contextlib.suppress(SafetyHalt):
            await asyncio.wait_for(host._task, 30)  # type: ignore[arg-type]
        assert isinstance(host.failure, ExecutionDiverged)
        assert f"height {diverged + 1}" in str(host.failure)
        await cluster.until(lambda: first.height >= diverged + 1)  # the others go on
        for node in NODES:
            await cluster.close(node)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_lost_state_database_is_rebuilt_from_the_chain(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(tmp_path, _genesis("pbft"))
        for node in NODES:
            cluster.open(node).start()
        for tx in _txs(0, 6):
            cluster.hosts[NODES[0]].submit(tx)
        await cluster.until(lambda: all(cluster.hosts[n].height >= 1 for n in NODES))
        for tx in _txs(6, 6):
            cluster.hosts[NODES[0]].submit(tx)
        await cluster.until(lambda: all(cluster.hosts[n].height >= 2 for n in NODES))
        await cluster.until(lambda: len({cluster.hosts[n].height for n in NODES}) == 1)
        height = cluster.hosts[NODES[2]].height
        before = [cluster.files[NODES[2]][2].record(h) for h in range(1, height + 1)]
        await cluster.close(NODES[2])
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / NODES[2] / f"state.sqlite3{suffix}").unlink(missing_ok=True)
        cluster.down.discard(NODES[2])
        cluster.open(NODES[2]).start()  # executes the stored chain again before it starts
        rebuilt = cluster.files[NODES[2]][2]
        assert [rebuilt.record(h) for h in range(1, height + 1)] == before
        assert all(r is not None and r.results for r in before)
        for node in NODES:
            await cluster.close(node)

    asyncio.run(scenario())
