"""The node's service without HTTP: submission, admission, observers, answers from the
chain, commits seen while the chain is read, waiting, blocks; and the commit listeners.

Nodes are opened, never started (``tests/conftest.py``): what the service hands to a
replica stays queued in the domain's host, where these tests look for it."""

from __future__ import annotations

import asyncio

import pytest

from belep.encoding import encode
from belep.errors import DomainNotHeld, NotAVoter, NotFound, Overloaded, TooManyAtOnce
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
)
from belep.ledger.envelope import sign_envelope
from belep.ledger.execution import BlockContext, MemoryState
from belep.ledger.store import TxRecord
from belep.node.chainreads import ChainReads
from belep.node.commits import CommitTracker
from belep.node.runtime import Node
from belep.node.service import Caller, NodeService
from served import CHILD, COMMITTED, SUBMITTER, Served


def fresh(i: int) -> Transaction:
    return sign_envelope(SUBMITTER, "bench", {"fresh": i}, timestamp_ms=2).to_transaction()


def forged() -> Transaction:
    wire = sign_envelope(SUBMITTER, "bench", {"forged": 1}, timestamp_ms=2).to_wire()
    wire["sig"] = bytes(64)
    return Transaction(encode(wire))


def committed(i: int) -> Transaction:
    return COMMITTED[i].to_transaction()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def on_clock(node: Node) -> Clock:
    """Put the node's commit tracker (backlog ages, admission) on a clock the test moves."""
    clock = Clock()
    node.commits = CommitTracker(node.metrics.observe_latency, clock)
    return clock


