"""Authentication as middleware: a bearer token becomes a caller with scopes.

Owns :class:`BearerTokens`, the Starlette authentication backend that turns
a request's ``Authorization`` header into its caller
(:meth:`belep.node.service.NodeService.identify`): the node's **operator
token** gives the scope ``operator``, a **peer token** of a node of the
network (:class:`belep.node.auth.PeerTokenVerifier`) the scope ``peer``,
anything else — no header, a malformed or a wrong token — no scope (the
anonymous caller, who may still submit and look up transactions). A wrong
token is not an error in itself: it is refused only where a scope is needed.

Each endpoint declares what it needs (a :class:`Requirement`): the operator
endpoints depend on :func:`operator_required`; the gateway is wrapped in
:class:`Guarded` (peer or operator). A caller without a needed scope gets
``401`` with ``WWW-Authenticate: Bearer realm="belep-operator"`` (or
``"belep-gateway"``) and ``{"error": "<token> required"}``.

No I/O (the service checks tokens in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from belep.api.errors import challenge
from belep.errors import Unauthenticated
from belep.node.service import Caller, NodeService

__all__ = [
    "OPERATOR",
    "OPERATOR_ONLY",
    "PEER",
    "PEER_OR_OPERATOR",
    "BearerTokens",
    "CallerUser",
    "Guarded",
    "Requirement",
    "operator_required",
]

OPERATOR = "operator"
PEER = "peer"

_SCOPES: dict[Caller, tuple[str, ...]] = {
    Caller.OPERATOR: (OPERATOR,),
    Caller.PEER: (PEER,),
    Caller.ANONYMOUS: (),
}


class CallerUser(BaseUser):
    """The caller of a request (``request.user``)."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    @property
    def is_authenticated(self) -> bool:
        return self.caller is not Caller.ANONYMOUS

    @property
    def display_name(self) -> str:
        return self.caller.value


class BearerTokens(AuthenticationBackend):
    """Identifies every request's caller by its bearer token (never refuses one)."""

    def __init__(self, service: NodeService) -> None:
        self._service = service

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        caller = self._service.identify(conn.headers.get("authorization"))
        return AuthCredentials(list(_SCOPES[caller])), CallerUser(caller)


@dataclass(frozen=True, slots=True)
class Requirement:
    """The scopes of which an endpoint needs one, and how a refusal names them."""

    scopes: frozenset[str]
    needed: str
    realm: str

    def check(self, granted: list[str]) -> None:
        """Raise :class:`Unauthenticated` unless ``granted`` holds one of the scopes."""
        if self.scopes.isdisjoint(granted):
            raise Unauthenticated(self.needed, self.realm)


OPERATOR_ONLY = Requirement(frozenset({OPERATOR}), "operator token", "belep-operator")
PEER_OR_OPERATOR = Requirement(
    frozenset({OPERATOR, PEER}), "peer or operator token", "belep-gateway"
)


async def operator_required(request: Request) -> None:
    """The dependency of the operator endpoints."""
    OPERATOR_ONLY.check(request.auth.scopes)


class Guarded:
    """An ASGI application reachable only by callers meeting ``requirement``."""

    def __init__(self, app: ASGIApp, requirement: Requirement) -> None:
        self.app = app
        self.requirement = requirement

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.requirement.check(scope["auth"].scopes)
        except Unauthenticated as exc:
            await challenge(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
