"""Raft's commit certificate: a majority of signed ``raft-append`` acknowledgements.

Owns the statement members sign, the quorum, and the one function that
checks a delivered Raft block against its certificate
(``docs/spec/raft.md`` §Certificate).

A member ``m`` signs ``VoteStatement("raft-append", domain, epoch 0, view=T,
height=h, block_hash=H)`` only when all of the following hold at that moment:

* ``T`` is ``m``'s current term and ``m`` is not a candidate;
* ``m``'s durable log holds the block ``H`` at height ``h``, and holds an
  entry *of term ``T``* at some height ``>= h`` that it received from (or, for
  the leader, created as) the leader of term ``T``.

By Log Matching, ``m``'s log then equals the leader of term ``T``'s log up to
that term-``T`` entry. A majority of such signatures for ``(T, h, H)`` thus
shows a term-``T`` entry at a height ``>= h`` stored on a majority in term
``T`` — exactly Raft's commitment rule (§5.4.2) — so ``H`` is committed at
``h``. A majority that merely *stores* an old-term entry (figure 8) never
yields a certificate, because nobody signs without a current-term entry above it.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from belep.consensus.raft_messages import Term, entry_term
from belep.crypto import PrivateKey, PublicKey
from belep.errors import ChainError
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    VoteStatement,
)

#: ``VoteStatement.kind`` of a Raft acknowledgement signature.
RAFT_CERT_KIND = "raft-append"
#: Raft has no epochs (no reconfiguration); every statement and block uses epoch 0.
RAFT_EPOCH = Epoch(0)


def raft_quorum(members: int) -> int:
    """A majority of ``members`` voters."""
    return members // 2 + 1


def append_statement(
    domain: DomainId, term: Term, height: Height, block_hash: Digest
) -> VoteStatement:
    """The statement a member signs to vouch, in ``term``, for ``block_hash`` at ``height``."""
    return VoteStatement(RAFT_CERT_KIND, domain, RAFT_EPOCH, term, height, block_hash)


def sign_append(key: PrivateKey, statement: VoteStatement) -> bytes:
    """Signature of ``statement`` by ``key``."""
    return key.sign(statement.signing_bytes())


def check_certificate_signatures(
    certificate: QuorumCertificate, voters: Mapping[NodeId, PublicKey], domain: DomainId
) -> None:
    """The block-independent half of :func:`verify_raft_certificate`: kind, domain, epoch, signatures."""
    statement = certificate.statement
    where = f"height {statement.height}"
    if statement.kind != RAFT_CERT_KIND:
        raise ChainError(
            "not a raft certificate", expected=RAFT_CERT_KIND, found=statement.kind, where=where
        )
    if statement.domain != domain:
        raise ChainError(
            "certificate for another domain", expected=domain, found=statement.domain, where=where
        )
    if statement.epoch != RAFT_EPOCH:
        raise ChainError(
            "raft uses epoch 0", expected=RAFT_EPOCH, found=statement.epoch, where=where
        )
    certificate.verify(voters, raft_quorum(len(voters)))


def check_certificate_names(block: Block, certificate: QuorumCertificate) -> None:
    """The signature-free half: the statement names this block, in a term no older than its own."""
    statement = certificate.statement
    header = block.header
    where = f"height {header.height}"
    if statement.kind != RAFT_CERT_KIND:
        raise ChainError(
            "not a raft certificate", expected=RAFT_CERT_KIND, found=statement.kind, where=where
        )
    if statement.domain != header.domain or statement.epoch != header.epoch:
        raise ChainError(
            "certificate for another domain or epoch",
            expected=(header.domain, header.epoch),
            found=(statement.domain, statement.epoch),
            where=where,
        )
    if statement.height != header.height:
        raise ChainError(
            "certificate for another height",
            expected=header.height,
            found=statement.height,
            where=where,
        )
    if statement.block_hash != block.block_hash:
        raise ChainError(
            "certificate for another block",
            expected=block.block_hash,
            found=statement.block_hash,
            where=where,
        )
    if statement.view < entry_term(block):
        raise ChainError(
            "certificate term precedes the block's term",
            expected=f">= {entry_term(block)}",
            found=statement.view,
            where=where,
        )


def verify_raft_certificate(
    block: Block, certificate: QuorumCertificate, voters: Mapping[NodeId, PublicKey]
) -> None:
    """Check that ``certificate`` proves ``block`` committed, for the voter set ``voters``.

    Raises :class:`ChainError` if the statement does not name this block
    (kind, domain, epoch 0, height, hash) or is older than the block's own
    term, and the errors of :meth:`QuorumCertificate.verify` for unknown
    signers, bad signatures or fewer than a majority of distinct signers.
    """
    check_certificate_names(block, certificate)
    check_certificate_signatures(certificate, voters, block.header.domain)