def test_a_valid_transaction_is_handed_to_the_replica_once(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    tx = fresh(1)
    outcome = asyncio.run(service.submit(CHILD, tx, 0))
    assert (outcome.tx_hash, outcome.error, outcome.commit) == (tx.tx_hash, "", None)
    assert node.hosts[CHILD].queued_events == 1
    assert node.commits.backlog(CHILD).count == 1
    assert node.validators[CHILD].is_valid(tx)  # remembered: the replica will not verify again


def test_what_submission_parsed_is_what_execution_takes(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    tx = fresh(2)
    asyncio.run(service.submit(CHILD, tx, 0))
    kept = node.parsed[CHILD]
    assert len(kept) == 1
    context = BlockContext(CHILD, Height(1), Epoch(0), View(0), 2, NodeId("p"), Digest(bytes(32)))
    result, _ = node.hosts[CHILD].application.apply_transaction(MemoryState(), tx, context)
    assert (kept.hits, kept.misses, len(kept)) == (1, 0, 0)  # execution took the kept envelope
    assert result.accepted


def test_a_committed_transaction_is_answered_from_the_chain_even_when_busy(
    served: Served,
) -> None:
    node = served.node("child-1")
    service = served.service(node)
    clock = on_clock(node)
    asyncio.run(service.submit(CHILD, fresh(1), 0))
    clock.now += 1  # the backlog's oldest entry is past the 300 ms admission delay
    with pytest.raises(Overloaded):
        asyncio.run(service.submit(CHILD, fresh(2), 0))
    outcome = asyncio.run(service.submit(CHILD, committed(1), 0))
    assert outcome.commit is not None
    assert (outcome.commit.height, outcome.commit.index) == (2, 0)
    stored = node.open_reader(CHILD)
    assert outcome.commit.block_hash == stored.get_block(2).block_hash
    stored.close()
    assert node.hosts[CHILD].queued_events == 1  # only fresh(1): nothing else handed over
    assert node.commits.backlog(CHILD).count == 1


def test_admission_refusal_accepts_nothing_and_is_counted(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    clock = on_clock(node)
    asyncio.run(service.submit(CHILD, fresh(1), 0))
    clock.now += 1
    with pytest.raises(Overloaded) as refused:
        asyncio.run(service.submit_batch(CHILD, [fresh(2).payload, fresh(3).payload], 0))
    assert refused.value.reason == "delay"
    assert refused.value.retry_after_ms == 300  # no commit rate yet: the delay bound
    assert node.refused[CHILD] == {"delay": 1}
    assert node.hosts[CHILD].queued_events == 1
    with pytest.raises(TooManyAtOnce) as too_many:
        service.admit(CHILD, 51)
    assert too_many.value.limit == 50


def test_a_refused_batch_costs_no_signature_check_and_a_retry_none_again(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    clock = on_clock(node)
    validator = node.validators[CHILD]
    first = fresh(1)
    asyncio.run(service.submit_batch(CHILD, [first.payload], 0))
    assert validator.verifications == 1
    clock.now += 1
    with pytest.raises(Overloaded):
        asyncio.run(service.submit_batch(CHILD, [fresh(2).payload, fresh(3).payload], 0))
    assert validator.verifications == 1  # refused before any was checked
    clock.now -= 1
    outcome = asyncio.run(service.submit_batch(CHILD, [first.payload], 0))  # the client's retry
    assert [a.tx_hash for a in outcome.accepted] == [first.tx_hash]
    assert validator.verifications == 1


def test_a_batch_waits_only_for_its_valid_transactions(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    payloads = [forged().payload, committed(0).payload]

    async def submit() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await service.submit_batch(CHILD, payloads, 30)
        assert [r.index for r in outcome.rejected] == [0]
        assert [a.tx_hash for a in outcome.accepted] == [committed(0).tx_hash]
        return loop.time() - started

    assert asyncio.run(submit()) < 10  # not the 30 s wait: the forged one is not waited for
    assert node.commits.waiting == 0  # every watcher released


def test_refused_transactions_are_not_handed_over(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    tx = forged()
    outcome = asyncio.run(service.submit(CHILD, tx, 0))
    assert "signature does not verify" in outcome.error
    assert node.hosts[CHILD].queued_events == 0
    assert not node.validators[CHILD].is_valid(tx)


def test_an_observer_points_to_the_voters_and_unknown_domains_are_refused(
    served: Served,
) -> None:
    observer = served.node("parent-1")
    service = served.service(observer)
    with pytest.raises(NotAVoter) as refused:
        asyncio.run(service.submit(CHILD, fresh(1), 0))
    assert refused.value.voters == tuple(
        observer.config.peers[n].http_url for n in observer.hosts[CHILD].config.members
    )
    with pytest.raises(DomainNotHeld):
        service.require_voter(DomainId("elsewhere"))
    with pytest.raises(DomainNotHeld):
        asyncio.run(service.wait_committed(DomainId("elsewhere"), [committed(0).tx_hash], 0))
    # An observer still answers where a transaction is.
    (found,) = asyncio.run(service.wait_committed(CHILD, [committed(2).tx_hash], 0))
    assert found is not None
    assert found.height == 3


class SignalledReads(ChainReads):
    """Chain reads that say when one has finished."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.reader_openers())
        self.done = asyncio.Event()

    async def transactions(
        self, domain: DomainId, tx_hashes: list[Digest]
    ) -> list[TxRecord | None]:
        found = await super().transactions(domain, tx_hashes)
        self.done.set()
        return found


class CommitDuringRead(ChainReads):
    """A chain read that misses a commit which lands before the event loop is back."""

    def __init__(self, node: Node, block: Block, certificate: QuorumCertificate) -> None:
        super().__init__(node.reader_openers())
        self.node, self.block, self.certificate = node, block, certificate
        self.reads = 0

    async def transactions(
        self, domain: DomainId, tx_hashes: list[Digest]
    ) -> list[TxRecord | None]:
        found = await super().transactions(domain, tx_hashes)
        self.reads += 1
        if self.reads == 1:  # the block is not in the store: the read cannot have seen it
            for listener in self.node.commit_listeners:
                listener(domain, self.block, self.certificate)
        return found


def test_a_commit_during_the_chain_read_is_not_submitted_again(served: Served) -> None:
    node = served.node("child-1")
    tx = fresh(7)
    block, certificate = served.child_chain(node).next_block([tx.payload], timestamp_ms=50)
    service = NodeService(node, CommitDuringRead(node, block, certificate))
    try:
        outcome = asyncio.run(service.submit(CHILD, tx, 0))
    finally:
        service.close()
    assert outcome.commit is not None
    assert (outcome.commit.height, outcome.commit.block_hash) == (4, block.block_hash)
    assert node.hosts[CHILD].queued_events == 0
    assert node.commits.backlog(CHILD).count == 0
    assert node.commits.waiting == 0  # every watcher released


def test_a_batch_answers_each_transaction(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    payloads = [b"\xff", forged().payload, committed(0).payload, fresh(1).payload]
    outcome = asyncio.run(service.submit_batch(CHILD, payloads, 0))
    assert [r.index for r in outcome.rejected] == [0, 1]
    assert [a.tx_hash for a in outcome.accepted] == [committed(0).tx_hash, fresh(1).tx_hash]
    assert [a.commit is not None for a in outcome.accepted] == [True, False]
    assert node.hosts[CHILD].queued_events == 1  # the committed one is not proposed again


def test_waiting_sees_a_commit_and_releases_its_watchers(served: Served) -> None:
    node = served.node("child-1")
    tx = fresh(3)
    block, certificate = served.child_chain(node).next_block([tx.payload], timestamp_ms=50)
    reads = SignalledReads(node)
    service = NodeService(node, reads)

    async def scenario() -> None:
        waiting = asyncio.create_task(service.wait_committed(CHILD, [tx.tx_hash], 30))
        await reads.done.wait()  # not on the chain: now it waits for the commit
        assert not waiting.done()
        assert node.commits.waiting == 1
        for listener in node.commit_listeners:
            listener(CHILD, block, certificate)
        (found,) = await waiting
        assert found is not None
        assert (found.height, found.index) == (4, 0)
        assert node.commits.waiting == 0
        (missing,) = await service.wait_committed(CHILD, [fresh(4).tx_hash], 0)
        assert missing is None

    try:
        asyncio.run(scenario())
    finally:
        service.close()
    assert node.transactions_committed[CHILD] == 1


def test_block_reads_the_chain(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    found = asyncio.run(service.block(CHILD, 2))
    assert found.header.height == 2
    assert found.tx_hashes == (committed(1).tx_hash,)
    assert len(found.signers) == 3  # the PBFT quorum of four voters
    with pytest.raises(NotFound):
        asyncio.run(service.block(CHILD, 9))


def test_callers_are_identified_by_their_token(served: Served) -> None:
    node = served.node("child-1")
    service = served.service(node)
    peer = served.peer_token("child-2")
    assert service.identify(f"Bearer {served.token('child-1')}") is Caller.OPERATOR
    assert service.identify(f"Bearer {peer}") is Caller.PEER
    assert service.identify(f"Bearer {served.token('child-2')}") is Caller.ANONYMOUS
    assert service.identify(None) is Caller.ANONYMOUS
    assert service.identify("Basic abc") is Caller.ANONYMOUS


def test_commit_listeners_run_in_order(served: Served) -> None:
    voter = served.node("parent-1")  # holds the parent chain, which anchors the child's
    names = [listener.__name__ for listener in voter.commit_listeners]
    assert names == ["_count_commit", "_track_commit", "_anchor_commit", "_pin_commit"]
    seen: list[tuple[DomainId, int]] = []
    voter.commit_listeners.append(
        lambda d, b, _c: seen.append((d, voter.transactions_committed[d]))
    )
    block, certificate = served.child_chain(voter).next_block([fresh(5).payload], timestamp_ms=50)
    voter._on_commit(CHILD, block, certificate)
    assert seen == [(CHILD, 1)]  # after the counters
