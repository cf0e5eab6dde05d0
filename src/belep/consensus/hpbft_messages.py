"""HPBFT messages: frozen records with a canonical, strictly decoded wire form.

Owns the message types of ``docs/spec/hpbft.md`` §Messages and their tags
(``hpbft/<name>``, see :data:`HPBFT_MESSAGES`). Which messages are signed:

* :class:`Vote` carries a signature over its :class:`VoteStatement` (the bytes
  that go into a quorum certificate, so it is transferable);
* :class:`ViewChange` and :class:`ReviveReport` are signed by their sender over
  everything except the blocks they carry (blocks are checked by hash against
  the certificates they accompany), because a new primary forwards them as proof;
* :class:`Checkpoint` is a signed vote on the ``checkpoint`` statement.

Every other message is authenticated by the transport (the host names the
real sender) and carries only self-verifying content: blocks are checked by
hash and root, certificates by their signatures.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from belep.consensus.messages import (
    block_from_wire,
    certificate_from_wire,
    certificate_to_wire,
    message_fields,
    node_from_wire,
    signature_from_wire,
    statement_from_wire,
    statement_to_wire,
    tagged,
    txs_from_wire,
    view_from_wire,
)
from belep.encoding import Value, encode, expect_bytes, expect_int, expect_list
from belep.errors import SchemaError
from belep.ledger.block import (
    HASH_SIZE,
    Block,
    Digest,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)
from belep.ledger.config_tx import COMMIT_KIND, ReviveOrder

#: Vote and certificate kinds of HPBFT (the commit kind is the ledger's, ``COMMIT_KIND``).
PREPARE_KIND = "prepare"

__all__ = [
    "COMMIT_KIND",
    "HPBFT_MESSAGES",
    "PREPARE_KIND",
    "Certified",
    "Checkpoint",
    "EpochHint",
    "Forward",
    "NewView",
    "PrePrepare",
    "ReviveNotice",
    "ReviveReport",
    "ReviveStart",
    "StandbyStatus",
    "Status",
    "ViewChange",
    "Vote",
]

#: Most certificates a view change or revive report may carry.
MAX_REPORTED = 4096


def _epoch(value: Value, what: str = "epoch") -> Epoch:
    return Epoch(expect_int(value, what, minimum=0))


def _height(value: Value, what: str = "height") -> Height:
    return Height(expect_int(value, what, minimum=0))


def _blocks(value: Value, what: str) -> tuple[Block, ...]:
    items = expect_list(value, what)
    if len(items) > MAX_REPORTED:
        raise SchemaError(f"{what}: too many", expected=f"<= {MAX_REPORTED}", found=len(items))
    return tuple(block_from_wire(item) for item in items)


def _certificates(value: Value, what: str) -> tuple[QuorumCertificate, ...]:
    items = expect_list(value, what)
    if len(items) > MAX_REPORTED:
        raise SchemaError(f"{what}: too many", expected=f"<= {MAX_REPORTED}", found=len(items))
    return tuple(QuorumCertificate.from_wire(item) for item in items)


@dataclass(frozen=True, slots=True)
class PrePrepare:
    """The primary proposes ``block`` at its height in ``view`` (to seats and standbys)."""

    epoch: Epoch
    view: View
    block: Block

    TAG = "hpbft/pre-prepare"

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG, {"epoch": self.epoch, "view": self.view, "block": self.block.to_wire()}
        )

    @classmethod
    def from_wire(cls, value: Value) -> PrePrepare:
        m = message_fields(value, cls.TAG, frozenset({"epoch", "view", "block"}))
        return cls(_epoch(m["epoch"]), view_from_wire(m["view"]), block_from_wire(m["block"]))


@dataclass(frozen=True, slots=True)
class Vote:
    """A seat's signed prepare or commit vote, sent to the primary only."""

    statement: VoteStatement
    voter: NodeId
    signature: bytes

    TAG = "hpbft/vote"

    def signing_bytes(self) -> bytes:
        return self.statement.signing_bytes()

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "statement": statement_to_wire(self.statement),
                "voter": self.voter,
                "signature": self.signature,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> Vote:
        m = message_fields(value, cls.TAG, frozenset({"statement", "voter", "signature"}))
        return cls(
            statement_from_wire(m["statement"]),
            node_from_wire(m["voter"], "voter"),
            signature_from_wire(m["signature"]),
        )


