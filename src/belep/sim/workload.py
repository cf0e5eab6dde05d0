"""The simulated clients: transactions at a rate, with retries, and their latency.

Clients submit transactions (``ClientRequest``) to replicas as a Poisson
process at ``rate_per_s`` of virtual time. Payloads have realistic sizes (an
evidence record with its CID, hashes, metadata and signature: log-normal
around ``median_payload`` bytes) and a self-describing layout that
:func:`validate_sim_transaction` checks, so replicas' ``validate_transaction``
accepts genuine client transactions and rejects tampered ones.

A transaction is first submitted to one replica chosen at random; while it
is not committed it is sent again to *every* replica each ``retry_ms`` (as
PBFT clients broadcast on timeout), so requests sent to a crashed or
Byzantine replica are not lost forever. Latency is measured from the first
submission to the first delivery by a correct replica.

Invariants: payloads are unique (client id and sequence number); all draws
come from the engine's ``random.Random``. No I/O.
"""

from __future__ import annotations

import math
import random
import struct

from belep.consensus.types import Digest, Transaction
from belep.sim.model import WorkloadParams

__all__ = [
    "SIM_TX_MAGIC",
    "Workload",
    "make_sim_transaction",
    "read_sim_header",
    "validate_sim_transaction",
]

SIM_TX_MAGIC = b"BELEP-SIM-TX1"
_HEAD = struct.Struct(">HII")  # client, sequence, total payload length
_HEAD_SIZE = len(SIM_TX_MAGIC) + _HEAD.size


def make_sim_transaction(client: int, seq: int, size: int, rng: random.Random) -> Transaction:
    """A well-formed client transaction of ``size`` bytes (at least the header)."""
    size = max(size, _HEAD_SIZE + 16)
    body = rng.randbytes(size - _HEAD_SIZE)
    return Transaction(SIM_TX_MAGIC + _HEAD.pack(client & 0xFFFF, seq, size) + body)


def read_sim_header(payload: bytes) -> tuple[int, int] | None:
    """``(client, sequence)`` of a well-formed simulated transaction, else ``None``."""
    if len(payload) < _HEAD_SIZE or not payload.startswith(SIM_TX_MAGIC):
        return None
    client, seq, length = _HEAD.unpack_from(payload, len(SIM_TX_MAGIC))
    if length != len(payload):
        return None
    return int(client), int(seq)


def validate_sim_transaction(tx: Transaction) -> bool:
    """A simulated client's transaction: magic, header, and the declared length."""
    return read_sim_header(tx.payload) is not None


class Workload:
    """Generates transactions and tracks which have committed."""

    __slots__ = (
        "_mean_gap",
        "_rng",
        "committed_at",
        "params",
        "submitted_at",
        "targets",
        "tx_index",
        "txs",
    )

    def __init__(
        self, params: WorkloadParams, targets: tuple[str, ...], rng: random.Random
    ) -> None:
        self.params = params
        self._rng = rng
        self.targets = targets
        self._mean_gap = 1000.0 / params.rate_per_s if params.rate_per_s > 0 else math.inf
        self.txs: list[Transaction] = []
        self.submitted_at: list[int] = []
        self.committed_at: dict[int, int] = {}
        self.tx_index: dict[Digest, int] = {}

    def next_gap_ms(self) -> int:
        """Virtual ms until the next new transaction (>= 1)."""
        return max(1, round(self._rng.expovariate(1.0 / self._mean_gap)))

    def new_transaction(self, now_ms: int) -> tuple[int, Transaction]:
        index = len(self.txs)
        client = index % self.params.clients
        size = round(self._rng.lognormvariate(math.log(self.params.median_payload), 0.6))
        size = min(size, self.params.max_payload)
        tx = make_sim_transaction(client, index, size, self._rng)
        self.txs.append(tx)
        self.submitted_at.append(now_ms)
        self.tx_index[tx.tx_hash] = index
        return index, tx

    def pick_target(self) -> str:
        """The replica a new transaction is first submitted to."""
        return self._rng.choice(self.targets)

    def on_commit(self, txs: tuple[Transaction, ...], now_ms: int) -> None:
        index = self.tx_index
        committed = self.committed_at
        for tx in txs:
            i = index.get(tx.tx_hash)
            if i is not None and i not in committed:
                committed[i] = now_ms

    def is_committed(self, index: int) -> bool:
        return index in self.committed_at

    def latencies_ms(self) -> list[int]:
        return sorted(t - self.submitted_at[i] for i, t in self.committed_at.items())

    def uncommitted(self) -> list[int]:
        return [i for i in range(len(self.txs)) if i not in self.committed_at]
