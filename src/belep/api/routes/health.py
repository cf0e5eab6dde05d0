"""``GET /health``: is the node ready, are its peers connected (anyone may ask).

``200`` once the node has started, ``503`` before; ``status`` is ``ok``,
``degraded`` (a peer is not connected) or ``starting``. No I/O.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from belep.api.deps import service_of
from belep.api.routing import Route

__all__ = ["router"]

router = APIRouter(route_class=Route)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    service = service_of(request)
    found = service.health()
    body = {
        "node": found.node,
        "ready": found.ready,
        "peers_connected": found.peers_connected,
        "peers_expected": found.peers_expected,
        "status": found.status,
    }
    return JSONResponse(body, status_code=200 if found.ready else 503)
