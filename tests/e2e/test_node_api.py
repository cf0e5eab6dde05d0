"""End to end, the HTTP edge of real node processes: who may call what, and what a
client sees (one small network: a 4-voter child domain observed by a 3-node parent)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest
from harness import free_base_port, make_network

from belep.crypto import PrivateKey
from belep.deploy.launcher import LocalNetwork
from belep.encoding import encode
from belep.keys import generate_private_key
from belep.ledger.envelope import Envelope, sign_envelope
from belep.node.protocols import registered_protocols

pytestmark = pytest.mark.e2e

TOPOLOGY = """
[network]
name = "e2e-api"
base_port = {base}

[anchoring]
every_blocks = 2
every_ms = 500

[[units]]
id = "parent"
protocol = "raft"
validators = 3

[[units]]
id = "child"
parent = "parent"
protocol = "{protocol}"
validators = 4

[units.consensus]
admission_delay_ms = 300
"""


@pytest.mark.timeout(180)
def test_http_edge(tmp_path: Path) -> None:
    protocol = "hpbft" if "hpbft" in registered_protocols() else "pbft"
    rng = random.Random(7)
    network = make_network(
        tmp_path / "net", TOPOLOGY.format(base=free_base_port(14, rng), protocol=protocol)
    )
    voter, observer = network.nodes["child-1"], network.nodes["parent-1"]
    key = generate_private_key()
    try:
        network.start()
        network.wait_ready(60)
        with httpx.Client(timeout=20) as http:
            health = http.get(f"{voter.config.http_url}/health").json()
            assert health["status"] == "ok"
            assert health["peers_connected"] == health["peers_expected"] == 6

            # Operator endpoints need the node's own token.
            for path in ("/v1/status", "/metrics", "/v1/domains/child/blocks/1"):
                assert http.get(f"{voter.config.http_url}{path}").status_code == 401
                other = {"Authorization": f"Bearer {observer.token}"}
                assert http.get(f"{voter.config.http_url}{path}", headers=other).status_code == 401
            assert http.post(f"{voter.config.http_url}/v1/content", content=b"x").status_code == 401
            operator = {"Authorization": f"Bearer {voter.token}"}

            # A good transaction commits; submitting it again answers at once.
            envelope = sign_envelope(key, "bench", {"i": 1}, timestamp_ms=int(time.time() * 1000))
            url = f"{voter.config.http_url}/v1/domains/child/transactions"
            first = http.post(f"{url}?wait=10000", content=envelope.encode())
            assert first.status_code == 200, first.text
            done = first.json()
            started = time.monotonic()
            again = http.post(f"{url}?wait=10000", content=envelope.encode())
            assert again.json()["height"] == done["height"]
            assert time.monotonic() - started < 5
            status = http.get(
                f"{voter.config.http_url}/v1/domains/child/transactions/{done['tx_hash']}"
            )
            assert status.json()["block_hash"] == done["block_hash"]
            assert status.json()["result"] == "ok"  # executed after ordering: accepted
            unknown = http.get(f"{voter.config.http_url}/v1/domains/child/transactions/{'00' * 32}")
            assert unknown.status_code == 404

            # A forged signature, garbage and an oversized body are refused.
            wire = envelope.to_wire()
            wire["sig"] = bytes(64)
            assert http.post(url, content=encode(wire)).status_code == 400
            assert http.post(url, content=b"\xff\xfe").status_code == 400
            assert http.post(url, content=b"\x00" * (1024 * 1024 + 1)).status_code == 413

            # An observer of the domain points to its voters.
            misdirected = http.post(
                f"{observer.config.http_url}/v1/domains/child/transactions",
                content=envelope.encode(),
            )
            assert misdirected.status_code == 421
            assert voter.config.http_url in misdirected.json()["voters"]

            # A file uploaded to one voter and referenced by a committed transaction is
            # pinned by every member and standby of the domain; the gateway needs a token.
            data = rng.randbytes(700_000)
            upload = http.post(
                f"{voter.config.http_url}/v1/content", content=data, headers=operator
            )
            assert upload.status_code == 201
            cid = upload.json()["cid"]
            attach = sign_envelope(key, "attach-evidence", {}, cids=(cid,), timestamp_ms=1)
            assert http.post(f"{url}?wait=10000", content=attach.encode()).status_code == 200
            assert http.get(f"{observer.config.http_url}/ipfs/{cid}").status_code == 401
            deadline = time.monotonic() + 30
            for node in network.nodes.values():
                headers = {"Authorization": f"Bearer {node.token}"}
                while True:
                    got = http.get(f"{node.config.http_url}/ipfs/{cid}", headers=headers)
                    if got.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert got.status_code == 200, node.node_id
                assert got.content == data

            # Status and metrics with the right token.
            body = http.get(f"{voter.config.http_url}/v1/status", headers=operator).json()
            child = next(d for d in body["domains"] if d["domain"] == "child")
            assert child["role"] == "voter"
            assert child["height"] >= 2
            metrics = http.get(
                f"{observer.config.http_url}/metrics",
                headers={"Authorization": f"Bearer {observer.token}"},
            ).text
            assert 'belep_height{domain="child",role="observer"}' in metrics
            assert "belep_pins_total 1.0" in metrics

            check_admission_control(network, http, key, envelope)
    finally:
        codes = network.stop()
    assert all(code == 0 for code in codes.values()), codes


def check_admission_control(
    network: LocalNetwork, http: httpx.Client, key: PrivateKey, committed: Envelope
) -> None:
    """With two of its four voters down the child domain cannot commit: the first
    submission is accepted, and once it has waited longer than the domain's admission
    delay (300 ms) the node refuses more with 503 + Retry-After and accepts nothing of
    them; when the voters return, the backlog commits and submissions are accepted again."""
    voter = network.nodes["child-1"]
    url = f"{voter.config.http_url}/v1/domains/child/transactions"
    operator = {"Authorization": f"Bearer {voter.token}"}
    network.kill("child-3")
    network.kill("child-4")
    stamp = int(time.time() * 1000)
    stuck = sign_envelope(key, "bench", {"i": "stuck"}, timestamp_ms=stamp)
    accepted = http.post(url, content=stuck.encode())
    assert accepted.status_code == 202, accepted.text
    time.sleep(0.6)
    later = sign_envelope(key, "bench", {"i": "later"}, timestamp_ms=stamp)
    busy = http.post(url, content=later.encode())
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "1"
    assert busy.json()["reason"] == "delay"
    assert 50 <= busy.json()["retry_after_ms"] <= 300
    batch = http.post(f"{url}/batch", content=encode([later.encode()]))
    assert batch.status_code == 503, batch.text
    status = http.get(f"{url}/{later.to_transaction().tx_hash.hex()}")
    assert status.status_code == 404  # nothing of a refused request was accepted
    known = http.post(url, content=committed.encode())  # on the chain: answered even now
    assert known.status_code == 200, known.text
    metrics = http.get(f"{voter.config.http_url}/metrics", headers=operator).text
    assert 'belep_submissions_refused_total{domain="child",reason="delay"} 2.0' in metrics
    assert 'belep_backlog_transactions{domain="child"} 1.0' in metrics

    network.start("child-3")
    network.start("child-4")
    done = http.get(f"{url}/{stuck.to_transaction().tx_hash.hex()}?wait=30000")
    assert done.status_code == 200, done.text
    again = http.post(f"{url}?wait=20000", content=later.encode())
    assert again.status_code == 200, again.text
    # Three voters commit without the fourth: wait for both restarted ones, or the stop
    # that ends the test may find one still starting, before its SIGTERM handler (exit -15).
    network.wait_ready(60, ["child-3", "child-4"])
