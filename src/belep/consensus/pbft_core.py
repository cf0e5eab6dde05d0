"""PBFT's replica state and its normal case: batching, three phases, delivery, checkpoints.

Owns :class:`PbftCore`, the part of the PBFT replica of ``docs/spec/pbft.md``
that runs inside one view: the request pool and batching, pre-prepare /
prepare / commit (rule R1: chained prepare), in-order delivery with commit
certificates, checkpoints and garbage collection, state transfer, the
progress timer, and what is persisted. :class:`belep.consensus.pbft.PbftReplica`
adds the entry points, view changes and restart on top of it.

Invariants (the spec's safety argument rests on them):

* a replica sends at most one prepare vote per (view, height) — persisted
  before it is sent — and only for a block whose parent it holds a prepared
  certificate for in the same view, or knows committed (rule R1);
* it sends a commit vote only for a block it holds a prepared certificate
  for, persisted before the vote is sent;
* it delivers heights in order, each block linked to the one below and
  carrying a commit certificate of a quorum of members;
* an invalid input is ignored, counted in ``stats``, and changes nothing else.

No I/O: time is ``now_ms``, every output is an effect appended to ``_fx``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from belep.consensus.batching import RequestPool
from belep.consensus.certificates import BlockBodyCache, SignatureCache, VoteCollector
from belep.consensus.checkpoints import CheckpointTracker
from belep.consensus.executed import ExecutionCursor, RootCheck
from belep.consensus.log import WatermarkLog, log_size
from belep.consensus.pbft_messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    StatusRequest,
    ViewChange,
)
from belep.consensus.pbft_rules import (
    BUG_FORGET_PREPARED,
    BUG_PREPARE_QUORUM_2F,
    COMMIT_KIND,
    PREPARE_KIND,
    PbftRules,
    check_proposal,
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
    slot_key,
)
from belep.consensus.state_transfer import verify_fetched
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    Deliver,
    Digest,
    Effect,
    Epoch,
    Executed,
    Height,
    NodeId,
    Persist,
    QuorumCertificate,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerId,
    Transaction,
    View,
)
from belep.encoding import encode
from belep.ledger.builder import build_block
from belep.ledger.genesis import bft_quorum

__all__ = ["EPOCH", "MAX_BACKOFF", "Mode", "PbftCore", "PbftSlot", "pbft_quorum"]

TIMER_BATCH = TimerId("pbft/batch")
TIMER_FORWARD = TimerId("pbft/forward")
TIMER_PROGRESS = TimerId("pbft/progress")
TIMER_VIEW_CHANGE = TimerId("pbft/view-change")
TIMER_STATUS = TimerId("pbft/status")
TIMER_TRANSFER = TimerId("pbft/transfer")
#: Timeouts double per consecutive failed view change, up to 2**MAX_BACKOFF times.
MAX_BACKOFF = 10
EPOCH = Epoch(0)


def pbft_quorum(n: int, f: int) -> int:
    """Votes a certificate needs: ``2f + 1`` when ``n = 3f + 1``, ``⌈(n + f + 1) / 2⌉`` in general.

    Any two quorums then share at least ``f + 1`` members, so at least one
    correct member, whatever ``n`` is (with ``n = 5`` and ``f = 1``, ``2f + 1 = 3``
    would not: two sets of 3 may meet only in a faulty member).
    """
    if f != (n - 1) // 3:
        return max(2 * f + 1, (n + f) // 2 + 1)
    return bft_quorum(n)


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


class PbftCore:
    """The state of one PBFT replica and its normal-case rules."""

    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self._id = config.node_id
        members = config.members
        self._voter = self._id in members
        self._others = tuple(m for m in members if m != self._id)
        self._audience = tuple(p for p in (*members, *config.observers) if p != self._id)
        bugs = config.planted_bugs
        quorum = pbft_quorum(config.n, config.f)
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
            max_batch_size=config.max_batch_size,
            max_clock_skew_ms=config.max_clock_skew_ms,
            validate_transaction=config.validate_transaction,
        )
        self._cache = SignatureCache()
        self._bodies = BlockBodyCache(capacity=2 * size)  # the log and a view change's blocks
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
        self._executed = ExecutionCursor(config.genesis_hash)
        self._forward: list[Transaction] = []
        self._fx: list[Effect] = []
        self._now = 0
        self._token = 0
        self._persisted_blocks: set[tuple[int, Digest]] = set()
        self._stale_keys: list[str] = []  # persisted keys below the low watermark, to delete
        # view state
        self._mode = Mode.RECOVERING if self._voter else Mode.OBSERVER
        self._view = View(0)
        self._floor = -1
        self._backoff = 0
        self._own_vc: ViewChange | None = None
        self._vcs: dict[NodeId, dict[View, ViewChange]] = {}  # valid view changes, by replica
        self._vc_quorum = False
        #: Delivered a block (state transfer) while in a view change: the others commit in a
        #: view this replica is not in, so its clients' transactions go to all of them.
        self._left_behind = False
        self._vc_started_ms = 0
        self._vc_stage = 0
        self._last_new_view: NewView | None = None
        self._own_vcs: dict[View, ViewChange] = {}  # recent own view changes, by view
        self._resent: dict[NodeId, tuple[View, int]] = {}  # peer -> (view, time) last answered
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
        self._transfer_in_flight = False  # a RequestStateTransfer is outstanding
        self._transfer_retry = False  # waiting for the transfer timer after an empty answer
        self._bad_answers = 0  # state-transfer answers in a row that failed verification
        self._status_asked: dict[NodeId, int] = {}  # peer -> time of the last StatusRequest
        self._restore(persisted)

    def _restore(self, persisted: Mapping[str, bytes]) -> None:
        """Load persisted state (see :class:`belep.consensus.pbft.PbftReplica`)."""

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

    # ------------------------------------------------------------------ requests and batching

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
            state_root = self._executed.root_after(h - 1, parent_hash)
            if state_root is None:
                break  # the parent's execution (``Executed``) calls this again
            txs = pool.take_batch(cfg.max_batch_size)
            block = build_block(
                domain=cfg.domain,
                height=h,
                epoch=EPOCH,
                view=self._view,
                parent_hash=parent_hash,
                parent_timestamp_ms=parent_ts,
                transactions=txs,
                now_ms=self._now,
                proposer=self._id,
                state_root=state_root,
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
            if h > self._log.high:
                self._ask_status(sender)
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
        check_proposal(
            block,
            self._rules,
            view=self._view,
            now_ms=self._now,
            parent=self._parent_of(h),
            bodies=self._bodies,
        )
        slot = self._log.slot(h)
        slot.blocks[digest] = block
        slot.preprepared = digest
        self._pool.mark_proposed(block.transactions, self._now)
        self._try_prepare(h)
        self._resolve_certificates(slot)
        self._arm_progress()

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
        if height > self._delivered:
            # Vote only for the execution root this replica computed after the parent
            # (a block at or below the delivered height was checked when delivered).
            check = self._executed.check(slot.blocks[digest])
            if check is RootCheck.UNKNOWN:
                return  # ``Executed`` for the parent calls this again
            if check is RootCheck.DIFFERS:
                self.stats["ignored.state-root-mismatch"] += 1
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
        if not self._vote_is_current(
            sender, s.kind, PREPARE_KIND, s.domain, s.epoch, s.view, s.height
        ):
            return
        certificate = self._prepares.add(s, sender, msg.signature)
        if certificate is not None and self._mode is Mode.NORMAL:
            slot = self._log.get(s.height)
            if slot is not None:
                self._on_prepared(slot, certificate)

    def _vote_is_current(
        self,
        sender: NodeId,
        kind: str,
        expected: str,
        domain: str,
        epoch: int,
        view: int,
        height: int,
    ) -> bool:
        if kind != expected or domain != self.config.domain or epoch != EPOCH:
            self.stats[f"ignored.{expected}-malformed"] += 1
            return False
        if self._mode not in (Mode.NORMAL, Mode.VIEW_CHANGE) or view != self._view:
            self.stats[f"ignored.{expected}-wrong-view"] += 1
            return False
        if not self._log.in_window(height):
            if height > self._log.high:
                self._ask_status(sender)
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
        if not self._vote_is_current(
            sender, s.kind, COMMIT_KIND, s.domain, s.epoch, s.view, s.height
        ):
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

    # ------------------------------------------------------------------ execution

    def _on_executed(self, event: Executed) -> None:
        """The host executed a delivered block: its state root may unblock a vote or a proposal."""
        if self._executed.advance(event):
            self._try_prepare(self._executed.height + 1)
            self._maybe_propose()

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
        if (
            self._mode is Mode.VIEW_CHANGE
            and not self._left_behind
            and block.header.timestamp_ms >= self._vc_started_ms
        ):
            # Others commit, in a view this replica is not in, blocks proposed after it
            # entered the view change (an older block fetched while catching up says
            # nothing): from now on its clients' transactions go to every member
            # (``_flush_forward``), those waiting too. The proposer's clock only steers
            # this traffic, never safety.
            self._left_behind = True
            cfg = self.config
            queued = {t.tx_hash for t in self._forward}
            self._forward.extend(
                t
                for t in self._pool.pending_older_than(self._now, cfg.max_batch_size * cfg.window)
                if t.tx_hash not in queued
            )
            if self._forward and not self._forward_armed:
                self._forward_armed = True
                self._fx.append(SetTimer(TIMER_FORWARD, cfg.max_batch_wait_ms))
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
        s = msg.statement
        stable = self._checkpoints.add_vote(sender, s, msg.signature)
        if stable is not None:
            self._on_stable(stable)
        elif s.height > self._delivered and self._checkpoints.support(s) > self.config.f:
            # f + 1 matching votes: a correct replica delivered that height; catch up
            # without waiting for a full quorum (a faulty voter may withhold its vote).
            self._request_transfer(s.height)

    def _on_stable(self, certificate: QuorumCertificate) -> None:
        """A higher stable checkpoint (already held by the tracker): collect garbage."""
        s = certificate.statement
        low = s.height
        self._persist(STABLE_KEY, encode(certificate.to_wire()))
        for h, _slot in self._log.advance(low):
            self._persist(slot_key(h), None)
        for key in sorted(k for k in self._persisted_blocks if k[0] <= low):
            self._persisted_blocks.discard(key)
            self._persist(block_key(*key), None)
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
        if target > self._transfer_target:
            self._bad_answers = 0
            if self._transfer_retry:
                self._transfer_retry = False  # new evidence: do not wait for the retry timer
        self._transfer_target = max(self._transfer_target, target)
        self._fetch()

    def _fetch(self) -> None:
        """Ask peers for committed blocks after the delivered height (one request at a time).

        An empty answer ends the fetching unless a certificate showed that a
        higher height is committed (``_transfer_target``); then it is retried
        when the transfer timer fires, or at once on evidence of a higher one.
        """
        if self._transfer_in_flight or self._transfer_retry:
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
            committee=self._rules.committee,
            cache=self._cache,
        )
        if problem is not None:
            self.stats[f"invalid.fetched.{type(problem).__name__}"] += 1
        if self._transfer_in_flight:
            self._transfer_in_flight = False
            self._fx.append(CancelTimer(TIMER_TRANSFER))
        for block, certificate in good:
            # A delivery can complete a checkpoint, and through it deliver later
            # heights from the log: deliver only what is still next.
            if (
                block.height == self._delivered + 1
                and block.header.prev_hash == self._delivered_hash
            ):
                self._deliver(block, certificate)
        if good:
            self._bad_answers = 0
            self._after_delivery()
            # Keep fetching until a fetch brings nothing new: blocks committed
            # while this replica was catching up were outside its watermarks.
            self._fetch()
        elif (
            problem is not None
            and self._transfer_target > self._delivered
            and self._bad_answers < len(self._audience)
        ):
            # A peer answered with blocks that do not verify: ask again at once (the host
            # asks another peer), at most once per peer before waiting for the timer. A
            # replica that lacks a committed block cannot propose or vote above it.
            self._bad_answers += 1
            self._fetch()
        elif self._transfer_target > self._delivered and not self._transfer_retry:
            self._transfer_retry = True  # known to exist: retry when the timer fires
            self._fx.append(SetTimer(TIMER_TRANSFER, self.config.request_timeout_ms))

    def _ask_status(self, peer: NodeId) -> None:
        """Ask ``peer`` for its stable checkpoint (once per timeout per peer).

        Sent when ``peer`` talks about heights above our high watermark: our
        stable checkpoint is behind (its votes may have been lost), and the
        reply's certificate moves it.
        """
        last = self._status_asked.get(peer)
        if last is not None and self._now - last < self._timeout():
            return
        self._status_asked[peer] = self._now
        self._fx.append(Send(peer, StatusRequest()))

    # ------------------------------------------------------------------ progress

    def _timeout(self) -> int:
        return self.config.request_timeout_ms << self._backoff

    def _progress_delay(self) -> int:
        """Half the timeout: the progress timer has two stages (nudge, then view change)."""
        return max(1, self._timeout() // 2)

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
            self._fx.append(SetTimer(TIMER_PROGRESS, self._progress_delay()))

    def _restart_progress(self) -> None:
        if self._mode is not Mode.NORMAL:
            return
        if self._outstanding():
            self._progress_armed = True
            self._fx.append(SetTimer(TIMER_PROGRESS, self._progress_delay()))
        elif self._progress_armed:
            self._progress_armed = False
            self._fx.append(CancelTimer(TIMER_PROGRESS))

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
