"""PBFT view change: timeouts that grow, re-proposal of prepared blocks, new-view proofs."""

from __future__ import annotations

import dataclasses

import pytest
from pbft_cluster import DOMAIN, GENESIS, Cluster, node_ids, node_key, tx

from belep.consensus.certificates import BlockBodyCache, SignatureCache
from belep.consensus.pbft import TIMER_PROGRESS, TIMER_VIEW_CHANGE, Mode
from belep.consensus.pbft_messages import Commit, NewView, PreparedEntry, PrePrepare, ViewChange
from belep.consensus.pbft_rules import (
    PbftRules,
    check_new_view,
    make_new_view,
    make_view_change,
    plan_new_view,
)
from belep.consensus.types import Broadcast, Effect, Receive, SetTimer, TimerFired
from belep.errors import ChainError, InvalidSignature, ProtocolViolation, QuorumNotMet
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

IDS = node_ids(4)


def started(n: int = 4, **overrides: object) -> Cluster:
    c = Cluster(n=n, config_overrides=dict(overrides))
    c.start()
    assert c.run(lambda: all(r is not None and r.mode is Mode.NORMAL for r in c.replicas.values()))
    return c


def live(c: Cluster) -> list[NodeId]:
    return [n for n in c.ids if c.replicas[n] is not None]


def test_crashed_primary_is_replaced_and_commits_continue() -> None:
    c = started()
    c.crash(c.ids[1])
    txs = [tx(i) for i in range(20)]
    for i, t in enumerate(txs):
        c.submit(live(c)[i % 3], t)
    assert c.run(lambda: c.all_committed(txs, live(c)))
    for node in live(c):
        r = c.replica(node)
        assert (r.mode, r.view) == (Mode.NORMAL, 2)
        assert all(b.header.proposer == c.ids[2] for b, _ in c.chains[node])
    assert c.violations == []


def test_view_change_timeouts_double_until_a_view_succeeds() -> None:
    c = started(n=7)
    c.record = True
    c.crash(c.ids[1])  # primary of view 1
    c.crash(c.ids[2])  # primary of view 2
    txs = [tx(i) for i in range(10)]
    for t in txs:
        c.submit(c.ids[0], t)
    assert c.run(lambda: c.all_committed(txs, live(c)))
    r0 = c.replica(c.ids[0])
    assert r0.view == 3
    delays = [
        e.delay_ms
        for e in c.effects[c.ids[0]]
        if isinstance(e, SetTimer) and e.timer == TIMER_VIEW_CHANGE
    ]
    base = c.config(c.ids[0]).request_timeout_ms
    assert base * 4 in delays
    assert base * 8 in delays
    assert max(delays) == base * 8


def test_prepared_blocks_are_re_proposed_with_their_hash() -> None:
    c = started(max_batch_size=2)

    def no_commits_in_view_1(_src: NodeId, _dst: NodeId, message: object) -> object | None:
        return None if isinstance(message, Commit) and message.statement.view == 1 else message

    c.filter = no_commits_in_view_1
    txs = [tx(i) for i in range(8)]
    for t in txs:
        c.submit(c.ids[1], t)
    c.run_for(40)  # the block prepares everywhere, nothing commits (nor can the next
    # block be proposed: it would need the state root after this one)
    prepared = {
        h: c.replica(c.ids[0]).slot(h).prepared.statement.block_hash  # type: ignore[union-attr]
        for h in (1,)
    }
    assert c.replica(c.ids[0]).slot(2) is None
    assert all(c.replica(n).committed_height == 0 for n in c.ids)
    c.crash(c.ids[1])
    for t in txs[2:]:  # never proposed: only the crashed primary held them; a client resends
        c.submit(c.ids[2], t)
    assert c.run(lambda: c.all_committed(txs, live(c)))
    for node in live(c):
        chain = c.chains[node]
        assert {h: chain[h - 1][0].block_hash for h in (1,)} == prepared
        first, qc = chain[0]
        assert (first.header.view, first.header.proposer) == (1, c.ids[1])
        assert qc.statement.view == 2  # committed in the new view
    assert c.violations == []


def test_block_committed_at_one_replica_survives_the_view_change() -> None:
    c = started()
    phase = {"only_r0_sees_commits": True}

    def filt(_src: NodeId, dst: NodeId, message: object) -> object | None:
        if phase["only_r0_sees_commits"] and isinstance(message, Commit) and dst != c.ids[0]:
            return None
        return message

    c.filter = filt
    txs = [tx(i) for i in range(4)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.replica(c.ids[0]).committed_height >= 1, max_time=100)
    decided = c.chains[c.ids[0]][0][0].block_hash
    assert all(c.replica(n).committed_height == 0 for n in c.ids[1:])
    phase["only_r0_sees_commits"] = False
    c.crash(c.ids[1])
    more = [tx(i, b"more") for i in range(4)]
    for t in more:
        c.submit(c.ids[2], t)
    assert c.run(lambda: c.all_committed(txs + more, live(c)))
    assert all(c.chains[n][0][0].block_hash == decided for n in live(c))
    assert c.violations == []


