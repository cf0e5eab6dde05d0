"""HPBFT replica core: state, the normal case, delivery, checkpoints and catch-up.

Owns :class:`HpbftCore`, the part of the HPBFT replica (``docs/spec/hpbft.md``)
that runs inside one view of one epoch:

* **linear collection** — the primary broadcasts a ``PrePrepare`` to seats and
  standbys; seats send signed ``prepare`` votes to the primary only; the
  primary aggregates ``2f+1`` into a prepare certificate and broadcasts it;
  seats answer with ``commit`` votes; the commit certificate is broadcast and
  every node delivers the block with it;
* **the parent rule** — a seat votes *prepare* for the block at height ``h`` of
  view ``v`` only when the block's parent is the view's base, its own
  delivered tip, or holds a view-``v`` prepare certificate (so the prepared
  blocks of a view form a chain, which is what the view change relies on);
* **configuration barrier** — nothing is accepted above a block carrying a
  configuration transaction in the same epoch; its delivery opens the next
  epoch (new seats, view 0, fresh certificates);
* checkpoints every ``K`` blocks (garbage collection of the log) and catch-up
  by state transfer, every fetched certificate verified against the seats of
  its epoch at its height.

The view change, substitution, revival and timers live in
:mod:`belep.consensus.hpbft`, which subclasses this core.

Invariants of a correct replica: one prepare vote per (epoch, view, height),
persisted before it is sent; a commit vote only for a block whose prepare
certificate is persisted; deliveries in height order, each with a commit
certificate of the seats of its epoch; an invalid input changes nothing.

No I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.batching import RequestPool
from belep.consensus.certificates import SignatureCache, VoteCollector, verify_certificate
from belep.consensus.checkpoints import CheckpointTracker
from belep.consensus.hpbft_config import (
    COMMIT_KIND,
    PREPARE_KIND,
    ConfigHistory,
    EpochConfig,
    RevivalRecord,
    ReviveOrder,
    SubstituteSeat,
    decode_config_tx,
    find_config_tx,
    genesis_history,
    is_config_payload,
)
from belep.consensus.hpbft_messages import (
    Certified,
    Checkpoint,
    EpochHint,
    Forward,
    PrePrepare,
    Vote,
)
from belep.consensus.hpbft_state import (
    PREPARED_PREFIX,
    STATE_KEY,
    TIP_KEY,
    VOTE_PREFIX,
    DurableState,
    decode_prepared,
    decode_tip,
    decode_vote,
    encode_prepared,
    encode_tip,
    encode_vote,
    prepared_key,
    vote_key,
)
from belep.consensus.log import log_size
from belep.consensus.types import (
    Broadcast,
    Deliver,
    Effect,
    Persist,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerId,
)
from belep.crypto import PublicKey
from belep.errors import ChainError, ConfigError, ProtocolViolation, ValidationError
from belep.ledger.block import (
    Block,
    Digest,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)

__all__ = [
    "BUG_MIXED_QUORUM",
    "BUG_STANDBY_VOTE",
    "HpbftCore",
    "HpbftOptions",
]

#: Test-only planted bug: standbys vote like seats and any ``2f+1`` of seats and standbys
#: make a certificate (the paper's literal shortcut; DESIGN §3 explains why it forks).
BUG_MIXED_QUORUM = "hpbft_mixed_quorum"
#: Test-only planted bug: a standby's vote counts before a committed SubstituteSeat seats it.
BUG_STANDBY_VOTE = "hpbft_standby_vote_before_substitution"

BATCH_TIMER = TimerId("hpbft/batch")
FORWARD_TIMER = TimerId("hpbft/forward")
FETCH_TIMER = TimerId("hpbft/fetch")
#: How many heights the primary proposes above the last prepared one (the parent rule
#: makes prepare votes sequential, so deeper pipelining would only shrink batches).
PROPOSAL_LEAD = 2
#: Messages of the next epoch kept until this replica reaches it.
FUTURE_BUFFER = 512


@dataclass(frozen=True, slots=True)
class HpbftOptions:
    """HPBFT settings beyond :class:`~belep.consensus.types.ReplicaConfig`.

    ``substitution_timeout_ms``: how long a seat may miss votes before the
    primary proposes its substitution (default ``2 × request_timeout_ms``);
    ``standby_status_ms``: how often standbys tell the primary they are alive
    (default ``4 × heartbeat_ms``); ``parent_domain``: the domain whose
    committed ``ReviveChild`` decisions this domain obeys (``None`` disables
    revival); ``parent_voters``: the parent's validators (default: the
    genesis standbys, which DESIGN §2 makes the parent unit's validators);
    ``revive_grace_ms``: how long the revived epoch's primary waits for
    standby reports once every required seat reported.
    """

    substitution_timeout_ms: int | None = None
    standby_status_ms: int | None = None
    parent_domain: str | None = None
    parent_voters: tuple[NodeId, ...] | None = None
    revive_grace_ms: int = 50


class HpbftCore:
    """State and normal-case handlers of one HPBFT seat or standby."""

    def __init__(
        self,
        config: ReplicaConfig,
        persisted: Mapping[str, bytes],
        options: HpbftOptions | None = None,
    ) -> None:
        self.config = config
        self.options = options or HpbftOptions()
        me = config.node_id
        if me not in config.members and me not in config.observers:
            raise ConfigError("this node is neither seat nor standby", found=me)
        self._me = me
        self._keys: Mapping[NodeId, PublicKey] = config.keys
        self._cache = SignatureCache()
        self._bugs = config.planted_bugs
        self._out: list[Effect] = []
        self._now = 0
        self._token = 0
        self.stats: dict[str, int] = {}
        self._log_size = log_size(config.checkpoint_interval, config.window)
        self._sub_timeout = self.options.substitution_timeout_ms or 2 * config.request_timeout_ms
        self.history: ConfigHistory = genesis_history(
            config.domain, config.members, config.observers
        )
        self._base: tuple[Height, Digest] = (Height(0), config.genesis_hash)
        self.view = View(0)
        self._in_view_change = False
        self._vc_attempt = 0
        self.delivered_height = Height(0)
        self._delivered_hash = config.genesis_hash
        self._last_cert: QuorumCertificate | None = None
        self._pool = RequestPool()
        self._forward_buf: list[Transaction] = []
        self._future: list[tuple[NodeId, object]] = []
        self._hinted: dict[NodeId, int] = {}
        self._fetching_since: int | None = None
        self._fetch_armed = False
        self._last_heard: dict[NodeId, int] = {}
        self._vote_keys: set[Height] = set()
        self._held_votes: list[tuple[int, NodeId, VoteStatement, bytes]] = []
        self._reset_epoch_state()
        if any(key.startswith("hpbft/") for key in persisted):
            self._restore(persisted)

    # -- state resets ------------------------------------------------------------------

    def _reset_epoch_state(self) -> None:
        cfg = self.history.current
        self._checkpoints = CheckpointTracker(
            domain=self.config.domain,
            epoch=cfg.epoch,
            interval=self.config.checkpoint_interval,
            voters=self._voter_keys(),
            quorum=cfg.quorum,
            cache=self._cache,
            genesis_hash=self._base[1],
        )
        self._prepared: dict[Height, QuorumCertificate] = {}
        self._blocks: dict[Digest, Block] = {}
        self._delivered_hashes: dict[Height, Digest] = {}
        self._commits: dict[Height, QuorumCertificate] = {}
        self._reset_view_state()

    def _reset_view_state(self) -> None:
        self._accepted: dict[Height, Block] = {}
        self._early: dict[Height, tuple[NodeId, PrePrepare]] = {}
        self._votes_sent: dict[Height, Digest] = {}
        self._view_qcs: dict[Height, QuorumCertificate] = {}
        self._commit_voted: set[Height] = set()
        self._view_base: tuple[Height, Digest] = (self._low, self._low_hash)
        self._designated: dict[Height, Digest] = {}
        self._designated_top = self._view_base[0]
        voters = self._voter_keys()
        quorum = self.history.current.quorum
        self._prepare_votes = VoteCollector(voters, quorum, self._cache)
        self._commit_votes = VoteCollector(voters, quorum, self._cache)
        self._next_height = Height(max(self.delivered_height, self._view_base[0]) + 1)
        self._proposal_times: list[int] = []
        self._config_pending = False
        self._view_started = self._now
        self._idle = True

    # -- roles and quorums -------------------------------------------------------------

    @property
    def epoch_config(self) -> EpochConfig:
        return self.history.current

    @property
    def committed_height(self) -> Height:
        return self.delivered_height

    @property
    def _low(self) -> Height:
        return Height(max(self._base[0], self._checkpoints.stable_height))

    @property
    def _low_hash(self) -> Digest:
        cp = self._checkpoints
        if cp.stable is not None and cp.stable_height > self._base[0]:
            return cp.stable_hash
        return self._base[1]

    def _high(self) -> int:
        return self._low + self._log_size

    def is_seat(self) -> bool:
        return self.history.current.holds_seat(self._me)

    def _standbys_vote(self) -> bool:
        return BUG_MIXED_QUORUM in self._bugs

    def _acts_as_seat(self) -> bool:
        return (self.is_seat() or self._standbys_vote()) and self._participating()

    def _counts(self, node: NodeId) -> bool:
        cfg = self.history.current
        if cfg.holds_seat(node):
            return True
        if BUG_MIXED_QUORUM in self._bugs or BUG_STANDBY_VOTE in self._bugs:
            return node in cfg.standbys
        return False

    def _voter_keys(self, cfg: EpochConfig | None = None) -> dict[NodeId, PublicKey]:
        cfg = cfg or self.history.current
        voters = cfg.voter_keys(self._keys)
        if BUG_MIXED_QUORUM in self._bugs or BUG_STANDBY_VOTE in self._bugs:
            voters.update({s: self._keys[s] for s in cfg.standbys})
        return voters

    def _primary(self, view: int | None = None) -> NodeId:
        return self.history.current.primary(self.view if view is None else view)

    def _is_primary(self) -> bool:
        return self._primary() == self._me and self.is_seat() and self._participating()

    def _participating(self) -> bool:
        """False once this node joined a revival of the current epoch (it never votes in it again)."""
        return True

    def _everyone(self) -> tuple[NodeId, ...]:
        cfg = self.history.current
        return tuple(n for n in (*cfg.seats, *cfg.standbys) if n != self._me)

    def _other_seats(self) -> tuple[NodeId, ...]:
        cfg = self.history.current
        seats = cfg.seats if not self._standbys_vote() else (*cfg.seats, *cfg.standbys)
        return tuple(n for n in seats if n != self._me)

    # -- effects and persistence -------------------------------------------------------

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _persist(self, key: str, value: bytes | None) -> None:
        self._token += 1
        self._out.append(Persist(self._token, key, value))

    def _persist_state(self) -> None:
        state = DurableState(
            history=self.history,
            base=self._base,
            view=self.view,
            in_view_change=self._in_view_change,
            view_base=self._view_base,
            designated=tuple(
                self._designated[Height(h)]
                for h in range(self._view_base[0] + 1, self._designated_top + 1)
            ),
            delivered=(self.delivered_height, self._delivered_hash),
            stable=self._checkpoints.stable,
            reviving=self._reviving_order(),
        )
        self._persist(STATE_KEY, state.encode())

    def _reviving_order(self) -> ReviveOrder | None:
        return None  # overridden by the replica (revival)

    def _persist_vote(self, height: Height, digest: Digest) -> None:
        self._vote_keys.add(height)
        self._persist(vote_key(height), encode_vote(self.history.current.epoch, self.view, digest))

    def _forget_votes(self, up_to: int | None = None) -> None:
        """Delete persisted votes (at or below ``up_to``, or all)."""
        for h in sorted(self._vote_keys):
            if up_to is None or h <= up_to:
                self._vote_keys.discard(h)
                self._persist(vote_key(h), None)

    def _restore(self, persisted: Mapping[str, bytes]) -> None:
        state = DurableState.decode(persisted[STATE_KEY]) if STATE_KEY in persisted else None
        if state is not None:
            if state.history.domain != self.config.domain:
                raise ConfigError(
                    "persisted state of another domain",
                    expected=self.config.domain,
                    found=state.history.domain,
                )
            self.history = state.history
            self._base = state.base
            self.delivered_height, self._delivered_hash = state.delivered
        if TIP_KEY in persisted:
            tip = decode_tip(persisted[TIP_KEY])
            if tip[0] > self.delivered_height:
                self.delivered_height, self._delivered_hash = tip
        self._reset_epoch_state()
        if state is not None:
            if state.stable is not None:
                self._checkpoints.restore(state.stable)
            self.view = state.view
            self._in_view_change = state.in_view_change
            self._reset_view_state()
            self._view_base = state.view_base
            self._designated = {
                Height(state.view_base[0] + 1 + i): d for i, d in enumerate(state.designated)
            }
            self._designated_top = Height(state.view_base[0] + len(state.designated))
        self._next_height = Height(max(self.delivered_height, self._designated_top) + 1)
        for key in sorted(k for k in persisted if k.startswith(VOTE_PREFIX)):
            height = Height(int(key[len(VOTE_PREFIX) :]))
            self._vote_keys.add(height)
            epoch, view, digest = decode_vote(persisted[key])
            if epoch == self.history.current.epoch and view == self.view:
                self._votes_sent[height] = digest
        for key in sorted(k for k in persisted if k.startswith(PREPARED_PREFIX)):
            qc, block = decode_prepared(persisted[key])
            s = qc.statement
            if s.epoch == self.history.current.epoch and s.height > self._low:
                self._prepared[s.height] = qc
                self._blocks[block.block_hash] = block
        if state is not None:
            self._restore_extra(state)

    def _restore_extra(self, state: DurableState) -> None:
        """Hook for the replica's revival state."""

    # -- epochs ------------------------------------------------------------------------

    def _epoch_ok(self, sender: NodeId, epoch: int, message: object) -> bool:
        """True if a message of ``epoch`` is for the current epoch; otherwise react."""
        current = self.history.current.epoch
        if epoch == current:
            return True
        if epoch < current:
            last = self._hinted.get(sender)
            if last is None or self._now - last >= self.config.heartbeat_ms:
                self._hinted[sender] = self._now
                self._out.append(
                    Send(sender, EpochHint(Epoch(current), Height(self.delivered_height)))
                )
            return False
        if epoch == current + 1 and len(self._future) < FUTURE_BUFFER:
            self._future.append((sender, message))
        self._schedule_fetch(soon=True)
        return False

    def _switch_epoch(self, block: Block) -> None:
        """Open the epoch the configuration block just delivered started."""
        self._count("epoch_changes")
        self._base = (block.height, block.block_hash)
        self.view = View(0)
        self._in_view_change = False
        self._vc_attempt = 0
        for key in [prepared_key(h) for h in self._prepared]:
            self._persist(key, None)
        self._forget_votes()
        self._reset_epoch_state()
        self._last_heard = {}
        self._persist_state()
        self._on_new_epoch()
        future, self._future = self._future, []
        for sender, message in future:
            self._dispatch(sender, message)

    def _on_new_epoch(self) -> None:
        """Hook: the replica restarts its timers and the primary proposes."""

    def _dispatch(self, sender: NodeId, message: object) -> None:
        raise NotImplementedError

    # -- clients and forwarding --------------------------------------------------------

    def _acceptable_client_tx(self, tx: Transaction) -> bool:
        return not is_config_payload(tx.payload) and self.config.validate_transaction(tx)

    def _on_client(self, tx: Transaction) -> None:
        if not self._acceptable_client_tx(tx):
            self._count("rejected_client_tx")
            return
        if not self._pool.add(tx, self._now):
            return
        if self._is_primary() and not self._in_view_change:
            self._maybe_propose()
        else:
            self._forward_buf.append(tx)
            if len(self._forward_buf) == 1:
                self._out.append(SetTimer(FORWARD_TIMER, self.config.max_batch_wait_ms))
        self._on_work()

    def _flush_forward(self) -> None:
        txs, self._forward_buf = self._forward_buf, []
        primary = self._primary()
        if txs and primary != self._me:
            self._out.append(Send(primary, Forward(tuple(txs))))

    def _on_forward(self, sender: NodeId, message: Forward) -> None:
        added = [
            tx
            for tx in message.txs[: self.config.max_batch_size * 8]
            if self._acceptable_client_tx(tx) and self._pool.add(tx, self._now)
        ]
        if not added:
            return
        if self._is_primary() and not self._in_view_change:
            self._maybe_propose()
        elif self._primary() != sender:
            # The sender believes in another primary: pass the new ones on, once.
            self._forward_buf.extend(added)
            self._out.append(SetTimer(FORWARD_TIMER, self.config.max_batch_wait_ms))
        self._on_work()

    def _on_work(self) -> None:
        """Hook: outstanding work appeared (the replica arms its progress timer)."""

    # -- proposing (primary) -----------------------------------------------------------

    def _parent_hash(self, height: int) -> Digest | None:
        if height - 1 == self._view_base[0]:
            return self._view_base[1]
        parent = self._accepted.get(Height(height - 1))
        if parent is not None:
            return parent.block_hash
        if height - 1 == self.delivered_height:
            return self._delivered_hash
        return None

    def _prepared_frontier(self) -> int:
        """The highest height whose block may already be voted on in this view."""
        frontier: int = max(self.delivered_height, self._view_base[0])
        while Height(frontier + 1) in self._view_qcs or Height(frontier + 1) in self._commits:
            frontier += 1
        return frontier

    def _config_tx_for(self, height: Height) -> Transaction | None:
        """Hook: a configuration transaction the next block must carry (replica decides)."""
        return None

    def _maybe_propose(self, *, flush: bool = False) -> None:
        if not self._is_primary() or self._in_view_change:
            return
        cfg = self.history.current
        while not self._config_pending:
            h = self._next_height
            if h > self.delivered_height + self.config.window or h > self._high():
                return
            if h > self._prepared_frontier() + PROPOSAL_LEAD:
                return  # votes wait for the parent's certificate: let the batch grow instead
            parent = self._parent_hash(h)
            if parent is None:
                return
            special = self._config_tx_for(h)
            if special is not None:
                txs: tuple[Transaction, ...] = (special,)
                change = decode_config_tx(special.payload)
                if isinstance(change, SubstituteSeat):
                    self._config_pending = True
                else:
                    txs += self._pool.take_batch(self.config.max_batch_size - 1)
            else:
                pending = self._pool.pending_count
                if pending == 0:
                    return
                oldest = self._pool.oldest_pending_ms()
                waited = 0 if oldest is None else self._now - oldest
                if (
                    pending < self.config.max_batch_size
                    and not flush
                    and waited < self.config.max_batch_wait_ms
                ):
                    self._out.append(SetTimer(BATCH_TIMER, self.config.max_batch_wait_ms - waited))
                    return
                txs = self._pool.take_batch(self.config.max_batch_size)
            parent_block = self._accepted.get(Height(h - 1))
            stamp = self._now
            if parent_block is not None:
                stamp = max(stamp, parent_block.header.timestamp_ms)
            block = make_block(
                domain=self.config.domain,
                height=h,
                epoch=cfg.epoch,
                view=self.view,
                prev_hash=parent,
                transactions=txs,
                timestamp_ms=stamp,
                proposer=self._me,
            )
            self._accepted[h] = block
            self._blocks[block.block_hash] = block
            self._next_height = Height(h + 1)
            self._proposal_times.append(self._now)
            self._idle = False
            self._out.append(Broadcast(self._everyone(), PrePrepare(cfg.epoch, self.view, block)))
            self._try_votes(h)

    # -- pre-prepare -------------------------------------------------------------------

    def _on_pre_prepare(self, sender: NodeId, message: PrePrepare) -> None:
        if not self._epoch_ok(sender, message.epoch, message):
            return
        if not self._acts_as_seat():
            self._observe_block(sender, message)
            return
        if message.view != self.view or self._in_view_change:
            return  # a seat enters a view only through its NewView
        if sender != self._primary(message.view):
            raise ProtocolViolation("pre-prepare from a node that is not the primary", found=sender)
        block = message.block
        h = block.height
        if h <= self._low:
            return
        if h > self._high():
            self._schedule_fetch(soon=False)
            return
        known = self._accepted.get(h)
        if known is not None:
            if known.block_hash != block.block_hash:
                self._count("equivocation_seen")
                return
            self._resend_vote(h, PREPARE_KIND)
            return
        if h > self._designated_top and self._parent_hash(h) is None:
            if len(self._early) < self._log_size:
                self._early[h] = (sender, message)
            return
        self._check_proposal(block, sender)
        self._accept(block)
        nxt = self._early.pop(Height(h + 1), None)
        if nxt is not None:
            self._dispatch(*nxt)

    def _observe_block(self, sender: NodeId, message: PrePrepare) -> None:
        """A standby keeps proposed blocks (bounded) until a commit certificate names one.

        It does not validate transactions: the commit certificate proves that
        ``f+1`` correct seats did (DESIGN §3, performance notes).
        """
        if message.view > self.view and sender == self._primary(message.view):
            self._follow_view(message.view)
        if message.view != self.view or sender != self._primary(message.view):
            return
        block = message.block
        h = block.height
        if h <= max(self.delivered_height, self._low) or h > self._high():
            return
        if block.header.domain != self.config.domain or h in self._accepted:
            return
        block.check_tx_root()
        self._accepted[h] = block
        self._blocks[block.block_hash] = block
        self._pool.mark_proposed(block.transactions, self._now)
        self._try_deliver()

    def _follow_view(self, view: View) -> None:
        """A standby learns of a later view from its primary (it takes no part in view changes)."""
        self.view = view
        self._in_view_change = False
        self._reset_view_state()

    def _accept(self, block: Block) -> None:
        self._accepted[block.height] = block
        self._blocks[block.block_hash] = block
        self._pool.mark_proposed(block.transactions, self._now)
        self._try_votes(block.height)
        self._on_work()

    def _check_proposal(self, block: Block, sender: NodeId) -> None:
        """Raise unless ``block`` is acceptable at its height in this view (spec §Normal case)."""
        h = block.height
        header = block.header
        cfg = self.history.current
        if header.domain != self.config.domain:
            raise ChainError(
                "block of another domain", expected=self.config.domain, found=header.domain
            )
        if h <= self._designated_top:
            if block.block_hash != self._designated.get(h):
                raise ProtocolViolation("re-proposal differs from the designated block", found=h)
            return
        if header.epoch != cfg.epoch or header.view != self.view or header.proposer != sender:
            raise ProtocolViolation(
                "fresh block with the wrong epoch, view or proposer",
                expected=(cfg.epoch, self.view, sender),
                found=(header.epoch, header.view, header.proposer),
            )
        parent = self._parent_hash(h)
        if header.prev_hash != parent:
            raise ChainError(
                "block does not extend this view's chain", expected=parent, found=header.prev_hash
            )
        parent_block = self._accepted.get(Height(h - 1))
        if parent_block is not None:
            if header.timestamp_ms < parent_block.header.timestamp_ms:
                raise ProtocolViolation(
                    "block timestamp goes back in time", found=header.timestamp_ms
                )
            if find_config_tx(parent_block) is not None and h - 1 > self._view_base[0]:
                raise ProtocolViolation("block above a configuration block of the same epoch")
        if header.timestamp_ms > self._now + self.config.max_clock_skew_ms:
            raise ProtocolViolation("block timestamp too far ahead", found=header.timestamp_ms)
        block.check_tx_root()
        self._check_transactions(block)

    def _check_transactions(self, block: Block) -> None:
        change = find_config_tx(block)
        expected_record = self._expected_revival_record(block.height)
        if expected_record is not None and change != expected_record:
            raise ProtocolViolation("first block of a revived epoch must record the revival")
        if isinstance(change, SubstituteSeat):
            self.history.current.check_substitution(change, self.config.domain)
        elif change is not None and change != expected_record:
            raise ProtocolViolation(
                "configuration transaction not allowed here", found=type(change).__name__
            )
        for tx in block.transactions:
            if not is_config_payload(tx.payload) and not self.config.validate_transaction(tx):
                raise ProtocolViolation("block carries an invalid transaction", found=tx.tx_hash)

    def _expected_revival_record(self, height: Height) -> RevivalRecord | None:
        """Hook: the revival record the block at ``height`` must carry (replica decides)."""
        return None

    # -- prepare and commit votes ------------------------------------------------------

    def _parent_ready(self, h: Height, block: Block) -> bool:
        """The parent rule: the parent is the view's base, committed, or prepared in this view."""
        prev = block.header.prev_hash
        parent = Height(h - 1)
        if (parent, prev) == self._view_base or self._delivered_hashes.get(parent) == prev:
            return True
        if parent == self.delivered_height and prev == self._delivered_hash:
            return True
        for table in (self._view_qcs, self._commits):
            qc = table.get(parent)
            if qc is not None and qc.statement.block_hash == prev:
                return True
        return False

    def _try_votes(self, h: Height) -> None:
        """Cast prepare votes from ``h`` upwards while the parent rule allows."""
        if not self._acts_as_seat() or self._in_view_change:
            return
        cfg = self.history.current
        while h > self._low:
            block = self._accepted.get(h)
            if block is None or not self._parent_ready(h, block):
                return
            if h not in self._votes_sent:
                statement = VoteStatement(
                    PREPARE_KIND, self.config.domain, cfg.epoch, self.view, h, block.block_hash
                )
                self._votes_sent[h] = block.block_hash
                self._persist_vote(h, block.block_hash)
                self._send_vote(statement)
            h = Height(h + 1)

    def _resend_vote(self, h: Height, kind: str) -> None:
        """A retransmitted proposal or certificate: repeat this seat's vote (idempotent)."""
        if self._primary() == self._me or not self._acts_as_seat():
            return
        cfg = self.history.current
        voted = self._votes_sent.get(h)
        if voted is None or (kind == COMMIT_KIND and h not in self._commit_voted):
            return
        self._send_vote(VoteStatement(kind, self.config.domain, cfg.epoch, self.view, h, voted))

    def _send_vote(self, statement: VoteStatement) -> None:
        signature = self.config.private_key.sign(statement.signing_bytes())
        primary = self._primary()
        if primary == self._me:
            self._add_vote(self._me, statement, signature, trusted=True)
        else:
            self._out.append(Send(primary, Vote(statement, self._me, signature)))

    def _on_vote(self, sender: NodeId, vote: Vote) -> None:
        s = vote.statement
        if not self._epoch_ok(sender, s.epoch, vote):
            return
        if vote.voter != sender:
            raise ProtocolViolation(
                "vote relayed for another voter", expected=sender, found=vote.voter
            )
        if s.domain != self.config.domain or s.view != self.view or self._in_view_change:
            return
        if not self._is_primary():
            return
        if not self._counts(sender):
            raise ProtocolViolation("vote by a node holding no seat", found=sender)
        if BUG_MIXED_QUORUM in self._bugs and not self.history.current.holds_seat(sender):
            # The paper's "local first": standby feedback is used only when locals are late.
            self._held_votes.append((self._now, sender, s, vote.signature))
            return
        self._add_vote(sender, s, vote.signature, trusted=False)

    def _release_held_votes(self) -> None:
        """Planted bug only: count standby votes that waited a heartbeat for local ones."""
        due = [v for v in self._held_votes if self._now - v[0] >= self.config.heartbeat_ms]
        self._held_votes = [v for v in self._held_votes if v not in due]
        for _at, voter, statement, signature in due:
            if statement.view == self.view and self._is_primary():
                try:
                    self._add_vote(voter, statement, signature, trusted=False)
                except ValidationError:
                    self._count("invalid_held_vote")

    def _add_vote(
        self, voter: NodeId, s: VoteStatement, signature: bytes, *, trusted: bool
    ) -> None:
        if s.kind == PREPARE_KIND:
            block = self._accepted.get(s.height)
            if block is None or block.block_hash != s.block_hash:
                return
            qc = self._prepare_votes.add(s, voter, signature, trusted=trusted)
        elif s.kind == COMMIT_KIND:
            prepared = self._view_qcs.get(s.height)
            if prepared is None or prepared.statement.block_hash != s.block_hash:
                return
            qc = self._commit_votes.add(s, voter, signature, trusted=trusted)
        else:
            raise ProtocolViolation("unknown vote kind", found=s.kind)
        self._last_heard[voter] = self._now
        if qc is not None:
            self._out.append(Broadcast(self._everyone(), Certified(qc)))
            self._apply_certificate(qc)

    # -- certificates --------------------------------------------------------------------

    def _on_certified(self, sender: NodeId, message: Certified) -> None:
        qc = message.certificate
        s = qc.statement
        if not self._epoch_ok(sender, s.epoch, message):
            return
        if s.kind not in (PREPARE_KIND, COMMIT_KIND):
            raise ProtocolViolation("certificate of an unknown kind", found=s.kind)
        if s.height <= self._low:
            return
        if s.kind == COMMIT_KIND and (
            s.height <= self.delivered_height or s.height in self._commits
        ):
            return
        if s.kind == PREPARE_KIND and self._view_qcs.get(s.height) == qc:
            self._resend_vote(s.height, COMMIT_KIND)
            return
        self._verify_qc(qc)
        self._apply_certificate(qc)

    def _verify_qc(self, qc: QuorumCertificate) -> None:
        cfg = self.history.current
        verify_certificate(
            qc,
            voters=self._voter_keys(),
            quorum=cfg.quorum,
            cache=self._cache,
            kind=qc.statement.kind,
            domain=self.config.domain,
            epoch=cfg.epoch,
        )

    def _apply_certificate(self, qc: QuorumCertificate) -> None:
        s = qc.statement
        h = s.height
        if h > self._high():
            self._schedule_fetch(soon=False)
            return
        if s.kind == COMMIT_KIND:
            if h > self.delivered_height:
                self._commits.setdefault(h, qc)
                self._try_deliver()
                self._try_votes(Height(h + 1))
            return
        block = self._blocks.get(s.block_hash)
        if block is None or block.height != h:
            self._count("prepare_qc_without_block")
            return
        held = self._prepared.get(h)
        if held is None or s.view > held.statement.view:
            self._prepared[h] = qc
            self._persist(prepared_key(h), encode_prepared(qc, block))
        if s.view != self.view:
            return
        self._view_qcs[h] = qc
        if self._acts_as_seat() and not self._in_view_change and h not in self._commit_voted:
            accepted = self._accepted.get(h)
            if accepted is not None and accepted.block_hash == s.block_hash:
                self._commit_voted.add(h)
                cfg = self.history.current
                self._send_vote(
                    VoteStatement(
                        COMMIT_KIND, self.config.domain, cfg.epoch, self.view, h, s.block_hash
                    )
                )
        self._try_votes(Height(h + 1))
        if self._primary() == self._me:
            self._maybe_propose()

    # -- delivery ------------------------------------------------------------------------

    def _try_deliver(self) -> None:
        while True:
            h = Height(self.delivered_height + 1)
            qc = self._commits.get(h)
            if qc is None:
                break
            block = self._blocks.get(qc.statement.block_hash)
            if block is None or block.header.prev_hash != self._delivered_hash:
                self._schedule_fetch(soon=False)
                return
            epoch_before = self.history.current.epoch
            self._deliver(block, qc)
            if self.history.current.epoch != epoch_before:
                return
        if any(k > self.delivered_height for k in self._commits):
            self._schedule_fetch(soon=False)

    def _deliver(self, block: Block, qc: QuorumCertificate) -> None:
        """Deliver the next block; open the next epoch if it reconfigures."""
        h = block.height
        self._out.append(Deliver(block, qc))
        self.delivered_height = h
        self._delivered_hash = block.block_hash
        self._delivered_hashes[h] = block.block_hash
        self._last_cert = qc
        self._pool.on_committed(block.transactions)
        self._commits.pop(h, None)
        if not self._in_view_change:
            self._vc_attempt = 0
        before = self.history
        self.history = before.after_block(block)
        if self.history is not before:
            self._switch_epoch(block)
            return
        if self._checkpoints.is_checkpoint(h) and self.is_seat():
            statement = self._checkpoints.statement(h, block.block_hash)
            signature = self.config.private_key.sign(statement.signing_bytes())
            self._out.append(
                Broadcast(self._everyone(), Checkpoint(statement, self._me, signature))
            )
            stable = self._checkpoints.add_vote(self._me, statement, signature, trusted=True)
            if stable is not None:
                self._on_stable(stable)
        self._persist(TIP_KEY, encode_tip(h, block.block_hash))
        self._on_delivered()
        self._try_votes(Height(h + 1))
        self._maybe_propose()

    def _on_delivered(self) -> None:
        """Hook: the replica restarts its progress timer."""

    # -- checkpoints ---------------------------------------------------------------------

    def _on_checkpoint(self, sender: NodeId, message: Checkpoint) -> None:
        s = message.statement
        if not self._epoch_ok(sender, s.epoch, message):
            return
        if message.voter != sender:
            raise ProtocolViolation("checkpoint relayed for another voter", found=message.voter)
        if not self.history.current.holds_seat(sender):
            raise ProtocolViolation("checkpoint vote by a node holding no seat", found=sender)
        if s.height <= self._base[0]:
            return
        stable = self._checkpoints.add_vote(sender, s, message.signature)
        if stable is not None:
            self._on_stable(stable)

    def _on_stable(self, certificate: QuorumCertificate) -> None:
        """A stable checkpoint: move the low watermark and collect garbage."""
        low = certificate.statement.height
        for h in [h for h in self._prepared if h <= low]:
            qc = self._prepared.pop(h)
            self._blocks.pop(qc.statement.block_hash, None)
            self._persist(prepared_key(h), None)
        for digest in [d for d, b in self._blocks.items() if b.height <= low]:
            del self._blocks[digest]
        for table in (self._accepted, self._view_qcs, self._votes_sent, self._delivered_hashes):
            for h in [h for h in table if h <= low]:
                del table[h]
        self._commit_voted = {h for h in self._commit_voted if h > low}
        self._forget_votes(low)
        self._prepare_votes.prune(lambda _k, _v, height: height > low)
        self._commit_votes.prune(lambda _k, _v, height: height > low)
        self._persist_state()
        if low > self.delivered_height:
            self._schedule_fetch(soon=True)

    # -- catching up ---------------------------------------------------------------------

    def _all_nodes(self) -> tuple[NodeId, ...]:
        return tuple(n for n in (*self.config.members, *self.config.observers) if n != self._me)

    def _schedule_fetch(self, *, soon: bool) -> None:
        if soon:
            self._request_fetch()
        elif not self._fetch_armed:
            self._fetch_armed = True
            self._out.append(SetTimer(FETCH_TIMER, max(1, self.config.request_timeout_ms // 3)))

    def _on_fetch_timer(self) -> None:
        self._fetch_armed = False
        if any(k > self.delivered_height for k in self._commits) or (
            self._checkpoints.stable_height > self.delivered_height
        ):
            self._request_fetch()

    def _request_fetch(self) -> None:
        since = self._fetching_since
        if since is not None and self._now - since < 4 * self.config.request_timeout_ms:
            return
        self._fetching_since = self._now
        self._out.append(RequestStateTransfer(Height(self.delivered_height + 1), self._all_nodes()))

    def _on_fetched(self, blocks: Sequence[tuple[Block, QuorumCertificate]]) -> None:
        """Verify and deliver fetched blocks; every certificate against its epoch's seats."""
        self._fetching_since = None
        records = self._scan_revivals(block for block, _ in blocks)
        progressed = False
        for block, qc in blocks:
            if block.height <= self.delivered_height:
                continue
            try:
                self._check_fetched(block, qc, records)
            except ValidationError:
                self._count("bad_fetched_block")
                break
            self._deliver(block, qc)
            progressed = True
        if progressed:
            self._request_fetch()

    def _scan_revivals(self, blocks: Iterable[Block]) -> list[RevivalRecord]:
        """Hook: verified revival records among fetched blocks (replica decides)."""
        return []

    def _check_fetched(
        self, block: Block, qc: QuorumCertificate, records: Sequence[RevivalRecord]
    ) -> None:
        h = block.height
        if h != self.delivered_height + 1 or block.header.prev_hash != self._delivered_hash:
            raise ChainError("fetched block does not extend the delivered chain", found=h)
        if block.header.domain != self.config.domain:
            raise ChainError("fetched block of another domain", found=block.header.domain)
        s = qc.statement
        if s.kind != COMMIT_KIND or s.height != h or s.block_hash != block.block_hash:
            raise ChainError(
                "fetched certificate does not certify the block", found=(s.kind, s.height)
            )
        if self.history.epoch(s.epoch) is None:
            for record in records:
                current = self.history.current.epoch
                if record.order.decision.epoch == current and record.base_height < h:
                    self._adopt_revival_record(record)
        cfg = self.history.for_certificate(h, s.epoch)
        verify_certificate(
            qc,
            voters=self._voter_keys(cfg),
            quorum=cfg.quorum,
            cache=self._cache,
            kind=COMMIT_KIND,
            domain=self.config.domain,
            epoch=Epoch(s.epoch),
        )
        block.check_tx_root()
        self.history.after_block(block)  # a malformed configuration change is refused here

    def _adopt_revival_record(self, record: RevivalRecord) -> None:
        """Hook: enter a revived epoch learned from the chain (replica decides)."""
        raise ChainError("revival records are handled by the replica")
