"""Raft's log, persisted-state restore, certificates and replication rules, one function at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from belep.consensus.raft_cert import (
    AckCollector,
    AckSigner,
    accept_fetched_chain,
    append_statement,
    raft_quorum,
    sign_append,
    verify_raft_certificate,
)
from belep.consensus.raft_log import (
    APPLIED_KEY,
    HARD_KEY,
    RaftLog,
    encode_applied,
    encode_entry,
    encode_hard_state,
    log_key,
    restore_state,
)
from belep.consensus.raft_messages import AppendEntries, InstallSnapshot
from belep.consensus.raft_replication import AppendPlan, Progress, plan_append, plan_replication
from belep.crypto import PrivateKey
from belep.errors import (
    ChainError,
    CorruptStore,
    InvalidSignature,
    QuorumNotMet,
    UnknownSigner,
    ValidationError,
)
from belep.ledger.block import (
    ZERO_HASH,
    Block,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)

DOMAIN = DomainId("station-1")
MEMBERS = tuple(NodeId(f"n{i}") for i in range(3))
KEYS = {node: PrivateKey.from_seed(bytes([i + 1]) * 32) for i, node in enumerate(MEMBERS)}
VOTERS = {node: key.public_key for node, key in KEYS.items()}


def build(terms: list[int], tag: str = "") -> list[Block]:
    blocks: list[Block] = []
    prev = ZERO_HASH
    for height, term in enumerate(terms, start=1):
        block = make_block(
            domain=DOMAIN,
            height=Height(height),
            epoch=Epoch(0),
            view=View(term),
            prev_hash=prev,
            transactions=(Transaction(f"{tag}{terms[:height]}".encode()),),
            timestamp_ms=height,
            proposer=MEMBERS[0],
        )
        blocks.append(block)
        prev = block.block_hash
    return blocks


def log_of(terms: list[int], tag: str = "") -> RaftLog:
    log = RaftLog(Height(0), View(0), ZERO_HASH)
    for block in build(terms, tag):
        log.append(block)
    return log


def cert(block: Block, term: int, signers: tuple[NodeId, ...] = MEMBERS[:2]) -> QuorumCertificate:
    statement = append_statement(DOMAIN, View(term), block.height, block.block_hash)
    return QuorumCertificate(
        statement, tuple((s, sign_append(KEYS[s], statement)) for s in signers)
    )


# --------------------------------------------------------------------------
# RaftLog
# --------------------------------------------------------------------------


def test_log_positions_terms_and_hashes() -> None:
    log = log_of([1, 1, 2, 3])
    assert (log.last_index, log.last_term) == (4, 3)
    assert log.term_at(0) == 0
    assert log.hash_at(0) == ZERO_HASH
    assert log.term_at(5) is None
    assert log.first_index_of_term_run(2) == 1
    assert log.first_index_of_term_run(3) == 3
    assert [b.height for b in log.entries_between(0, 99)] == [1, 2, 3, 4]
    assert log.entries_between(3, 2) == ()


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(build([1, 1, 2, 3, 3])[4], id="skips a height"),
        pytest.param(build([1, 1, 2, 3], tag="x")[3], id="does not link"),
        pytest.param(build([1, 1, 2])[2], id="height already taken"),
    ],
)
def test_append_refuses_entries_that_do_not_extend_the_log(block: Block) -> None:
    log = log_of([1, 1, 2])
    with pytest.raises(ValidationError):
        log.append(block)
    log.append(build([1, 1, 2, 3])[3])  # the well-formed control
    assert log.last_index == 4


def test_append_refuses_a_lower_term() -> None:
    log = log_of([1, 2])
    lower = build([1, 2, 1])[2]
    with pytest.raises(ValidationError):
        log.append(lower)


def test_truncate_compact_and_reset_keep_the_chain_rooted() -> None:
    log = log_of([1, 1, 2, 2, 3])
    assert [b.height for b in log.truncate_from(4)] == [4, 5]
    assert log.last_index == 3
    dropped = log.compact_to(2)
    assert [b.height for b in dropped] == [1, 2]
    assert (log.snapshot_index, log.snapshot_term) == (2, 1)
    assert log.term_at(1) is None
    assert log.term_at(2) == 1
    # Resetting to a point whose successor links keeps the successor.
    full = build([1, 1, 2, 2, 3])
    log = log_of([1, 1, 2, 2, 3])
    log.reset_snapshot(Height(3), View(2), full[2].block_hash)
    assert (log.snapshot_index, log.last_index) == (3, 5)
    # Resetting to a different block drops everything above.
    log.reset_snapshot(Height(4), View(2), build([1, 1, 2, 2], tag="x")[3].block_hash)
    assert (log.snapshot_index, log.last_index) == (4, 4)


# --------------------------------------------------------------------------
# Persisted state
# --------------------------------------------------------------------------


def test_restore_from_nothing_is_genesis() -> None:
    state = restore_state({}, ZERO_HASH)
    assert (state.term, state.vote, state.applied_height, state.entries) == (0, None, 0, ())


def test_restore_keeps_the_linked_run_above_the_applied_block() -> None:
    blocks = build([1, 1, 2, 2, 2])
    stored = {
        HARD_KEY: encode_hard_state(View(2), NodeId("n1")),
        APPLIED_KEY: encode_applied(Height(2), View(1), blocks[1].block_hash),
    }
    for block in blocks[:3] + blocks[4:]:  # height 4 missing: a gap
        stored[log_key(block.height)] = encode_entry(block)
    state = restore_state(stored, ZERO_HASH)
    assert (state.term, state.vote) == (2, "n1")
    assert [b.height for b in state.entries] == [3]
    assert state.stale_keys == (log_key(1), log_key(2), log_key(5))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(HARD_KEY, b"\xff", id="hard state not CBOR"),
        pytest.param(APPLIED_KEY, encode_hard_state(View(1), None), id="applied with wrong fields"),
        pytest.param("raft/other", b"", id="unknown key"),
        pytest.param(log_key(2), encode_entry(build([1])[0]), id="entry under the wrong key"),
        pytest.param("raft/log/x", b"", id="unparsable log key"),
    ],
)
def test_restore_reports_bytes_it_never_wrote(key: str, value: bytes) -> None:
    with pytest.raises(CorruptStore):
        restore_state({key: value}, ZERO_HASH)


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


def test_a_majority_of_raft_append_signatures_certifies_a_block() -> None:
    block = build([1, 2])[1]
    verify_raft_certificate(block, cert(block, 3), VOTERS)  # a later term may certify it
    assert raft_quorum(3) == 2
    assert raft_quorum(4) == 3


@pytest.mark.parametrize(
    ("make", "error"),
    [
        pytest.param(lambda b: cert(b, 2, MEMBERS[:1]), QuorumNotMet, id="below majority"),
        pytest.param(lambda b: cert(b, 1), ChainError, id="term before the block's"),
        pytest.param(lambda b: cert(build([1, 2], "x")[1], 2), ChainError, id="another block"),
        pytest.param(
            lambda b: QuorumCertificate(
                VoteStatement("commit", DOMAIN, Epoch(0), View(2), b.height, b.block_hash), ()
            ),
            ChainError,
            id="not a raft statement",
        ),
        pytest.param(
            lambda b: QuorumCertificate(
                cert(b, 2).statement, ((NodeId("a-outsider"), b"s" * 64), (MEMBERS[0], b"s" * 64))
            ),
            UnknownSigner,
            id="outsider",
        ),
        pytest.param(
            lambda b: QuorumCertificate(
                cert(b, 2).statement, tuple((s, b"\x00" * 64) for s in MEMBERS[:2])
            ),
            InvalidSignature,
            id="bad signature",
        ),
    ],
)
def test_certificates_that_prove_nothing_are_refused(make: object, error: type[Exception]) -> None:
    block = build([1, 2])[1]
    with pytest.raises(error):
        verify_raft_certificate(block, make(block), VOTERS)  # type: ignore[operator]


def test_ack_collector_certifies_at_a_majority_and_skips_what_it_no_longer_needs() -> None:
    blocks = build([1, 1])
    collector = AckCollector(DOMAIN, View(1), VOTERS)
    collector.add_own(KEYS[MEMBERS[0]], MEMBERS[0], Height(1), blocks[0].block_hash)
    assert collector.take_certificate(Height(1), blocks[0].block_hash) is None
    good = cert(blocks[0], 1, (MEMBERS[1],)).signatures
    forged = ((Height(1), b"\x00" * 64),)
    assert (
        collector.verify_needed(MEMBERS[1], forged, lambda h: blocks[h - 1].block_hash, 0) is None
    )
    ok = collector.verify_needed(
        MEMBERS[1], ((Height(1), good[0][1]),), lambda h: blocks[h - 1].block_hash, 0
    )
    assert ok is not None
    collector.add(MEMBERS[1], ok)
    made = collector.take_certificate(Height(1), blocks[0].block_hash)
    assert made is not None
    verify_raft_certificate(blocks[0], made, VOTERS)
    # Heights at or below the commit point are not even checked.
    assert collector.verify_needed(MEMBERS[2], forged, lambda h: blocks[0].block_hash, 1) == []


def test_ack_signer_signs_each_height_once_per_term() -> None:
    signer = AckSigner(DOMAIN, KEYS[MEMBERS[1]])
    block = build([1])[0]
    first = signer.sign(View(1), block.height, block.block_hash)
    assert signer.sign(View(1), block.height, block.block_hash) == first
    other_term = signer.sign(View(2), block.height, block.block_hash)
    assert other_term != first


def test_fetched_blocks_are_accepted_up_to_the_first_that_does_not_verify() -> None:
    blocks = build([1, 1, 1, 1])
    fetched = [(b, cert(b, 1)) for b in blocks]
    fetched[2] = (blocks[2], cert(blocks[2], 1, MEMBERS[:1]))
    accepted = accept_fetched_chain(fetched, 1, blocks[0].block_hash, VOTERS, DOMAIN)
    assert [b.height for b, _ in accepted] == [2]
    assert accept_fetched_chain(fetched, 0, ZERO_HASH, VOTERS, DomainId("other")) == []


# --------------------------------------------------------------------------
# The follower's decision (§5.3) and the leader's per-peer progress
# --------------------------------------------------------------------------

LEADER_LOG = build([1, 1, 2, 3, 3])


def append(prev: int, entries: list[Block], term: int = 3) -> AppendEntries:
    prev_term = 0 if prev == 0 else LEADER_LOG[prev - 1].header.view
    return AppendEntries(View(term), Height(prev), View(prev_term), tuple(entries), Height(0))


def follower_log(shared: int, own_terms: list[int], leader: list[Block] | None = None) -> RaftLog:
    """The leader's first ``shared`` entries, then entries of the follower's own, with these terms."""
    log = RaftLog(Height(0), View(0), ZERO_HASH)
    for block in (LEADER_LOG if leader is None else leader)[:shared]:
        log.append(block)
    for term in own_terms:
        log.append(
            make_block(
                domain=DOMAIN,
                height=Height(log.last_index + 1),
                epoch=Epoch(0),
                view=View(term),
                prev_hash=log.hash_at(log.last_index) or ZERO_HASH,
                transactions=(Transaction(b"own"),),
                timestamp_ms=0,
                proposer=MEMBERS[1],
            )
        )
    return log


@pytest.mark.parametrize(
    ("shared", "own", "commit", "message", "expected"),
    [
        pytest.param(2, [], 0, append(3, LEADER_LOG[3:]), Height(3), id="missing prev: hint"),
        pytest.param(2, [2, 2, 2], 0, append(4, LEADER_LOG[4:]), Height(3), id="skip the term run"),
        pytest.param(4, [3], 0, append(4, LEADER_LOG[4:]), None, id="same term, other block"),
        pytest.param(
            3,
            [2, 2, 2],
            0,
            append(3, LEADER_LOG[3:]),
            AppendPlan(4, tuple(LEADER_LOG[3:]), Height(5)),
            id="first conflict at 4",
        ),
        pytest.param(
            5,
            [],
            0,
            append(1, LEADER_LOG[1:3]),
            AppendPlan(None, (), Height(3)),
            id="duplicate keeps the tail",
        ),
        pytest.param(
            3,
            [],
            0,
            append(1, LEADER_LOG[1:]),
            AppendPlan(None, tuple(LEADER_LOG[3:]), Height(5)),
            id="extends",
        ),
        pytest.param(3, [2], 4, append(3, LEADER_LOG[3:]), None, id="conflict below commit"),
        pytest.param(3, [2], 4, append(4, []), None, id="prev term differs below commit"),
    ],
)
def test_plan_append(
    shared: int, own: list[int], commit: int, message: AppendEntries, expected: object
) -> None:
    log = follower_log(shared, own)
    before = [b.block_hash for b in log.entries_between(1, log.last_index)]
    assert plan_append(log, commit, message, domain=DOMAIN, members=MEMBERS) == expected
    assert [b.block_hash for b in log.entries_between(1, log.last_index)] == before


def test_plan_append_with_the_planted_bug_truncates_matching_entries() -> None:
    log = RaftLog(Height(0), View(0), ZERO_HASH)
    for block in LEADER_LOG:
        log.append(block)
    plan = plan_append(
        log, 0, append(1, LEADER_LOG[1:2]), domain=DOMAIN, members=MEMBERS,
        truncate_without_conflict=True,
    )  # fmt: skip
    assert plan == AppendPlan(2, (LEADER_LOG[1],), Height(2))


def test_progress_never_backs_off_below_what_is_known_to_match() -> None:
    progress = Progress(next_index=10, cert_next=1, match_index=6, probing=False)
    progress.on_reject(2)
    assert (progress.next_index, progress.probing) == (7, True)
    progress.on_success(8)
    assert (progress.match_index, progress.next_index, progress.probing) == (8, 9, False)
    progress.on_success(5)  # a late, stale success
    assert progress.match_index == 8


def test_plan_replication_keeps_at_most_a_window_in_flight_and_snapshots_when_compacted() -> None:
    log = RaftLog(Height(0), View(0), ZERO_HASH)
    for block in LEADER_LOG:
        log.append(block)
    progress = Progress(next_index=2, cert_next=1, match_index=1, probing=False)
    kwargs = {
        "term": View(3),
        "commit_index": Height(0),
        "certificates": {},
        "window": 2,
        "now_ms": 0,
        "snapshot_interval_ms": 100,
    }
    first = plan_replication(progress, log, heartbeat=False, probe=False, **kwargs)  # type: ignore[arg-type]
    assert isinstance(first, AppendEntries)
    assert [b.height for b in first.entries] == [2, 3]
    assert plan_replication(progress, log, heartbeat=False, probe=False, **kwargs) is None  # type: ignore[arg-type]
    beat = plan_replication(progress, log, heartbeat=True, probe=False, **kwargs)  # type: ignore[arg-type]
    assert isinstance(beat, AppendEntries)
    assert (beat.entries, beat.prev_log_index) == ((), 1)
    log.compact_to(3)
    progress.on_reject(1)
    snap = plan_replication(progress, log, heartbeat=True, probe=False, **kwargs)  # type: ignore[arg-type]
    assert snap == InstallSnapshot(View(3), Height(3), View(2), LEADER_LOG[2].block_hash)
    # At most one InstallSnapshot per interval.
    assert plan_replication(progress, log, heartbeat=True, probe=False, **kwargs) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Property: reordered and duplicated AppendEntries never undo an acknowledgement
# --------------------------------------------------------------------------

# The leader (term 6) holds entries of terms 1, 4 and 6; followers' own entries have terms
# 2, 3 or 5, so no (height, term) pair is shared by two different entries (Log Matching).
LONG_LOG = build([1, 1, 4, 4, 6, 6, 6, 6, 6, 6])


def leader_append(prev: int, count: int) -> AppendEntries:
    prev_term = 0 if prev == 0 else LONG_LOG[prev - 1].header.view
    entries = tuple(LONG_LOG[prev : prev + count])
    return AppendEntries(View(6), Height(prev), View(prev_term), entries, Height(0))


@settings(max_examples=200, deadline=None)
@given(
    shared=st.integers(0, 4),
    own=st.lists(st.sampled_from([2, 3, 5]), max_size=6).map(sorted),
    messages=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 4)), min_size=1, max_size=25),
)
def test_any_order_of_appends_keeps_every_acknowledged_prefix(
    shared: int, own: list[int], messages: list[tuple[int, int]]
) -> None:
    floor = LONG_LOG[shared - 1].header.view if shared else 1
    log = follower_log(shared, [t for t in own if t >= floor], LONG_LOG)
    acknowledged = 0
    for prev, count in messages:
        plan = plan_append(log, 0, leader_append(prev, count), domain=DOMAIN, members=MEMBERS)
        assert plan is not None  # a correct leader's messages are never invalid
        if isinstance(plan, AppendPlan):
            if plan.truncate_from is not None:
                assert plan.truncate_from > acknowledged  # §5.3: never below an acknowledgement
                log.truncate_from(plan.truncate_from)
            for block in plan.new_entries:
                log.append(block)
            acknowledged = max(acknowledged, plan.match_index)
        mine = [b.block_hash for b in log.entries_between(1, acknowledged)]
        assert mine == [b.block_hash for b in LONG_LOG[:acknowledged]]
