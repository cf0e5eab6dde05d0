"""The BFT certificate size: any two quorums meet in a correct voter, and f faults cannot block it."""

from __future__ import annotations

import pytest

from belep.ledger.genesis import bft_quorum, quorum_size


@pytest.mark.parametrize("n", range(1, 40))
def test_two_quorums_share_a_correct_voter_and_faults_cannot_block(n: int) -> None:
    f = (n - 1) // 3
    q = bft_quorum(n)
    assert 2 * q - n >= f + 1, "two quorums could meet only in faulty voters"
    assert q <= n - f, "f silent voters could block every certificate"


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (3, 2), (4, 3), (5, 4), (7, 5), (10, 7)])
def test_known_sizes(n: int, expected: int) -> None:
    assert bft_quorum(n) == expected
    assert quorum_size("bft", n) == expected


def test_three_voters_need_two_signatures() -> None:
    """Plain 2f+1 would be 1 here: two partitioned voters could each certify a block."""
    assert bft_quorum(3) == 2
