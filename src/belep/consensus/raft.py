"""Raft (Ongaro & Ousterhout 2014, with the thesis' pre-vote and check-quorum) as a pure replica.

Owns :class:`RaftReplica`: leader election, log replication with the §5.3
conflict rule, commit certificates, snapshots and catch-up. The rules are
specified in ``docs/spec/raft.md``; names here match it.

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

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.raft_cert import (
    RAFT_EPOCH,
    append_statement,
    check_certificate_names,
    check_certificate_signatures,
    raft_quorum,
    sign_append,
)
from belep.consensus.raft_log import (
    APPLIED_KEY,
    HARD_KEY,
    RaftLog,
    encode_applied,
    encode_entry,
    encode_hard_state,
    log_key,
    restore_state,
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
    entry_term,
)
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientRequest,
    Deliver,
    Digest,
    Effect,
    Event,
    Height,
    NodeId,
    Persist,
    Persisted,
    QuorumCertificate,
    Receive,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
)
from belep.crypto import sha256
from belep.encoding import encode
from belep.errors import ConfigError, ValidationError
from belep.ledger.block import make_block

__all__ = ["PLANTED_TRUNCATE_WITHOUT_CONFLICT", "RaftReplica", "Role"]

ELECTION_TIMER = TimerId("raft/election")
HEARTBEAT_TIMER = TimerId("raft/heartbeat")
CHECK_QUORUM_TIMER = TimerId("raft/check-quorum")
BATCH_TIMER = TimerId("raft/batch")

#: Test-only planted bug: on AppendEntries, delete everything after ``prev_log_index``
#: even when no entry conflicts (violates §5.3; the simulator must catch it).
PLANTED_TRUNCATE_WITHOUT_CONFLICT = "raft_truncate_without_conflict"
#: Pending transactions a replica buffers, in multiples of ``max_batch_size``.
PENDING_LIMIT_BATCHES = 64


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    OBSERVER = "observer"


@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower or observer (thesis §3.5 nextIndex/matchIndex)."""

    next_index: int
    cert_next: int
    match_index: int = 0
    probing: bool = True
    stall_mark: int = -1
    commit_index: int | None = None
    commit_stall_mark: int = -1
    snapshot_sent_ms: int | None = None


@dataclass(frozen=True, slots=True)
class _AppendPlan:
    """How an accepted AppendEntries changes the log (computed before anything changes)."""

    truncate_from: int | None
    new_entries: tuple[Block, ...]
    match_index: Height


