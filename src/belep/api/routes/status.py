"""``GET /v1/status`` and ``GET /metrics``: the node's state, for its operator only.

Status: the node, its unit, readiness, each expected peer's connection, and per
held domain its role, protocol, height, tip, view, leader, lag, queue and peers.
Metrics: the Prometheus text format. No I/O.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from belep.api.auth import operator_required
from belep.api.deps import service_of
from belep.api.routing import Route
from belep.node.domain import DomainStatus

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(operator_required)], route_class=Route)


def _domain(s: DomainStatus) -> dict[str, Any]:
    return {
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


@router.get("/v1/status")
async def status(request: Request) -> JSONResponse:
    service = service_of(request)
    found = service.status()
    return JSONResponse(
        {
            "node": found.node,
            "unit": found.unit,
            "ready": found.ready,
            "peers": dict(found.peers),
            "domains": [_domain(s) for s in found.domains],
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    service = service_of(request)
    return Response(service.metrics_text(), media_type="text/plain; version=0.0.4")
