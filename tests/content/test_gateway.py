"""The trustless-gateway routes, exercised in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable

import httpx
import pytest

from belep.content.blockstore import Blockstore
from belep.content.car import CarReader
from belep.content.cid import Cid
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_dag
from belep.content.gateway import create_gateway_app, parse_range, resolve_entity_bytes
from belep.content.importer import CHUNK_SIZE

from .conftest import add_bytes

DATA = deterministic_bytes("gateway", 3 * CHUNK_SIZE + 1000)


def _run(store: Blockstore, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=create_gateway_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            await scenario(client)

    asyncio.run(main())


@pytest.fixture
def root(store: Blockstore) -> Cid:
    return add_bytes(store, DATA).cid


def test_raw_block(store: Blockstore, root: Cid) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for kwargs in (
            {"headers": {"Accept": "application/vnd.ipld.raw"}},
            {"params": {"format": "raw"}},
            {"params": {"format": "raw"}, "headers": {"Accept": "application/vnd.ipld.car"}},
        ):
            response = await client.get(f"/ipfs/{root}", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/vnd.ipld.raw"
            assert hashlib.sha256(response.content).digest() == root.digest
            assert response.headers["etag"] == f'"{root}.raw"'
            assert response.headers["content-disposition"] == f'attachment; filename="{root}.bin"'
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "immutable" in response.headers["cache-control"]
        head = await client.head(f"/ipfs/{root}?format=raw")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(store.get(root)))

    _run(store, scenario)


def test_car_of_the_whole_dag(store: Blockstore, root: Cid) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.car; version=1; order=dfs"}
        )
        assert response.status_code == 200
        assert (
            response.headers["content-type"]
            == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
        )
        assert response.headers["content-location"] == f"/ipfs/{root}?format=car"
        reader = CarReader(io.BytesIO(response.content))
        assert reader.roots == (root,)
        assert [cid for cid, _ in reader] == [cid for cid, _ in iter_dag(root, store)]
        head = await client.head(f"/ipfs/{root}?format=car")
        assert head.status_code == 200
        assert head.content == b""
        assert "content-length" not in head.headers
        assert head.headers["etag"] == response.headers["etag"]
        block_only = await client.get(f"/ipfs/{root}?format=car&dag-scope=block")
        assert [cid for cid, _ in CarReader(io.BytesIO(block_only.content))] == [root]
        assert block_only.headers["etag"] != response.headers["etag"]

    _run(store, scenario)


def test_car_entity_bytes_returns_only_needed_blocks(store: Blockstore, root: Cid) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get(
            f"/ipfs/{root}?format=car&entity-bytes={CHUNK_SIZE}:{CHUNK_SIZE + 9}"
        )
        cids = [cid for cid, _ in CarReader(io.BytesIO(response.content))]
        every = [cid for cid, _ in iter_dag(root, store)]
        assert cids == [root, every[2]]  # the root and the second leaf
        tail = await client.get(f"/ipfs/{root}?format=car&entity-bytes=-10:*")
        assert [cid for cid, _ in CarReader(io.BytesIO(tail.content))] == [root, every[-1]]
        outside = await client.get(f"/ipfs/{root}?format=car&entity-bytes={len(DATA)}:*")
        assert outside.status_code == 400
        bad = await client.get(f"/ipfs/{root}?format=car&entity-bytes=abc")
        assert bad.status_code == 400

    _run(store, scenario)


def test_car_duplicates_on_request(store: Blockstore) -> None:
    zeros = add_bytes(store, bytes(3 * CHUNK_SIZE)).cid

    async def scenario(client: httpx.AsyncClient) -> None:
        once = await client.get(f"/ipfs/{zeros}", headers={"Accept": "application/vnd.ipld.car"})
        assert len(list(CarReader(io.BytesIO(once.content)))) == 2
        dups = await client.get(
            f"/ipfs/{zeros}", headers={"Accept": "application/vnd.ipld.car; dups=y"}
        )
        assert dups.headers["content-type"].endswith("dups=y")
        assert len(list(CarReader(io.BytesIO(dups.content)))) == 4
        refused = await client.get(
            f"/ipfs/{zeros}", headers={"Accept": "application/vnd.ipld.car; version=2"}
        )
        assert refused.status_code == 406

    _run(store, scenario)


def test_plain_download_with_ranges(store: Blockstore, root: Cid) -> None:
    size = len(DATA)

    async def scenario(client: httpx.AsyncClient) -> None:
        whole = await client.get(f"/ipfs/{root}")
        assert whole.status_code == 200
        assert whole.content == DATA
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-type"] == "application/octet-stream"
        for header, (start, end) in [
            ("bytes=0-0", (0, 1)),
            (f"bytes={CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}", (CHUNK_SIZE - 5, CHUNK_SIZE + 5)),
            ("bytes=-100", (size - 100, size)),
            (f"bytes={size - 3}-", (size - 3, size)),
            (f"bytes=10-{size * 2}", (10, size)),
        ]:
            part = await client.get(f"/ipfs/{root}", headers={"Range": header})
            assert part.status_code == 206, header
            assert part.content == DATA[start:end]
            assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
        unsatisfiable = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes={size}-"})
        assert unsatisfiable.status_code == 416
        assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
        multi = await client.get(f"/ipfs/{root}", headers={"Range": "bytes=0-1,5-6"})
        assert multi.status_code == 200
        assert multi.content == DATA
        head = await client.head(f"/ipfs/{root}", headers={"Range": "bytes=0-9"})
        assert head.status_code == 206
        assert head.headers["content-length"] == "10"
        named = await client.get(f"/ipfs/{root}?filename=video%22.mp4")
        assert named.headers["content-disposition"] == 'attachment; filename="video.mp4"'
        cached = await client.get(f"/ipfs/{root}", headers={"If-None-Match": f'"{root}"'})
        assert cached.status_code == 304

    _run(store, scenario)


def test_errors(store: Blockstore, root: Cid) -> None:
    absent = add_bytes(Blockstore(store.root.parent / "elsewhere"), b"not here").cid

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ipfs/not-a-cid")).status_code == 400
        assert (await client.get("/ipfs/..%2F..%2Fetc%2Fpasswd")).status_code in (400, 404)
        assert (await client.get(f"/ipfs/{absent}?format=raw")).status_code == 404
        only_cached = await client.get(
            f"/ipfs/{absent}?format=raw", headers={"Cache-Control": "only-if-cached"}
        )
        assert only_cached.status_code == 412
        assert (await client.get(f"/ipfs/{root}?format=tar")).status_code == 400
        assert (await client.get(f"/ipfs/{root}/sub/path")).status_code == 404
        assert (await client.get(f"/ipfs/{root}/x?format=raw")).status_code == 400
        assert (
            await client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.dag-json"})
        ).status_code == 406
        store.block_path(root).write_bytes(b"tampered")
        corrupt = await client.get(f"/ipfs/{root}?format=raw")
        assert corrupt.status_code == 500
        assert str(root) in corrupt.text

    _run(store, scenario)


def test_single_raw_block_file(store: Blockstore) -> None:
    raw = add_bytes(store, b"raw leaf file", cid_version=1).cid
    assert str(raw).startswith("bafkrei")

    async def scenario(client: httpx.AsyncClient) -> None:
        whole = await client.get(f"/ipfs/{raw}", headers={"Range": "bytes=4-"})
        assert whole.status_code == 206
        assert whole.content == b"leaf file"
        block = await client.get(f"/ipfs/{raw}?format=raw")
        assert block.content == b"raw leaf file"

    _run(store, scenario)


def test_probe_cid(store: Blockstore) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        raw = await client.get("/ipfs/bafkqaaa?format=raw")
        assert raw.status_code == 200
        assert raw.content == b""
        car = await client.get("/ipfs/bafkqaaa", headers={"Accept": "application/vnd.ipld.car"})
        assert car.status_code == 200
        assert car.content == bytes.fromhex("19a265726f6f747381d82a4500015500006776657273696f6e01")

    _run(store, scenario)


def test_range_helpers() -> None:
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=garbage", 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 5)
    assert resolve_entity_bytes((0, None), 10) == (0, 10)
    assert resolve_entity_bytes((2, -3), 10) == (2, 8)
    assert resolve_entity_bytes((-4, 100), 10) == (6, 10)
