"""Replication: fetch a whole DAG by CID from peers' trustless gateways.

Owns: :func:`fetch_dag`, the primitive a committee member uses to pin a
committed file (DESIGN §5): walk the DAG from its root, take every block that
is already in the local store from there, and download each missing block as
``GET {peer}/ipfs/{cid}?format=raw`` from one of the peers.

Invariants:

* Trust nothing a peer sends: a response is stored only if its bytes hash to
  the CID that was asked for and it is at most ``MAX_BLOCK_SIZE`` long.
  Anything else (wrong bytes, HTTP error, transport failure, timeout) counts
  against that peer for that block, and the next peer is asked.
* Resumable: blocks already present (and verifying) are never downloaded
  again; blocks downloaded before a failure are committed to the store
  before the error is raised, so the next call continues where this one
  stopped.
* Bounded: at most ``concurrency`` requests are in flight, and at most
  ``concurrency`` blocks are held in memory.
* The root is pinned only when every block of the DAG is durably stored.

This is an I/O edge (asyncio + httpx); store reads and writes run in worker
threads so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from belep.content.blockstore import MAX_BLOCK_SIZE, Blockstore
from belep.content.blockwriter import BlockWriter
from belep.content.cid import RAW, Cid, verify_block
from belep.content.dagpb import decode_pbnode
from belep.errors import (
    ConfigError,
    CorruptStore,
    EncodingError,
    HashMismatch,
    NotFound,
    PeerUnavailable,
)

RAW_ACCEPT = "application/vnd.ipld.raw"


@dataclass(frozen=True, slots=True)
class FetchReport:
    """What :func:`fetch_dag` did."""

    root: Cid
    blocks: int
    """Distinct blocks in the DAG."""
    fetched: int
    """Blocks downloaded and stored by this call."""
    present: int
    """Blocks that were already in the store."""
    bytes_fetched: int
    rejected: tuple[str, ...]
    """One line per refused answer (peer, CID, reason), e.g. a corrupted block."""


@dataclass(slots=True)
class _State:
    queue: asyncio.Queue[Cid]
    seen: set[Cid] = field(default_factory=set)
    fetched: int = 0
    present: int = 0
    bytes_fetched: int = 0
    rejected: list[str] = field(default_factory=list)
    failure: BaseException | None = None


async def fetch_dag(
    root: Cid,
    peers: Sequence[str],
    store: Blockstore,
    *,
    concurrency: int = 8,
    client: httpx.AsyncClient | None = None,
    pin: bool = True,
    timeout: float = 30.0,
) -> FetchReport:
    """Make the whole DAG under ``root`` present in ``store``; pin it if asked.

    ``peers`` are trustless-gateway base URLs (``http://host:port``). Raises
    :class:`PeerUnavailable` naming the first block no peer could serve
    (listing each peer's reason), or a :class:`~belep.errors.ValidationError`
    if the DAG itself is malformed.
    """
    if not peers:
        raise ConfigError("fetch_dag needs at least one peer")
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1", found=concurrency)
    bases = [peer.rstrip("/") for peer in peers]
    own_client = client is None
    http = client or httpx.AsyncClient(timeout=timeout)
    state = _State(asyncio.Queue())
    state.seen.add(root)
    state.queue.put_nowait(root)
    writer = await asyncio.to_thread(store.writer)
    write_lock = asyncio.Lock()
    workers = [
        asyncio.create_task(_worker(state, bases, store, writer, write_lock, http))
        for _ in range(concurrency)
    ]
    try:
        await _wait(state, workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if own_client:
            await http.aclose()
        if state.failure is None and pin:
            writer.pin_on_commit(root)
        # Commit even on failure: every block written was verified, and
        # keeping them is what makes the next call resume.
        await asyncio.to_thread(writer.commit)
    if state.failure is not None:
        raise state.failure
    return FetchReport(
        root,
        len(state.seen),
        state.fetched,
        state.present,
        state.bytes_fetched,
        tuple(state.rejected),
    )


async def _wait(state: _State, workers: list[asyncio.Task[None]]) -> None:
    join = asyncio.create_task(state.queue.join())
    try:
        while not join.done():
            finished, _ = await asyncio.wait([join, *workers], return_when=asyncio.FIRST_COMPLETED)
            if state.failure is not None:
                return
            for task in finished:
                if task is not join and task.exception() is not None:
                    state.failure = task.exception()
                    return
    finally:
        join.cancel()


async def _worker(
    state: _State,
    peers: list[str],
    store: Blockstore,
    writer: BlockWriter,
    write_lock: asyncio.Lock,
    http: httpx.AsyncClient,
) -> None:
    while True:
        cid = await state.queue.get()
        try:
            if state.failure is None:
                block = await _local_block(store, cid)
                if block is None:
                    block = await _download(state, peers, cid, http)
                    async with write_lock:
                        await asyncio.to_thread(writer.put_block, cid, (block,))
                    state.fetched += 1
                    state.bytes_fetched += len(block)
                else:
                    state.present += 1
                if cid.codec != RAW:
                    _enqueue_links(state, cid, block)
        except Exception as exc:  # recorded and re-raised by fetch_dag
            if state.failure is None:
                state.failure = exc
        finally:
            state.queue.task_done()


async def _local_block(store: Blockstore, cid: Cid) -> bytes | None:
    if cid.codec == RAW:
        # A raw block has no links: check it is intact, its bytes are not needed.
        if await asyncio.to_thread(store.is_intact, cid):
            return b""
        await asyncio.to_thread(store.delete, cid)
        return None
    try:
        return await asyncio.to_thread(store.get, cid)
    except NotFound:
        return None
    except CorruptStore:
        await asyncio.to_thread(store.delete, cid)
        return None


def _enqueue_links(state: _State, cid: Cid, block: bytes) -> None:
    try:
        links = decode_pbnode(block).links
    except EncodingError as exc:
        raise EncodingError(f"malformed block: {exc.message}", where=str(cid)) from exc
    for link in links:
        if link.cid not in state.seen:
            state.seen.add(link.cid)
            state.queue.put_nowait(link.cid)


async def _download(state: _State, peers: list[str], cid: Cid, http: httpx.AsyncClient) -> bytes:
    reasons: list[str] = []
    first = cid.digest[0] % len(peers)
    for index in range(len(peers)):
        peer = peers[(first + index) % len(peers)]
        try:
            data = await _get_block(http, peer, cid)
            await asyncio.to_thread(verify_block, cid, data)
            return data
        except (HashMismatch, httpx.HTTPError, _BadAnswer) as exc:
            reason = f"{peer}: {type(exc).__name__}: {exc}"
            reasons.append(reason)
            state.rejected.append(f"{cid} from {reason}")
    raise PeerUnavailable(f"no peer served block {cid}: " + "; ".join(reasons))


class _BadAnswer(Exception):
    """A peer's answer that is not a block (status, size)."""


async def _get_block(http: httpx.AsyncClient, peer: str, cid: Cid) -> bytes:
    url = f"{peer}/ipfs/{cid}"
    async with http.stream(
        "GET", url, params={"format": "raw"}, headers={"Accept": RAW_ACCEPT}
    ) as response:
        if response.status_code != 200:
            raise _BadAnswer(f"HTTP {response.status_code}")
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > MAX_BLOCK_SIZE:
                raise _BadAnswer(f"answer larger than {MAX_BLOCK_SIZE} bytes")
        return bytes(body)