@dataclass(frozen=True, slots=True)
class Certified:
    """A quorum certificate the primary aggregated (prepare or commit), to everyone."""

    certificate: QuorumCertificate

    TAG = "hpbft/certified"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"certificate": self.certificate.to_wire()})

    @classmethod
    def from_wire(cls, value: Value) -> Certified:
        m = message_fields(value, cls.TAG, frozenset({"certificate"}))
        return cls(QuorumCertificate.from_wire(m["certificate"]))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A seat's signed vote that it delivered ``block_hash`` at ``height`` (every K blocks)."""

    statement: VoteStatement
    voter: NodeId
    signature: bytes

    TAG = "hpbft/checkpoint"

    def signing_bytes(self) -> bytes:
        return self.statement.signing_bytes()

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "statement": statement_to_wire(self.statement),
                "voter": self.voter,
                "signature": self.signature,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> Checkpoint:
        m = message_fields(value, cls.TAG, frozenset({"statement", "voter", "signature"}))
        return cls(
            statement_from_wire(m["statement"]),
            node_from_wire(m["voter"], "voter"),
            signature_from_wire(m["signature"]),
        )


def report_signing_bytes(
    tag: str,
    epoch: Epoch,
    target: int,
    sender: NodeId,
    checkpoint: QuorumCertificate | None,
    prepared: tuple[QuorumCertificate, ...],
) -> bytes:
    """What the sender of a view change or revive report signs (blocks excluded)."""
    return encode(
        [
            tag,
            epoch,
            target,
            sender,
            certificate_to_wire(checkpoint),
            [qc.to_wire() for qc in prepared],
        ]
    )


@dataclass(frozen=True, slots=True)
class ViewChange:
    """A seat's signed request to move to ``new_view``, with its prepared certificates.

    ``prepared`` holds, for each height above the sender's stable checkpoint,
    the highest-view prepare certificate it holds; ``blocks`` the blocks they
    certify (stripped when forwarded inside a :class:`NewView`).
    """

    epoch: Epoch
    new_view: View
    sender: NodeId
    checkpoint: QuorumCertificate | None
    prepared: tuple[QuorumCertificate, ...]
    signature: bytes
    blocks: tuple[Block, ...] = ()

    TAG = "hpbft/view-change"

    def signing_bytes(self) -> bytes:
        return report_signing_bytes(
            self.TAG, self.epoch, self.new_view, self.sender, self.checkpoint, self.prepared
        )

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "epoch": self.epoch,
                "new_view": self.new_view,
                "sender": self.sender,
                "checkpoint": certificate_to_wire(self.checkpoint),
                "prepared": [qc.to_wire() for qc in self.prepared],
                "signature": self.signature,
                "blocks": [b.to_wire() for b in self.blocks],
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> ViewChange:
        m = message_fields(
            value,
            cls.TAG,
            frozenset(
                {"epoch", "new_view", "sender", "checkpoint", "prepared", "signature", "blocks"}
            ),
        )
        return cls(
            _epoch(m["epoch"]),
            view_from_wire(m["new_view"], "new_view"),
            node_from_wire(m["sender"], "sender"),
            certificate_from_wire(m["checkpoint"]),
            _certificates(m["prepared"], "prepared"),
            signature_from_wire(m["signature"]),
            _blocks(m["blocks"], "blocks"),
        )


@dataclass(frozen=True, slots=True)
class NewView:
    """The new primary's proof (``2f+1`` view changes) and the blocks it re-proposes."""

    epoch: Epoch
    view: View
    view_changes: tuple[ViewChange, ...]
    blocks: tuple[Block, ...]

    TAG = "hpbft/new-view"

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "epoch": self.epoch,
                "view": self.view,
                "view_changes": [vc.to_wire() for vc in self.view_changes],
                "blocks": [b.to_wire() for b in self.blocks],
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> NewView:
        m = message_fields(value, cls.TAG, frozenset({"epoch", "view", "view_changes", "blocks"}))
        items = expect_list(m["view_changes"], "view_changes")
        if len(items) > MAX_REPORTED:
            raise SchemaError("view_changes: too many", found=len(items))
        return cls(
            _epoch(m["epoch"]),
            view_from_wire(m["view"]),
            tuple(ViewChange.from_wire(item) for item in items),
            _blocks(m["blocks"], "blocks"),
        )


@dataclass(frozen=True, slots=True)
class Forward:
    """Client transactions a replica passes on to the primary."""

    txs: tuple[Transaction, ...]

    TAG = "hpbft/forward"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"txs": [tx.payload for tx in self.txs]})

    @classmethod
    def from_wire(cls, value: Value) -> Forward:
        m = message_fields(value, cls.TAG, frozenset({"txs"}))
        return cls(txs_from_wire(m["txs"]))


@dataclass(frozen=True, slots=True)
class Status:
    """The primary's heartbeat while idle: its view and latest commit certificate."""

    epoch: Epoch
    view: View
    certificate: QuorumCertificate | None

    TAG = "hpbft/status"

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "epoch": self.epoch,
                "view": self.view,
                "certificate": certificate_to_wire(self.certificate),
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> Status:
        m = message_fields(value, cls.TAG, frozenset({"epoch", "view", "certificate"}))
        return cls(
            _epoch(m["epoch"]), view_from_wire(m["view"]), certificate_from_wire(m["certificate"])
        )


