"""Raft (Ongaro & Ousterhout 2014, with the thesis' pre-vote and check-quorum) as a pure replica.

Owns :class:`RaftReplica`, the event handlers: leader election, log
replication with the §5.3 conflict rule, commit certificates, snapshots and
catch-up, client requests. The state and the primitives the handlers use are
in :mod:`belep.consensus.raft_core`; the rules are specified in
``docs/spec/raft.md``, whose names match the code's.

Invariants (for a correct replica, under crash faults only, ``n = 2f + 1``):

* ``snapshot_index <= commit_index <= last_index``; blocks up to
  ``commit_index`` were delivered in height order, each with a certificate
  that :func:`~belep.consensus.raft_cert.verify_raft_certificate` accepts;
* term and vote are persisted before any message of that term or vote is
  sent; a log entry is persisted before any acknowledgement or signature
  covering it (the host runs later effects only once a ``Persist`` is durable);
* an ``AppendEntries`` deletes log entries only from the first entry whose
  term conflicts, and never at or below ``commit_index``;
* an invalid input (unknown sender, malformed or inconsistent message, bad
  signature) is ignored without any state change and counted in ``stats``.

The replica reads no clock (``now_ms`` is an argument), draws no random
numbers (election jitter is a hash of node id, term and attempt) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from belep.consensus.raft_cert import (
    RAFT_EPOCH,
    AckCollector,
    accept_fetched_chain,
    check_certificate_names,
    check_certificate_signatures,
)
from belep.consensus.raft_core import (
    BATCH_TIMER,
    CHECK_QUORUM_TIMER,
    ELECTION_TIMER,
    HEARTBEAT_TIMER,
    PLANTED_TRUNCATE_WITHOUT_CONFLICT,
    RaftCore,
    Role,
)
from belep.consensus.raft_log import (
    log_key,
)
from belep.consensus.raft_messages import (
    MAX_FORWARD_TXS,
    AppendEntries,
    AppendResponse,
    ForwardRequests,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    Term,
    VoteResponse,
)
from belep.consensus.raft_replication import Progress, plan_append
from belep.consensus.types import (
    Block,
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
    QuorumCertificate,
    Receive,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
)
from belep.errors import ValidationError
from belep.ledger.block import ZERO_HASH
from belep.ledger.builder import build_block

__all__ = [
    "BATCH_TIMER",
    "CHECK_QUORUM_TIMER",
    "ELECTION_TIMER",
    "HEARTBEAT_TIMER",
    "PLANTED_TRUNCATE_WITHOUT_CONFLICT",
    "RaftReplica",
    "Role",
]


class RaftReplica(RaftCore):
    """One Raft member (or non-voting observer) of a domain: ``RaftReplica(config, persisted)``."""

    def start(self, now_ms: int) -> list[Effect]:
        self._now = now_ms
        self._out = []
        for key in self._stale_keys:
            self._persist(key, None)
        self._stale_keys = ()
        self._arm_election_timer()
        return self._take()

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        self._now = now_ms
        self._out = []
        if isinstance(event, Receive):
            self._on_receive(event.sender, event.message)
        elif isinstance(event, ClientRequest):
            self._on_transactions((event.tx,))
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer)
        elif isinstance(event, BlocksFetched):
            self._on_blocks_fetched(event.blocks)
        elif isinstance(event, Executed):
            if self._executed.advance(event) and self._role is Role.LEADER:
                self._drive_leader(flush=True)
        elif not isinstance(event, Persisted):  # Persisted: ordering is all we rely on
            self._ignore("unknown-event")
        return self._take()

    def _on_receive(self, sender: NodeId, message: object) -> None:
        from_member = sender in self._members and sender != self._me
        if isinstance(message, AppendEntries) and from_member:
            self._on_append_entries(sender, message)
        elif isinstance(message, AppendResponse) and (from_member or sender in self._observers):
            self._on_append_response(sender, message)
        elif isinstance(message, RequestVote) and from_member:
            self._on_request_vote(sender, message)
        elif isinstance(message, VoteResponse) and from_member:
            self._on_vote_response(sender, message)
        elif isinstance(message, InstallSnapshot) and from_member:
            self._on_install_snapshot(sender, message)
        elif isinstance(message, InstallSnapshotResponse) and (
            from_member or sender in self._observers
        ):
            self._on_install_snapshot_response(sender, message)
        elif isinstance(message, ForwardRequests) and (from_member or sender in self._observers):
            self._on_transactions(message.txs)
        else:
            self._ignore("unexpected-message")

    def _on_timer(self, timer: TimerId) -> None:
        if timer == ELECTION_TIMER:
            if self._role in (Role.FOLLOWER, Role.PRE_CANDIDATE, Role.CANDIDATE):
                self._start_pre_vote()
        elif timer == HEARTBEAT_TIMER:
            if self._role is Role.LEADER:
                self._on_heartbeat()
        elif timer == CHECK_QUORUM_TIMER:
            if self._role is Role.LEADER:
                self._on_check_quorum()
        elif timer == BATCH_TIMER:
            self._batch_timer_set = False
            if self._role is Role.LEADER:
                self._drive_leader(flush=True)
            else:
                self._flush_forward()
        else:
            self._ignore("unknown-timer")

    def _start_pre_vote(self) -> None:
        """Thesis §9.6: ask whether we could win before disturbing anyone's term."""
        self._role, self._leader, self._votes = Role.PRE_CANDIDATE, None, {self._me}
        self._arm_election_timer()
        if len(self._votes) >= self._quorum:
            self._start_election()
            return
        request = RequestVote(
            Term(self._term + 1), self._log.last_index, self._log.last_term, pre_vote=True
        )
        self._out.append(Broadcast(self._peers, request))

    def _start_election(self) -> None:
        self._term, self._vote = Term(self._term + 1), self._me
        self._persist_hard()
        self._role, self._leader, self._votes = Role.CANDIDATE, None, {self._me}
        self._arm_election_timer()
        if len(self._votes) >= self._quorum:
            self._become_leader()
            return
        request = RequestVote(self._term, self._log.last_index, self._log.last_term, pre_vote=False)
        self._out.append(Broadcast(self._peers, request))

    def _log_up_to_date(self, message: RequestVote) -> bool:
        """§5.4.1: the candidate's log is at least as up-to-date as ours."""
        if message.last_log_term != self._log.last_term:
            return message.last_log_term > self._log.last_term
        return message.last_log_index >= self._log.last_index

    def _on_request_vote(self, candidate: NodeId, message: RequestVote) -> None:
        if self._role is Role.OBSERVER:
            self._ignore("vote-to-observer")
            return
        if message.pre_vote:
            granted = (
                message.term > self._term and not self._in_lease() and self._log_up_to_date(message)
            )
            reply_term = message.term if granted else self._term
            self._out.append(Send(candidate, VoteResponse(reply_term, granted, pre_vote=True)))
            return
        if message.term < self._term:
            self._out.append(Send(candidate, VoteResponse(self._term, False, pre_vote=False)))
            return
        if message.term > self._term:
            if self._in_lease():  # a live leader exists: do not let a disruptor bump our term
                self._ignore("vote-in-lease")
                self._out.append(Send(candidate, VoteResponse(self._term, False, pre_vote=False)))
                return
            self._become_follower(message.term, None)
        granted = self._vote in (None, candidate) and self._log_up_to_date(message)
        if granted and self._vote is None:
            self._vote = candidate
            self._persist_hard()
        if granted:
            self._arm_election_timer()
        self._out.append(Send(candidate, VoteResponse(self._term, granted, pre_vote=False)))

    def _on_vote_response(self, voter: NodeId, message: VoteResponse) -> None:
        if message.pre_vote and message.granted:
            if self._role is Role.PRE_CANDIDATE and message.term == self._term + 1:
                self._votes.add(voter)
                if len(self._votes) >= self._quorum:
                    self._start_election()
            return
        if message.term > self._term:
            self._become_follower(message.term, None)
            return
        if (
            not message.pre_vote
            and message.granted
            and self._role is Role.CANDIDATE
            and message.term == self._term
        ):
            self._votes.add(voter)
            if len(self._votes) >= self._quorum:
                self._become_leader()

    def _become_leader(self) -> None:
        self._role, self._leader, self._votes = Role.LEADER, self._me, set()
        self._out.append(CancelTimer(ELECTION_TIMER))
        first = self._log.last_index + 1
        self._progress = {
            peer: Progress(next_index=first, cert_next=self._commit + 1) for peer in self._targets
        }
        self._acks = AckCollector(self.config.domain, self._term, self._voters)
        self._active = set()
        for height in range(self._commit + 1, first):
            self._sign_own(height)
        self._propose(force=True)  # the term's first entry (thesis §6.4), with any pending txs
        self._out.append(SetTimer(HEARTBEAT_TIMER, self.config.heartbeat_ms))
        self._out.append(SetTimer(CHECK_QUORUM_TIMER, self.config.request_timeout_ms))
        self._drive_leader(flush=False)
        for peer in self._targets:
            self._send_append(peer, probe=True)

    def _on_check_quorum(self) -> None:
        """Thesis §6.2: a leader that has not heard from a majority in a timeout steps down."""
        if len(self._active) + 1 < self._quorum:
            self._ignore("check-quorum-step-down")
            self._become_follower(self._term, None)
            return
        self._active.clear()
        self._out.append(SetTimer(CHECK_QUORUM_TIMER, self.config.request_timeout_ms))

    def _propose(self, *, force: bool = False, flush: bool = False) -> bool:
        """Cut pending transactions into a block once everything below is executed;
        ``force`` one block (the term's first, which cannot wait: see below)."""
        proposed = False
        limit = max(1, self.config.max_batch_size)
        pending = self._requests
        while True:
            last = self._log.last_index
            state_root = self._executed.root_after(last, self._block_hash(last))
            if not force:
                if not pending or not (flush or len(pending) >= limit):
                    break
                if state_root is None:
                    break  # the execution of the entry below (``Executed``) calls this again
            elif state_root is None:
                # The term's first entry: the entries below it commit only through it
                # (figure 8), so it cannot wait for their execution. Its root is unknown
                # (ledger.execution.check_state_root); the next entry's root covers both.
                state_root = ZERO_HASH
            batch = pending.take(limit)
            previous = self._log.entry(last).header.timestamp_ms if self._log.has(last) else None
            block = build_block(
                domain=self.config.domain,
                height=last + 1,
                epoch=RAFT_EPOCH,
                view=self._term,
                parent_hash=self._block_hash(last),
                parent_timestamp_ms=previous,
                transactions=batch,
                now_ms=self._now,
                proposer=self._me,
                state_root=state_root,
            )
            self._append_entry(block)
            self._sign_own(block.height)
            force, proposed = False, True
        self._arm_batch_timer()
        return proposed

    def _drive_leader(self, *, flush: bool, changed: bool = False) -> None:
        """Propose and commit until neither makes progress, then replicate."""
        while self._role is Role.LEADER:
            changed |= self._propose(flush=flush)
            if not self._try_commit():
                break
            changed, flush = True, True
        if changed and self._role is Role.LEADER:
            for peer in self._targets:
                self._send_append(peer)

    def _try_commit(self) -> bool:
        """Commit each next height holding a majority of ``raft-append`` signatures in this term."""
        advanced = False
        while self._commit < self._log.last_index:
            block = self._log.entry(self._commit + 1)
            certificate = self._acks.take_certificate(block.height, block.block_hash)
            if certificate is None:
                break
            self._deliver(block, certificate)
            advanced = True
        if advanced:
            self._after_commit()
        return advanced

    def _on_heartbeat(self) -> None:
        stalled = self._commit == self._commit_at_beat
        self._commit_at_beat = self._commit
        ahead = tuple(
            p for p, pr in self._progress.items() if (pr.commit_index or 0) > self._commit
        )
        if stalled and ahead:
            # Peers hold certificates for heights we cannot certify ourselves (they compacted
            # those entries and cannot sign them again): fetch the blocks (spec §10).
            self._request_transfer(ahead)
        for peer in self._targets:
            self._progress[peer].on_heartbeat(self._log.last_index, self._commit)
            self._send_append(peer, heartbeat=True)
        self._out.append(SetTimer(HEARTBEAT_TIMER, self.config.heartbeat_ms))

    def _on_append_response(self, peer: NodeId, message: AppendResponse) -> None:
        if message.term > self._term:
            self._become_follower(message.term, None)
            return
        if self._role is not Role.LEADER or message.term != self._term:
            self._ignore("stale-append-response")
            return
        if message.success and message.match_index > self._log.last_index:
            self._ignore("invalid-append-response")
            return
        accepted = self._acks.verify_needed(
            peer, message.signatures, self._block_hash, self._commit
        )
        if accepted is None:
            self._ignore("invalid-ack-signature")
            return
        progress = self._progress[peer]
        if peer in self._members:
            self._active.add(peer)
        progress.note_commit(message.commit_index)
        if not message.success:
            progress.on_reject(message.hint_index)
            self._send_append(peer, probe=True)
            return
        progress.on_success(message.match_index)
        self._acks.add(peer, accepted)
        self._drive_leader(flush=False)
        self._send_append(peer)

    def _on_install_snapshot_response(self, peer: NodeId, message: InstallSnapshotResponse) -> None:
        if message.term > self._term:
            self._become_follower(message.term, None)
            return
        if self._role is not Role.LEADER or message.term != self._term:
            self._ignore("stale-snapshot-response")
            return
        if message.commit_index > self._log.last_index:
            self._ignore("invalid-snapshot-response")
            return
        progress = self._progress[peer]
        if peer in self._members:
            self._active.add(peer)
        progress.note_commit(message.commit_index)
        progress.on_snapshot_reply(message.commit_index)
        if message.commit_index >= self._log.snapshot_index:
            self._send_append(peer, probe=True)

    def _accept_leader(self, term: Term, leader: NodeId) -> None:
        if (
            term > self._term
            or self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
            or (self._leader != leader)
        ):
            self._become_follower(term, leader)
        else:
            self._arm_election_timer()
        self._leader_seen_ms = self._now
        self._flush_forward()

    def _on_append_entries(self, leader: NodeId, message: AppendEntries) -> None:
        if message.term < self._term:
            reply = AppendResponse(self._term, False, Height(0), Height(0), self._commit)
            self._out.append(Send(leader, reply))
            return
        if self._role is Role.LEADER and message.term == self._term:
            self._ignore("second-leader-in-term")
            return
        plan = plan_append(
            self._log,
            self._commit,
            message,
            domain=self.config.domain,
            members=self._members,
            truncate_without_conflict=PLANTED_TRUNCATE_WITHOUT_CONFLICT in self.config.planted_bugs,
        )
        if plan is None or not self._certificates_valid(message.certificates):
            self._ignore("invalid-append-entries")
            return
        self._accept_leader(message.term, leader)
        if isinstance(plan, int):  # consistency check failed: plan is the hint
            reply = AppendResponse(self._term, False, Height(0), Height(plan), self._commit)
            self._out.append(Send(leader, reply))
            return
        if plan.truncate_from is not None:
            new_last = plan.truncate_from - 1 + len(plan.new_entries)
            removed = self._log.truncate_from(plan.truncate_from)
            self._requests.note_log(removed, -1)
            for block in reversed(removed):  # keys the new entries overwrite need no delete
                if block.height > new_last:
                    self._persist(log_key(block.height), None)
            self._signer.forget_from(plan.truncate_from)
        for block in plan.new_entries:
            self._append_entry(block)
        self._apply_certificates(message.certificates)
        signatures = self._ack_signatures(message.leader_commit, plan.match_index)
        reply = AppendResponse(
            self._term, True, plan.match_index, Height(0), self._commit, signatures
        )
        self._out.append(Send(leader, reply))

    def _certificates_valid(self, certificates: Sequence[QuorumCertificate]) -> bool:
        for certificate in certificates:
            if certificate.statement.height <= self._commit:
                continue
            try:
                check_certificate_signatures(certificate, self._voters, self.config.domain)
            except ValidationError:
                return False
        return True

    def _apply_certificates(self, certificates: Sequence[QuorumCertificate]) -> None:
        advanced = False
        for certificate in certificates:
            height = certificate.statement.height
            if height <= self._commit:
                continue
            if height != self._commit + 1 or not self._log.has(height):
                break
            block = self._log.entry(height)
            try:
                check_certificate_names(block, certificate)
            except ValidationError:
                break
            if block.header.prev_hash != self._commit_hash:
                break
            self._deliver(block, certificate)
            advanced = True
        if advanced:
            self._after_commit()

    def _ack_signatures(
        self, leader_commit: int, match_index: int
    ) -> tuple[tuple[Height, bytes], ...]:
        """Sign heights above the leader's commit that we vouch for in this term (see raft_cert)."""
        if self._role is Role.OBSERVER or self._log.term_at(match_index) != self._term:
            return ()
        low = max(leader_commit, self._log.snapshot_index) + 1
        return tuple(
            (Height(h), self._signer.sign(self._term, Height(h), self._block_hash(h)))
            for h in range(low, match_index + 1)
        )

    def _on_install_snapshot(self, leader: NodeId, message: InstallSnapshot) -> None:
        if message.term < self._term:
            self._out.append(Send(leader, InstallSnapshotResponse(self._term, self._commit)))
            return
        if self._role is Role.LEADER and message.term == self._term:
            self._ignore("second-leader-in-term")
            return
        self._accept_leader(message.term, leader)
        if message.last_included_index > self._commit:
            others = tuple(m for m in self.config.members if m not in (self._me, leader))
            self._request_transfer((leader, *others))
        self._out.append(Send(leader, InstallSnapshotResponse(self._term, self._commit)))

    def _on_blocks_fetched(self, blocks: Sequence[tuple[Block, QuorumCertificate]]) -> None:
        accepted = accept_fetched_chain(
            blocks, self._commit, self._commit_hash, self._voters, self.config.domain
        )
        if self._role is Role.LEADER:  # a leader never deletes entries (Leader Append-Only)
            log = self._log
            agree = [
                not log.has(b.height) or log.hash_at(b.height) == b.block_hash for b, _ in accepted
            ]
            accepted = accepted[: agree.index(False)] if False in agree else accepted
        if not accepted:
            self._ignore("fetched-blocks-unusable")
            return
        for block, certificate in accepted:
            mine = self._log.hash_at(block.height) if self._log.has(block.height) else None
            if mine is not None and mine != block.block_hash:
                self._forget_entries(self._log.truncate_from(block.height))
            self._deliver(block, certificate)
        self._forget_entries(
            self._log.reset_snapshot(self._commit, self._commit_term, self._commit_hash)
        )
        self._certs = {h: c for h, c in self._certs.items() if h > self._log.snapshot_index}
        self._acks.forget_through(self._commit)
        self._after_commit()
        if self._role is Role.LEADER:
            self._drive_leader(flush=True, changed=True)

    def _on_transactions(self, txs: Iterable[Transaction]) -> None:
        for tx in txs:
            if self._requests.is_known(tx):
                self._ignore("duplicate-transaction")
            elif self._requests.is_full():
                self._ignore("pending-full")
            elif self._role is Role.LEADER and not self.config.validate_transaction(tx):
                self._ignore("invalid-transaction")
            else:
                self._requests.add(tx)
        if self._role is Role.LEADER:
            self._drive_leader(flush=False)
        elif len(self._requests) >= max(1, self.config.max_batch_size):
            self._flush_forward()
        else:
            self._arm_batch_timer()

    def _flush_forward(self) -> None:
        """A non-leader passes its pending transactions to the leader it knows."""
        if self._role is Role.LEADER or self._leader is None:
            return
        while self._requests:
            txs = self._requests.take(MAX_FORWARD_TXS)
            self._out.append(Send(self._leader, ForwardRequests(txs)))
