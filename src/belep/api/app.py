"""The node's ASGI application: the route modules, the gateway, authentication.

Owns :func:`build_app`. Every request first goes through the authentication
middleware (:class:`belep.api.auth.BearerTokens`: its caller and scopes);
then paths under ``/ipfs/`` go to the trustless gateway
(:func:`belep.content.gateway.gateway_router`, peer or operator only) and
everything else to the FastAPI application of the route modules, which also
serves its own OpenAPI 3 document at ``/openapi.json`` (no interactive docs).

No I/O of its own.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from belep import __version__
from belep.api import errors
from belep.api.auth import PEER_OR_OPERATOR, BearerTokens, Guarded
from belep.api.routes import blocks, content, health, status, transactions
from belep.content.gateway import gateway_router
from belep.node.service import NodeService

__all__ = ["GATEWAY_PREFIX", "build_app", "build_routes"]

GATEWAY_PREFIX = "/ipfs/"


def build_routes(service: NodeService) -> FastAPI:
    """The FastAPI application of the route modules, over ``service``."""
    api = FastAPI(
        title="BELEP node",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.state.service = service
    errors.install(api)
    for module in (health, transactions, status, blocks, content):
        api.include_router(module.router)
    return api


class _ByPath:
    """``/ipfs/…`` to the gateway, the rest to the API."""

    def __init__(self, api: ASGIApp, gateway: ASGIApp) -> None:
        self.api = api
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(GATEWAY_PREFIX):
            await self.gateway(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def build_app(service: NodeService) -> ASGIApp:
    """The node's whole ASGI application."""
    gateway = Guarded(gateway_router(service.content), PEER_OR_OPERATOR)
    return AuthenticationMiddleware(_ByPath(build_routes(service), gateway), BearerTokens(service))
