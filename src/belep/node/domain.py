"""The host of one domain's replica inside a node: the real-clock, real-disk host contract.

Owns :class:`DomainHost`, which runs one replica (a pure state machine from
the consensus registry) against asyncio timers, the transport, the domain's
block store and its consensus-state file, exactly as the host contract of
:mod:`belep.consensus.types` demands (``docs/spec/node.md`` §Host).

Rounds. Events (peer messages, client requests, timers, persisted
acknowledgements, fetched blocks) are queued and handled in *rounds*: up to
:data:`ROUND_EVENTS` events are fed to the replica one after the other and
their effects collected; then the round is *flushed*:

1. delivered blocks are appended to the block store (each append is
   durable when it returns);
2. every ``Persist`` of the round is committed to the consensus state in
   one transaction (one fsync: group commit);
3. only then are the round's messages handed to the transport, and the
   ``Persisted`` acknowledgements queued as events.

Why this is the contract: a ``Persist`` is durable before any later effect
another node can observe (messages leave only after step 2). Sends are
delayed, never reordered before a write. Deliveries are written *before*
the replica's own record of having delivered them, so after a crash the
ledger is never behind the replica; it may be ahead, and a block the
restarted replica delivers again is checked against the stored one (same
hash: skipped; different hash: the node stops — a safety violation is
never papered over).

Execution after ordering (``docs/spec/node.md`` §Execution). In step 1 each
newly delivered block is also executed with the node's application into the
domain's state database (:class:`~belep.ledger.state_store.StateDatabase`),
after its state root was checked against this node's execution of the
blocks below (a mismatch halts the node: its execution is not the
committee's). The state database is committed after step 2; it is derived
from the chain, so at start the host executes whatever stored blocks it
lacks before the replica starts. After the flush the replica is told the
state root after its latest delivered block (``Executed``, ahead of any
queued event), so it can propose and vote on the next one.

Timers are ``loop.call_later`` handles with a generation number, so a
timer that was replaced or cancelled after its callback was queued never
fires. Decoding a peer's bytes happens before anything reaches the replica;
garbage is counted and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from belep.consensus.types import (
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Deliver,
    Effect,
    Event,
    Executed,
    Persist,
    Persisted,
    Receive,
    Replica,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
)
from belep.encoding import Value
from belep.errors import BelepError, ChainError, CorruptStore, ValidationError
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
)
from belep.ledger.execution import Application, ChainExecutor, genesis_state_root
from belep.ledger.genesis import Genesis
from belep.ledger.state_store import StateDatabase
from belep.ledger.store import BlockStore
from belep.node.kvstore import ConsensusState
from belep.node.protocols import ReplicaFactory, decode_message, encode_message
from belep.node.sync import (
    MAX_SYNC_BLOCKS,
    SyncBlocks,
    SyncRequest,
    SyncTip,
    decode_sync,
    encode_blocks_raw,
    encode_sync,
    sync_channel,
)

__all__ = ["DomainHost", "DomainStatus", "ExecutionDiverged", "SafetyHalt"]

log = logging.getLogger("belep.node.domain")

#: Most events handled in one round before the round is flushed.
ROUND_EVENTS = 512
#: Largest state-transfer answer (bytes of encoded blocks), well under the frame limit.
SYNC_ANSWER_BYTES = 8 * 1024 * 1024
#: How long a state-transfer request may stay unanswered before another peer is asked.
SYNC_TIMEOUT_S = 2.0
#: Least time between two pulls started because gossip showed this node behind.
PULL_INTERVAL_S = 0.3

SendFunction = Callable[[NodeId, str, bytes], None]
CommitListener = Callable[[DomainId, Block, QuorumCertificate], None]


class SafetyHalt(BelepError):
    """A replica delivered a block that conflicts with the stored chain: stop the node."""


class ExecutionDiverged(SafetyHalt):
    """A committed block's state root is not this node's execution of the chain below it:
    this node's application state or rules differ from the committee's. Stop the node."""


#: Blocks executed per state-database transaction while catching up at start.
CATCH_UP_CHUNK = 256


@dataclass(frozen=True, slots=True)
class _Timer:
    timer: TimerId
    generation: int


@dataclass(frozen=True, slots=True)
class DomainStatus:
    domain: DomainId
    role: str
    protocol: str
    height: int
    tip_hash: str
    view: int | None
    leader: str | None
    lag: int
    queued_events: int
    peers: int
    peers_connected: int
    replica_stats: dict[str, int]


def now_ms() -> int:
    """Wall-clock milliseconds (block timestamps are the proposer's clock, DESIGN §4)."""
    return time.time_ns() // 1_000_000


class DomainHost:
    """Runs one replica of one domain (see the module docstring)."""

    def __init__(
        self,
        *,
        config: ReplicaConfig,
        genesis: Genesis,
        factory: ReplicaFactory,
        store: BlockStore,
        state: ConsensusState,
        execution: StateDatabase,
        application: Application,
        send: SendFunction,
        reader: BlockStore | None = None,
        on_commit: CommitListener,
        is_connected: Callable[[NodeId], bool],
    ) -> None:
        self.config = config
        self.genesis = genesis
        self.domain = genesis.domain
        self.channel = str(genesis.domain)
        self.sync_channel = sync_channel(genesis.domain)
        self.role = "voter" if config.node_id in config.members else "observer"
        self.peers = tuple(p for p in (*config.members, *config.observers) if p != config.node_id)
        self._peer_set = frozenset(self.peers)
        self._factory = factory
        self._store = store
        self._reader = reader if reader is not None else store
        self._state = state
        self._execution = execution
        self._application = application
        self._executor: ChainExecutor | None = None
        self._send = send
        self._on_commit = on_commit
        self._is_connected = is_connected
        self._replica: Replica | None = None
        self._events: deque[Event | _Timer] = deque()
        self._wake = asyncio.Event()
        self._timers: dict[TimerId, tuple[int, asyncio.TimerHandle]] = {}
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        tip = store.tip()
        self.height: int = tip.height  # durable and released (what others are told)
        self._written: int = tip.height  # durable (written by the flush's disk step)
        self.tip_hash: Digest = tip.block_hash
        self.peer_tips: dict[NodeId, int] = {}
        self._fetch: tuple[NodeId, int, float] | None = None
        self._fetch_rotation = 0
        self._last_pull = 0.0
        self.stopped = False
        self.failure: BaseException | None = None
        # Counters for metrics and status.
        self.decode_errors = 0
        self.foreign_messages = 0
        self.sync_requests_dropped = 0
        self._serving: set[NodeId] = set()
        self._serve_tasks: set[asyncio.Task[None]] = set()
        self._reader_lock = asyncio.Lock()
        self.view_changes = 0
        self._last_view: int | None = None
        self.rounds = 0
        self.blocks_delivered = 0

    # ------------------------------------------------------------------ lifecycle

    def catch_up(self) -> None:
        """Execute the stored blocks the state database lacks (blocking: the node runs it
        in a worker thread before :meth:`start`)."""
        if self._executor is None:
            self._executor = self._catch_up_execution()

    def start(self) -> None:
        """Build the replica from the persisted state (after :meth:`catch_up`, run here if
        it was not), tell it where execution stands, and start its loop."""
        self.catch_up()
        persisted = self._state.load()
        self._replica = self._factory(self.config, persisted)
        outbox: list[tuple[NodeId, bytes]] = []
        tokens: list[int] = []
        delivered: list[tuple[Block, QuorumCertificate]] = []
        self._run_effects(self._replica.start(now_ms()), outbox, tokens, delivered)
        self._flush(outbox, tokens, delivered)
        self._report_executed(self._replica.committed_height)
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"domain-{self.domain}"
        )

    def _catch_up_execution(self) -> ChainExecutor:
        """Execute the stored blocks above the state database's executed height.

        Raises :class:`~belep.errors.CorruptStore` if the state database is ahead
        of the chain or executed another chain (it is derived data: delete it and
        the node rebuilds it from the chain).
        """
        db = self._execution
        tip = self._store.tip()
        height = db.executed_height()
        if height > tip.height:
            raise CorruptStore(
                f"domain {self.domain}: the state database executed height {height} but the"
                f" chain ends at {tip.height} (blocks are missing from the block store)"
            )
        record = db.record(height) if height else None
        if record is not None and record.block_hash != self._store.get_header(height).block_hash:
            raise CorruptStore(
                f"domain {self.domain}: the state database executed another block at height"
                f" {height} than the chain holds; delete {db.path} to rebuild it from the chain"
            )
        executor = ChainExecutor(
            self._application,
            db,
            height=height,
            block_hash=self.genesis.genesis_hash if record is None else record.block_hash,
            root=genesis_state_root(self.genesis.genesis_hash)
            if record is None
            else record.state_root,
            parent_view=None if record is None else record.view,
            term_start_root_unknown=self.genesis.term_start_root_unknown,
        )
        if height < tip.height:
            log.info(
                "domain %s: executing stored blocks %d..%d",
                self.domain,
                height + 1,
                tip.height,
                extra={"event": "node.catch_up_execution", "domain": self.domain},
            )
        for block, _certificate in self._store.iter_committed(height + 1, tip.height):
            self._execute(executor, block)
            if block.height % CATCH_UP_CHUNK == 0:
                db.commit()
        db.commit()
        return executor

    def _execute(self, executor: ChainExecutor, block: Block) -> None:
        try:
            executor.execute(block)
        except ValidationError as exc:
            raise ExecutionDiverged(
                f"domain {self.domain}: the committed block at height {block.height} does not"
                f" carry this node's state root: {exc}"
            ) from exc

    def _report_executed(self, height: int) -> None:
        """Tell the replica the state root after ``height``, before any other queued event.

        The executor holds the latest (no read); an older height (a block the
        replica delivers again after a restart) is read from the state database.
        """
        if height < 1:
            return
        executor = self._executor
        if executor is not None and height == executor.height:
            event = Executed(executor.height, executor.block_hash, executor.root)
        else:
            record = self._execution.record(height)
            if record is None:
                return
            event = Executed(record.height, record.block_hash, record.state_root)
        self._events.appendleft(event)
        self._wake.set()

    async def stop(self) -> None:
        """Stop handling events; flush what the last round staged; cancel timers."""
        self.stopped = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        serving = list(self._serve_tasks)
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    @property
    def replica(self) -> Replica | None:
        return self._replica

    @property
    def application(self) -> Application:
        """The rules this host executes every committed block with."""
        return self._application

    # ------------------------------------------------------------------ inputs

    def post(self, event: Event) -> None:
        self._events.append(event)
        self._wake.set()

    def submit(self, tx: Transaction) -> None:
        self.post(ClientRequest(tx))

    def on_message(self, peer: NodeId, payload: bytes) -> None:
        """A consensus message from an authenticated peer of this node."""
        if peer not in self._peer_set:
            self.foreign_messages += 1
            return
        try:
            message = decode_message(payload)
        except ValidationError as exc:
            self.decode_errors += 1
            log.warning(
                "dropping an undecodable message from %s: %s",
                peer,
                exc,
                extra={"event": "node.bad_message", "peer": peer, "domain": self.domain},
            )
            return
        self._events.append(Receive(peer, message))
        self._wake.set()

    def on_sync(self, peer: NodeId, payload: bytes) -> None:
        """A sync-channel message (state transfer or tip gossip)."""
        if peer not in self._peer_set:
            self.foreign_messages += 1
            return
        try:
            message = decode_sync(payload)
        except ValidationError as exc:
            self.decode_errors += 1
            log.warning(
                "dropping an undecodable sync message from %s: %s",
                peer,
                exc,
                extra={"event": "node.bad_sync", "peer": peer, "domain": self.domain},
            )
            return
        if isinstance(message, SyncTip):
            self.peer_tips[peer] = message.height
            self.maybe_pull()
        elif isinstance(message, SyncRequest):
            self._serve_sync(peer, message)
        else:
            self._on_blocks(peer, message)

    def gossip_tip(self) -> None:
        payload = encode_sync(SyncTip(Height(self.height)))
        for peer in self.peers:
            self._send(peer, self.sync_channel, payload)

    # ------------------------------------------------------------------ state transfer

    def _serve_sync(self, peer: NodeId, request: SyncRequest) -> None:
        """Answer a state-transfer request; the blocks are read in a worker thread.

        One answer per peer is in progress at a time (a request that arrives
        meanwhile is dropped: the peer asks again), and one read at a time uses
        the reader's connection.
        """
        start = int(request.from_height)
        if start > self.height:
            self._send(peer, self.sync_channel, encode_blocks_raw(start, []))
            return
        if peer in self._serving:
            self.sync_requests_dropped += 1
            return
        end = min(self.height, start + min(request.max_blocks, MAX_SYNC_BLOCKS) - 1)
        self._serving.add(peer)
        task = asyncio.get_running_loop().create_task(self._answer_sync(peer, start, end))
        self._serve_tasks.add(task)
        task.add_done_callback(self._serve_tasks.discard)

    async def _answer_sync(self, peer: NodeId, start: int, end: int) -> None:
        try:
            async with self._reader_lock:
                blocks = await asyncio.to_thread(self._read_for_sync, start, end)
            if blocks is not None and not self.stopped:
                self._send(peer, self.sync_channel, encode_blocks_raw(start, blocks))
        finally:
            self._serving.discard(peer)

    def _read_for_sync(self, start: int, end: int) -> list[tuple[Value, Value]] | None:
        blocks: list[tuple[Value, Value]] = []
        size = 0
        try:
            for block, certificate in self._reader.iter_committed(start, end):
                blocks.append((block.to_wire(), certificate.to_wire()))
                size += sum(len(tx.payload) for tx in block.transactions) + 512
                if size >= SYNC_ANSWER_BYTES:
                    break
        except BelepError as exc:
            log.error(
                "cannot read blocks for state transfer: %s",
                exc,
                extra={"event": "node.sync_read_failed", "domain": self.domain},
            )
            return None
        return blocks

    def _request_blocks(self, effect: RequestStateTransfer) -> None:
        candidates = [p for p in effect.peers if p in self._peer_set and p != self.config.node_id]
        if not candidates:
            return
        connected = [p for p in candidates if self._is_connected(p)] or candidates
        self._fetch_rotation += 1
        peer = connected[self._fetch_rotation % len(connected)]
        self._fetch = (peer, int(effect.from_height), time.monotonic())
        request = SyncRequest(effect.from_height, MAX_SYNC_BLOCKS)
        self._send(peer, self.sync_channel, encode_sync(request))

    def _on_blocks(self, peer: NodeId, answer: SyncBlocks) -> None:
        fetch = self._fetch
        if fetch is None or fetch[0] != peer or fetch[1] != answer.from_height:
            return  # unsolicited or stale: ignore
        self._fetch = None
        self.post(BlocksFetched(answer.blocks))

    def maybe_pull(self) -> None:
        """Fetch from the most advanced peer when gossip shows this node behind.

        Replicas fetch on their own when their protocol shows them behind; a
        PBFT observer, which never votes, would otherwise learn of new blocks
        only at checkpoints. Fetched blocks are verified by the replica like
        any others, so pulling early is always safe.
        """
        if self._fetch is not None or not self.peer_tips or self.stopped:
            return
        peer, best = max(self.peer_tips.items(), key=lambda item: item[1])
        now = time.monotonic()
        if best <= self.height or now - self._last_pull < PULL_INTERVAL_S:
            return
        if self._replica is not None and self._replica.committed_height >= best:
            return
        self._last_pull = now
        # From the replica's own delivered height: after a restart it may be below the
        # ledger's (the replica then delivers the stored blocks again; they are checked).
        replica = self._replica
        delivered = self.height if replica is None else min(self.height, replica.committed_height)
        start = Height(delivered + 1)
        self._fetch = (peer, start, now)
        self._send(peer, self.sync_channel, encode_sync(SyncRequest(start, MAX_SYNC_BLOCKS)))

    def check_fetch_timeout(self) -> None:
        """Forget a state-transfer request nobody answered (the replica asks again)."""
        fetch = self._fetch
        if fetch is not None and time.monotonic() - fetch[2] > SYNC_TIMEOUT_S:
            self._fetch = None
            self.post(BlocksFetched(()))
        self.maybe_pull()

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        try:
            while not self.stopped:
                if not self._events:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._round()
                # Let the transport and HTTP run between rounds.
                await asyncio.sleep(0)
        except Exception as exc:
            self.failure = exc
            log.critical(
                "domain host stopped: %s",
                exc,
                exc_info=not isinstance(exc, SafetyHalt),
                extra={"event": "node.domain_failed", "domain": self.domain},
            )
            raise

    async def _round(self) -> None:
        replica = self._replica
        if replica is None:
            return
        events = self._events
        outbox: list[tuple[NodeId, bytes]] = []
        tokens: list[int] = []
        delivered: list[tuple[Block, QuorumCertificate]] = []
        handled = 0
        executed = 0  # deliveries of this round executed so far
        while events and handled < ROUND_EVENTS:
            event = events.popleft()
            if type(event) is _Timer:
                current = self._timers.get(event.timer)
                if current is None or current[0] != event.generation:
                    continue
                del self._timers[event.timer]
                event = TimerFired(event.timer)
            handled += 1
            effects = replica.handle(event, now_ms())  # type: ignore[arg-type]
            if effects:
                self._run_effects(effects, outbox, tokens, delivered)
            if len(delivered) > executed:
                # Execute at once (in a worker thread) and tell the replica, so that it can
                # propose or vote on the next block within this round: its messages leave
                # with this round's flush, after the blocks are durable.
                fresh, executed = delivered[executed:], len(delivered)
                await asyncio.to_thread(self._execute_new, fresh)
                self._report_executed(fresh[-1][0].height)
        self.rounds += 1
        if delivered or self._state.dirty:
            # The disk work runs in a worker thread: the loop keeps receiving (events queue
            # up and form the next, larger round) while nothing of this round leaves early.
            await asyncio.to_thread(self._write, delivered)
        self._release(outbox, tokens, delivered)

    def _run_effects(
        self,
        effects: list[Effect],
        outbox: list[tuple[NodeId, bytes]],
        tokens: list[int],
        delivered: list[tuple[Block, QuorumCertificate]],
    ) -> None:
        encoded: dict[int, bytes] = {}
        me = self.config.node_id
        for effect in effects:
            if type(effect) is Send:
                message = effect.message
                payload = encoded.get(id(message))
                if payload is None:
                    payload = encoded[id(message)] = encode_message(message)
                if effect.to == me:
                    self._events.append(Receive(me, message))
                else:
                    outbox.append((effect.to, payload))
            elif type(effect) is Broadcast:
                message = effect.message
                payload = encoded.get(id(message))
                if payload is None:
                    payload = encoded[id(message)] = encode_message(message)
                for to in effect.to:
                    if to != me:
                        outbox.append((to, payload))
            elif type(effect) is SetTimer:
                self._set_timer(effect.timer, effect.delay_ms)
            elif type(effect) is CancelTimer:
                entry = self._timers.pop(effect.timer, None)
                if entry is not None:
                    entry[1].cancel()
            elif type(effect) is Persist:
                self._state.stage(effect.key, effect.value)
                tokens.append(effect.token)
            elif type(effect) is Deliver:
                delivered.append((effect.block, effect.certificate))
            elif type(effect) is RequestStateTransfer:
                # Asking for blocks reveals nothing another node relies on: no flush needed.
                self._request_blocks(effect)

    def _set_timer(self, timer: TimerId, delay_ms: int) -> None:
        old = self._timers.get(timer)
        if old is not None:
            old[1].cancel()
        self._generation += 1
        generation = self._generation
        handle = asyncio.get_running_loop().call_later(
            max(0, delay_ms) / 1000, self._fire, _Timer(timer, generation)
        )
        self._timers[timer] = (generation, handle)

    def _fire(self, timer: _Timer) -> None:
        self._events.append(timer)
        self._wake.set()

    def _flush(
        self,
        outbox: list[tuple[NodeId, bytes]],
        tokens: list[int],
        delivered: list[tuple[Block, QuorumCertificate]],
    ) -> None:
        self._execute_new(delivered)
        self._write(delivered)
        self._release(outbox, tokens, delivered)

    def _execute_new(self, delivered: list[tuple[Block, QuorumCertificate]]) -> None:
        """Execute the delivered blocks not executed yet (their writes are staged in the
        state database; they reach its file after the blocks reach theirs, :meth:`_write`).

        A block at or below the executed height is one the replica delivers again after a
        restart; one above the next height is a gap, which the append refuses."""
        executor = self._executor
        if executor is None:
            return
        for block, _certificate in delivered:
            if block.height == executor.height + 1:
                self._execute(executor, block)

    def _write(self, delivered: list[tuple[Block, QuorumCertificate]]) -> None:
        """Steps 1 and 2 of a flush: ledger appends, the staged consensus state, then the
        executed state (derived data: it may lag the chain after a crash, never lead it)."""
        for block, certificate in delivered:
            self._append(block, certificate)
        self._state.commit()
        self._execution.commit()

    def _release(
        self,
        outbox: list[tuple[NodeId, bytes]],
        tokens: list[int],
        delivered: list[tuple[Block, QuorumCertificate]],
    ) -> None:
        """Step 3: what others may now observe — messages, acknowledgements, commits."""
        for block, _ in delivered:
            self.height = block.height
            self.tip_hash = block.block_hash
        send = self._send
        channel = self.channel
        for to, payload in outbox:
            send(to, channel, payload)
        if tokens:
            self._events.extend(Persisted(t) for t in tokens)
            self._wake.set()
        for block, certificate in delivered:
            self._on_commit(self.domain, block, certificate)
        self._note_view()

    def _append(self, block: Block, certificate: QuorumCertificate) -> None:
        height = block.height
        if height <= self._written:
            stored = self._store.get_header(height).block_hash
            if stored != block.block_hash:
                raise SafetyHalt(
                    f"domain {self.domain}: the replica delivered a block that conflicts with the stored chain at height {height} (stored {stored.hex()}, delivered {block.block_hash.hex()})"
                )
            return
        if height != self._written + 1:
            raise ChainError(
                "delivered block leaves a gap in the stored chain",
                expected=self._written + 1,
                found=height,
                where=f"domain {self.domain}",
            )
        self._store.append(block, certificate)
        self._written = height
        self.blocks_delivered += 1

    def _note_view(self) -> None:
        view = self.view
        if view is not None:
            if self._last_view is not None and view != self._last_view:
                if view > self._last_view:
                    self.view_changes += view - self._last_view
                log.info(
                    "domain %s: view %d -> %d (leader %s)",
                    self.domain,
                    self._last_view,
                    view,
                    self.leader,
                    extra={"event": "node.view", "domain": self.domain, "view": view},
                )
            self._last_view = view

    # ------------------------------------------------------------------ status

    @property
    def view(self) -> int | None:
        replica = self._replica
        for name in ("view", "term"):
            value = getattr(replica, name, None)
            if isinstance(value, int):
                return value
        return None

    @property
    def leader(self) -> str | None:
        replica = self._replica
        value = getattr(replica, "leader", None)
        if isinstance(value, str):
            return value
        view = self.view
        if self.genesis.quorum_rule == "bft" and view is not None and self.config.members:
            return self.config.members[view % len(self.config.members)]  # the primary of the view
        return None

    @property
    def queued_events(self) -> int:
        return len(self._events)

    @property
    def lag(self) -> int:
        best = max(self.peer_tips.values(), default=0)
        return max(0, best - self.height)

    def status(self) -> DomainStatus:
        return DomainStatus(
            domain=self.domain,
            role=self.role,
            protocol=self.genesis.protocol,
            height=self.height,
            tip_hash=self.tip_hash.hex(),
            view=self.view,
            leader=self.leader,
            lag=self.lag,
            queued_events=self.queued_events,
            peers=len(self.peers),
            peers_connected=sum(1 for p in self.peers if self._is_connected(p)),
            replica_stats=self.replica_stats(),
        )

    def replica_stats(self) -> dict[str, int]:
        """The replica's own counters of ignored and invalid inputs (if it keeps them)."""
        stats = getattr(self._replica, "stats", None)
        if not isinstance(stats, dict):
            return {}
        return {str(k): int(v) for k, v in stats.items() if isinstance(v, int)}
