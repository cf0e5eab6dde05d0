"""Checking HPBFT commit certificates from a chain alone: which seats, at which height.

Owns the verifier's side of ``docs/spec/hpbft.md`` §Chain verification:

* :func:`replay_history` — replay the configuration transactions of a chain
  from the genesis (epoch 0: the local validators hold the seats) to the
  history in force after any height, applying verified revival records where
  the revived epoch begins;
* :func:`scan_revivals` — the revival records of a chain (a revived epoch
  re-certifies blocks *below* the block that records it, so a verifier
  reads the records first; each is self-authenticating through the parent's
  commit certificate);
* :func:`check_certificate` — the certificate of the block at ``h`` is a
  ``commit`` certificate of an epoch that covers ``h``, signed by ``2f+1``
  of that epoch's seats (never a standby's signature);
* :class:`HistoryCache` and :func:`make_certificate_rule` — the same check for
  a chain that grows block by block (the simulator's invariant checker),
  replaying each block once.

How chain verification plugs in: ``belep.ledger.verify.verify_chain`` asks a
committee source for the voters of a height;
:func:`committee_source_for_chain` builds one from the chain itself (the
voters depend on the height *and* the certificate's epoch, which differ only
where a revived epoch re-certified blocks, so it answers with the epoch that
signed the stored certificate when that epoch covers the height).

No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from belep.consensus.certificates import SignatureCache, verify_certificate
from belep.consensus.hpbft_config import (
    COMMIT_KIND,
    ConfigHistory,
    EpochConfig,
    RevivalRecord,
    ReviveOrder,
    check_revival,
    decode_config_tx,
    genesis_history,
    is_config_payload,
)
from belep.consensus.types import ReplicaConfig
from belep.crypto import PublicKey
from belep.errors import ChainError, ValidationError
from belep.ledger.block import Block, Digest, DomainId, Epoch, Height, NodeId, QuorumCertificate
from belep.ledger.genesis import Committee, Genesis, Member

__all__ = [
    "HistoryCache",
    "check_certificate",
    "committee_at",
    "committee_source_for_chain",
    "history_for_certificate",
    "make_certificate_rule",
    "replay_history",
    "scan_revivals",
]

CertificateRule = Callable[[ReplicaConfig, Sequence[Block], Block, QuorumCertificate], None]


def scan_revivals(
    blocks: Iterable[Block],
    *,
    parent: DomainId,
    parent_voters: Mapping[NodeId, PublicKey],
    cache: SignatureCache | None = None,
) -> list[RevivalRecord]:
    """Every revival record in ``blocks`` whose parent proof verifies (others are skipped)."""
    cache = cache or SignatureCache()
    records = []
    for block in blocks:
        for tx in block.transactions:
            if not is_config_payload(tx.payload):
                continue
            try:
                change = decode_config_tx(tx.payload)
                if isinstance(change, RevivalRecord):
                    change.order.verify(parent=parent, parent_voters=parent_voters, cache=cache)
                    records.append(change)
            except ValidationError:
                continue
    return records


def _apply_revivals(
    history: ConfigHistory, pending: list[RevivalRecord], height: int
) -> ConfigHistory:
    """Apply the pending revivals whose revived epoch begins at or below ``height``."""
    while pending and pending[0].base_height < height:
        record = pending.pop(0)
        if record.order.decision.epoch == history.current.epoch:
            history = history.with_revival(record)
    return history


def replay_history(
    start: ConfigHistory,
    blocks: Iterable[Block],
    revivals: Iterable[RevivalRecord] = (),
) -> ConfigHistory:
    """The history after replaying ``blocks`` (heights 1, 2, … in order) from ``start``.

    ``revivals`` (verified, e.g. by :func:`scan_revivals`) are applied when the
    replay reaches the first height their revived epoch certifies.
    """
    pending = sorted(revivals, key=lambda r: r.base_height)
    history = start
    for block in blocks:
        history = _apply_revivals(history, pending, block.height)
        history = history.after_block(block)
    return _apply_revivals(history, pending, 1 << 62)


def check_certificate(
    history: ConfigHistory,
    keys: Mapping[NodeId, PublicKey],
    block: Block,
    certificate: QuorumCertificate,
    cache: SignatureCache,
) -> None:
    """Raise unless ``certificate`` commits ``block`` under ``history`` (the history before it)."""
    s = certificate.statement
    if s.block_hash != block.block_hash or s.height != block.height:
        raise ChainError(
            "certificate certifies another block",
            expected=(block.height, block.block_hash),
            found=(s.height, s.block_hash),
        )
    config = history.for_certificate(block.height, s.epoch)
    if block.header.epoch > s.epoch:
        raise ChainError(
            "block of a later epoch than its certificate",
            expected=f"<= {s.epoch}",
            found=block.header.epoch,
            where=f"height {block.height}",
        )
    verify_certificate(
        certificate,
        voters=config.voter_keys(keys),
        quorum=config.quorum,
        cache=cache,
        kind=COMMIT_KIND,
        domain=history.domain,
        epoch=Epoch(s.epoch),
    )


def committee_at(
    history_before: ConfigHistory, keys: Mapping[NodeId, PublicKey], height: int, epoch: int
) -> tuple[dict[NodeId, PublicKey], int]:
    """The voters and quorum a certificate of ``epoch`` at ``height`` needs."""
    config: EpochConfig = history_before.for_certificate(height, epoch)
    return config.voter_keys(keys), config.quorum


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
            history = _apply_revivals(history, pending, h)
            history = history.after_block(chain[h - 1])
            self._after[chain[h - 1].block_hash] = history
            if len(self._after) > self._capacity:
                self._after.popitem(last=False)
        return _apply_revivals(history, pending, height)


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
                genesis_history(config.domain, config.members, config.observers)
            )
        history = history_for_certificate(
            cache, chain, block.height, cert.statement.epoch, orders()
        )
        check_certificate(history, config.keys, block, cert, signatures)

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


def committee_source_for_chain(
    genesis: Genesis,
    chain: Iterable[tuple[Block, QuorumCertificate]],
    *,
    parent_voters: Mapping[NodeId, PublicKey] | None = None,
) -> Callable[[Height], Committee]:
    """A ``belep.ledger.verify`` committee source for an HPBFT chain.

    Replays the chain's configuration (revival records first, verified against
    the parent's validators — by default the genesis observers) and answers,
    for each height, the committee of the epoch that signed the certificate
    stored there — provided that epoch covers the height; otherwise (and past
    the end of ``chain``) the epoch in force. Decoding stops at the first block
    it cannot replay; ``verify_chain`` reports the finding there.
    """
    keys = {m.node_id: m.key for m in (*genesis.voters, *genesis.observers)}
    start = genesis_history(
        genesis.domain,
        tuple(m.node_id for m in genesis.voters),
        tuple(m.node_id for m in genesis.observers),
    )
    pairs = list(chain)
    voters = parent_voters or {m.node_id: m.key for m in genesis.observers}
    records: list[RevivalRecord] = []
    if genesis.parent is not None:
        records = scan_revivals((b for b, _ in pairs), parent=genesis.parent, parent_voters=voters)
    pending = sorted(records, key=lambda r: r.base_height)
    answers: dict[int, EpochConfig] = {}
    history = start
    try:
        for block, qc in pairs:
            history = _apply_revivals(history, pending, block.height)
            signed = history.epoch(qc.statement.epoch)
            answers[block.height] = (
                signed if signed is not None and signed.covers(block.height) else history.current
            )
            history = history.after_block(block)
    except ValidationError:
        pass
    last = history

    def source(height: Height) -> Committee:
        config = answers.get(height, last.current)
        members = tuple(Member(seat, keys[seat]) for seat in config.seats)
        return Committee(members, config.quorum, COMMIT_KIND)

    return source
