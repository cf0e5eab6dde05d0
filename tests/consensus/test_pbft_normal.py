"""PBFT normal case: bootstrap, batching, pipelining, checkpoints, and the handler contract."""

from __future__ import annotations

import dataclasses

import pytest
from pbft_cluster import DOMAIN, GENESIS, Cluster, node_key, tx

from belep.consensus.pbft import Mode, PbftReplica
from belep.consensus.pbft_messages import (
    Checkpoint,
    Commit,
    ForwardRequests,
    NewView,
    Prepare,
    PrePrepare,
    StatusRequest,
    ViewChange,
)
from belep.consensus.pbft_state import STABLE_KEY, slot_key
from belep.consensus.types import Receive, Send
from belep.ledger.block import (
    Block,
    Digest,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.execution import genesis_state_root


def started(n: int = 4, **overrides: object) -> Cluster:
    """A cluster past its bootstrap view change (view 1 installed everywhere)."""
    c = Cluster(n=n, config_overrides=dict(overrides))
    c.start()
    assert c.run(lambda: all(r is not None and r.mode is Mode.NORMAL for r in c.replicas.values()))
    return c


def test_bootstrap_installs_view_one_without_any_block() -> None:
    c = started()
    for node in c.ids:
        r = c.replica(node)
        assert (r.mode, r.view, r.floor, r.committed_height) == (Mode.NORMAL, 1, 0, 0)
    assert c.replica(c.ids[0]).primary() == c.ids[1]


def test_cluster_commits_every_request_once_with_quorum_certificates() -> None:
    c = started()
    txs = [tx(i) for i in range(40)]
    for i, t in enumerate(txs):
        c.submit(c.ids[i % 4], t)
    assert c.run(lambda: c.all_committed(txs))
    assert c.violations == []
    chains = {tuple(b.block_hash for b, _ in c.chains[n]) for n in c.ids}
    assert len(chains) == 1
    committed = c.committed_txs(c.ids[0])
    assert sorted(t.payload for t in committed) == sorted(t.payload for t in txs)
    for block, qc in c.chains[c.ids[2]]:
        assert qc.statement.kind == "commit"
        assert qc.statement.view == 1 == block.header.view
        assert len(qc.signatures) == 3
        assert block.header.proposer == c.ids[1]


def test_batches_are_cut_when_full_and_after_the_wait() -> None:
    c = started(max_batch_size=10, max_batch_wait_ms=7, window=8)
    primary = c.ids[1]
    t0 = c.now
    txs = [tx(i) for i in range(25)]
    for t in txs:
        c.submit(primary, t)
    assert c.run(lambda: c.all_committed(txs))
    sizes = [len(b.transactions) for b, _ in c.chains[primary]]
    assert sizes == [10, 10, 5]
    last = c.chains[primary][-1][0]
    assert last.header.timestamp_ms >= t0 + 7  # the partial batch waited max_batch_wait_ms


def test_the_primary_proposes_a_block_only_on_its_executed_parent_with_its_state_root() -> None:
    c = started(max_batch_size=2, window=3, checkpoint_interval=8)
    primary = c.ids[1]
    in_flight: list[int] = []
    roots: dict[int, bytes] = {}

    def watch(src: NodeId, _dst: NodeId, message: object) -> object:
        if isinstance(message, PrePrepare):
            in_flight.append(message.block.height - c.replica(src).committed_height)
            roots[message.block.height] = message.block.header.state_root
        return message

    c.filter = watch
    txs = [tx(i) for i in range(40)]
    for t in txs:
        c.submit(primary, t)
    assert c.run(lambda: c.all_committed(txs))
    # One block at a time: the next one carries the execution root of the one below.
    assert max(in_flight) == 1
    executed = c.execution[primary]
    for height, root in roots.items():
        below = executed.executed(height - 1)
        assert root == (below.state_root if below is not None else genesis_state_root(GENESIS))
    assert c.violations == []


def test_requests_sent_to_a_backup_are_forwarded_to_the_primary() -> None:
    c = started()
    c.record = True
    txs = [tx(i) for i in range(3)]
    for t in txs:
        c.submit(c.ids[3], t)
    assert c.run(lambda: c.all_committed(txs))
    forwards = [
        m for _, src, dst, m in c.sent if isinstance(m, ForwardRequests) and src == c.ids[3]
    ]
    assert forwards
    assert all(dst == c.ids[1] for _, src, dst, m in c.sent if isinstance(m, ForwardRequests))


def test_duplicate_and_invalid_requests_are_not_committed() -> None:
    c = Cluster(
        config_overrides={"validate_transaction": lambda t: not t.payload.startswith(b"bad")}
    )
    c.start()
    good = [tx(i) for i in range(5)]
    for t in good:
        c.submit(c.ids[1], t)
        c.submit(c.ids[2], t)  # the same transaction twice, at two replicas
    c.submit(c.ids[1], Transaction(b"bad request"))
    assert c.run(lambda: c.all_committed(good))
    c.run_for(500)
    committed = [t.payload for t in c.committed_txs(c.ids[0])]
    assert sorted(committed) == sorted(t.payload for t in good)
    assert c.replica(c.ids[1]).stats["ignored.invalid-transaction"] == 1


def test_checkpoints_become_stable_and_garbage_is_collected() -> None:
    c = started(max_batch_size=5, checkpoint_interval=4, window=4)
    txs = [tx(i) for i in range(60)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs))
    c.run_for(50)
    for node in c.ids:
        r = c.replica(node)
        assert r.committed_height == 12
        assert r.stable_height == 12
        assert all(r.slot(h) is None for h in range(1, 13))
        store = c.stores[node]
        assert STABLE_KEY in store
        assert not any(slot_key(h) in store for h in range(1, 13))
        assert not any(k.startswith("pbft/block/") for k in store)


