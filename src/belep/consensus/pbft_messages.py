"""PBFT's wire messages (``docs/spec/pbft.md`` §Messages).

Owns the message types of :mod:`belep.consensus.pbft` and their strict
codecs. Every message is a frozen, slotted dataclass whose ``to_wire()`` map
carries a ``"type"`` tag (``pbft/...``); :data:`PBFT_MESSAGE_DECODERS` maps
each tag to its ``from_wire``, for the generic decoder in
:mod:`belep.consensus.registry`.

Authentication (Castro & Liskov's MAC/signature split):

* the host authenticates every message's sender (``Receive.sender``), so
  messages that never leave their first hop carry no signature:
  :class:`PrePrepare`, :class:`ForwardRequests`, :class:`StatusRequest`,
  :class:`StatusReply`;
* what must be *transferable* is signed: the votes :class:`Prepare`,
  :class:`Commit` and :class:`Checkpoint` (they become certificates), and
  :class:`ViewChange` and :class:`NewView` (a new-view carries view changes
  as proofs, and a new-view may be relayed by any replica).

Signed messages expose ``signing_bytes()``: exactly the bytes the signature
covers. A view change signs a *summary* — its view, its stable checkpoint and,
per prepared certificate, ``(height, view, block hash)`` — not the blocks it
carries: each block is bound to that summary by its hash, and each prepared
certificate is itself a set of signatures.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from belep.consensus.messages import (
    block_from_wire,
    certificate_from_wire,
    certificate_to_wire,
    message_fields,
    node_from_wire,
    record_fields,
    signature_from_wire,
    statement_from_wire,
    statement_to_wire,
    tagged,
    txs_from_wire,
    view_from_wire,
)
from belep.encoding import Value, encode, expect_list, expect_str
from belep.errors import SchemaError
from belep.ledger.block import (
    Block,
    DomainId,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)

__all__ = [
    "PBFT_MESSAGE_DECODERS",
    "PBFT_MESSAGE_TYPES",
    "Checkpoint",
    "Commit",
    "ForwardRequests",
    "NewView",
    "PbftMessage",
    "PrePrepare",
    "Prepare",
    "PreparedEntry",
    "StatusReply",
    "StatusRequest",
    "ViewChange",
]

VIEW_CHANGE_TAG = "belep-pbft-view-change-v1"
NEW_VIEW_TAG = "belep-pbft-new-view-v1"
#: Most prepared entries one view change may carry (a correct replica has at most the log size).
MAX_PREPARED_ENTRIES = 4096
#: Most view changes one new-view may carry.
MAX_VIEW_CHANGES = 1024


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """The primary of ``view`` assigns ``block`` to height ``block.height``.

    Unsigned: the transport authenticates the primary. The block's hash is
    the request digest every later vote names.
    """

    TAG: ClassVar[str] = "pbft/pre-prepare"

    view: View
    block: Block

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"view": self.view, "block": self.block.to_wire()})

    @classmethod
    def from_wire(cls, value: Value) -> PrePrepare:
        m = message_fields(value, cls.TAG, frozenset({"view", "block"}))
        return cls(view=view_from_wire(m["view"]), block=block_from_wire(m["block"]))


def _vote_to_wire(tag: str, statement: VoteStatement, signature: bytes) -> dict[str, Value]:
    return tagged(tag, {"statement": statement_to_wire(statement), "signature": signature})


def _vote_from_wire(value: Value, tag: str) -> tuple[VoteStatement, bytes]:
    m = message_fields(value, tag, frozenset({"statement", "signature"}))
    return statement_from_wire(m["statement"]), signature_from_wire(m["signature"])


@dataclass(frozen=True, slots=True)
class Prepare:
    """A signed prepare vote: ``statement.kind == "prepare"``; the voter is the sender."""

    TAG: ClassVar[str] = "pbft/prepare"

    statement: VoteStatement
    signature: bytes

    def signing_bytes(self) -> bytes:
        return self.statement.signing_bytes()

    def to_wire(self) -> dict[str, Value]:
        return _vote_to_wire(self.TAG, self.statement, self.signature)

    @classmethod
    def from_wire(cls, value: Value) -> Prepare:
        return cls(*_vote_from_wire(value, cls.TAG))


@dataclass(frozen=True, slots=True)
class Commit:
    """A signed commit vote: ``statement.kind == "commit"``; the voter is the sender."""

    TAG: ClassVar[str] = "pbft/commit"

    statement: VoteStatement
    signature: bytes

    def signing_bytes(self) -> bytes:
        return self.statement.signing_bytes()

    def to_wire(self) -> dict[str, Value]:
        return _vote_to_wire(self.TAG, self.statement, self.signature)

    @classmethod
    def from_wire(cls, value: Value) -> Commit:
        return cls(*_vote_from_wire(value, cls.TAG))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed checkpoint vote: ``statement.kind == "checkpoint"``, view 0."""

    TAG: ClassVar[str] = "pbft/checkpoint"

    statement: VoteStatement
    signature: bytes

    def signing_bytes(self) -> bytes:
        return self.statement.signing_bytes()

    def to_wire(self) -> dict[str, Value]:
        return _vote_to_wire(self.TAG, self.statement, self.signature)

    @classmethod
    def from_wire(cls, value: Value) -> Checkpoint:
        return cls(*_vote_from_wire(value, cls.TAG))


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """A prepared certificate and the block it certifies (part of a view change)."""

    certificate: QuorumCertificate
    block: Block

    @property
    def height(self) -> Height:
        return self.certificate.statement.height

    @property
    def view(self) -> View:
        return self.certificate.statement.view

    def to_wire(self) -> dict[str, Value]:
        return {"certificate": self.certificate.to_wire(), "block": self.block.to_wire()}

    @classmethod
    def from_wire(cls, value: Value) -> PreparedEntry:
        m = record_fields(value, "prepared entry", frozenset({"certificate", "block"}))
        return cls(QuorumCertificate.from_wire(m["certificate"]), block_from_wire(m["block"]))


