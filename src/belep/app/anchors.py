"""Cross-level anchors: a child domain's tip recorded in its parent's chain.

Owns the ``anchor`` transaction (``docs/spec/node.md`` §Anchoring): an
envelope of kind :data:`ANCHOR_KIND` with the body ``{domain, height,
block_hash}`` — the child domain (a valid domain id), a height of its chain
and the hash of its block there — signed by a voter of the parent domain. :func:`read_anchor`
parses one strictly; :func:`anchors_in` finds them in a block.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from belep.encoding import Value, encode
from belep.errors import ValidationError
from belep.ledger.block import HASH_SIZE, Block, Digest, DomainId
from belep.ledger.envelope import Envelope, parse_envelope
from belep.ledger.genesis import is_valid_id

__all__ = ["ANCHOR_KIND", "AnchorRecord", "anchor_body", "anchors_in", "read_anchor"]

ANCHOR_KIND = "anchor"
#: Quick pre-filter: the canonical bytes of ``"kind": "anchor"`` inside an envelope.
ANCHOR_MARK = encode("kind") + encode(ANCHOR_KIND)


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    """A child's block as an anchor names it."""

    domain: DomainId
    height: int
    block_hash: Digest


def anchor_body(domain: str, height: int, block_hash: bytes) -> dict[str, Value]:
    return {"domain": domain, "height": height, "block_hash": block_hash}


def read_anchor(envelope: Envelope) -> AnchorRecord | None:
    """The anchor an envelope carries, or ``None`` if it is not a well-formed anchor."""
    if envelope.kind != ANCHOR_KIND:
        return None
    body = envelope.body
    if set(body) != {"domain", "height", "block_hash"}:
        return None
    domain, height, block_hash = body["domain"], body["height"], body["block_hash"]
    if not isinstance(domain, str) or not is_valid_id(domain):
        return None
    if type(height) is not int or not 1 <= height < 1 << 63:
        return None
    if not isinstance(block_hash, bytes) or len(block_hash) != HASH_SIZE:
        return None
    return AnchorRecord(DomainId(domain), height, Digest(block_hash))


def anchors_in(block: Block) -> list[AnchorRecord]:
    """Every well-formed anchor transaction of ``block``."""
    found = []
    for tx in block.transactions:
        if ANCHOR_MARK not in tx.payload:
            continue
        try:
            record = read_anchor(parse_envelope(tx.payload))
        except ValidationError:
            continue
        if record is not None:
            found.append(record)
    return found
