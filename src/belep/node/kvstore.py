"""Durable storage of a replica's ``Persist`` effects: one SQLite key-value file per domain.

Owns ``domains/<id>/consensus.sqlite3`` (table ``kv(key TEXT PRIMARY KEY,
value BLOB)``). The host stages every ``Persist`` of a round of events with
:meth:`ConsensusState.stage` and makes them durable together with
:meth:`ConsensusState.commit` — one SQLite transaction, WAL with
``synchronous=FULL``, so one fsync per round (group commit) — before it
executes any later effect that another node could observe.

Invariants: after :meth:`~ConsensusState.commit` returns, every staged
write (``None`` deletes) is on disk, atomically; a crash before leaves none
of them. :meth:`~ConsensusState.load` returns exactly the committed map, which
the host passes to the replica's constructor on restart. Every ``sqlite3``
error becomes :class:`~belep.errors.StorageError`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from belep.errors import StorageError

__all__ = ["CONSENSUS_DB", "ConsensusState"]

CONSENSUS_DB = "consensus.sqlite3"


class ConsensusState:
    """A replica's persisted key-value state with staged, grouped commits."""

    __slots__ = ("_conn", "_staged", "commits", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open consensus state {path}: {exc}") from exc
        self._staged: dict[str, bytes | None] = {}
        self.commits = 0

    def load(self) -> dict[str, bytes]:
        """Every committed key and value."""
        try:
            rows = self._conn.execute("SELECT key, value FROM kv").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read consensus state {self.path}: {exc}") from exc
        return {str(k): bytes(v) for k, v in rows}

    def stage(self, key: str, value: bytes | None) -> None:
        """Record a write for the next :meth:`commit` (the last write of a key wins)."""
        self._staged[key] = value

    @property
    def dirty(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        """Make every staged write durable in one transaction (no-op when nothing is staged)."""
        if not self._staged:
            return
        staged, self._staged = self._staged, {}
        puts = [(k, v) for k, v in staged.items() if v is not None]
        deletes = [(k,) for k, v in staged.items() if v is None]
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if puts:
                    conn.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", puts)
                if deletes:
                    conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write consensus state {self.path}: {exc}") from exc
        self.commits += 1

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot close consensus state {self.path}: {exc}") from exc
