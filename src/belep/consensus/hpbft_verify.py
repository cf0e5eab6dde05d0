"""Checking HPBFT commit certificates of a chain that grows block by block.

Owns the in-flight side of ``docs/spec/hpbft.md`` §Chain verification (a
stored chain is checked by ``belep.ledger.verify.verify_chain`` with the
ledger's configuration history, ``belep.ledger.config``):

* :func:`check_certificate` — the certificate of the block at ``h`` commits it
  for the committee of the certificate's epoch, which must cover ``h``: the
  ledger's one check (:func:`belep.ledger.certificate.check_block_certificate`)
  with ``2f+1`` of that epoch's seats (never a standby's signature);
* :class:`HistoryCache`, :func:`history_for_certificate` and
  :func:`make_certificate_rule` — the history before each height of a chain
  the simulator's checker sees grow, replaying each block once; a revival
  decision known to have been delivered counts before the record that pins
  its range is committed.

No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from belep.consensus.types import ReplicaConfig
from belep.ledger.block import Block, Digest, Height, QuorumCertificate
from belep.ledger.certificate import SignatureCache, check_block_certificate
from belep.ledger.config import ConfigHistory, apply_revivals, check_revival, genesis_history
from belep.ledger.config_tx import RevivalRecord, ReviveOrder

__all__ = [
    "HistoryCache",
    "check_certificate",
    "history_for_certificate",
    "make_certificate_rule",
]

CertificateRule = Callable[[ReplicaConfig, Sequence[Block], Block, QuorumCertificate], None]


def check_certificate(
    history: ConfigHistory,
    block: Block,
    certificate: QuorumCertificate,
    cache: SignatureCache | None = None,
) -> None:
    """Raise unless ``certificate`` commits ``block`` under ``history`` (the history before it)."""
    committee = history.committee(block.height, certificate.statement.epoch)
    check_block_certificate(block.header, certificate, committee, cache=cache)


class HistoryCache:
    """Histories after each block (by hash, bounded), for a chain checked as it grows."""

    __slots__ = ("_after", "_capacity", "_genesis")

    def __init__(self, genesis: ConfigHistory, capacity: int = 4096) -> None:
        self._genesis = genesis
        self._capacity = capacity
        self._after: OrderedDict[Digest, ConfigHistory] = OrderedDict()

    def before(
        self, chain: Sequence[Block], height: int, revivals: Sequence[RevivalRecord] = ()
    ) -> ConfigHistory:
        """The history in force for the block at ``height`` (``chain`` holds heights 1 …)."""
        below = height - 1
        start = below
        history: ConfigHistory | None = None
        while start > 0:
            history = self._after.get(chain[start - 1].block_hash)
            if history is not None:
                break
            start -= 1
        if history is None:
            history = self._genesis
        pending = sorted(revivals, key=lambda r: r.base_height)
        for h in range(start + 1, below + 1):
            history = apply_revivals(history, pending, h)
            history = history.after_block(chain[h - 1])
            self._after[chain[h - 1].block_hash] = history
            if len(self._after) > self._capacity:
                self._after.popitem(last=False)
        return apply_revivals(history, pending, height)


def history_for_certificate(
    cache: HistoryCache,
    chain: Sequence[Block],
    height: int,
    epoch: int,
    orders: Sequence[ReviveOrder] = (),
) -> ConfigHistory:
    """The history to check a certificate of ``epoch`` at ``height`` on top of ``chain``.

    ``orders`` are revival decisions known to have been delivered: a
    certificate of the epoch a decision opens is checked against the
    decision's seats at any height the stalled epoch covered (the revival
    record that pins the exact range is committed only after the blocks it
    re-certifies).
    """
    history = cache.before(chain, height)
    if history.epoch(epoch) is None:
        history = _provisional_revival(history, orders, height, epoch)
    return history


def make_certificate_rule(
    orders: Callable[[], Sequence[ReviveOrder]] = lambda: (),
) -> CertificateRule:
    """The simulator's certificate rule for HPBFT (see :func:`history_for_certificate`)."""
    caches: dict[tuple[str, tuple[str, ...], tuple[str, ...]], HistoryCache] = {}
    signatures = SignatureCache()

    def rule(
        config: ReplicaConfig, chain: Sequence[Block], block: Block, cert: QuorumCertificate
    ) -> None:
        key = (config.domain, config.members, config.observers)
        cache = caches.get(key)
        if cache is None:
            cache = caches[key] = HistoryCache(
                genesis_history(config.domain, config.members, config.observers, keys=config.keys)
            )
        history = history_for_certificate(
            cache, chain, block.height, cert.statement.epoch, orders()
        )
        check_certificate(history, block, cert, signatures)

    return rule


def _provisional_revival(
    history: ConfigHistory, orders: Sequence[ReviveOrder], height: int, epoch: int
) -> ConfigHistory:
    current = history.current
    for order in orders:
        decision = order.decision
        if decision.epoch + 1 == epoch and decision.epoch == current.epoch:
            check_revival(current, decision, history.domain)
            record = RevivalRecord(
                order,
                Height(current.first_height - 1),
                order.header.block_hash,  # unused by the range check
                Height(height),
                order.header.block_hash,
            )
            return history.with_revival(record)
    return history
