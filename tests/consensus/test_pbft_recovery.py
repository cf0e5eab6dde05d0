"""PBFT state transfer, persistence, restart with and without state, observers."""

from __future__ import annotations

import dataclasses

from pbft_cluster import Cluster, make_config, node_ids, tx

from belep.consensus.pbft import Mode, PbftReplica
from belep.consensus.pbft_messages import Checkpoint, Commit, Prepare, PrePrepare, StatusReply
from belep.consensus.pbft_state import (
    META_KEY,
    PersistedSlot,
    encode_slot,
    load_state,
    slot_key,
)
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    Deliver,
    Persist,
    QuorumCertificate,
    Receive,
    RequestStateTransfer,
)
from belep.ledger.block import Digest, Height, NodeId, Transaction, View


def started(n: int = 4, **overrides: object) -> Cluster:
    c = Cluster(n=n, config_overrides=dict(overrides))
    c.start()
    assert c.run(lambda: all(r is not None and r.mode is Mode.NORMAL for r in c.replicas.values()))
    return c


def cut_off(c: Cluster, node: NodeId) -> None:
    c.filter = lambda src, dst, m: None if node in (src, dst) else m


def test_lagging_replica_catches_up_by_state_transfer() -> None:
    c = started(max_batch_size=2)
    r3 = c.ids[3]
    cut_off(c, r3)
    txs = [tx(i) for i in range(30)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs, c.ids[:3]))
    assert c.replica(r3).committed_height == 0
    c.filter = None
    c.record = True
    more = [tx(i, b"more") for i in range(4)]
    for t in more:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs + more))
    assert any(isinstance(e, RequestStateTransfer) for e in c.effects[r3])
    assert c.replica(r3).stable_height >= 12
    assert c.violations == []


def _committed_chain(length: int = 6) -> tuple[Cluster, list[tuple[Block, QuorumCertificate]]]:
    c = started(max_batch_size=1)
    txs = [tx(i) for i in range(length)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs))
    return c, list(c.chains[c.ids[0]])


def _fresh(c: Cluster) -> PbftReplica:
    """A replica that has seen nothing (not started: no status round)."""
    return PbftReplica(c.config(c.ids[3]), {})


def _delivered(effects: list[object]) -> list[int]:
    return [e.block.height for e in effects if isinstance(e, Deliver)]


def test_fetched_blocks_are_verified_before_delivery() -> None:
    c, chain = _committed_chain()
    (b1, q1), (b2, q2), (b3, q3) = chain[:3]
    weak = QuorumCertificate(q2.statement, q2.signatures[:2])
    other = dataclasses.replace(q2.statement, block_hash=b3.block_hash)
    wrong_block = QuorumCertificate(other, q2.signatures)
    tampered = Block(b2.header, (Transaction(b"changed"),))
    prepare_cert = QuorumCertificate(
        dataclasses.replace(q2.statement, kind="prepare"), q2.signatures
    )
    cases = {
        "certificate below quorum": ((b1, q1), (b2, weak)),
        "certificate for another block": ((b1, q1), (b2, wrong_block)),
        "transactions changed": ((b1, q1), (tampered, q2)),
        "prepare certificate instead of commit": ((b1, q1), (b2, prepare_cert)),
        "gap in heights": ((b1, q1), (b3, q3)),
    }
    for name, blocks in cases.items():
        r = _fresh(c)
        effects = r.handle(BlocksFetched(blocks), c.now)
        assert _delivered(effects) == [1], name  # the verified prefix only
        assert r.committed_height == 1, name
        assert sum(v for k, v in r.stats.items() if k.startswith("invalid.fetched")) == 1, name
    r = _fresh(c)
    assert _delivered(r.handle(BlocksFetched(((b2, q2),)), c.now)) == []  # does not link
    assert _delivered(r.handle(BlocksFetched(tuple(chain)), c.now)) == [1, 2, 3, 4, 5, 6]