# --------------------------------------------------------------------------
# The handler contract: invalid input is ignored and changes nothing
# --------------------------------------------------------------------------


def fingerprint(r: PbftReplica) -> object:
    slots = []
    for h in range(r.stable_height + 1, r.stable_height + 40):
        s = r.slot(h)
        if s is not None:
            slots.append((h, sorted(s.blocks), s.preprepared, s.vote, s.prepared, s.committed))
    return (r.mode, r.view, r.floor, r.committed_height, r.stable_height, slots)


def _block(c: Cluster, height: int, view: int = 1, **changes: object) -> Block:
    r = c.replica(c.ids[0])
    chain = c.chains[c.ids[0]]
    prev = chain[height - 2][0].block_hash if 1 < height <= len(chain) + 1 else GENESIS
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "height": Height(height),
        "epoch": Epoch(0),
        "view": View(view),
        "prev_hash": prev,
        "transactions": (Transaction(b"x1"), Transaction(b"x2")),
        "timestamp_ms": c.now,
        "proposer": r.primary(view),
    }
    fields.update(changes)
    return make_block(**fields)  # type: ignore[arg-type]


def _vote(kind: str, voter: NodeId, height: int, digest: bytes, view: int = 1, **changes: object):
    s = VoteStatement(kind, DOMAIN, Epoch(0), View(view), Height(height), Digest(digest))
    s = dataclasses.replace(s, **changes)  # type: ignore[arg-type]
    return s, node_key(voter).sign(s.signing_bytes())


def _cases(c: Cluster) -> list[tuple[str, NodeId, object]]:
    r0, r1, r2, r3 = c.ids
    good = _block(c, 1)
    tampered = Block(good.header, (Transaction(b"x1"), Transaction(b"other")))
    ps, psig = _vote("prepare", r3, 1, good.block_hash)
    cs, csig = _vote("commit", r3, 1, good.block_hash)
    ks, ksig = _vote("checkpoint", r3, 4, b"\x01" * 32, view=0)
    vc = c.replica(r3)._own_vc
    assert vc is not None
    return [
        ("pre-prepare from a backup", r3, PrePrepare(View(1), good)),
        ("pre-prepare for another view", r1, PrePrepare(View(0), good)),
        ("block of another domain", r1, PrePrepare(View(1), _block(c, 1, domain="elsewhere"))),
        ("block proposed by someone else", r1, PrePrepare(View(1), _block(c, 1, proposer=r2))),
        (
            "block from the far future",
            r1,
            PrePrepare(View(1), _block(c, 1, timestamp_ms=c.now + 10**6)),
        ),
        (
            "block not linked to genesis",
            r1,
            PrePrepare(View(1), _block(c, 1, prev_hash=b"\x09" * 32)),
        ),
        ("transactions not matching the header", r1, PrePrepare(View(1), tampered)),
        ("prepare with a bad signature", r3, Prepare(ps, b"\x00" * 64)),
        ("prepare signed by another member", r0, Prepare(ps, psig)),
        (
            "prepare of another domain",
            r3,
            Prepare(*_vote("prepare", r3, 1, good.block_hash, domain="x")),
        ),
        ("prepare for an old view", r3, Prepare(*_vote("prepare", r3, 1, good.block_hash, view=0))),
        ("commit labelled as prepare", r3, Prepare(cs, csig)),
        ("commit with a bad signature", r3, Commit(cs, csig[:-1] + bytes([csig[-1] ^ 1]))),
        ("checkpoint with a bad signature", r3, Checkpoint(ks, ksig[::-1])),
        (
            "checkpoint at a non-checkpoint height",
            r3,
            Checkpoint(*_vote("checkpoint", r3, 3, b"\x01" * 32, view=0)),
        ),
        ("view change relayed by another replica", r0, dataclasses.replace(vc, new_view=View(7))),
        ("view change with a bad signature", r3, dataclasses.replace(vc, new_view=View(7))),
        ("new view not signed by its primary", r2, NewView(DOMAIN, View(2), (vc,), b"\x00" * 64)),
        ("message from a non-member", NodeId("intruder"), Prepare(ps, psig)),
        ("forwarded invalid transaction", r3, ForwardRequests((Transaction(b"bad"),))),
        ("not a message", r3, object()),
    ]


