"""Shared wire helpers for consensus messages.

Owns the conventions every protocol's message module follows, so that one
generic decoder (:func:`belep.consensus.registry.decode_message`) can turn
wire bytes into the right message type:

* a message's wire form is a map with a ``"type"`` entry naming its tag
  (``"pbft/prepare"``, ``"raft/append-entries"`` …) and exactly its fields;
* tags are namespaced by protocol (``<protocol>/<name>``) and unique;
* decoding is strict: a missing or unexpected field, a wrong type or a wrong
  length raises a :class:`belep.errors.ValidationError` subclass naming what
  was expected and what was found.

It also holds the codecs of the record types several protocols embed in their
messages: vote statements, optional certificates, blocks and transaction
lists.

This module does no I/O.
"""

from __future__ import annotations

from typing import Protocol

from belep.encoding import (
    Value,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import SchemaError
from belep.ledger.block import (
    HASH_SIZE,
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)

__all__ = [
    "MAX_MESSAGE_TXS",
    "MAX_VIEW",
    "TYPE_KEY",
    "WireMessage",
    "block_from_wire",
    "certificate_from_wire",
    "certificate_to_wire",
    "message_fields",
    "node_from_wire",
    "record_fields",
    "signature_from_wire",
    "statement_from_wire",
    "statement_to_wire",
    "tagged",
    "txs_from_wire",
    "view_from_wire",
]

#: The map key that carries a message's tag.
TYPE_KEY = "type"
#: Most transactions one message may carry (a block or a forwarded batch).
MAX_MESSAGE_TXS = 100_000


class WireMessage(Protocol):
    """What a consensus message type provides."""

    def to_wire(self) -> dict[str, Value]: ...


def tagged(tag: str, fields: dict[str, Value]) -> dict[str, Value]:
    """The wire map of a message: its fields plus the ``type`` tag."""
    fields[TYPE_KEY] = tag
    return fields


def message_fields(value: Value, tag: str, names: frozenset[str]) -> dict[str, Value]:
    """The map of a message of type ``tag``, checked to have exactly ``names`` plus ``type``."""
    m = expect_map(value, tag)
    expect_fields(m, tag, names | {TYPE_KEY})
    if m[TYPE_KEY] != tag:
        raise SchemaError("wrong message type", expected=tag, found=m[TYPE_KEY])
    return {str(k): v for k, v in m.items()}


def record_fields(value: Value, what: str, names: frozenset[str]) -> dict[str, Value]:
    """The map of an untagged record embedded in a message, with exactly ``names``."""
    m = expect_map(value, what)
    expect_fields(m, what, names)
    return {str(k): v for k, v in m.items()}


def statement_to_wire(statement: VoteStatement) -> dict[str, Value]:
    """Wire map of a vote statement (the fields of :class:`VoteStatement`)."""
    return {
        "kind": statement.kind,
        "domain": statement.domain,
        "epoch": statement.epoch,
        "view": statement.view,
        "height": statement.height,
        "block_hash": statement.block_hash,
    }


_STATEMENT_FIELDS = frozenset({"kind", "domain", "epoch", "view", "height", "block_hash"})


def statement_from_wire(value: Value) -> VoteStatement:
    """Strict inverse of :func:`statement_to_wire`."""
    m = expect_map(value, "vote statement")
    expect_fields(m, "vote statement", _STATEMENT_FIELDS)
    return VoteStatement(
        kind=expect_str(m["kind"], "kind"),
        domain=DomainId(expect_str(m["domain"], "domain")),
        epoch=Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
        view=view_from_wire(m["view"]),
        height=Height(expect_int(m["height"], "height", minimum=0)),
        block_hash=Digest(expect_bytes(m["block_hash"], "block_hash", size=HASH_SIZE)),
    )


def certificate_to_wire(certificate: QuorumCertificate | None) -> Value:
    """Wire form of an optional certificate (``None`` stays ``None``)."""
    return None if certificate is None else certificate.to_wire()


def certificate_from_wire(value: Value) -> QuorumCertificate | None:
    """Strict inverse of :func:`certificate_to_wire`."""
    return None if value is None else QuorumCertificate.from_wire(value)


def txs_from_wire(value: Value, what: str = "txs") -> tuple[Transaction, ...]:
    """A list of transaction payloads, at most :data:`MAX_MESSAGE_TXS` of them."""
    items = expect_list(value, what)
    if len(items) > MAX_MESSAGE_TXS:
        raise SchemaError(f"{what}: too many", expected=f"<= {MAX_MESSAGE_TXS}", found=len(items))
    return tuple(Transaction(expect_bytes(item, "transaction")) for item in items)


def block_from_wire(value: Value) -> Block:
    """A block, with the transaction-count bound of :func:`txs_from_wire`."""
    m = expect_map(value, "block")
    txs = m.get("txs")
    if isinstance(txs, list) and len(txs) > MAX_MESSAGE_TXS:
        raise SchemaError("block: too many transactions", found=len(txs))
    return Block.from_wire(value)


#: Largest view a peer may name. Far beyond any real view (a view change a millisecond for
#: 140,000 years), and far enough below 2**64 that ``view + 1`` and doubled timeouts derived
#: from it always encode: a Byzantine peer cannot make a correct replica fail by naming a huge view.
MAX_VIEW = 2**62


def view_from_wire(value: Value, what: str = "view") -> View:
    """A view number in ``[0, MAX_VIEW]``."""
    return View(expect_int(value, what, minimum=0, maximum=MAX_VIEW))


def node_from_wire(value: Value, what: str = "node") -> NodeId:
    """A node id (text)."""
    return NodeId(expect_str(value, what))


def signature_from_wire(value: Value, what: str = "signature") -> bytes:
    """A signature: bytes of at most 512 (any suite's signature fits)."""
    raw = expect_bytes(value, what)
    if len(raw) > 512:
        raise SchemaError(f"{what}: too long", expected="<= 512 bytes", found=len(raw))
    return raw
