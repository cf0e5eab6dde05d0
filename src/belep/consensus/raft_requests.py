"""Client transactions a Raft replica holds before they are in its log.

Owns :class:`RequestBuffer`: the pending transactions (in arrival order) and
a count of the transactions in the in-memory log, so a transaction already
pending or already in the log is not taken twice. The leader cuts pending
transactions into blocks; any other replica forwards them to the leader it
knows (``docs/spec/raft.md`` §Client requests).

Invariants: a transaction hash is pending at most once; the buffer never
holds more than ``capacity`` transactions (extra ones are refused and the
client retries). The buffer does not validate transactions (the leader does,
once, before adding) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from belep.ledger.block import Block, Digest, Transaction

__all__ = ["RequestBuffer"]


class RequestBuffer:
    """Pending transactions, plus an index of the transactions in the log."""

    __slots__ = ("_capacity", "_in_log", "_pending")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._pending: dict[Digest, Transaction] = {}
        self._in_log: dict[Digest, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def hashes(self) -> tuple[Digest, ...]:
        return tuple(self._pending)

    def is_known(self, tx: Transaction) -> bool:
        """Pending, or in a block of the in-memory log."""
        return tx.tx_hash in self._pending or tx.tx_hash in self._in_log

    def is_full(self) -> bool:
        return len(self._pending) >= self._capacity

    def add(self, tx: Transaction) -> None:
        self._pending[tx.tx_hash] = tx

    def take(self, limit: int) -> tuple[Transaction, ...]:
        """Remove and return up to ``limit`` oldest pending transactions."""
        batch = tuple(self._pending.values())[:limit]
        for tx in batch:
            del self._pending[tx.tx_hash]
        return batch

    def note_log(self, blocks: Iterable[Block], delta: int) -> None:
        """Blocks entered (``delta=+1``) or left (``-1``) the in-memory log."""
        for block in blocks:
            for tx in block.transactions:
                left = self._in_log.get(tx.tx_hash, 0) + delta
                if left > 0:
                    self._in_log[tx.tx_hash] = left
                else:
                    self._in_log.pop(tx.tx_hash, None)
