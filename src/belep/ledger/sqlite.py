"""SQLite as the ledger's databases use it: opening, the schema header, errors.

Owns what the block store (:mod:`belep.ledger.store`) and the state database
(:mod:`belep.ledger.state_store`) share: :func:`connect` (a writer's
connection, or a ``mode=ro`` reader's; autocommit, usable from one thread
at a time whichever it is), :func:`open_header` (``busy_timeout``, WAL with the
given ``synchronous`` level for a writer, then the file's ``application_id``,
``user_version`` and whether it is empty), :func:`create_schema` and
:func:`wrap` (every ``sqlite3`` error as a :class:`~belep.errors.StorageError`,
a :class:`~belep.errors.CorruptStore` for a damaged file), and
:class:`SqliteFile`, the base of both: a read that wraps its errors, closing,
use as a context manager.

An I/O edge of the ledger.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from belep.errors import CorruptStore, StorageError

__all__ = ["Header", "SqliteFile", "connect", "create_schema", "open_header", "wrap"]


def wrap(exc: sqlite3.Error, what: str) -> StorageError:
    """``exc`` as the error tree's :class:`StorageError` (``CorruptStore`` if damaged)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptStore(f"{what}: the database file is damaged ({exc})")
    return StorageError(f"{what}: {exc}")


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection to ``path`` (a reader's is ``mode=ro``); raises :class:`StorageError`."""
    try:
        if readonly:
            return sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise wrap(exc, f"cannot open {path}") from exc


@dataclass(frozen=True, slots=True)
class Header:
    """What identifies a database file: its application id, schema version, emptiness."""

    application_id: int
    version: int
    empty: bool


def open_header(
    conn: sqlite3.Connection, path: Path, *, readonly: bool, synchronous: str
) -> Header:
    """Set a connection up (a writer: WAL, ``synchronous``) and read the file's header."""
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"cannot switch {path} to WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except sqlite3.Error as exc:
        raise wrap(exc, f"cannot open {path}") from exc
    return Header(int(app_id), int(version), app_id == 0 and version == 0 and tables == 0)


def create_schema(
    conn: sqlite3.Connection,
    statements: Iterable[str],
    *,
    application_id: int,
    version: int,
    meta: Iterable[tuple[str, bytes]],
) -> None:
    """Create the tables, fill ``meta`` and stamp the header, in one transaction."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            conn.execute(statement)
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta))
        conn.execute(f"PRAGMA application_id = {application_id}")
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise wrap(exc, "create the database schema") from exc


class SqliteFile:
    """A ledger database over one connection: reads whose errors are :class:`StorageError`,
    :meth:`close`, and ``with``."""

    __slots__ = ("_conn", "path", "readonly")

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly

    def _query(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise wrap(exc, what) from exc

    def close(self) -> None:
        """Close the connection (the last one to close folds the WAL into the file)."""
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise wrap(exc, "close") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
