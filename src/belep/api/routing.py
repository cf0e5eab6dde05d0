"""The route class of the API: FastAPI's, answering HEAD as Starlette's routes do.

Owns :class:`Route`. Starlette answers ``HEAD`` wherever a route answers
``GET`` (same status and headers, no body) and names both in the ``Allow``
header of a ``405``; FastAPI's routes answer only the methods they list.
This class keeps Starlette's behaviour, which the node's HTTP edge had
before it moved to FastAPI, while the OpenAPI document lists the ``GET``
only (a separate ``HEAD`` operation would repeat its operation id). No I/O.
"""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

__all__ = ["Route"]


class Route(APIRoute):
    """An API route that also answers ``HEAD`` where it answers ``GET``."""

    def _as_get(self, scope: Scope) -> Scope:
        if scope.get("method") == "HEAD" and "GET" in (self.methods or ()):
            return {**scope, "method": "GET"}
        return scope

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return super().matches(self._as_get(scope))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = self._as_get(scope)
        methods = self.methods or set()
        if methods and scope["method"] not in methods:
            allowed = methods | {"HEAD"} if "GET" in methods else methods
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)
