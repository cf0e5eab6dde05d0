"""Pinning: every committee member keeps every file a committed transaction references.

Owns :class:`Pinner` (``docs/spec/node.md`` §Pinning). For each domain the
node holds (as voter or observer), it walks the committed chain in height
order from a durable *cursor*, collects the CIDs the transactions reference
(the envelope's ``cids``), and makes each one present and pinned in the
node's content store with :func:`belep.content.fetch.fetch_dag` from the
gateways of the domain's other members (authenticated with a peer token).

Where the CIDs come from: a block committed while this process runs (height
above the tip at :meth:`Pinner.load_cursors`) is looked at once, in memory, by
:meth:`Pinner.on_commit`; only blocks that reference files are remembered and
only they wake the pinner. Blocks committed before the process started (the
crash-recovery range between the durable cursor and that tip) are re-read
from the block store. Between wake-ups the cursor still moves over blocks
without files, on the next pass (at the latest every :data:`IDLE_PASS_S`).

Invariants:

* the cursor of a domain (in ``node-state.sqlite3``, key ``pin/<domain>``)
  only passes height ``h`` once every CID of blocks ``<= h`` is pinned, so a
  crash or a failed fetch resumes where it stopped (fetching is resumable
  block by block);
* a file no peer can serve yet is retried with exponential backoff (capped)
  and never skipped; a fetched block is stored only if it hashes to its CID.

I/O: block-store reads and content writes in worker threads, HTTP through
httpx. Runs as one asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from belep.content.blockstore import Blockstore
from belep.content.cid import parse_cid
from belep.content.fetch import fetch_dag
from belep.errors import BelepError, ValidationError
from belep.ledger.block import Block, DomainId
from belep.ledger.envelope import parse_envelope
from belep.ledger.store import BlockStore
from belep.node.kvstore import ConsensusState

__all__ = ["PinDomain", "Pinner", "cids_of_block"]

log = logging.getLogger("belep.node.pinning")

#: The canonical bytes of ``"cids": []``: an envelope containing them references no file.
_NO_CIDS = b"dcids\x80"
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
#: Longest wait between passes when no block with files wakes the pinner.
IDLE_PASS_S = 5.0


def cids_of_payloads(payloads: Sequence[bytes]) -> list[str]:
    """CIDs referenced by the envelopes among ``payloads`` (others are skipped)."""
    found: list[str] = []
    for payload in payloads:
        if _NO_CIDS in payload:
            continue
        try:
            envelope = parse_envelope(payload)
        except ValidationError:
            continue
        found.extend(c for c in envelope.cids if c not in found)
    return found


def cids_of_block(store: BlockStore, height: int) -> list[str]:
    return cids_of_payloads([tx.payload for tx in store.get_block(height).transactions])


@dataclass(slots=True)
class PinDomain:
    """What the pinner needs to know about one domain."""

    domain: DomainId
    reader: BlockStore  # read-only, used from worker threads only (one at a time)
    gateways: Sequence[str]  # other members' base URLs
    height: Callable[[], int]
    cursor: int = 0
    #: First height committed by this process (seen by ``on_commit``); lower ones are read back.
    memory_from: int = 1
    #: CIDs of in-memory committed blocks at or above ``memory_from`` that reference files.
    found: dict[int, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class Pinner:
    content: Blockstore
    state: ConsensusState
    domains: Mapping[DomainId, PinDomain]
    token: Callable[[], str]
    pinned: int = 0
    failures: int = 0
    pending: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: bool = False

    def load_cursors(self) -> None:
        saved = self.state.load()
        for name, entry in self.domains.items():
            raw = saved.get(f"pin/{name}")
            entry.cursor = int(raw.decode()) if raw else 0
            entry.memory_from = entry.height() + 1
            entry.found.clear()

    def on_commit(self, domain: DomainId, block: Block) -> None:
        """A block just committed (in height order): remember its CIDs; wake only if any."""
        entry = self.domains.get(domain)
        if entry is None or block.height < entry.memory_from:
            return
        cids = cids_of_payloads([tx.payload for tx in block.transactions])
        if cids:
            entry.found[block.height] = cids
            self._wake.set()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def lag(self) -> int:
        """Blocks whose files are not known to be pinned yet.

        Counts every block of the read-back range above the cursor and, above
        it, only the in-memory blocks that reference files.
        """
        total = 0
        for d in self.domains.values():
            total += max(0, min(d.height(), d.memory_from - 1) - d.cursor)
            total += sum(1 for h in d.found if h > d.cursor)
        return total

    async def run(self) -> None:
        backoff = BACKOFF_START_S
        async with httpx.AsyncClient(timeout=30.0) as client:
            while not self._stopped:
                self._wake.clear()
                _, failed = await self._pass(client)
                if self._stopped:
                    return
                if failed:
                    await asyncio.sleep(backoff)
                    backoff = min(BACKOFF_MAX_S, backoff * 2)
                    continue
                backoff = BACKOFF_START_S
                # Returns at once if a block with files committed during the pass.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_PASS_S)

    async def _pass(self, client: httpx.AsyncClient) -> tuple[bool, bool]:
        progressed = False
        for entry in self.domains.values():
            while entry.cursor < entry.height() and not self._stopped:
                height = entry.cursor + 1
                from_store = height < entry.memory_from
                try:
                    if from_store:
                        cids = await asyncio.to_thread(cids_of_block, entry.reader, height)
                    else:
                        cids = entry.found.get(height, [])
                except BelepError as exc:
                    log.warning(
                        "cannot read block %d of %s for pinning: %s",
                        height,
                        entry.domain,
                        exc,
                        extra={"event": "node.pin_read_failed", "domain": entry.domain},
                    )
                    return progressed, True
                self.pending = len(cids)
                for text in cids:
                    if not await self._pin(client, entry, text):
                        return progressed, True
                    self.pending -= 1
                entry.cursor = height
                entry.found.pop(height, None)
                self.state.stage(f"pin/{entry.domain}", str(height).encode())
                progressed = True
                if (from_store or cids) and (height % 64 == 0 or entry.cursor == entry.height()):
                    await asyncio.to_thread(self.state.commit)
        if self.state.dirty:
            await asyncio.to_thread(self.state.commit)
        return progressed, False

    async def _pin(self, client: httpx.AsyncClient, entry: PinDomain, text: str) -> bool:
        cid = parse_cid(text)
        if await asyncio.to_thread(self.content.is_pinned, cid):
            return True
        if not entry.gateways:
            return False
        client.headers["Authorization"] = f"Bearer {self.token()}"
        try:
            report = await fetch_dag(cid, entry.gateways, self.content, client=client, pin=True)
        except BelepError as exc:
            self.failures += 1
            log.warning(
                "cannot pin %s yet: %s",
                text,
                exc,
                extra={"event": "node.pin_failed", "cid": text, "domain": entry.domain},
            )
            return False
        self.pinned += 1
        log.info(
            "pinned %s (%d blocks, %d fetched)",
            text,
            report.blocks,
            report.fetched,
            extra={"event": "node.pinned", "cid": text, "domain": entry.domain},
        )
        return True
