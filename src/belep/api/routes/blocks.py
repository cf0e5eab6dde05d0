"""``GET /v1/domains/{d}/blocks/{height}``: a committed block's header, transaction hashes
and certificate signers, for the node's operator only.

``400`` if the height is not a number, ``404`` if there is no block there (or
the domain is not held). The read runs off the event loop (in the service).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from belep.api.auth import operator_required
from belep.api.deps import service_of
from belep.api.errors import problem
from belep.api.routing import Route
from belep.errors import NotFound
from belep.ledger.block import DomainId

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(operator_required)], route_class=Route)


@router.get("/v1/domains/{domain}/blocks/{height}")
async def block(request: Request, domain: str, height: str) -> JSONResponse:
    service = service_of(request)
    held = service.require_domain(DomainId(domain))
    if not (height.isascii() and height.isdigit()):
        return problem(400, "height must be a number")
    try:
        found = await service.block(held, int(height))
    except NotFound:
        return problem(404, "no block at this height")
    header = found.header
    return JSONResponse(
        {
            "domain": found.domain,
            "height": header.height,
            "block_hash": header.block_hash.hex(),
            "prev_hash": header.prev_hash.hex(),
            "tx_root": header.tx_root.hex(),
            "view": header.view,
            "epoch": header.epoch,
            "timestamp_ms": header.timestamp_ms,
            "proposer": header.proposer,
            "transactions": [tx_hash.hex() for tx_hash in found.tx_hashes],
            "signers": list(found.signers),
        }
    )
