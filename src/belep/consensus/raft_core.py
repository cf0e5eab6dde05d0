"""The state of a Raft replica and the primitives every handler uses.

Owns :class:`RaftCore`: what a :class:`~belep.consensus.raft.RaftReplica`
remembers (term, vote, log, commit point, certificates, leader bookkeeping,
pending requests) and the small operations the handlers in
:mod:`belep.consensus.raft` are built from — persisting, arming timers,
appending or forgetting log entries, stepping down, delivering a committed
block, compacting the log, asking for state transfer, sending a peer what it
lacks. The handlers (what happens on each event) live in ``raft.py``.

Effects are collected in order in ``_out``: a ``Persist`` appended before a
``Send`` is durable before the message leaves (host contract), which is how
"persist before answering" is kept.

This module does no I/O, reads no clock and draws no random numbers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from belep.consensus.executed import ExecutionCursor
from belep.consensus.raft_cert import (
    AckCollector,
    AckSigner,
    raft_quorum,
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
    Term,
    entry_term,
)
from belep.consensus.raft_replication import Progress, plan_replication
from belep.consensus.raft_requests import RequestBuffer
from belep.consensus.types import (
    Block,
    CancelTimer,
    Deliver,
    Digest,
    Effect,
    Height,
    NodeId,
    Persist,
    QuorumCertificate,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerId,
)
from belep.crypto import sha256
from belep.encoding import encode
from belep.errors import ConfigError, ValidationError

__all__ = ["PLANTED_TRUNCATE_WITHOUT_CONFLICT", "RaftCore", "Role"]

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


class RaftCore:
    """A Raft member's (or non-voting observer's) state; handlers are in ``RaftReplica``."""

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
        self._requests = RequestBuffer(PENDING_LIMIT_BATCHES * max(1, config.max_batch_size))
        self._executed = ExecutionCursor(config.genesis_hash)
        for block in restored.entries:
            self._log.append(block)
        self._requests.note_log(restored.entries, +1)
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
        self._progress: dict[NodeId, Progress] = {}
        self._active: set[NodeId] = set()
        self._acks = AckCollector(config.domain, self._term, self._voters)  # leader only
        self._signer = AckSigner(config.domain, config.private_key)
        self._batch_timer_set = False
        self._transfer: tuple[int, int] | None = None  # (from_height, requested at ms)
        self._commit_at_beat = -1  # leader: commit index at the previous heartbeat
        self._token = 0
        self._now = 0
        self._out: list[Effect] = []

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
            self._commit, self._log.snapshot_index, entries, self._requests.hashes(),
            tuple(sorted(self._votes)), progress, tuple(sorted(self._active)),
            self._acks.summary(),
        )  # fmt: skip

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

    def _forget_entries(self, removed: Sequence[Block]) -> None:
        """Delete dropped entries from storage (highest first) and from the tx index."""
        for block in sorted(removed, key=lambda b: b.height, reverse=True):
            self._persist(log_key(block.height), None)
        self._requests.note_log(removed, -1)

    def _append_entry(self, block: Block) -> None:
        self._log.append(block)
        self._persist(log_key(block.height), encode_entry(block))
        self._requests.note_log((block,), +1)

    def _become_follower(self, term: Term, leader: NodeId | None) -> None:
        if term > self._term:
            self._term, self._vote = term, None
            self._persist_hard()
        if self._role is Role.LEADER:
            self._out.append(CancelTimer(HEARTBEAT_TIMER))
            self._out.append(CancelTimer(CHECK_QUORUM_TIMER))
            self._progress.clear()
            self._active.clear()
        if self._role is not Role.OBSERVER:
            self._role = Role.FOLLOWER
        self._leader = leader
        self._votes = set()
        self._arm_election_timer()

    def _sign_own(self, height: int) -> None:
        key = self.config.private_key
        self._acks.add_own(key, self._me, Height(height), self._block_hash(height))

    def _block_hash(self, height: int) -> Digest:
        digest = self._log.hash_at(height)
        if digest is None:
            raise ValidationError("no entry at height", found=height)
        return digest

    def _arm_batch_timer(self) -> None:
        if self._requests and not self._batch_timer_set:
            self._batch_timer_set = True
            self._out.append(SetTimer(BATCH_TIMER, max(0, self.config.max_batch_wait_ms)))

    def _send_append(self, peer: NodeId, *, heartbeat: bool = False, probe: bool = False) -> None:
        """Send ``peer`` what it lacks: entries within the window and certificates it can use."""
        message = plan_replication(
            self._progress[peer],
            self._log,
            term=self._term,
            commit_index=self._commit,
            certificates=self._certs,
            window=self.config.window,
            heartbeat=heartbeat,
            probe=probe,
            now_ms=self._now,
            snapshot_interval_ms=self.config.heartbeat_ms,
        )
        if message is not None:
            self._out.append(Send(peer, message))

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
        self._signer.forget_through(self._commit)
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
