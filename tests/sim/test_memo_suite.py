"""The simulator's memoising Ed25519 suite gives exactly Ed25519's answers."""

from __future__ import annotations

from belep.crypto import SUITES, PrivateKey
from belep.sim.engine import sim_key
from belep.sim.memo_suite import SIM_SUITE, MemoEd25519Suite
from belep.sim.model import member_ids


def test_signatures_are_plain_ed25519_and_verify_under_the_standard_suite() -> None:
    key = sim_key(member_ids(4)[1])
    assert key.suite == SIM_SUITE
    plain = PrivateKey.from_seed(key.secret)
    message = b"vote for block 7"
    signature = key.sign(message)
    assert signature == plain.sign(message)  # RFC 8032 is deterministic
    assert plain.public_key.is_valid_signature(message, signature)
    assert key.public_key.raw == plain.public_key.raw


def test_cached_answers_match_real_verification_including_forgeries() -> None:
    suite = SUITES[SIM_SUITE]
    assert isinstance(suite, MemoEd25519Suite)
    key = sim_key(member_ids(4)[2])
    other = sim_key(member_ids(4)[3])
    message = b"prepare h=3"
    good = key.sign(message)
    forged = other.sign(message)
    flipped = bytes([good[0] ^ 1]) + good[1:]
    for _ in range(3):  # first real, then from the cache: the same answers
        assert key.public_key.is_valid_signature(message, good)
        assert not key.public_key.is_valid_signature(message, forged)
        assert not key.public_key.is_valid_signature(message, flipped)
        assert not key.public_key.is_valid_signature(message + b"!", good)
    hits = suite.hits
    assert key.public_key.is_valid_signature(message, good)
    assert suite.hits == hits + 1
