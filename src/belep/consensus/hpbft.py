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

Layers, each a subclass of the one before: state, persistence, epochs and
catch-up (:mod:`~belep.consensus.hpbft_core`); the normal case
(:mod:`~belep.consensus.hpbft_normal`); the view change and substitution
(:mod:`~belep.consensus.hpbft_viewchange`); revival
(:mod:`~belep.consensus.hpbft_revival`); this module adds the entry points,
the timers, the primary's heartbeat and retransmissions.

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

from collections.abc import Callable, Mapping

from belep.consensus.hpbft_core import (
    BATCH_TIMER,
    FETCH_TIMER,
    FORWARD_TIMER,
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
)
from belep.consensus.hpbft_revival import REVIVAL_KEY, REVIVE_TIMER, HpbftRevival
from belep.consensus.hpbft_viewchange import PROGRESS_TIMER
from belep.consensus.types import (
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Effect,
    Event,
    Executed,
    Persisted,
    Receive,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
)
from belep.errors import ValidationError
from belep.ledger.block import Height, NodeId, View

__all__ = ["HpbftOptions", "HpbftReplica", "make_hpbft_factory"]

HEARTBEAT_TIMER = TimerId("hpbft/heartbeat")
#: Retransmissions per heartbeat (lowest undecided heights first).
RETRANSMIT_HEIGHTS = 4


class HpbftReplica(HpbftRevival):
    """One HPBFT node: a seat holder or a standby of a domain."""

    def __init__(
        self,
        config: ReplicaConfig,
        persisted: Mapping[str, bytes],
        options: HpbftOptions | None = None,
    ) -> None:
        self._last_status_ms = -(10**12)
        self._last_reforward_ms = 0
        super().__init__(config, persisted, options)

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
        elif isinstance(event, Executed):
            self._on_executed(event)
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
                self._count(self._suspicion())
                self._start_view_change(View(self.view + 1))
        elif timer == BATCH_TIMER:
            self._maybe_propose(flush=True)
        elif timer == FORWARD_TIMER:
            self._flush_forward()
        elif timer == FETCH_TIMER:
            self._on_fetch_timer()
        elif timer == REVIVE_TIMER:
            self._on_revive_timer()

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


def make_hpbft_factory(
    options: HpbftOptions | None = None,
) -> Callable[[ReplicaConfig, Mapping[str, bytes]], HpbftReplica]:
    """A replica factory (``(config, persisted) -> replica``) with these options."""

    def factory(config: ReplicaConfig, persisted: Mapping[str, bytes]) -> HpbftReplica:
        return HpbftReplica(config, persisted, options)

    return factory
