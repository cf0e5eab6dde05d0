"""Chain rules, and the walk that checks a whole stored chain against them.

The rules (``check_*``) are small pure functions shared by the block store
(which refuses a block that breaks one) and by :func:`verify_chain` (which
re-checks everything that was stored). Each raises a
:class:`~belep.errors.ValidationError` subclass carrying what was expected and
what was found.

:func:`verify_chain` reads through the :class:`ChainReader` interface (the
SQLite store implements it; tests may implement it in memory) and trusts
nothing it reads: not the stored block hashes, not the stored transaction
hashes, not the stored certificates. It checks, block by block from height 1:
heights without gaps, canonical header bytes, the block hash, the link to the
previous block (the genesis hash at height 1), the domain, every transaction's
hash, the transactions' Merkle root, the certificate's canonical bytes, that
it certifies this block, and its signatures against the committee that
:func:`belep.ledger.genesis.committee_at` names for the height. It stops at
the first failure and reports its height, the check that failed and why; a
store that cannot be read (a damaged database file) is a failure too.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from belep.crypto import sha256
from belep.encoding import decode, encode
from belep.errors import ChainError, StorageError, ValidationError
from belep.ledger.block import (
    BlockHeader,
    Height,
    QuorumCertificate,
)
from belep.ledger.genesis import Committee, Genesis, committee_at
from belep.ledger.merkle import compute_root_from_leaf_hashes, hash_leaf

CommitteeSource = Callable[[Height], Committee]

# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------


def check_extends(
    header: BlockHeader, *, domain: str, height: int, prev_hash: bytes, where: str
) -> None:
    """The header continues the chain whose tip is (``height - 1``, ``prev_hash``)."""
    if header.domain != domain:
        raise ChainError(
            "block of another domain", expected=domain, found=header.domain, where=where
        )
    if header.height != height:
        raise ChainError(
            "block height does not extend the tip",
            expected=height,
            found=header.height,
            where=where,
        )
    if header.prev_hash != prev_hash:
        raise ChainError(
            "previous-block hash does not match the tip",
            expected=prev_hash,
            found=header.prev_hash,
            where=where,
        )


def check_tx_root(header: BlockHeader, payloads: list[bytes], *, where: str) -> None:
    """``header.tx_root`` is the RFC 6962 root over ``payloads``."""
    root = compute_root_from_leaf_hashes([hash_leaf(p) for p in payloads])
    if root != header.tx_root:
        raise ChainError(
            "transactions Merkle root mismatch", expected=header.tx_root, found=root, where=where
        )


def check_certifies(
    header: BlockHeader, qc: QuorumCertificate, committee: Committee, *, where: str
) -> None:
    """The certificate's statement commits exactly this block.

    Kind is the committee's commit kind; domain, height and block hash are
    the header's; epoch and view are not earlier than the header's (a block
    may be certified in a later view than the one it was proposed in).
    """
    s = qc.statement
    if s.kind != committee.commit_kind:
        raise ChainError(
            "certificate is not a commit certificate",
            expected=committee.commit_kind,
            found=s.kind,
            where=where,
        )
    if s.block_hash != header.block_hash:
        raise ChainError(
            "certificate is for another block",
            expected=header.block_hash,
            found=s.block_hash,
            where=where,
        )
    if s.domain != header.domain:
        raise ChainError(
            "certificate is for another domain", expected=header.domain, found=s.domain, where=where
        )
    if s.height != header.height:
        raise ChainError(
            "certificate is for another height", expected=header.height, found=s.height, where=where
        )
    if (s.epoch, s.view) < (header.epoch, header.view):
        raise ChainError(
            "certificate predates the block's epoch and view",
            expected=f">= epoch {header.epoch} view {header.view}",
            found=f"epoch {s.epoch} view {s.view}",
            where=where,
        )


def check_signatures(qc: QuorumCertificate, committee: Committee) -> None:
    """At least a quorum of distinct committee members validly signed the statement."""
    qc.verify(committee.keys, committee.quorum)


# --------------------------------------------------------------------------
# What a store hands the verifier
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredTx:
    """A transaction row as stored: its index, stored hash and payload."""

    index: int
    tx_hash: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block as stored: row height, stored hash, raw header and certificate bytes, rows."""

    height: int
    block_hash: bytes
    header: bytes
    qc: bytes
    tx_count: int
    txs: tuple[StoredTx, ...]


class ChainReader(Protocol):
    """Read access to a stored chain, in raw form."""

    def stored_genesis_hash(self) -> bytes:
        """The genesis hash the store was created for."""
        ...

    def stored_blocks(self, start: int = 1) -> Iterator[StoredBlock]:
        """Every stored block from height ``start`` upwards, in height order."""
        ...

    def count_stored_transactions(self) -> int:
        """Number of transaction rows, whatever block they claim to belong to."""
        ...