def test_invalid_input_is_ignored_and_changes_nothing() -> None:
    c = started(validate_transaction=lambda t: t.payload != b"bad")
    target = c.replica(c.ids[2])
    for name, sender, message in _cases(c):
        before = fingerprint(target)
        pool = target._pool.pending_count
        counted = sum(target.stats.values())
        effects = target.handle(Receive(sender, message), c.now)
        assert effects == [], name
        assert fingerprint(target) == before, name
        assert target._pool.pending_count == pool, name
        assert sum(target.stats.values()) == counted + 1, name


def test_a_message_above_the_high_watermark_asks_its_sender_for_a_checkpoint() -> None:
    c = started()
    r2 = c.replica(c.ids[2])
    before = fingerprint(r2)
    far = PrePrepare(View(1), _block(c, 99))
    effects = r2.handle(Receive(c.ids[1], far), c.now)
    assert effects == [Send(c.ids[1], StatusRequest())]
    assert fingerprint(r2) == before
    assert r2.handle(Receive(c.ids[1], far), c.now) == []  # asked once per timeout
    assert r2.stats["ignored.pre-prepare-outside-watermarks"] == 2


def test_a_replica_cannot_vote_twice_in_one_slot() -> None:
    c = started()
    r2 = c.replica(c.ids[2])
    first = _vote("prepare", c.ids[3], 1, b"\x01" * 32)
    second = _vote("prepare", c.ids[3], 1, b"\x02" * 32)
    assert r2.handle(Receive(c.ids[3], Prepare(*first)), c.now) == []
    r2.handle(Receive(c.ids[3], Prepare(*second)), c.now)
    assert r2.stats["invalid.ProtocolViolation"] == 1
    assert r2._prepares.count(second[0]) == 0
    assert r2._prepares.count(first[0]) == 1


@pytest.mark.parametrize("n", [1, 5, 7])
def test_other_committee_sizes_commit(n: int) -> None:
    c = started(n=n)
    txs = [tx(i) for i in range(12)]
    for i, t in enumerate(txs):
        c.submit(c.ids[i % n], t)
    assert c.run(lambda: c.all_committed(txs))
    assert c.violations == []
    quorum = {1: 1, 5: 4, 7: 5}[n]  # n = 5: 2f + 1 = 3 quorums would not intersect safely
    assert all(len(qc.signatures) == quorum for _, qc in c.chains[c.ids[0]])


def test_status_request_is_answered_with_view_and_checkpoint() -> None:
    c = started()
    effects = c.replica(c.ids[0]).handle(Receive(c.ids[2], StatusRequest()), c.now)
    assert len(effects) == 1
    reply = effects[0].message  # type: ignore[union-attr]
    assert (reply.view, reply.stable) == (1, None)


def test_view_change_message_alone_does_not_move_a_replica() -> None:
    c = started()
    r0 = c.replica(c.ids[0])
    vc = c.replica(c.ids[3])._own_vc
    assert isinstance(vc, ViewChange)
    later = c.replica(c.ids[3])
    later._start_view_change(5)
    own = later._own_vc
    assert own is not None
    assert own.new_view == 5
    r0.handle(Receive(c.ids[3], own), c.now)
    assert (r0.mode, r0.view) == (Mode.NORMAL, 1)  # one replica (< f+1) is not enough
