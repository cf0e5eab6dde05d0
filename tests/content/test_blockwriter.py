"""The batch writer's grouping and early writeback (durability itself: test_blockstore)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from belep.content import blockstore as blockstore_module
from belep.content.blockstore import Blockstore
from belep.content.cid import RAW, Cid, compute_cid
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_file
from belep.content.ingest import add_file
from belep.errors import StorageError


def _blocks(count: int, size: int) -> list[tuple[Cid, bytes]]:
    return [
        (compute_cid(data, version=1, codec=RAW), data)
        for data in (deterministic_bytes(f"group-{index}", size) for index in range(count))
    ]


def test_group_bytes_is_honoured(store: Blockstore) -> None:
    blocks = _blocks(25, 1000)
    # 10 blocks of 1000 bytes reach 10000 bytes: two full groups are renamed
    # into place before the commit, the last 5 blocks only at the commit.
    with store.writer(group_bytes=10_000) as writer:
        for cid, data in blocks:
            writer.put(cid, data)
        writer.drain()
        assert sum(store.has(cid) for cid, _ in blocks) == 20
    assert all(store.has(cid) for cid, _ in blocks)
    assert writer.written == 25


@pytest.mark.parametrize("option", ["group_blocks", "group_bytes"])
def test_empty_groups_are_refused(store: Blockstore, option: str) -> None:
    with pytest.raises(StorageError, match="at least one"):
        store.writer(**{option: 0})  # type: ignore[arg-type]


def test_each_written_block_starts_its_writeback_when_the_store_syncs(tmp_path: Path) -> None:
    assert blockstore_module._SYNC_FILE_RANGE is not None, "Linux provides sync_file_range(2)"
    store = Blockstore(tmp_path / "s", sync=True)
    data = deterministic_bytes("early", 5 * 262_144 + 7)
    with store.writer() as writer:
        for cid, block in _blocks(3, 5000):
            writer.put(cid, block)
    assert writer.early_writebacks == writer.written == 3
    result = add_file(io.BytesIO(data), store)
    assert b"".join(bytes(piece) for piece in iter_file(result.cid, store)) == data


def test_no_early_writeback_without_sync_or_when_turned_off(tmp_path: Path) -> None:
    for store, early in (
        (Blockstore(tmp_path / "nosync", sync=False), True),
        (Blockstore(tmp_path / "off", sync=True), False),
    ):
        with store.writer(early_writeback=early) as writer:
            for cid, block in _blocks(3, 5000):
                writer.put(cid, block)
        assert writer.written == 3
        assert writer.early_writebacks == 0


@pytest.mark.parametrize("libc", ["missing", "refusing"])
def test_without_early_writeback_blocks_are_still_durable_and_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, libc: str
) -> None:
    calls: list[int] = []

    def refuse(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append(fd)
        return -1

    monkeypatch.setattr(
        blockstore_module, "_SYNC_FILE_RANGE", None if libc == "missing" else refuse
    )
    store = Blockstore(tmp_path / "s", sync=True)
    data = deterministic_bytes("fallback", 4 * 262_144)
    result = add_file(io.BytesIO(data), store)
    with store.writer() as writer:
        for cid, block in _blocks(3, 5000):
            writer.put(cid, block)
    assert writer.written == 3
    assert writer.early_writebacks == 0
    # A refusal turns the hint off for the rest of the writer: one call only.
    assert len(calls) == (0 if libc == "missing" else 2)  # one per writer
    assert store.pins() == [result.cid]
    assert b"".join(bytes(piece) for piece in iter_file(result.cid, store)) == data
