"""Verification of blocks fetched from untrusted peers (state transfer).

Owns :func:`verify_fetched`. A replica that fell behind asks its host for
committed blocks with their commit certificates (``RequestStateTransfer``)
and gets them back as ``BlocksFetched``. Neither the host nor the peer that
served them is trusted: every block must

* sit at the next height and link by ``prev_hash`` to the block before it
  (the first one to the replica's last delivered block);
* belong to the replica's domain, with transactions matching its ``tx_root``;
* carry a certificate that commits it for the replica's committee — the
  ledger's one check, :func:`belep.ledger.certificate.check_block_certificate`
  (each signature verified once, through the
  :class:`~belep.ledger.certificate.SignatureCache`).

The verified prefix is returned with the first problem found (if any): each
verified block is committed on its own, so a bad block late in a batch does
not waste the good ones before it, and nothing after a bad block is used.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from belep.errors import ChainError, ValidationError
from belep.ledger.block import Block, Digest, DomainId, Height, QuorumCertificate
from belep.ledger.certificate import SignatureCache, check_block_certificate
from belep.ledger.genesis import Committee

__all__ = ["verify_fetched"]


def verify_fetched(
    fetched: Sequence[tuple[Block, QuorumCertificate]],
    *,
    next_height: Height,
    prev_hash: Digest,
    domain: DomainId,
    committee: Committee,
    cache: SignatureCache,
) -> tuple[list[tuple[Block, QuorumCertificate]], ValidationError | None]:
    """The longest verified prefix of ``fetched`` and the first error after it."""
    good: list[tuple[Block, QuorumCertificate]] = []
    expected_height = next_height
    expected_prev = prev_hash
    for block, certificate in fetched:
        try:
            _check_one(
                block,
                certificate,
                height=expected_height,
                prev_hash=expected_prev,
                domain=domain,
                committee=committee,
                cache=cache,
            )
        except ValidationError as exc:
            return good, exc
        good.append((block, certificate))
        expected_height = Height(expected_height + 1)
        expected_prev = block.block_hash
    return good, None


def _check_one(
    block: Block,
    certificate: QuorumCertificate,
    *,
    height: Height,
    prev_hash: Digest,
    domain: DomainId,
    committee: Committee,
    cache: SignatureCache,
) -> None:
    header = block.header
    where = f"fetched block at height {header.height}"
    if header.height != height:
        raise ChainError("fetched block at the wrong height", expected=height, found=header.height)
    if header.prev_hash != prev_hash:
        raise ChainError(
            "fetched block does not link", expected=prev_hash, found=header.prev_hash, where=where
        )
    if header.domain != domain:
        raise ChainError(
            "fetched block of another domain", expected=domain, found=header.domain, where=where
        )
    check_block_certificate(header, certificate, committee, cache=cache)
    block.check_tx_root()
