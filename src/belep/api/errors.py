"""The HTTP answers to refusals: one JSON shape, one status per kind of refusal.

Owns :func:`problem` (the ``{"error": message, …}`` body every refusal of the
API has) and :func:`install`, which maps the service's refusals
(:mod:`belep.errors`) to their status codes:

==========================  ======  =========================================
``Unauthenticated``         401     ``WWW-Authenticate: Bearer realm=…``
``DomainNotHeld``           404     ``domain``
``TooManyAtOnce``           413     ``limit``
``NotAVoter``               421     ``voters`` (their URLs)
``Overloaded``              503     ``reason``, ``retry_after_ms``; ``Retry-After`` (s)
==========================  ======  =========================================

Unknown paths and methods keep Starlette's plain-text ``404``/``405``.
No I/O.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from belep.errors import DomainNotHeld, NotAVoter, Overloaded, TooManyAtOnce, Unauthenticated

__all__ = ["challenge", "install", "problem"]


def problem(
    status: int, message: str, *, headers: dict[str, str] | None = None, **more: Any
) -> JSONResponse:
    """A refusal: ``{"error": message, **more}`` with ``status``."""
    return JSONResponse({"error": message, **more}, status_code=status, headers=headers)


def _retry_after_s(retry_after_ms: int) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1."""
    return str(max(1, -(-retry_after_ms // 1000)))


def challenge(exc: Unauthenticated) -> JSONResponse:
    """The ``401`` answer to a caller without the credential it needs."""
    return problem(401, exc.message, headers={"WWW-Authenticate": f'Bearer realm="{exc.realm}"'})


async def _unauthenticated(_request: Request, exc: Unauthenticated) -> Response:
    return challenge(exc)


async def _not_held(_request: Request, exc: DomainNotHeld) -> Response:
    return problem(404, exc.message, domain=exc.domain)


async def _too_many(_request: Request, exc: TooManyAtOnce) -> Response:
    return problem(413, exc.message, limit=exc.limit)


async def _not_a_voter(_request: Request, exc: NotAVoter) -> Response:
    return problem(421, exc.message, voters=list(exc.voters))


async def _overloaded(_request: Request, exc: Overloaded) -> Response:
    return problem(
        503,
        exc.message,
        headers={"Retry-After": _retry_after_s(exc.retry_after_ms)},
        reason=exc.reason,
        retry_after_ms=exc.retry_after_ms,
    )


async def _plain(_request: Request, exc: HTTPException) -> Response:
    """Starlette's own answer to a routing miss (FastAPI's would be JSON)."""
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the refusal answers on ``app``."""
    app.exception_handler(Unauthenticated)(_unauthenticated)
    app.exception_handler(DomainNotHeld)(_not_held)
    app.exception_handler(TooManyAtOnce)(_too_many)
    app.exception_handler(NotAVoter)(_not_a_voter)
    app.exception_handler(Overloaded)(_overloaded)
    app.exception_handler(HTTPException)(_plain)
