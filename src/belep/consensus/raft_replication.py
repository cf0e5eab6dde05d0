"""Raft's log-replication rules as functions over the log: no effects, no clock.

Owns the two decisions of log replication (``docs/spec/raft.md`` §Log
replication), kept apart from :class:`~belep.consensus.raft.RaftReplica` so
each reads like the spec:

* the follower's :func:`plan_append` — the consistency check and the §5.3
  conflict rule, computed *before* anything changes, so an invalid message
  can be ignored without a trace;
* the leader's per-peer :class:`Progress` (nextIndex, matchIndex, probing or
  pipelining) and :func:`plan_replication`, which picks what one peer gets
  next: entries within the window and usable certificates, a heartbeat, or
  an :class:`InstallSnapshot`.

Invariants: :func:`plan_append` never plans to delete an entry at or below
the commit index, and — unless the test-only planted bug is switched on —
deletes only from the first entry whose term conflicts with the message.
A peer's ``match_index`` never decreases within a leader's term.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.raft_cert import RAFT_EPOCH
from belep.consensus.raft_log import RaftLog
from belep.consensus.raft_messages import AppendEntries, InstallSnapshot, Term, entry_term
from belep.errors import ValidationError
from belep.ledger.block import Block, DomainId, Height, NodeId, QuorumCertificate


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """How an acceptable AppendEntries changes the follower's log."""

    truncate_from: int | None  # delete entries from this height on (the first conflict)
    new_entries: tuple[Block, ...]  # then append these
    match_index: Height  # the last height the message proved to match the leader's log


def entry_acceptable(block: Block, domain: DomainId, members: Collection[NodeId]) -> bool:
    """A block a follower may store: this domain, epoch 0, a member's, transactions root intact."""
    header = block.header
    if header.domain != domain or header.epoch != RAFT_EPOCH or header.proposer not in members:
        return False
    try:
        block.check_tx_root()
    except ValidationError:
        return False
    return True


def plan_append(
    log: RaftLog,
    commit_index: int,
    message: AppendEntries,
    *,
    domain: DomainId,
    members: Collection[NodeId],
    truncate_without_conflict: bool = False,
) -> AppendPlan | Height | None:
    """The follower's decision on ``message``, without changing anything.

    Returns an :class:`AppendPlan` if the consistency check passes, the
    height the leader should try next (a ``Height``) if it fails, and
    ``None`` if the message is invalid: it contradicts a committed entry,
    holds a different block under a matching term, or carries a block that
    :func:`entry_acceptable` refuses.
    """
    prev, prev_term = message.prev_log_index, message.prev_log_term
    entries: Sequence[Block] = message.entries
    snapshot = log.snapshot_index
    if prev < snapshot:  # our committed prefix already covers part of the message
        skip = snapshot - prev
        if skip <= len(entries) and entries[skip - 1].block_hash != log.snapshot_hash:
            return None
        entries, prev, prev_term = entries[skip:], snapshot, log.snapshot_term
    elif prev > log.last_index:
        return Height(log.last_index + 1)
    elif log.term_at(prev) != prev_term:
        if prev <= commit_index:
            return None
        return Height(max(log.first_index_of_term_run(prev), commit_index + 1))
    if entries and entries[0].header.prev_hash != log.hash_at(prev):
        return None
    truncate_from: int | None = None
    new: Sequence[Block] = ()
    for offset, block in enumerate(entries):
        height = prev + 1 + offset
        if height > log.last_index:
            new = entries[offset:]
            break
        if log.term_at(height) != entry_term(block):  # §5.3: the first conflict, delete from here
            if height <= commit_index:
                return None
            truncate_from, new = height, entries[offset:]
            break
        if log.hash_at(height) != block.block_hash:  # same index and term must be the same entry
            return None
    end = prev + len(entries)
    if truncate_without_conflict and end < log.last_index:
        # The planted bug: delete everything after the message, conflict or not.
        start = max(prev + 1, commit_index + 1)
        if truncate_from is None or start < truncate_from:
            truncate_from, new = start, entries[start - prev - 1 :]
    if not all(entry_acceptable(block, domain, members) for block in new):
        return None
    return AppendPlan(truncate_from, tuple(new), Height(max(end, snapshot)))


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower or observer (thesis §3.5 nextIndex and matchIndex).

    A peer is *probing* (one batch at a time, waiting for the answer) after the
    leader's election and after a rejection, and *pipelining* (up to ``window``
    blocks past ``match_index`` in flight) once an append succeeded.
    ``cert_next`` is the next height whose certificate the peer should get.
    """

    next_index: int
    cert_next: int
    match_index: int = 0
    probing: bool = True
    stall_mark: int = -1
    commit_index: int | None = None
    commit_stall_mark: int = -1
    snapshot_sent_ms: int | None = None

    def on_heartbeat(self, last_index: int, commit_index: int) -> None:
        """Go back to probing, and resend certificates, if nothing advanced for a whole interval."""
        if not self.probing:
            if self.match_index == self.stall_mark and self.match_index < last_index:
                self.probing = True
                self.next_index = self.match_index + 1
            self.stall_mark = self.match_index
        known = self.commit_index
        if known is not None and known == self.commit_stall_mark and known < commit_index:
            self.cert_next = known + 1
        self.commit_stall_mark = -1 if known is None else known

    def note_commit(self, commit_index: int) -> None:
        """The peer reported its committed height."""
        if self.commit_index is None:
            self.cert_next = commit_index + 1
        else:
            self.cert_next = max(self.cert_next, commit_index + 1)
        self.commit_index = max(self.commit_index or 0, commit_index)

    def on_success(self, match_index: int) -> None:
        self.match_index = max(self.match_index, match_index)
        self.next_index = max(self.next_index, self.match_index + 1)
        self.probing = False

    def on_reject(self, hint_index: int) -> None:
        hint = min(self.next_index, max(hint_index, 1))
        self.next_index = max(self.match_index + 1, hint)
        self.probing = True

    def on_snapshot_reply(self, commit_index: int) -> None:
        """A committed prefix matches every later leader's log (Leader Completeness)."""
        self.on_success(commit_index)
        self.probing = True


