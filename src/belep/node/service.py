"""The node's service interface: what a client of a running node may ask of it.

Owns :class:`NodeService`, a small typed facade over a running
:class:`~belep.node.runtime.Node`, and the records it answers with. The HTTP
layer (:mod:`belep.api`) calls only this; it shapes the records into JSON
and maps the service's refusals (:mod:`belep.errors`: ``DomainNotHeld``,
``NotAVoter``, ``TooManyAtOnce``, ``Overloaded``) to status codes.

* **submit** (:meth:`NodeService.submit`, :meth:`NodeService.submit_batch`):
  a transaction is accepted only if it is a well-formed envelope whose
  signature verifies; the outcome is remembered for the replica
  (verify-once). A node that only observes the domain refuses submissions;
  admission control (:mod:`belep.node.admission`) refuses what would grow the
  domain's backlog past its limits, and then accepts nothing of the request.
  A transaction already on the chain is answered from the chain and neither
  tracked nor handed to the replica again (a single resubmission is answered
  even while the node is busy).
* **wait for commits** (:meth:`NodeService.wait_committed`), **read the chain**
  (:meth:`NodeService.block`), **status**, **health**, **metrics**, **import
  content**, **identify a caller** from its bearer token.

Commits are never missed. A commit watcher is registered (on the event loop)
*before* the chain is read in a worker thread, and nothing is handed to the
replica until the loop is back with the read's answer, with no await between
looking at the watchers and submitting. A block is appended to its store
before the node's commit listeners run (:mod:`belep.node.domain`), so a
transaction that committed before the watcher existed is found by the read,
and one that commits after is seen by the watcher; either way it is answered
as committed and not submitted again. A wait that times out reads the chain
once more (a commit at the very end of the wait).

I/O: block store reads and content import in worker threads
(:class:`~belep.node.chainreads.ChainReads`, the default executor); no
socket, no blocking call on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import queue
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from belep.content.blockstore import Blockstore
from belep.content.importer import import_file
from belep.errors import DomainNotHeld, NotAVoter, Overloaded, TooManyAtOnce, ValidationError
from belep.ledger.block import BlockHeader, Digest, DomainId, NodeId, Transaction
from belep.ledger.store import TxLocation
from belep.node.admission import refusal
from belep.node.chainreads import ChainReads
from belep.node.commits import CommitInfo
from belep.node.domain import DomainStatus, now_ms
from belep.node.runtime import Node

__all__ = [
    "BatchOutcome",
    "Caller",
    "CommittedBlock",
    "Health",
    "ImportedContent",
    "NodeService",
    "NodeStatus",
    "Outcome",
    "Rejected",
    "TxCommit",
]


class Caller(enum.Enum):
    """Who a request comes from, by its bearer token."""

    OPERATOR = "operator"
    PEER = "peer"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Health:
    node: NodeId
    ready: bool
    peers_connected: int
    peers_expected: int

    @property
    def status(self) -> str:
        """``ok``, ``starting`` (not ready) or ``degraded`` (a peer is not connected)."""
        if not self.ready:
            return "starting"
        return "ok" if self.peers_connected == self.peers_expected else "degraded"


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: NodeId
    unit: DomainId
    ready: bool
    peers: tuple[tuple[NodeId, bool], ...]
    """Every expected peer (sorted) and whether it is connected."""
    domains: tuple[DomainStatus, ...]


@dataclass(frozen=True, slots=True)
class TxCommit:
    """Where a committed transaction is."""

    tx_hash: Digest
    domain: DomainId
    height: int
    index: int
    block_hash: Digest


@dataclass(frozen=True, slots=True)
class Outcome:
    """One submitted transaction: accepted (``error`` empty; ``commit`` set once it is on
    the chain) or rejected (``error`` says why)."""

    tx_hash: Digest
    error: str = ""
    commit: TxCommit | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A transaction of a batch that was not accepted: its position and why."""

    index: int
    error: str


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    accepted: tuple[Outcome, ...]
    rejected: tuple[Rejected, ...]


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    domain: DomainId
    header: BlockHeader
    tx_hashes: tuple[Digest, ...]
    signers: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class ImportedContent:
    cid: str
    size: int
    sha256: bytes | None


