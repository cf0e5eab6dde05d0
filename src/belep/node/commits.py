"""Commit tracking: who is waiting for which transaction, and how long commits took.

Owns :class:`CommitTracker`. The submission endpoint records the time a
transaction was accepted (:meth:`CommitTracker.submitted`) and may wait for
its commit (:meth:`CommitTracker.wait`); the domain host reports every
committed block (:meth:`CommitTracker.committed`), which resolves the
waiters and yields submit-to-commit latencies for the metrics.

It also hands back transactions that stay uncommitted for too long
(:meth:`CommitTracker.overdue`), once each, so the node can retransmit them
to the domain's other voters — what a PBFT client does when its primary
ignores it (Castro & Liskov §4.1), done here on the client's behalf.

Invariants: both maps are bounded (the oldest submission records are
forgotten first; waiters are removed when they time out), so a client that
never comes back costs nothing forever. Runs on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from belep.ledger.block import Block, Digest, DomainId, Transaction

__all__ = ["CommitInfo", "CommitTracker"]

MAX_TRACKED = 100_000


@dataclass(frozen=True, slots=True)
class CommitInfo:
    domain: DomainId
    height: int
    index: int
    block_hash: Digest


@dataclass(slots=True)
class _Pending:
    since: float
    domain: DomainId
    tx: Transaction
    resent: bool = False


class CommitTracker:
    """Waiters and submission times by transaction hash."""

    def __init__(self, on_latency: Callable[[DomainId, float], None]) -> None:
        self._submitted: OrderedDict[Digest, _Pending] = OrderedDict()
        self._waiters: dict[Digest, list[asyncio.Future[CommitInfo]]] = {}
        self._on_latency = on_latency

    def submitted(self, domain: DomainId, tx: Transaction) -> None:
        if tx.tx_hash in self._submitted:
            return
        self._submitted[tx.tx_hash] = _Pending(time.monotonic(), domain, tx)
        if len(self._submitted) > MAX_TRACKED:
            self._submitted.popitem(last=False)

    def overdue(self, age_s: float, limit: int = 10_000) -> list[tuple[DomainId, Transaction]]:
        """Transactions pending for more than ``age_s`` and not handed back before (oldest first)."""
        now = time.monotonic()
        found: list[tuple[DomainId, Transaction]] = []
        for pending in self._submitted.values():
            if now - pending.since < age_s or len(found) >= limit:
                break
            if not pending.resent:
                pending.resent = True
                found.append((pending.domain, pending.tx))
        return found

    def committed(self, domain: DomainId, block: Block) -> None:
        submitted = self._submitted
        waiters = self._waiters
        if not submitted and not waiters:
            return
        now = time.monotonic()
        for index, tx in enumerate(block.transactions):
            pending = submitted.pop(tx.tx_hash, None)
            if pending is not None:
                self._on_latency(domain, now - pending.since)
            futures = waiters.pop(tx.tx_hash, None)
            if futures:
                info = CommitInfo(domain, block.height, index, block.block_hash)
                for future in futures:
                    if not future.done():
                        future.set_result(info)

    async def wait(self, tx_hash: Digest, timeout_s: float) -> CommitInfo | None:
        """The commit of ``tx_hash`` if it happens within ``timeout_s``, else ``None``."""
        future: asyncio.Future[CommitInfo] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            remaining = self._waiters.get(tx_hash)
            if remaining is not None:
                if future in remaining:
                    remaining.remove(future)
                if not remaining:
                    del self._waiters[tx_hash]

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._waiters.values())