def plan_replication(
    progress: Progress,
    log: RaftLog,
    *,
    term: Term,
    commit_index: Height,
    certificates: Mapping[int, QuorumCertificate],
    window: int,
    heartbeat: bool,
    probe: bool,
    now_ms: int,
    snapshot_interval_ms: int,
) -> AppendEntries | InstallSnapshot | None:
    """What the peer of ``progress`` gets now (updating ``progress``), or ``None``.

    A heartbeat or probe always yields a message; otherwise only new entries
    or usable certificates do. A peer that needs compacted entries or
    certificates gets an :class:`InstallSnapshot`, at most once per
    ``snapshot_interval_ms``.
    """
    snapshot = log.snapshot_index
    if progress.next_index <= snapshot or progress.cert_next <= snapshot:
        sent = progress.snapshot_sent_ms
        if sent is not None and now_ms - sent < snapshot_interval_ms:
            return None
        progress.snapshot_sent_ms = now_ms
        return InstallSnapshot(term, snapshot, log.snapshot_term, log.snapshot_hash)
    window = max(1, window)
    if progress.probing:
        if not (heartbeat or probe):
            return None
        low, high = progress.next_index, min(log.last_index, progress.next_index + window - 1)
    else:
        low, high = progress.next_index, min(log.last_index, progress.match_index + window)
    entries = log.entries_between(low, high) if low <= high else ()
    prev = low - 1 if (entries or progress.probing) else max(progress.match_index, snapshot)
    reach = max(progress.match_index, high if entries else 0)
    cert_high = min(commit_index, progress.cert_next + window - 1, reach)
    usable = tuple(certificates[h] for h in range(progress.cert_next, cert_high + 1))
    if not (entries or usable or heartbeat or probe):
        return None
    if entries and not progress.probing:
        progress.next_index = high + 1
    if usable:
        progress.cert_next = cert_high + 1
    prev_term = log.term_at(prev)
    if prev_term is None:  # unreachable: prev >= snapshot point by the checks above
        raise ValidationError("no term for the previous position", found=prev)
    return AppendEntries(term, Height(prev), prev_term, entries, commit_index, usable)
