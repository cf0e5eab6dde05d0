"""Cross-level anchoring: a child domain's tip is committed into its parent's chain.

Owns :class:`Anchorer`, the node-side driver of the ``anchor`` transaction
(:mod:`belep.app.anchors`; ``docs/spec/node.md`` §Anchoring):

* a node that is a voter of a parent domain and holds a child chain (as an
  observer/standby of the child) watches the child's tip;
* it reads the parent chain as it commits and keeps, per child, the highest
  anchored height (:meth:`Anchorer.on_parent_commit`);
* when the child is ``every_blocks`` ahead of its last anchor, or
  ``every_ms`` passed since the last anchor and the child moved, an anchor
  is *due*; the parent's voters take turns — the voter at rank ``r`` (rank
  rotates with the last anchored height) submits after ``r`` stagger
  intervals if no anchor has committed meanwhile — so normally one anchor
  is committed per round, and any single live voter still anchors.

The parent domain's transaction policy (:func:`belep.app.policy.transaction_policy`)
accepts an ``anchor`` only from one of its voters and only with a well-formed body.

The decisions are pure given ``now_ms``; submission goes through the parent
host like any client transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from belep.app.anchors import ANCHOR_KIND, anchor_body, anchors_in
from belep.crypto import PrivateKey
from belep.ledger.block import Block, Digest, DomainId, NodeId, Transaction
from belep.ledger.envelope import sign_envelope
from belep.node.config import AnchorPolicy

__all__ = ["Anchorer"]

log = logging.getLogger("belep.node.anchoring")

MIN_STAGGER_MS = 500


@dataclass(slots=True)
class _ChildState:
    anchored: int = 0
    anchored_at_ms: int = 0
    due_since_ms: int | None = None
    submitted_height: int = 0
    submitted_at_ms: int = 0


@dataclass(slots=True)
class Anchorer:
    """Anchors the children of one parent domain (this node is a voter of the parent)."""

    node_id: NodeId
    key: PrivateKey
    parent: DomainId
    voters: tuple[NodeId, ...]
    policy: AnchorPolicy
    submit: Callable[[Transaction], None]
    children: dict[DomainId, _ChildState] = field(default_factory=dict)
    submitted: int = 0

    def add_child(self, child: DomainId) -> None:
        self.children.setdefault(child, _ChildState())

    def on_parent_commit(self, block: Block, now_ms: int) -> None:
        for record in anchors_in(block):
            state = self.children.get(record.domain)
            if state is not None and record.height > state.anchored:
                state.anchored = record.height
                state.anchored_at_ms = now_ms
                state.due_since_ms = None

    def tick(self, tips: Mapping[DomainId, tuple[int, Digest]], now_ms: int) -> None:
        """Submit the anchors that are due and are this node's turn."""
        n = len(self.voters)
        index = self.voters.index(self.node_id)
        stagger = max(MIN_STAGGER_MS, self.policy.every_ms // max(1, n))
        for child, state in self.children.items():
            tip = tips.get(child)
            if tip is None:
                continue
            height, block_hash = tip
            if height <= state.anchored:
                state.due_since_ms = None
                continue
            if state.anchored_at_ms == 0:
                state.anchored_at_ms = now_ms
            due = (
                height - state.anchored >= self.policy.every_blocks
                or now_ms - state.anchored_at_ms >= self.policy.every_ms
            )
            if not due:
                continue
            if state.due_since_ms is None:
                state.due_since_ms = now_ms
            rank = (index - state.anchored) % n
            if now_ms - state.due_since_ms < rank * stagger:
                continue
            waiting = now_ms - state.submitted_at_ms < 2 * self.policy.every_ms
            if state.submitted_height > state.anchored and waiting:
                continue  # our earlier anchor may still commit
            envelope = sign_envelope(
                self.key,
                ANCHOR_KIND,
                anchor_body(child, height, block_hash),
                timestamp_ms=now_ms,
            )
            state.submitted_height = height
            state.submitted_at_ms = now_ms
            self.submitted += 1
            log.info(
                "anchoring %s at height %d into %s",
                child,
                height,
                self.parent,
                extra={
                    "event": "node.anchor",
                    "child": child,
                    "height": height,
                    "domain": self.parent,
                },
            )
            self.submit(envelope.to_transaction())
