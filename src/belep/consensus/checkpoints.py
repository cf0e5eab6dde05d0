"""Checkpoints: signed votes on the committed chain every ``K`` blocks.

Owns :class:`CheckpointTracker`. After delivering a height ``s`` with
``s % K == 0`` a voter signs ``VoteStatement("checkpoint", domain, epoch,
view=0, s, block_hash(s))`` and sends it to every peer. A quorum of matching
votes is a **stable checkpoint certificate**: proof that the block at ``s``
(and, by hash links, the whole chain below it) is committed. It moves the low
watermark, lets replicas garbage-collect their logs, tells a replica that it
fell behind (a certificate above its delivered height) and is the starting
point of a view change.

The view is fixed at 0 in the statement so votes from replicas in different
views combine: a checkpoint is about the committed chain, which does not
depend on views.

Invariants:

* a vote is kept only after its signature verified, for a height above the
  current stable checkpoint that is a multiple of ``K``;
* memory is bounded: each voter has at most :data:`VOTES_PER_VOTER` pending
  votes (its highest heights), so a faulty voter cannot grow it;
* the stable checkpoint only moves up.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from belep.consensus.certificates import SignatureCache, verify_certificate
from belep.crypto import PublicKey
from belep.errors import InvalidSignature, ProtocolViolation, UnknownSigner
from belep.ledger.block import (
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    View,
    VoteStatement,
)

__all__ = ["CHECKPOINT_KIND", "CheckpointTracker"]

CHECKPOINT_KIND = "checkpoint"
#: Pending checkpoint votes kept per voter (its highest heights).
VOTES_PER_VOTER = 3


class CheckpointTracker:
    """Collects checkpoint votes and holds the highest stable checkpoint."""

    __slots__ = (
        "_by_voter",
        "_cache",
        "_votes",
        "domain",
        "epoch",
        "genesis_hash",
        "interval",
        "quorum",
        "stable",
        "voters",
    )

    def __init__(
        self,
        *,
        domain: DomainId,
        epoch: Epoch,
        interval: int,
        voters: Mapping[NodeId, PublicKey],
        quorum: int,
        cache: SignatureCache,
        genesis_hash: Digest,
    ) -> None:
        self.domain = domain
        self.epoch = epoch
        self.interval = interval
        self.voters = voters
        self.quorum = quorum
        self._cache = cache
        self.genesis_hash = genesis_hash
        self.stable: QuorumCertificate | None = None
        self._votes: dict[VoteStatement, dict[NodeId, bytes]] = {}
        self._by_voter: dict[NodeId, list[VoteStatement]] = {}

    @property
    def stable_height(self) -> Height:
        return Height(0) if self.stable is None else self.stable.statement.height

    @property
    def stable_hash(self) -> Digest:
        return self.genesis_hash if self.stable is None else self.stable.statement.block_hash

    def statement(self, height: Height, block_hash: Digest) -> VoteStatement:
        """What a checkpoint vote at ``height`` signs."""
        return VoteStatement(CHECKPOINT_KIND, self.domain, self.epoch, View(0), height, block_hash)

    def is_checkpoint(self, height: int) -> bool:
        return height > 0 and height % self.interval == 0

    def check_statement(self, statement: VoteStatement) -> None:
        """Raise :class:`ProtocolViolation` unless ``statement`` is a checkpoint statement here."""
        if (
            statement.kind != CHECKPOINT_KIND
            or statement.domain != self.domain
            or statement.epoch != self.epoch
            or statement.view != 0
        ):
            raise ProtocolViolation(
                "not a checkpoint statement of this domain",
                expected=(CHECKPOINT_KIND, self.domain, self.epoch, 0),
                found=(statement.kind, statement.domain, statement.epoch, statement.view),
            )
        if not self.is_checkpoint(statement.height):
            raise ProtocolViolation(
                "checkpoint height is not a multiple of the interval",
                expected=f"multiple of {self.interval}",
                found=statement.height,
            )

    def add_vote(
        self, voter: NodeId, statement: VoteStatement, signature: bytes, *, trusted: bool = False
    ) -> QuorumCertificate | None:
        """Record a vote; return a new, higher stable certificate if it completed one.

        Votes at or below the stable checkpoint are ignored (``None``). Raises
        :class:`ProtocolViolation`, :class:`UnknownSigner` or
        :class:`InvalidSignature` for a bad vote, leaving the tracker unchanged.
        """
        self.check_statement(statement)
        if statement.height <= self.stable_height:
            return None
        votes = self._votes.get(statement)
        if votes is not None and voter in votes:
            return None
        key = self.voters.get(voter)
        if key is None:
            raise UnknownSigner("checkpoint vote by a non-voter", found=voter)
        if not trusted and not self._cache.is_valid(key, statement.signing_bytes(), signature):
            raise InvalidSignature(
                f"invalid checkpoint vote by {voter}", where=f"height {statement.height}"
            )
        mine = self._by_voter.setdefault(voter, [])
        if any(s.height == statement.height for s in mine):
            return None  # one vote per voter and height; a different hash is ignored
        mine.append(statement)
        mine.sort(key=lambda s: s.height)
        while len(mine) > VOTES_PER_VOTER:
            dropped = mine.pop(0)
            self._remove(dropped, voter)
        if votes is None:
            votes = self._votes[statement] = {}
        votes[voter] = signature
        if len(votes) < self.quorum:
            return None
        certificate = QuorumCertificate(statement, tuple(list(votes.items())[: self.quorum]))
        self._set_stable(certificate)
        return certificate

    def support(self, statement: VoteStatement) -> int:
        """Distinct voters whose pending vote is ``statement``.

        ``f + 1`` of them include a correct voter, which delivered that block:
        enough to know the chain reached that height (and to fetch it), though
        not to make it stable.
        """
        return len(self._votes.get(statement, ()))

    def verify(self, certificate: QuorumCertificate) -> None:
        """Raise unless ``certificate`` is a valid stable checkpoint certificate here."""
        self.check_statement(certificate.statement)
        verify_certificate(
            certificate,
            voters=self.voters,
            quorum=self.quorum,
            cache=self._cache,
            kind=CHECKPOINT_KIND,
            domain=self.domain,
            epoch=self.epoch,
        )

    def adopt(self, certificate: QuorumCertificate) -> bool:
        """Verify and adopt a certificate from a peer; True if it raised the stable checkpoint."""
        if certificate.statement.height <= self.stable_height:
            return False
        self.verify(certificate)
        self._set_stable(certificate)
        return True

    def restore(self, certificate: QuorumCertificate | None) -> None:
        """Set the stable checkpoint from this replica's own persisted state."""
        self.stable = certificate

    def _set_stable(self, certificate: QuorumCertificate) -> None:
        self.stable = certificate
        low = certificate.statement.height
        self._votes = {s: v for s, v in self._votes.items() if s.height > low}
        for voter, mine in list(self._by_voter.items()):
            kept = [s for s in mine if s.height > low]
            if kept:
                self._by_voter[voter] = kept
            else:
                del self._by_voter[voter]

    def _remove(self, statement: VoteStatement, voter: NodeId) -> None:
        votes = self._votes.get(statement)
        if votes is not None:
            votes.pop(voter, None)
            if not votes:
                del self._votes[statement]
