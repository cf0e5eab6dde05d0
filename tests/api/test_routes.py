"""The route modules over an opened node: status codes, JSON bodies and headers as the
node's HTTP edge has always answered them (``docs/spec/node.md`` §HTTP), in process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from belep.api.app import build_app
from belep.encoding import encode
from belep.ledger.block import MAX_TX_SIZE, Transaction
from belep.ledger.envelope import sign_envelope
from belep.node.commits import CommitTracker
from served import CHILD, COMMITTED, SUBMITTER, Served

TXS = f"/v1/domains/{CHILD}/transactions"

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(served: Served, name: str, scenario: Scenario) -> None:
    app = build_app(served.service(served.node(name)))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            await scenario(http)

    asyncio.run(main())


def test_submission_answers(served: Served) -> None:
    fresh = sign_envelope(SUBMITTER, "bench", {"fresh": 1}, timestamp_ms=2)
    wire = fresh.to_wire()
    wire["sig"] = bytes(64)
    forged = encode(wire)
    done = COMMITTED[1].to_transaction()

    async def scenario(http: httpx.AsyncClient) -> None:
        accepted = await http.post(TXS, content=fresh.encode())
        assert accepted.status_code == 202
        assert accepted.json() == {
            "tx_hash": fresh.to_transaction().tx_hash.hex(),
            "status": "pending",
        }
        again = await http.post(f"{TXS}?wait=5000", content=done.payload)
        assert again.status_code == 200
        body = again.json()
        assert body["tx_hash"] == done.tx_hash.hex()
        assert (body["status"], body["domain"], body["height"], body["index"]) == (
            "committed",
            "child",
            2,
            0,
        )
        bad = await http.post(TXS, content=forged)
        assert bad.status_code == 400
        assert bad.json()["tx_hash"] is not None
        garbage = await http.post(TXS, content=b"\xff\xfe")
        assert garbage.status_code == 400  # not an envelope: refused by its hash
        assert garbage.json()["tx_hash"] == Transaction(b"\xff\xfe").tx_hash.hex()
        large = await http.post(TXS, content=bytes(MAX_TX_SIZE + 1))
        assert large.json() == {"error": "transaction too large", "limit": MAX_TX_SIZE}
        assert large.status_code == 413
        elsewhere = await http.post("/v1/domains/elsewhere/transactions", content=b"x")
        assert elsewhere.status_code == 404
        assert elsewhere.json() == {
            "error": "this node does not hold the domain",
            "domain": "elsewhere",
        }
        batch = await http.post(f"{TXS}/batch", content=encode([b"\xff", done.payload]))
        assert batch.status_code == 202
        assert batch.json()["accepted"] == [done.tx_hash.hex()]
        assert [r["index"] for r in batch.json()["rejected"]] == [0]
        assert batch.json()["committed"] is None
        waited = await http.post(f"{TXS}/batch?wait=100", content=encode([done.payload]))
        assert waited.status_code == 200
        assert waited.json()["committed"] == [{"height": 2, "index": 0}]
        not_cbor = await http.post(f"{TXS}/batch", content=b"\xff")
        assert not_cbor.status_code == 400
        assert not_cbor.json()["error"].startswith("a batch is a CBOR array")

    run(served, "child-1", scenario)


def test_an_observer_answers_421_with_the_voters(served: Served) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        for path in (TXS, f"{TXS}/batch"):
            refused = await http.post(path, content=COMMITTED[0].encode())
            assert refused.status_code == 421
            assert len(refused.json()["voters"]) == 4

    run(served, "parent-1", scenario)


def test_a_busy_node_answers_503_with_retry_after(served: Served) -> None:
    node = served.node("child-1")
    now = [1000.0]
    node.commits = CommitTracker(node.metrics.observe_latency, lambda: now[0])
    app = build_app(served.service(node))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            first = sign_envelope(SUBMITTER, "bench", {"n": 1}, timestamp_ms=2)
            assert (await http.post(TXS, content=first.encode())).status_code == 202
            now[0] += 1
            later = sign_envelope(SUBMITTER, "bench", {"n": 2}, timestamp_ms=2)
            for path, body in ((TXS, later.encode()), (f"{TXS}/batch", b"\xff")):
                busy = await http.post(path, content=body)
                assert busy.status_code == 503
                assert busy.headers["retry-after"] == "1"
                assert busy.json()["reason"] == "delay"
                assert busy.json()["retry_after_ms"] == 300
            too_many = await http.post(f"{TXS}/batch", content=encode([b"x"] * 51))
            assert too_many.status_code == 503  # the delay test comes first

    asyncio.run(main())


def test_lookups_blocks_and_what_starlette_answered(served: Served) -> None:
    token = {"Authorization": f"Bearer {served.token('child-1')}"}
    done = COMMITTED[2].to_transaction()

    async def scenario(http: httpx.AsyncClient) -> None:
        found = await http.get(f"{TXS}/{done.tx_hash.hex()}")
        assert (found.status_code, found.json()["height"]) == (200, 3)
        unknown = await http.get(f"{TXS}/{'00' * 32}?wait=1")
        assert unknown.status_code == 404
        assert unknown.json() == {"tx_hash": "00" * 32, "status": "unknown"}
        for bad, message in (("zz", "must be hex"), ("00", "must be 32 bytes")):
            refused = await http.get(f"{TXS}/{bad}")
            assert refused.status_code == 400
            assert refused.json()["error"].endswith(message)
        block = (await http.get(f"/v1/domains/{CHILD}/blocks/3", headers=token)).json()
        assert block["transactions"] == [done.tx_hash.hex()]
        assert (block["height"], len(block["signers"])) == (3, 3)
        assert (await http.get(f"/v1/domains/{CHILD}/blocks/9", headers=token)).status_code == 404
        assert (await http.get(f"/v1/domains/{CHILD}/blocks/x", headers=token)).status_code == 400
        head = await http.head("/health")
        assert (head.status_code, head.content) == (200, b"")
        missing = await http.get("/nowhere")
        assert (missing.status_code, missing.text) == (404, "Not Found")
        wrong = await http.post("/health")
        assert wrong.status_code == 405
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
        document = (await http.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        assert f"{TXS.replace('child', '{domain}')}/batch" in document["paths"]

    run(served, "child-1", scenario)