def test_f_plus_one_view_changes_make_a_replica_join() -> None:
    c = started()
    rules = c.replica(c.ids[0]).rules
    r0 = c.replica(c.ids[0])
    for voter in (c.ids[2], c.ids[3]):
        vc = make_view_change(node_key(voter), rules, View(2), voter, None, ())
        r0.handle(Receive(voter, vc), c.now)
        if voter == c.ids[2]:
            assert (r0.mode, r0.view) == (Mode.NORMAL, 1)  # one is not enough
    assert (r0.mode, r0.view) == (Mode.VIEW_CHANGE, 2)


def _view_changes_sent(effects: list[Effect]) -> list[ViewChange]:
    return [
        e.message for e in effects if isinstance(e, Broadcast) and isinstance(e.message, ViewChange)
    ]


def _timer_delays(effects: list[Effect]) -> list[int]:
    return [e.delay_ms for e in effects if isinstance(e, SetTimer) and e.timer == TIMER_VIEW_CHANGE]


def test_a_replica_left_in_a_view_without_quorum_catches_up_with_a_later_view() -> None:
    """Seed 7087's split: r0 and r2 ask for view 2, r3 alone for view 3 (its floor came
    from a lie), r1 faulty and silent. View 2 can never gather q = 3; at its timeout r0
    moves to view 3, the lowest later view asked for, instead of asking for 2 forever."""
    c = started()
    r0, r2 = c.replica(c.ids[0]), c.replica(c.ids[2])
    rules = r0.rules
    vc3 = make_view_change(node_key(c.ids[3]), rules, View(3), c.ids[3], None, ())
    vc2 = make_view_change(node_key(c.ids[2]), rules, View(2), c.ids[2], None, ())
    entered = c.step(c.ids[0], Receive(c.ids[2], vc2)) + c.step(c.ids[0], Receive(c.ids[3], vc3))
    assert (r0.mode, r0.view) == (Mode.VIEW_CHANGE, 2)  # the join rule: 2nd highest of {2, 3}
    [first_timeout] = _timer_delays(entered)
    fired = c.step(c.ids[0], TimerFired(TIMER_VIEW_CHANGE))
    sent = _view_changes_sent(fired)
    assert (r0.mode, r0.view, [vc.new_view for vc in sent]) == (Mode.VIEW_CHANGE, 3, [3])
    assert _timer_delays(fired) == [2 * first_timeout]
    # r2 sees r0 and r3 ask for view 3 (f + 1 others) and joins: view 3 has its quorum.
    c.step(c.ids[2], Receive(c.ids[3], vc3))
    c.step(c.ids[2], Receive(c.ids[0], sent[0]))
    assert (r2.mode, r2.view) == (Mode.VIEW_CHANGE, 3)


def test_a_replica_ahead_with_only_f_others_beside_it_keeps_waiting() -> None:
    """A faulty member asking for a later view cannot lure a lone replica further ahead:
    r0 in view 2 with only r1 (asking for 3) beside it is 2 < q members; it resends."""
    c = started()
    r0 = c.replica(c.ids[0])
    c.submit(c.ids[0], tx(1))
    c.step(c.ids[0], TimerFired(TIMER_PROGRESS))
    c.step(c.ids[0], TimerFired(TIMER_PROGRESS))
    assert (r0.mode, r0.view) == (Mode.VIEW_CHANGE, 2)
    lure = make_view_change(node_key(c.ids[1]), r0.rules, View(3), c.ids[1], None, ())
    c.step(c.ids[0], Receive(c.ids[1], lure))
    for _ in range(3):
        sent = _view_changes_sent(c.step(c.ids[0], TimerFired(TIMER_VIEW_CHANGE)))
        assert (r0.mode, r0.view, [vc.new_view for vc in sent]) == (Mode.VIEW_CHANGE, 2, [2])


