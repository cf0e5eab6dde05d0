"""The block store: one SQLite database per node and domain.

The only ledger module that does I/O (and the only one that may import
``sqlite3``). It keeps, for one domain's chain: each block's canonical
header bytes and its commit certificate's canonical bytes, and each
transaction's payload indexed by transaction hash with its height and index.
The schema is in ``docs/spec/ledger.md``.

Invariants:

* The stored blocks are exactly heights ``1..tip`` and form a valid chain
  under the rules of :mod:`belep.ledger.verify`: :meth:`BlockStore.append`
  checks a block against the tip *inside* the write transaction and refuses
  (:class:`~belep.errors.ChainError`, with expected and found) a block whose
  height is not ``tip + 1``, whose previous hash is not the tip's hash (the
  genesis hash at height 1), whose transactions root is wrong, or whose
  certificate does not commit this block. A refused append changes nothing.
* An append is one SQLite transaction in WAL mode with ``synchronous=FULL``:
  when :meth:`~BlockStore.append` returns, the block, its transactions and
  its certificate are on disk (fsync) and survive ``kill -9`` or power loss;
  a crash before that leaves no trace of the block.
* Reads re-check what they return where it is cheap (header bytes against
  the stored block hash, payloads against transaction hashes, the
  transactions root, the certificate statement) and raise
  :class:`~belep.errors.CorruptStore` on a mismatch. Certificate signatures
  are checked by :func:`belep.ledger.verify.verify_chain`, not on every read.
* Every ``sqlite3`` error is wrapped in :class:`~belep.errors.StorageError`
  (:class:`~belep.errors.CorruptStore` for a malformed database file).

Concurrency: one writer per database; any number of readers, in this or
other processes, open with ``readonly=True`` and see each append atomically
(WAL snapshots). A :class:`BlockStore` object is not safe for concurrent use
from several threads; give each thread its own or serialise access.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belep.encoding import decode, encode
from belep.errors import (
    ChainError,
    ConfigError,
    CorruptStore,
    NotFound,
    StorageError,
    ValidationError,
)
from belep.ledger.block import (
    Block,
    BlockHeader,
    Digest,
    Height,
    QuorumCertificate,
    Transaction,
)
from belep.ledger.certificate import check_block_certificate, check_names_block
from belep.ledger.genesis import Committee, Genesis
from belep.ledger.merkle import InclusionProof, hash_leaf, inclusion_proof
from belep.ledger.sqlite import SqliteFile, connect, create_schema, open_header, wrap
from belep.ledger.verify import StoredBlock, StoredTx, check_extends, check_tx_root

#: ``PRAGMA application_id`` of a BELEP chain database ("BLEP").
APPLICATION_ID = 0x424C4550
#: ``PRAGMA user_version``: the schema version below.
SCHEMA_VERSION = 1
_READ_CHUNK = 128

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    """CREATE TABLE blocks (
        height     INTEGER PRIMARY KEY,
        block_hash BLOB    NOT NULL UNIQUE,
        header     BLOB    NOT NULL,
        qc         BLOB    NOT NULL,
        tx_count   INTEGER NOT NULL
    )""",
    """CREATE TABLE txs (
        height  INTEGER NOT NULL,
        idx     INTEGER NOT NULL,
        tx_hash BLOB    NOT NULL,
        payload BLOB    NOT NULL,
        PRIMARY KEY (height, idx)
    ) WITHOUT ROWID""",
    "CREATE INDEX txs_by_hash ON txs (tx_hash)",
)


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last stored block (height 0 and the genesis hash for an empty chain)."""

    height: Height
    block_hash: Digest


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A stored transaction and where it is: block height, index in the block, block hash."""

    tx: Transaction
    height: Height
    index: int
    block_hash: Digest


@dataclass(frozen=True, slots=True)
class TxLocation:
    """Where a stored transaction is (from the index; its payload is not read)."""

    tx_hash: Digest
    height: Height
    index: int
    block_hash: Digest


#: Transaction hashes looked up per query by :meth:`BlockStore.locate_transactions`.
_LOCATE_CHUNK = 500
_LOCATE_SQL = (
    "SELECT t.tx_hash, t.height, t.idx, b.block_hash FROM txs AS t"
    " JOIN blocks AS b ON b.height = t.height"
    " WHERE t.tx_hash IN ({marks}) ORDER BY t.height, t.idx"
)


@dataclass(frozen=True, slots=True)
class TxInclusion:
    """A transaction, the header of its block and the proof that the header's root covers it."""

    record: TxRecord
    header: BlockHeader
    proof: InclusionProof

    def verify(self) -> None:
        """Re-check the proof against the header (raises ``ProofMismatch``/``MalformedProof``)."""
        self.proof.verify(hash_leaf(self.record.tx.payload), self.header.tx_root)


