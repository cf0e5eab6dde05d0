"""fetch_dag against in-process gateways: verification, failover, resume, bounds."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from belep.content.blockstore import Blockstore
from belep.content.cid import Cid
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_dag, iter_file
from belep.content.fetch import FetchReport, fetch_dag
from belep.content.gateway import create_gateway_app
from belep.content.importer import import_file
from belep.errors import ConfigError, PeerUnavailable

DATA = deterministic_bytes("replicate", 40 * 1024 + 123)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
App = Callable[[Scope, Receive, Send], Any]


def _source(tmp_path: Path, cid_version: int = 0) -> tuple[Blockstore, Cid, int]:
    store = Blockstore(tmp_path / "source", sync=False)
    with store.writer() as writer:
        root = import_file(
            io.BytesIO(DATA), writer, chunk_size=1024, max_links=4, cid_version=cid_version
        ).cid
        writer.pin_on_commit(root)
    return store, root, len(list(iter_dag(root, store)))


class Tampering:
    """A Byzantine peer: serves the real gateway but flips a byte of every body."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tampered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                body = bytearray(message["body"])
                body[0] ^= 0x01
                message = {**message, "body": bytes(body)}
            await send(message)

        await self.app(scope, receive, tampered)


class Counting:
    """Counts requests and the most seen in flight at once."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class Dying(httpx.AsyncBaseTransport):
    """A peer whose connection fails for good after ``survive`` requests."""

    def __init__(self, app: App, survive: int) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.left = survive

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.left -= 1
        if self.left < 0:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


def _fetch(
    root: Cid, peers: dict[str, App | httpx.AsyncBaseTransport], target: Blockstore, **kwargs: Any
) -> FetchReport:
    async def main() -> FetchReport:
        mounts = {
            url: app if isinstance(app, httpx.AsyncBaseTransport) else httpx.ASGITransport(app=app)
            for url, app in peers.items()
        }
        async with httpx.AsyncClient(mounts=mounts) as client:
            return await fetch_dag(root, list(peers), target, client=client, **kwargs)

    return asyncio.run(main())


def _content(root: Cid, store: Blockstore) -> bytes:
    return b"".join(bytes(piece) for piece in iter_file(root, store))


@pytest.mark.parametrize("cid_version", [0, 1])
def test_fetches_verifies_and_pins(tmp_path: Path, cid_version: int) -> None:
    source, root, blocks = _source(tmp_path, cid_version)
    peer = Counting(create_gateway_app(source))
    target = Blockstore(tmp_path / "target")
    report = _fetch(root, {"http://peer-a": peer}, target, concurrency=4)
    assert (report.blocks, report.fetched, report.present, report.rejected) == (
        blocks,
        blocks,
        0,
        (),
    )
    assert report.bytes_fetched == sum(len(block) for _, block in iter_dag(root, source))
    assert target.pins() == [root]
    assert _content(root, target) == DATA
    assert 2 <= peer.max_in_flight <= 4
    assert peer.requests == blocks
    again = _fetch(root, {"http://peer-a": peer}, target)
    assert (again.fetched, again.present) == (0, blocks)
    assert peer.requests == blocks  # nothing downloaded the second time


def test_a_corrupting_peer_is_rejected_and_another_used(tmp_path: Path) -> None:
    source, root, blocks = _source(tmp_path)
    app = create_gateway_app(source)
    target = Blockstore(tmp_path / "target")
    report = _fetch(root, {"http://evil": Tampering(app), "http://honest": app}, target)
    assert report.fetched == blocks
    assert report.rejected, "the tampering peer must have been asked for some block"
    assert all("http://evil" in line and "HashMismatch" in line for line in report.rejected)
    assert _content(root, target) == DATA
    assert target.pins() == [root]


def test_when_no_peer_serves_a_block_nothing_is_pinned(tmp_path: Path) -> None:
    source, root, _ = _source(tmp_path)
    target = Blockstore(tmp_path / "target")
    with pytest.raises(PeerUnavailable, match=str(root)) as caught:
        _fetch(root, {"http://evil": Tampering(create_gateway_app(source))}, target)
    assert "HashMismatch" in str(caught.value)
    assert target.pins() == []
    assert list(target.iter_keys()) == []


@pytest.mark.parametrize("cid_version", [0, 1])
def test_interrupted_fetch_resumes_without_refetching(tmp_path: Path, cid_version: int) -> None:
    source, root, blocks = _source(tmp_path, cid_version)
    app = create_gateway_app(source)
    target = Blockstore(tmp_path / "target")
    with pytest.raises(PeerUnavailable, match="ConnectError"):
        _fetch(root, {"http://flaky": Dying(app, survive=25)}, target, concurrency=3)
    kept = len(list(target.iter_keys()))
    assert 0 < kept < blocks
    assert target.pins() == []
    fresh = Counting(app)
    report = _fetch(root, {"http://flaky": fresh}, target, concurrency=3)
    assert report.present == kept
    assert report.fetched == blocks - kept
    # Internal nodes already present are read locally to find their links.
    assert fresh.requests == blocks - kept
    assert target.pins() == [root]
    assert _content(root, target) == DATA


@pytest.mark.parametrize("cid_version", [0, 1])
def test_a_corrupt_local_block_is_fetched_again(tmp_path: Path, cid_version: int) -> None:
    source, root, blocks = _source(tmp_path, cid_version)
    app = create_gateway_app(source)
    target = Blockstore(tmp_path / "target")
    _fetch(root, {"http://peer": app}, target)
    target.unpin(root)
    leaf = [cid for cid, _ in iter_dag(root, source)][-1]
    path = target.block_path(leaf)
    path.write_bytes(bytes(len(path.read_bytes())))
    report = _fetch(root, {"http://peer": app}, target)
    assert (report.fetched, report.present) == (1, blocks - 1)
    assert _content(root, target) == DATA


def test_argument_checks(tmp_path: Path) -> None:
    source, root, _ = _source(tmp_path)
    with pytest.raises(ConfigError):
        _fetch(root, {}, source)
    with pytest.raises(ConfigError):
        _fetch(root, {"http://p": create_gateway_app(source)}, source, concurrency=0)
