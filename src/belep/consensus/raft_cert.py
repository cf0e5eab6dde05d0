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

Also here: the leader's :class:`AckCollector`, a member's :class:`AckSigner`
(one signature per member per height per term), and
:func:`accept_fetched_chain` for blocks that arrive by state transfer.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from belep.consensus.raft_messages import Term
from belep.crypto import PrivateKey, PublicKey
from belep.errors import ValidationError
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
from belep.ledger.certificate import (
    check_block_certificate,
    check_names_block,
    check_quorum_signatures,
    check_statement,
)
from belep.ledger.genesis import Committee, Member

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


def raft_committee(voters: Mapping[NodeId, PublicKey]) -> Committee:
    """Raft's committee: every member, a majority quorum, ``raft-append`` statements, epoch 0."""
    members = tuple(Member(node, key) for node, key in voters.items())
    return Committee(members, raft_quorum(len(voters)), RAFT_CERT_KIND, RAFT_EPOCH)


def check_certificate_signatures(
    certificate: QuorumCertificate, voters: Mapping[NodeId, PublicKey], domain: DomainId
) -> None:
    """The block-independent half of :func:`verify_raft_certificate`: kind, domain, epoch,
    a majority of valid member signatures."""
    check_statement(certificate, kind=RAFT_CERT_KIND, domain=domain, epoch=RAFT_EPOCH)
    check_quorum_signatures(certificate, voters=voters, quorum=raft_quorum(len(voters)))


def check_certificate_names(block: Block, certificate: QuorumCertificate) -> None:
    """The signature-free half: the statement names this block, in a term no older than its own
    (:func:`belep.ledger.certificate.check_names_block`; Raft's term is the view)."""
    check_names_block(block.header, certificate, RAFT_CERT_KIND)
    check_statement(certificate, epoch=RAFT_EPOCH)


def verify_raft_certificate(
    block: Block, certificate: QuorumCertificate, voters: Mapping[NodeId, PublicKey]
) -> None:
    """Check that ``certificate`` proves ``block`` committed, for the voter set ``voters``.

    The ledger's one check (:func:`belep.ledger.certificate.check_block_certificate`)
    with Raft's committee (:func:`raft_committee`).
    """
    check_block_certificate(block.header, certificate, raft_committee(voters))


class AckCollector:
    """The leader's ``raft-append`` signatures in its term, per height, until certified.

    Holds at most a quorum per height: signatures beyond it are neither
    verified nor kept (verification is the expensive part).
    """

    __slots__ = ("_domain", "_quorum", "_sigs", "_term", "_voters")

    def __init__(self, domain: DomainId, term: Term, voters: Mapping[NodeId, PublicKey]) -> None:
        self._domain, self._term, self._voters = domain, term, voters
        self._quorum = raft_quorum(len(voters))
        self._sigs: dict[int, dict[NodeId, bytes]] = {}

    def add_own(self, key: PrivateKey, me: NodeId, height: Height, block_hash: Digest) -> None:
        """The leader signs a height it holds (with a term-``T`` entry at or above it)."""
        statement = append_statement(self._domain, self._term, height, block_hash)
        self._sigs.setdefault(height, {})[me] = sign_append(key, statement)

    def verify_needed(
        self,
        peer: NodeId,
        signatures: Iterable[tuple[Height, bytes]],
        block_hash_at: Callable[[Height], Digest],
        above: int,
    ) -> list[tuple[Height, bytes]] | None:
        """Those of ``peer``'s signatures still needed above height ``above``, verified.

        ``None`` if any needed one is invalid (the whole acknowledgement is then ignored).
        """
        key = self._voters.get(peer)
        if key is None:
            return []
        needed: list[tuple[Height, bytes]] = []
        for height, signature in signatures:
            have = self._sigs.get(height, {})
            if height <= above or peer in have or len(have) >= self._quorum:
                continue
            statement = append_statement(self._domain, self._term, height, block_hash_at(height))
            if not key.is_valid_signature(statement.signing_bytes(), signature):
                return None
            needed.append((height, signature))
        return needed

    def add(self, peer: NodeId, verified: Iterable[tuple[Height, bytes]]) -> None:
        for height, signature in verified:
            self._sigs.setdefault(height, {})[peer] = signature

    def take_certificate(self, height: Height, block_hash: Digest) -> QuorumCertificate | None:
        """The certificate for ``height`` once a majority signed it (then forgotten here)."""
        signatures = self._sigs.get(height, {})
        if len(signatures) < self._quorum:
            return None
        del self._sigs[height]
        statement = append_statement(self._domain, self._term, height, block_hash)
        return QuorumCertificate(statement, tuple(signatures.items()))

    def forget_through(self, height: int) -> None:
        self._sigs = {h: s for h, s in self._sigs.items() if h > height}

    def summary(self) -> tuple[tuple[int, tuple[NodeId, ...]], ...]:
        """Signers per height (for state comparisons in tests)."""
        return tuple(sorted((h, tuple(sorted(s))) for h, s in self._sigs.items()))


class AckSigner:
    """A member's own ``raft-append`` signatures in its current term, each made once."""

    __slots__ = ("_cache", "_domain", "_key", "_term")

    def __init__(self, domain: DomainId, key: PrivateKey) -> None:
        self._domain, self._key = domain, key
        self._term = Term(-1)
        self._cache: dict[int, bytes] = {}

    def sign(self, term: Term, height: Height, block_hash: Digest) -> bytes:
        if term != self._term:
            self._term, self._cache = term, {}
        signature = self._cache.get(height)
        if signature is None:
            signature = sign_append(
                self._key, append_statement(self._domain, term, height, block_hash)
            )
            self._cache[height] = signature
        return signature

    def forget_from(self, height: int) -> None:
        """Entries from ``height`` on were deleted: their signatures must not be reused."""
        self._cache = {h: s for h, s in self._cache.items() if h < height}

    def forget_through(self, height: int) -> None:
        """Heights up to ``height`` are committed: no leader of this term needs them again."""
        self._cache = {h: s for h, s in self._cache.items() if h > height}


def accept_fetched_chain(
    blocks: Iterable[tuple[Block, QuorumCertificate]],
    height: int,
    head: Digest,
    voters: Mapping[NodeId, PublicKey],
    domain: DomainId,
) -> list[tuple[Block, QuorumCertificate]]:
    """The longest verified run of ``blocks`` extending the chain at ``(height, head)``.

    Blocks at or below ``height`` are skipped; the run stops at the first
    block that does not extend it, whose transactions root is wrong, or whose
    certificate does not verify.
    """
    accepted: list[tuple[Block, QuorumCertificate]] = []
    committee = raft_committee(voters)
    for block, certificate in blocks:
        if block.height <= height:
            continue
        if block.height != height + 1 or block.header.prev_hash != head:
            break
        if block.header.domain != domain:
            break
        try:
            block.check_tx_root()
            check_block_certificate(block.header, certificate, committee)
        except ValidationError:
            break
        accepted.append((block, certificate))
        height, head = block.height, block.block_hash
    return accepted