def _blob(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise CorruptStore(f"stored {what} is {type(value).__name__}, not bytes")
    return value


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise CorruptStore(f"stored {what} is {type(value).__name__}, not an integer")
    return value


class BlockStore(SqliteFile):
    """One domain's chain in one SQLite file. Open with :meth:`open`."""

    __slots__ = ("genesis",)

    def __init__(
        self, conn: sqlite3.Connection, path: Path, genesis: Genesis, readonly: bool
    ) -> None:
        super().__init__(conn, path, readonly)
        self.genesis = genesis

    # ----------------------------------------------------------------------
    # Opening and closing
    # ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        genesis: Genesis,
        *,
        readonly: bool = False,
    ) -> BlockStore:
        """Open the store at ``path`` for ``genesis``; a writer creates it if it is missing.

        Reopening after a crash needs nothing special: SQLite rolls back an
        unfinished append. Raises :class:`ConfigError` if the database was
        created for another genesis, :class:`NotFound` if a reader finds no
        database, :class:`CorruptStore` if the file is not a BELEP chain.
        """
        if readonly and not path.is_file():
            raise NotFound(f"chain database {path}")
        conn = connect(path, readonly=readonly)
        store = cls(conn, path, genesis, readonly)
        try:
            store._setup()
        except BaseException:
            conn.close()
            raise
        return store

    def _setup(self) -> None:
        header = open_header(self._conn, self.path, readonly=self.readonly, synchronous="FULL")
        if header.empty:
            if self.readonly:
                raise NotFound(f"chain database {self.path} (empty file)")
            create_schema(
                self._conn,
                SCHEMA,
                application_id=APPLICATION_ID,
                version=SCHEMA_VERSION,
                meta=[
                    ("domain", self.genesis.domain.encode()),
                    ("genesis_hash", self.genesis.genesis_hash),
                    ("genesis", self.genesis.encode()),
                ],
            )
        elif header.application_id != APPLICATION_ID:
            raise CorruptStore(f"{self.path} is not a BELEP chain database")
        elif header.version != SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {header.version};"
                f" this BELEP reads {SCHEMA_VERSION}"
            )
        stored = self.stored_genesis_hash()
        if stored != self.genesis.genesis_hash:
            raise ConfigError(
                "the chain database was created for another genesis",
                expected=self.genesis.genesis_hash,
                found=stored,
                where=str(self.path),
            )

    def checkpoint(self) -> None:
        """Fold the WAL into the main database file (``PRAGMA wal_checkpoint(TRUNCATE)``)."""
        self._query("checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StorageError(f"{what}: the store is open read-only")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise wrap(exc, what) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):  # the transaction may be gone already (failed COMMIT)
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise wrap(exc, what) from exc
            raise

    # ----------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------

    def append(
        self, block: Block, qc: QuorumCertificate, *, committee: Committee | None = None
    ) -> None:
        """Store ``block`` with its commit certificate ``qc``, atomically and durably.

        The certificate must name this block (``check_names_block``); given
        the ``committee`` of its height, it is checked in full, signatures
        included (the consensus layer has normally done so already). Raises
        :class:`ChainError` (or a certificate error) and stores nothing if
        the block does not extend the chain.
        """
        header = block.header
        where = f"height {header.height}"
        if header.height < 1:
            raise ChainError("blocks start at height 1", expected=">= 1", found=header.height)
        check_tx_root(header, [tx.payload for tx in block.transactions], where=where)
        if committee is None:
            check_names_block(header, qc, self.genesis.commit_kind)
        else:
            check_block_certificate(header, qc, committee)
        header_bytes = header.encode()
        qc_bytes = encode(qc.to_wire())
        rows = [
            (header.height, index, tx.tx_hash, tx.payload)
            for index, tx in enumerate(block.transactions)
        ]
        with self._write(f"append block at {where}") as conn:
            tip = self._tip_in(conn)
            check_extends(
                header,
                domain=self.genesis.domain,
                height=tip.height + 1,
                prev_hash=tip.block_hash,
                where=where,
            )
            conn.execute(
                "INSERT INTO blocks (height, block_hash, header, qc, tx_count) VALUES (?, ?, ?, ?, ?)",
                (header.height, header.block_hash, header_bytes, qc_bytes, len(rows)),
            )
            conn.executemany(
                "INSERT INTO txs (height, idx, tx_hash, payload) VALUES (?, ?, ?, ?)", rows
            )

    def _tip_in(self, conn: sqlite3.Connection) -> ChainTip:
        row = conn.execute(
            "SELECT height, block_hash FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return ChainTip(Height(0), self.genesis.genesis_hash)
        return ChainTip(Height(_int(row[0], "height")), Digest(_blob(row[1], "block hash")))

    # ----------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------

    def tip(self) -> ChainTip:
        """The last stored block's height and hash."""
        try:
            return self._tip_in(self._conn)
        except sqlite3.Error as exc:
            raise wrap(exc, "read tip") from exc

    def stored_genesis_hash(self) -> bytes:
        rows = self._query("read meta", "SELECT value FROM meta WHERE key = 'genesis_hash'")
        if not rows:
            raise CorruptStore(f"{self.path} has no genesis hash")
        return _blob(rows[0][0], "genesis hash")

    def get_header(self, height: int) -> BlockHeader:
        """The header at ``height``, checked against its stored hash."""
        rows = self._query(
            "read header",
            "SELECT block_hash, header FROM blocks WHERE height = ?",
            (height,),
        )
        if not rows:
            raise NotFound(f"block at height {height}")
        return self._header(height, rows[0][0], rows[0][1])

    def _header(self, height: int, stored_hash: object, raw: object) -> BlockHeader:
        block_hash = _blob(stored_hash, f"block hash at height {height}")
        header_bytes = _blob(raw, f"header at height {height}")
        try:
            header = BlockHeader.decode(header_bytes)
        except ValidationError as exc:
            raise CorruptStore(f"stored header at height {height} is unreadable: {exc}") from exc
        if header.block_hash != block_hash or header.height != height:
            raise CorruptStore(f"stored header at height {height} does not match its block hash")
        return header

    def _certificate(self, header: BlockHeader, raw: object) -> QuorumCertificate:
        where = f"height {header.height}"
        try:
            qc = QuorumCertificate.from_wire(decode(_blob(raw, f"certificate at {where}")))
            check_names_block(header, qc, self.genesis.commit_kind)
        except ValidationError as exc:
            raise CorruptStore(f"stored certificate at {where} is invalid: {exc}") from exc
        return qc

    def _transactions(self, header: BlockHeader, tx_count: object, rows: list[Any]) -> Block:
        where = f"height {header.height}"
        count = _int(tx_count, f"transaction count at {where}")
        txs: list[Transaction] = []
        for index, (idx, tx_hash, payload) in enumerate(rows):
            tx = Transaction(_blob(payload, f"transaction at {where}"))
            if idx != index or tx.tx_hash != tx_hash:
                raise CorruptStore(f"stored transaction {index} at {where} does not match its hash")
            txs.append(tx)
        if len(txs) != count:
            raise CorruptStore(f"block at {where} has {len(txs)} of its {count} transactions")
        try:
            check_tx_root(header, [tx.payload for tx in txs], where=where)
        except ChainError as exc:
            raise CorruptStore(f"stored transactions at {where} do not match the header") from exc
        return Block(header, tuple(txs))

    def get_committed(self, height: int) -> tuple[Block, QuorumCertificate]:
        """The block at ``height`` with its commit certificate, re-checked."""
        for committed in self.iter_committed(height, height):
            return committed
        raise NotFound(f"block at height {height}")

    def get_block(self, height: int) -> Block:
        return self.get_committed(height)[0]

    def get_certificate(self, height: int) -> QuorumCertificate:
        return self.get_committed(height)[1]

    def get_block_by_hash(self, block_hash: bytes) -> Block:
        rows = self._query(
            "find block", "SELECT height FROM blocks WHERE block_hash = ?", (block_hash,)
        )
        if not rows:
            raise NotFound(f"block {block_hash.hex()}")
        block = self.get_block(_int(rows[0][0], "height"))
        if block.block_hash != block_hash:
            raise CorruptStore(f"block index entry {block_hash.hex()} points at another block")
        return block

    def iter_committed(
        self, start: int = 1, end: int | None = None
    ) -> Iterator[tuple[Block, QuorumCertificate]]:
        """Blocks ``start..end`` (inclusive; ``end=None``: to the tip) with their certificates.

        For state transfer: reads in chunks, so a long iteration holds no
        database snapshot open between chunks.
        """
        for stored in self.stored_blocks(start, end):
            header = self._header(stored.height, stored.block_hash, stored.header)
            rows = [(tx.index, tx.tx_hash, tx.payload) for tx in stored.txs]
            block = self._transactions(header, stored.tx_count, rows)
            yield block, self._certificate(header, stored.qc)

    def get_transaction(self, tx_hash: bytes) -> TxRecord:
        """The first stored transaction with this hash, and where it is."""
        rows = self._query(
            "find transaction",
            "SELECT t.height, t.idx, t.payload, b.block_hash, b.tx_count FROM txs AS t"
            " JOIN blocks AS b ON b.height = t.height"
            " WHERE t.tx_hash = ? ORDER BY t.height, t.idx LIMIT 1",
            (tx_hash,),
        )
        if not rows:
            raise NotFound(f"transaction {tx_hash.hex()}")
        height, index, payload, block_hash, count = rows[0]
        tx = Transaction(_blob(payload, "transaction payload"))
        if tx.tx_hash != tx_hash or not 0 <= _int(index, "index") < _int(count, "count"):
            raise CorruptStore(f"stored transaction {tx_hash.hex()} does not match its hash")
        return TxRecord(
            tx, Height(_int(height, "height")), index, Digest(_blob(block_hash, "block hash"))
        )

    def locate_transactions(self, tx_hashes: Sequence[bytes]) -> dict[bytes, TxLocation]:
        """Where each of ``tx_hashes`` is stored (its first occurrence); absent ones are
        left out. One indexed query per 500 hashes, payloads unread: for "is it on the
        chain?" (the reads that return a transaction re-check it against its hash)."""
        found: dict[bytes, TxLocation] = {}
        unique = list(dict.fromkeys(tx_hashes))
        for start in range(0, len(unique), _LOCATE_CHUNK):
            chunk = unique[start : start + _LOCATE_CHUNK]
            # Only placeholders are joined into the SQL; the hashes are bound parameters.
            marks = ",".join("?" * len(chunk))
            sql = _LOCATE_SQL.format(marks=marks)
            rows = self._query("locate transactions", sql, tuple(chunk))
            for tx_hash, height, index, block_hash in rows:
                key = _blob(tx_hash, "transaction hash")
                if key not in found:
                    found[key] = TxLocation(
                        Digest(key),
                        Height(_int(height, "height")),
                        _int(index, "index"),
                        Digest(_blob(block_hash, "block hash")),
                    )
        return found

    def get_inclusion_proof(self, tx_hash: bytes) -> TxInclusion:
        """A transaction with the header of its block and its Merkle inclusion proof."""
        record = self.get_transaction(tx_hash)
        header = self.get_header(record.height)
        rows = self._query(
            "read block transactions",
            "SELECT payload FROM txs WHERE height = ? ORDER BY idx",
            (record.height,),
        )
        leaves = [hash_leaf(_blob(row[0], "transaction payload")) for row in rows]
        proof = inclusion_proof(leaves, record.index)
        result = TxInclusion(record, header, proof)
        try:
            result.verify()
        except ValidationError as exc:
            raise CorruptStore(
                f"stored transactions at height {record.height} do not match the header"
            ) from exc
        return result

    # ----------------------------------------------------------------------
    # Raw access for verification (belep.ledger.verify.ChainReader)
    # ----------------------------------------------------------------------

    def stored_blocks(self, start: int = 1, end: int | None = None) -> Iterator[StoredBlock]:
        """Stored blocks from ``start`` (to ``end``), unparsed and unchecked, in height order."""
        last = end if end is not None else (1 << 62)
        next_height = start
        while next_height <= last:
            blocks = self._query(
                "read blocks",
                "SELECT height, block_hash, header, qc, tx_count FROM blocks"
                " WHERE height >= ? AND height <= ? ORDER BY height LIMIT ?",
                (next_height, last, _READ_CHUNK),
            )
            if not blocks:
                return
            low = _int(blocks[0][0], "height")
            high = _int(blocks[-1][0], "height")
            tx_rows = self._query(
                "read transactions",
                "SELECT height, idx, tx_hash, payload FROM txs"
                " WHERE height >= ? AND height <= ? ORDER BY height, idx",
                (low, high),
            )
            by_height: dict[object, list[tuple[object, object, object]]] = {}
            for height, idx, tx_hash, payload in tx_rows:
                by_height.setdefault(height, []).append((idx, tx_hash, payload))
            for height, block_hash, header, qc, tx_count in blocks:
                where = f"at height {height}"
                txs = tuple(
                    StoredTx(
                        _int(idx, f"transaction index {where}"),
                        _blob(tx_hash, f"transaction hash {where}"),
                        _blob(payload, f"transaction payload {where}"),
                    )
                    for idx, tx_hash, payload in by_height.get(height, ())
                )
                yield StoredBlock(
                    height=_int(height, "height"),
                    block_hash=_blob(block_hash, f"block hash {where}"),
                    header=_blob(header, f"header {where}"),
                    qc=_blob(qc, f"certificate {where}"),
                    tx_count=_int(tx_count, f"transaction count {where}"),
                    txs=txs,
                )
            next_height = high + 1

    def count_stored_transactions(self) -> int:
        return _int(self._query("count transactions", "SELECT count(*) FROM txs")[0][0], "count")

    def integrity_check(self) -> list[str]:
        """SQLite's own ``PRAGMA integrity_check`` (page-level damage); empty when sound."""
        rows = self._query("integrity check", "PRAGMA integrity_check")
        messages = [str(r[0]) for r in rows]
        return [] if messages == ["ok"] else messages
