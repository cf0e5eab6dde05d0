"""The simulated network: latency bounds, partitions, loss, duplication, reordering."""

from __future__ import annotations

import random

import pytest

from belep.sim.model import LinkFault, NetworkParams, PartitionFault
from belep.sim.network import Network

KEYS = ["a", "b", "c", "d"]


def make(params: NetworkParams | None = None, seed: int = 1) -> Network:
    return Network(params or NetworkParams(), KEYS, random.Random(seed))


@pytest.mark.parametrize("distribution", ["uniform", "exponential", "lognormal"])
def test_latency_stays_within_bounds(distribution: str) -> None:
    params = NetworkParams(
        min_base_ms=3, max_base_ms=9, jitter_ms=20, distribution=distribution, max_latency_ms=50
    )
    net = make(params)
    draws = [net.latency(a, b) for _ in range(300) for a in KEYS for b in KEYS if a != b]
    assert min(draws) >= 3
    assert max(draws) <= 50
    assert len(set(draws)) > 10  # jitter really varies


def test_same_seed_same_draws_and_self_route_is_instant() -> None:
    one, two = make(seed=7), make(seed=7)
    assert [one.route("a", "b") for _ in range(50)] == [two.route("a", "b") for _ in range(50)]
    assert one.route("c", "c") == [0]


def test_partition_blocks_across_groups_and_isolates_unnamed() -> None:
    net = make()
    net.set_partition(PartitionFault((("a", "b"), ("c",)), 0, 10))
    assert net.route("a", "b")
    assert net.route("a", "c") == []
    assert net.route("c", "a") == []
    assert net.route("d", "a") == []  # d is in no group: isolated
    assert net.messages_dropped == 3
    net.set_partition(None)
    assert net.route("a", "c")


def test_loss_duplication_and_reordering() -> None:
    net = make(NetworkParams(jitter_ms=0, min_base_ms=5, max_base_ms=5))
    loss = LinkFault("loss", 1.0, 0, 10)
    net.add_link_fault(loss)
    assert net.route("a", "b") == []
    net.remove_link_fault(loss)
    net.add_link_fault(LinkFault("duplicate", 1.0, 0, 10, extra_ms=30))
    copies = net.route("a", "b")
    assert len(copies) == 2
    assert copies[0] == 5
    assert 5 <= copies[1] <= 35
    net = make(NetworkParams(jitter_ms=0, min_base_ms=5, max_base_ms=5))
    net.add_link_fault(LinkFault("reorder", 1.0, 0, 10, extra_ms=100))
    delays = [net.route("a", "b")[0] for _ in range(50)]
    assert all(6 <= d <= 105 for d in delays)
    assert len(set(delays)) > 5


def test_link_fault_only_on_named_links() -> None:
    net = make()
    net.add_link_fault(LinkFault("loss", 1.0, 0, 10, links=(("a", "b"),)))
    assert net.route("a", "b") == []
    assert net.route("b", "a")
    assert net.route("a", "c")
