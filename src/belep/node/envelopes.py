"""Envelopes parsed before ordering, kept for execution after it.

Owns :class:`ParsedEnvelopes`: a node parses every transaction it validates
(:class:`~belep.ledger.envelope.EnvelopeValidator`, at submission and when a
replica checks a proposed block) and executes it moments later
(:mod:`belep.node.domain`); parsing the canonical CBOR again was most of
execution's cost. The validator hands each parsed envelope here
(``on_parsed``) and the application parses through :meth:`ParsedEnvelopes.parse`,
which returns the kept one for the same transaction hash — the same bytes,
so the same envelope: execution stays deterministic.

Bounded (:data:`CAPACITY` envelopes, least recently used out) and safe to
use from the event loop (validation) and the execution thread at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from belep.ledger.block import Digest, Transaction
from belep.ledger.envelope import Envelope, parse_envelope

__all__ = ["CAPACITY", "ParsedEnvelopes"]

#: Envelopes kept: tens of blocks at saturation (each holds ~1-2 KB).
CAPACITY = 20_000


class ParsedEnvelopes:
    """The latest parsed envelopes, by transaction hash."""

    __slots__ = ("_capacity", "_items", "_lock", "hits", "misses")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = max(1, capacity)
        self._items: OrderedDict[Digest, Envelope] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, tx_hash: Digest, envelope: Envelope) -> None:
        with self._lock:
            self._items[tx_hash] = envelope
            self._items.move_to_end(tx_hash)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def parse(self, tx: Transaction) -> Envelope:
        """The envelope of ``tx``: the kept one, or parsed now (raises like ``parse_envelope``)."""
        with self._lock:
            kept = self._items.pop(tx.tx_hash, None)
        if kept is not None:
            self.hits += 1
            return kept
        self.misses += 1
        return parse_envelope(tx.payload)

    def __len__(self) -> int:
        return len(self._items)
