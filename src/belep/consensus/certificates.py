"""Signed votes and quorum certificates, verified once per node.

Owns what every BFT protocol here (PBFT, HPBFT) needs to check each piece of
evidence once:

* :func:`verify_certificate` — checks a :class:`QuorumCertificate` a peer sent
  against the expected statement shape (kind, domain, epoch) and a voter set
  with a quorum, through the :class:`~belep.ledger.certificate.SignatureCache`
  (re-exported here), so a vote seen first on its own and later inside a
  certificate, a view change or a new-view message is checked by public-key
  cryptography only once;
* :class:`VoteCollector` — gathers signed votes until a quorum of distinct
  voters signed one statement, then builds the certificate;
* :class:`BlockBodyCache` — block bodies already checked against their
  header's transactions root.

Invariants of :class:`VoteCollector`:

* a vote is stored only after its signature verified under the voter's key;
* each voter counts at most once per statement, and a voter has at most one
  statement per *slot* ``(kind, view, height)``: a second, different vote for
  the same slot (equivocation) is refused, so memory per slot is bounded by
  the number of voters;
* a certificate is built exactly once per statement, from the first
  ``quorum`` voters in arrival order, signatures sorted by voter id.

This module does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from belep.crypto import PrivateKey, PublicKey
from belep.errors import InvalidSignature, ProtocolViolation, UnknownSigner
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)
from belep.ledger.certificate import SignatureCache, check_quorum_signatures, check_statement

__all__ = [
    "BlockBodyCache",
    "SignatureCache",
    "VoteCollector",
    "sign_statement",
    "verify_certificate",
]


def sign_statement(key: PrivateKey, statement: VoteStatement) -> bytes:
    """This node's signature over ``statement``."""
    return key.sign(statement.signing_bytes())


def verify_certificate(
    certificate: QuorumCertificate,
    *,
    voters: Mapping[NodeId, PublicKey],
    quorum: int,
    cache: SignatureCache,
    kind: str | None = None,
    domain: DomainId | None = None,
    epoch: Epoch | None = None,
) -> None:
    """Check a certificate a peer sent: statement shape, distinct known signers, quorum.

    The consensus-message form of :mod:`belep.ledger.certificate`: a statement
    of the wrong kind, domain or epoch is a :class:`ProtocolViolation` by the
    sender; the signatures are checked by
    :func:`~belep.ledger.certificate.check_quorum_signatures`. A certificate
    that commits a *block* is checked by
    :func:`~belep.ledger.certificate.check_block_certificate` instead.
    """
    check_statement(certificate, kind=kind, domain=domain, epoch=epoch, error=ProtocolViolation)
    check_quorum_signatures(certificate, voters=voters, quorum=quorum, cache=cache)


_Slot = tuple[str, View, Height]


