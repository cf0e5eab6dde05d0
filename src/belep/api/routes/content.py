"""``POST /v1/content``: import a file into the node's content store and pin it once a
committed transaction references it, for the node's operator only.

The body is streamed to the importer (in a worker thread, in the service);
``201`` with the CID, size and SHA-256, or ``500`` if the import failed.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse

from belep.api.auth import operator_required
from belep.api.deps import service_of
from belep.api.errors import problem
from belep.api.routing import Route
from belep.errors import BelepError

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(operator_required)], route_class=Route)


@router.post("/v1/content")
async def upload(request: Request) -> JSONResponse:
    service = service_of(request)
    try:
        imported = await service.import_content(request.stream())
    except BelepError as exc:
        return problem(500, f"import failed: {exc}")
    return JSONResponse(
        {
            "cid": imported.cid,
            "size": imported.size,
            "sha256": None if imported.sha256 is None else imported.sha256.hex(),
        },
        status_code=201,
    )
