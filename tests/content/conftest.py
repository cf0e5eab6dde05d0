"""Shared fixtures for the content store tests."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from belep.content.blockstore import Blockstore
from belep.content.cid import Cid, verify_block
from belep.content.importer import BlockPart, ImportResult, import_file
from belep.errors import NotFound


class MemoryBlocks:
    """An in-memory block sink and verifying block source (tests only)."""

    def __init__(self) -> None:
        self.blocks: dict[Cid, bytes] = {}
        self.order: list[Cid] = []

    def put_block(self, cid: Cid, parts: Sequence[BlockPart]) -> None:
        data = b"".join(bytes(part) for part in parts)
        verify_block(cid, data)
        self.order.append(cid)
        self.blocks.setdefault(cid, data)

    def get(self, cid: Cid) -> bytes:
        if cid not in self.blocks:
            raise NotFound(f"block {cid}")
        data = self.blocks[cid]
        verify_block(cid, data)
        return data


@pytest.fixture
def memory() -> MemoryBlocks:
    return MemoryBlocks()


@pytest.fixture
def store(tmp_path: Path) -> Blockstore:
    """A scratch store (fsync off; durability has its own test)."""
    return Blockstore(tmp_path / "store", sync=False)


def add_bytes(
    store: Blockstore, data: bytes, *, cid_version: int = 0, pin: bool = True
) -> ImportResult:
    """Import ``data`` into ``store`` as `belep add` does."""
    with store.writer() as writer:
        result = import_file(io.BytesIO(data), writer, cid_version=cid_version)
        if pin:
            writer.pin_on_commit(result.cid)
    return result