def test_restart_with_state_resumes_without_equivocating() -> None:
    c = started(max_batch_size=2)
    r2 = c.ids[2]
    txs = [tx(i) for i in range(10)]
    for t in txs:
        c.submit(c.ids[1], t)
    c.run_for(3)  # r2 has voted on some blocks, not all committed
    c.crash(r2)
    c.run_for(20)
    c.restart(r2)
    restored = c.replica(r2)
    assert restored.mode is Mode.NORMAL
    assert restored.view == 1
    more = [tx(i, b"more") for i in range(10)]
    for t in more:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs + more))
    votes: dict[tuple[str, int, int], set[bytes]] = {}
    for _t, src, _dst, m in c.sent:
        if src == r2 and isinstance(m, Prepare | Commit):
            s = m.statement
            votes.setdefault((s.kind, s.view, s.height), set()).add(s.block_hash)
    assert votes
    assert all(len(d) == 1 for d in votes.values())
    assert c.violations == []


def test_persisted_state_round_trips() -> None:
    c = started(max_batch_size=1)
    for i in range(6):
        c.submit(c.ids[1], tx(i))
    assert c.run(lambda: all(h == 6 for h in c.heights().values()))
    c.run_for(20)
    state = load_state(c.stores[c.ids[0]])
    assert state.meta is not None
    assert (state.meta.view, state.meta.view_change, state.meta.delivered) == (1, False, 6)
    assert state.meta.delivered_hash == c.chains[c.ids[0]][-1][0].block_hash
    assert state.stable is not None
    assert state.stable.statement.height == 4
    assert sorted(state.slots) == [5, 6]
    assert all(s.prepared is not None and s.vote is not None for s in state.slots.values())
    restored = PbftReplica(c.config(c.ids[0]), c.stores[c.ids[0]])
    assert (restored.view, restored.committed_height, restored.stable_height) == (1, 6, 4)
    assert restored.slot(6).prepared == c.replica(c.ids[0]).slot(6).prepared  # type: ignore[union-attr]


def test_restart_without_state_never_votes_in_a_view_it_may_have_voted_in() -> None:
    c = started(max_batch_size=2)
    r2 = c.ids[2]
    txs = [tx(i) for i in range(12)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs))
    c.crash(r2)
    c.restart(r2, wipe=True)
    restart_at = c.now
    amnesiac = c.replica(r2)
    assert amnesiac.mode is Mode.RECOVERING
    assert c.run(lambda: amnesiac.mode is not Mode.RECOVERING)
    assert amnesiac.floor == 1  # the view it was in before the crash
    assert (amnesiac.mode, amnesiac.view) == (Mode.VIEW_CHANGE, 2)
    more = [tx(i, b"more") for i in range(12)]
    for t in more:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs + more))  # it catches up by state transfer
    assert not [
        m
        for t, src, _dst, m in c.sent
        if t >= restart_at
        and src == r2
        and isinstance(m, Prepare | Commit)
        and m.statement.view <= 1
    ]
    c.crash(c.ids[1])  # the next view change takes it back into the voting set
    later = [tx(i, b"later") for i in range(6)]
    for t in later:
        c.submit(c.ids[0], t)
    survivors = [c.ids[0], c.ids[2], c.ids[3]]
    assert c.run(lambda: c.all_committed(later, survivors))
    assert (amnesiac.mode, amnesiac.view) == (Mode.NORMAL, 2)
    assert c.violations == []


def test_meta_is_written_before_the_first_vote() -> None:
    c = Cluster()
    c.record = True
    c.start()
    c.submit(c.ids[1], tx(1))
    assert c.run(lambda: c.all_committed([tx(1)]))
    for node in c.ids:
        effects = c.effects[node]
        first_vote = next(
            i
            for i, e in enumerate(effects)
            if hasattr(e, "message") and isinstance(e.message, Prepare)  # type: ignore[attr-defined]
        )
        meta_writes = [i for i, e in enumerate(effects) if getattr(e, "key", None) == META_KEY]
        assert meta_writes
        assert meta_writes[0] < first_vote


def test_beyond_the_fault_model_it_stops_without_forking() -> None:
    c = started()
    c.crash(c.ids[2])
    c.crash(c.ids[3])
    before = c.heights()
    for i in range(10):
        c.submit(c.ids[1], tx(i))
    c.run_for(5_000)
    assert c.heights() == before
    assert c.violations == []


