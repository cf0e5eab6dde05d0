"""One node process: wires replicas, ledger, content store, transport, anchoring, pinning, HTTP.

Owns :class:`Node` and :func:`run_node` (what ``belep node --config FILE``
runs; ``docs/spec/node.md``). At start the node

1. reads its configuration, its key (which must match its entry in the
   peer table), its operator token, and for every domain it holds the
   genesis and the genesis signatures (every member must have signed);
2. opens each domain's block store and consensus state and builds a
   :class:`~belep.node.domain.DomainHost` around the replica the consensus
   registry makes for the genesis's protocol (voter or observer by the
   genesis);
3. starts the transport (peers: every member and observer of its domains),
   the HTTP edge its caller hands it (:data:`ServeHttp`; ``belep node`` gives
   :func:`belep.api.server.start_http`, and nothing here imports the API),
   the replicas, the anchoring and pinning tasks and a quarter-second
   housekeeping tick (tip gossip, state-transfer timeouts, anchoring
   decisions).

:meth:`Node.open` does steps 1 and 2 (and opens anchoring and pinning)
without the network; the service tests run on nodes opened this way.

Every block a domain host commits goes through the node's *commit listeners*
(:attr:`Node.commit_listeners`), run in the order they were registered at
start: the transaction counters, the commit tracker (waiting clients and the
admission backlog), the anchorer of the domain's children, the pinner.

It stops on SIGTERM or SIGINT (graceful: HTTP first, then the replicas
flush their last round, then the transport and the stores close) and
restarts after ``kill -9`` from what is on disk: the block stores and
consensus state are written before any effect that depends on them
(see :mod:`belep.node.domain`).

This module is the I/O edge that ties the pure parts together; it holds no
protocol logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

from belep.app.machine import BelepApplication
from belep.app.policy import transaction_policy
from belep.consensus.types import ReplicaConfig
from belep.content.blockstore import Blockstore
from belep.crypto import PublicKey
from belep.encoding import decode, encode, expect_bytes, expect_list
from belep.errors import ConfigError, DomainNotHeld, StorageError, ValidationError
from belep.keys import read_private_key
from belep.ledger.block import Block, DomainId, NodeId, QuorumCertificate, Transaction
from belep.ledger.datadir import node_domain_dir
from belep.ledger.envelope import EnvelopeValidator
from belep.ledger.genesis_file import read_genesis
from belep.ledger.state_store import STATE_DB, StateDatabase
from belep.ledger.store import BlockStore
from belep.net import PeerAddress, Transport, TransportConfig
from belep.node.admission import AdmissionPolicy
from belep.node.anchoring import Anchorer
from belep.node.auth import OperatorAuth, PeerTokenVerifier, make_peer_token
from belep.node.commits import CommitTracker
from belep.node.config import NodeConfig, read_node_config
from belep.node.domain import CommitListener, DomainHost, now_ms
from belep.node.envelopes import ParsedEnvelopes
from belep.node.genesis_seal import (
    GENESIS_SIGS_FILE,
    check_genesis_signatures,
    read_genesis_signatures,
)
from belep.node.kvstore import CONSENSUS_DB, ConsensusState
from belep.node.metrics import DomainSample, NodeMetrics, NodeSample
from belep.node.pinning import PinDomain, Pinner
from belep.node.protocols import replica_factory

__all__ = ["HttpEdge", "Node", "ServeHttp", "relay_targets", "run_node"]

log = logging.getLogger("belep.node")

TICK_S = 0.25
#: A transaction submitted here and still uncommitted after this long is relayed (once), in
#: case this node's replica cannot get it proposed: to the leader while the domain commits,
#: to every other voter when it committed nothing for this long (see :func:`relay_targets`).
RELAY_AFTER_S = 3.0
RELAY_BATCH = 2000
GOSSIP_EVERY_TICKS = 2
ANCHOR_SCAN_BLOCKS = 2000


class HttpEdge(Protocol):
    """A running HTTP server of the node (:mod:`belep.api.server` makes one)."""

    async def stop(self) -> None: ...


#: Starts the node's HTTP edge once the node is open (returns when it listens).
ServeHttp = Callable[["Node"], Awaitable[HttpEdge]]


class Node:
    """A running BELEP node (see the module docstring)."""

    def __init__(self, config: NodeConfig, serve: ServeHttp | None = None) -> None:
        """``serve``: starts the HTTP edge (none: the node serves no HTTP)."""
        self.config = config
        self.node_id = config.node_id
        own = config.peers[config.node_id]
        self.key = read_private_key(config.key_file, suite=own.key.suite)
        if self.key.public_key != own.key:
            raise ConfigError(
                "the key file does not match the node's entry in the peer table",
                expected=own.key.fingerprint(),
                found=self.key.public_key.fingerprint(),
                where=str(config.key_file),
            )
        try:
            token = config.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StorageError(f"cannot read the operator token: {exc.strerror}") from exc
        if len(token) < 16:
            raise ConfigError(
                "operator token too short",
                expected=">= 16 characters",
                where=str(config.token_file),
            )
        self.operator = OperatorAuth(token)
        self.hosts: dict[DomainId, DomainHost] = {}
        self.validators: dict[DomainId, EnvelopeValidator] = {}
        #: Envelopes parsed by a domain's validator, taken by its execution.
        self.parsed: dict[DomainId, ParsedEnvelopes] = {}
        self.admission: dict[DomainId, AdmissionPolicy] = {}
        #: Client submissions refused by admission control, per domain and reason.
        self.refused: dict[DomainId, dict[str, int]] = {}
        self.metrics = NodeMetrics(self.sample)
        self.commits = CommitTracker(self.metrics.observe_latency)
        self.anchorers: dict[DomainId, Anchorer] = {}
        #: Run in order on every committed block of every domain (see :meth:`_on_commit`).
        self.commit_listeners: list[CommitListener] = [self._count_commit, self._track_commit]
        self.transactions_committed: dict[DomainId, int] = {}
        #: ``time.monotonic()`` of each domain's last commit seen by this process.
        self.last_commit_s: dict[DomainId, float] = {}
        self._stores: list[BlockStore] = []
        self._readers: dict[DomainId, BlockStore] = {}
        self._states: list[ConsensusState] = []
        self._executions: list[StateDatabase] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = False
        self.transport: Transport | None = None
        self.content = Blockstore(config.data_dir / "content")
        self.pinner: Pinner | None = None
        self.peer_tokens: PeerTokenVerifier | None = None
        self._serve = serve
        self.http: HttpEdge | None = None

    # ------------------------------------------------------------------ start

    def _open_domains(self) -> dict[NodeId, PublicKey]:
        config = self.config
        peers: dict[NodeId, PublicKey] = {}
        for domain in config.domains:
            directory = node_domain_dir(config.data_dir, domain)
            genesis = read_genesis(directory.genesis_path)
            if genesis.domain != domain:
                raise ConfigError(
                    "genesis names another domain", expected=domain, found=genesis.domain
                )
            genesis_hash, signatures = read_genesis_signatures(directory.root / GENESIS_SIGS_FILE)
            check_genesis_signatures(genesis, genesis_hash, signatures)
            members = {m.node_id: m.key for m in (*genesis.voters, *genesis.observers)}
            if members.get(self.node_id) != self.key.public_key:
                raise ConfigError(
                    "this node is not a member or observer of the domain with its key",
                    where=f"domain {domain}",
                )
            for node, key in members.items():
                listed = config.peers.get(node)
                if listed is None or listed.key != key:
                    raise ConfigError(
                        "a domain member is missing from the peer table or has another key",
                        found=node,
                        where=f"domain {domain}",
                    )
                if node != self.node_id:
                    peers[node] = key
            voter_keys = {m.node_id: m.key for m in genesis.voters}
            parsed = ParsedEnvelopes()
            validator = EnvelopeValidator(
                policy=transaction_policy(voter_keys), on_parsed=parsed.put
            )
            tuning = config.tuning[domain]
            replica_config = ReplicaConfig(
                node_id=self.node_id,
                domain=genesis.domain,
                members=tuple(m.node_id for m in genesis.voters),
                keys=members,
                private_key=self.key,
                observers=tuple(m.node_id for m in genesis.observers),
                genesis_hash=genesis.genesis_hash,
                max_batch_size=tuning.max_batch_size,
                max_batch_wait_ms=tuning.max_batch_wait_ms,
                window=tuning.window,
                request_timeout_ms=tuning.request_timeout_ms,
                heartbeat_ms=tuning.heartbeat_ms,
                checkpoint_interval=tuning.checkpoint_interval,
                validate_transaction=validator,
            )
            store = BlockStore.open(directory.chain_path, genesis)
            self._stores.append(store)
            # Reads on the event loop (state transfer, anchoring's scan at start) use their
            # own read-only connection: committed blocks only, never a flush in progress.
            reader = BlockStore.open(directory.chain_path, genesis, readonly=True)
            self._stores.append(reader)
            self._readers[genesis.domain] = reader
            state = ConsensusState(directory.root / CONSENSUS_DB)
            self._states.append(state)
            execution = StateDatabase.open(directory.root / STATE_DB, genesis)
            self._executions.append(execution)
            host = DomainHost(
                config=replica_config,
                genesis=genesis,
                factory=replica_factory(genesis.protocol),
                store=store,
                state=state,
                execution=execution,
                application=BelepApplication(parse=parsed.parse),
                send=self._send,
                reader=reader,
                on_commit=self._on_commit,
                is_connected=self._is_connected,
            )
            self.hosts[genesis.domain] = host
            self.validators[genesis.domain] = validator
            self.parsed[genesis.domain] = parsed
            self.admission[genesis.domain] = AdmissionPolicy.for_domain(
                tuning.request_timeout_ms, tuning.admission_delay_ms, tuning.max_outstanding
            )
            self.refused[genesis.domain] = {}
            self.transactions_committed[genesis.domain] = 0
        return peers

    def _setup_anchoring(self) -> None:
        for parent, host in self.hosts.items():
            if host.role != "voter":
                continue
            children = [d for d, h in self.hosts.items() if h.genesis.parent == parent]
            if not children:
                continue
            anchorer = Anchorer(
                node_id=self.node_id,
                key=self.key,
                parent=parent,
                voters=host.config.members,
                policy=self.config.anchoring,
                submit=host.submit,
            )
            for child in children:
                anchorer.add_child(child)
            # Learn the latest anchors from the recent parent chain.
            start = max(1, host.height - ANCHOR_SCAN_BLOCKS + 1)
            for block, _ in self._readers[parent].iter_committed(start, host.height):
                anchorer.on_parent_commit(block, now_ms())
            self.anchorers[parent] = anchorer
        if self.anchorers:
            self.commit_listeners.append(self._anchor_commit)

    def _setup_pinning(self) -> None:
        entries: dict[DomainId, PinDomain] = {}
        for domain, host in self.hosts.items():
            reader = self.open_reader(domain)
            self._stores.append(reader)
            gateways = [self.config.peers[p].http_url for p in host.peers]
            entries[domain] = PinDomain(domain, reader, gateways, _height_of(host))
        state = ConsensusState(self.config.data_dir / "node-state.sqlite3")
        self._states.append(state)
        self.pinner = Pinner(
            self.content,
            state,
            entries,
            lambda: make_peer_token(self.key, self.config.network_id, self.node_id, now_ms()),
        )
        self.pinner.load_cursors()
        self.commit_listeners.append(self._pin_commit)

    def open(self) -> dict[NodeId, PublicKey]:
        """Open everything local (steps 1 and 2 of the module docstring, the anchoring and
        pinning state) without touching the network; the peers' keys. Once only."""
        if self.peer_tokens is not None:
            raise ConfigError("the node is open already", where=self.node_id)
        peers = self._open_domains()
        self.peer_tokens = PeerTokenVerifier(peers, self.config.network_id)
        self._setup_anchoring()
        self._setup_pinning()
        return peers

    async def start(self) -> None:
        config = self.config
        peers = self.open()
        addresses = {
            node: PeerAddress(config.peers[node].host, config.peers[node].p2p_port)
            for node in peers
        }
        self.transport = Transport(
            TransportConfig(
                node_id=self.node_id,
                key=self.key,
                network_id=config.network_id,
                peers=peers,
                addresses=addresses,
                listen=PeerAddress(config.host, config.p2p_port),
            ),
            self._on_message,
        )
        await self.transport.start()
        if self._serve is not None:
            self.http = await self._serve(self)
        # Executing stored blocks the state lacks may take long: off the event loop.
        await asyncio.gather(*(asyncio.to_thread(h.catch_up) for h in self.hosts.values()))
        for host in self.hosts.values():
            host.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._housekeeping(), name="node-housekeeping"))
        if self.pinner is not None:
            self._tasks.append(loop.create_task(self.pinner.run(), name="node-pinner"))
        self.ready = True
        log.info(
            "node %s started: domains %s, p2p %s:%d, http %s",
            self.node_id,
            ", ".join(f"{d}({h.role})" for d, h in self.hosts.items()),
            config.host,
            config.p2p_port,
            config.http_url,
            extra={"event": "node.started"},
        )

    # ------------------------------------------------------------------ wiring

    def _send(self, peer: NodeId, channel: str, payload: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.send(peer, channel, payload)

    def _is_connected(self, peer: NodeId) -> bool:
        transport = self.transport
        return transport is not None and transport.is_connected(peer)

    def _on_message(self, peer: NodeId, channel: str, payload: bytes) -> None:
        host = self.hosts.get(DomainId(channel))
        if host is not None:
            host.on_message(peer, payload)
            return
        domain, sep, suffix = channel.rpartition("/")
        if sep and suffix == "sync":
            host = self.hosts.get(DomainId(domain))
            if host is not None:
                host.on_sync(peer, payload)
                return
        if sep and suffix == "tx":
            host = self.hosts.get(DomainId(domain))
            if host is not None:
                self._on_relayed(host, peer, payload)
                return
        log.warning(
            "message on an unknown channel from %s",
            peer,
            extra={"event": "node.unknown_channel", "peer": peer, "channel": channel[:64]},
        )

    def _on_relayed(self, host: DomainHost, peer: NodeId, payload: bytes) -> None:
        """Transactions another voter relays because they stayed uncommitted there."""
        if host.role != "voter" or peer not in host.config.members:
            return
        try:
            items = expect_list(decode(payload), "relayed transactions")
            txs = [Transaction(expect_bytes(item, "transaction")) for item in items[:RELAY_BATCH]]
        except ValidationError:
            host.decode_errors += 1
            return
        validator = self.validators[host.domain]
        for tx in txs:
            if validator.is_valid(tx):
                host.submit(tx)

    def note_refusal(self, domain: DomainId, reason: str) -> None:
        """Count a submission refused by admission control (for the metrics)."""
        counts = self.refused[domain]
        counts[reason] = counts.get(reason, 0) + 1

    def _relay_overdue(self) -> None:
        overdue = self.commits.overdue(RELAY_AFTER_S)
        by_domain: dict[DomainId, list[bytes]] = {}
        for domain, tx in overdue:
            by_domain.setdefault(domain, []).append(tx.payload)
        now = time.monotonic()
        for domain, payloads in by_domain.items():
            host = self.hosts[domain]
            last = self.last_commit_s.get(domain)
            progressing = last is not None and now - last < RELAY_AFTER_S
            targets = relay_targets(host.config.members, self.node_id, host.leader, progressing)
            if not targets:
                continue
            channel = f"{domain}/tx"
            for start in range(0, len(payloads), RELAY_BATCH):
                message = encode(payloads[start : start + RELAY_BATCH])
                for voter in targets:
                    self._send(voter, channel, message)
            log.info(
                "relayed %d uncommitted transactions to %s",
                len(payloads),
                ", ".join(targets),
                extra={"event": "node.relay", "domain": domain},
            )

    def _on_commit(self, domain: DomainId, block: Block, certificate: QuorumCertificate) -> None:
        """A domain host committed ``block``: run every commit listener, in order."""
        for listener in self.commit_listeners:
            listener(domain, block, certificate)

    def _count_commit(self, domain: DomainId, block: Block, _qc: QuorumCertificate) -> None:
        self.transactions_committed[domain] += len(block.transactions)
        self.last_commit_s[domain] = time.monotonic()

    def _track_commit(self, domain: DomainId, block: Block, _qc: QuorumCertificate) -> None:
        self.commits.committed(domain, block)

    def _anchor_commit(self, domain: DomainId, block: Block, _qc: QuorumCertificate) -> None:
        anchorer = self.anchorers.get(domain)
        if anchorer is not None:
            anchorer.on_parent_commit(block, now_ms())

    def _pin_commit(self, domain: DomainId, block: Block, _qc: QuorumCertificate) -> None:
        if self.pinner is not None:
            self.pinner.on_commit(domain, block)

    async def _housekeeping(self) -> None:
        ticks = 0
        while not self._stop.is_set():
            await asyncio.sleep(TICK_S)
            ticks += 1
            for host in self.hosts.values():
                if host.failure is not None:
                    log.critical(
                        "stopping: domain %s failed",
                        host.domain,
                        extra={"event": "node.halt", "domain": host.domain},
                    )
                    self.request_stop()
                    return
                host.check_fetch_timeout()
                if ticks % GOSSIP_EVERY_TICKS == 0:
                    host.gossip_tip()
            self._relay_overdue()
            if self.anchorers:
                tips = {d: (h.height, h.tip_hash) for d, h in self.hosts.items()}
                now = now_ms()
                for anchorer in self.anchorers.values():
                    anchorer.tick(tips, now)

    # ------------------------------------------------------------------ status

    def peers_expected(self) -> frozenset[NodeId]:
        return frozenset(p for h in self.hosts.values() for p in h.peers)

    def peers_connected(self) -> frozenset[NodeId]:
        transport = self.transport
        return frozenset() if transport is None else transport.connected_peers()

    def sample(self) -> NodeSample:
        transport = self.transport
        metrics = transport.metrics() if transport is not None else None
        pinner = self.pinner
        return NodeSample(
            peers_connected=len(self.peers_connected()),
            peers_total=len(self.peers_expected()),
            messages_dropped=0 if metrics is None else metrics.messages_dropped,
            queued_messages=0 if metrics is None else sum(metrics.queued_messages.values()),
            pins_done=0 if pinner is None else pinner.pinned,
            pins_failed=0 if pinner is None else pinner.failures,
            pins_pending=0 if pinner is None else pinner.lag(),
            anchors_submitted=sum(a.submitted for a in self.anchorers.values()),
            waiting_clients=self.commits.waiting,
            domains=tuple(
                DomainSample(
                    domain=d,
                    role=h.role,
                    height=h.height,
                    lag=h.lag,
                    view=h.view,
                    view_changes=h.view_changes,
                    queued_events=h.queued_events,
                    blocks_delivered=h.blocks_delivered,
                    transactions_committed=self.transactions_committed[d],
                    decode_errors=h.decode_errors,
                    peers_connected=h.status().peers_connected,
                    backlog=(backlog := self.commits.backlog(d)).count,
                    backlog_age_s=backlog.oldest_age_s,
                    refused=dict(self.refused[d]),
                )
                for d, h in self.hosts.items()
            ),
        )

    def open_reader(self, domain: DomainId) -> BlockStore:
        """A new read-only connection to a held domain's chain (the caller closes it)."""
        host = self.hosts.get(domain)
        if host is None:
            raise DomainNotHeld(domain)
        directory = node_domain_dir(self.config.data_dir, domain)
        return BlockStore.open(directory.chain_path, host.genesis, readonly=True)

    def open_state_reader(self, domain: DomainId) -> StateDatabase:
        """A new read-only connection to a held domain's executed state (the caller closes it)."""
        host = self.hosts.get(domain)
        if host is None:
            raise DomainNotHeld(domain)
        directory = node_domain_dir(self.config.data_dir, domain)
        return StateDatabase.open(directory.root / STATE_DB, host.genesis, readonly=True)

    def state_openers(self) -> dict[DomainId, Callable[[], StateDatabase]]:
        """For each held domain, how to open a new read-only connection to its state."""
        return {domain: partial(self.open_state_reader, domain) for domain in self.hosts}

    def reader_openers(self) -> dict[DomainId, Callable[[], BlockStore]]:
        """For each held domain, how to open a new read-only connection to its chain."""
        return {domain: partial(self.open_reader, domain) for domain in self.hosts}

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        self.ready = False
        if self.http is not None:
            await self.http.stop()
        if self.pinner is not None:
            self.pinner.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for host in self.hosts.values():
            await host.stop()
        if self.transport is not None:
            await self.transport.close()
        for state in self._states:
            with contextlib.suppress(StorageError):
                state.close()
        for execution in self._executions:
            with contextlib.suppress(StorageError):
                execution.close()
        for store in self._stores:
            with contextlib.suppress(StorageError):
                store.close()
        log.info("node %s stopped", self.node_id, extra={"event": "node.stopped"})


def relay_targets(
    members: Sequence[NodeId], me: NodeId, leader: str | None, progressing: bool
) -> tuple[NodeId, ...]:
    """Where overdue transactions go: the leader alone while the domain commits (a busy
    leader is working through a backlog; copies to every voter would only add work), every
    other voter when it committed nothing for the relay period or no leader is known (this
    node's replica may be stuck, e.g. in a view the others left). Nothing when this node
    is the leader of a progressing domain: its own replica already holds them."""
    if progressing and leader is not None and leader in members:
        return () if leader == me else (NodeId(leader),)
    return tuple(m for m in members if m != me)


def _height_of(host: DomainHost) -> Callable[[], int]:
    return lambda: host.height


@contextlib.contextmanager
def _signals(node: Node) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, node.request_stop)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_node(config_path: Path, serve: ServeHttp | None) -> int:
    """Run the node of ``config_path`` until SIGTERM/SIGINT, its HTTP edge started by
    ``serve``; the process exit status."""
    config = read_node_config(config_path)
    node = Node(config, serve)
    with _signals(node):
        try:
            await node.start()
            await node.wait_stopped()
        finally:
            await node.stop()
    failed = any(h.failure is not None for h in node.hosts.values())
    return 3 if failed else 0
