"""HPBFT normal case: linear collection, the parent rule, delivery and checkpoints.

Owns :class:`HpbftNormalCase`, the part of the HPBFT replica
(``docs/spec/hpbft.md`` §Normal case) that runs inside one view of one epoch:

* **linear collection** — the primary broadcasts a ``PrePrepare`` to seats and
  standbys; seats send signed ``prepare`` votes to the primary only; the
  primary aggregates ``2f+1`` into a prepare certificate and broadcasts it;
  seats answer with ``commit`` votes; the commit certificate is broadcast and
  every node delivers the block with it;
* **the parent rule** — a seat votes *prepare* for the block at height ``h`` of
  view ``v`` only when the block's parent is the view's base, is committed,
  or holds a view-``v`` prepare certificate (so the prepared blocks of a view
  form a chain, which is what the view change relies on);
* **configuration barrier** — nothing is accepted above a block carrying a
  configuration transaction in the same epoch; its delivery opens the next
  epoch (new seats, view 0, fresh certificates);
* checkpoints every ``K`` blocks: the low watermark and garbage collection.

Invariants of a correct replica: one prepare vote per (epoch, view, height),
persisted before it is sent; a commit vote only for a block whose prepare
certificate is persisted; deliveries in height order, each with a commit
certificate of the seats of its epoch; an invalid input changes nothing.

No I/O, no clock, no randomness.
"""

from __future__ import annotations

from belep.consensus.certificates import verify_certificate
from belep.consensus.executed import RootCheck
from belep.consensus.hpbft_core import (
    BATCH_TIMER,
    BUG_MIXED_QUORUM,
    PROPOSAL_LEAD,
    HpbftCore,
    changes_epoch,
)
from belep.consensus.hpbft_messages import (
    PREPARE_KIND,
    Certified,
    Checkpoint,
    PrePrepare,
    Vote,
)
from belep.consensus.hpbft_state import TIP_KEY, encode_prepared, encode_tip, prepared_key
from belep.consensus.types import Broadcast, Deliver, Send, SetTimer
from belep.errors import ChainError, ProtocolViolation, ValidationError
from belep.ledger.block import (
    Block,
    Digest,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)
from belep.ledger.builder import build_block
from belep.ledger.config_tx import (
    COMMIT_KIND,
    RevivalRecord,
    SubstituteSeat,
    decode_config_tx,
    find_config_tx,
    is_own_config_payload,
)

__all__ = ["HpbftNormalCase"]


class HpbftNormalCase(HpbftCore):
    """The normal-case handlers of one HPBFT seat or standby."""

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
            state_root = self._executed.root_after(h - 1, parent)
            if state_root is None:
                return  # the parent's execution (``Executed``) calls this again
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
            block = build_block(
                domain=self.config.domain,
                height=h,
                epoch=cfg.epoch,
                view=self.view,
                parent_hash=parent,
                parent_timestamp_ms=None
                if parent_block is None
                else parent_block.header.timestamp_ms,
                transactions=txs,
                now_ms=self._now,
                proposer=self._me,
                state_root=state_root,
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
            if changes_epoch(parent_block) and h - 1 > self._view_base[0]:
                raise ProtocolViolation("block above a configuration block of the same epoch")
        if header.timestamp_ms > self._now + self.config.max_clock_skew_ms:
            raise ProtocolViolation("block timestamp too far ahead", found=header.timestamp_ms)
        block.check_tx_root()
        self._check_transactions(block)

    def _check_transactions(self, block: Block) -> None:
        change = find_config_tx(block, keys=self._keys)
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
            if not is_own_config_payload(tx.payload) and not self.config.validate_transaction(tx):
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
            if h > self.delivered_height and h not in self._votes_sent:
                # Vote only for the execution root computed here after the parent (a
                # block at or below the delivered height was checked when delivered).
                check = self._executed.check(block)
                if check is RootCheck.UNKNOWN:
                    return  # ``Executed`` for the parent calls this again
                if check is RootCheck.DIFFERS:
                    self._count("state_root_mismatch")
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
        self._last_delivery_ms = self._now
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
