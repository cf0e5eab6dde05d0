"""Pending client requests and how they become batches.

Owns :class:`RequestPool`, the per-replica memory of transactions that are
known but not yet committed, used by every leader-based protocol here:

* the leader takes the oldest pending transactions as the next block's batch
  (:meth:`RequestPool.take_batch`), up to ``max_batch_size``; a batch is cut
  when it is full or when the oldest pending transaction has waited
  ``max_batch_wait_ms`` (:meth:`RequestPool.oldest_pending_ms`);
* a follower keeps the transactions it received (and those the leader
  proposed, :meth:`RequestPool.mark_proposed`) so that it can tell a leader
  that ignores requests from one that is merely busy;
* after a leader change, proposals that were abandoned go back to the front of
  the queue (:meth:`RequestPool.requeue_proposed`).

Invariants:

* a transaction (by hash) is in at most one of *pending*, *proposed*, or the
  bounded memory of *recently committed* hashes; once committed it is never
  accepted again while remembered;
* pending transactions leave in arrival order (requeued ones first);
* the pool never holds more than ``capacity`` transactions; extra ones are
  refused (the client retries).

The pool does not validate transactions (the replica does, once, before
adding) and does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from belep.ledger.block import Digest, Transaction

__all__ = ["RequestPool"]

#: Default bound on pending + proposed transactions per replica.
DEFAULT_CAPACITY = 200_000
#: Default number of committed transaction hashes remembered to refuse replays.
DEFAULT_COMMITTED_MEMORY = 200_000


class RequestPool:
    """Transactions known to this replica and not yet committed."""

    __slots__ = ("_capacity", "_committed", "_committed_memory", "_pending", "_proposed")

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        committed_memory: int = DEFAULT_COMMITTED_MEMORY,
    ) -> None:
        self._capacity = capacity
        self._committed_memory = committed_memory
        # tx hash -> (transaction, arrival time in ms); insertion order = queue order
        self._pending: OrderedDict[Digest, tuple[Transaction, int]] = OrderedDict()
        self._proposed: dict[Digest, tuple[Transaction, int]] = {}
        self._committed: OrderedDict[Digest, None] = OrderedDict()

    # -- queries ------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def proposed_count(self) -> int:
        return len(self._proposed)

    def has_work(self) -> bool:
        """True while some known transaction is not committed."""
        return bool(self._pending) or bool(self._proposed)

    def is_known(self, tx_hash: Digest) -> bool:
        """Pending, proposed or recently committed."""
        return tx_hash in self._pending or tx_hash in self._proposed or tx_hash in self._committed

    def oldest_pending_ms(self) -> int | None:
        """Arrival time of the transaction at the head of the queue."""
        for _tx, arrived in self._pending.values():
            return arrived
        return None

    def pending_older_than(self, cutoff_ms: int, limit: int) -> tuple[Transaction, ...]:
        """Up to ``limit`` pending transactions that arrived at or before ``cutoff_ms``."""
        out: list[Transaction] = []
        for tx, arrived in self._pending.values():
            if arrived > cutoff_ms or len(out) >= limit:
                break
            out.append(tx)
        return tuple(out)

    # -- changes ------------------------------------------------------------------

    def add(self, tx: Transaction, now_ms: int) -> bool:
        """Queue ``tx``; False if it is already known or the pool is full."""
        h = tx.tx_hash
        if self.is_known(h):
            return False
        if len(self._pending) + len(self._proposed) >= self._capacity:
            return False
        self._pending[h] = (tx, now_ms)
        return True

    def take_batch(self, max_count: int) -> tuple[Transaction, ...]:
        """Move up to ``max_count`` oldest pending transactions to *proposed*."""
        out: list[Transaction] = []
        pending = self._pending
        proposed = self._proposed
        while pending and len(out) < max_count:
            h, entry = pending.popitem(last=False)
            proposed[h] = entry
            out.append(entry[0])
        return tuple(out)

    def mark_proposed(self, txs: Iterable[Transaction], now_ms: int) -> None:
        """Record that a leader proposed ``txs`` (they leave the queue)."""
        pending = self._pending
        proposed = self._proposed
        committed = self._committed
        for tx in txs:
            h = tx.tx_hash
            if h in proposed or h in committed:
                continue
            entry = pending.pop(h, None)
            proposed[h] = entry if entry is not None else (tx, now_ms)

    def requeue_proposed(self, keep: Iterable[Transaction] = ()) -> None:
        """Abandoned proposals go back to the front of the queue, except ``keep``'s."""
        kept = {tx.tx_hash for tx in keep}
        back = [(h, e) for h, e in self._proposed.items() if h not in kept]
        self._proposed = {h: e for h, e in self._proposed.items() if h in kept}
        for h, entry in sorted(back, key=lambda item: item[1][1], reverse=True):
            self._pending[h] = entry
            self._pending.move_to_end(h, last=False)

    def on_committed(self, txs: Iterable[Transaction]) -> None:
        """Forget ``txs`` and remember their hashes as committed."""
        committed = self._committed
        for tx in txs:
            h = tx.tx_hash
            self._pending.pop(h, None)
            self._proposed.pop(h, None)
            committed[h] = None
        while len(committed) > self._committed_memory:
            committed.popitem(last=False)
