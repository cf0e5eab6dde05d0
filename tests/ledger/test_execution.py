"""Execution after ordering (ledger/execution.py): apply_block, results, writes, the state root.

The state root is an accumulator over every execution since the genesis; these tests pin
its definition (so a receipt verifier can recompute it), and the rules around it: a
transaction sees the writes of the ones before it in its block, a rejected one writes
nothing, the header of block h + 1 must carry root(h) (Raft's term-start block alone may
carry zeros), and a chain executor refuses a block that does not extend what it executed.
"""

from __future__ import annotations

import pytest

from belep.crypto import sha256
from belep.encoding import encode
from belep.errors import ChainError
from belep.ledger.block import (
    ZERO_HASH,
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    make_block,
)
from belep.ledger.execution import (
    ACCEPTED,
    BlockContext,
    ChainExecutor,
    ExecutionState,
    MemoryState,
    StateView,
    TxResult,
    Writes,
    apply_block,
    check_state_root,
    compute_results_root,
    compute_state_root,
    compute_writes_root,
    genesis_state_root,
    result_leaf,
)
from belep.ledger.merkle import compute_root

GENESIS = Digest(sha256(b"execution genesis"))


class Counter:
    """``inc:<key>`` adds one to a counter; ``get:<key>=<n>`` is accepted if it holds n."""

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        op, _, rest = tx.payload.partition(b":")
        if op == b"inc":
            value = int(state.get(rest) or b"0") + 1
            return ACCEPTED, {rest: str(value).encode()}
        if op == b"get":
            key, _, want = rest.partition(b"=")
            ok = (state.get(key) or b"0") == want
            return (ACCEPTED if ok else TxResult("mismatch")), {b"seen": b"1"}
        return TxResult("unknown-op"), {b"never": b"written"}


def block(height: int, prev: bytes, *payloads: bytes, root: bytes, view: int = 0) -> Block:
    return make_block(
        domain=DomainId("d"), height=Height(height), epoch=Epoch(0), view=View(view),
        prev_hash=Digest(prev), transactions=tuple(Transaction(p) for p in payloads),
        timestamp_ms=height, proposer=NodeId("p"), state_root=Digest(root),
    )  # fmt: skip


def genesis_state() -> ExecutionState:
    return ExecutionState(Height(0), GENESIS, genesis_state_root(GENESIS), MemoryState())


def test_transactions_see_earlier_writes_and_a_rejected_one_writes_nothing() -> None:
    b1 = block(
        1, GENESIS, b"inc:a", b"get:a=1", b"get:a=2", b"bogus", root=genesis_state_root(GENESIS)
    )
    state, execution = apply_block(Counter(), genesis_state(), b1)
    assert [r.code for r in execution.results] == ["ok", "ok", "mismatch", "unknown-op"]
    assert execution.writes == ((b"a", b"1"), (b"seen", b"1"))  # sorted; nothing of the rejected
    assert state.view.get(b"a") == b"1"
    assert (state.height, state.block_hash, state.root) == (1, b1.block_hash, execution.state_root)


def test_the_state_root_is_the_documented_accumulator() -> None:
    b1 = block(1, GENESIS, b"inc:a", b"bogus", root=genesis_state_root(GENESIS))
    _, execution = apply_block(Counter(), genesis_state(), b1)
    assert genesis_state_root(GENESIS) == sha256(encode(["belep-state-v1", GENESIS]))
    leaves = [
        encode([tx.tx_hash, code])
        for tx, code in zip(b1.transactions, ("ok", "unknown-op"), strict=True)
    ]
    assert [
        result_leaf(tx.tx_hash, r) for tx, r in zip(b1.transactions, execution.results, strict=True)
    ] == leaves
    assert execution.results_root == compute_root(leaves)
    assert execution.results_root == compute_results_root(
        list(execution.tx_hashes), list(execution.results)
    )
    assert execution.writes_root == sha256(encode([[b"a", b"1"]]))
    assert execution.writes_root == compute_writes_root(execution.writes)
    expected = sha256(
        encode(
            [
                "belep-state-v1",
                genesis_state_root(GENESIS),
                1,
                b1.block_hash,
                execution.results_root,
                execution.writes_root,
            ]
        )
    )
    assert execution.state_root == expected
    assert expected == compute_state_root(
        genesis_state_root(GENESIS), 1, b1.block_hash, execution.results_root, execution.writes_root
    )


def test_a_different_result_or_write_gives_a_different_root() -> None:
    b1 = block(1, GENESIS, b"inc:a", root=genesis_state_root(GENESIS))
    _, honest = apply_block(Counter(), genesis_state(), b1)
    odd = genesis_state()
    odd.view.apply(apply_block(Counter(), odd, b1)[1])  # "a" is already 1: inc gives 2
    _, diverged = apply_block(Counter(), ExecutionState(Height(0), GENESIS, odd.root, odd.view), b1)
    assert diverged.writes != honest.writes
    assert diverged.state_root != honest.state_root


def test_the_header_must_carry_the_root_after_its_parent() -> None:
    executor = ChainExecutor.from_genesis(Counter(), MemoryState(), GENESIS)
    b1 = block(1, GENESIS, b"inc:a", root=executor.root)
    executor.execute(b1)
    wrong = block(2, b1.block_hash, b"inc:a", root=b"\x07" * 32)
    with pytest.raises(ChainError, match="state root"):
        executor.execute(wrong)
    with pytest.raises(ChainError, match="no state root"):
        executor.execute(block(2, b1.block_hash, b"inc:a", root=ZERO_HASH))
    with pytest.raises(ChainError, match="does not extend"):
        executor.execute(block(3, b1.block_hash, b"inc:a", root=executor.root))
    good = block(2, b1.block_hash, b"inc:a", root=executor.root)
    assert executor.execute(good).height == 2
    assert executor.height == 2


def test_only_a_raft_term_start_may_carry_an_unknown_root() -> None:
    parent = block(1, GENESIS, b"x", root=genesis_state_root(GENESIS), view=3)
    term_start = block(2, parent.block_hash, b"y", root=ZERO_HASH, view=4)
    same_term = block(2, parent.block_hash, b"y", root=ZERO_HASH, view=3)
    expected = b"\x05" * 32
    check_state_root(term_start.header, expected, parent_view=3, term_start_root_unknown=True)
    with pytest.raises(ChainError):
        check_state_root(same_term.header, expected, parent_view=3, term_start_root_unknown=True)
    with pytest.raises(ChainError):
        check_state_root(term_start.header, expected, parent_view=3, term_start_root_unknown=False)
    with pytest.raises(ChainError):  # the first block: its parent is the genesis, with no view
        check_state_root(
            term_start.header, expected, parent_view=None, term_start_root_unknown=True
        )


def test_result_codes_are_checked() -> None:
    with pytest.raises(ChainError):
        TxResult("Not A Code")
    assert TxResult("anchor-not-newer").code == "anchor-not-newer"
    assert ACCEPTED.accepted
    assert not TxResult("x").accepted
