"""The application's rules (app/machine.py) and its domain policy (app/policy.py).

The rules run after ordering, on every node: an anchor must be newer than the last
accepted one of its child, a malformed one is rejected, never a halt — even one built to
break the state store's limits. The policy runs before ordering: proposer-only
configuration kinds are never a client's, voter-only kinds only a voter's.
"""

from __future__ import annotations

import pytest

from belep.app.anchors import ANCHOR_KIND
from belep.app.machine import BelepApplication, anchor_key
from belep.app.policy import transaction_policy
from belep.crypto import PrivateKey, sha256
from belep.encoding import encode
from belep.ledger.block import (
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    make_block,
)
from belep.ledger.config_tx import ReviveChild, SubstituteSeat, config_transaction
from belep.ledger.envelope import EnvelopeValidator, sign_envelope
from belep.ledger.execution import ChainExecutor, MemoryState

VOTER = PrivateKey.from_seed(sha256(b"voter"))
STRANGER = PrivateKey.from_seed(sha256(b"stranger"))
GENESIS = Digest(sha256(b"rules genesis"))


def anchor(
    child: str, height: int, block_hash: bytes = b"\x01" * 32, nonce: int = 0
) -> Transaction:
    body = {"domain": child, "height": height, "block_hash": block_hash}
    return sign_envelope(VOTER, ANCHOR_KIND, body, timestamp_ms=1, nonce=nonce).to_transaction()


def run(*blocks: tuple[Transaction, ...]) -> tuple[list[list[str]], MemoryState]:
    state = MemoryState()
    executor = ChainExecutor.from_genesis(BelepApplication(), state, GENESIS)
    codes = []
    prev = GENESIS
    for height, txs in enumerate(blocks, start=1):
        block = make_block(
            domain=DomainId("county-1"), height=Height(height), epoch=Epoch(0), view=View(0),
            prev_hash=prev, transactions=txs, timestamp_ms=height, proposer=NodeId("v"),
            state_root=executor.root,
        )  # fmt: skip
        codes.append([r.code for r in executor.execute(block).results])
        prev = block.block_hash
    return codes, state


def test_an_anchor_must_be_newer_than_the_last_accepted_one_of_its_child() -> None:
    codes, state = run(
        (anchor("station-1", 5), anchor("station-1", 5), anchor("station-2", 3)),
        (anchor("station-1", 4), anchor("station-1", 5, b"\x02" * 32), anchor("station-1", 9)),
    )
    assert codes == [
        ["ok", "anchor-not-newer", "ok"],
        ["anchor-not-newer", "anchor-conflicts", "ok"],
    ]
    assert state.get(anchor_key("station-1")) == encode([9, b"\x01" * 32])


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(anchor("x" * 2000, 1), id="a-2000-character-child-id"),
        pytest.param(anchor("../../etc", 1), id="not-a-domain-id"),
        pytest.param(anchor("station-1", 0), id="height-zero"),
        pytest.param(Transaction(b"\xa1\x61x\x01"), id="not-an-envelope"),
    ],
)
def test_a_malformed_transaction_is_rejected_and_the_chain_goes_on(odd: Transaction) -> None:
    codes, _ = run((odd, anchor("station-1", 1)), (anchor("station-1", 2),))
    assert codes == [["malformed", "ok"], ["ok"]]


class _Breaking(BelepApplication):
    """Rules with a bug (an index error) and rules that write an oversized key."""

    def apply_transaction(self, state, tx, context):  # type: ignore[no-untyped-def]
        if tx.payload == b"bug":
            return [][1]
        if tx.payload == b"huge":
            from belep.ledger.execution import ACCEPTED

            return ACCEPTED, {b"k" * 5000: b"v"}
        return super().apply_transaction(state, tx, context)


def test_a_rule_that_breaks_is_the_rejection_invalid_not_a_halt() -> None:
    state = MemoryState()
    executor = ChainExecutor.from_genesis(_Breaking(), state, GENESIS)
    block = make_block(
        domain=DomainId("d"), height=Height(1), epoch=Epoch(0), view=View(0), prev_hash=GENESIS,
        transactions=(Transaction(b"bug"), Transaction(b"huge"), anchor("station-1", 1)),
        timestamp_ms=1, proposer=NodeId("v"), state_root=executor.root,
    )  # fmt: skip
    execution = executor.execute(block)
    assert [r.code for r in execution.results] == ["invalid", "invalid", "ok"]
    assert [key for key, _ in execution.writes] == [anchor_key("station-1")]


def test_the_policy_refuses_proposer_only_kinds_and_voter_only_kinds_from_others() -> None:
    voters = {NodeId("v1"): VOTER.public_key}
    validator = EnvelopeValidator(policy=transaction_policy(voters))
    seat = SubstituteSeat(DomainId("d"), Epoch(0), NodeId("v1"), NodeId("s1"))
    decision = ReviveChild(DomainId("child"), Epoch(0), (NodeId("c1"),), ())
    cases = {
        "substitute-seat by a voter": (config_transaction(seat, VOTER, timestamp_ms=1), False),
        "revive-child by a voter": (config_transaction(decision, VOTER, timestamp_ms=1), True),
        "revive-child by a stranger": (
            config_transaction(decision, STRANGER, timestamp_ms=1),
            False,
        ),
        "anchor by a voter": (anchor("station-1", 1), True),
        "anything else by anyone": (
            sign_envelope(STRANGER, "register-dispatch", {}, timestamp_ms=1).to_transaction(),
            True,
        ),
    }
    assert {name: validator(tx) for name, (tx, _) in cases.items()} == {
        name: expected for name, (_, expected) in cases.items()
    }
