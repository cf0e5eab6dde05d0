"""The application state and execution record of one domain on one node (SQLite).

Owns :class:`StateDatabase`, the :class:`~belep.ledger.execution.StateStore`
a node's domain host executes its chain into (``docs/spec/ledger.md``
§Execution, ``docs/spec/node.md`` §Execution): the application's key/value
state and, per executed height, the block hash, its view, the state root
after it, its results and writes roots and every transaction's result code.

Invariants:

* everything here is derived from the chain: executing the chain again from
  an empty database gives the same rows (so it is written with
  ``synchronous=NORMAL``: a crash may lose the last commits, never corrupt
  them, and :meth:`StateDatabase.executed_height` tells the host where to
  resume — the block store, not this file, is the durable record);
* executed heights are ``1..executed_height`` without gaps, each one's block
  the chain's block at that height (the host checks the hash);
* staged executions are visible to :meth:`get` and :meth:`record` at once and
  reach the file only by :meth:`commit` (one SQLite transaction).

Like :mod:`belep.ledger.store`, an I/O edge of the ledger: the only other
ledger module that opens a file. A :class:`StateDatabase` is used by one
thread at a time (the domain host's rounds are sequential).
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from belep.encoding import decode, encode, expect_list, expect_str
from belep.errors import ConfigError, CorruptStore, StorageError, ValidationError
from belep.ledger.block import Digest, Height
from belep.ledger.execution import BlockExecution, TxResult, genesis_state_root
from belep.ledger.genesis import Genesis
from belep.ledger.sqlite import SqliteFile, connect, create_schema, open_header, wrap

__all__ = ["STATE_DB", "ExecutionRecord", "StateDatabase"]

STATE_DB = "state.sqlite3"
#: ``PRAGMA application_id`` of a BELEP state database ("BLES").
APPLICATION_ID = 0x424C4553
SCHEMA_VERSION = 1

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    """CREATE TABLE executions (
        height       INTEGER PRIMARY KEY,
        block_hash   BLOB    NOT NULL,
        view         INTEGER NOT NULL,
        state_root   BLOB    NOT NULL,
        results_root BLOB    NOT NULL,
        writes_root  BLOB    NOT NULL,
        results      BLOB    NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """What executing the block at ``height`` gave (as stored)."""

    height: Height
    block_hash: Digest
    view: int
    state_root: Digest
    results_root: Digest
    writes_root: Digest
    results: tuple[TxResult, ...]


class StateDatabase(SqliteFile):
    """One domain's executed state in one SQLite file. Open with :meth:`open`."""

    __slots__ = ("_pending", "_staged", "genesis")

    def __init__(
        self, conn: sqlite3.Connection, path: Path, genesis: Genesis, readonly: bool
    ) -> None:
        super().__init__(conn, path, readonly)
        self.genesis = genesis
        self._pending: dict[bytes, bytes | None] = {}
        self._staged: list[BlockExecution] = []

    @classmethod
    def open(cls, path: Path, genesis: Genesis, *, readonly: bool = False) -> StateDatabase:
        """Open the database at ``path`` for ``genesis`` (a writer creates it if missing)."""
        if readonly and not path.is_file():
            raise StorageError(f"no state database at {path}")
        conn = connect(path, readonly=readonly)
        db = cls(conn, path, genesis, readonly)
        try:
            db._setup()
        except BaseException:
            conn.close()
            raise
        return db

    def _setup(self) -> None:
        header = open_header(self._conn, self.path, readonly=self.readonly, synchronous="NORMAL")
        if header.empty and not self.readonly:
            create_schema(
                self._conn,
                SCHEMA,
                application_id=APPLICATION_ID,
                version=SCHEMA_VERSION,
                meta=[("genesis_hash", self.genesis.genesis_hash)],
            )
        elif header.application_id != APPLICATION_ID:
            raise CorruptStore(f"{self.path} is not a BELEP state database")
        elif header.version != SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {header.version};"
                f" this BELEP reads {SCHEMA_VERSION}"
            )
        rows = self._query("read meta", "SELECT value FROM meta WHERE key = 'genesis_hash'")
        stored = rows[0][0] if rows else None
        if stored != self.genesis.genesis_hash:
            raise ConfigError(
                "the state database was made for another genesis",
                expected=self.genesis.genesis_hash,
                found=stored,
                where=str(self.path),
            )

    # ------------------------------------------------------------------ StateStore

    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        rows = self._query("read state", "SELECT value FROM state WHERE key = ?", (key,))
        if not rows:
            return None
        value = rows[0][0]
        if not isinstance(value, bytes):
            raise CorruptStore(f"state value under {key!r} is not bytes")
        return value

    def apply(self, execution: BlockExecution) -> None:
        """Stage ``execution`` (its writes and its record); :meth:`commit` writes them."""
        for key, value in execution.writes:
            self._pending[key] = value
        self._staged.append(execution)

    @property
    def dirty(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        """Write every staged execution in one SQLite transaction."""
        if not self._staged:
            return
        if self.readonly:
            raise StorageError("commit: the state database is open read-only")
        conn = self._conn
        rows = [
            (
                e.height,
                e.block_hash,
                e.view,
                e.state_root,
                e.results_root,
                e.writes_root,
                encode([r.code for r in e.results]),
            )
            for e in self._staged
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            for key, value in self._pending.items():
                if value is None:
                    conn.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO state (key, value) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )
            conn.executemany(
                "INSERT INTO executions (height, block_hash, view, state_root, results_root,"
                " writes_root, results) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise wrap(exc, "commit executed blocks") from exc
        self._pending.clear()
        self._staged.clear()

    # ------------------------------------------------------------------ records

    def executed_height(self) -> Height:
        """The last executed height, staged ones included (0: nothing executed)."""
        if self._staged:
            return self._staged[-1].height
        rows = self._query("read executed height", "SELECT max(height) FROM executions")
        value = rows[0][0]
        return Height(0 if value is None else int(value))

    def record(self, height: int) -> ExecutionRecord | None:
        """What executing ``height`` gave (staged or stored); ``None`` if not executed."""
        for execution in reversed(self._staged):
            if execution.height == height:
                return ExecutionRecord(
                    execution.height,
                    execution.block_hash,
                    execution.view,
                    execution.state_root,
                    execution.results_root,
                    execution.writes_root,
                    execution.results,
                )
        rows = self._query(
            "read execution",
            "SELECT height, block_hash, view, state_root, results_root, writes_root, results"
            " FROM executions WHERE height = ?",
            (height,),
        )
        if not rows:
            return None
        h, block_hash, view, state_root, results_root, writes_root, results = rows[0]
        try:
            codes = tuple(
                TxResult(expect_str(c, "result code"))
                for c in expect_list(decode(results), "results")
            )
        except ValidationError as exc:
            raise CorruptStore(f"stored results at height {h} are unreadable: {exc}") from exc
        return ExecutionRecord(
            Height(h),
            Digest(block_hash),
            int(view),
            Digest(state_root),
            Digest(results_root),
            Digest(writes_root),
            codes,
        )

    def root_after(self, height: int) -> Digest | None:
        """The state root after ``height`` (the genesis root at 0)."""
        if height == 0:
            return genesis_state_root(self.genesis.genesis_hash)
        record = self.record(height)
        return None if record is None else record.state_root

    def clear(self) -> None:
        """Forget everything executed (the host re-executes the chain from the genesis)."""
        self._pending.clear()
        self._staged.clear()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM state")
            conn.execute("DELETE FROM executions")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise wrap(exc, "clear the state database") from exc