class VoteCollector:
    """Signed votes of one kind of statement (or several), until quorums form."""

    __slots__ = ("_cache", "_choice", "_done", "_quorum", "_voters", "_votes")

    def __init__(
        self, voters: Mapping[NodeId, PublicKey], quorum: int, cache: SignatureCache
    ) -> None:
        self._voters = voters
        self._quorum = quorum
        self._cache = cache
        # statement -> voter -> signature (insertion order = arrival order)
        self._votes: dict[VoteStatement, dict[NodeId, bytes]] = {}
        # (kind, view, height) -> voter -> the block hash it voted for
        self._choice: dict[_Slot, dict[NodeId, Digest]] = {}
        self._done: dict[VoteStatement, QuorumCertificate] = {}

    @property
    def quorum(self) -> int:
        return self._quorum

    def add(
        self, statement: VoteStatement, voter: NodeId, signature: bytes, *, trusted: bool = False
    ) -> QuorumCertificate | None:
        """Record a vote; return the certificate if this vote completed the quorum.

        ``trusted`` skips verification (for this node's own votes). A repeated
        identical vote, or a vote for a statement that already has its
        certificate, returns ``None`` without verifying. Raises
        :class:`UnknownSigner`, :class:`InvalidSignature`, or
        :class:`ProtocolViolation` for a second, different vote of ``voter``
        in the same slot; the collector is then unchanged.
        """
        if statement in self._done:
            return None
        slot: _Slot = (statement.kind, statement.view, statement.height)
        choices = self._choice.get(slot)
        earlier = None if choices is None else choices.get(voter)
        if earlier is not None:
            if earlier != statement.block_hash:
                raise ProtocolViolation(
                    f"{voter} voted twice in one slot",
                    expected=earlier,
                    found=statement.block_hash,
                    where=f"{statement.kind} view {statement.view} height {statement.height}",
                )
            return None
        key = self._voters.get(voter)
        if key is None:
            raise UnknownSigner("vote by a node outside the voter set", found=voter)
        if not trusted and not self._cache.is_valid(key, statement.signing_bytes(), signature):
            raise InvalidSignature(
                f"invalid {statement.kind} vote by {voter}",
                where=f"view {statement.view} height {statement.height}",
            )
        if choices is None:
            choices = self._choice[slot] = {}
        choices[voter] = statement.block_hash
        votes = self._votes.setdefault(statement, {})
        votes[voter] = signature
        if len(votes) >= self._quorum:
            signatures = tuple(list(votes.items())[: self._quorum])
            certificate = QuorumCertificate(statement, signatures)
            self._done[statement] = certificate
            del self._votes[statement]
            return certificate
        return None

    def certificate(self, statement: VoteStatement) -> QuorumCertificate | None:
        """The certificate of ``statement`` if its quorum formed."""
        return self._done.get(statement)

    def count(self, statement: VoteStatement) -> int:
        """Distinct voters of ``statement`` so far (the quorum once complete)."""
        if statement in self._done:
            return self._quorum
        return len(self._votes.get(statement, ()))

    def voted(self, kind: str, view: View, height: Height, voter: NodeId) -> Digest | None:
        """The block hash ``voter`` voted for in this slot, if any."""
        choices = self._choice.get((kind, view, height))
        return None if choices is None else choices.get(voter)

    def prune(self, keep: Callable[[str, View, Height], bool]) -> None:
        """Forget every slot (and its votes and certificates) for which ``keep`` is false."""
        self._choice = {s: c for s, c in self._choice.items() if keep(*s)}
        self._votes = {s: v for s, v in self._votes.items() if keep(s.kind, s.view, s.height)}
        self._done = {s: c for s, c in self._done.items() if keep(s.kind, s.view, s.height)}

    def statements(self) -> Iterable[VoteStatement]:
        """Statements with pending or complete votes (for tests and diagnostics)."""
        return [*self._votes, *self._done]


class BlockBodyCache:
    """Blocks whose transactions were checked against their header's ``tx_root``.

    A block body arrives in a pre-prepare, again inside view changes and again
    inside a new-view; recomputing its Merkle root each time would hash every
    transaction again. Comparing the transactions with the ones already
    checked for that header is a byte comparison (and free when it is the same
    object). It holds the bodies it remembers: keep ``capacity`` near the number
    of blocks in flight.
    """

    __slots__ = ("_capacity", "_checked")

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._checked: OrderedDict[Digest, tuple[Transaction, ...]] = OrderedDict()

    def remember(self, block: Block) -> None:
        """Record a block this node built itself (its root was computed from its body)."""
        self._checked[block.block_hash] = block.transactions
        if len(self._checked) > self._capacity:
            self._checked.popitem(last=False)

    def check(self, block: Block) -> None:
        """Raise :class:`ChainError` unless the transactions match the header."""
        known = self._checked.get(block.block_hash)
        if known is not None and known == block.transactions:
            return
        block.check_tx_root()
        self._checked[block.block_hash] = block.transactions
        if len(self._checked) > self._capacity:
            self._checked.popitem(last=False)
