"""Transactions, block headers, blocks and quorum certificates.

Record types only: each has a canonical wire form (``to_wire``/``from_wire``,
see ``docs/spec/ledger.md``) and pure checks. Nothing here does I/O.

Invariants:

* ``Transaction.tx_hash`` = SHA-256 of the transaction's payload bytes.
* ``BlockHeader.block_hash`` = SHA-256 of the canonical encoding of the header.
* ``Block.header.tx_root`` = RFC 6962 root over the transactions' payloads.
* A :class:`QuorumCertificate` carries signatures over one statement (kind,
  domain, epoch, view, height, block hash), sorted by signer; whether they
  certify a block for a committee is :mod:`belep.ledger.certificate`'s one check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

from belep.crypto import sha256
from belep.encoding import (
    Value,
    decode,
    encode,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import ChainError
from belep.ledger.merkle import compute_root

NodeId = NewType("NodeId", str)
DomainId = NewType("DomainId", str)
Height = NewType("Height", int)
Epoch = NewType("Epoch", int)
View = NewType("View", int)
Digest = NewType("Digest", bytes)

HASH_SIZE = 32
ZERO_HASH = Digest(b"\x00" * HASH_SIZE)
#: Largest transaction payload a block may carry (bytes). Files never go on chain.
MAX_TX_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Transaction:
    """An opaque, already-encoded transaction (the application defines its payload)."""

    payload: bytes
    tx_hash: Digest = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.payload) > MAX_TX_SIZE:
            raise ChainError(
                "transaction too large", expected=f"<= {MAX_TX_SIZE}", found=len(self.payload)
            )
        object.__setattr__(self, "tx_hash", Digest(sha256(self.payload)))


_HEADER_FIELDS = frozenset(
    {
        "domain",
        "height",
        "epoch",
        "view",
        "prev_hash",
        "tx_root",
        "state_root",
        "timestamp_ms",
        "proposer",
    }
)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What a block hash commits to (DESIGN §4)."""

    domain: DomainId
    height: Height
    epoch: Epoch
    view: View
    prev_hash: Digest
    tx_root: Digest
    state_root: Digest
    timestamp_ms: int
    proposer: NodeId
    block_hash: Digest = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_hash", Digest(sha256(self.encode())))

    def to_wire(self) -> dict[str, Value]:
        return {
            "domain": self.domain,
            "height": self.height,
            "epoch": self.epoch,
            "view": self.view,
            "prev_hash": self.prev_hash,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
            "timestamp_ms": self.timestamp_ms,
            "proposer": self.proposer,
        }

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, value: Value) -> BlockHeader:
        m = expect_map(value, "block header")
        expect_fields(m, "block header", _HEADER_FIELDS)
        return cls(
            domain=DomainId(expect_str(m["domain"], "domain")),
            height=Height(expect_int(m["height"], "height", minimum=0)),
            epoch=Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            view=View(expect_int(m["view"], "view", minimum=0)),
            prev_hash=Digest(expect_bytes(m["prev_hash"], "prev_hash", size=HASH_SIZE)),
            tx_root=Digest(expect_bytes(m["tx_root"], "tx_root", size=HASH_SIZE)),
            state_root=Digest(expect_bytes(m["state_root"], "state_root", size=HASH_SIZE)),
            timestamp_ms=expect_int(m["timestamp_ms"], "timestamp_ms", minimum=0),
            proposer=NodeId(expect_str(m["proposer"], "proposer")),
        )

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        return cls.from_wire(decode(data))


def compute_tx_root(transactions: tuple[Transaction, ...]) -> Digest:
    """RFC 6962 root over the transactions' payloads, in block order."""
    return Digest(compute_root([tx.payload for tx in transactions]))