@dataclass(frozen=True, slots=True)
class StandbyStatus:
    """A standby tells the primary it is alive (so it may be chosen for a seat)."""

    epoch: Epoch
    height: Height

    TAG = "hpbft/standby-status"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"epoch": self.epoch, "height": self.height})

    @classmethod
    def from_wire(cls, value: Value) -> StandbyStatus:
        m = message_fields(value, cls.TAG, frozenset({"epoch", "height"}))
        return cls(_epoch(m["epoch"]), _height(m["height"]))


@dataclass(frozen=True, slots=True)
class EpochHint:
    """Answer to a message of an older epoch: this node is in ``epoch`` at ``height``."""

    epoch: Epoch
    height: Height

    TAG = "hpbft/epoch-hint"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"epoch": self.epoch, "height": self.height})

    @classmethod
    def from_wire(cls, value: Value) -> EpochHint:
        m = message_fields(value, cls.TAG, frozenset({"epoch", "height"}))
        return cls(_epoch(m["epoch"]), _height(m["height"]))


@dataclass(frozen=True, slots=True)
class ReviveNotice:
    """A parent's committed revival decision, as the host (or a peer) hands it on."""

    order: ReviveOrder

    TAG = "hpbft/revive-notice"

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"order": self.order.to_wire()})

    @classmethod
    def from_wire(cls, value: Value) -> ReviveNotice:
        m = message_fields(value, cls.TAG, frozenset({"order"}))
        return cls(ReviveOrder.from_wire(m["order"]))


@dataclass(frozen=True, slots=True)
class ReviveReport:
    """A node of the stalled ``epoch`` reports its prepared chain and stops voting in it.

    ``delivered`` is the height it delivered; other fields as :class:`ViewChange`.
    """

    epoch: Epoch
    delivered: Height
    sender: NodeId
    checkpoint: QuorumCertificate | None
    prepared: tuple[QuorumCertificate, ...]
    signature: bytes
    blocks: tuple[Block, ...] = ()

    TAG = "hpbft/revive-report"

    def signing_bytes(self) -> bytes:
        return report_signing_bytes(
            self.TAG, self.epoch, self.delivered, self.sender, self.checkpoint, self.prepared
        )

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "epoch": self.epoch,
                "delivered": self.delivered,
                "sender": self.sender,
                "checkpoint": certificate_to_wire(self.checkpoint),
                "prepared": [qc.to_wire() for qc in self.prepared],
                "signature": self.signature,
                "blocks": [b.to_wire() for b in self.blocks],
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> ReviveReport:
        m = message_fields(
            value,
            cls.TAG,
            frozenset(
                {"epoch", "delivered", "sender", "checkpoint", "prepared", "signature", "blocks"}
            ),
        )
        return cls(
            _epoch(m["epoch"]),
            _height(m["delivered"], "delivered"),
            node_from_wire(m["sender"], "sender"),
            certificate_from_wire(m["checkpoint"]),
            _certificates(m["prepared"], "prepared"),
            signature_from_wire(m["signature"]),
            _blocks(m["blocks"], "blocks"),
        )


@dataclass(frozen=True, slots=True)
class ReviveStart:
    """The revived epoch's first primary: the order, the reports, the re-proposed blocks."""

    order: ReviveOrder
    reports: tuple[ReviveReport, ...]
    blocks: tuple[Block, ...]
    base_hash: Digest

    TAG = "hpbft/revive-start"

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "order": self.order.to_wire(),
                "reports": [r.to_wire() for r in self.reports],
                "blocks": [b.to_wire() for b in self.blocks],
                "base_hash": self.base_hash,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> ReviveStart:
        m = message_fields(value, cls.TAG, frozenset({"order", "reports", "blocks", "base_hash"}))
        items = expect_list(m["reports"], "reports")
        if len(items) > MAX_REPORTED:
            raise SchemaError("reports: too many", found=len(items))
        return cls(
            ReviveOrder.from_wire(m["order"]),
            tuple(ReviveReport.from_wire(item) for item in items),
            _blocks(m["blocks"], "blocks"),
            Digest(expect_bytes(m["base_hash"], "base_hash", size=HASH_SIZE)),
        )


#: Tag -> decoder, for the protocol registry's generic message decoder.
HPBFT_MESSAGES: dict[str, Callable[[Value], object]] = {
    cls.TAG: cls.from_wire
    for cls in (
        PrePrepare,
        Vote,
        Certified,
        Checkpoint,
        ViewChange,
        NewView,
        Forward,
        Status,
        StandbyStatus,
        EpochHint,
        ReviveNotice,
        ReviveReport,
        ReviveStart,
    )
}
