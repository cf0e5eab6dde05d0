"""The shared consensus pieces PBFT (and HPBFT) build on: pool, votes, checkpoints, log."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_cluster import DOMAIN, GENESIS, node_ids, node_key

from belep.consensus.batching import RequestPool
from belep.consensus.certificates import (
    BlockBodyCache,
    SignatureCache,
    VoteCollector,
    sign_statement,
    verify_certificate,
)
from belep.consensus.checkpoints import VOTES_PER_VOTER, CheckpointTracker
from belep.consensus.log import WatermarkLog, log_size
from belep.consensus.state_transfer import verify_fetched
from belep.errors import (
    ChainError,
    InvalidSignature,
    ProtocolViolation,
    QuorumNotMet,
    UnknownSigner,
)
from belep.ledger.block import (
    Block,
    Digest,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.certificate import check_quorum_signatures
from belep.ledger.genesis import Committee, Member

IDS = node_ids(4)
VOTERS = {m: node_key(m).public_key for m in IDS}


def stmt(kind: str = "prepare", height: int = 1, digest: bytes = b"\x01" * 32, view: int = 1):
    return VoteStatement(kind, DOMAIN, Epoch(0), View(view), Height(height), Digest(digest))


def signed(voter: NodeId, s: VoteStatement) -> bytes:
    return sign_statement(node_key(voter), s)


# -- request pool ---------------------------------------------------------------


def test_pool_batches_in_arrival_order_and_requeues_abandoned_proposals_first() -> None:
    pool = RequestPool()
    txs = [Transaction(b"t%d" % i) for i in range(6)]
    for i, t in enumerate(txs):
        assert pool.add(t, now_ms=i)
    assert not pool.add(txs[0], now_ms=9)  # duplicate
    assert pool.take_batch(4) == tuple(txs[:4])
    assert pool.pending_count == 2
    assert pool.proposed_count == 4
    pool.requeue_proposed(keep=txs[1:2])
    assert pool.take_batch(10) == (txs[0], txs[2], txs[3], txs[4], txs[5])
    pool.on_committed(txs)
    assert not pool.has_work()
    assert not pool.add(txs[3], now_ms=20)  # committed: never accepted again while remembered


def test_pool_marks_proposals_seen_from_a_leader_and_bounds_itself() -> None:
    pool = RequestPool(capacity=3, committed_memory=2)
    a, b, c, d = (Transaction(x) for x in (b"a", b"b", b"c", b"d"))
    pool.add(a, 5)
    pool.mark_proposed([a, b], now_ms=7)  # b arrived only inside a proposal
    assert pool.pending_count == 0
    assert pool.proposed_count == 2
    assert not pool.add(b, 8)
    assert pool.add(c, 9)
    assert not pool.add(d, 9)  # full
    assert pool.oldest_pending_ms() == 9
    assert pool.pending_older_than(8, 10) == ()
    assert pool.pending_older_than(9, 10) == (c,)
    pool.on_committed([a, b, c])
    assert pool.add(a, 10)  # forgotten: only the last two committed hashes are remembered


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("atrc"), st.integers(0, 7)), max_size=60))
def test_pool_keeps_each_transaction_in_one_place(ops: list[tuple[str, int]]) -> None:
    pool = RequestPool()
    txs = [Transaction(b"x%d" % i) for i in range(8)]
    for op, i in ops:
        if op == "a":
            pool.add(txs[i], i)
        elif op == "t":
            pool.take_batch(i)
        elif op == "r":
            pool.requeue_proposed(keep=txs[:i])
        else:
            pool.on_committed(txs[i : i + 1])
        pending = set(pool._pending)
        proposed = set(pool._proposed)
        committed = set(pool._committed)
        assert not (pending & proposed)
        assert not (pending & committed)
        assert not (proposed & committed)


# -- signatures and votes -------------------------------------------------------


def test_signature_cache_verifies_each_good_signature_once() -> None:
    cache = SignatureCache(capacity=2)
    s = stmt()
    sig = signed(IDS[0], s)
    assert cache.is_valid(VOTERS[IDS[0]], s.signing_bytes(), sig)
    assert cache.is_valid(VOTERS[IDS[0]], s.signing_bytes(), sig)
    assert (cache.verifications, cache.hits) == (1, 1)
    assert not cache.is_valid(VOTERS[IDS[1]], s.signing_bytes(), sig)
    assert not cache.is_valid(VOTERS[IDS[1]], s.signing_bytes(), sig)
    assert cache.verifications == 3  # failures are never remembered


def test_vote_collector_builds_one_certificate_from_a_quorum() -> None:
    collector = VoteCollector(VOTERS, 3, SignatureCache())
    s = stmt()
    assert collector.add(s, IDS[0], signed(IDS[0], s)) is None
    assert collector.add(s, IDS[0], signed(IDS[0], s)) is None  # duplicate, ignored
    assert collector.add(s, IDS[1], signed(IDS[1], s)) is None
    qc = collector.add(s, IDS[2], signed(IDS[2], s))
    assert qc is not None
    assert qc.signers == (IDS[0], IDS[1], IDS[2])
    assert collector.add(s, IDS[3], b"not even checked") is None  # already certified
    check_quorum_signatures(qc, voters=VOTERS, quorum=3)
    assert collector.certificate(s) == qc


@pytest.mark.parametrize(
    ("case", "voter", "signature_of", "error"),
    [
        ("unknown voter", NodeId("mallory"), IDS[0], UnknownSigner),
        ("signature by someone else", IDS[1], IDS[0], InvalidSignature),
    ],
)
def test_vote_collector_refuses_bad_votes_unchanged(
    case: str, voter: NodeId, signature_of: NodeId, error: type[Exception]
) -> None:
    collector = VoteCollector(VOTERS, 3, SignatureCache())
    s = stmt()
    with pytest.raises(error):
        collector.add(s, voter, signed(signature_of, s))
    assert collector.count(s) == 0, case
    assert collector.voted("prepare", View(1), Height(1), voter) is None


def test_vote_collector_refuses_a_second_vote_in_the_same_slot_and_prunes() -> None:
    collector = VoteCollector(VOTERS, 3, SignatureCache())
    first, second = stmt(digest=b"\x01" * 32), stmt(digest=b"\x02" * 32)
    collector.add(first, IDS[0], signed(IDS[0], first))
    with pytest.raises(ProtocolViolation):
        collector.add(second, IDS[0], signed(IDS[0], second))
    assert collector.count(second) == 0
    later = stmt(height=5)
    collector.add(later, IDS[0], signed(IDS[0], later))
    collector.prune(lambda _kind, _view, height: height > 2)
    assert list(collector.statements()) == [later]


def test_verify_certificate_checks_shape_quorum_and_signatures() -> None:
    s = stmt("commit")
    good = QuorumCertificate(s, tuple((m, signed(m, s)) for m in IDS[:3]))
    cache = SignatureCache()
    verify_certificate(good, voters=VOTERS, quorum=3, cache=cache, kind="commit", domain=DOMAIN)
    bad = {
        "wrong kind": (good, {"kind": "prepare"}, ProtocolViolation),
        "wrong domain": (good, {"domain": "elsewhere"}, ProtocolViolation),
        "below quorum": (QuorumCertificate(s, good.signatures[:2]), {}, QuorumNotMet),
        "a signer twice": (
            QuorumCertificate(s, (*good.signatures[:2], good.signatures[0])),
            {},
            QuorumNotMet,
        ),
        "bad signature": (
            QuorumCertificate(s, (*good.signatures[:2], (IDS[2], b"\x00" * 64))),
            {},
            InvalidSignature,
        ),
        "outsider": (
            QuorumCertificate(s, (*good.signatures[:2], (NodeId("x"), b""))),
            {},
            UnknownSigner,
        ),
    }
    for name, (qc, expect, error) in bad.items():
        with pytest.raises(error):
            verify_certificate(qc, voters=VOTERS, quorum=3, cache=cache, **expect)  # type: ignore[arg-type]
        assert name


def test_block_body_cache_recomputes_only_for_different_bodies() -> None:
    block = make_block(
        domain=DOMAIN,
        height=Height(1),
        epoch=Epoch(0),
        view=View(1),
        prev_hash=GENESIS,
        transactions=(Transaction(b"a"),),
        timestamp_ms=0,
        proposer=IDS[1],
    )
    bodies = BlockBodyCache()
    bodies.check(block)
    bodies.check(Block(block.header, (Transaction(b"a"),)))  # equal body: fine
    with pytest.raises(ChainError):
        bodies.check(Block(block.header, (Transaction(b"b"),)))


# -- checkpoints ------------------------------------------------------------------


def tracker(quorum: int = 3) -> CheckpointTracker:
    return CheckpointTracker(
        domain=DOMAIN,
        epoch=Epoch(0),
        interval=4,
        voters=VOTERS,
        quorum=quorum,
        cache=SignatureCache(),
        genesis_hash=GENESIS,
    )


def test_checkpoint_votes_become_a_stable_certificate() -> None:
    t = tracker()
    s = t.statement(Height(4), Digest(b"\x04" * 32))
    assert t.add_vote(IDS[0], s, signed(IDS[0], s)) is None
    assert t.add_vote(IDS[1], s, signed(IDS[1], s)) is None
    qc = t.add_vote(IDS[2], s, signed(IDS[2], s))
    assert qc is not None
    assert (t.stable_height, t.stable_hash) == (4, b"\x04" * 32)
    assert t.add_vote(IDS[3], s, signed(IDS[3], s)) is None  # at the stable height: ignored
    other = tracker()
    assert other.adopt(qc)
    assert not other.adopt(qc)  # not higher


def test_checkpoint_tracker_refuses_bad_votes_and_bounds_memory() -> None:
    t = tracker()
    with pytest.raises(ProtocolViolation):
        t.add_vote(IDS[0], stmt("prepare", height=4, view=0), b"")  # not a checkpoint vote
    s3 = t.statement(Height(3), Digest(b"\x03" * 32))
    with pytest.raises(ProtocolViolation):
        t.add_vote(IDS[0], s3, signed(IDS[0], s3))
    s = t.statement(Height(4), Digest(b"\x04" * 32))
    with pytest.raises(InvalidSignature):
        t.add_vote(IDS[0], s, signed(IDS[1], s))
    for h in range(1, 10):
        v = t.statement(Height(4 * h), Digest(bytes([h]) * 32))
        t.add_vote(IDS[0], v, signed(IDS[0], v))
    assert len(t._by_voter[IDS[0]]) == VOTES_PER_VOTER
    assert sum(len(v) for v in t._votes.values()) == VOTES_PER_VOTER
    forged = QuorumCertificate(s, ((IDS[0], signed(IDS[0], s)),) * 3)
    with pytest.raises(QuorumNotMet):
        t.adopt(forged)
    assert t.stable is None


# -- watermarks ---------------------------------------------------------------------


def test_watermark_log_bounds_and_collects_garbage() -> None:
    assert log_size(16, 8) == 32
    assert log_size(4, 10) == 14
    log: WatermarkLog[list[int]] = WatermarkLog(8, lambda h: [h])
    assert (log.low, log.high) == (0, 8)
    assert not log.in_window(0)
    assert log.in_window(8)
    assert not log.in_window(9)
    for h in (1, 3, 8):
        log.slot(Height(h))
    with pytest.raises(ValueError, match="outside"):
        log.slot(Height(9))
    dropped = log.advance(Height(3))
    assert [h for h, _ in dropped] == [1, 3]
    assert log.heights() == [8]
    assert (log.low, log.high) == (3, 11)
    assert log.advance(Height(2)) == []


# -- state transfer ---------------------------------------------------------------


def test_verify_fetched_returns_the_verified_prefix() -> None:
    blocks: list[tuple[Block, QuorumCertificate]] = []
    prev = GENESIS
    for h in range(1, 4):
        b = make_block(
            domain=DOMAIN,
            height=Height(h),
            epoch=Epoch(0),
            view=View(1),
            prev_hash=prev,
            transactions=(Transaction(b"%d" % h),),
            timestamp_ms=h,
            proposer=IDS[1],
        )
        s = stmt("commit", height=h, digest=b.block_hash)
        blocks.append((b, QuorumCertificate(s, tuple((m, signed(m, s)) for m in IDS[:3]))))
        prev = b.block_hash
    args = {
        "next_height": Height(1),
        "prev_hash": GENESIS,
        "domain": DOMAIN,
        "committee": Committee(tuple(Member(m, k) for m, k in VOTERS.items()), 3, "commit"),
        "cache": SignatureCache(),
    }
    good, problem = verify_fetched(blocks, **args)  # type: ignore[arg-type]
    assert (len(good), problem) == (3, None)
    b2, q2 = blocks[1]
    broken = [blocks[0], (Block(b2.header, ()), q2), blocks[2]]
    good, problem = verify_fetched(broken, **args)  # type: ignore[arg-type]
    assert len(good) == 1
    assert isinstance(problem, ChainError)
    good, problem = verify_fetched(blocks[1:], **args)  # type: ignore[arg-type]
    assert good == []
    assert isinstance(problem, ChainError)
