"""Reading committed chains off the event loop, for the node's service.

Owns :class:`ChainReads`: the reads a client request makes of a domain's
block store (a transaction by hash, a block by height) run in a small pool of
worker threads, so a slow disk or a large block never stalls the event loop
that runs the replicas. Each worker opens its own read-only connection to
each domain's chain the first time it needs it (SQLite connections are not
shared between the pool and the event loop, nor between workers); all are
closed by :meth:`ChainReads.close`.

Transaction results come from the domain's state database the same way
(:meth:`ChainReads.result`). A read sees every block whose append has returned (the stores are in WAL
mode and a reader starts a fresh snapshot per query), which is what the
service's commit-watching argument relies on (:mod:`belep.node.service`).

I/O: SQLite reads in worker threads; nothing else.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from belep.errors import DomainNotHeld, StorageError
from belep.ledger.block import Block, DomainId, QuorumCertificate
from belep.ledger.state_store import StateDatabase
from belep.ledger.store import BlockStore, TxLocation

__all__ = ["DEFAULT_WORKERS", "ChainReads"]

#: Worker threads of the pool (reads are short; two keep one slow read from queueing the rest).
DEFAULT_WORKERS = 2

_T = TypeVar("_T")


class ChainReads:
    """Read-only access to the held domains' chains, in worker threads."""

    def __init__(
        self,
        openers: Mapping[DomainId, Callable[[], BlockStore]],
        workers: int = DEFAULT_WORKERS,
        *,
        state_openers: Mapping[DomainId, Callable[[], StateDatabase]] | None = None,
    ) -> None:
        """``openers``: for each held domain, how to open a new read-only store of it;
        ``state_openers``: the same for its executed state (transaction results)."""
        self._openers = dict(openers)
        self._state_openers = dict(state_openers or {})
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="belep-chain-read")
        self._local = threading.local()
        self._opened: list[BlockStore | StateDatabase] = []
        self._lock = threading.Lock()
        self._closed = False

    def _store(self, domain: DomainId) -> BlockStore:
        """This worker's connection to ``domain`` (opened on first use)."""
        stores: dict[DomainId, BlockStore] | None = getattr(self._local, "stores", None)
        if stores is None:
            stores = self._local.stores = {}
        store = stores.get(domain)
        if store is None:
            opener = self._openers.get(domain)
            if opener is None:
                raise DomainNotHeld(domain)
            with self._lock:
                if self._closed:
                    raise StorageError("the node's chain reads are closed")
                store = stores[domain] = opener()
                self._opened.append(store)
        return store

    def _state(self, domain: DomainId) -> StateDatabase:
        """This worker's connection to ``domain``'s executed state (opened on first use)."""
        states: dict[DomainId, StateDatabase] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = {}
        state = states.get(domain)
        if state is None:
            opener = self._state_openers.get(domain)
            if opener is None:
                raise DomainNotHeld(domain)
            with self._lock:
                if self._closed:
                    raise StorageError("the node's chain reads are closed")
                state = states[domain] = opener()
                self._opened.append(state)
        return state

    async def result(self, domain: DomainId, height: int, index: int) -> str | None:
        """The result code of the transaction at ``(height, index)`` (``None``: not yet
        executed here)."""

        def work() -> str | None:
            record = self._state(domain).record(height)
            if record is None or not 0 <= index < len(record.results):
                return None
            return record.results[index].code

        return await self._run(work)

    async def _run(self, work: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def transactions(
        self, domain: DomainId, tx_hashes: Sequence[bytes]
    ) -> list[TxLocation | None]:
        """Where each transaction is on the chain (``None``: not committed), in one hop and
        one indexed query per 500 hashes."""
        if not tx_hashes:
            return []

        def work() -> list[TxLocation | None]:
            found = self._store(domain).locate_transactions(tx_hashes)
            return [found.get(h) for h in tx_hashes]

        return await self._run(work)

    async def committed(self, domain: DomainId, height: int) -> tuple[Block, QuorumCertificate]:
        """The block at ``height`` and its certificate; :class:`NotFound` if there is none."""
        return await self._run(lambda: self._store(domain).get_committed(height))

    def close(self) -> None:
        """Wait for the reads in progress, then close every connection (idempotent)."""
        self._pool.shutdown(wait=True)
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for store in opened:
            try:
                store.close()
            except StorageError:
                continue