class RaftReplica:
    """One Raft member (or non-voting observer) of a domain."""

    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        if not config.members or len(set(config.members)) != len(config.members):
            raise ConfigError("raft needs distinct members", found=config.members)
        if config.node_id not in config.members and config.node_id not in config.observers:
            raise ConfigError("node is neither member nor observer", found=config.node_id)
        missing = [m for m in config.members if m not in config.keys]
        if missing:
            raise ConfigError("members without a public key", found=missing)
        self.config = config
        self.stats: dict[str, int] = {}
        self._me = config.node_id
        self._voters = config.voter_keys()
        self._quorum = raft_quorum(config.n)
        self._members = frozenset(config.members)
        self._observers = frozenset(config.observers) - self._members
        self._peers = tuple(m for m in config.members if m != self._me)
        self._targets = self._peers + tuple(o for o in config.observers if o not in self._members)
        self._keep = max(1, config.checkpoint_interval)
        restored = restore_state(persisted, config.genesis_hash)
        self._term: Term = restored.term
        self._vote: NodeId | None = restored.vote
        self._log = RaftLog(restored.applied_height, restored.applied_term, restored.applied_hash)
        self._in_log: dict[Digest, int] = {}
        for block in restored.entries:
            self._log.append(block)
            self._count_txs(block, +1)
        self._stale_keys = restored.stale_keys
        self._commit = restored.applied_height
        self._commit_term = restored.applied_term
        self._commit_hash = restored.applied_hash
        self._certs: dict[int, QuorumCertificate] = {}
        self._role = Role.FOLLOWER if self._me in self._members else Role.OBSERVER
        self._leader: NodeId | None = None
        self._leader_seen_ms: int | None = None
        self._votes: set[NodeId] = set()
        self._election_round = 0
        self._progress: dict[NodeId, _Progress] = {}
        self._active: set[NodeId] = set()
        self._sigs: dict[int, dict[NodeId, bytes]] = {}
        self._sig_cache: dict[int, bytes] = {}
        self._sig_cache_term = Term(-1)
        self._pending: dict[Digest, Transaction] = {}
        self._batch_timer_set = False
        self._transfer: tuple[int, int] | None = None  # (from_height, requested at ms)
        self._token = 0
        self._now = 0
        self._out: list[Effect] = []

    # ------------------------------------------------------------------ API

    @property
    def committed_height(self) -> Height:
        return self._commit

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> Term:
        return self._term

    @property
    def voted_for(self) -> NodeId | None:
        return self._vote

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def log(self) -> RaftLog:
        """The in-memory log (read it; do not change it)."""
        return self._log

    def state_fingerprint(self) -> tuple[object, ...]:
        """Everything the protocol state consists of, for "nothing changed" checks in tests."""
        entries = tuple(b.block_hash for b in self._log.entries_between(0, self._log.last_index))
        progress = tuple(sorted((p, repr(pr)) for p, pr in self._progress.items()))
        return (
            self._role, self._term, self._vote, self._leader, self._leader_seen_ms,
            self._commit, self._log.snapshot_index, entries, tuple(self._pending),
            tuple(sorted(self._votes)), progress, tuple(sorted(self._active)),
            tuple(sorted((h, tuple(sorted(s))) for h, s in self._sigs.items())),
        )  # fmt: skip

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
        elif not isinstance(event, Persisted):  # Persisted: ordering is all we rely on
            self._ignore("unknown-event")
        return self._take()

    # ------------------------------------------------------------- plumbing

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _ignore(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    def _persist(self, key: str, value: bytes | None) -> None:
        self._token += 1
        self._out.append(Persist(self._token, key, value))

    def _persist_hard(self) -> None:
        self._persist(HARD_KEY, encode_hard_state(self._term, self._vote))

    def _arm_election_timer(self) -> None:
        """Election timeout in ``[T, 2T)``: ``T`` plus a jitter hashed from id, term and attempt."""
        if self._role is Role.OBSERVER:
            return
        self._election_round += 1
        base = max(1, self.config.request_timeout_ms)
        seed = sha256(encode([self._me, self._term, self._election_round]))
        jitter = int.from_bytes(seed[:8], "big") % base
        self._out.append(SetTimer(ELECTION_TIMER, base + jitter))

    def _in_lease(self) -> bool:
        """Heard from a live leader within the minimum election timeout (thesis §4.2.3, §9.6)."""
        if self._role is Role.LEADER:
            return True
        return (
            self._leader is not None
            and self._leader_seen_ms is not None
            and self._now - self._leader_seen_ms < self.config.request_timeout_ms
        )

    def _count_txs(self, block: Block, delta: int) -> None:
        for tx in block.transactions:
            left = self._in_log.get(tx.tx_hash, 0) + delta
            if left > 0:
                self._in_log[tx.tx_hash] = left
            else:
                self._in_log.pop(tx.tx_hash, None)

    def _forget_entries(self, removed: Iterable[Block]) -> None:
        """Delete dropped entries from storage (highest first) and from the tx index."""
        for block in sorted(removed, key=lambda b: b.height, reverse=True):
            self._persist(log_key(block.height), None)
            self._count_txs(block, -1)

    def _append_entry(self, block: Block) -> None:
        self._log.append(block)
        self._persist(log_key(block.height), encode_entry(block))
        self._count_txs(block, +1)

    # ------------------------------------------------------------ dispatch

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

    # ------------------------------------------------------------ election

    def _become_follower(self, term: Term, leader: NodeId | None) -> None:
        if term > self._term:
            self._term, self._vote = term, None
            self._persist_hard()
        if self._role is Role.LEADER:
            self._out.append(CancelTimer(HEARTBEAT_TIMER))
            self._out.append(CancelTimer(CHECK_QUORUM_TIMER))
            self._progress.clear()
            self._sigs.clear()
            self._active.clear()
        if self._role is not Role.OBSERVER:
            self._role = Role.FOLLOWER
        self._leader = leader
        self._votes = set()
        self._arm_election_timer()

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

    # ---------------------------------------------------------- leadership

    def _become_leader(self) -> None:
        self._role, self._leader, self._votes = Role.LEADER, self._me, set()
        self._out.append(CancelTimer(ELECTION_TIMER))
        first = self._log.last_index + 1
        self._progress = {
            peer: _Progress(next_index=first, cert_next=self._commit + 1) for peer in self._targets
        }
        self._sigs, self._active = {}, set()
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

    def _sign_own(self, height: int) -> None:
        statement = append_statement(
            self.config.domain, self._term, Height(height), self._block_hash(height)
        )
        signature = sign_append(self.config.private_key, statement)
        self._sigs.setdefault(height, {})[self._me] = signature

    def _block_hash(self, height: int) -> Digest:
        digest = self._log.hash_at(height)
        if digest is None:
            raise ValidationError("no entry at height", found=height)
        return digest

    def _propose(self, *, force: bool = False, flush: bool = False) -> bool:
        """Cut pending transactions into blocks while the window allows; ``force`` one block."""
        proposed = False
        limit = max(1, self.config.max_batch_size)
        while force or (
            self._pending
            and (flush or len(self._pending) >= limit)
            and self._log.last_index - self._commit < max(1, self.config.window)
        ):
            batch = tuple(self._pending.values())[:limit]
            for tx in batch:
                del self._pending[tx.tx_hash]
            last = self._log.last_index
            previous = self._log.entry(last).header.timestamp_ms if self._log.has(last) else 0
            block = make_block(
                domain=self.config.domain,
                height=Height(last + 1),
                epoch=RAFT_EPOCH,
                view=self._term,
                prev_hash=self._block_hash(last),
                transactions=batch,
                timestamp_ms=max(self._now, previous),
                proposer=self._me,
            )
            self._append_entry(block)
            self._sign_own(block.height)
            force, proposed = False, True
        if self._pending and not self._batch_timer_set:
            self._batch_timer_set = True
            self._out.append(SetTimer(BATCH_TIMER, max(0, self.config.max_batch_wait_ms)))
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
            height = self._commit + 1
            signatures = self._sigs.get(height, {})
            if len(signatures) < self._quorum:
                break
            block = self._log.entry(height)
            statement = append_statement(
                self.config.domain, self._term, block.height, block.block_hash
            )
            del self._sigs[height]
            self._deliver(block, QuorumCertificate(statement, tuple(signatures.items())))
            advanced = True
        if advanced:
            self._after_commit()
        return advanced

    def _on_heartbeat(self) -> None:
        last = self._log.last_index
        for peer in self._targets:
            progress = self._progress[peer]
            if not progress.probing:
                if progress.match_index == progress.stall_mark and progress.match_index < last:
                    progress.probing = True  # no progress for a whole interval: go back
                    progress.next_index = progress.match_index + 1
                progress.stall_mark = progress.match_index
            known = progress.commit_index
            if known is not None and known == progress.commit_stall_mark and known < self._commit:
                progress.cert_next = known + 1
            progress.commit_stall_mark = -1 if known is None else known
            self._send_append(peer, heartbeat=True)
        self._out.append(SetTimer(HEARTBEAT_TIMER, self.config.heartbeat_ms))

    def _send_append(self, peer: NodeId, *, heartbeat: bool = False, probe: bool = False) -> None:
        """Send ``peer`` what it lacks: entries within the window and certificates it can use."""
        progress = self._progress[peer]
        snapshot = self._log.snapshot_index
        if progress.next_index <= snapshot or progress.cert_next <= snapshot:
            self._send_snapshot(peer, progress)
            return
        last, window = self._log.last_index, max(1, self.config.window)
        if progress.probing:
            if not (heartbeat or probe):
                return
            low, high = progress.next_index, min(last, progress.next_index + window - 1)
        else:
            low, high = progress.next_index, min(last, progress.match_index + window)
        entries = self._log.entries_between(low, high) if low <= high else ()
        prev = low - 1 if (entries or progress.probing) else max(progress.match_index, snapshot)
        reach = max(progress.match_index, high if entries else 0)
        cert_high = min(self._commit, progress.cert_next + window - 1, reach)
        certificates = tuple(self._certs[h] for h in range(progress.cert_next, cert_high + 1))
        if not (entries or certificates or heartbeat or probe):
            return
        if entries and not progress.probing:
            progress.next_index = high + 1
        if certificates:
            progress.cert_next = cert_high + 1
        prev_term = self._log.term_at(prev)
        if prev_term is None:  # cannot happen: prev >= snapshot point by the checks above
            raise ValidationError("no term for the previous position", found=prev)
        message = AppendEntries(
            self._term, Height(prev), prev_term, entries, self._commit, certificates
        )
        self._out.append(Send(peer, message))

    def _send_snapshot(self, peer: NodeId, progress: _Progress) -> None:
        sent = progress.snapshot_sent_ms
        if sent is not None and self._now - sent < self.config.heartbeat_ms:
            return
        progress.snapshot_sent_ms = self._now
        log = self._log
        message = InstallSnapshot(
            self._term, log.snapshot_index, log.snapshot_term, log.snapshot_hash
        )
        self._out.append(Send(peer, message))

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
        accepted = self._check_ack_signatures(peer, message)
        if accepted is None:
            self._ignore("invalid-ack-signature")
            return
        progress = self._progress[peer]
        if peer in self._members:
            self._active.add(peer)
        self._note_peer_commit(peer, progress, message.commit_index)
        if not message.success:
            hint = min(progress.next_index, max(message.hint_index, 1))
            progress.next_index = max(progress.match_index + 1, hint)
            progress.probing = True
            self._send_append(peer, probe=True)
            return
        progress.match_index = max(progress.match_index, message.match_index)
        progress.next_index = max(progress.next_index, progress.match_index + 1)
        progress.probing = False
        for height, signature in accepted:
            self._sigs.setdefault(height, {})[peer] = signature
        self._drive_leader(flush=False)
        self._send_append(peer)

    def _check_ack_signatures(
        self, peer: NodeId, message: AppendResponse
    ) -> list[tuple[int, bytes]] | None:
        """The signatures the leader still needs, verified; ``None`` if any is invalid."""
        if peer not in self._members:
            return []
        accepted: list[tuple[int, bytes]] = []
        key = self._voters[peer]
        for height, signature in message.signatures:
            have = self._sigs.get(height, {})
            if height <= self._commit or peer in have or len(have) >= self._quorum:
                continue
            statement = append_statement(
                self.config.domain, self._term, height, self._block_hash(height)
            )
            if not key.is_valid_signature(statement.signing_bytes(), signature):
                return None
            accepted.append((height, signature))
        return accepted

    def _note_peer_commit(self, peer: NodeId, progress: _Progress, commit_index: int) -> None:
        if progress.commit_index is None:
            progress.cert_next = commit_index + 1
        else:
            progress.cert_next = max(progress.cert_next, commit_index + 1)
        progress.commit_index = max(progress.commit_index or 0, commit_index)
        if commit_index > self._commit:  # a peer holds certificates we lack: fetch them
            self._request_transfer((peer,))

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
        self._note_peer_commit(peer, progress, message.commit_index)
        # A committed prefix matches every later leader's log (Leader Completeness).
        progress.match_index = max(progress.match_index, message.commit_index)
        progress.next_index = max(progress.next_index, progress.match_index + 1)
        progress.probing = True
        if message.commit_index >= self._log.snapshot_index:
            self._send_append(peer, probe=True)

    # ------------------------------------------------------------ follower

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
        plan = self._plan_append(message)
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
            for block in reversed(removed):  # keys the new entries overwrite need no delete
                self._count_txs(block, -1)
                if block.height > new_last:
                    self._persist(log_key(block.height), None)
            for height in [h for h in self._sig_cache if h >= plan.truncate_from]:
                del self._sig_cache[height]
        for block in plan.new_entries:
            self._append_entry(block)
        self._apply_certificates(message.certificates)
        signatures = self._ack_signatures(message.leader_commit, plan.match_index)
        reply = AppendResponse(
            self._term, True, plan.match_index, Height(0), self._commit, signatures
        )
        self._out.append(Send(leader, reply))

    def _plan_append(self, message: AppendEntries) -> _AppendPlan | int | None:
        """The §5.3 decision, without changing anything: a plan, a hint (reject) or ``None``."""
        log = self._log
        prev, prev_term = message.prev_log_index, message.prev_log_term
        entries: Sequence[Block] = message.entries
        snapshot = log.snapshot_index
        if prev < snapshot:  # our committed prefix already covers part of the message
            skip = snapshot - prev
            if skip <= len(entries) and entries[skip - 1].block_hash != log.snapshot_hash:
                return None  # disagrees with a committed block
            entries, prev, prev_term = entries[skip:], snapshot, log.snapshot_term
        elif prev > log.last_index:
            return Height(log.last_index + 1)
        elif log.term_at(prev) != prev_term:
            if prev <= self._commit:
                return None  # disagrees with a committed block
            return max(log.first_index_of_term_run(prev), self._commit + 1)
        if entries and entries[0].header.prev_hash != log.hash_at(prev):
            return None  # same term, different block: not a correct leader's log
        truncate_from: int | None = None
        new: Sequence[Block] = ()
        for offset, block in enumerate(entries):
            height = prev + 1 + offset
            if height > log.last_index:
                new = entries[offset:]
                break
            if log.term_at(height) != entry_term(block):  # the first conflict: delete from here
                if height <= self._commit:
                    return None
                truncate_from, new = height, entries[offset:]
                break
            if log.hash_at(height) != block.block_hash:
                return None
        end = prev + len(entries)
        if PLANTED_TRUNCATE_WITHOUT_CONFLICT in self.config.planted_bugs and end < log.last_index:
            start = max(prev + 1, self._commit + 1)  # the bug: ignore whether anything conflicts
            if truncate_from is None or start < truncate_from:
                truncate_from, new = start, entries[start - prev - 1 :]
        for block in new:
            if not self._entry_acceptable(block):
                return None
        return _AppendPlan(truncate_from, tuple(new), Height(max(end, snapshot)))

    def _entry_acceptable(self, block: Block) -> bool:
        header = block.header
        if header.domain != self.config.domain or header.epoch != RAFT_EPOCH:
            return False
        if header.proposer not in self._members:
            return False
        try:
            block.check_tx_root()
        except ValidationError:
            return False
        return True

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
        if self._sig_cache_term != self._term:
            self._sig_cache, self._sig_cache_term = {}, self._term
        signatures: list[tuple[Height, bytes]] = []
        for height in range(max(leader_commit, self._log.snapshot_index) + 1, match_index + 1):
            signature = self._sig_cache.get(height)
            if signature is None:
                statement = append_statement(
                    self.config.domain, self._term, Height(height), self._block_hash(height)
                )
                signature = sign_append(self.config.private_key, statement)
                self._sig_cache[height] = signature
            signatures.append((Height(height), signature))
        return tuple(signatures)

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

    # ------------------------------------------------------ commit, catch-up

    def _deliver(self, block: Block, certificate: QuorumCertificate) -> None:
        self._certs[block.height] = certificate
        self._commit, self._commit_hash = block.height, block.block_hash
        self._commit_term = entry_term(block)
        self._out.append(Deliver(block, certificate))

    def _after_commit(self) -> None:
        """Record the applied mark, forget what the commit made useless, compact the log."""
        self._persist(
            APPLIED_KEY, encode_applied(self._commit, self._commit_term, self._commit_hash)
        )
        for height in [h for h in self._sig_cache if h <= self._commit]:
            del self._sig_cache[height]
        if self._transfer is not None and self._transfer[0] <= self._commit:
            self._transfer = None
        if self._commit - self._log.snapshot_index >= 2 * self._keep:
            self._forget_entries(self._log.compact_to(self._commit - self._keep))
            for height in [h for h in self._certs if h <= self._log.snapshot_index]:
                del self._certs[height]

    def _request_transfer(self, peers: tuple[NodeId, ...]) -> None:
        """Ask the host for committed blocks from ``commit + 1`` (at most once per timeout)."""
        start = self._commit + 1
        if self._transfer is not None:
            last_from, asked_ms = self._transfer
            if last_from == start and self._now - asked_ms < self.config.request_timeout_ms:
                return
        self._transfer = (start, self._now)
        self._out.append(RequestStateTransfer(Height(start), peers))

    def _on_blocks_fetched(self, blocks: Sequence[tuple[Block, QuorumCertificate]]) -> None:
        accepted: list[tuple[Block, QuorumCertificate]] = []
        height, head = self._commit, self._commit_hash
        for block, certificate in blocks:
            if block.height <= height:
                continue
            if block.height != height + 1 or block.header.prev_hash != head:
                self._ignore("fetched-block-out-of-order")
                break
            try:
                block.check_tx_root()
                check_certificate_names(block, certificate)
                check_certificate_signatures(certificate, self._voters, self.config.domain)
            except ValidationError:
                self._ignore("fetched-block-invalid")
                break
            mine = self._log.hash_at(block.height) if self._log.has(block.height) else None
            if mine is not None and mine != block.block_hash and self._role is Role.LEADER:
                self._ignore("fetched-block-conflicts-with-leader-log")
                break
            accepted.append((block, certificate))
            height, head = block.height, block.block_hash
        if not accepted:
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
        self._sigs = {h: s for h, s in self._sigs.items() if h > self._commit}
        self._after_commit()
        if self._role is Role.LEADER:
            self._drive_leader(flush=True, changed=True)

    # ------------------------------------------------------ client requests

    def _on_transactions(self, txs: Iterable[Transaction]) -> None:
        limit = PENDING_LIMIT_BATCHES * max(1, self.config.max_batch_size)
        for tx in txs:
            if tx.tx_hash in self._pending or tx.tx_hash in self._in_log:
                self._ignore("duplicate-transaction")
            elif len(self._pending) >= limit:
                self._ignore("pending-full")
            elif self._role is Role.LEADER and not self.config.validate_transaction(tx):
                self._ignore("invalid-transaction")
            else:
                self._pending[tx.tx_hash] = tx
        if self._role is Role.LEADER:
            self._drive_leader(flush=False)
        elif len(self._pending) >= max(1, self.config.max_batch_size):
            self._flush_forward()
        elif self._pending and not self._batch_timer_set:
            self._batch_timer_set = True
            self._out.append(SetTimer(BATCH_TIMER, max(0, self.config.max_batch_wait_ms)))

    def _flush_forward(self) -> None:
        """A non-leader passes its pending transactions to the leader it knows."""
        if self._role is Role.LEADER or self._leader is None or not self._pending:
            return
        txs = tuple(self._pending.values())
        self._pending.clear()
        for start in range(0, len(txs), MAX_FORWARD_TXS):
            chunk = txs[start : start + MAX_FORWARD_TXS]
            self._out.append(Send(self._leader, ForwardRequests(chunk)))
