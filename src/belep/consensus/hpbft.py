"""HPBFT — the paper's improved PBFT with standby validators — as a pure replica.

Owns :class:`HpbftReplica` (``docs/spec/hpbft.md``; DESIGN §3 is normative):
the event entry points, timers, the **view change** (prepare certificates are
the lock; a new primary re-proposes the designated chain of
:func:`~belep.consensus.hpbft_select.select_chain`), **seat substitution**
(the primary proposes a ``SubstituteSeat`` when a seat holder misses votes
for longer than the substitution timeout; it takes effect at the next block)
and **supervisor revival** (a ``ReviveChild`` decision committed by the
parent domain restarts a stalled epoch with new seats from the chain
designated by the reports of every old seat not declared failed).

The normal case (linear collection, delivery, checkpoints, catch-up) is in
:class:`~belep.consensus.hpbft_core.HpbftCore`.

Revival's enforced assumptions (refused otherwise, counted in ``stats``): the
decision is for this domain and its current epoch and was committed by the
parent (inclusion proof and a ``2f+1`` parent commit certificate); at most
``2f`` seats are declared failed and none of them gets a seat; the new epoch
starts only when **every** old seat not declared failed has reported; and it
is abandoned if the designated chain contains a configuration change. The
declared-failed seats must really be crashed (not Byzantine): that cannot be
checked by code and is the operator's and the parent's responsibility.

The replica reads no clock, draws no random numbers and does no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping

from belep.consensus.hpbft_config import (
    RevivalRecord,
    ReviveOrder,
    SubstituteSeat,
    check_revival,
    decode_config_tx,
    find_config_tx,
    is_config_payload,
)
from belep.consensus.hpbft_core import (
    BATCH_TIMER,
    FETCH_TIMER,
    FORWARD_TIMER,
    HpbftCore,
    HpbftOptions,
)
from belep.consensus.hpbft_messages import (
    Certified,
    Checkpoint,
    EpochHint,
    Forward,
    NewView,
    PrePrepare,
    ReviveNotice,
    ReviveReport,
    ReviveStart,
    StandbyStatus,
    Status,
    ViewChange,
    Vote,
    report_signing_bytes,
)
from belep.consensus.hpbft_select import Designation, check_report, select_chain
from belep.consensus.hpbft_state import DurableState, prepared_key
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Effect,
    Event,
    Persisted,
    Receive,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
)
from belep.crypto import PublicKey
from belep.errors import ChainError, ProtocolViolation, QuorumNotMet, ValidationError
from belep.ledger.block import DomainId, Height, NodeId, View

__all__ = ["HpbftOptions", "HpbftReplica", "make_hpbft_factory"]

PROGRESS_TIMER = TimerId("hpbft/progress")
HEARTBEAT_TIMER = TimerId("hpbft/heartbeat")
REVIVE_TIMER = TimerId("hpbft/revive")
REVIVAL_KEY = "hpbft/revival"
#: Timeouts double with every view change that did not lead to a delivery (PBFT), up to
#: these powers of two: the request timer of a working view (x4) and the wait for a
#: NewView (x16). Bounded so that, once the network is stable again, a domain that went
#: through many view changes recovers in a bounded time.
PROGRESS_BACKOFF_CAP = 2
VIEW_CHANGE_BACKOFF_CAP = 4
#: Proposal times the primary remembers to tell silent seats (bounded).
PROPOSAL_MEMORY = 1024
#: Retransmissions per heartbeat (lowest undecided heights first).
RETRANSMIT_HEIGHTS = 4


class HpbftReplica(HpbftCore):
    """One HPBFT node: a seat holder or a standby of a domain."""

    def __init__(
        self,
        config: ReplicaConfig,
        persisted: Mapping[str, bytes],
        options: HpbftOptions | None = None,
    ) -> None:
        self._vcs: dict[View, dict[NodeId, ViewChange]] = {}
        self._progress_armed = False
        self._reviving: ReviveOrder | None = None
        self._revival_record: RevivalRecord | None = None
        self._revive_reports: dict[NodeId, ReviveReport] = {}
        self._revive_complete_ms: int | None = None
        self._revive_attempt = 0
        self._pending_notice: ReviveOrder | None = None
        self._last_status_ms = -(10**12)
        self._last_reforward_ms = 0
        self._last_vc_sent_ms = 0
        self._last_nv: NewView | None = None
        self._nv_resent: dict[NodeId, int] = {}
        super().__init__(config, persisted, options)
        if REVIVAL_KEY in persisted:
            change = decode_config_tx(persisted[REVIVAL_KEY])
            if isinstance(change, RevivalRecord):
                self._revival_record = change

    # -- entry points ----------------------------------------------------------------

    def start(self, now_ms: int) -> list[Effect]:
        self._now = now_ms
        self._view_started = now_ms
        self._out.append(SetTimer(HEARTBEAT_TIMER, self.config.heartbeat_ms))
        self._request_fetch()
        if self._in_view_change:
            self._maybe_arm_vc_timer()
        elif self._pool.has_work():
            self._arm_progress()
        if self._reviving is not None:
            self._out.append(SetTimer(REVIVE_TIMER, self.config.request_timeout_ms))
        return self._take()

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        self._now = now_ms
        if isinstance(event, Receive):
            self._dispatch(event.sender, event.message)
        elif isinstance(event, ClientRequest):
            self._on_client(event.tx)
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer)
        elif isinstance(event, BlocksFetched):
            self._on_fetched(event.blocks)
        elif not isinstance(event, Persisted):
            self._count("unknown_event")
        return self._take()

    def _dispatch(self, sender: NodeId, message: object) -> None:
        if sender not in self._keys or sender == self._me:
            self._count("unknown_sender")
            return
        mark = len(self._out)
        try:
            if isinstance(message, PrePrepare):
                self._on_pre_prepare(sender, message)
            elif isinstance(message, Vote):
                self._on_vote(sender, message)
            elif isinstance(message, Certified):
                self._on_certified(sender, message)
            elif isinstance(message, Checkpoint):
                self._on_checkpoint(sender, message)
            elif isinstance(message, ViewChange):
                self._on_view_change(sender, message)
            elif isinstance(message, NewView):
                self._on_new_view(sender, message)
            elif isinstance(message, Forward):
                self._on_forward(sender, message)
            elif isinstance(message, Status):
                self._on_status(sender, message)
            elif isinstance(message, StandbyStatus):
                self._on_standby_status(sender, message)
            elif isinstance(message, EpochHint):
                self._on_epoch_hint(sender, message)
            elif isinstance(message, ReviveNotice):
                self._on_revive_notice(sender, message.order)
            elif isinstance(message, ReviveReport):
                self._on_revive_report(sender, message)
            elif isinstance(message, ReviveStart):
                self._on_revive_start(sender, message)
            else:
                self._count("unknown_message")
        except ValidationError:
            # Handler contract: validation happens before any change, so an invalid
            # message leaves the state as it was; drop any effect it started to emit.
            del self._out[mark:]
            self._count(f"invalid_{type(message).__name__}")

    # -- timers ----------------------------------------------------------------------

    def _on_timer(self, timer: TimerId) -> None:
        if timer == HEARTBEAT_TIMER:
            self._on_heartbeat()
        elif timer == PROGRESS_TIMER:
            self._progress_armed = False
            if self._acts_as_seat() and (self._in_view_change or self._has_work()):
                self._start_view_change(View(self.view + 1))
        elif timer == BATCH_TIMER:
            self._maybe_propose(flush=True)
        elif timer == FORWARD_TIMER:
            self._flush_forward()
        elif timer == FETCH_TIMER:
            self._on_fetch_timer()
        elif timer == REVIVE_TIMER:
            self._on_revive_timer()

    def _has_work(self) -> bool:
        return (
            self._pool.has_work()
            or any(h > self.delivered_height for h in self._accepted)
            or any(h > self.delivered_height for h in self._commits)
        )

    def _arm_progress(self) -> None:
        """The request timer (PBFT's): a seat waiting too long for work to commit suspects
        the primary. It measures from the arrival of the oldest transaction still waiting
        to be proposed (not from the last delivery), so a primary that commits some
        blocks while censoring others is still replaced."""
        if self._progress_armed or not self._acts_as_seat() or not self._has_work():
            return
        timeout = self.config.request_timeout_ms << min(self._vc_attempt, PROGRESS_BACKOFF_CAP)
        oldest = self._pool.oldest_pending_ms()
        start = self._now if oldest is None else max(oldest, self._view_started)
        delay = max(1, timeout - (self._now - start))
        self._out.append(SetTimer(PROGRESS_TIMER, delay))
        self._progress_armed = True

    def _on_work(self) -> None:
        if not self._in_view_change:
            self._arm_progress()

    def _on_delivered(self) -> None:
        if self._progress_armed and not self._in_view_change:
            self._out.append(CancelTimer(PROGRESS_TIMER))
            self._progress_armed = False
            self._arm_progress()

    def _on_new_epoch(self) -> None:
        self._vcs = {}
        if self._progress_armed:
            self._out.append(CancelTimer(PROGRESS_TIMER))
            self._progress_armed = False
        self._arm_progress()
        if self._revival_record is not None and (
            self._revival_record.order.decision.epoch + 1 != self.history.current.epoch
        ):
            self._revival_record = None
            self._persist(REVIVAL_KEY, None)
        notice, self._pending_notice = self._pending_notice, None
        if notice is not None:
            self._on_revive_notice(self._me, notice)
        self._maybe_propose()

    def _on_heartbeat(self) -> None:
        self._out.append(SetTimer(HEARTBEAT_TIMER, self.config.heartbeat_ms))
        if (
            self._in_view_change
            and self._acts_as_seat()
            and self._now - self._last_vc_sent_ms >= self.config.request_timeout_ms
        ):
            own = self._vcs.get(self.view, {}).get(self._me)
            if own is not None:
                self._last_vc_sent_ms = self._now
                self._out.append(Broadcast(self._other_seats(), own))
        if self._is_primary() and not self._in_view_change:
            if self._idle:
                self._out.append(
                    Broadcast(
                        self._everyone(),
                        Status(self.history.current.epoch, self.view, self._last_cert),
                    )
                )
            self._idle = True
            self._release_held_votes()
            self._retransmit()
            self._maybe_propose()
        elif not self.is_seat():
            period = self.options.standby_status_ms or 4 * self.config.heartbeat_ms
            if self._now - self._last_status_ms >= period:
                self._last_status_ms = self._now
                self._out.append(
                    Send(
                        self._primary(),
                        StandbyStatus(self.history.current.epoch, self.delivered_height),
                    )
                )
        if self._now - self._last_reforward_ms >= self.config.request_timeout_ms // 2:
            self._last_reforward_ms = self._now
            if not self._is_primary():
                old = self._pool.pending_older_than(
                    self._now - self.config.request_timeout_ms // 2, self.config.max_batch_size
                )
                if old:
                    self._out.append(Send(self._primary(), Forward(old)))

    def _retransmit(self) -> None:
        """Re-send the proposals and prepare certificates of the lowest undecided heights."""
        sent = 0
        for h in range(self.delivered_height + 1, self._next_height):
            if sent >= RETRANSMIT_HEIGHTS:
                return
            block = self._accepted.get(Height(h))
            if block is None or Height(h) in self._commits:
                continue
            qc = self._view_qcs.get(Height(h))
            message: object
            if qc is None:
                message = PrePrepare(self.history.current.epoch, self.view, block)
            else:
                message = Certified(qc)
            self._out.append(Broadcast(self._other_seats(), message))
            sent += 1

    # -- status messages ---------------------------------------------------------------

    def _on_status(self, sender: NodeId, message: Status) -> None:
        if not self._epoch_ok(sender, message.epoch, message):
            return
        if sender != self._primary(message.view):
            return
        if message.view > self.view and not self._acts_as_seat():
            self._follow_view(message.view)
        qc = message.certificate
        if qc is not None and qc.statement.height > self.delivered_height:
            self._on_certified(sender, Certified(qc))

    def _on_standby_status(self, sender: NodeId, message: StandbyStatus) -> None:
        if message.epoch == self.history.current.epoch and sender in self.history.current.standbys:
            self._last_heard[sender] = self._now

    def _on_epoch_hint(self, sender: NodeId, message: EpochHint) -> None:
        if message.epoch > self.history.current.epoch or message.height > self.delivered_height:
            self._request_fetch()

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
        if designation.blocks and find_config_tx(designation.blocks[-1]) is not None:
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
        record = self._expected_revival_record(height)
        if record is not None:
            return record.transaction()
        change = self._substitution_due()
        return None if change is None else change.transaction()

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

    # -- revival -----------------------------------------------------------------------

    def _participating(self) -> bool:
        return self._reviving is None

    def _reviving_order(self) -> ReviveOrder | None:
        return self._reviving

    def _restore_extra(self, state: DurableState) -> None:
        self._reviving = state.reviving

    def _parent_voters(self) -> dict[NodeId, PublicKey]:
        voters = self.options.parent_voters or self.config.observers
        return {n: self._keys[n] for n in voters if n in self._keys}

    def _verify_order(self, order: ReviveOrder) -> None:
        parent = self.options.parent_domain
        if parent is None:
            raise ProtocolViolation("revival refused: this domain has no parent configured")
        order.verify(
            parent=DomainId(parent), parent_voters=self._parent_voters(), cache=self._cache
        )

    def _on_revive_notice(self, sender: NodeId, order: ReviveOrder) -> None:
        decision = order.decision
        if decision.domain != self.config.domain:
            return
        current = self.history.current
        if self._reviving is not None:
            if self._reviving != order:
                self._count("revive_refused_conflicting")
            return
        if decision.epoch < current.epoch:
            self._count("revive_stale")
            return
        self._verify_order(order)
        if decision.epoch > current.epoch:
            self._pending_notice = order
            self._request_fetch()
            return
        try:
            check_revival(current, decision, self.config.domain)
        except ChainError:
            self._count("revive_refused_assumptions")
            raise
        self._reviving = order
        self._revive_reports = {}
        self._revive_complete_ms = None
        self._persist_state()  # before the report: never vote in this epoch again
        self._count("revive_joined")
        others = tuple(n for n in self._all_nodes() if n != sender)
        self._out.append(Broadcast(others, ReviveNotice(order)))
        self._send_revive_report()
        self._out.append(SetTimer(REVIVE_TIMER, self.config.request_timeout_ms))

    def _make_revive_report(self) -> ReviveReport:
        vc = self._make_view_change(View(0))
        cfg = self.history.current
        data = report_signing_bytes(
            ReviveReport.TAG, cfg.epoch, self.delivered_height, self._me, vc.checkpoint, vc.prepared
        )
        return ReviveReport(
            cfg.epoch,
            self.delivered_height,
            self._me,
            vc.checkpoint,
            vc.prepared,
            self.config.private_key.sign(data),
            vc.blocks,
        )

    def _send_revive_report(self) -> None:
        order = self._reviving
        if order is None:
            return
        report = self._make_revive_report()
        leader = order.decision.seats[0]
        if leader == self._me:
            self._revive_reports[self._me] = report
            self._maybe_revive_start()
        else:
            self._out.append(Send(leader, report))

    def _on_revive_timer(self) -> None:
        order = self._reviving
        if order is None:
            return
        self._revive_attempt += 1
        if order.decision.seats[0] == self._me and self._revive_complete_ms is not None:
            self._revive_start()
            return
        self._out.append(Broadcast(self._all_nodes(), ReviveNotice(order)))
        self._send_revive_report()
        delay = self.config.request_timeout_ms << min(self._revive_attempt, 5)
        self._out.append(SetTimer(REVIVE_TIMER, delay))

    def _old_seat_keys(self) -> dict[NodeId, PublicKey]:
        return self.history.current.voter_keys(self._keys)

    def _check_revive_report(self, report: ReviveReport, *, with_blocks: bool) -> None:
        cfg = self.history.current
        members = {n: self._keys[n] for n in (*cfg.seats, *cfg.standbys)}
        check_report(
            report,
            domain=self.config.domain,
            epoch=cfg.epoch,
            senders=members,
            voters=self._old_seat_keys(),
            quorum=cfg.quorum,
            floor=self._base[0],
            cache=self._cache,
            with_blocks=with_blocks,
        )

    def _on_revive_report(self, sender: NodeId, report: ReviveReport) -> None:
        if report.sender != sender:
            raise ProtocolViolation("revive report relayed for another node", found=report.sender)
        if report.epoch != self.history.current.epoch or sender in self._revive_reports:
            return
        self._check_revive_report(report, with_blocks=True)
        self._revive_reports[sender] = report
        self._maybe_revive_start()

    def _required_reporters(self, order: ReviveOrder) -> set[NodeId]:
        return set(self.history.current.seats) - set(order.decision.failed)

    def _maybe_revive_start(self) -> None:
        order = self._reviving
        if order is None or order.decision.seats[0] != self._me:
            return
        if not self._required_reporters(order) <= set(self._revive_reports):
            return
        everyone = set(self.history.current.seats) | set(self.history.current.standbys)
        if everyone - set(order.decision.failed) <= set(self._revive_reports):
            self._revive_start()
        elif self._revive_complete_ms is None:
            self._revive_complete_ms = self._now
            self._out.append(SetTimer(REVIVE_TIMER, self.options.revive_grace_ms))

    def _revive_start(self) -> None:
        order = self._reviving
        if order is None:
            return
        reports = tuple(self._revive_reports[n] for n in sorted(self._revive_reports))
        designation = select_chain(
            reports,
            base_height=self._base[0],
            base_hash=self._base[1],
            blocks=self._blocks.values(),
        )
        if any(find_config_tx(b) is not None for b in designation.blocks):
            self._count("revive_abandoned_configuration")
            return
        stripped = tuple(
            ReviveReport(r.epoch, r.delivered, r.sender, r.checkpoint, r.prepared, r.signature)
            for r in reports
        )
        message = ReviveStart(order, stripped, designation.blocks, designation.base_hash)
        self._out.append(Broadcast(self._all_nodes(), message))
        self._enter_revived_epoch(order, designation)

    def _on_revive_start(self, sender: NodeId, message: ReviveStart) -> None:
        order = message.order
        decision = order.decision
        current = self.history.current
        if decision.domain != self.config.domain or decision.epoch < current.epoch:
            return
        if decision.epoch > current.epoch:
            self._request_fetch()
            return
        if sender != decision.seats[0]:
            raise ProtocolViolation(
                "revival started by a node that is not its first seat", found=sender
            )
        if self._reviving is not None and self._reviving != order:
            raise ProtocolViolation("revival start for another decision")
        self._verify_order(order)
        check_revival(current, decision, self.config.domain)
        seen: set[NodeId] = set()
        for report in message.reports:
            if report.sender in seen:
                raise ProtocolViolation(
                    "revival start counts a reporter twice", found=report.sender
                )
            self._check_revive_report(report, with_blocks=False)
            seen.add(report.sender)
        missing = self._required_reporters(order) - seen
        if missing:
            raise QuorumNotMet(
                "revival start lacks reports of old seats not declared failed",
                expected=sorted(self._required_reporters(order)),
                found=sorted(seen),
            )
        for block in message.blocks:
            block.check_tx_root()
        designation = select_chain(
            message.reports,
            base_height=self._base[0],
            base_hash=self._base[1],
            blocks=(*message.blocks, *self._blocks.values()),
        )
        if [b.block_hash for b in designation.blocks] != [b.block_hash for b in message.blocks]:
            raise ProtocolViolation(
                "revival start re-proposes other blocks than its reports designate"
            )
        if designation.base_hash != message.base_hash or any(
            find_config_tx(b) is not None for b in designation.blocks
        ):
            raise ProtocolViolation("revival start with a wrong base or a configuration change")
        self._enter_revived_epoch(order, designation)

    def _enter_revived_epoch(self, order: ReviveOrder, designation: Designation) -> None:
        top_hash = (
            designation.blocks[-1].block_hash if designation.blocks else designation.base_hash
        )
        record = RevivalRecord(
            order, designation.base_height, designation.base_hash, designation.top, top_hash
        )
        self._count("revived")
        self.history = self.history.with_revival(record)
        self._revival_record = record
        self._persist(REVIVAL_KEY, record.payload())
        self._reviving = None
        self._revive_reports = {}
        self._revive_complete_ms = None
        self._out.append(CancelTimer(REVIVE_TIMER))
        self._base = (designation.base_height, designation.base_hash)
        self.view = View(0)
        self._in_view_change = False
        self._vc_attempt = 0
        for key in [prepared_key(h) for h in self._prepared]:
            self._persist(key, None)
        self._reset_epoch_state()
        self._vcs = {}
        fresh = Designation(
            designation.base_height, designation.base_hash, None, designation.blocks
        )
        self._install(fresh)
        self._on_new_epoch()
        self._try_votes(Height(designation.base_height + 1))

    def _expected_revival_record(self, height: Height) -> RevivalRecord | None:
        record = self._revival_record
        if record is None or record.order.decision.epoch + 1 != self.history.current.epoch:
            return None
        return record if height == record.top_height + 1 else None

    def _scan_revivals(self, blocks: Iterable[Block]) -> list[RevivalRecord]:
        records = []
        for block in blocks:
            for tx in block.transactions:
                if not is_config_payload(tx.payload):
                    continue
                try:
                    change = decode_config_tx(tx.payload)
                    if isinstance(change, RevivalRecord):
                        self._verify_order(change.order)
                        records.append(change)
                except ValidationError:
                    self._count("bad_revival_record")
        return records

    def _adopt_revival_record(self, record: RevivalRecord) -> None:
        """Catch up into a revived epoch learned from fetched blocks."""
        self.history = self.history.with_revival(record)
        self._revival_record = record
        self._persist(REVIVAL_KEY, record.payload())
        self._reviving = None
        self._base = (record.base_height, record.base_hash)
        self.view = View(0)
        self._in_view_change = False
        for key in [prepared_key(h) for h in self._prepared]:
            self._persist(key, None)
        self._reset_epoch_state()
        self._persist_state()
        self._on_new_epoch()


def make_hpbft_factory(
    options: HpbftOptions | None = None,
) -> Callable[[ReplicaConfig, Mapping[str, bytes]], HpbftReplica]:
    """A replica factory (``(config, persisted) -> replica``) with these options."""

    def factory(config: ReplicaConfig, persisted: Mapping[str, bytes]) -> HpbftReplica:
        return HpbftReplica(config, persisted, options)

    return factory