def _from_record(domain: DomainId, tx_hash: Digest, record: TxLocation | None) -> TxCommit | None:
    if record is None:
        return None
    return TxCommit(tx_hash, domain, record.height, record.index, record.block_hash)


def _from_info(tx_hash: Digest, info: CommitInfo) -> TxCommit:
    return TxCommit(tx_hash, info.domain, info.height, info.index, info.block_hash)


class NodeService:
    """What clients may ask of a running node (see the module docstring)."""

    def __init__(self, node: Node, reads: ChainReads | None = None) -> None:
        """``reads``: the chain reads to use (default: a pool over the node's chains)."""
        self._node = node
        self._reads = (
            reads
            if reads is not None
            else ChainReads(node.reader_openers(), state_openers=node.state_openers())
        )

    def close(self) -> None:
        """Release the worker threads and their connections."""
        self._reads.close()

    @property
    def content(self) -> Blockstore:
        """The node's content store (served by the gateway)."""
        return self._node.content

    # ------------------------------------------------------------------ callers

    def identify(self, authorization: str | None) -> Caller:
        """Who presents this ``Authorization`` header: the operator, a peer node, or nobody
        known (a missing, malformed or wrong token)."""
        node = self._node
        if node.operator.allows(authorization):
            return Caller.OPERATOR
        verifier = node.peer_tokens
        if verifier is not None and verifier.allows(authorization, now_ms()):
            return Caller.PEER
        return Caller.ANONYMOUS

    # ------------------------------------------------------------------ node

    def health(self) -> Health:
        node = self._node
        expected = node.peers_expected()
        connected = node.peers_connected() & expected
        return Health(node.node_id, node.ready, len(connected), len(expected))

    def status(self) -> NodeStatus:
        node = self._node
        connected = node.peers_connected()
        return NodeStatus(
            node=node.node_id,
            unit=node.config.unit,
            ready=node.ready,
            peers=tuple((p, p in connected) for p in sorted(node.peers_expected())),
            domains=tuple(h.status() for h in node.hosts.values()),
        )

    def metrics_text(self) -> bytes:
        """The node's metrics in the Prometheus text format."""
        return self._node.metrics.render()

    # ------------------------------------------------------------------ domains

    def require_domain(self, domain: DomainId) -> DomainId:
        """``domain`` if this node holds it; else :class:`DomainNotHeld`."""
        if domain not in self._node.hosts:
            raise DomainNotHeld(domain)
        return domain

    def require_voter(self, domain: DomainId) -> DomainId:
        """``domain`` if this node votes in it; else :class:`DomainNotHeld` or
        :class:`NotAVoter` (with the voters' URLs)."""
        node = self._node
        host = node.hosts.get(domain)
        if host is None:
            raise DomainNotHeld(domain)
        if host.role != "voter":
            urls = tuple(node.config.peers[m].http_url for m in host.config.members)
            raise NotAVoter(domain, urls)
        return domain

    def admit(self, domain: DomainId, incoming: int) -> None:
        """Raise unless admission control lets ``incoming`` more transactions in now:
        :class:`TooManyAtOnce` (never), :class:`Overloaded` (not now; counted)."""
        node = self._node
        policy = node.admission[domain]
        if incoming > policy.max_outstanding:
            raise TooManyAtOnce(policy.max_outstanding, incoming)
        refused = refusal(policy, node.commits.backlog(domain), incoming)
        if refused is not None:
            node.note_refusal(domain, refused.reason)
            raise Overloaded(refused.reason, refused.message, refused.retry_after_ms)

    # ------------------------------------------------------------------ submitting

    async def submit(self, domain: DomainId, tx: Transaction, wait_s: float) -> Outcome:
        """Submit one transaction and wait up to ``wait_s`` for its commit.

        A transaction that fails validation is an outcome with ``error``. One already on
        the chain is answered from it, even if admission control would refuse the
        request."""
        self.require_voter(domain)
        with self._watching(domain, [tx.tx_hash]) as watch:
            (known,) = await watch.read()
            if known is not None:
                return Outcome(tx.tx_hash, commit=known)
            self.admit(domain, 1)
            outcome = self._accept(domain, tx)
            if outcome.error:
                return outcome
            (commit,) = await watch.wait(wait_s)
        return Outcome(tx.tx_hash, commit=commit)

    async def submit_batch(
        self, domain: DomainId, payloads: Sequence[bytes], wait_s: float
    ) -> BatchOutcome:
        """Submit transactions (each one as :meth:`submit` does) if admission control lets
        all those not yet on the chain in, and wait up to ``wait_s`` for the commits of the
        accepted ones. (The HTTP route checks the delay before decoding the batch.)"""
        self.require_voter(domain)
        limit = self._node.admission[domain].max_outstanding
        if len(payloads) > limit:
            raise TooManyAtOnce(limit, len(payloads))
        rejected: list[Rejected] = []
        numbered: list[tuple[int, Transaction]] = []
        for index, payload in enumerate(payloads):
            try:
                numbered.append((index, Transaction(payload)))
            except ValidationError as exc:
                rejected.append(Rejected(index, str(exc)))
        with self._watching(domain, [tx.tx_hash for _, tx in numbered]) as watch:
            known = await watch.read()
            # Admission before validation (a refused request costs no signature check),
            # then validation and hand-over with no await between them: requests that
            # waited for their chain read together cannot all pass one backlog that none
            # of them is in.
            self.admit(domain, sum(commit is None for commit in known))
            for position, ((index, tx), commit) in enumerate(zip(numbered, known, strict=True)):
                if commit is not None:
                    continue  # on the chain: answered from it
                try:
                    self._validate(domain, tx)
                except ValidationError as exc:
                    rejected.append(Rejected(index, str(exc)))
                    watch.forget(position)
                    continue
                self._hand_over(domain, tx)
            commits = await watch.wait(wait_s) if wait_s > 0 else known
        accepted = tuple(
            Outcome(tx.tx_hash, commit=c)
            for position, ((_, tx), c) in enumerate(zip(numbered, commits, strict=True))
            if not watch.forgotten(position)
        )
        rejected.sort(key=lambda r: r.index)
        return BatchOutcome(accepted, tuple(rejected))

    async def wait_committed(
        self, domain: DomainId, tx_hashes: Sequence[Digest], timeout_s: float
    ) -> list[TxCommit | None]:
        """Each transaction's commit, waiting up to ``timeout_s`` for those not yet on the
        chain (``None``: not committed by then)."""
        self.require_domain(domain)
        if timeout_s <= 0:
            records = await self._reads.transactions(domain, tx_hashes)
            return [_from_record(domain, h, r) for h, r in zip(tx_hashes, records, strict=True)]
        with self._watching(domain, tx_hashes) as watch:
            await watch.read()
            return await watch.wait(timeout_s)

    async def result(self, commit: TxCommit) -> str | None:
        """What executing a committed transaction gave: ``ok`` or the reason it was
        rejected (``None`` while this node has not executed its block yet)."""
        return await self._reads.result(commit.domain, commit.height, commit.index)

    def _validate(self, domain: DomainId, tx: Transaction) -> None:
        """Check ``tx`` and remember the outcome for the replica (verify-once). A
        transaction found valid before (a client's retry) is not checked again."""
        validator = self._node.validators[domain]
        if validator.known_valid(tx.tx_hash):
            return
        try:
            validator.check(tx)
        except ValidationError:
            validator.remember(tx.tx_hash, False)
            raise
        validator.remember(tx.tx_hash, True)

    def _accept(self, domain: DomainId, tx: Transaction) -> Outcome:
        """Validate ``tx`` and hand it to the replica (the caller found it not committed)."""
        try:
            self._validate(domain, tx)
        except ValidationError as exc:
            return Outcome(tx.tx_hash, str(exc))
        self._hand_over(domain, tx)
        return Outcome(tx.tx_hash)

    def _hand_over(self, domain: DomainId, tx: Transaction) -> None:
        """Track ``tx`` (backlog, waiters) and hand it to the domain's replica."""
        node = self._node
        node.commits.submitted(domain, tx)
        node.hosts[domain].submit(tx)

    @contextlib.contextmanager
    def _watching(self, domain: DomainId, tx_hashes: Sequence[Digest]) -> Iterator[_Watch]:
        watch = _Watch(self._node, self._reads, domain, tuple(tx_hashes))
        try:
            yield watch
        finally:
            watch.release()

    # ------------------------------------------------------------------ reading

    async def block(self, domain: DomainId, height: int) -> CommittedBlock:
        """The committed block at ``height``; :class:`~belep.errors.NotFound` if none."""
        self.require_domain(domain)
        block, certificate = await self._reads.committed(domain, height)
        return CommittedBlock(
            domain=domain,
            header=block.header,
            tx_hashes=tuple(tx.tx_hash for tx in block.transactions),
            signers=tuple(certificate.signers),
        )

    # ------------------------------------------------------------------ content

    async def import_content(self, chunks: AsyncIterator[bytes]) -> ImportedContent:
        """Import a file streamed as ``chunks`` into the content store (in a worker thread)
        and pin it once a committed transaction references it. Raises what the import
        raises (a :class:`~belep.errors.BelepError` if the store failed)."""
        handoff: queue.Queue[bytes | None] = queue.Queue(maxsize=16)

        def feed() -> Iterator[bytes]:
            while True:
                item = handoff.get()
                if item is None:
                    return
                yield item

        def work() -> ImportedContent:
            with self._node.content.writer() as writer:
                result = import_file(feed(), writer, compute_sha256=True)
                writer.pin_on_commit(result.cid)
            return ImportedContent(str(result.cid), result.size, result.sha256)

        future = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(handoff.put, chunk)
        finally:
            await asyncio.to_thread(handoff.put, None)
        return await future


