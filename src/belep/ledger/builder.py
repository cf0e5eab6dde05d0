"""Build certified blocks for a committee whose private keys are at hand.

For demos, benchmarks, tests and simulations — anywhere a chain is made
without running consensus. :class:`ChainBuilder` produces, block after block,
exactly what consensus would deliver: a block extending the previous one and
a commit certificate signed by a quorum of the genesis voters.

Pure: keys and timestamps are inputs (:func:`committee_keys` derives keys
from a label, for reproducible runs; pass fresh keys for real ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from belep.crypto import DEFAULT_SUITE, PrivateKey, sha256
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
    make_block,
)
from belep.ledger.genesis import Genesis, Member


def committee_keys(label: str, count: int, suite: str = DEFAULT_SUITE) -> dict[NodeId, PrivateKey]:
    """``count`` deterministic keys named ``<label>-1`` .. ``<label>-<count>`` (not secret!)."""
    return {
        NodeId(f"{label}-{i}"): PrivateKey.from_seed(sha256(f"{label}-{i}".encode()), suite)
        for i in range(1, count + 1)
    }


def make_genesis(
    domain: str,
    keys: Mapping[NodeId, PrivateKey],
    *,
    protocol: str = "pbft",
    observers: Mapping[NodeId, PrivateKey] | None = None,
    parent: str | None = None,
    created_ms: int = 0,
) -> Genesis:
    """A genesis whose voters are ``keys`` (in the mapping's order)."""
    suites = {k.suite for k in keys.values()}
    return Genesis(
        domain=DomainId(domain),
        suite=next(iter(suites)) if len(suites) == 1 else DEFAULT_SUITE,
        protocol=protocol,
        voters=tuple(Member(n, k.public_key) for n, k in keys.items()),
        observers=tuple(Member(n, k.public_key) for n, k in (observers or {}).items()),
        parent=None if parent is None else DomainId(parent),
        created_ms=created_ms,
    )


class ChainBuilder:
    """Makes the next certified block of a chain, given its genesis and voter keys."""

    __slots__ = ("genesis", "height", "keys", "signers", "tip_hash")

    def __init__(
        self,
        genesis: Genesis,
        keys: Mapping[NodeId, PrivateKey],
        *,
        signers: Sequence[NodeId] | None = None,
        height: int = 0,
        tip_hash: bytes | None = None,
    ) -> None:
        self.genesis = genesis
        self.keys = dict(keys)
        quorum = genesis.committee().node_ids[: genesis.quorum]
        self.signers = tuple(signers) if signers is not None else quorum
        self.height = Height(height)
        self.tip_hash = Digest(tip_hash if tip_hash is not None else genesis.genesis_hash)

    def certify(self, block: Block, *, view: int | None = None) -> QuorumCertificate:
        """A commit certificate for ``block`` signed by :attr:`signers`."""
        header = block.header
        statement = VoteStatement(
            kind=self.genesis.commit_kind,
            domain=header.domain,
            epoch=header.epoch,
            view=View(header.view if view is None else view),
            height=header.height,
            block_hash=header.block_hash,
        )
        message = statement.signing_bytes()
        return QuorumCertificate(
            statement, tuple((s, self.keys[s].sign(message)) for s in self.signers)
        )

    def next_block(
        self,
        payloads: Sequence[bytes],
        *,
        timestamp_ms: int,
        view: int = 0,
        epoch: int = 0,
        proposer: NodeId | None = None,
    ) -> tuple[Block, QuorumCertificate]:
        """The block after the current tip, certified; advances the tip."""
        voters = self.genesis.committee().node_ids
        block = make_block(
            domain=self.genesis.domain,
            height=Height(self.height + 1),
            epoch=Epoch(epoch),
            view=View(view),
            prev_hash=self.tip_hash,
            transactions=tuple(Transaction(p) for p in payloads),
            timestamp_ms=timestamp_ms,
            proposer=proposer or voters[view % len(voters)],
        )
        qc = self.certify(block)
        self.height = block.height
        self.tip_hash = block.block_hash
        return block, qc
