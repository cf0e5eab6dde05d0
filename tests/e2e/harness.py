"""Helpers for end-to-end tests: free ports, a generated network, a client that records
acknowledged transactions, and reading every node's chain after the run.

Each test runs real node processes on 127.0.0.1 and waits for conditions with
deadlines; nothing sleeps for a fixed time to wait for the system.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from belep.deploy.launcher import LocalNetwork
from belep.deploy.provision import provision
from belep.deploy.topology import parse_topology
from belep.encoding import encode
from belep.keys import generate_private_key
from belep.ledger.datadir import node_domain_dir
from belep.ledger.envelope import sign_envelope
from belep.ledger.genesis_file import read_genesis
from belep.ledger.store import BlockStore
from belep.node.chaincheck import verify_domain_chain


def free_base_port(count: int, rng: random.Random) -> int:
    """A base port such that ``count`` consecutive ports can be bound on 127.0.0.1 now."""
    for _ in range(200):
        base = rng.randrange(20_000, 60_000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


def make_network(root: Path, topology_text: str) -> LocalNetwork:
    provision(parse_topology(topology_text), root, topology_text=topology_text)
    return LocalNetwork.open(root)


@dataclass
class Client:
    """Submits signed transactions in small batches to live voters; records what was acknowledged."""

    network: LocalNetwork
    domain: str
    voters: list[str]
    rng: random.Random
    batch: int = 20
    acknowledged: set[str] = field(default_factory=set)
    submitted: int = 0
    errors: int = 0
    busy: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        key = generate_private_key()
        nonce = 0
        with httpx.Client(timeout=10.0) as http:
            while not self._stop.is_set():
                live = [v for v in self.voters if self.network.nodes[v].running]
                if not live:
                    self._stop.wait(0.1)
                    continue
                target = self.rng.choice(live)
                payloads = []
                for _ in range(self.batch):
                    nonce += 1
                    envelope = sign_envelope(
                        key,
                        "bench",
                        {"n": nonce, "pad": b"e" * 200},
                        timestamp_ms=int(time.time() * 1000),
                        nonce=nonce,
                    )
                    payloads.append(envelope.encode())
                url = f"{self.network.nodes[target].config.http_url}/v1/domains/{self.domain}/transactions/batch?wait=4000"
                started = time.monotonic()
                try:
                    response = http.post(url, content=encode(payloads))
                    self.batch_seconds.append(time.monotonic() - started)
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    self.errors += 1
                    self._stop.wait(0.05)
                    continue
                if response.status_code == 503:  # admission control: nothing was accepted
                    self.busy += 1
                    self._stop.wait(body.get("retry_after_ms", 500) / 1000)
                    continue
                self.submitted += len(payloads)
                for tx_hash, done in zip(
                    body.get("accepted", []), body.get("committed") or [], strict=False
                ):
                    if done is not None:
                        self.acknowledged.add(tx_hash)


def statuses(network: LocalNetwork, http: httpx.Client) -> dict[str, dict[str, int]]:
    """Each up node's height per domain."""
    out: dict[str, dict[str, int]] = {}
    for node_id, node in network.nodes.items():
        if not node.running:
            continue
        try:
            response = http.get(
                f"{node.config.http_url}/v1/status",
                headers={"Authorization": f"Bearer {node.token}"},
                timeout=3.0,
            )
            body = response.json()
        except (httpx.HTTPError, ValueError):
            continue
        out[node_id] = {d["domain"]: d["height"] for d in body["domains"]}
    return out


def wait_converged(
    network: LocalNetwork, minimum: dict[str, int], timeout_s: float, quiet_s: float = 2.5
) -> dict[str, int]:
    """Wait until every node reports the same height per domain, at least ``minimum``,
    unchanged for ``quiet_s`` (anchors stop once the child chain stops growing)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, dict[str, int]] = {}
    agreed: dict[str, int] | None = None
    since = 0.0
    with httpx.Client() as http:
        while time.monotonic() < deadline:
            last = statuses(network, http)
            if len(last) == len(network.nodes):
                heights: dict[str, set[int]] = {}
                for per_domain in last.values():
                    for domain, height in per_domain.items():
                        heights.setdefault(domain, set()).add(height)
                if all(len(h) == 1 for h in heights.values()) and all(
                    next(iter(heights[d])) >= m for d, m in minimum.items()
                ):
                    current = {d: next(iter(h)) for d, h in heights.items()}
                    if current != agreed:
                        agreed, since = current, time.monotonic()
                    elif time.monotonic() - since >= quiet_s:
                        return current
            time.sleep(0.3)
    raise AssertionError(f"nodes did not converge within {timeout_s} s: {last}")


def read_chains(network: LocalNetwork, domain: str) -> dict[str, list[bytes]]:
    """Every holder's block hashes of ``domain`` (stores opened read-only after the run),
    each chain verified in full (links, roots, certificates and signatures)."""
    chains: dict[str, list[bytes]] = {}
    for node_id, node in network.nodes.items():
        if domain not in node.config.domains:
            continue
        directory = node_domain_dir(node.config.data_dir, domain)
        genesis = read_genesis(directory.genesis_path)
        with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
            check = verify_domain_chain(store, genesis)
            assert check.ok, (node_id, domain, check.problem)
            tip = store.tip().height
            chains[node_id] = [store.get_header(h).block_hash for h in range(1, tip + 1)]
    return chains


def committed_hashes(network: LocalNetwork, node_id: str, domain: str) -> set[str]:
    node = network.nodes[node_id]
    directory = node_domain_dir(node.config.data_dir, domain)
    genesis = read_genesis(directory.genesis_path)
    found: set[str] = set()
    with BlockStore.open(directory.chain_path, genesis, readonly=True) as store:
        for block, _ in store.iter_committed(1, None):
            found.update(tx.tx_hash.hex() for tx in block.transactions)
    return found
