"""HPBFT supervisor revival: a parent decision restarts a stalled epoch with new seats.

Owns :class:`HpbftRevival` (``docs/spec/hpbft.md`` §Revival). A
``ReviveChild(domain, epoch, seats, failed)`` decision committed by the parent
domain reaches every node (the host hands it on as a ``ReviveNotice``; nodes
relay it). Each node of the stalled epoch that accepts it stops voting in that
epoch for good (persisted first) and sends the revived epoch's first seat a
signed ``ReviveReport``: its stable checkpoint and its prepared certificates
with their blocks. Once **every** old seat not declared failed has reported
(and standbys had a short grace to), that seat selects the designated chain
exactly as a view change does and broadcasts ``ReviveStart``; every node
re-checks it and opens the revived epoch: the decision's seats, view 0, the
designated blocks re-proposed and re-certified, and a ``RevivalRecord`` in the
first fresh block so the chain records the change.

Enforced assumptions (refused otherwise, counted in ``stats``): the decision
is for this domain and its current epoch and was committed by the parent
(inclusion proof and a ``2f+1`` commit certificate of the parent's
validators); at most ``2f`` seats are declared failed and none of them gets a
seat; the revived epoch starts only with the reports of all old seats not
declared failed; it is abandoned if the designated chain holds a
configuration change. The declared-failed seats must really be crashed (not
Byzantine) and at most ``2f - d`` of the others Byzantine when ``d`` are
declared failed: code cannot check that; the spec states it.

No I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from belep.consensus.hpbft_core import (
    HpbftOptions,
)
from belep.consensus.hpbft_messages import (
    ReviveNotice,
    ReviveReport,
    ReviveStart,
    report_signing_bytes,
)
from belep.consensus.hpbft_select import Designation, check_report, select_chain
from belep.consensus.hpbft_state import DurableState, prepared_key
from belep.consensus.hpbft_viewchange import HpbftViewChange
from belep.consensus.types import (
    Block,
    Broadcast,
    CancelTimer,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerId,
)
from belep.crypto import PublicKey
from belep.errors import ChainError, ProtocolViolation, QuorumNotMet, ValidationError
from belep.ledger.block import DomainId, Height, NodeId, View
from belep.ledger.config import (
    check_revival,
)
from belep.ledger.config_tx import (
    RevivalRecord,
    ReviveOrder,
    decode_config_tx,
    find_config_tx,
    is_config_payload,
)

__all__ = ["HpbftRevival"]

REVIVE_TIMER = TimerId("hpbft/revive")
REVIVAL_KEY = "hpbft/revival"


class HpbftRevival(HpbftViewChange):
    """Revival of a stalled epoch on a parent's committed decision."""

    def __init__(
        self,
        config: ReplicaConfig,
        persisted: Mapping[str, bytes],
        options: HpbftOptions | None = None,
    ) -> None:
        self._reviving: ReviveOrder | None = None
        self._revival_record: RevivalRecord | None = None
        self._revive_reports: dict[NodeId, ReviveReport] = {}
        self._revive_complete_ms: int | None = None
        self._revive_attempt = 0
        self._pending_notice: ReviveOrder | None = None
        super().__init__(config, persisted, options)
        if REVIVAL_KEY in persisted:
            self._revival_record = RevivalRecord.decode(persisted[REVIVAL_KEY])

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
        self._persist(REVIVAL_KEY, record.encode())
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
        self._replay_future()
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
        self._persist(REVIVAL_KEY, record.encode())
        self._reviving = None
        self._base = (record.base_height, record.base_hash)
        self.view = View(0)
        self._in_view_change = False
        for key in [prepared_key(h) for h in self._prepared]:
            self._persist(key, None)
        self._reset_epoch_state()
        self._persist_state()
        self._on_new_epoch()
        self._replay_future()