class _Watch:
    """Commit watchers for some transactions of one domain, registered on creation (see
    the module docstring for why they come before the chain read)."""

    def __init__(
        self, node: Node, reads: ChainReads, domain: DomainId, tx_hashes: tuple[Digest, ...]
    ) -> None:
        self._node = node
        self._reads = reads
        self._domain = domain
        self._hashes = tx_hashes
        self._futures = [node.commits.watch(h) for h in tx_hashes]
        self._found: list[TxCommit | None] = [None] * len(tx_hashes)
        self._forgotten: set[int] = set()

    def forget(self, i: int) -> None:
        """Stop watching the ``i``-th (found invalid): :meth:`wait` does not wait for it."""
        if i not in self._forgotten:
            self._forgotten.add(i)
            self._node.commits.unwatch(self._hashes[i], self._futures[i])

    def forgotten(self, i: int) -> bool:
        return i in self._forgotten

    def _known(self, i: int) -> TxCommit | None:
        """What is known now of the ``i``-th: read from the chain, or seen by its watcher."""
        found = self._found[i]
        if found is not None:
            return found
        future = self._futures[i]
        if future.done() and not future.cancelled():
            return _from_info(self._hashes[i], future.result())
        return None

    def _resolved(self) -> list[TxCommit | None]:
        return [self._known(i) for i in range(len(self._hashes))]

    async def read(self) -> list[TxCommit | None]:
        """Read the chain for every watched transaction; the commits known on return
        (nothing awaits after the read's answer is in, so the caller may act on a
        ``None`` before any other commit is reported)."""
        records = await self._reads.transactions(self._domain, self._hashes)
        for i, (tx_hash, record) in enumerate(zip(self._hashes, records, strict=True)):
            self._found[i] = _from_record(self._domain, tx_hash, record)
        return self._resolved()

    async def wait(self, timeout_s: float) -> list[TxCommit | None]:
        """Wait up to ``timeout_s`` for the watched transactions not yet committed; those
        still missing are read from the chain once more."""
        pending = {
            f
            for i, (f, found) in enumerate(zip(self._futures, self._found, strict=True))
            if found is None and not f.done() and i not in self._forgotten
        }
        if pending and timeout_s > 0:
            await asyncio.wait(pending, timeout=timeout_s)
        found = self._resolved()
        missing = [i for i, c in enumerate(found) if c is None and i not in self._forgotten]
        if missing and timeout_s > 0:
            records = await self._reads.transactions(
                self._domain, [self._hashes[i] for i in missing]
            )
            for i, record in zip(missing, records, strict=True):
                found[i] = _from_record(self._domain, self._hashes[i], record)
        return found

    def release(self) -> None:
        commits = self._node.commits
        for i, (tx_hash, future) in enumerate(zip(self._hashes, self._futures, strict=True)):
            if i not in self._forgotten:
                commits.unwatch(tx_hash, future)
