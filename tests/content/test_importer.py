"""The importer against Kubo's published CIDs, and its streaming invariants."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from belep.content.cid import DAG_PB, RAW
from belep.content.dagpb import DataType, decode_pbnode, decode_unixfs
from belep.content.deterministic import DeterministicStream, deterministic_bytes
from belep.content.importer import CHUNK_SIZE, FileImporter, import_file
from belep.errors import ConfigError

from .conftest import MemoryBlocks

# (name, data source, cid_version, expected CID) — published Kubo vectors (issue 3).
KUBO_VECTORS = [
    ("empty", lambda: b"", 0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    ("hello-world", lambda: b"hello world\n", 0, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
    (
        "hello-worlds",
        lambda: b"Hello Worlds!\n",
        0,
        "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH",
    ),
    (
        "chunk-v0-seed/262144",
        lambda: DeterministicStream("chunk-v0-seed", 262144),
        0,
        "QmWmRj3dFDZdb6ABvbmKhEL6TmPbAfBZ1t5BxsEyJrcZhE",
    ),
    (
        "chunk-v0-seed/262145",
        lambda: DeterministicStream("chunk-v0-seed", 262145),
        0,
        "QmYyLxtzZyW22zpoVAtKANLRHpDjZtNeDjQdJrcQNWoRkJ",
    ),
    (
        "v0-seed/174-chunks",
        lambda: DeterministicStream("v0-seed", 45613056),
        0,
        "QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2",
    ),
    (
        "v0-seed/174-chunks+1",
        lambda: DeterministicStream("v0-seed", 45613057),
        0,
        "QmV81WL765sC8DXsRhE5fJv2rwhS4icHRaf3J9Zk5FdRnW",
    ),
    ("empty-v1", lambda: b"", 1, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
]


@pytest.mark.parametrize(
    ("source", "version", "expected"),
    [pytest.param(source, version, cid, id=name) for name, source, version, cid in KUBO_VECTORS],
)
def test_kubo_vectors(source: object, version: int, expected: str) -> None:
    data = source()  # type: ignore[operator]
    readable = io.BytesIO(data) if isinstance(data, bytes) else data
    assert str(import_file(readable, cid_version=version).cid) == expected


def test_deterministic_stream_prefix_does_not_depend_on_size() -> None:
    assert deterministic_bytes("v0-seed", 1000) == deterministic_bytes("v0-seed", 5000)[:1000]
    assert len(DeterministicStream("s", 3).read()) == 3


def test_blocks_reach_the_sink_children_first(memory: MemoryBlocks) -> None:
    data = deterministic_bytes("order", 10 * 1024 + 7)
    result = import_file(io.BytesIO(data), memory, chunk_size=1024, max_links=3)
    assert memory.order[-1] == result.cid
    position = {cid: index for index, cid in enumerate(memory.order)}
    for cid in memory.order:
        if cid.codec == DAG_PB:
            for link in decode_pbnode(memory.blocks[cid]).links:
                assert position[link.cid] < position[cid]
    assert result.block_count == len(memory.order)


def test_tree_shape_is_balanced_and_filled_left_to_right(memory: MemoryBlocks) -> None:
    # 10 leaves, 3 links per node: depth 3 (3^2 < 10 <= 3^3); the last subtree
    # of each level holds the remainder, at full depth (a node with one link).
    data = bytes(range(256)) * 40  # 10240 bytes = 10 chunks of 1024
    data = data[: 10 * 1024 - 5]
    result = import_file(io.BytesIO(data), memory, chunk_size=1024, max_links=3)

    def shape(cid: object) -> object:
        node = decode_pbnode(memory.blocks[cid])  # type: ignore[index]
        unixfs = decode_unixfs(node.data or b"")
        if not node.links:
            return len(unixfs.data or b"")
        assert unixfs.filesize == sum(unixfs.blocksizes)
        assert all(link.name == "" for link in node.links)
        return [shape(link.cid) for link in node.links]

    full = [1024, 1024, 1024]
    assert shape(result.cid) == [[full, full, full], [[1019]]]


def test_internal_nodes_record_tsize_and_blocksizes(memory: MemoryBlocks) -> None:
    data = deterministic_bytes("t", 3 * CHUNK_SIZE + 100)
    result = import_file(io.BytesIO(data), memory)
    root = decode_pbnode(memory.blocks[result.cid])
    unixfs = decode_unixfs(root.data or b"")
    assert unixfs.type == DataType.FILE
    assert unixfs.filesize == len(data)
    assert unixfs.blocksizes == (CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 100)
    for link in root.links:
        assert link.tsize == len(memory.blocks[link.cid])


def test_cid_v1_uses_raw_leaves(memory: MemoryBlocks) -> None:
    data = deterministic_bytes("v1", CHUNK_SIZE + 1)
    result = import_file(io.BytesIO(data), memory, cid_version=1)
    assert (result.cid.version, result.cid.codec) == (1, DAG_PB)
    assert str(result.cid).startswith("bafybei")
    root = decode_pbnode(memory.blocks[result.cid])
    assert [link.cid.codec for link in root.links] == [RAW, RAW]
    assert [link.tsize for link in root.links] == [CHUNK_SIZE, 1]
    single = import_file(io.BytesIO(b"abc"), cid_version=1)
    assert str(single.cid).startswith("bafkrei")


def test_sha256_and_size_are_reported() -> None:
    data = deterministic_bytes("digest", 600_000)
    result = import_file(io.BytesIO(data), compute_sha256=True)
    import hashlib

    assert result.sha256 == hashlib.sha256(data).digest()
    assert result.size == len(data)
    assert import_file(io.BytesIO(data)).sha256 is None


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=9000),
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=12),
    version=st.sampled_from([0, 1]),
)
def test_any_split_of_the_input_gives_the_same_blocks(
    size: int, cuts: list[int], version: int
) -> None:
    data = deterministic_bytes("split", size)
    whole = MemoryBlocks()
    expected = import_file(
        io.BytesIO(data), whole, cid_version=version, chunk_size=512, max_links=4
    )
    points = sorted({0, size, *(cut for cut in cuts if cut <= size)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    split = MemoryBlocks()
    got = import_file(pieces, split, cid_version=version, chunk_size=512, max_links=4)
    assert got == expected
    assert split.order == whole.order


def test_short_reads_do_not_change_chunk_boundaries() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(memoryview(buffer)[:777])

    data = deterministic_bytes("trickle", 3 * CHUNK_SIZE + 5)
    assert import_file(Trickle(data)).cid == import_file(io.BytesIO(data)).cid


def test_importer_misuse_is_reported() -> None:
    with pytest.raises(ConfigError):
        FileImporter(cid_version=2)
    with pytest.raises(ConfigError):
        FileImporter(chunk_size=0)
    with pytest.raises(ConfigError):
        FileImporter(max_links=1)
    importer = FileImporter()
    importer.write(b"abc")
    first = importer.finish()
    assert importer.finish() == first
    with pytest.raises(ValueError, match="finished"):
        importer.write(b"more")


PURE_MODULES = [
    "belep.content.importer",
    "belep.content.dagpb",
    "belep.content.cid",
    "belep.content.multiformats",
    "belep.content.exporter",
]
FORBIDDEN = ["asyncio", "socket", "sqlite3", "time", "random", "threading", "httpx", "starlette"]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_importer_core_is_pure(module: str) -> None:
    # A fresh interpreter: which of the forbidden modules does importing pull in?
    probe = (
        "import sys\n"
        f"before = set(sys.modules)\nimport {module}\n"
        f"print(sorted(set(sys.modules) - before & set({FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