def test_observer_follows_the_chain_by_checkpoints() -> None:
    members = node_ids(4)
    observer = NodeId("auditor")
    overrides = {"observers": (observer,), "max_batch_size": 1}
    c = Cluster(config_overrides=overrides)
    c.start()
    txs = [tx(i) for i in range(9)]
    for t in txs:
        c.submit(members[1], t)
    assert c.run(lambda: c.all_committed(txs))
    watcher = PbftReplica(make_config(observer, 4, **overrides), {})
    assert watcher.mode is Mode.OBSERVER
    effects = watcher.start(c.now)
    assert any(isinstance(e, Broadcast) and e.to == members for e in effects)
    stable = c.replica(members[0])._checkpoints.stable
    assert stable is not None
    assert stable.statement.height == 8
    effects = watcher.handle(Receive(members[0], StatusReply(View(1), stable)), c.now)
    request = next(e for e in effects if isinstance(e, RequestStateTransfer))
    assert request.from_height == 1
    effects = watcher.handle(BlocksFetched(tuple(c.chains[members[0]])), c.now)
    assert watcher.committed_height == 9
    assert not any(isinstance(e, Prepare | Commit) for e in effects)  # it never votes


def test_restart_deletes_keys_left_below_the_stable_checkpoint() -> None:
    c = started(max_batch_size=1)
    for i in range(6):
        c.submit(c.ids[1], tx(i))
    assert c.run(lambda: all(h == 6 for h in c.heights().values()))
    c.run_for(20)
    store = dict(c.stores[c.ids[0]])
    lost = PersistedSlot(Height(2), (View(1), Digest(b"\x02" * 32)), None)
    store[slot_key(2)] = encode_slot(lost)  # its delete was lost in a crash
    assert load_state(store).slots[Height(2)].height == 2
    restarted = PbftReplica(c.config(c.ids[0]), store)
    effects = restarted.start(c.now)
    assert Persist(1, slot_key(2), None) in effects
    assert restarted.slot(2) is None


def test_observer_restart_keeps_its_delivered_height() -> None:
    members = node_ids(4)
    observer = NodeId("auditor")
    overrides = {"observers": (observer,), "max_batch_size": 1}
    c = Cluster(config_overrides=overrides)
    c.start()
    txs = [tx(i) for i in range(5)]
    for t in txs:
        c.submit(members[1], t)
    assert c.run(lambda: c.all_committed(txs))
    watcher = PbftReplica(make_config(observer, 4, **overrides), {})
    store: dict[str, bytes] = {}
    for e in watcher.handle(BlocksFetched(tuple(c.chains[members[0]])), c.now):
        if isinstance(e, Persist) and e.value is not None:
            store[e.key] = e.value
    again = PbftReplica(make_config(observer, 4, **overrides), store)
    assert (again.mode, again.committed_height) == (Mode.OBSERVER, 5)


def test_fetched_blocks_are_not_delivered_twice_when_a_checkpoint_completes_on_the_way() -> None:
    """r3 misses block 4 and r0's later votes. Delivering fetched block 4 completes
    checkpoint 4 with r3's own vote; R1 then lets r3 vote on 5 and 6, its votes complete
    their certificates from its log, and it delivers them at once; the rest of the
    fetched batch must not deliver them again (found by the simulator, seed 3090)."""
    c = started(max_batch_size=1, checkpoint_interval=4, window=4)
    c.transfer_ms = 30  # the peer serving the fetch is ahead by then
    r0, r3 = c.ids[0], c.ids[3]

    def starve_r3(src: NodeId, dst: NodeId, message: object) -> object | None:
        if dst != r3:
            return message
        if isinstance(message, PrePrepare) and message.block.height == 4:
            return None  # r3 never sees block 4 proposed
        later_vote = (
            isinstance(message, Prepare | Commit | Checkpoint) and message.statement.height >= 4
        )
        if src == r0 and later_vote:
            return None  # r3's own votes complete checkpoint 4 and blocks 5, 6
        return message

    c.filter = starve_r3
    txs = [tx(i) for i in range(6)]
    for t in txs:
        c.submit(c.ids[1], t)
    assert c.run(lambda: c.all_committed(txs))
    assert c.violations == []
    assert [b.height for b, _ in c.chains[r3]] == [1, 2, 3, 4, 5, 6]
