"""HPBFT replica core: state, roles, persistence, epochs, clients and catch-up.

Owns :class:`HpbftCore`, the state every HPBFT node (seat or standby) keeps
(``docs/spec/hpbft.md``): the configuration history (epochs and their seats),
the current view, the per-epoch log (prepared certificates, blocks, commit
certificates, checkpoints) and the per-view state (accepted proposals, votes
cast, prepare certificates of this view); who is a voter (a seat of the
current epoch — a standby never is, unless a test plants a bug); what is
persisted and how a restarted node reads it back; opening the next epoch
when a configuration block is delivered; client transactions and their
forwarding to the primary; and catching up by state transfer, verifying
every fetched certificate against the seats of the epoch covering its
height.

The protocol itself is layered on top: the normal case in
:mod:`belep.consensus.hpbft_normal`, the view change and substitution in
:mod:`belep.consensus.hpbft_viewchange`, timers and revival in
:mod:`belep.consensus.hpbft`.

No I/O, no clock, no randomness.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from belep.consensus.batching import RequestPool
from belep.consensus.certificates import SignatureCache, VoteCollector
from belep.consensus.checkpoints import CheckpointTracker
from belep.consensus.executed import ExecutionCursor
from belep.consensus.hpbft_messages import (
    EpochHint,
    Forward,
    PrePrepare,
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
    encode_vote,
    prepared_key,
    vote_key,
)
from belep.consensus.log import log_size
from belep.consensus.types import (
    Effect,
    Executed,
    Persist,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerId,
)
from belep.crypto import PublicKey
from belep.errors import ChainError, ConfigError, ValidationError
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
)
from belep.ledger.certificate import check_block_certificate
from belep.ledger.config import (
    ConfigHistory,
    EpochConfig,
    genesis_history,
)
from belep.ledger.config_tx import (
    RevivalRecord,
    ReviveOrder,
    SubstituteSeat,
    find_config_tx,
    is_config_payload,
)

__all__ = [
    "BUG_MIXED_QUORUM",
    "BUG_STANDBY_VOTE",
    "HpbftCore",
    "HpbftOptions",
    "changes_epoch",
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


def changes_epoch(block: Block) -> bool:
    """Does ``block`` carry a configuration change that opens the next epoch at its delivery?

    Only a ``SubstituteSeat`` does: a revival record is applied where the
    revived epoch began, so blocks of that epoch may follow it (the
    configuration barrier, ``docs/spec/hpbft.md`` §2, is about epoch changes).
    """
    return isinstance(find_config_tx(block), SubstituteSeat)


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


class HpbftCore(ABC):
    """State and normal-case handlers of one HPBFT seat or standby.

    Abstract: the layers above (normal case, view change, revival) implement the
    hooks marked ``@abstractmethod``; only :class:`~belep.consensus.hpbft.HpbftReplica`
    is instantiated.
    """

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
            config.domain, config.members, config.observers, keys=config.keys
        )
        self._executed = ExecutionCursor(config.genesis_hash)
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
        self._last_delivery_ms = 0
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
            self.history = replace(state.history, keys=self.config.keys)
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

    @abstractmethod
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
        self._replay_future()

    def _replay_future(self) -> None:
        """Handle the buffered messages of the epoch just entered (others are dropped)."""
        future, self._future = self._future, []
        for sender, message in future:
            self._dispatch(sender, message)

    @abstractmethod
    def _on_new_epoch(self) -> None:
        """Hook: the replica restarts its timers and the primary proposes."""

    def _on_executed(self, event: Executed) -> None:
        """The host executed a delivered block: a vote or a proposal may wait for its root."""
        if self._executed.advance(event):
            self._try_votes(Height(self._executed.height + 1))
            self._maybe_propose()

    @abstractmethod
    def _try_votes(self, h: Height) -> None:
        """Implemented by a later layer."""

    @abstractmethod
    def _dispatch(self, sender: NodeId, message: object) -> None:
        """Implemented by a later layer."""

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

    @abstractmethod
    def _on_work(self) -> None:
        """Hook: outstanding work appeared (the replica arms its progress timer)."""

    # -- hooks the normal case implements ---------------------------------------------

    @abstractmethod
    def _maybe_propose(self, *, flush: bool = False) -> None:
        """Implemented by a later layer."""

    @abstractmethod
    def _deliver(self, block: Block, qc: QuorumCertificate) -> None:
        """Implemented by a later layer."""

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
        if self.history.epoch(s.epoch) is None:
            for record in records:
                current = self.history.current.epoch
                if record.order.decision.epoch == current and record.base_height < h:
                    self._adopt_revival_record(record)
        committee = self.history.committee(h, s.epoch)
        check_block_certificate(block.header, qc, committee, cache=self._cache)
        block.check_tx_root()
        self.history.after_block(block)  # a malformed configuration change is refused here

    def _adopt_revival_record(self, record: RevivalRecord) -> None:
        """Hook: enter a revived epoch learned from the chain (replica decides)."""
        raise ChainError("revival records are handled by the replica")
