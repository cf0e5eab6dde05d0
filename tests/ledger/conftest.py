"""Fixtures for ledger tests: a 4-voter committee, its genesis, and chains built from them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey, sha256
from belep.ledger.block import NodeId
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.genesis import Genesis
from belep.ledger.store import BlockStore

ChainFactory = Callable[..., tuple[BlockStore, ChainBuilder]]


def sample_payloads(height: int, count: int, size: int = 120) -> list[bytes]:
    """Deterministic, distinct payloads for the block at ``height``."""
    out = []
    for i in range(count):
        seed = sha256(f"tx-{height}-{i}".encode())
        out.append((seed * (size // 32 + 1))[:size])
    return out


@pytest.fixture
def keys() -> dict[NodeId, PrivateKey]:
    return committee_keys("v", 4)


@pytest.fixture
def genesis(keys: dict[NodeId, PrivateKey]) -> Genesis:
    return make_genesis("station-1", keys, created_ms=1_615_334_400_000)


@pytest.fixture
def build_chain(
    tmp_path: Path, genesis: Genesis, keys: dict[NodeId, PrivateKey]
) -> Iterator[ChainFactory]:
    """Factory: a writable store at a fresh path holding ``blocks`` blocks of ``txs`` transactions."""
    opened: list[BlockStore] = []

    def factory(blocks: int = 10, txs: int = 5, name: str = "chain.sqlite3") -> tuple[BlockStore, ChainBuilder]:  # fmt: skip
        store = BlockStore.open(tmp_path / name, genesis)
        opened.append(store)
        builder = ChainBuilder(genesis, keys, application=BelepApplication())
        for h in range(1, blocks + 1):
            block, qc = builder.next_block(sample_payloads(h, txs), timestamp_ms=1_000 * h)
            store.append(block, qc, committee=genesis.committee())
        return store, builder

    yield factory
    for store in opened:
        store.close()
