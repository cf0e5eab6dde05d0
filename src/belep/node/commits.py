"""Commit tracking: what this node accepted and is still uncommitted, who waits for it.

Owns :class:`CommitTracker`. The submission endpoint records each
transaction it accepted (:meth:`CommitTracker.submitted`) and may wait for
commits (:meth:`CommitTracker.watch` then :meth:`CommitTracker.wait_all`); the
domain host reports every committed block (:meth:`CommitTracker.committed`),
which resolves the waiters and yields submit-to-commit latencies for the
metrics.

Per domain it keeps the *backlog*: transactions accepted here and not yet
committed, oldest first. Its size and the age of its oldest entry
(:meth:`CommitTracker.backlog`) are what admission control reads
(:mod:`belep.node.admission`). It also hands back transactions that stay
uncommitted for too long (:meth:`CommitTracker.overdue`), once each, so the
node can retransmit them to the domain's other voters — what a PBFT client
does when its primary ignores it (Castro & Liskov §4.1), done here on the
client's behalf.

Invariants:

* everything is bounded: at most :data:`MAX_TRACKED` backlog entries per
  domain (the oldest are forgotten first), entries older than
  :data:`ABANDON_AFTER_S` are dropped (counted in ``abandoned``), waiters are
  removed when their wait ends, so a client that never comes back or a
  transaction that never commits costs nothing forever;
* :meth:`overdue` costs amortised O(1) per transaction, whatever the backlog
  (each submission is examined once);
* runs on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from belep.ledger.block import Block, Digest, DomainId, Transaction

__all__ = [
    "ABANDON_AFTER_S",
    "MAX_TRACKED",
    "RATE_WINDOW_S",
    "Backlog",
    "CommitInfo",
    "CommitTracker",
]

#: Most uncommitted submissions remembered per domain.
MAX_TRACKED = 100_000
#: A submission still uncommitted after this long is no longer tracked: it was relayed long
#: ago, and an entry that may never commit (its domain lost its quorum, or a Byzantine
#: primary dropped it) must not hold admission control shut forever.
ABANDON_AFTER_S = 120.0
#: The commit rate of a backlog is measured over this many recent seconds.
RATE_WINDOW_S = 2.0


@dataclass(frozen=True, slots=True)
class CommitInfo:
    domain: DomainId
    height: int
    index: int
    block_hash: Digest


@dataclass(frozen=True, slots=True)
class Backlog:
    """Transactions accepted by this node and not yet committed, in one domain."""

    count: int
    oldest_age_s: float
    """Age of the oldest one (0 when there is none)."""
    commit_rate: float = 0.0
    """Transactions of this node's backlog committed per second, over the last
    :data:`RATE_WINDOW_S` seconds."""


@dataclass(slots=True)
class _Pending:
    since: float
    tx: Transaction


@dataclass(slots=True)
class _Domain:
    pending: OrderedDict[Digest, _Pending]
    """Accepted here, not committed; submission order."""
    unexamined: deque[tuple[float, Digest]]
    """Every submission once, for :meth:`CommitTracker.overdue`; submission order."""
    commits: deque[tuple[float, int]]
    """(time, how many of the backlog committed) per block, the last RATE_WINDOW_S."""
    recent: int = 0
    """Sum of the counts in ``commits``."""


class CommitTracker:
    """Backlogs, waiters and submission times by transaction hash."""

    def __init__(
        self,
        on_latency: Callable[[DomainId, float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._domains: dict[DomainId, _Domain] = {}
        self._waiters: dict[Digest, list[asyncio.Future[CommitInfo]]] = {}
        self._on_latency = on_latency
        self._clock = clock
        self.abandoned = 0
        """Submissions dropped by :data:`ABANDON_AFTER_S` or the :data:`MAX_TRACKED` bound."""

    def _domain(self, domain: DomainId) -> _Domain:
        found = self._domains.get(domain)
        if found is None:
            found = self._domains[domain] = _Domain(OrderedDict(), deque(), deque())
        return found

    # ------------------------------------------------------------------ backlog

    def submitted(self, domain: DomainId, tx: Transaction) -> None:
        """``tx`` was accepted here for ``domain`` (a repeat of a tracked one is ignored)."""
        entry = self._domain(domain)
        if tx.tx_hash in entry.pending:
            return
        now = self._clock()
        entry.pending[tx.tx_hash] = _Pending(now, tx)
        entry.unexamined.append((now, tx.tx_hash))
        while len(entry.pending) > MAX_TRACKED:
            entry.pending.popitem(last=False)
            self.abandoned += 1
        while len(entry.unexamined) > MAX_TRACKED:
            entry.unexamined.popleft()

    def backlog(self, domain: DomainId) -> Backlog:
        """The domain's backlog here, after dropping entries too old to track."""
        entry = self._domains.get(domain)
        if entry is None:
            return Backlog(0, 0.0)
        now = self._clock()
        commits = entry.commits
        while commits and now - commits[0][0] > RATE_WINDOW_S:
            entry.recent -= commits.popleft()[1]
        rate = entry.recent / RATE_WINDOW_S
        pending = entry.pending
        while pending:
            oldest = next(iter(pending.values()))
            if now - oldest.since < ABANDON_AFTER_S:
                return Backlog(len(pending), now - oldest.since, rate)
            pending.popitem(last=False)
            self.abandoned += 1
        return Backlog(0, 0.0, rate)

    def overdue(self, age_s: float, limit: int = 10_000) -> list[tuple[DomainId, Transaction]]:
        """Transactions pending for at least ``age_s``, each handed back once (oldest first)."""
        now = self._clock()
        found: list[tuple[DomainId, Transaction]] = []
        for domain, entry in self._domains.items():
            queue = entry.unexamined
            while queue and len(found) < limit and now - queue[0][0] >= age_s:
                _, tx_hash = queue.popleft()
                pending = entry.pending.get(tx_hash)
                if pending is not None:
                    found.append((domain, pending.tx))
        return found

    def committed(self, domain: DomainId, block: Block) -> None:
        entry = self._domains.get(domain)
        waiters = self._waiters
        if (entry is None or not entry.pending) and not waiters:
            return
        pending_map = entry.pending if entry is not None else {}
        now = self._clock()
        mine = 0
        for index, tx in enumerate(block.transactions):
            pending = pending_map.pop(tx.tx_hash, None)
            if pending is not None:
                mine += 1
                self._on_latency(domain, now - pending.since)
            futures = waiters.pop(tx.tx_hash, None)
            if futures:
                info = CommitInfo(domain, block.height, index, block.block_hash)
                for future in futures:
                    if not future.done():
                        future.set_result(info)
        if mine and entry is not None:
            entry.commits.append((now, mine))
            entry.recent += mine

    # ------------------------------------------------------------------ waiting

    def watch(self, tx_hash: Digest) -> asyncio.Future[CommitInfo]:
        """A future resolved when ``tx_hash`` commits; register it before yielding to the
        event loop after the check that the transaction is not committed yet, and pass it
        to :meth:`unwatch` when done with it (:meth:`wait_all` does both)."""
        future: asyncio.Future[CommitInfo] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(future)
        return future

    def unwatch(self, tx_hash: Digest, future: asyncio.Future[CommitInfo]) -> None:
        remaining = self._waiters.get(tx_hash)
        if remaining is None:
            return
        if future in remaining:
            remaining.remove(future)
        if not remaining:
            del self._waiters[tx_hash]

    async def wait_all(
        self, watched: Iterable[tuple[Digest, asyncio.Future[CommitInfo]]], timeout_s: float
    ) -> list[CommitInfo | None]:
        """The commits of the watched transactions that happen within ``timeout_s`` (one
        timer for all of them), in order; ``None`` for the others. Unwatches them all."""
        items = list(watched)
        try:
            futures = {future for _, future in items if not future.done()}
            if futures and timeout_s > 0:
                await asyncio.wait(futures, timeout=timeout_s)
            return [
                future.result() if future.done() and not future.cancelled() else None
                for _, future in items
            ]
        finally:
            for tx_hash, future in items:
                self.unwatch(tx_hash, future)

    async def wait(self, tx_hash: Digest, timeout_s: float) -> CommitInfo | None:
        """The commit of ``tx_hash`` if it happens within ``timeout_s``, else ``None``."""
        (found,) = await self.wait_all([(tx_hash, self.watch(tx_hash))], timeout_s)
        return found

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._waiters.values())
