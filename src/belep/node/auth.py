"""Who may call a node's HTTP endpoints.

Owns the two credentials the node accepts (``docs/spec/node.md`` §Authentication):

* the **operator token** — a random bearer secret ``belep init`` writes to
  ``operator.token`` (0600) beside each node's configuration; it opens the
  operator endpoints (status, metrics, blocks, content upload). The node
  keeps only its SHA-256 and compares in constant time;
* the **peer token** — a short-lived bearer a node signs with its own key
  to fetch evidence blocks from another node's gateway (``/ipfs``):
  ``<node id>.<ms>.<hex signature>`` over
  ``["belep-peer-token-v1", network id, node id, ms]``. It is accepted from
  a node of the same network (known key) within :data:`PEER_TOKEN_WINDOW_MS`
  of the verifier's clock; verified tokens are cached until they expire.

Transactions need neither: they are authenticated by their own signatures.
``/health`` is open and says only whether the node is ready.

Pure (the clock is an argument).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from belep.crypto import PrivateKey, PublicKey, sha256
from belep.encoding import encode
from belep.ledger.block import NodeId

__all__ = [
    "PEER_TOKEN_WINDOW_MS",
    "OperatorAuth",
    "PeerTokenVerifier",
    "bearer_of",
    "make_peer_token",
]

PEER_TOKEN_WINDOW_MS = 5 * 60 * 1000
PEER_TOKEN_TAG = "belep-peer-token-v1"  # noqa: S105 (a domain-separation tag, not a secret)


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class OperatorAuth:
    """Checks the operator bearer token (constant-time, against its hash)."""

    __slots__ = ("_digest",)

    def __init__(self, token: str) -> None:
        self._digest = sha256(token.strip().encode())

    def allows(self, header: str | None) -> bool:
        token = bearer_of(header)
        if token is None:
            return False
        return hmac.compare_digest(sha256(token.encode()), self._digest)


def _peer_statement(network_id: bytes, node_id: str, ms: int) -> bytes:
    return encode([PEER_TOKEN_TAG, network_id, node_id, ms])


def make_peer_token(key: PrivateKey, network_id: bytes, node_id: str, now_ms: int) -> str:
    signature = key.sign(_peer_statement(network_id, node_id, now_ms))
    return f"{node_id}.{now_ms}.{signature.hex()}"


class PeerTokenVerifier:
    """Accepts peer tokens of the network's nodes within the time window."""

    def __init__(self, keys: Mapping[NodeId, PublicKey], network_id: bytes) -> None:
        self._keys = dict(keys)
        self._network_id = network_id
        self._cache: dict[str, int] = {}

    def allows(self, header: str | None, now_ms: int) -> bool:
        token = bearer_of(header)
        if token is None:
            return False
        cached = self._cache.get(token)
        if cached is not None:
            return abs(now_ms - cached) <= PEER_TOKEN_WINDOW_MS
        node, _, rest = token.partition(".")
        ms_text, _, sig_hex = rest.partition(".")
        key = self._keys.get(NodeId(node))
        if key is None or not ms_text.isdigit() or len(ms_text) > 16:
            return False
        ms = int(ms_text)
        if abs(now_ms - ms) > PEER_TOKEN_WINDOW_MS:
            return False
        try:
            signature = bytes.fromhex(sig_hex)
        except ValueError:
            return False
        if not key.is_valid_signature(_peer_statement(self._network_id, node, ms), signature):
            return False
        if len(self._cache) > 10_000:
            self._cache = {
                t: m for t, m in self._cache.items() if abs(now_ms - m) <= PEER_TOKEN_WINDOW_MS
            }
        self._cache[token] = ms
        return True
