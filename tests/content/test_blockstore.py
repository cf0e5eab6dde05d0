"""The on-disk blockstore: layout, verified reads, atomic writes, pins and gc."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from belep.content import blockstore as blockstore_module
from belep.content.blockstore import Blockstore, block_key
from belep.content.cid import DAG_PB, RAW, compute_cid, parse_cid
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_file
from belep.content.importer import import_file
from belep.content.ingest import add_file
from belep.errors import CidError, CorruptStore, HashMismatch, NotFound, StorageError

from .conftest import add_bytes


def test_layout_is_sharded_by_next_to_last_two_characters(store: Blockstore) -> None:
    cid = compute_cid(b"hello", version=1, codec=RAW)
    store.put(cid, b"hello")
    key = block_key(cid)
    assert key.startswith("ciq")  # base32 of the 0x12 0x20 multihash prefix
    assert store.block_path(cid) == store.root / "blocks" / key[-3:-1] / key
    assert store.block_path(cid).read_bytes() == b"hello"
    # The dag-pb CID of the same bytes shares the file (keyed by multihash).
    assert store.has(compute_cid(b"hello", version=0, codec=DAG_PB))
    assert list(store.iter_keys()) == [key]
    assert not any((store.root / "tmp").iterdir())


def test_get_verifies_every_read(store: Blockstore) -> None:
    cid = compute_cid(b"evidence", version=1, codec=RAW)
    store.put(cid, b"evidence")
    assert store.get(cid) == b"evidence"
    store.block_path(cid).write_bytes(b"evidencE")
    with pytest.raises(CorruptStore, match=str(cid)):
        store.get(cid)
    store.block_path(cid).unlink()
    with pytest.raises(NotFound, match=str(cid)):
        store.get(cid)


def test_put_refuses_bytes_that_do_not_match(store: Blockstore) -> None:
    cid = compute_cid(b"right", version=1, codec=RAW)
    with pytest.raises(HashMismatch, match=str(cid)):
        store.put(cid, b"wrong")
    assert not store.has(cid)
    assert not any((store.root / "tmp").iterdir())


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "Qm..", "blocks/x", ""])
def test_no_caller_text_reaches_the_filesystem(name: str, store: Blockstore) -> None:
    # Every path is derived from a parsed Cid; text that is not a CID never parses.
    with pytest.raises(CidError):
        parse_cid(name)


def test_corrupt_same_size_block_is_replaced_by_fetch_path(store: Blockstore) -> None:
    cid = compute_cid(b"abc", version=1, codec=RAW)
    store.put(cid, b"abc")
    store.block_path(cid).write_bytes(b"abd")
    assert store.delete(cid)
    store.put(cid, b"abc")
    assert store.get(cid) == b"abc"
    assert not store.delete(compute_cid(b"nothing", version=1, codec=RAW))


def test_writer_abort_leaves_no_temporary_files(store: Blockstore) -> None:
    data = deterministic_bytes("abort", 300_000)

    def interrupted_import() -> None:
        with store.writer() as writer:
            import_file(io.BytesIO(data), writer, chunk_size=1024)
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted_import()
    assert not any((store.root / "tmp").iterdir())
    assert store.pins() == []


def test_writer_groups_are_committed_as_they_fill(store: Blockstore) -> None:
    # 100 distinct small blocks: one full group of 64 is renamed into place
    # before the writer commits; the rest only at commit.
    with store.writer(group_blocks=64) as writer:
        cids = []
        for index in range(100):
            data = f"block {index}".encode()
            cid = compute_cid(data, version=1, codec=RAW)
            writer.put(cid, data)
            cids.append(cid)
        writer.drain()
        assert sum(store.has(cid) for cid in cids) == 64
    assert all(store.has(cid) for cid in cids)
    assert writer.written == 100


def test_repeated_blocks_are_written_once(store: Blockstore) -> None:
    data = bytes(10 * 1024)  # ten identical zero chunks
    with store.writer() as writer:
        result = import_file(io.BytesIO(data), writer, chunk_size=1024)
    assert result.block_count == 11  # 10 leaves + root
    assert writer.written == 2  # one distinct leaf + root
    again = add_bytes(store, data)
    assert again.cid != result.cid  # default chunking differs from 1 KiB chunking


def test_pins_and_garbage_collection(store: Blockstore) -> None:
    kept = add_bytes(store, deterministic_bytes("kept", 700_000))
    dropped = add_bytes(store, deterministic_bytes("dropped", 600_000))
    loose = compute_cid(b"loose", version=1, codec=RAW)
    store.put(loose, b"loose")
    assert store.pins() == sorted([kept.cid, dropped.cid], key=str)
    assert store.unpin(dropped.cid)
    assert not store.unpin(dropped.cid)
    report = store.gc()
    assert report.kept_blocks == 4  # 3 leaves + root of the kept file
    assert report.removed_blocks == 5  # 4 blocks of the dropped file + the loose block
    assert not store.has(loose)
    assert store.is_pinned(kept.cid)
    # The kept file still reads back in full.
    assert len(store.reachable_keys([kept.cid])) == 4


def test_gc_refuses_to_guess_when_a_pinned_dag_is_damaged(store: Blockstore) -> None:
    result = add_bytes(store, deterministic_bytes("damaged", 600_000))
    store.block_path(result.cid).write_bytes(b"garbage")
    with pytest.raises(CorruptStore, match=str(result.cid)):
        store.gc()
    assert len(list(store.iter_keys())) == 4  # nothing deleted


def test_foreign_file_in_pins_is_reported(store: Blockstore) -> None:
    (store.root / "pins" / "not-a-cid").write_bytes(b"")
    with pytest.raises(CorruptStore, match="not-a-cid"):
        store.pins()


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-per-file"])
def test_blocks_are_durable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if syncfs:
        assert blockstore_module._SYNCFS is not None, "Linux provides syncfs(2)"
    else:
        monkeypatch.setattr(blockstore_module, "_SYNCFS", None)
    synced = Blockstore(tmp_path / "s", sync=True)
    result = add_bytes(synced, deterministic_bytes("durable", 300_000))
    assert synced.is_pinned(result.cid)
    for key in synced.iter_keys():
        path = synced.root / "blocks" / key[-3:-1] / key
        assert os.stat(path).st_size > 0


def test_adding_again_heals_a_rotten_block(store: Blockstore) -> None:
    data = deterministic_bytes("heal", 600_000)
    root = add_bytes(store, data).cid
    victim = max(store.iter_keys())
    path = store.root / "blocks" / victim[-3:-1] / victim
    rotten = bytearray(path.read_bytes())
    rotten[7] ^= 0x10
    path.write_bytes(bytes(rotten))
    with store.writer() as writer:
        import_file(io.BytesIO(data), writer)
    assert writer.written == 1
    assert b"".join(bytes(p) for p in iter_file(root, store)) == data


def test_a_failure_on_the_writer_thread_reaches_the_caller_and_pins_nothing(
    tmp_path: Path,
) -> None:
    store = Blockstore(tmp_path / "s", sync=False)
    (store.root / "tmp").rmdir()
    (store.root / "tmp").write_bytes(b"")  # temporary files cannot be created
    with pytest.raises(StorageError, match="cannot write block"):
        add_file(io.BytesIO(deterministic_bytes("fail", 600_000)), store)
    assert store.pins() == []
    assert list(store.iter_keys()) == []


def test_a_failure_on_the_syncer_thread_pins_nothing_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    store = Blockstore(tmp_path / "s", sync=True)
    data = deterministic_bytes("fail-rename", 600_000)
    key = block_key(import_file(io.BytesIO(data)).cid)
    # A directory where the root block goes: writing its temporary file works,
    # renaming it into place (on the syncer thread) does not.
    (store.root / "blocks" / key[-3:-1] / key).mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot commit blocks"):
        add_file(io.BytesIO(data), store)
    assert store.pins() == []
    assert list((store.root / "tmp").iterdir()) == []
    assert (store.root / "blocks" / key[-3:-1] / key).is_dir()


def test_a_store_has_every_shard_directory_and_an_open_completes_a_missing_one(
    tmp_path: Path,
) -> None:
    store = Blockstore(tmp_path / "s", sync=False)
    shards = sorted(p.name for p in (tmp_path / "s" / "blocks").iterdir())
    assert len(shards) == 1024
    cid = compute_cid(b"x" * 100, version=1, codec=RAW)
    assert block_key(cid)[-3:-1] in shards  # every key falls in a created shard
    shard = tmp_path / "s" / "blocks" / block_key(cid)[-3:-1]
    shard.rmdir()  # as if the store's creation had been cut short
    Blockstore(tmp_path / "s", sync=False)  # the next open completes it
    assert shard.is_dir()
    assert len(list((tmp_path / "s" / "blocks").iterdir())) == 1024
    shard.rmdir()
    with store.writer() as writer:  # a block needing a missing shard creates it
        writer.put(cid, b"x" * 100)
    assert store.get(cid) == b"x" * 100