def test_replica_that_missed_the_new_view_is_sent_it_again() -> None:
    c = Cluster()

    def drop_new_view_to_r3(_src: NodeId, dst: NodeId, message: object) -> object | None:
        return None if isinstance(message, NewView) and dst == c.ids[3] else message

    c.filter = drop_new_view_to_r3
    c.start()
    c.run_for(30)
    assert c.replica(c.ids[3]).mode is Mode.VIEW_CHANGE
    c.filter = None
    txs = [tx(i) for i in range(6)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs))
    r3 = c.replica(c.ids[3])
    assert c.run(lambda: r3.mode is Mode.NORMAL, max_time=c.config(c.ids[3]).request_timeout_ms)
    assert r3.view == 1  # it installed the view it missed instead of moving on alone
    more = [tx(i, b"more") for i in range(6)]
    for t in more:
        c.submit(c.ids[3], t)
    assert c.run(lambda: c.all_committed(more))
    assert c.violations == []


def test_equivocating_primary_cannot_fork() -> None:
    c = started()
    alternatives: dict[Digest, Block] = {}

    def equivocate(src: NodeId, dst: NodeId, message: object) -> object | None:
        if isinstance(message, PrePrepare) and src == c.ids[1] and dst in c.ids[2:]:
            b = message.block
            alt = alternatives.setdefault(
                b.block_hash,
                make_block(
                    domain=b.header.domain,
                    height=b.height,
                    epoch=b.header.epoch,
                    view=b.header.view,
                    prev_hash=b.header.prev_hash,
                    transactions=(Transaction(b"evil"), *b.transactions[1:]),
                    timestamp_ms=b.header.timestamp_ms,
                    proposer=b.header.proposer,
                ),
            )
            return PrePrepare(message.view, alt)
        return message

    c.filter = equivocate
    txs = [tx(i) for i in range(6)]
    for t in txs:
        c.submit(c.ids[0], t)
    c.run_for(100)
    assert all(c.replica(n).committed_height == 0 for n in c.ids)  # no quorum for either block
    c.filter = None
    assert c.run(lambda: c.all_committed(txs, [c.ids[0], c.ids[2], c.ids[3]]))
    assert c.replica(c.ids[0]).view >= 2
    assert c.violations == []


# --------------------------------------------------------------------------
# The new-view plan and its proofs
# --------------------------------------------------------------------------


