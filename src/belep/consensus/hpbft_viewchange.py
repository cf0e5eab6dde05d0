"""HPBFT view change and seat substitution.

Owns :class:`HpbftViewChange` (``docs/spec/hpbft.md`` §View change and
§Substitution):

* the **request timer** (PBFT's): a seat that waits too long for the oldest
  known transaction to be proposed, or for its proposals to commit, suspects
  the primary; timeouts double after every view change that did not lead to
  a delivery (up to a cap);
* the **view change**: a seat stops voting in its view and sends every other
  seat a signed ``ViewChange`` carrying its stable checkpoint and, per height
  above it, the highest-view prepare certificate it holds (the *lock*) with
  its block; ``f+1`` seats asking for later views make a seat follow (PBFT);
  the view-change timer runs only once ``2f+1`` seats asked; the new primary
  builds a ``NewView`` from ``2f+1`` of them and re-proposes the chain
  :func:`~belep.consensus.hpbft_select.select_chain` designates, which every
  seat recomputes before accepting;
* **substitution**: the primary of a working view proposes
  ``SubstituteSeat(seat, standby)`` when a seat has not answered any proposal
  made more than the substitution timeout ago, choosing the first standby (in
  configuration order) that recently reported itself alive; seats accept any
  substitution of a seated node by an unseated one, and it takes effect at the
  next block (the configuration barrier of the normal case).

No I/O, no clock, no randomness.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from belep.consensus.hpbft_core import (
    HpbftOptions,
    changes_epoch,
)
from belep.consensus.hpbft_messages import (
    Forward,
    NewView,
    ViewChange,
    report_signing_bytes,
)
from belep.consensus.hpbft_normal import HpbftNormalCase
from belep.consensus.hpbft_select import Designation, check_report, select_chain
from belep.consensus.types import (
    Broadcast,
    CancelTimer,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerId,
    Transaction,
)
from belep.crypto import PublicKey
from belep.errors import ProtocolViolation, QuorumNotMet, ValidationError
from belep.ledger.block import Height, NodeId, View
from belep.ledger.config_tx import (
    SubstituteSeat,
    config_transaction,
)

__all__ = ["HpbftViewChange"]

PROGRESS_TIMER = TimerId("hpbft/progress")
#: Timeouts double with every view change that did not lead to a delivery (PBFT), up to
#: these powers of two: the request timer of a working view (x2) and the wait for a
#: NewView (x16). Bounded so that, once the network is stable again, a domain that went
#: through many view changes (f faulty primaries in a row) recovers in a bounded time;
#: ``request_timeout_ms`` must exceed a few message delays of the real network.
PROGRESS_BACKOFF_CAP = 1
VIEW_CHANGE_BACKOFF_CAP = 4
#: A transaction still waiting this many request timeouts after it arrived (or the view
#: started) makes a seat suspect the primary even while blocks keep committing: the bound
#: on censorship once any delivered block counts as progress.
CENSORSHIP_TIMEOUTS = 2
#: Proposal times the primary remembers to tell silent seats (bounded).
PROPOSAL_MEMORY = 1024


class HpbftViewChange(HpbftNormalCase):
    """View changes, the request timer and substitution of silent seats."""

    def __init__(
        self,
        config: ReplicaConfig,
        persisted: Mapping[str, bytes],
        options: HpbftOptions | None = None,
    ) -> None:
        self._vcs: dict[View, dict[NodeId, ViewChange]] = {}
        self._progress_armed = False
        self._last_vc_sent_ms = 0
        self._last_nv: NewView | None = None
        self._nv_resent: dict[NodeId, int] = {}
        super().__init__(config, persisted, options)

    # -- the request timer -----------------------------------------------------------

    def _has_work(self) -> bool:
        return (
            self._pool.has_work()
            or any(h > self.delivered_height for h in self._accepted)
            or any(h > self.delivered_height for h in self._commits)
        )

    def _arm_progress(self) -> None:
        """The request timer (PBFT's): a seat waiting too long for work to commit suspects
        the primary. It fires ``timeout`` after the later of the oldest waiting
        transaction's arrival, the start of the view and the last delivered block (any
        block: a busy primary working through a backlog is making progress), but never
        later than :data:`CENSORSHIP_TIMEOUTS` timeouts after that arrival (or the view
        start), so a primary that commits some blocks while censoring a transaction is
        still replaced."""
        if self._progress_armed or not self._acts_as_seat() or not self._has_work():
            return
        timeout = self.config.request_timeout_ms << min(self._vc_attempt, PROGRESS_BACKOFF_CAP)
        oldest = self._pool.oldest_pending_ms()
        if oldest is None:
            deadline = self._now + timeout
        else:
            waiting = max(oldest, self._view_started)
            deadline = min(
                max(waiting, self._last_delivery_ms) + timeout,
                waiting + CENSORSHIP_TIMEOUTS * timeout,
            )
        delay = max(1, deadline - self._now)
        self._out.append(SetTimer(PROGRESS_TIMER, delay))
        self._progress_armed = True

    def _suspicion(self) -> str:
        """Why the request timer fired (a counter name, for operators): the view change
        itself timed out, a transaction waited past the censorship bound while blocks
        were delivered, or nothing was delivered for a timeout."""
        if self._in_view_change:
            return "suspect.view_change_timeout"
        oldest = self._pool.oldest_pending_ms()
        timeout = self.config.request_timeout_ms << min(self._vc_attempt, PROGRESS_BACKOFF_CAP)
        if (
            oldest is not None
            and self._now - max(oldest, self._view_started) >= (CENSORSHIP_TIMEOUTS * timeout)
            and self._now - self._last_delivery_ms < timeout
        ):
            return "suspect.censorship"
        return "suspect.no_delivery"

    def _on_work(self) -> None:
        if not self._in_view_change:
            self._arm_progress()

    def _on_delivered(self) -> None:
        if self._progress_armed and not self._in_view_change:
            self._out.append(CancelTimer(PROGRESS_TIMER))
            self._progress_armed = False
            self._arm_progress()

    # -- view change -------------------------------------------------------------------

    def _make_view_change(self, target: View) -> ViewChange:
        cfg = self.history.current
        prepared = tuple(
            self._prepared[h]
            for h in sorted(self._prepared)
            if h > self._low and self._prepared[h].statement.block_hash in self._blocks
        )
        blocks = tuple(self._blocks[qc.statement.block_hash] for qc in prepared)
        cp = self._checkpoints.stable
        checkpoint = cp if cp is not None and cp.statement.height > self._base[0] else None
        data = report_signing_bytes(
            ViewChange.TAG, cfg.epoch, target, self._me, checkpoint, prepared
        )
        signature = self.config.private_key.sign(data)
        return ViewChange(cfg.epoch, target, self._me, checkpoint, prepared, signature, blocks)

    def _start_view_change(self, target: View) -> None:
        if not self._acts_as_seat():
            return
        if target < self.view or (target == self.view and self._in_view_change):
            return
        self._count("view_changes")
        self.view = target
        self._in_view_change = True
        self._reset_view_state()
        vc = self._make_view_change(target)
        self._vcs.setdefault(target, {})[self._me] = vc
        self._persist_state()
        self._out.append(Broadcast(self._other_seats(), vc))
        self._last_vc_sent_ms = self._now
        # As a PBFT client would after its timeout: hand the waiting transactions to every
        # seat, so the others start their request timers too (f+1 of them move the view).
        waiting = self._pool.pending_older_than(self._now, 4 * self.config.max_batch_size)
        if waiting:
            self._out.append(Broadcast(self._other_seats(), Forward(waiting)))
        if self._progress_armed:
            self._out.append(CancelTimer(PROGRESS_TIMER))
            self._progress_armed = False
        self._maybe_arm_vc_timer()
        self._maybe_new_view(target)

    def _maybe_arm_vc_timer(self) -> None:
        """PBFT's rule: the view-change timer runs only once ``2f+1`` seats asked for this
        view (or a later one), so a seat that suspects the primary alone does not race
        through views."""
        if self._progress_armed or not self._in_view_change:
            return
        asking = {
            node for view, messages in self._vcs.items() if view >= self.view for node in messages
        }
        if len(asking) < self.history.current.quorum:
            return
        delay = self.config.request_timeout_ms << min(self._vc_attempt, VIEW_CHANGE_BACKOFF_CAP)
        self._vc_attempt += 1
        self._out.append(SetTimer(PROGRESS_TIMER, delay))
        self._progress_armed = True

    def _senders(self) -> dict[NodeId, PublicKey]:
        return self._voter_keys()

    def _check_vc(self, vc: ViewChange, *, with_blocks: bool) -> None:
        cfg = self.history.current
        check_report(
            vc,
            domain=self.config.domain,
            epoch=cfg.epoch,
            senders=self._senders(),
            voters=self._voter_keys(),
            quorum=cfg.quorum,
            floor=self._base[0],
            cache=self._cache,
            with_blocks=with_blocks,
        )

    def _on_view_change(self, sender: NodeId, vc: ViewChange) -> None:
        if not self._epoch_ok(sender, vc.epoch, vc):
            return
        if vc.sender != sender or not self._counts(sender):
            raise ProtocolViolation("view change from a node holding no seat", found=vc.sender)
        if not self._acts_as_seat():
            return
        if vc.new_view == self.view and not self._in_view_change:
            self._resend_new_view(sender)
            return
        if vc.new_view < self.view or sender in self._vcs.get(vc.new_view, {}):
            return
        self._check_vc(vc, with_blocks=True)
        self._vcs.setdefault(vc.new_view, {})[sender] = vc
        self._last_heard[sender] = self._now
        # PBFT's rule: f+1 seats asking for later views means this seat should follow.
        later: dict[NodeId, View] = {}
        for view, messages in self._vcs.items():
            if view > self.view or (view == self.view and not self._in_view_change):
                for node in messages:
                    if node != self._me:
                        later[node] = min(later.get(node, view), view)
        if len(later) >= self.history.current.f + 1:
            target = min(later.values())
            if target > self.view or not self._in_view_change:
                self._start_view_change(target)
        self._maybe_arm_vc_timer()
        self._maybe_new_view(vc.new_view)

    def _resend_new_view(self, seat: NodeId) -> None:
        """A seat still asks for the view this primary already started: it missed the NewView."""
        nv = self._last_nv
        if nv is None or nv.view != self.view or self._primary() != self._me:
            return
        last = self._nv_resent.get(seat)
        if last is not None and self._now - last < self.config.request_timeout_ms // 2:
            return
        self._nv_resent[seat] = self._now
        self._out.append(Send(seat, nv))

    def _maybe_new_view(self, view: View) -> None:
        cfg = self.history.current
        if not self._in_view_change or self.view != view or self._primary(view) != self._me:
            return
        messages = self._vcs.get(view, {})
        if len(messages) < cfg.quorum or (not self.is_seat() and not self._standbys_vote()):
            return
        chosen = tuple(messages[node] for node in sorted(messages)[: cfg.quorum])
        try:
            designation = select_chain(
                chosen,
                base_height=self._base[0],
                base_hash=self._base[1],
                blocks=self._blocks.values(),
            )
        except ValidationError:
            self._count("new_view_unbuildable")
            return
        stripped = tuple(
            ViewChange(v.epoch, v.new_view, v.sender, v.checkpoint, v.prepared, v.signature)
            for v in chosen
        )
        nv = NewView(cfg.epoch, view, stripped, designation.blocks)
        self._last_nv = nv
        self._out.append(Broadcast(self._everyone(), nv))
        self._enter_view(view, designation)

    def _on_new_view(self, sender: NodeId, nv: NewView) -> None:
        if not self._epoch_ok(sender, nv.epoch, nv):
            return
        if nv.view < self.view or (nv.view == self.view and not self._in_view_change):
            return
        if sender != self._primary(nv.view):
            raise ProtocolViolation("new view from a node that is not its primary", found=sender)
        designation = self._verify_new_view(nv)
        self._enter_view(nv.view, designation)

    def _verify_new_view(self, nv: NewView) -> Designation:
        cfg = self.history.current
        senders: set[NodeId] = set()
        for vc in nv.view_changes:
            if vc.new_view != nv.view or vc.sender in senders or not self._counts(vc.sender):
                raise ProtocolViolation("new view carries an unusable view change", found=vc.sender)
            self._check_vc(vc, with_blocks=False)
            senders.add(vc.sender)
        if len(senders) < cfg.quorum:
            raise QuorumNotMet(
                "new view without a quorum of view changes", expected=cfg.quorum, found=len(senders)
            )
        for block in nv.blocks:
            block.check_tx_root()
        designation = select_chain(
            nv.view_changes,
            base_height=self._base[0],
            base_hash=self._base[1],
            blocks=(*nv.blocks, *self._blocks.values()),
        )
        if [b.block_hash for b in designation.blocks] != [b.block_hash for b in nv.blocks]:
            raise ProtocolViolation("new view re-proposes other blocks than its proof designates")
        return designation

    def _enter_view(self, view: View, designation: Designation) -> None:
        self.view = view
        self._in_view_change = False
        self._install(designation)
        self._vcs = {v: m for v, m in self._vcs.items() if v > view}
        if self._progress_armed:
            self._out.append(CancelTimer(PROGRESS_TIMER))
            self._progress_armed = False
        self._arm_progress()
        if self._is_primary():
            self._proposal_times = [self._now] if designation.blocks else []
            self._maybe_propose()
        self._try_votes(Height(designation.base_height + 1))

    def _install(self, designation: Designation) -> None:
        """Make ``designation`` this view's accepted chain (re-proposed blocks)."""
        cp = designation.checkpoint
        if cp is not None and cp.statement.height > self._checkpoints.stable_height:
            self._checkpoints.restore(cp)
            self._on_stable(cp)
        self._reset_view_state()
        self._view_base = (designation.base_height, designation.base_hash)
        for block in designation.blocks:
            self._accepted[block.height] = block
            self._blocks[block.block_hash] = block
            self._designated[block.height] = block.block_hash
        self._designated_top = designation.top
        self._next_height = Height(max(designation.top, self.delivered_height) + 1)
        if designation.blocks and changes_epoch(designation.blocks[-1]):
            self._config_pending = True
        keep = [tx for block in designation.blocks for tx in block.transactions]
        self._pool.requeue_proposed(keep)
        self._pool.mark_proposed(keep, self._now)
        self._last_heard = {}
        self._view_started = self._now
        self._persist_state()
        if designation.base_height > self.delivered_height:
            self._schedule_fetch(soon=True)

    # -- substitution (primary) ----------------------------------------------------------

    def _config_tx_for(self, height: Height) -> Transaction | None:
        """The configuration change the next block must carry, signed by this proposer."""
        record = self._expected_revival_record(height)
        change = record if record is not None else self._substitution_due()
        if change is None:
            return None
        return config_transaction(change, self.config.private_key, timestamp_ms=self._now)

    def _substitution_due(self) -> SubstituteSeat | None:
        cfg = self.history.current
        timeout = self._sub_timeout
        if not cfg.standbys or self._now - self._view_started < timeout:
            return None
        times = self._proposal_times
        if len(times) > PROPOSAL_MEMORY:
            del times[: len(times) - PROPOSAL_MEMORY]
        period = self.options.standby_status_ms or 4 * self.config.heartbeat_ms
        window = max(timeout, 3 * period)
        usable = [
            n for n in cfg.standbys if self._now - self._last_heard.get(n, -(10**12)) <= window
        ]
        for seat in cfg.seats:
            if seat == self._me:
                continue
            last = self._last_heard.get(seat, self._view_started)
            i = bisect.bisect_right(times, last)
            if i < len(times) and self._now - times[i] >= timeout:
                candidate = cfg.next_standby(usable)
                if candidate is None:
                    return None
                self._count("substitutions_proposed")
                return SubstituteSeat(self.config.domain, cfg.epoch, seat, candidate)
        return None