def view_change_signing_bytes(
    domain: DomainId,
    new_view: View,
    replica: NodeId,
    stable: QuorumCertificate | None,
    prepared: tuple[PreparedEntry, ...],
) -> bytes:
    """The summary a view change's signature covers."""
    stable_point: list[Value] = (
        [0, None] if stable is None else [stable.statement.height, stable.statement.block_hash]
    )
    entries: list[Value] = [
        [
            e.certificate.statement.height,
            e.certificate.statement.view,
            e.certificate.statement.block_hash,
        ]
        for e in prepared
    ]
    return encode([VIEW_CHANGE_TAG, domain, new_view, replica, stable_point, entries])


@dataclass(frozen=True, slots=True)
class ViewChange:
    """``replica`` asks to move to ``new_view``.

    Carries its stable checkpoint certificate (``None`` at genesis) and, for
    every height above it, the highest-view prepared certificate it holds
    with that block, in ascending height order. Signed by ``replica``.
    """

    TAG: ClassVar[str] = "pbft/view-change"

    domain: DomainId
    new_view: View
    replica: NodeId
    stable: QuorumCertificate | None
    prepared: tuple[PreparedEntry, ...]
    signature: bytes

    def signing_bytes(self) -> bytes:
        return view_change_signing_bytes(
            self.domain, self.new_view, self.replica, self.stable, self.prepared
        )

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "domain": self.domain,
                "new_view": self.new_view,
                "replica": self.replica,
                "stable": certificate_to_wire(self.stable),
                "prepared": [e.to_wire() for e in self.prepared],
                "signature": self.signature,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> ViewChange:
        m = message_fields(
            value,
            cls.TAG,
            frozenset({"domain", "new_view", "replica", "stable", "prepared", "signature"}),
        )
        items = expect_list(m["prepared"], "prepared")
        if len(items) > MAX_PREPARED_ENTRIES:
            raise SchemaError(
                "too many prepared entries", expected=f"<= {MAX_PREPARED_ENTRIES}", found=len(items)
            )
        return cls(
            domain=DomainId(expect_str(m["domain"], "domain")),
            new_view=view_from_wire(m["new_view"], "new_view"),
            replica=node_from_wire(m["replica"], "replica"),
            stable=certificate_from_wire(m["stable"]),
            prepared=tuple(PreparedEntry.from_wire(item) for item in items),
            signature=signature_from_wire(m["signature"]),
        )


