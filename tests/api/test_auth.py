"""Authentication as middleware: each caller's scopes, and what each endpoint needs.

Over an opened node (``tests/served.py``) through an in-process ASGI client: no port."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection

from belep.api.app import build_app
from belep.api.auth import (
    OPERATOR_ONLY,
    PEER_OR_OPERATOR,
    BearerTokens,
    CallerUser,
    Requirement,
)
from belep.errors import Unauthenticated
from belep.node.service import Caller
from served import CHILD, Served

OPERATOR_PATHS = ("/v1/status", "/metrics", f"/v1/domains/{CHILD}/blocks/1")
OPERATOR_401 = {"error": "operator token required"}
GATEWAY_401 = {"error": "peer or operator token required"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_backend_gives_each_caller_its_scopes(served: Served) -> None:
    backend = BearerTokens(served.service(served.node("child-1")))

    def scopes(header: str | None) -> tuple[list[str], Caller]:
        headers = [] if header is None else [(b"authorization", header.encode())]
        credentials, user = asyncio.run(
            backend.authenticate(HTTPConnection({"type": "http", "headers": headers}))
        )
        assert isinstance(credentials, AuthCredentials)
        assert isinstance(user, CallerUser)
        return credentials.scopes, user.caller

    assert scopes(f"Bearer {served.token('child-1')}") == (["operator"], Caller.OPERATOR)
    assert scopes(f"Bearer {served.peer_token('child-2')}") == (["peer"], Caller.PEER)
    assert scopes(f"Bearer {served.token('child-2')}") == ([], Caller.ANONYMOUS)  # not ours
    assert scopes("Bearer ") == ([], Caller.ANONYMOUS)
    assert scopes(None) == ([], Caller.ANONYMOUS)


@pytest.mark.parametrize(
    ("requirement", "granted", "allowed"),
    [
        (OPERATOR_ONLY, ["operator"], True),
        (OPERATOR_ONLY, ["peer"], False),
        (OPERATOR_ONLY, [], False),
        (PEER_OR_OPERATOR, ["operator"], True),
        (PEER_OR_OPERATOR, ["peer"], True),
        (PEER_OR_OPERATOR, [], False),
    ],
    ids=[
        "operator-operator",
        "operator-peer",
        "operator-none",
        "gw-operator",
        "gw-peer",
        "gw-none",
    ],
)
def test_requirements(requirement: Requirement, granted: list[str], allowed: bool) -> None:
    if allowed:
        requirement.check(granted)
        return
    with pytest.raises(Unauthenticated) as refused:
        requirement.check(granted)
    assert (refused.value.needed, refused.value.realm) == (requirement.needed, requirement.realm)


def test_each_endpoint_asks_for_its_credential(served: Served) -> None:
    node = served.node("child-1")
    app = build_app(served.service(node))
    operator = bearer(served.token("child-1"))
    peer = bearer(served.peer_token("child-2"))
    stranger = bearer(served.peer_token("parent-2") + "00")  # a peer token, tampered
    wrong = bearer(served.token("child-2"))  # another node's operator token

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            upload = await http.post("/v1/content", content=b"evidence" * 100, headers=operator)
            assert upload.status_code == 201
            gateway = f"/ipfs/{upload.json()['cid']}"
            for path in OPERATOR_PATHS:
                assert (await http.get(path, headers=operator)).status_code == 200, path
                for headers in ({}, peer, stranger, wrong):
                    refused = await http.get(path, headers=headers)
                    assert refused.status_code == 401, (path, headers)
                    assert refused.json() == OPERATOR_401
                    assert refused.headers["www-authenticate"] == 'Bearer realm="belep-operator"'
            refused = await http.post("/v1/content", content=b"x", headers=peer)
            assert (refused.status_code, refused.json()) == (401, OPERATOR_401)
            for headers in (operator, peer):
                assert (await http.get(gateway, headers=headers)).status_code == 200
            for headers in ({}, stranger, wrong):
                refused = await http.get(gateway, headers=headers)
                assert (refused.status_code, refused.json()) == (401, GATEWAY_401)
                assert refused.headers["www-authenticate"] == 'Bearer realm="belep-gateway"'
            # Open endpoints ignore a wrong token rather than refuse it.
            for headers in ({}, wrong):
                assert (await http.get("/health", headers=headers)).status_code == 200
                unknown = await http.get(f"/v1/domains/{CHILD}/transactions/{'00' * 32}")
                assert unknown.status_code == 404

    asyncio.run(scenario())