@dataclass(frozen=True, slots=True)
class Block:
    """A header and the transactions its ``tx_root`` commits to."""

    header: BlockHeader
    transactions: tuple[Transaction, ...]

    @property
    def block_hash(self) -> Digest:
        return self.header.block_hash

    @property
    def height(self) -> Height:
        return self.header.height

    def check_tx_root(self) -> None:
        """Raise :class:`ChainError` unless ``tx_root`` matches the transactions."""
        actual = compute_tx_root(self.transactions)
        if actual != self.header.tx_root:
            raise ChainError(
                "transactions Merkle root mismatch",
                expected=self.header.tx_root,
                found=actual,
                where=f"height {self.header.height}",
            )

    def to_wire(self) -> dict[str, Value]:
        return {
            "header": self.header.to_wire(),
            "txs": [tx.payload for tx in self.transactions],
        }

    @classmethod
    def from_wire(cls, value: Value) -> Block:
        m = expect_map(value, "block")
        expect_fields(m, "block", frozenset({"header", "txs"}))
        txs = tuple(
            Transaction(expect_bytes(item, "transaction")) for item in expect_list(m["txs"], "txs")
        )
        return cls(BlockHeader.from_wire(m["header"]), txs)


def make_block(
    *,
    domain: DomainId,
    height: Height,
    epoch: Epoch,
    view: View,
    prev_hash: Digest,
    transactions: tuple[Transaction, ...],
    timestamp_ms: int,
    proposer: NodeId,
    state_root: Digest = ZERO_HASH,
) -> Block:
    """Build a block, computing its transactions root."""
    header = BlockHeader(
        domain=domain,
        height=height,
        epoch=epoch,
        view=view,
        prev_hash=prev_hash,
        tx_root=compute_tx_root(transactions),
        state_root=state_root,
        timestamp_ms=timestamp_ms,
        proposer=proposer,
    )
    return Block(header, transactions)


# --------------------------------------------------------------------------
# Votes and quorum certificates
# --------------------------------------------------------------------------

VOTE_DOMAIN_TAG = "belep-vote-v1"


@dataclass(frozen=True, slots=True)
class VoteStatement:
    """What a vote signs: one kind of agreement on one block in one view."""

    kind: str  # "prepare", "commit", "checkpoint", "raft-commit", ... (protocol-defined)
    domain: DomainId
    epoch: Epoch
    view: View
    height: Height
    block_hash: Digest

    def signing_bytes(self) -> bytes:
        return encode(
            [
                VOTE_DOMAIN_TAG,
                self.kind,
                self.domain,
                self.epoch,
                self.view,
                self.height,
                self.block_hash,
            ]
        )


def vote_statement(
    kind: str, domain: DomainId, epoch: Epoch, view: View, height: Height, block_hash: Digest
) -> bytes:
    """The bytes a voter signs for this statement."""
    return VoteStatement(kind, domain, epoch, view, height, block_hash).signing_bytes()


@dataclass(frozen=True, slots=True)
class QuorumCertificate:
    """Signatures of distinct voters over one :class:`VoteStatement`.

    ``signatures`` is sorted by signer id so equal certificates encode equally.
    """

    statement: VoteStatement
    signatures: tuple[tuple[NodeId, bytes], ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.signatures, key=lambda pair: pair[0]))
        object.__setattr__(self, "signatures", ordered)

    @property
    def signers(self) -> tuple[NodeId, ...]:
        return tuple(signer for signer, _ in self.signatures)

    def to_wire(self) -> dict[str, Value]:
        s = self.statement
        return {
            "kind": s.kind,
            "domain": s.domain,
            "epoch": s.epoch,
            "view": s.view,
            "height": s.height,
            "block_hash": s.block_hash,
            "sigs": [[signer, sig] for signer, sig in self.signatures],
        }

    @classmethod
    def from_wire(cls, value: Value) -> QuorumCertificate:
        m = expect_map(value, "certificate")
        expect_fields(
            m,
            "certificate",
            frozenset({"kind", "domain", "epoch", "view", "height", "block_hash", "sigs"}),
        )
        statement = VoteStatement(
            kind=expect_str(m["kind"], "kind"),
            domain=DomainId(expect_str(m["domain"], "domain")),
            epoch=Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            view=View(expect_int(m["view"], "view", minimum=0)),
            height=Height(expect_int(m["height"], "height", minimum=0)),
            block_hash=Digest(expect_bytes(m["block_hash"], "block_hash", size=HASH_SIZE)),
        )
        sigs: list[tuple[NodeId, bytes]] = []
        for item in expect_list(m["sigs"], "sigs"):
            pair = expect_list(item, "signature entry")
            if len(pair) != 2:
                raise ChainError("signature entry must be [signer, signature]", found=len(pair))
            sigs.append((NodeId(expect_str(pair[0], "signer")), expect_bytes(pair[1], "signature")))
        return cls(statement, tuple(sigs))