def new_view_signing_bytes(
    domain: DomainId, view: View, view_changes: tuple[ViewChange, ...]
) -> bytes:
    """What the new primary signs: the view and the view changes it chose (by signature)."""
    chosen: list[Value] = [[vc.replica, vc.new_view, vc.signature] for vc in view_changes]
    return encode([NEW_VIEW_TAG, domain, view, chosen])


@dataclass(frozen=True, slots=True)
class NewView:
    """The primary of ``view`` starts it, proving why with a quorum of view changes.

    The blocks to re-propose are not listed: every replica recomputes them
    from ``view_changes`` (``docs/spec/pbft.md`` §View change).
    """

    TAG: ClassVar[str] = "pbft/new-view"

    domain: DomainId
    view: View
    view_changes: tuple[ViewChange, ...]
    signature: bytes

    def signing_bytes(self) -> bytes:
        return new_view_signing_bytes(self.domain, self.view, self.view_changes)

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "domain": self.domain,
                "view": self.view,
                "view_changes": [vc.to_wire() for vc in self.view_changes],
                "signature": self.signature,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> NewView:
        m = message_fields(
            value, cls.TAG, frozenset({"domain", "view", "view_changes", "signature"})
        )
        items = expect_list(m["view_changes"], "view_changes")
        if len(items) > MAX_VIEW_CHANGES:
            raise SchemaError(
                "too many view changes", expected=f"<= {MAX_VIEW_CHANGES}", found=len(items)
            )
        return cls(
            domain=DomainId(expect_str(m["domain"], "domain")),
            view=view_from_wire(m["view"]),
            view_changes=tuple(ViewChange.from_wire(item) for item in items),
            signature=signature_from_wire(m["signature"]),
        )


@dataclass(frozen=True, slots=True)
class ForwardRequests:
    """Client transactions a replica passes on (to the primary, or to all when escalating)."""

    TAG: ClassVar[str] = "pbft/forward-requests"

    txs: tuple[Transaction, ...]

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"txs": [tx.payload for tx in self.txs]})

    @classmethod
    def from_wire(cls, value: Value) -> ForwardRequests:
        m = message_fields(value, cls.TAG, frozenset({"txs"}))
        return cls(txs=txs_from_wire(m["txs"]))


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Ask a peer for its view and stable checkpoint (sent at start and by observers)."""

    TAG: ClassVar[str] = "pbft/status-request"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {})

    @classmethod
    def from_wire(cls, value: Value) -> StatusRequest:
        message_fields(value, cls.TAG, frozenset())
        return cls()


@dataclass(frozen=True, slots=True)
class StatusReply:
    """A replica's current view (or view-change target) and its stable checkpoint."""

    TAG: ClassVar[str] = "pbft/status-reply"

    view: View
    stable: QuorumCertificate | None

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"view": self.view, "stable": certificate_to_wire(self.stable)})

    @classmethod
    def from_wire(cls, value: Value) -> StatusReply:
        m = message_fields(value, cls.TAG, frozenset({"view", "stable"}))
        return cls(view=view_from_wire(m["view"]), stable=certificate_from_wire(m["stable"]))


PbftMessage: TypeAlias = (
    PrePrepare
    | Prepare
    | Commit
    | Checkpoint
    | ViewChange
    | NewView
    | ForwardRequests
    | StatusRequest
    | StatusReply
)

PBFT_MESSAGE_TYPES: tuple[type[PbftMessage], ...] = (
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    ForwardRequests,
    StatusRequest,
    StatusReply,
)

#: Decoder of each message type, by its wire tag.
PBFT_MESSAGE_DECODERS: Mapping[str, Callable[[Value], PbftMessage]] = {
    t.TAG: t.from_wire for t in PBFT_MESSAGE_TYPES
}
