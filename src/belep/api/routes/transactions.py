"""Submitting transactions and asking for their commits (anyone: a transaction is
authenticated by its own signature).

* ``POST /v1/domains/{d}/transactions``: one CBOR envelope as the raw body.
  ``202`` accepted (``pending``), ``200`` with where it is once committed
  (``?wait=ms``, at most 30 s; a resubmission of a committed one at once),
  ``400`` malformed or refused (``tx_hash`` when it parsed), ``413`` too large.
* ``POST /v1/domains/{d}/transactions/batch``: a CBOR array of envelopes.
  ``202`` (or ``200`` if ``?wait`` saw every accepted one commit) with the
  accepted hashes, the rejected positions and, when waiting, each accepted
  one's height and index.
* ``GET /v1/domains/{d}/transactions/{hash}``: where a transaction is
  (``?wait=ms`` to wait for it), ``404`` ``unknown`` if not committed. It
  reveals only the height and position.

``404`` if the node does not hold the domain, ``421`` with the voters' URLs
if it only observes it, ``503`` with ``Retry-After`` when admission control
refuses a submission (nothing of it is accepted), ``413`` for a batch larger
than the node ever admits. Bodies stay raw bytes; the service validates them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from belep.api.deps import service_of, wait_ms
from belep.api.errors import problem
from belep.api.routing import Route
from belep.encoding import decode, expect_bytes, expect_list
from belep.errors import ValidationError
from belep.ledger.block import MAX_TX_SIZE, Digest, DomainId, Transaction
from belep.node.service import TxCommit

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "router"]

MAX_BATCH = 10_000
MAX_BATCH_BYTES = 64 * 1024 * 1024

router = APIRouter(route_class=Route)


def _committed(commit: TxCommit) -> dict[str, Any]:
    return {
        "tx_hash": commit.tx_hash.hex(),
        "status": "committed",
        "domain": commit.domain,
        "height": commit.height,
        "index": commit.index,
        "block_hash": commit.block_hash.hex(),
    }


@router.post("/v1/domains/{domain}/transactions")
async def submit(request: Request, domain: str, wait: str = "0") -> JSONResponse:
    service = service_of(request)
    held = service.require_voter(DomainId(domain))
    payload = await request.body()
    if len(payload) > MAX_TX_SIZE:
        return problem(413, "transaction too large", limit=MAX_TX_SIZE)
    try:
        tx = Transaction(payload)
    except ValidationError as exc:
        return problem(400, str(exc), tx_hash=None)
    outcome = await service.submit(held, tx, wait_ms(wait) / 1000)
    if outcome.error:
        return problem(400, outcome.error, tx_hash=outcome.tx_hash.hex())
    if outcome.commit is not None:
        return JSONResponse(_committed(outcome.commit))
    return JSONResponse({"tx_hash": outcome.tx_hash.hex(), "status": "pending"}, status_code=202)


@router.post("/v1/domains/{domain}/transactions/batch")
async def submit_batch(request: Request, domain: str, wait: str = "0") -> JSONResponse:
    service = service_of(request)
    held = service.require_voter(DomainId(domain))
    waiting = wait_ms(wait)
    body = await request.body()
    if len(body) > MAX_BATCH_BYTES:
        return problem(413, "batch too large", limit=MAX_BATCH_BYTES)
    # The delay test first: a busy node spends nothing on decoding a batch it refuses.
    service.admit(held, 0)
    try:
        items = expect_list(decode(body, max_size=MAX_BATCH_BYTES), "batch")
        payloads = [expect_bytes(item, "transaction") for item in items]
    except ValidationError as exc:
        return problem(400, f"a batch is a CBOR array of transaction byte strings: {exc}")
    if len(payloads) > MAX_BATCH:
        return problem(413, "too many transactions in one batch", limit=MAX_BATCH)
    outcome = await service.submit_batch(held, payloads, waiting / 1000)
    committed = [
        None if a.commit is None else {"height": a.commit.height, "index": a.commit.index}
        for a in outcome.accepted
    ]
    return JSONResponse(
        {
            "accepted": [a.tx_hash.hex() for a in outcome.accepted],
            "rejected": [{"index": r.index, "error": r.error} for r in outcome.rejected],
            "committed": committed if waiting else None,
        },
        status_code=200 if waiting and all(c is not None for c in committed) else 202,
    )


@router.get("/v1/domains/{domain}/transactions/{tx_hash}")
async def transaction(request: Request, domain: str, tx_hash: str, wait: str = "0") -> JSONResponse:
    service = service_of(request)
    held = service.require_domain(DomainId(domain))
    try:
        digest = Digest(bytes.fromhex(tx_hash))
    except ValueError:
        return problem(400, "transaction hash must be hex")
    if len(digest) != 32:
        return problem(400, "transaction hash must be 32 bytes")
    (commit,) = await service.wait_committed(held, [digest], wait_ms(wait) / 1000)
    if commit is None:
        return JSONResponse({"tx_hash": digest.hex(), "status": "unknown"}, status_code=404)
    return JSONResponse({**_committed(commit), "result": await service.result(commit)})