@dataclass(frozen=True, slots=True)
class Finding:
    """The first thing found wrong: where (height, 0 = genesis), which check, and why."""

    height: int
    check: str
    message: str
    expected: str | None = None
    found: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "height": self.height,
            "check": self.check,
            "message": self.message,
            "expected": self.expected,
            "found": self.found,
        }


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of :func:`verify_chain`."""

    domain: str
    genesis_hash: bytes
    blocks: int
    transactions: int
    signatures: int
    tip_height: int
    tip_hash: bytes
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "domain": self.domain,
            "genesis_hash": self.genesis_hash.hex(),
            "blocks": self.blocks,
            "transactions": self.transactions,
            "signatures": self.signatures,
            "tip_height": self.tip_height,
            "tip_hash": self.tip_hash.hex(),
            "finding": None if self.finding is None else self.finding.to_json(),
        }


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _finding(height: int, check: str, exc: ValidationError) -> Finding:
    message = exc.message if exc.where is None else f"{exc.message} ({exc.where})"
    return Finding(height, check, message, _text(exc.expected), _text(exc.found))


# --------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Progress:
    height: int
    tip_hash: bytes
    transactions: int = 0
    signatures: int = 0


def verify_block(
    stored: StoredBlock,
    *,
    genesis: Genesis,
    prev_hash: bytes,
    committee: Committee,
    check_sigs: bool = True,
) -> tuple[Finding | None, int]:
    """Check one stored block that should follow the block with hash ``prev_hash``.

    Returns the first finding (or ``None``) and the number of signatures checked.
    """
    height = stored.height
    where = f"height {height}"
    check = "header-encoding"
    try:
        header = BlockHeader.decode(stored.header)
        check = "block-hash"
        computed = sha256(stored.header)
        if computed != stored.block_hash:
            raise ChainError(
                "header bytes do not hash to the stored block hash",
                expected=stored.block_hash,
                found=computed,
            )
        check = "link"
        check_extends(
            header, domain=genesis.domain, height=height, prev_hash=prev_hash, where=where
        )
        check = "tx-count"
        indices = [tx.index for tx in stored.txs]
        if len(stored.txs) != stored.tx_count or indices != list(range(len(indices))):
            raise ChainError(
                "stored transactions do not match the block's transaction count",
                expected=f"indices 0..{stored.tx_count - 1}",
                found=f"{len(indices)} rows, indices {indices[:3]}…" if indices else "no rows",
            )
        check = "tx-hash"
        for tx in stored.txs:
            computed = sha256(tx.payload)
            if computed != tx.tx_hash:
                raise ChainError(
                    "transaction payload does not hash to its stored hash",
                    expected=tx.tx_hash,
                    found=computed,
                    where=f"transaction {tx.index}",
                )
        check = "tx-root"
        check_tx_root(header, [tx.payload for tx in stored.txs], where=where)
        check = "qc-encoding"
        qc = QuorumCertificate.from_wire(decode(stored.qc))
        if encode(qc.to_wire()) != stored.qc:
            raise ChainError("certificate bytes are not canonical", where=where)
        check = "qc-statement"
        check_certifies(header, qc, committee, where=where)
        if check_sigs:
            check = "qc-signatures"
            check_signatures(qc, committee)
    except ValidationError as exc:
        return _finding(height, check, exc), 0
    return None, len(qc.signatures) if check_sigs else 0


def verify_chain(
    reader: ChainReader,
    genesis: Genesis,
    *,
    committee_source: CommitteeSource | None = None,
    check_sigs: bool = True,
    on_block: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Walk the whole stored chain; the report's ``finding`` is the first failure or ``None``."""
    source = committee_source or (lambda h: committee_at(genesis, h))
    state = _Progress(height=0, tip_hash=genesis.genesis_hash)

    def report(finding: Finding | None) -> VerifyReport:
        return VerifyReport(
            domain=genesis.domain,
            genesis_hash=genesis.genesis_hash,
            blocks=state.height,
            transactions=state.transactions,
            signatures=state.signatures,
            tip_height=state.height,
            tip_hash=state.tip_hash,
            finding=finding,
        )

    try:
        stored_genesis = reader.stored_genesis_hash()
    except StorageError as exc:
        return report(Finding(0, "storage", f"cannot read the store: {exc}"))
    if stored_genesis != genesis.genesis_hash:
        return report(
            Finding(
                0,
                "genesis",
                "the store was created for another genesis",
                genesis.genesis_hash.hex(),
                stored_genesis.hex(),
            )
        )
    blocks = reader.stored_blocks(1)
    while True:
        try:
            stored = next(blocks, None)
        except StorageError as exc:
            return report(Finding(state.height + 1, "storage", f"cannot read the store: {exc}"))
        if stored is None:
            break
        expected = state.height + 1
        if stored.height != expected:
            return report(
                Finding(
                    expected,
                    "missing-block",
                    "no block stored at this height",
                    str(expected),
                    str(stored.height),
                )
            )
        committee = source(Height(stored.height))
        finding, signatures = verify_block(
            stored,
            genesis=genesis,
            prev_hash=state.tip_hash,
            committee=committee,
            check_sigs=check_sigs,
        )
        if finding is not None:
            return report(finding)
        state.height = stored.height
        state.tip_hash = stored.block_hash
        state.transactions += len(stored.txs)
        state.signatures += signatures
        if on_block is not None:
            on_block(stored.height)
    try:
        rows = reader.count_stored_transactions()
    except StorageError as exc:
        return report(Finding(state.height, "storage", f"cannot read the store: {exc}"))
    if rows != state.transactions:
        return report(
            Finding(
                state.height,
                "orphan-transactions",
                "transaction rows that belong to no stored block",
                str(state.transactions),
                str(rows),
            )
        )
    return report(None)
