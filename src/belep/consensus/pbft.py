"""PBFT (Castro & Liskov, OSDI '99 / TOCS 2002) as a pure state machine.

Owns :class:`PbftReplica`, the replica of ``docs/spec/pbft.md``; every rule
named there (``R1`` chained prepare, the view-change plan, the voting floor)
is implemented here or in :mod:`belep.consensus.pbft_viewchange`. Shared
machinery comes from :mod:`~belep.consensus.batching` (request pool),
:mod:`~belep.consensus.certificates` (votes, certificates, signature cache),
:mod:`~belep.consensus.checkpoints`, :mod:`~belep.consensus.log` (watermarks)
and :mod:`~belep.consensus.state_transfer`.

Invariants (the spec's safety argument rests on them):

* a replica sends at most one prepare vote per (view, height) — persisted
  before it is sent — and only for a block whose parent it holds a prepared
  certificate for in the same view, or knows committed (rule R1);
* it sends a commit vote only for a block it holds a prepared certificate
  for, persisted before the vote is sent;
* it delivers heights in order, each block linked to the one below and
  carrying a commit certificate of a quorum of members;
* it never votes in a view at or below its *floor*; a replica that starts
  without persisted state learns its floor from its peers before voting;
* an invalid input (bad signature, wrong view, malformed block) is ignored,
  counted in :attr:`PbftReplica.stats`, and changes nothing else.

No I/O: time is the ``now_ms`` argument, every output is an effect.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from belep.consensus.batching import RequestPool
from belep.consensus.certificates import BlockBodyCache, SignatureCache, VoteCollector
from belep.consensus.checkpoints import CheckpointTracker
from belep.consensus.log import WatermarkLog, log_size
from belep.consensus.pbft_messages import (
    Checkpoint,
    Commit,
    ForwardRequests,
    NewView,
    Prepare,
    PreparedEntry,
    PrePrepare,
    StatusReply,
    StatusRequest,
    ViewChange,
)
from belep.consensus.pbft_state import (
    META_KEY,
    STABLE_KEY,
    PersistedMeta,
    PersistedSlot,
    block_key,
    encode_block,
    encode_meta,
    encode_slot,
    load_state,
    slot_key,
)
from belep.consensus.pbft_viewchange import (
    BUG_FORGET_PREPARED,
    BUG_PREPARE_QUORUM_2F,
    COMMIT_KIND,
    PREPARE_KIND,
    NewViewPlan,
    PbftRules,
    check_new_view,
    check_view_change,
    make_new_view,
    make_view_change,
)
from belep.consensus.state_transfer import verify_fetched
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Deliver,
    Digest,
    Effect,
    Epoch,
    Event,
    Height,
    NodeId,
    Persist,
    Persisted,
    QuorumCertificate,
    Receive,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
    View,
)
from belep.encoding import encode
from belep.errors import ChainError, ProtocolViolation, ValidationError
from belep.ledger.block import make_block

__all__ = ["Mode", "PbftReplica", "PbftSlot"]

TIMER_BATCH = TimerId("pbft/batch")
TIMER_FORWARD = TimerId("pbft/forward")
TIMER_PROGRESS = TimerId("pbft/progress")
TIMER_VIEW_CHANGE = TimerId("pbft/view-change")
TIMER_STATUS = TimerId("pbft/status")
TIMER_TRANSFER = TimerId("pbft/transfer")
#: Timeouts double per consecutive failed view change, up to 2**MAX_BACKOFF times.
MAX_BACKOFF = 10
EPOCH = Epoch(0)


class Mode(enum.Enum):
    """What the replica is doing."""

    RECOVERING = "recovering"  # started without state: learning its voting floor
    NORMAL = "normal"  # in a view whose new-view it installed
    VIEW_CHANGE = "view-change"  # asked to move to ``view``; waiting for its new-view
    OBSERVER = "observer"  # not a member: follows checkpoints, never votes


@dataclass(slots=True)
class PbftSlot:
    """What a replica knows at one height between the watermarks."""

    height: Height
    blocks: dict[Digest, Block] = field(default_factory=dict)
    preprepared: Digest | None = None  # block accepted for this height in the current view
    vote: tuple[View, Digest] | None = None  # this replica's last prepare vote
    prepared: QuorumCertificate | None = None  # highest-view prepared certificate held
    commit_view: View | None = None  # view of this replica's last commit vote
    committed: QuorumCertificate | None = None  # a commit certificate (any view)


class PbftReplica:
    """One PBFT replica: ``handle(event, now_ms) -> effects``."""

    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self._id = config.node_id
        members = config.members
        self._voter = self._id in members
        self._others = tuple(m for m in members if m != self._id)
        self._audience = tuple(p for p in (*members, *config.observers) if p != self._id)
        bugs = config.planted_bugs
        quorum = config.bft_quorum
        prepare_quorum = max(2 * config.f, 1) if BUG_PREPARE_QUORUM_2F in bugs else quorum
        size = log_size(config.checkpoint_interval, config.window)
        self._rules = PbftRules(
            domain=config.domain,
            epoch=EPOCH,
            members=members,
            voters=config.voter_keys(),
            quorum=quorum,
            prepare_quorum=prepare_quorum,
            checkpoint_interval=config.checkpoint_interval,
            log_size=size,
            genesis_hash=config.genesis_hash,
            forget_prepared=BUG_FORGET_PREPARED in bugs,
        )
        self._cache = SignatureCache()
        self._bodies = BlockBodyCache()
        voters = self._rules.voters
        self._prepares = VoteCollector(voters, prepare_quorum, self._cache)
        self._commits = VoteCollector(voters, quorum, self._cache)
        self._checkpoints = CheckpointTracker(
            domain=config.domain,
            epoch=EPOCH,
            interval=config.checkpoint_interval,
            voters=voters,
            quorum=quorum,
            cache=self._cache,
            genesis_hash=config.genesis_hash,
        )
        self._log: WatermarkLog[PbftSlot] = WatermarkLog(size, PbftSlot)
        self._pool = RequestPool()
        self._forward: list[Transaction] = []
        self._fx: list[Effect] = []
        self._now = 0
        self._token = 0
        self._persisted_blocks: set[tuple[int, Digest]] = set()
        # view state
        self._mode = Mode.RECOVERING if self._voter else Mode.OBSERVER
        self._view = View(0)
        self._floor = -1
        self._backoff = 0
        self._own_vc: ViewChange | None = None
        self._vcs: dict[NodeId, ViewChange] = {}
        self._vc_quorum = False
        self._vc_stage = 0
        self._last_new_view: NewView | None = None
        self._nv_sent: dict[NodeId, tuple[View, int]] = {}  # peer -> (view, time) last resent
        self._early: list[tuple[NodeId, PrePrepare]] = []
        self._status_views: dict[NodeId, View] = {}
        # chain state
        self._delivered = Height(0)
        self._delivered_hash = config.genesis_hash
        self._delivered_ts = 0
        self._committed: dict[int, tuple[Digest, int]] = {}
        self._next_height = Height(1)
        # timers and transfers
        self._batch_armed = False
        self._forward_armed = False
        self._progress_armed = False
        self._progress_stage = 0
        self._transfer_target = 0
        self._transfer_in_flight = False
        self._restore(persisted)

    # ------------------------------------------------------------------ queries

    @property
    def committed_height(self) -> Height:
        return self._delivered

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def view(self) -> View:
        """The current view (in ``VIEW_CHANGE`` mode: the view being moved to)."""
        return self._view

    @property
    def floor(self) -> int:
        return self._floor

    @property
    def stable_height(self) -> Height:
        return self._checkpoints.stable_height

    @property
    def rules(self) -> PbftRules:
        return self._rules

    def primary(self, view: int | None = None) -> NodeId:
        return self._rules.primary(self._view if view is None else view)

    def slot(self, height: int) -> PbftSlot | None:
        """The log slot at ``height`` (for tests and diagnostics)."""
        return self._log.get(height)

    # ------------------------------------------------------------------ entry points

    def start(self, now_ms: int) -> list[Effect]:
        self._fx = []
        self._now = now_ms
        if self._mode is Mode.OBSERVER:
            self._poll_status(self.config.request_timeout_ms)
        elif self._mode is Mode.RECOVERING:
            self._poll_status(self.config.heartbeat_ms)
            if self._status_quorum() == 0:
                self._finish_recovery()
        else:
            self._fx.append(Broadcast(self._others, StatusRequest()))
            if self._mode is Mode.NORMAL:
                self._retransmit_votes()
                self._restart_progress()
            else:
                self._send_view_change()
        return self._take()

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        self._fx = []
        self._now = now_ms
        try:
            if isinstance(event, Receive):
                self._on_receive(event.sender, event.message)
            elif isinstance(event, ClientRequest):
                self._on_client_request(event)
            elif isinstance(event, TimerFired):
                self._on_timer(event.timer)
            elif isinstance(event, BlocksFetched):
                self._on_blocks_fetched(event)
            elif isinstance(event, Persisted):
                pass  # effects are ordered by the host; nothing waits for acknowledgements
        except ValidationError as exc:
            self.stats[f"invalid.{type(exc).__name__}"] += 1
        return self._take()

    def _take(self) -> list[Effect]:
        out, self._fx = self._fx, []
        return out

    def _on_receive(self, sender: NodeId, message: object) -> None:
        handler = self._HANDLERS.get(type(message))
        if handler is None:
            self.stats["ignored.unknown-message"] += 1
            return
        if sender not in self._rules.voters and not isinstance(message, StatusRequest):
            self.stats["ignored.non-member"] += 1
            return
        handler(self, sender, message)

    # ------------------------------------------------------------------ requests and batching

    def _on_client_request(self, event: ClientRequest) -> None:
        tx = event.tx
        if not self.config.validate_transaction(tx):
            self.stats["ignored.invalid-transaction"] += 1
            return
        if not self._pool.add(tx, self._now):
            self.stats["ignored.known-transaction"] += 1
            return
        if self._mode is Mode.NORMAL and self.primary() == self._id:
            self._maybe_propose()
        else:
            self._forward.append(tx)
            if len(self._forward) >= self.config.max_batch_size:
                self._flush_forward()
            elif not self._forward_armed:
                self._forward_armed = True
                self._fx.append(SetTimer(TIMER_FORWARD, self.config.max_batch_wait_ms))
        self._arm_progress()

    def _flush_forward(self) -> None:
        if not self._forward:
            return
        if self._mode is Mode.OBSERVER:
            self._fx.append(Broadcast(self.config.members, ForwardRequests(tuple(self._forward))))
        elif self._mode is Mode.NORMAL and self.primary() != self._id:
            self._fx.append(Send(self.primary(), ForwardRequests(tuple(self._forward))))
        elif self._mode is Mode.NORMAL:
            pass  # this replica became primary: its pool already holds them
        else:
            return  # no primary yet: keep them until a new view is installed
        self._forward = []

    def _on_forward(self, sender: NodeId, msg: ForwardRequests) -> None:
        validate = self.config.validate_transaction
        for tx in msg.txs:
            if not validate(tx):
                raise ProtocolViolation("forwarded an invalid transaction", found=tx.tx_hash)
        for tx in msg.txs:
            self._pool.add(tx, self._now)
        if self._mode is Mode.NORMAL and self.primary() == self._id:
            self._maybe_propose()
        self._arm_progress()

    def _maybe_propose(self) -> None:
        """As primary, cut batches into blocks while the pipeline and watermarks allow."""
        if self._mode is not Mode.NORMAL or self.primary() != self._id:
            return
        cfg = self.config
        pool = self._pool
        waiting = False  # stopped only because the batch is neither full nor due
        while pool.pending_count:
            h = self._next_height
            if h > self._log.high or h - self._delivered > cfg.window:
                break  # a delivery or a stable checkpoint calls this again
            oldest = pool.oldest_pending_ms()
            due = oldest is not None and self._now - oldest >= cfg.max_batch_wait_ms
            if pool.pending_count < cfg.max_batch_size and not due:
                waiting = True
                break
            parent = self._parent_of(h)
            if parent is None:
                break
            parent_hash, parent_ts = parent
            txs = pool.take_batch(cfg.max_batch_size)
            block = make_block(
                domain=cfg.domain,
                height=h,
                epoch=EPOCH,
                view=self._view,
                prev_hash=parent_hash,
                transactions=txs,
                timestamp_ms=max(self._now, parent_ts or 0),
                proposer=self._id,
            )
            self._fx.append(Broadcast(self._others, PrePrepare(self._view, block)))
            self._bodies.remember(block)
            slot = self._log.slot(h)
            slot.blocks[block.block_hash] = block
            slot.preprepared = block.block_hash
            self._next_height = Height(h + 1)
            self._try_prepare(h)
            self._resolve_certificates(slot)
        oldest = pool.oldest_pending_ms()
        if waiting and oldest is not None and not self._batch_armed:
            self._batch_armed = True
            wait = max(1, oldest + cfg.max_batch_wait_ms - self._now)
            self._fx.append(SetTimer(TIMER_BATCH, wait))

    def _parent_of(self, height: int) -> tuple[Digest, int | None] | None:
        """Hash and timestamp (if known) of the block below ``height`` in this view's chain."""
        below = self._log.get(height - 1)
        if below is not None and below.preprepared is not None:
            header = below.blocks[below.preprepared].header
            return below.preprepared, header.timestamp_ms
        return self._committed_point(height - 1)

    def _committed_point(self, height: int) -> tuple[Digest, int | None] | None:
        """Hash (and timestamp, if delivered here) of the committed block at ``height``."""
        if height == self._delivered:
            return self._delivered_hash, self._delivered_ts if height > 0 else None
        known = self._committed.get(height)
        if known is not None:
            return known
        if height == self._checkpoints.stable_height:
            return self._checkpoints.stable_hash, None
        return None

    # ------------------------------------------------------------------ normal case

    def _on_pre_prepare(self, sender: NodeId, msg: PrePrepare) -> None:
        if sender != self._rules.primary(msg.view):
            self.stats["ignored.pre-prepare-not-from-primary"] += 1
            return
        if (self._mode is Mode.VIEW_CHANGE and msg.view == self._view) or (
            self._mode is Mode.NORMAL and msg.view > self._view
        ):
            self._early.append((sender, msg))
            del self._early[: -self._log.size]
            return
        if self._mode is not Mode.NORMAL or msg.view != self._view:
            self.stats["ignored.pre-prepare-wrong-view"] += 1
            return
        block = msg.block
        h = block.height
        if not self._log.in_window(h):
            self.stats["ignored.pre-prepare-outside-watermarks"] += 1
            return
        if h <= self._delivered:
            self.stats["ignored.pre-prepare-delivered"] += 1
            return
        digest = block.block_hash
        slot = self._log.get(h)
        if slot is not None and slot.preprepared is not None:
            key = "duplicate" if slot.preprepared == digest else "conflicting"
            self.stats[f"ignored.pre-prepare-{key}"] += 1
            return
        self._check_proposal(block)
        slot = self._log.slot(h)
        slot.blocks[digest] = block
        slot.preprepared = digest
        self._pool.mark_proposed(block.transactions, self._now)
        self._try_prepare(h)
        self._resolve_certificates(slot)
        self._arm_progress()

    def _check_proposal(self, block: Block) -> None:
        """Raise unless ``block`` is a valid fresh proposal of the current primary."""
        cfg = self.config
        header = block.header
        primary = self.primary()
        if (
            header.domain != cfg.domain
            or header.epoch != EPOCH
            or header.view != self._view
            or header.proposer != primary
        ):
            raise ChainError(
                "block header does not match the view",
                expected=(cfg.domain, EPOCH, self._view, primary),
                found=(header.domain, header.epoch, header.view, header.proposer),
            )
        if len(block.transactions) > cfg.max_batch_size:
            raise ChainError(
                "block too large",
                expected=f"<= {cfg.max_batch_size}",
                found=len(block.transactions),
            )
        if abs(header.timestamp_ms - self._now) > cfg.max_clock_skew_ms:
            raise ChainError(
                "block timestamp too far from local time",
                expected=f"{self._now} ± {cfg.max_clock_skew_ms}",
                found=header.timestamp_ms,
            )
        parent = self._parent_of(header.height)
        if parent is not None:
            parent_hash, parent_ts = parent
            if header.prev_hash != parent_hash:
                raise ChainError(
                    "block does not extend the chain", expected=parent_hash, found=header.prev_hash
                )
            if parent_ts is not None and header.timestamp_ms < parent_ts:
                raise ChainError(
                    "block timestamp before its parent's",
                    expected=f">= {parent_ts}",
                    found=header.timestamp_ms,
                )
        hashes = {tx.tx_hash for tx in block.transactions}
        if len(hashes) != len(block.transactions):
            raise ChainError("block repeats a transaction", where=f"height {header.height}")
        self._bodies.check(block)
        validate = cfg.validate_transaction
        for tx in block.transactions:
            if not validate(tx):
                raise ChainError("block carries an invalid transaction", found=tx.tx_hash)

    def _try_prepare(self, height: int) -> None:
        """Send this replica's prepare vote at ``height`` if rule R1 allows it."""
        if self._mode is not Mode.NORMAL or not self._voter:
            return
        slot = self._log.get(height)
        if slot is None or slot.preprepared is None:
            return
        view = self._view
        digest = slot.preprepared
        if slot.vote is not None and slot.vote[0] >= view:
            return
        if height <= self._delivered:
            point = self._committed_point(height)
            if point is None or point[0] != digest:
                self.stats["ignored.conflicts-with-delivered"] += 1
                return
        header = slot.blocks[digest].header
        below = self._log.get(height - 1)
        parent_ts: int | None = None
        if (
            below is not None
            and below.prepared is not None
            and below.prepared.statement.view == view
            and below.prepared.statement.block_hash == header.prev_hash
        ):
            parent_ts = below.blocks[header.prev_hash].header.timestamp_ms
        else:
            committed = self._committed_point(height - 1)
            if committed is None or committed[0] != header.prev_hash:
                return  # R1: wait for the parent's prepared certificate (or commit)
            parent_ts = committed[1]
        if parent_ts is not None and header.timestamp_ms < parent_ts:
            self.stats["ignored.timestamp-before-parent"] += 1
            return
        slot.vote = (view, digest)
        self._persist_slot(slot)
        statement = self._rules.statement(PREPARE_KIND, view, Height(height), digest)
        signature = self.config.private_key.sign(statement.signing_bytes())
        self._fx.append(Broadcast(self._others, Prepare(statement, signature)))
        certificate = self._prepares.add(statement, self._id, signature, trusted=True)
        if certificate is not None:
            self._on_prepared(slot, certificate)

    def _on_prepare(self, sender: NodeId, msg: Prepare) -> None:
        s = msg.statement
        if not self._vote_is_current(s.kind, PREPARE_KIND, s.domain, s.epoch, s.view, s.height):
            return
        certificate = self._prepares.add(s, sender, msg.signature)
        if certificate is not None and self._mode is Mode.NORMAL:
            slot = self._log.get(s.height)
            if slot is not None:
                self._on_prepared(slot, certificate)

    def _vote_is_current(
        self, kind: str, expected: str, domain: str, epoch: int, view: int, height: int
    ) -> bool:
        if kind != expected or domain != self.config.domain or epoch != EPOCH:
            self.stats[f"ignored.{expected}-malformed"] += 1
            return False
        if self._mode not in (Mode.NORMAL, Mode.VIEW_CHANGE) or view != self._view:
            self.stats[f"ignored.{expected}-wrong-view"] += 1
            return False
        if not self._log.in_window(height):
            self.stats[f"ignored.{expected}-outside-watermarks"] += 1
            return False
        return True

    def _on_prepared(self, slot: PbftSlot, certificate: QuorumCertificate) -> None:
        """This replica now holds a prepared certificate (with its block) in this view."""
        s = certificate.statement
        if s.block_hash not in slot.blocks or s.block_hash != slot.preprepared:
            return  # kept by the collector until the pre-prepare arrives
        if slot.prepared is not None and slot.prepared.statement.view >= s.view:
            return
        slot.prepared = certificate
        self._persist_slot(slot)
        if self._voter and slot.commit_view != s.view:
            slot.commit_view = s.view
            statement = self._rules.statement(COMMIT_KIND, s.view, s.height, s.block_hash)
            signature = self.config.private_key.sign(statement.signing_bytes())
            self._fx.append(Broadcast(self._others, Commit(statement, signature)))
            commit_cert = self._commits.add(statement, self._id, signature, trusted=True)
            if commit_cert is not None:
                self._on_committed(commit_cert)
        self._try_prepare(s.height + 1)

    def _on_commit(self, sender: NodeId, msg: Commit) -> None:
        s = msg.statement
        if not self._vote_is_current(s.kind, COMMIT_KIND, s.domain, s.epoch, s.view, s.height):
            return
        certificate = self._commits.add(s, sender, msg.signature)
        if certificate is not None:
            self._on_committed(certificate)

    def _on_committed(self, certificate: QuorumCertificate) -> None:
        s = certificate.statement
        if s.height <= self._delivered:
            return
        slot = self._log.get(s.height)
        if slot is None or s.block_hash not in slot.blocks:
            self._request_transfer(s.height)  # committed elsewhere, block missing here
            return
        if slot.committed is None:
            slot.committed = certificate
        self._try_deliver()

    def _resolve_certificates(self, slot: PbftSlot) -> None:
        """Certificates whose votes arrived before this slot's pre-prepare."""
        if slot.preprepared is None:
            return
        view, h, d = self._view, slot.height, slot.preprepared
        prepared = self._prepares.certificate(self._rules.statement(PREPARE_KIND, view, h, d))
        if prepared is not None:
            self._on_prepared(slot, prepared)
        committed = self._commits.certificate(self._rules.statement(COMMIT_KIND, view, h, d))
        if committed is not None:
            self._on_committed(committed)

    # ------------------------------------------------------------------ delivery and checkpoints

    def _try_deliver(self) -> None:
        progressed = False
        while True:
            slot = self._log.get(self._delivered + 1)
            if slot is None or slot.committed is None:
                break
            block = slot.blocks.get(slot.committed.statement.block_hash)
            if block is None:
                break
            if block.header.prev_hash != self._delivered_hash:
                self.stats["ignored.committed-block-does-not-link"] += 1
                break
            self._deliver(block, slot.committed)
            progressed = True
        if progressed:
            self._after_delivery()

    def _deliver(self, block: Block, certificate: QuorumCertificate) -> None:
        h = block.height
        self._fx.append(Deliver(block, certificate))
        self._delivered = h
        self._delivered_hash = block.block_hash
        self._delivered_ts = block.header.timestamp_ms
        self._committed[h] = (block.block_hash, block.header.timestamp_ms)
        self._pool.on_committed(block.transactions)
        tracker = self._checkpoints
        if self._voter and tracker.is_checkpoint(h) and h > tracker.stable_height:
            statement = tracker.statement(h, block.block_hash)
            signature = self.config.private_key.sign(statement.signing_bytes())
            self._fx.append(Broadcast(self._audience, Checkpoint(statement, signature)))
            stable = tracker.add_vote(self._id, statement, signature, trusted=True)
            if stable is not None:
                self._on_stable(stable)

    def _after_delivery(self) -> None:
        self._persist_meta()
        self._backoff = 0
        self._progress_stage = 0
        if self._transfer_target <= self._delivered:
            self._transfer_target = 0
        self._restart_progress()
        self._try_prepare(self._delivered + 1)
        self._maybe_propose()

    def _on_checkpoint(self, sender: NodeId, msg: Checkpoint) -> None:
        stable = self._checkpoints.add_vote(sender, msg.statement, msg.signature)
        if stable is not None:
            self._on_stable(stable)

    def _on_stable(self, certificate: QuorumCertificate) -> None:
        """A higher stable checkpoint (already held by the tracker): collect garbage."""
        s = certificate.statement
        low = s.height
        self._persist(STABLE_KEY, encode(certificate.to_wire()))
        for h, slot in self._log.advance(low):
            self._persist(slot_key(h), None)
            for digest in slot.blocks:
                if (h, digest) in self._persisted_blocks:
                    self._persisted_blocks.discard((h, digest))
                    self._persist(block_key(h, digest), None)
        self._committed = {h: v for h, v in self._committed.items() if h >= low}
        self._prepares.prune(lambda _k, _v, height: height > low)
        self._commits.prune(lambda _k, _v, height: height > low)
        if low > self._delivered:
            self._request_transfer(low)
        if self._next_height <= low:
            self._next_height = Height(low + 1)
        self._try_prepare(low + 1)
        self._maybe_propose()

    # ------------------------------------------------------------------ state transfer

    def _request_transfer(self, target: int) -> None:
        """Fetch committed blocks up to ``target``, known committed (by a certificate)."""
        if target <= self._delivered:
            return
        self._transfer_target = max(self._transfer_target, target)
        self._fetch()

    def _fetch(self) -> None:
        """Ask peers for committed blocks after the delivered height (one request at a time).

        An empty answer ends the fetching unless a certificate showed that a
        higher height is committed (``_transfer_target``); then it is retried.
        """
        if self._transfer_in_flight:
            return
        self._transfer_in_flight = True
        self._fx.append(RequestStateTransfer(Height(self._delivered + 1), self._audience))
        self._fx.append(SetTimer(TIMER_TRANSFER, self.config.request_timeout_ms))

    def _on_blocks_fetched(self, event: BlocksFetched) -> None:
        fetched = [(b, c) for b, c in event.blocks if b.height > self._delivered]
        good, problem = verify_fetched(
            fetched,
            next_height=Height(self._delivered + 1),
            prev_hash=self._delivered_hash,
            domain=self.config.domain,
            epoch=EPOCH,
            kind=COMMIT_KIND,
            voters=self._rules.voters,
            quorum=self._rules.quorum,
            cache=self._cache,
        )
        if problem is not None:
            self.stats[f"invalid.fetched.{type(problem).__name__}"] += 1
        if self._transfer_in_flight:
            self._transfer_in_flight = False
            self._fx.append(CancelTimer(TIMER_TRANSFER))
        for block, certificate in good:
            self._deliver(block, certificate)
        if good:
            self._after_delivery()
            # Keep fetching until a fetch brings nothing new: blocks committed
            # while this replica was catching up were outside its watermarks.
            self._fetch()
        elif self._transfer_target > self._delivered:
            self._transfer_in_flight = True  # known to exist: retry when the timer fires
            self._fx.append(SetTimer(TIMER_TRANSFER, self.config.request_timeout_ms))

    # ------------------------------------------------------------------ view change

    def _start_view_change(self, view: int) -> None:
        """Stop voting in the current view and ask to move to ``view``."""
        if not self._voter or view <= self._floor:
            return
        self._backoff = min(self._backoff + 1, MAX_BACKOFF)
        self._mode = Mode.VIEW_CHANGE
        self._view = View(view)
        self._vc_quorum = False
        for _h, slot in self._log.items():
            slot.preprepared = None
        self._prepares.prune(lambda _k, v, _h: v >= view)
        self._commits.prune(lambda _k, v, _h: v >= view)
        self._progress_armed = False
        self._fx.append(CancelTimer(TIMER_PROGRESS))
        self._persist_meta()
        self._send_view_change()
        self._check_view_change_quorum()

    def _send_view_change(self) -> None:
        entries = [
            PreparedEntry(slot.prepared, slot.blocks[slot.prepared.statement.block_hash])
            for _h, slot in self._log.items()
            if slot.prepared is not None
        ]
        vc = make_view_change(
            self.config.private_key,
            self._rules,
            self._view,
            self._id,
            self._checkpoints.stable,
            entries,
        )
        self._own_vc = vc
        self._vcs[self._id] = vc
        self._fx.append(Broadcast(self._others, vc))
        self._fx.append(SetTimer(TIMER_VIEW_CHANGE, self._timeout()))

    def _timeout(self) -> int:
        return self.config.request_timeout_ms << self._backoff

    def _on_view_change(self, sender: NodeId, vc: ViewChange) -> None:
        if sender != vc.replica:
            self.stats["ignored.view-change-relayed"] += 1
            return
        nv = self._last_new_view
        if nv is not None and vc.new_view <= nv.view:
            self._resend_new_view(sender, nv)
        if vc.new_view < self._view or (vc.new_view == self._view and self._mode is Mode.NORMAL):
            self.stats["ignored.view-change-stale"] += 1
            return
        known = self._vcs.get(sender)
        if known is not None and known.new_view >= vc.new_view:
            return
        check_view_change(vc, self._rules, self._cache, self._bodies)
        self._vcs[sender] = vc
        if self._mode in (Mode.NORMAL, Mode.VIEW_CHANGE):
            self._maybe_join_view_change()
            self._check_view_change_quorum()

    def _resend_new_view(self, peer: NodeId, nv: NewView) -> None:
        """Send our new-view to a peer still asking for that view (at most once per timeout)."""
        last = self._nv_sent.get(peer)
        if last is not None and last[0] == nv.view and self._now - last[1] < self._timeout():
            return
        self._nv_sent[peer] = (nv.view, self._now)
        self._fx.append(Send(peer, nv))

    def _maybe_join_view_change(self) -> None:
        """Join when f+1 others asked for later views (at least one of them is correct)."""
        higher = sorted(
            vc.new_view for p, vc in self._vcs.items() if p != self._id and vc.new_view > self._view
        )
        need = self.config.f + 1
        if len(higher) >= need:
            self._start_view_change(higher[-need])

    def _check_view_change_quorum(self) -> None:
        if self._mode is not Mode.VIEW_CHANGE:
            return
        view = self._view
        vcs = [vc for vc in self._vcs.values() if vc.new_view == view]
        if len(vcs) < self._rules.quorum:
            return
        if not self._vc_quorum:
            self._vc_quorum = True
            self._vc_stage = 0
            self._fx.append(SetTimer(TIMER_VIEW_CHANGE, self._timeout() // 2))
        if self.primary() == self._id and self._own_vc is not None:
            others = sorted((vc for vc in vcs if vc.replica != self._id), key=lambda v: v.replica)
            nv, plan = make_new_view(
                self.config.private_key, self._rules, view, [self._own_vc, *others]
            )
            self._fx.append(Broadcast(self._others, nv))
            self._install(nv, plan)

    def _on_view_change_timer(self) -> None:
        if self._mode is not Mode.VIEW_CHANGE:
            return
        if not self._vc_quorum:
            self._send_view_change()  # retransmit until a quorum asks for this view
        elif self._vc_stage == 0 and self._own_vc is not None:
            # Half the timeout without a new-view: ask again, in case only this
            # replica missed it (peers in the view answer with their new-view).
            self._vc_stage = 1
            self._fx.append(Broadcast(self._others, self._own_vc))
            self._fx.append(SetTimer(TIMER_VIEW_CHANGE, self._timeout() // 2))
        else:
            self._start_view_change(self._view + 1)

    def _on_new_view(self, sender: NodeId, nv: NewView) -> None:
        if self._mode not in (Mode.NORMAL, Mode.VIEW_CHANGE) or nv.view <= self._floor:
            self.stats["ignored.new-view-not-voting"] += 1
            return
        if nv.view < self._view or (nv.view == self._view and self._mode is Mode.NORMAL):
            self.stats["ignored.new-view-stale"] += 1
            return
        plan = check_new_view(nv, self._rules, self._cache, self._bodies)
        self._install(nv, plan)

    def _install(self, nv: NewView, plan: NewViewPlan) -> None:
        """Enter ``nv.view``: adopt its checkpoint, accept its re-proposals, resume."""
        view = nv.view
        self._mode = Mode.NORMAL
        self._view = view
        self._last_new_view = nv
        self._vc_quorum = False
        self._fx.append(CancelTimer(TIMER_VIEW_CHANGE))
        self._vcs = {p: vc for p, vc in self._vcs.items() if vc.new_view > view}
        self._prepares.prune(lambda _k, v, _h: v >= view)
        self._commits.prune(lambda _k, v, _h: v >= view)
        self._persist_meta()
        if plan.stable is not None and self._checkpoints.adopt(plan.stable):
            self._on_stable(plan.stable)
        for _h, slot in self._log.items():
            slot.preprepared = None
            keep = {c.statement.block_hash for c in (slot.prepared, slot.committed) if c}
            slot.blocks = {d: b for d, b in slot.blocks.items() if d in keep}
        accepted: list[PbftSlot] = []
        for entry in plan.reproposals:
            if not self._log.in_window(entry.height):
                continue
            slot = self._log.slot(entry.height)
            digest = entry.block.block_hash
            slot.blocks.setdefault(digest, entry.block)
            slot.preprepared = digest
            accepted.append(slot)
        proposed = [tx for entry in plan.reproposals for tx in entry.block.transactions]
        self._pool.requeue_proposed(keep=proposed)
        self._pool.mark_proposed(proposed, self._now)
        self._next_height = Height(max(plan.last_height, self._delivered, self._log.low) + 1)
        self._progress_stage = 0
        self._restart_progress()
        if self.primary() != self._id:
            # The old primary may have dropped what we forwarded: send the new one
            # every request still pending here (it ignores those it knows).
            cfg = self.config
            pending = self._pool.pending_older_than(self._now, cfg.max_batch_size * cfg.window)
            known = {t.tx_hash for t in self._forward}
            self._forward.extend(t for t in pending if t.tx_hash not in known)
        self._flush_forward()
        for slot in accepted:
            self._try_prepare(slot.height)
            self._resolve_certificates(slot)
        early, self._early = self._early, []
        for sender, msg in early:
            if msg.view == view:
                try:
                    self._on_pre_prepare(sender, msg)
                except ValidationError as exc:
                    self.stats[f"invalid.{type(exc).__name__}"] += 1
        self._maybe_propose()

    # ------------------------------------------------------------------ status and recovery

    def _poll_status(self, every_ms: int) -> None:
        targets = self.config.members if self._mode is Mode.OBSERVER else self._others
        missing = tuple(p for p in targets if p not in self._status_views and p != self._id)
        if missing:
            self._fx.append(Broadcast(missing, StatusRequest()))
        self._fx.append(SetTimer(TIMER_STATUS, every_ms))

    def _status_quorum(self) -> int:
        """Replies from other members a recovering replica waits for: ``n - q + f``."""
        cfg = self.config
        return min(cfg.n - self._rules.quorum + cfg.f, len(self._others))

    def _on_status_request(self, sender: NodeId, _msg: StatusRequest) -> None:
        if sender in self._audience:
            self._fx.append(Send(sender, StatusReply(self._view, self._checkpoints.stable)))

    def _on_status_reply(self, sender: NodeId, msg: StatusReply) -> None:
        if msg.stable is not None and self._checkpoints.adopt(msg.stable):
            self._on_stable(msg.stable)
        if self._mode is Mode.RECOVERING and sender not in self._status_views:
            self._status_views[sender] = msg.view
            if len(self._status_views) >= self._status_quorum():
                self._finish_recovery()

    def _finish_recovery(self) -> None:
        """Set the voting floor from peers' views and ask for the view after it.

        The floor is the f-th highest reported view (the highest for f <= 1):
        at most f - 1 other replicas are faulty while this one counts as
        faulty, so it is at least every view this replica may have voted in
        before it lost its state (``docs/spec/pbft.md`` §Restart).
        """
        views = sorted(self._status_views.values(), reverse=True)
        index = max(self.config.f - 1, 0)
        self._floor = views[index] if len(views) > index else 0
        self._status_views = {}
        self._fx.append(CancelTimer(TIMER_STATUS))
        self._start_view_change(self._floor + 1)

    # ------------------------------------------------------------------ timers and progress

    def _on_timer(self, timer: TimerId) -> None:
        if timer == TIMER_BATCH:
            self._batch_armed = False
            self._maybe_propose()
        elif timer == TIMER_FORWARD:
            self._forward_armed = False
            self._flush_forward()
        elif timer == TIMER_PROGRESS:
            self._progress_armed = False
            self._on_progress_timeout()
        elif timer == TIMER_VIEW_CHANGE:
            self._on_view_change_timer()
        elif timer == TIMER_STATUS:
            if self._mode is Mode.RECOVERING:
                self._poll_status(self.config.heartbeat_ms)
            elif self._mode is Mode.OBSERVER:
                self._status_views = {}
                self._poll_status(self.config.request_timeout_ms)
        elif timer == TIMER_TRANSFER:
            self._transfer_in_flight = False
            if self._transfer_target > self._delivered:
                self._fetch()

    def _outstanding(self) -> bool:
        """True while this replica waits for something to commit."""
        if self._pool.has_work():
            return True
        return any(
            h > self._delivered and (s.preprepared is not None or s.committed is not None)
            for h, s in self._log.items()
        )

    def _arm_progress(self) -> None:
        if self._mode is Mode.NORMAL and not self._progress_armed and self._outstanding():
            self._progress_armed = True
            self._fx.append(SetTimer(TIMER_PROGRESS, self._timeout()))

    def _restart_progress(self) -> None:
        if self._mode is not Mode.NORMAL:
            return
        if self._outstanding():
            self._progress_armed = True
            self._fx.append(SetTimer(TIMER_PROGRESS, self._timeout()))
        elif self._progress_armed:
            self._progress_armed = False
            self._fx.append(CancelTimer(TIMER_PROGRESS))

    def _on_progress_timeout(self) -> None:
        """No delivery for a whole timeout while work is outstanding.

        First expiry: escalate — send the old pending requests to every member
        (so all of them watch the primary) and ask peers for committed blocks
        this replica may have missed. Second expiry: start a view change.
        """
        if self._mode is not Mode.NORMAL or not self._outstanding():
            return
        if self._progress_stage == 0:
            self._progress_stage = 1
            cfg = self.config
            stale = self._pool.pending_older_than(
                self._now - cfg.max_batch_wait_ms, cfg.max_batch_size * cfg.window
            )
            if stale:
                self._fx.append(Broadcast(self._others, ForwardRequests(stale)))
            if any(h > self._delivered for h in self._log.heights()):
                self._retransmit_votes()  # a peer may have missed them (loss, watermarks)
                self._fetch()
            self._arm_progress()
        else:
            self._start_view_change(self._view + 1)

    # ------------------------------------------------------------------ persistence

    def _persist(self, key: str, value: bytes | None) -> None:
        self._token += 1
        self._fx.append(Persist(self._token, key, value))

    def _persist_meta(self) -> None:
        meta = PersistedMeta(
            view=self._view,
            view_change=self._mode is not Mode.NORMAL,
            floor=self._floor,
            delivered=self._delivered,
            delivered_hash=self._delivered_hash,
            delivered_ts=self._delivered_ts,
        )
        self._persist(META_KEY, encode_meta(meta))

    def _persist_slot(self, slot: PbftSlot) -> None:
        """Make this replica's vote and prepared certificate at the slot durable."""
        h = slot.height
        if slot.prepared is not None:
            digest = slot.prepared.statement.block_hash
            if (h, digest) not in self._persisted_blocks:
                self._persisted_blocks.add((h, digest))
                self._persist(block_key(h, digest), encode_block(slot.blocks[digest]))
        record = PersistedSlot(height=slot.height, vote=slot.vote, prepared=slot.prepared)
        self._persist(slot_key(h), encode_slot(record))

    def _restore(self, persisted: Mapping[str, bytes]) -> None:
        state = load_state(persisted)
        meta = state.meta
        if meta is None or not self._voter:
            return  # no state: recovering (members) or observing
        self._view = meta.view
        self._mode = Mode.VIEW_CHANGE if meta.view_change else Mode.NORMAL
        self._floor = meta.floor
        self._delivered = meta.delivered
        self._delivered_hash = meta.delivered_hash
        self._delivered_ts = meta.delivered_ts
        if meta.delivered > 0:
            self._committed[meta.delivered] = (meta.delivered_hash, meta.delivered_ts)
        self._checkpoints.restore(state.stable)
        low = self._checkpoints.stable_height
        self._log = WatermarkLog(self._log.size, PbftSlot, low)
        self._next_height = Height(max(low, meta.delivered) + 1)
        for h, record in sorted(state.slots.items()):
            if not self._log.in_window(h):
                continue
            slot = self._log.slot(h)
            slot.vote = record.vote
            if record.prepared is not None:
                digest = record.prepared.statement.block_hash
                block = state.blocks.get((h, digest))
                if block is not None:
                    slot.prepared = record.prepared
                    slot.blocks[digest] = block
                    self._persisted_blocks.add((h, digest))
                    if record.prepared.statement.view == self._view:
                        slot.commit_view = self._view
            if record.vote is not None and record.vote[0] == self._view:
                digest = record.vote[1]
                if digest in slot.blocks and self._mode is Mode.NORMAL:
                    slot.preprepared = digest
                    self._next_height = Height(max(self._next_height, h + 1))

    def _retransmit_votes(self) -> None:
        """Send again this replica's votes of the current view above its delivered height.

        Used after a restart and when progress stalls: votes are the only
        messages whose loss a quorum cannot make up for by itself.
        """
        key = self.config.private_key
        for h, slot in self._log.items():
            if h <= self._delivered:
                continue
            if slot.vote is not None and slot.vote[0] == self._view:
                s = self._rules.statement(PREPARE_KIND, self._view, h, slot.vote[1])
                signature = key.sign(s.signing_bytes())
                self._prepares.add(s, self._id, signature, trusted=True)
                self._fx.append(Broadcast(self._others, Prepare(s, signature)))
            if slot.prepared is not None and slot.commit_view == self._view:
                p = slot.prepared.statement
                s = self._rules.statement(COMMIT_KIND, self._view, h, p.block_hash)
                signature = key.sign(s.signing_bytes())
                self._commits.add(s, self._id, signature, trusted=True)
                self._fx.append(Broadcast(self._others, Commit(s, signature)))

    _HANDLERS: Mapping[type, Callable[[PbftReplica, NodeId, Any], None]] = {}


PbftReplica._HANDLERS = {
    PrePrepare: PbftReplica._on_pre_prepare,
    Prepare: PbftReplica._on_prepare,
    Commit: PbftReplica._on_commit,
    Checkpoint: PbftReplica._on_checkpoint,
    ViewChange: PbftReplica._on_view_change,
    NewView: PbftReplica._on_new_view,
    ForwardRequests: PbftReplica._on_forward,
    StatusRequest: PbftReplica._on_status_request,
    StatusReply: PbftReplica._on_status_reply,
}
