"""The node's HTTP edge: submission, commit status, health, status, metrics, content, gateway.

Owns the Starlette application of a node and its uvicorn server
(``docs/spec/node.md`` §HTTP). Endpoints and who may call them:

============================================  ==================  ==========================
``GET  /health``                              anyone              ready? peers connected?
``POST /v1/domains/{d}/transactions``         signed transaction  submit one (CBOR envelope)
``POST /v1/domains/{d}/transactions/batch``   signed transactions submit a CBOR list of them
``GET  /v1/domains/{d}/transactions/{hash}``  anyone with a hash  commit status (``?wait=ms``)
``GET  /v1/status``                           operator token      heights, views, peers, lag
``GET  /metrics``                             operator token      Prometheus text format
``GET  /v1/domains/{d}/blocks/{height}``      operator token      a block's header and hashes
``POST /v1/content``                          operator token      import a file, pin it
``GET  /ipfs/{cid}``                          peer or operator    trustless gateway
============================================  ==================  ==========================

A submitted transaction is accepted (``202``) only if it is a well-formed
envelope whose signature verifies; the node verifies it once and remembers
the outcome for the replica (verify-once). ``?wait=ms`` (at most 30 s)
answers ``200`` with the block once committed, or ``202`` if still pending.
A node that is only an observer of the domain answers ``421`` with the
voters' URLs. A node whose backlog of the domain's uncommitted transactions
is over its admission limits (:mod:`belep.node.admission`) answers ``503``
with ``Retry-After`` (and ``retry_after_ms`` in the body) and accepts
nothing of that request; a resubmission of a committed transaction is
answered from the chain. Commit status by hash reveals only height and position.

Blocking work (file import) runs in worker threads; everything else is
quick and runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from belep.content.gateway import gateway_router
from belep.content.importer import import_file
from belep.encoding import decode, expect_bytes, expect_list
from belep.errors import BelepError, NetworkError, NotFound, ValidationError
from belep.ledger.block import MAX_TX_SIZE, Digest, DomainId, Transaction
from belep.node.admission import refusal
from belep.node.domain import now_ms

if TYPE_CHECKING:
    from belep.node.runtime import Node

__all__ = ["HttpServer", "build_app", "start_http"]

MAX_WAIT_MS = 30_000
MAX_BATCH = 10_000
MAX_BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Accepted:
    """One submitted transaction: its hash, the reason it was refused ("" if accepted),
    and its commit if it was already on the chain."""

    tx_hash: Digest
    error: str
    committed: dict[str, Any] | None = None


def _error(status: int, message: str, **more: Any) -> JSONResponse:
    return JSONResponse({"error": message, **more}, status_code=status)


def _wait_ms(request: Request) -> int:
    raw = request.query_params.get("wait", "0")
    if not raw.isdigit():
        return 0
    return min(int(raw), MAX_WAIT_MS)


def build_app(node: Node) -> Any:
    """The node's ASGI application."""

    def operator(request: Request) -> bool:
        return node.operator.allows(request.headers.get("authorization"))

    def unauthorized() -> JSONResponse:
        return JSONResponse(
            {"error": "operator token required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="belep-operator"'},
        )

    async def health(_request: Request) -> JSONResponse:
        expected = node.peers_expected()
        connected = node.peers_connected() & expected
        body = {
            "node": node.node_id,
            "ready": node.ready,
            "peers_connected": len(connected),
            "peers_expected": len(expected),
            "status": "ok"
            if node.ready and connected == expected
            else "starting"
            if not node.ready
            else "degraded",
        }
        return JSONResponse(body, status_code=200 if node.ready else 503)

    def _domain(request: Request) -> tuple[DomainId, JSONResponse | None]:
        domain = DomainId(request.path_params["domain"])
        host = node.hosts.get(domain)
        if host is None:
            return domain, _error(404, "this node does not hold the domain", domain=domain)
        return domain, None

    def _voter_check(domain: DomainId) -> JSONResponse | None:
        host = node.hosts[domain]
        if host.role == "voter":
            return None
        urls = [node.config.peers[m].http_url for m in host.config.members]
        return _error(421, "this node only observes the domain; submit to a voter", voters=urls)

    def _busy(domain: DomainId, incoming: int) -> JSONResponse | None:
        """``503`` with ``Retry-After`` if admission control refuses ``incoming`` more."""
        policy = node.admission[domain]
        if incoming > policy.max_outstanding:
            return _error(
                413, "more transactions than this node admits at once", limit=policy.max_outstanding
            )
        refused = refusal(policy, node.commits.backlog(domain), incoming)
        if refused is None:
            return None
        node.note_refusal(domain, refused.reason)
        return JSONResponse(
            {
                "error": refused.message,
                "reason": refused.reason,
                "retry_after_ms": refused.retry_after_ms,
            },
            status_code=503,
            headers={"Retry-After": str(max(1, -(-refused.retry_after_ms // 1000)))},
        )

    def _accept(domain: DomainId, tx: Transaction, *, checked: bool = False) -> _Accepted:
        """Validate and submit one transaction (or find it already committed; ``checked``:
        the caller has just found it not on the chain, with no await since)."""
        validator = node.validators[domain]
        try:
            validator.check(tx)
        except ValidationError as exc:
            validator.remember(tx.tx_hash, False)
            return _Accepted(tx.tx_hash, str(exc))
        validator.remember(tx.tx_hash, True)
        done = None if checked else _committed(domain, tx.tx_hash)
        if done is None:
            # Not yet committed: track it and hand it to the replica. (A resubmission of a
            # committed one is answered from the chain; tracking it would hold the backlog.)
            node.commits.submitted(domain, tx)
            node.hosts[domain].submit(tx)
        return _Accepted(tx.tx_hash, "", done)

    def _committed(domain: DomainId, tx_hash: bytes) -> dict[str, Any] | None:
        try:
            record = node.store_of(domain).get_transaction(tx_hash)
        except NotFound:
            return None
        return {
            "tx_hash": tx_hash.hex(),
            "status": "committed",
            "domain": domain,
            "height": record.height,
            "index": record.index,
            "block_hash": record.block_hash.hex(),
        }

    async def _await_commits(
        domain: DomainId, accepted: list[_Accepted], wait_ms: int
    ) -> list[dict[str, Any] | None]:
        """Each accepted transaction's commit, waiting up to ``wait_ms`` for all of them.

        Called without yielding to the event loop after :func:`_accept`, so a commit
        cannot slip between the check in ``_accept`` and the registration here."""
        results: list[dict[str, Any] | None] = [a.committed for a in accepted]
        if wait_ms <= 0:
            return results
        watched = [
            (i, a.tx_hash, node.commits.watch(a.tx_hash))
            for i, a in enumerate(accepted)
            if a.committed is None
        ]
        if not watched:
            return results
        infos = await node.commits.wait_all([(h, f) for _, h, f in watched], wait_ms / 1000)
        for (i, tx_hash, _), info in zip(watched, infos, strict=True):
            if info is None:
                results[i] = _committed(domain, tx_hash)  # committed just as the wait ended?
            else:
                results[i] = {
                    "tx_hash": tx_hash.hex(),
                    "status": "committed",
                    "domain": domain,
                    "height": info.height,
                    "index": info.index,
                    "block_hash": info.block_hash.hex(),
                }
        return results

    async def submit(request: Request) -> JSONResponse:
        domain, problem = _domain(request)
        if problem is not None:
            return problem
        refused = _voter_check(domain)
        if refused is not None:
            return refused
        payload = await request.body()
        if len(payload) > MAX_TX_SIZE:
            return _error(413, "transaction too large", limit=MAX_TX_SIZE)
        try:
            tx = Transaction(payload)
        except ValidationError as exc:
            return _error(400, str(exc), tx_hash=None)
        known = _committed(domain, tx.tx_hash)
        if known is not None:  # a resubmission of a committed one: answered even if busy
            return JSONResponse(known)
        busy = _busy(domain, 1)
        if busy is not None:
            return busy
        accepted = _accept(domain, tx, checked=True)
        if accepted.error:
            return _error(400, accepted.error, tx_hash=accepted.tx_hash.hex())
        (done,) = await _await_commits(domain, [accepted], _wait_ms(request))
        if done is not None:
            return JSONResponse(done)
        return JSONResponse(
            {"tx_hash": accepted.tx_hash.hex(), "status": "pending"}, status_code=202
        )

    async def submit_batch(request: Request) -> JSONResponse:
        domain, problem = _domain(request)
        if problem is not None:
            return problem
        refused = _voter_check(domain)
        if refused is not None:
            return refused
        body = await request.body()
        if len(body) > MAX_BATCH_BYTES:
            return _error(413, "batch too large", limit=MAX_BATCH_BYTES)
        # The delay test first: a busy node spends nothing on decoding a batch it refuses.
        busy = _busy(domain, 0)
        if busy is not None:
            return busy
        try:
            items = expect_list(decode(body, max_size=MAX_BATCH_BYTES), "batch")
            payloads = [expect_bytes(item, "transaction") for item in items]
        except ValidationError as exc:
            return _error(400, f"a batch is a CBOR array of transaction byte strings: {exc}")
        if len(payloads) > MAX_BATCH:
            return _error(413, "too many transactions in one batch", limit=MAX_BATCH)
        busy = _busy(domain, len(payloads))
        if busy is not None:
            return busy
        accepted: list[_Accepted] = []
        rejected = []
        for index, payload in enumerate(payloads):
            try:
                tx = Transaction(payload)
            except ValidationError as exc:
                rejected.append({"index": index, "error": str(exc)})
                continue
            outcome = _accept(domain, tx)
            if outcome.error:
                rejected.append({"index": index, "error": outcome.error})
            else:
                accepted.append(outcome)
        wait_ms = _wait_ms(request)
        results = await _await_commits(domain, accepted, wait_ms)
        committed = [
            None if info is None else {"height": info["height"], "index": info["index"]}
            for info in results
        ]
        return JSONResponse(
            {
                "accepted": [a.tx_hash.hex() for a in accepted],
                "rejected": rejected,
                "committed": committed if wait_ms else None,
            },
            status_code=200 if wait_ms and all(c is not None for c in committed) else 202,
        )

    async def tx_status(request: Request) -> JSONResponse:
        domain, problem = _domain(request)
        if problem is not None:
            return problem
        try:
            tx_hash = Digest(bytes.fromhex(request.path_params["tx_hash"]))
        except ValueError:
            return _error(400, "transaction hash must be hex")
        if len(tx_hash) != 32:
            return _error(400, "transaction hash must be 32 bytes")
        done = _committed(domain, tx_hash)
        if done is None:
            (done,) = await _await_commits(domain, [_Accepted(tx_hash, "")], _wait_ms(request))
        if done is None:
            return JSONResponse({"tx_hash": tx_hash.hex(), "status": "unknown"}, status_code=404)
        return JSONResponse(done)

    async def status(request: Request) -> JSONResponse:
        if not operator(request):
            return unauthorized()
        connected = node.peers_connected()
        return JSONResponse(
            {
                "node": node.node_id,
                "unit": node.config.unit,
                "ready": node.ready,
                "peers": {p: p in connected for p in sorted(node.peers_expected())},
                "domains": [
                    {
                        "domain": s.domain,
                        "role": s.role,
                        "protocol": s.protocol,
                        "height": s.height,
                        "tip_hash": s.tip_hash,
                        "view": s.view,
                        "leader": s.leader,
                        "lag": s.lag,
                        "queued_events": s.queued_events,
                        "peers": s.peers,
                        "peers_connected": s.peers_connected,
                        "replica_stats": s.replica_stats,
                    }
                    for s in (h.status() for h in node.hosts.values())
                ],
            }
        )

    async def metrics(request: Request) -> Response:
        if not operator(request):
            return unauthorized()
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4")

    async def block(request: Request) -> JSONResponse:
        if not operator(request):
            return unauthorized()
        domain, problem = _domain(request)
        if problem is not None:
            return problem
        raw = request.path_params["height"]
        if not raw.isdigit():
            return _error(400, "height must be a number")
        try:
            found, certificate = node.store_of(domain).get_committed(int(raw))
        except NotFound:
            return _error(404, "no block at this height")
        header = found.header
        return JSONResponse(
            {
                "domain": domain,
                "height": header.height,
                "block_hash": header.block_hash.hex(),
                "prev_hash": header.prev_hash.hex(),
                "tx_root": header.tx_root.hex(),
                "view": header.view,
                "epoch": header.epoch,
                "timestamp_ms": header.timestamp_ms,
                "proposer": header.proposer,
                "transactions": [tx.tx_hash.hex() for tx in found.transactions],
                "signers": list(certificate.signers),
            }
        )

    async def upload(request: Request) -> JSONResponse:
        if not operator(request):
            return unauthorized()
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)

        def feed() -> Iterator[bytes]:
            while True:
                item = chunks.get()
                if item is None:
                    return
                yield item

        def work() -> dict[str, Any]:
            with node.content.writer() as writer:
                result = import_file(feed(), writer, compute_sha256=True)
                writer.pin_on_commit(result.cid)
            return {
                "cid": str(result.cid),
                "size": result.size,
                "sha256": None if result.sha256 is None else result.sha256.hex(),
            }

        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, work)
        try:
            async for chunk in request.stream():
                if chunk:
                    await asyncio.to_thread(chunks.put, chunk)
        finally:
            await asyncio.to_thread(chunks.put, None)
        try:
            result = await future
        except BelepError as exc:
            return _error(500, f"import failed: {exc}")
        return JSONResponse(result, status_code=201)

    api = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/status", status, methods=["GET"]),
            Route("/v1/content", upload, methods=["POST"]),
            Route("/v1/domains/{domain}/transactions", submit, methods=["POST"]),
            Route("/v1/domains/{domain}/transactions/batch", submit_batch, methods=["POST"]),
            Route("/v1/domains/{domain}/transactions/{tx_hash}", tx_status, methods=["GET"]),
            Route("/v1/domains/{domain}/blocks/{height}", block, methods=["GET"]),
        ]
    )
    gateway = gateway_router(node.content)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/ipfs/"):
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode("latin-1") or None
            verifier = node.peer_tokens
            allowed = node.operator.allows(auth) or (
                verifier is not None and verifier.allows(auth, now_ms())
            )
            if not allowed:
                await JSONResponse(
                    {"error": "peer or operator token required"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="belep-gateway"'},
                )(scope, receive, send)
                return
            await gateway(scope, receive, send)
            return
        await api(scope, receive, send)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the node owns SIGTERM/SIGINT)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


@dataclass(slots=True)
class HttpServer:
    """A running uvicorn server and its task."""

    server: _Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)


async def start_http(node: Node) -> HttpServer:
    """Start serving on the node's HTTP port (returns once it is listening)."""
    config = uvicorn.Config(
        build_app(node),
        host=node.config.host,
        port=node.config.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(), name="node-http")
    while not server.started:
        if task.done():
            task.result()
            raise NetworkError(f"cannot serve HTTP on {node.config.host}:{node.config.http_port}")
        await asyncio.sleep(0.01)
    return HttpServer(server, task)
