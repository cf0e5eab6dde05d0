"""The envelopes a node parsed when validating, reused by execution (node/envelopes.py)."""

from __future__ import annotations

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey, sha256
from belep.ledger.block import Digest, DomainId, Epoch, Height, NodeId, View, make_block
from belep.ledger.envelope import EnvelopeValidator, sign_envelope
from belep.ledger.execution import ChainExecutor, MemoryState
from belep.node.envelopes import ParsedEnvelopes

KEY = PrivateKey.from_seed(sha256(b"client"))
GENESIS = Digest(sha256(b"envelopes genesis"))


def txs(n: int):  # type: ignore[no-untyped-def]
    return [
        sign_envelope(KEY, "register-dispatch", {"i": i}, timestamp_ms=1, nonce=i).to_transaction()
        for i in range(n)
    ]


def test_validation_keeps_the_envelope_and_execution_takes_it_once() -> None:
    kept = ParsedEnvelopes()
    validator = EnvelopeValidator(on_parsed=kept.put)
    (tx,) = txs(1)
    assert validator(tx)
    assert len(kept) == 1
    envelope = kept.parse(tx)
    assert envelope.body == {"i": 0}
    assert (kept.hits, kept.misses, len(kept)) == (1, 0, 0)
    assert kept.parse(tx) == envelope  # parsed again when not kept: the same envelope
    assert kept.misses == 1


def test_the_memory_is_bounded() -> None:
    kept = ParsedEnvelopes(capacity=3)
    validator = EnvelopeValidator(on_parsed=kept.put)
    for tx in txs(5):
        validator(tx)
    assert len(kept) == 3


def test_execution_with_kept_envelopes_gives_the_same_roots() -> None:
    batch = tuple(txs(20))
    kept = ParsedEnvelopes()
    validator = EnvelopeValidator(on_parsed=kept.put)
    for tx in batch[::2]:
        validator(tx)  # half of them were validated here, half arrive in a block only
    roots = []
    for application in (BelepApplication(), BelepApplication(parse=kept.parse)):
        executor = ChainExecutor.from_genesis(application, MemoryState(), GENESIS)
        block = make_block(
            domain=DomainId("d"), height=Height(1), epoch=Epoch(0), view=View(0),
            prev_hash=GENESIS, transactions=batch, timestamp_ms=1, proposer=NodeId("p"),
            state_root=executor.root,
        )  # fmt: skip
        roots.append(executor.execute(block).state_root)
    assert roots[0] == roots[1]
    assert kept.hits == 10