def _rules(**changes: object) -> PbftRules:
    base = PbftRules(
        domain=DOMAIN,
        epoch=Epoch(0),
        members=IDS,
        voters={m: node_key(m).public_key for m in IDS},
        quorum=3,
        prepare_quorum=3,
        checkpoint_interval=4,
        log_size=8,
        genesis_hash=GENESIS,
        forget_prepared=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _chain_block(height: int, prev: Digest, tag: bytes, view: int = 1) -> Block:
    return make_block(
        domain=DOMAIN,
        height=Height(height),
        epoch=Epoch(0),
        view=View(view),
        prev_hash=prev,
        transactions=(Transaction(tag),),
        timestamp_ms=10,
        proposer=IDS[view % 4],
    )


def _entry(block: Block, view: int, signers: tuple[NodeId, ...] = IDS[:3]) -> PreparedEntry:
    s = VoteStatement("prepare", DOMAIN, Epoch(0), View(view), block.height, block.block_hash)
    sigs = tuple((m, node_key(m).sign(s.signing_bytes())) for m in signers)
    return PreparedEntry(QuorumCertificate(s, sigs), block)


def _vc(voter: NodeId, entries: tuple[PreparedEntry, ...], view: int = 3) -> ViewChange:
    return make_view_change(node_key(voter), _rules(), View(view), voter, None, entries)


def test_plan_takes_the_highest_view_certificate_per_height() -> None:
    a1 = _chain_block(1, GENESIS, b"a1")
    a2 = _chain_block(2, a1.block_hash, b"a2")
    b2 = _chain_block(2, a1.block_hash, b"b2", view=2)
    vcs = [
        _vc(IDS[0], (_entry(a1, 1), _entry(a2, 1))),
        _vc(IDS[1], (_entry(a1, 1), _entry(b2, 2))),
        _vc(IDS[2], ()),
    ]
    plan = plan_new_view(View(3), vcs, _rules())
    assert [e.block for e in plan.reproposals] == [a1, b2]
    assert plan.last_height == 2
    forgetful = plan_new_view(View(3), vcs, _rules(forget_prepared=True))
    assert forgetful.reproposals == ()


def test_plan_stops_at_a_gap_or_a_broken_link() -> None:
    a1 = _chain_block(1, GENESIS, b"a1")
    a3 = _chain_block(3, b"\x01" * 32, b"a3")
    stray = _chain_block(2, b"\x02" * 32, b"stray")
    plan = plan_new_view(View(3), [_vc(IDS[0], (_entry(a1, 1), _entry(a3, 1)))], _rules())
    assert [e.height for e in plan.reproposals] == [1]
    plan = plan_new_view(View(3), [_vc(IDS[0], (_entry(a1, 1), _entry(stray, 1)))], _rules())
    assert [e.height for e in plan.reproposals] == [1]


def _check(nv: NewView) -> object:
    return check_new_view(nv, _rules(), SignatureCache(), BlockBodyCache())


def test_new_view_checks_its_proofs() -> None:
    a1 = _chain_block(1, GENESIS, b"a1")
    vcs = [_vc(m, (_entry(a1, 1),)) for m in IDS[:3]]
    primary = IDS[3]  # primary of view 3
    nv, plan = make_new_view(node_key(primary), _rules(), View(3), vcs)
    assert _check(nv) == plan
    cases: list[tuple[str, NewView, type[Exception]]] = [
        (
            "signed by a backup",
            make_new_view(node_key(IDS[0]), _rules(), View(3), vcs)[0],
            InvalidSignature,
        ),
        (
            "below quorum",
            make_new_view(node_key(primary), _rules(), View(3), vcs[:2])[0],
            QuorumNotMet,
        ),
        (
            "one replica twice",
            make_new_view(node_key(primary), _rules(), View(3), [vcs[0]] * 3)[0],
            QuorumNotMet,
        ),
        (
            "view change for another view",
            make_new_view(
                node_key(primary), _rules(), View(3), [*vcs[:2], _vc(IDS[2], (), view=4)]
            )[0],
            ProtocolViolation,
        ),
        (
            "forged prepared certificate",
            make_new_view(
                node_key(primary),
                _rules(),
                View(3),
                [*vcs[:2], _vc(IDS[2], (_entry(a1, 1, (IDS[0], IDS[0], IDS[1])),))],
            )[0],
            QuorumNotMet,
        ),
        (
            "certificate from the new view itself",
            make_new_view(
                node_key(primary), _rules(), View(3), [*vcs[:2], _vc(IDS[2], (_entry(a1, 3),))]
            )[0],
            ProtocolViolation,
        ),
        (
            "block swapped under its certificate",
            make_new_view(
                node_key(primary),
                _rules(),
                View(3),
                [
                    *vcs[:2],
                    _vc(
                        IDS[2],
                        (PreparedEntry(_entry(a1, 1).certificate, _chain_block(1, GENESIS, b"x")),),
                    ),
                ],
            )[0],
            ChainError,
        ),
    ]
    for name, bad, error in cases:
        with pytest.raises(error):
            _check(bad)
        assert name


def test_view_change_with_tampered_block_body_is_rejected() -> None:
    a1 = _chain_block(1, GENESIS, b"a1")
    entry = _entry(a1, 1)
    tampered = PreparedEntry(entry.certificate, Block(a1.header, (Transaction(b"other"),)))
    vc = _vc(IDS[0], (tampered,))
    nv = make_new_view(node_key(IDS[3]), _rules(), View(3), [vc, _vc(IDS[1], ()), _vc(IDS[2], ())])[
        0
    ]
    with pytest.raises(ChainError):
        _check(nv)


def test_a_replica_alone_in_a_later_view_hands_client_transactions_to_the_others() -> None:
    """A backup, cut off, times out into a view no one else asks for; once the link is
    back it stays in that view change (f + 1 are needed to move the others).
    Once it delivers the others' blocks by state transfer, transactions its clients submit
    must reach the working primary: it forwards them to every member (before, its pool
    kept them until a view it would never see), and so do the ones still waiting in its
    pool, like the one submitted while it was cut off."""
    c = started()
    primary = c.replica(c.ids[0]).primary()
    alone = next(n for n in c.ids if n != primary)
    others = [n for n in c.ids if n != alone]
    lonely = c.replica(alone)
    view = lonely.view

    def cut_off(src: NodeId, dst: NodeId, message: object) -> object | None:
        return None if alone in (src, dst) else message

    c.filter = cut_off
    lost = tx(1, b"cut-off")
    c.submit(alone, lost)
    c.run_for(5_000)
    assert lonely.mode is Mode.VIEW_CHANGE
    assert lonely.view > view
    assert all(c.replica(n).view == view for n in others)
    c.filter = None
    # The others keep committing; the lone one delivers their blocks by state transfer.
    height = c.heights()[alone]
    busy = [tx(i, b"busy") for i in range(40)]
    for t in busy:
        c.submit(others[0], t)
    assert c.run(lambda: c.heights()[alone] > height, max_time=5_000)
    assert lonely.mode is Mode.VIEW_CHANGE
    later = [tx(i, b"later") for i in range(3)]
    for t in later:
        c.submit(alone, t)
    assert c.run(lambda: c.all_committed([lost, *later], nodes=others), max_time=5_000)
    assert all(c.replica(n).view == view for n in others)  # no view change was needed
    assert c.violations == []
