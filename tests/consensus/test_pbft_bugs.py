"""The planted-bug switches really break PBFT, and the same schedules are safe without them.

Each scenario is a fixed schedule (message drops and, for the Byzantine
replicas, rewritten or injected votes) that forks the chain when the switch is
on, and that the real protocol survives when it is off. The simulator
(``tests/sim``) shows it finds such schedules by itself; these tests pin down
that the switches do what their names say.
"""

from __future__ import annotations

from pbft_cluster import DOMAIN, Cluster, node_key, tx

from belep.consensus.pbft import Mode
from belep.consensus.pbft_messages import Commit, Prepare, PrePrepare
from belep.consensus.pbft_rules import BUG_FORGET_PREPARED, BUG_PREPARE_QUORUM_2F
from belep.ledger.block import (
    Block,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    VoteStatement,
    make_block,
)


def started(n: int, bugs: frozenset[str], **overrides: object) -> Cluster:
    c = Cluster(n=n, config_overrides={"planted_bugs": bugs, **overrides})
    c.start()
    assert c.run(lambda: all(r is not None and r.mode is Mode.NORMAL for r in c.replicas.values()))
    return c


def forgotten_commit_schedule(bugs: frozenset[str]) -> Cluster:
    """Only r0 sees the view-1 commit votes of block 1, delivers it, and crashes.

    The others hold block 1's prepared certificate but no commit certificate;
    they time out, change view, and the new view must re-propose block 1.
    """
    c = started(4, bugs)
    r0, r1 = c.ids[0], c.ids[1]

    def commits_of_view_1_only_to_r0(_src: NodeId, dst: NodeId, message: object) -> object | None:
        if isinstance(message, Commit) and message.statement.view == 1 and dst != r0:
            return None
        return message

    c.filter = commits_of_view_1_only_to_r0
    c.submit(r1, tx(1))
    assert c.run(lambda: c.replica(r0).committed_height == 1, max_time=100)
    c.crash(r0)
    others = c.ids[1:]
    c.run(lambda: bool(c.violations) or all(c.replica(n).committed_height for n in others))
    assert all(c.replica(n).view == 2 for n in others)
    return c


def test_view_change_that_forgets_prepared_certificates_forks() -> None:
    c = forgotten_commit_schedule(frozenset({BUG_FORGET_PREPARED}))
    assert any(v.startswith("fork at height 1") for v in c.violations), c.violations


def test_the_same_schedule_is_safe_without_the_bug() -> None:
    c = forgotten_commit_schedule(frozenset())
    assert c.violations == []
    assert c.all_committed([tx(1)])


def _alternative(block: Block) -> Block:
    h = block.header
    return make_block(
        domain=h.domain,
        height=h.height,
        epoch=h.epoch,
        view=h.view,
        prev_hash=h.prev_hash,
        transactions=(Transaction(b"equivocation"),),
        timestamp_ms=h.timestamp_ms,
        proposer=h.proposer,
        state_root=h.state_root,
    )


def equivocation_schedule(bugs: frozenset[str]) -> Cluster:
    """n = 7, f = 2: the primary r1 and r4 are Byzantine; r1 equivocates at height 1.

    The block with the larger hash ("high") goes to r0, r2, r4, the other
    ("low") to r3, r5, r6. Both Byzantine replicas vote for both. Only r3
    collects the commit votes for "low". Then r1 goes silent.
    """
    c = started(7, bugs)
    r0, r1, r2, r3, r4, r5, r6 = c.ids
    c.byzantine.update({r1, r4})
    high_side = {r0, r2, r4}
    chosen: dict[str, Block] = {}

    def vote(kind: str, voter: NodeId, block: Block) -> object:
        s = VoteStatement(kind, DOMAIN, Epoch(0), View(1), Height(1), block.block_hash)
        signature = node_key(voter).sign(s.signing_bytes())
        return (Prepare if kind == "prepare" else Commit)(s, signature)

    def schedule(src: NodeId, dst: NodeId, message: object) -> object | None:
        if src == r1 and isinstance(message, Prepare | Commit):
            return None  # the Byzantine primary's votes are injected below instead
        if src == r1 and isinstance(message, PrePrepare) and message.block.height == 1:
            if not chosen:
                a, b = message.block, _alternative(message.block)
                chosen["high"], chosen["low"] = (a, b) if a.block_hash > b.block_hash else (b, a)
                for peer in c.ids:
                    if peer == r1:
                        continue
                    side = "high" if peer in high_side else "low"
                    c.inject(r1, peer, vote("prepare", r1, chosen[side]))
                    if side == "low" and peer != r4:
                        c.inject(r4, peer, vote("prepare", r4, chosen["low"]))
                c.inject(r1, r3, vote("commit", r1, chosen["low"]))
                c.inject(r4, r3, vote("commit", r4, chosen["low"]))
            side = "high" if dst in high_side else "low"
            return PrePrepare(message.view, chosen[side])
        return message

    c.filter = schedule
    c.submit(r1, tx(1))
    assert c.run(lambda: c.replica(r3).committed_height == 1, max_time=100)
    assert c.chains[r3][0][0] == chosen["low"]
    c.isolated.add(r3)  # a partition: r3 is correct, just unreachable
    c.crash(r1)  # the Byzantine primary goes silent
    reachable = [r0, r2, r5, r6]
    c.run(lambda: bool(c.violations) or all(c.replica(n).committed_height >= 1 for n in reachable))
    return c


def test_prepare_quorum_of_2f_forks() -> None:
    c = equivocation_schedule(frozenset({BUG_PREPARE_QUORUM_2F}))
    assert any(v.startswith("fork at height 1") for v in c.violations), c.violations


def test_the_equivocation_schedule_is_safe_without_the_bug() -> None:
    c = equivocation_schedule(frozenset())
    assert c.violations == []
    correct = [c.ids[i] for i in (0, 2, 3, 5, 6)]
    assert {c.chains[n][0][0].block_hash for n in correct} == {c.chains[c.ids[3]][0][0].block_hash}
    assert c.replica(c.ids[0]).view == 2  # the low block was re-proposed in the new view
