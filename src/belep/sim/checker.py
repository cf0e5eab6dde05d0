"""Safety invariants, checked on every delivery of every correct replica.

The invariants (``docs/spec/simulator.md``):

* **order** — a replica delivers heights 1, 2, 3, … without gaps; after a
  restart it may re-deliver a block it already had only if it is the same block;
* **link** — each delivered block's ``prev_hash`` is the hash of the block it
  delivered at the height below (the genesis hash at height 1), and its
  ``tx_root`` matches its transactions;
* **certificate** — the block's certificate verifies under the protocol's
  certificate rule (voters and quorum from :mod:`belep.sim.protocols`);
* **agreement** — no two correct replicas deliver different blocks at the same
  height of the domain. With the order invariant this makes every correct
  replica's chain a prefix of the longest one (the *canonical* chain kept here).

Deliveries are the only events that change what these invariants talk about,
so checking at each delivery is checking after every step. Byzantine replicas
(and both copies of a Twins pair) are not checked: nothing is promised about
what they deliver.

No I/O; certificate checks are cached by certificate value (every replica
delivers the same certificates, so each is verified once).
"""

from __future__ import annotations

from dataclasses import dataclass

from belep.consensus.types import Block, Digest, QuorumCertificate, ReplicaConfig
from belep.errors import ValidationError
from belep.sim.protocols import CertificateRule

__all__ = ["InvariantChecker", "Violation"]


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken invariant: what, when, where, and the details."""

    kind: str  # "agreement", "order", "link", "certificate", "state-root", "exception", "liveness"
    time_ms: int
    node: str
    height: int
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "time_ms": self.time_ms,
            "node": self.node,
            "height": self.height,
            "detail": self.detail,
        }


class InvariantChecker:
    """Keeps the canonical chain and judges each delivery of a correct replica."""

    __slots__ = ("_cert_ok", "_config", "_rule", "canonical", "commit_time_ms", "genesis_hash")

    def __init__(self, config: ReplicaConfig, rule: CertificateRule) -> None:
        self._config = config
        self._rule = rule
        self.genesis_hash: Digest = config.genesis_hash
        self.canonical: list[Block] = []
        self.commit_time_ms: list[int] = []
        self._cert_ok: dict[tuple[Digest, QuorumCertificate], str | None] = {}

    @property
    def height(self) -> int:
        return len(self.canonical)

    def check_delivery(
        self,
        node: str,
        chain: list[Block],
        block: Block,
        certificate: QuorumCertificate,
        now_ms: int,
        *,
        may_redeliver: bool,
    ) -> tuple[Violation | None, bool]:
        """Judge ``node`` delivering ``block`` on top of its stored ``chain``.

        Returns the violation (or None) and whether the delivery is new (so the
        caller appends it to the node's chain).
        """
        height = block.header.height
        have = len(chain)
        if height <= have:
            if may_redeliver and chain[height - 1].block_hash == block.block_hash:
                return None, False
            kind = "agreement" if chain[height - 1].block_hash != block.block_hash else "order"
            return (
                Violation(
                    kind,
                    now_ms,
                    node,
                    height,
                    f"delivered height {height} again (already at {have}); "
                    f"stored {chain[height - 1].block_hash.hex()[:16]}, "
                    f"new {block.block_hash.hex()[:16]}",
                ),
                False,
            )
        if height != have + 1:
            return (
                Violation("order", now_ms, node, height, f"gap: expected height {have + 1}"),
                False,
            )
        prev = chain[-1].block_hash if chain else self.genesis_hash
        if block.header.prev_hash != prev:
            return (
                Violation(
                    "link",
                    now_ms,
                    node,
                    height,
                    f"prev_hash {block.header.prev_hash.hex()[:16]} != {prev.hex()[:16]}",
                ),
                False,
            )
        problem = self._check_certificate(block, certificate)
        if problem is not None:
            return Violation("certificate", now_ms, node, height, problem), False
        if height <= len(self.canonical):
            other = self.canonical[height - 1]
            if other.block_hash != block.block_hash:
                return (
                    Violation(
                        "agreement",
                        now_ms,
                        node,
                        height,
                        f"fork: {block.block_hash.hex()[:16]} (proposer {block.header.proposer}, "
                        f"view {block.header.view}) vs canonical {other.block_hash.hex()[:16]} "
                        f"(proposer {other.header.proposer}, view {other.header.view})",
                    ),
                    False,
                )
        else:
            self.canonical.append(block)
            self.commit_time_ms.append(now_ms)
        return None, True

    def _check_certificate(self, block: Block, certificate: QuorumCertificate) -> str | None:
        key = (block.block_hash, certificate)
        if key in self._cert_ok:
            return self._cert_ok[key]
        problem: str | None = None
        try:
            block.check_tx_root()
            self._rule(self._config, self.canonical, block, certificate)
        except ValidationError as exc:
            problem = str(exc)
        self._cert_ok[key] = problem
        return problem
