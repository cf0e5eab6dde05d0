"""PBFT (Castro & Liskov, OSDI '99 / TOCS 2002) as a pure state machine.

Owns :class:`PbftReplica`, the replica of ``docs/spec/pbft.md``: its entry
points (``start``, ``handle``), the dispatch of messages, view changes (view
change, new-view with proofs, the f+1 join rule, timeouts that double),
status requests, the voting floor of a replica that starts without state, and
restart from persisted state. The normal case runs in
:class:`~belep.consensus.pbft_core.PbftCore`; the pure rules (proposal
checks, view-change validation, the new-view plan) are in
:mod:`~belep.consensus.pbft_rules`.

Invariants, beyond those of the normal case:

* a replica never votes in a view at or below its *floor*; a replica that
  starts without persisted state learns its floor from its peers first;
* the view it is in (or moving to) is persisted before any vote or view
  change for it is sent;
* a new view is entered only with a valid new-view: signed by its primary and
  carrying a quorum of valid, signed view changes; what it re-proposes is
  recomputed from them, never taken on trust.

No I/O: time is the ``now_ms`` argument, every output is an effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from belep.consensus.log import WatermarkLog
from belep.consensus.pbft_core import (
    MAX_BACKOFF,
    TIMER_BATCH,
    TIMER_FORWARD,
    TIMER_PROGRESS,
    TIMER_STATUS,
    TIMER_TRANSFER,
    TIMER_VIEW_CHANGE,
    Mode,
    PbftCore,
    PbftSlot,
)
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
from belep.consensus.pbft_rules import (
    COMMIT_KIND,
    PREPARE_KIND,
    NewViewPlan,
    check_new_view,
    check_view_change,
    make_new_view,
    make_view_change,
)
from belep.consensus.pbft_state import load_state, slot_key
from belep.consensus.types import (
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Effect,
    Event,
    Executed,
    Height,
    NodeId,
    Persisted,
    Receive,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    View,
)
from belep.errors import ProtocolViolation, ValidationError

__all__ = ["Mode", "PbftReplica", "PbftSlot"]

#: View changes kept per replica (its highest views), to form new-views and to answer
#: peers still waiting in a view this replica left.
OWN_VIEW_CHANGES_KEPT = 4


class PbftReplica(PbftCore):
    """One PBFT replica: ``handle(event, now_ms) -> effects``."""

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
            for key in self._stale_keys:
                self._persist(key, None)
            self._stale_keys = []
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
            elif isinstance(event, Executed):
                self._on_executed(event)
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
        if sender not in self._rules.voters and not (
            sender in self._audience and isinstance(message, StatusRequest | ForwardRequests)
        ):
            self.stats["ignored.non-member"] += 1
            return
        handler(self, sender, message)

    # ------------------------------------------------------------------ client requests

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
            if self._mode is Mode.RECOVERING or (
                self._mode is Mode.VIEW_CHANGE and not self._left_behind
            ):
                return  # no primary to forward to: the pool keeps it, a new view forwards it
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
        elif self._mode is Mode.VIEW_CHANGE and self._left_behind:
            # This replica moved alone to a later view while the others commit in an earlier
            # one (it delivered their blocks by state transfer): as a PBFT client does on a
            # timeout, hand its clients' transactions to every member, where the working
            # primary takes them. (In an ordinary view change, where nobody commits, they
            # wait in the pool for the new view, as before: no extra traffic then.)
            self._fx.append(Broadcast(self._others, ForwardRequests(tuple(self._forward))))
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

    # ------------------------------------------------------------------ view change

    def _start_view_change(self, view: int) -> None:
        """Stop voting in the current view and ask to move to ``view``."""
        if not self._voter or view <= self._floor:
            return
        self._backoff = min(self._backoff + 1, MAX_BACKOFF)
        self._mode = Mode.VIEW_CHANGE
        self._left_behind = False
        self._vc_started_ms = self._now
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
        self._own_vcs[vc.new_view] = vc
        for old in sorted(self._own_vcs)[:-OWN_VIEW_CHANGES_KEPT]:
            del self._own_vcs[old]
        self._store_view_change(vc)
        self._fx.append(Broadcast(self._others, vc))
        self._fx.append(SetTimer(TIMER_VIEW_CHANGE, self._timeout()))

    def _on_view_change(self, sender: NodeId, vc: ViewChange) -> None:
        if sender != vc.replica:
            self.stats["ignored.view-change-relayed"] += 1
            return
        nv = self._last_new_view
        if nv is not None and vc.new_view <= nv.view:
            self._resend(sender, nv, nv.view)
        elif vc.new_view < self._view and vc.new_view in self._own_vcs:
            # We left that view without a new-view; the sender is still waiting for a
            # quorum of view changes for it, and ours (still accurate: we have not
            # voted since) may complete it.
            self._resend(sender, self._own_vcs[vc.new_view], vc.new_view)
        if vc.new_view < self._view or (vc.new_view == self._view and self._mode is Mode.NORMAL):
            self.stats["ignored.view-change-stale"] += 1
            return
        if vc.new_view in self._vcs.get(sender, {}):
            return
        check_view_change(vc, self._rules, self._cache, self._bodies)
        self._store_view_change(vc)
        if self._mode in (Mode.NORMAL, Mode.VIEW_CHANGE):
            self._maybe_join_view_change()
            self._check_view_change_quorum()

    def _resend(self, peer: NodeId, message: NewView | ViewChange, view: View) -> None:
        """Answer a peer stuck in ``view`` (at most once per timeout per peer and view)."""
        last = self._resent.get(peer)
        if last is not None and last[0] == view and self._now - last[1] < self._timeout():
            return
        self._resent[peer] = (view, self._now)
        self._fx.append(Send(peer, message))

    def _store_view_change(self, vc: ViewChange) -> None:
        """Keep a valid view change; each replica's few highest views only (bounded memory)."""
        views = self._vcs.setdefault(vc.replica, {})
        views[vc.new_view] = vc
        for old in sorted(views)[:-OWN_VIEW_CHANGES_KEPT]:
            del views[old]

    def _maybe_join_view_change(self) -> None:
        """Join when f+1 others asked for later views (at least one of them is correct)."""
        higher = sorted(
            max(views)
            for p, views in self._vcs.items()
            if p != self._id and max(views) > self._view
        )
        need = self.config.f + 1
        if len(higher) >= need:
            self._start_view_change(higher[-need])

    def _check_view_change_quorum(self) -> None:
        if self._mode is not Mode.VIEW_CHANGE:
            return
        view = self._view
        vcs = [views[view] for views in self._vcs.values() if view in views]
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
            ahead = self._view_ahead()
            if ahead is not None:
                self._start_view_change(ahead)  # this view cannot gather a quorum: catch up
            else:
                self._send_view_change()  # retransmit until a quorum asks for this view
        elif self._vc_stage == 0 and self._own_vc is not None:
            # Half the timeout without a new-view: ask again, in case only this
            # replica missed it (peers in the view answer with their new-view).
            self._vc_stage = 1
            self._fx.append(Broadcast(self._others, self._own_vc))
            self._fx.append(SetTimer(TIMER_VIEW_CHANGE, self._timeout() // 2))
        else:
            self._start_view_change(self._view + 1)

    def _view_ahead(self) -> View | None:
        """The view to catch up with when a whole timeout passed without a quorum here.

        Returns the lowest later view another member asked for, provided at least
        ``q`` members (this one included) asked for this view or a later one: the
        members missing from this view's quorum have moved past it, and correct
        replicas never come back to a view they left, so waiting cannot complete
        it. A replica ahead of the others with at most ``f`` others (possibly all
        faulty) beside it never passes this test (``1 + 2f < q`` members), so it
        waits for the others instead of running further ahead (``docs/spec/pbft.md``
        §8, Catching up).
        """
        view = self._view
        latest = [max(views) for p, views in self._vcs.items() if p != self._id and views]
        if 1 + sum(1 for w in latest if w >= view) < self._rules.quorum:
            return None
        later = [w for w in latest if w > view]
        return min(later) if later else None

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
        self._left_behind = False
        self._view = view
        self._last_new_view = nv
        self._vc_quorum = False
        self._fx.append(CancelTimer(TIMER_VIEW_CHANGE))
        for p in list(self._vcs):
            later = {w: vc for w, vc in self._vcs[p].items() if w > view}
            if later:
                self._vcs[p] = later
            else:
                del self._vcs[p]
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
            self._forward = list(
                self._pool.pending_older_than(self._now, cfg.max_batch_size * cfg.window)
            )
        self._flush_forward()
        for slot in accepted:
            if self._log.get(slot.height) is not slot:
                continue  # collected by a checkpoint that one of these votes completed
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

    # ------------------------------------------------------------------ status, recovery and restart

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

    def _restore(self, persisted: Mapping[str, bytes]) -> None:
        state = load_state(persisted)
        meta = state.meta
        if meta is None:
            return  # no state: recovering (members) or observing from genesis
        if self._voter:
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
        self._persisted_blocks.update(state.blocks)
        for h, record in sorted(state.slots.items()):
            if not self._log.in_window(h):
                if h <= low:
                    self._stale_keys.append(slot_key(h))  # its delete was lost in a crash
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

    # ------------------------------------------------------------------ timers

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
            self._transfer_retry = False
            if self._transfer_target > self._delivered:
                self._fetch()

    def _on_progress_timeout(self) -> None:
        """No delivery for half a timeout while work is outstanding.

        First expiry: escalate — send the old pending requests to every member
        (so all of them watch the primary), resend this replica's votes, and ask
        peers for committed blocks it may have missed. Second expiry (a whole
        timeout without delivery): start a view change.
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
