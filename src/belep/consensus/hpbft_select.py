"""Which chain a new view (or a revived epoch) must re-propose: the prepare-certificate lock.

Owns two pure functions of ``docs/spec/hpbft.md`` §View change:

* :func:`check_report` — a :class:`ViewChange` or :class:`ReviveReport` is
  acceptable evidence: signed by its sender, its checkpoint certificate and
  every prepare certificate valid for the epoch's seats, one certificate per
  height, all above its checkpoint, and (when ``with_blocks``) every certified
  block present, at its height, with a matching transactions root;
* :func:`select_chain` — from a set of reports, the **designated chain**: the
  base is the highest checkpoint reported (or the epoch's base); then, height
  by height, the block of the highest-view prepare certificate reported there,
  as long as it links to the block chosen below it. The walk stops at the
  first height with no certificate or with a block that does not link, and
  after a block carrying a configuration transaction (nothing above one can
  be certified in the same epoch).

Why it is safe (proved in the spec): if a block was committed (a commit
certificate exists) at height ``h`` in view ``a``, then ``f+1`` correct seats
hold its view-``a`` prepare certificate and, because a seat votes *prepare*
for a block only once its parent holds a prepare certificate of the same
view, they also hold certificates for its whole ancestry; any ``2f+1``
reports include one of them, every higher-view certificate at those heights
certifies the same blocks, so the walk designates the committed block.

A certificate whose block is missing is an error (:class:`ProtocolViolation`),
never a reason to stop the walk early: stopping there could drop a committed
block.

No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.certificates import SignatureCache, verify_certificate
from belep.consensus.checkpoints import CHECKPOINT_KIND
from belep.consensus.hpbft_messages import (
    PREPARE_KIND,
    ReviveReport,
    ViewChange,
)
from belep.crypto import PublicKey
from belep.errors import ChainError, InvalidSignature, ProtocolViolation, UnknownSigner
from belep.ledger.block import Block, Digest, DomainId, Epoch, Height, NodeId, QuorumCertificate
from belep.ledger.config_tx import (
    find_config_tx,
)

__all__ = ["Designation", "check_report", "select_chain"]

Report = ViewChange | ReviveReport


@dataclass(frozen=True, slots=True)
class Designation:
    """The chain a new view re-proposes: ``blocks`` at heights ``base_height + 1 …``."""

    base_height: Height
    base_hash: Digest
    checkpoint: QuorumCertificate | None
    blocks: tuple[Block, ...]

    @property
    def top(self) -> Height:
        return Height(self.base_height + len(self.blocks))


def check_report(
    report: Report,
    *,
    domain: DomainId,
    epoch: Epoch,
    senders: Mapping[NodeId, PublicKey],
    voters: Mapping[NodeId, PublicKey],
    quorum: int,
    floor: int,
    cache: SignatureCache,
    with_blocks: bool,
) -> None:
    """Raise a :class:`~belep.errors.ValidationError` unless ``report`` is valid evidence.

    ``senders`` may send such a report; ``voters``/``quorum`` make certificates
    of ``epoch``; ``floor`` is the epoch's base height (nothing at or below it
    may be reported).
    """
    if report.epoch != epoch:
        raise ProtocolViolation("report of another epoch", expected=epoch, found=report.epoch)
    key = senders.get(report.sender)
    if key is None:
        raise UnknownSigner("report by a node that may not send one", found=report.sender)
    if not cache.is_valid(key, report.signing_bytes(), report.signature):
        raise InvalidSignature(f"invalid report signature by {report.sender}")
    low = floor
    if report.checkpoint is not None:
        s = report.checkpoint.statement
        if s.view != 0 or s.height <= floor:
            raise ProtocolViolation(
                "checkpoint certificate below the epoch base or with a view",
                expected=f"view 0, height > {floor}",
                found=(s.view, s.height),
            )
        verify_certificate(
            report.checkpoint,
            voters=voters,
            quorum=quorum,
            cache=cache,
            kind=CHECKPOINT_KIND,
            domain=domain,
            epoch=epoch,
        )
        low = s.height
    blocks = {b.block_hash: b for b in report.blocks} if with_blocks else {}
    last = -1
    for qc in report.prepared:
        s = qc.statement
        if s.height <= low or s.height <= last:
            raise ProtocolViolation(
                "prepared certificates must be above the checkpoint, one per height, ascending",
                expected=f"> {max(low, last)}",
                found=s.height,
            )
        last = s.height
        verify_certificate(
            qc,
            voters=voters,
            quorum=quorum,
            cache=cache,
            kind=PREPARE_KIND,
            domain=domain,
            epoch=epoch,
        )
        if with_blocks:
            block = blocks.get(s.block_hash)
            if block is None or block.height != s.height:
                raise ProtocolViolation(
                    "report lacks the block a certificate names", found=s.height
                )
            block.check_tx_root()
    if with_blocks and len(blocks) != len(report.prepared):
        raise ProtocolViolation(
            "report carries blocks no certificate names",
            expected=len(report.prepared),
            found=len(blocks),
        )


def select_chain(
    reports: Sequence[Report],
    *,
    base_height: Height,
    base_hash: Digest,
    blocks: Iterable[Block] = (),
) -> Designation:
    """The designated chain of ``reports`` (already checked with :func:`check_report`).

    Blocks are looked up by hash among ``blocks`` and the reports' own blocks.
    Raises :class:`ProtocolViolation` if a selected certificate's block is missing.
    """
    checkpoint: QuorumCertificate | None = None
    for report in reports:
        cp = report.checkpoint
        if (
            cp is not None
            and cp.statement.height > base_height
            and (checkpoint is None or cp.statement.height > checkpoint.statement.height)
        ):
            checkpoint = cp
    if checkpoint is not None:
        base_height = checkpoint.statement.height
        base_hash = checkpoint.statement.block_hash
    best: dict[int, QuorumCertificate] = {}
    for report in reports:
        for qc in report.prepared:
            s = qc.statement
            if s.height <= base_height:
                continue
            held = best.get(s.height)
            if held is None or _rank(qc) > _rank(held):
                best[s.height] = qc
    by_hash: dict[Digest, Block] = {b.block_hash: b for b in blocks}
    for report in reports:
        for b in report.blocks:
            by_hash.setdefault(b.block_hash, b)
    chain: list[Block] = []
    prev = base_hash
    height = base_height + 1
    while height in best:
        qc = best[height]
        block = by_hash.get(qc.statement.block_hash)
        if block is None:
            raise ProtocolViolation(
                "the block of a selected prepare certificate is missing", found=height
            )
        if block.header.prev_hash != prev:
            break
        chain.append(block)
        prev = block.block_hash
        height += 1
        try:
            if find_config_tx(block) is not None:
                break
        except ChainError:
            break
    return Designation(Height(base_height), base_hash, checkpoint, tuple(chain))


def _rank(qc: QuorumCertificate) -> tuple[int, bytes]:
    # Highest view wins; equal views cannot certify different blocks while at most f
    # seats are Byzantine, the hash only makes the choice deterministic regardless.
    return (qc.statement.view, qc.statement.block_hash)
