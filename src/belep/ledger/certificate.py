"""Certificates: does this certificate certify this block for this committee?

Owns the one answer to that question, which every reader of a chain asks —
the chain verifier (``ledger/verify.py``), state transfer
(``consensus/state_transfer.py``), HPBFT's configuration replay
(``consensus/hpbft_verify.py``), Raft's certificate (``consensus/raft_cert.py``)
and the simulator's invariant checker (``sim/protocols.py``):

* :func:`check_block_certificate` — the statement names exactly this block
  (domain, height, block hash), is of the committee's commit kind and epoch,
  and is not of an earlier (epoch, view) than the block itself
  (:func:`check_names_block`, the part that needs no committee); and
  :func:`check_quorum_signatures` holds for the committee;
* :func:`check_statement` — the shape of a statement a protocol expects
  (kind, domain, epoch), for certificates that certify no block body (prepare
  certificates, checkpoints, view changes);
* :func:`check_quorum_signatures` — at least ``quorum`` distinct signers, each
  a voter, each signature valid; through a :class:`SignatureCache`, so a
  signature seen in a vote and again inside a certificate is verified by
  public-key cryptography once.

Errors (``belep.errors``): :class:`ChainError` when the statement names
another block, kind or epoch; :class:`UnknownSigner`, :class:`QuorumNotMet`,
:class:`InvalidSignature` for the signatures. The checks are ordered so that
a certificate of the wrong shape is refused before any signature is verified.

No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from belep.crypto import PublicKey
from belep.errors import (
    ChainError,
    InvalidSignature,
    QuorumNotMet,
    UnknownSigner,
    ValidationError,
)
from belep.ledger.block import BlockHeader, DomainId, Epoch, NodeId, QuorumCertificate
from belep.ledger.genesis import Committee

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "SignatureCache",
    "check_block_certificate",
    "check_names_block",
    "check_quorum_signatures",
    "check_statement",
]

#: Verified signatures remembered per node (each entry is ~200 bytes: ~3 MB in all).
DEFAULT_CACHE_SIZE = 16_384


class SignatureCache:
    """A bounded memory of ``(key, message, signature)`` triples that verified.

    Only successes are remembered: a bad signature costs a verification each
    time it is presented, but can never be mistaken for a good one.
    """

    __slots__ = ("_capacity", "_seen", "hits", "verifications")

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
        self.hits = 0
        self.verifications = 0

    def is_valid(self, key: PublicKey, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` over ``message`` verifies under ``key``."""
        entry = (key.raw, message, signature)
        if entry in self._seen:
            self.hits += 1
            return True
        self.verifications += 1
        if not key.is_valid_signature(message, signature):
            return False
        self._seen[entry] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


def check_quorum_signatures(
    certificate: QuorumCertificate,
    *,
    voters: Mapping[NodeId, PublicKey],
    quorum: int,
    cache: SignatureCache | None = None,
) -> None:
    """At least ``quorum`` distinct members of ``voters`` validly signed the statement.

    Raises :class:`UnknownSigner` for a signer outside ``voters``,
    :class:`QuorumNotMet` for a signer counted twice or too few signers, and
    :class:`InvalidSignature` for a bad signature.
    """
    s = certificate.statement
    where = f"{s.kind} certificate at height {s.height}"
    if len(certificate.signatures) < quorum:
        raise QuorumNotMet(
            f"{s.kind} certificate below quorum",
            expected=quorum,
            found=len(certificate.signatures),
            where=where,
        )
    message = s.signing_bytes()
    seen: set[NodeId] = set()
    for signer, signature in certificate.signatures:
        key = voters.get(signer)
        if key is None:
            raise UnknownSigner(
                "certificate signed by a node outside the voter set",
                expected=sorted(voters),
                found=signer,
                where=where,
            )
        if signer in seen:
            raise QuorumNotMet("certificate counts a signer twice", found=signer, where=where)
        seen.add(signer)
        valid = (
            key.is_valid_signature(message, signature)
            if cache is None
            else cache.is_valid(key, message, signature)
        )
        if not valid:
            raise InvalidSignature(f"invalid {s.kind} signature by {signer}", where=where)


def check_statement(
    certificate: QuorumCertificate,
    *,
    kind: str | None = None,
    domain: DomainId | None = None,
    epoch: Epoch | None = None,
    error: type[ValidationError] = ChainError,
) -> None:
    """The statement has the expected kind, domain and epoch (``None``: any).

    Raises ``error`` (:class:`ChainError` by default; a protocol checking a
    peer's message passes :class:`~belep.errors.ProtocolViolation`).
    """
    s = certificate.statement
    where = f"{s.kind} certificate at height {s.height}"
    if kind is not None and s.kind != kind:
        raise error("certificate of the wrong kind", expected=kind, found=s.kind, where=where)
    if domain is not None and s.domain != domain:
        raise error("certificate for another domain", expected=domain, found=s.domain, where=where)
    if epoch is not None and s.epoch != epoch:
        raise error("certificate of another epoch", expected=epoch, found=s.epoch, where=where)


def check_names_block(
    header: BlockHeader, certificate: QuorumCertificate, commit_kind: str
) -> None:
    """The committee-free half of :func:`check_block_certificate`: the statement is a
    ``commit_kind`` statement about exactly this block (domain, height, hash), of an
    (epoch, view) not earlier than the block's (a block may be certified in a later
    view or, after an HPBFT revival, a later epoch — never an earlier one)."""
    s = certificate.statement
    where = f"height {header.height}"
    check_statement(certificate, kind=commit_kind)
    if s.domain != header.domain:
        raise ChainError(
            "certificate is for another domain", expected=header.domain, found=s.domain, where=where
        )
    if s.height != header.height:
        raise ChainError(
            "certificate is for another height", expected=header.height, found=s.height, where=where
        )
    if s.block_hash != header.block_hash:
        raise ChainError(
            "certificate is for another block",
            expected=header.block_hash,
            found=s.block_hash,
            where=where,
        )
    if (s.epoch, s.view) < (header.epoch, header.view):
        raise ChainError(
            "certificate predates the block's epoch and view",
            expected=f">= epoch {header.epoch} view {header.view}",
            found=f"epoch {s.epoch} view {s.view}",
            where=where,
        )


def check_block_certificate(
    header: BlockHeader,
    certificate: QuorumCertificate,
    committee: Committee,
    *,
    cache: SignatureCache | None = None,
    check_signatures: bool = True,
) -> None:
    """Raise unless ``certificate`` commits the block of ``header`` for ``committee``.

    1. :func:`check_names_block` with the committee's commit kind;
    2. the statement's epoch is the committee's (an epoch's committee signs
       only its own epoch's certificates);
    3. :func:`check_quorum_signatures` with the committee's voters and quorum
       (skipped when ``check_signatures`` is false: for a caller that verified
       them when the certificate was formed, or that only checks shapes).
    """
    check_names_block(header, certificate, committee.commit_kind)
    check_statement(certificate, epoch=committee.epoch)
    if check_signatures:
        check_quorum_signatures(
            certificate, voters=committee.keys, quorum=committee.quorum, cache=cache
        )
