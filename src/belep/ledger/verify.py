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
it certifies this block for the committee the configuration history names
for its height and epoch (:mod:`belep.ledger.certificate`,
:mod:`belep.ledger.config`), every configuration change, and — given the
application — the state root, by executing every block again
(:mod:`belep.ledger.execution`). It stops at the first failure and reports
its height, the check that failed and why; a store that cannot be read (a
damaged database file) is a failure too.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from belep.crypto import sha256
from belep.encoding import decode, encode
from belep.errors import ChainError, StorageError, ValidationError
from belep.ledger.block import Block, BlockHeader, QuorumCertificate, Transaction
from belep.ledger.certificate import SignatureCache, check_block_certificate
from belep.ledger.config import ConfigReplay, chain_replay
from belep.ledger.config_tx import is_config_payload
from belep.ledger.execution import Application, ChainExecutor, MemoryState, StateStore
from belep.ledger.genesis import Genesis
from belep.ledger.merkle import compute_root_from_leaf_hashes, hash_leaf

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
    replay: ConfigReplay,
    executor: ChainExecutor | None = None,
    check_sigs: bool = True,
    cache: SignatureCache | None = None,
) -> tuple[Finding | None, int]:
    """Check one stored block that should follow the block with hash ``prev_hash``.

    ``replay`` names the committee and applies the block's configuration
    change; ``executor`` (optional) executes it, checking its state root.
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
        check = "qc-committee"
        committee = replay.committee(height, qc.statement.epoch)
        check = "qc-statement"
        check_block_certificate(header, qc, committee, check_signatures=False)
        if check_sigs:
            check = "qc-signatures"
            check_block_certificate(header, qc, committee, cache=cache)
        block = Block(header, tuple(Transaction(tx.payload) for tx in stored.txs))
        check = "configuration"
        replay.advance(block)
        if executor is not None:
            check = "state-root"
            executor.execute(block)
    except ValidationError as exc:
        return _finding(height, check, exc), 0
    return None, len(qc.signatures) if check_sigs else 0


def verify_chain(
    reader: ChainReader,
    genesis: Genesis,
    *,
    application: Application | None = None,
    state: StateStore | None = None,
    check_sigs: bool = True,
    on_block: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Walk the whole stored chain; the report's ``finding`` is the first failure or ``None``.

    The committee of each height comes from the chain's configuration
    history, replayed as the walk goes (an HPBFT chain is read once first for
    its revival records). Given ``application``, every block is executed
    again (over ``state``, by default in memory) and each header's state root
    checked against the execution of the blocks below it.
    """
    progress = _Progress(height=0, tip_hash=genesis.genesis_hash)

    def report(finding: Finding | None) -> VerifyReport:
        return VerifyReport(
            domain=genesis.domain,
            genesis_hash=genesis.genesis_hash,
            blocks=progress.height,
            transactions=progress.transactions,
            signatures=progress.signatures,
            tip_height=progress.height,
            tip_hash=progress.tip_hash,
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
    try:
        replay = chain_replay(genesis, lambda: _blocks_of(reader))
    except (StorageError, ValidationError) as exc:
        return report(Finding(1, "storage", f"cannot read the store: {exc}"))
    executor = None
    if application is not None:
        executor = ChainExecutor.from_genesis(
            application,
            MemoryState() if state is None else state,
            genesis.genesis_hash,
            term_start_root_unknown=genesis.term_start_root_unknown,
        )
    blocks = reader.stored_blocks(1)
    while True:
        try:
            stored = next(blocks, None)
        except StorageError as exc:
            return report(Finding(progress.height + 1, "storage", f"cannot read the store: {exc}"))
        if stored is None:
            break
        expected = progress.height + 1
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
        finding, signatures = verify_block(
            stored,
            genesis=genesis,
            prev_hash=progress.tip_hash,
            replay=replay,
            executor=executor,
            check_sigs=check_sigs,
        )
        if finding is not None:
            return report(finding)
        progress.height = stored.height
        progress.tip_hash = stored.block_hash
        progress.transactions += len(stored.txs)
        progress.signatures += signatures
        if on_block is not None:
            on_block(stored.height)
    try:
        rows = reader.count_stored_transactions()
    except StorageError as exc:
        return report(Finding(progress.height, "storage", f"cannot read the store: {exc}"))
    if rows != progress.transactions:
        return report(
            Finding(
                progress.height,
                "orphan-transactions",
                "transaction rows that belong to no stored block",
                str(progress.transactions),
                str(rows),
            )
        )
    return report(None)


def _blocks_of(reader: ChainReader) -> Iterator[Block]:
    """The stored blocks that carry a configuration transaction (unchecked beyond
    decoding): what the revival pre-scan reads."""
    for stored in reader.stored_blocks(1):
        if any(is_config_payload(tx.payload) for tx in stored.txs):
            header = BlockHeader.decode(stored.header)
            yield Block(header, tuple(Transaction(tx.payload) for tx in stored.txs))
