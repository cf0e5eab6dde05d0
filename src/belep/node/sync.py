"""The node-to-node sync channel of a domain: state transfer and tip gossip.

Owns the three messages a node exchanges on channel ``<domain>/sync``
(``docs/spec/node.md`` §Sync channel), each a canonical CBOR map with a
``type`` tag:

* ``sync/request`` ``{from, max}`` — "send me committed blocks from height
  ``from``, at most ``max``";
* ``sync/blocks`` ``{from, blocks: [[block, certificate], …]}`` — the
  answer, read from the sender's block store; never trusted: the replica
  verifies every certificate and hash link (``BlocksFetched``);
* ``sync/tip`` ``{height}`` — the sender's ledger height, gossiped every
  second so a node can report how far behind it is.

Decoding is strict and bounded (at most :data:`MAX_SYNC_BLOCKS` blocks).
No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from belep.encoding import (
    Value,
    decode,
    encode,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import SchemaError
from belep.ledger.block import Block, Height, QuorumCertificate

__all__ = [
    "MAX_SYNC_BLOCKS",
    "SyncBlocks",
    "SyncRequest",
    "SyncTip",
    "decode_sync",
    "encode_sync",
    "sync_channel",
]

MAX_SYNC_BLOCKS = 256


def sync_channel(domain: str) -> str:
    return f"{domain}/sync"


@dataclass(frozen=True, slots=True)
class SyncRequest:
    from_height: Height
    max_blocks: int


@dataclass(frozen=True, slots=True)
class SyncBlocks:
    from_height: Height
    blocks: tuple[tuple[Block, QuorumCertificate], ...]


@dataclass(frozen=True, slots=True)
class SyncTip:
    height: Height


SyncMessage = SyncRequest | SyncBlocks | SyncTip


def encode_sync(message: SyncMessage) -> bytes:
    wire: dict[str, Value]
    if isinstance(message, SyncRequest):
        wire = {"type": "sync/request", "from": message.from_height, "max": message.max_blocks}
    elif isinstance(message, SyncBlocks):
        wire = {
            "type": "sync/blocks",
            "from": message.from_height,
            "blocks": [[b.to_wire(), c.to_wire()] for b, c in message.blocks],
        }
    else:
        wire = {"type": "sync/tip", "height": message.height}
    return encode(wire)


def encode_blocks_raw(from_height: int, blocks: Sequence[tuple[Value, Value]]) -> bytes:
    """A ``sync/blocks`` answer from already-built wire values (avoids re-encoding twice)."""
    return encode(
        {"type": "sync/blocks", "from": from_height, "blocks": [[b, c] for b, c in blocks]}
    )


def decode_sync(data: bytes) -> SyncMessage:
    """Strictly decode a sync message; raises a ValidationError subclass."""
    m = expect_map(decode(data), "sync message")
    tag = expect_str(m.get("type"), "sync message type")
    if tag == "sync/request":
        expect_fields(m, tag, frozenset({"type", "from", "max"}))
        max_blocks = expect_int(m["max"], "max", minimum=1)
        return SyncRequest(
            Height(expect_int(m["from"], "from", minimum=1)), min(max_blocks, MAX_SYNC_BLOCKS)
        )
    if tag == "sync/blocks":
        expect_fields(m, tag, frozenset({"type", "from", "blocks"}))
        items = expect_list(m["blocks"], "blocks")
        if len(items) > MAX_SYNC_BLOCKS:
            raise SchemaError(
                "too many blocks in one answer", expected=f"<= {MAX_SYNC_BLOCKS}", found=len(items)
            )
        blocks = []
        for item in items:
            pair = expect_list(item, "block entry")
            if len(pair) != 2:
                raise SchemaError("block entry must be [block, certificate]", found=len(pair))
            blocks.append((Block.from_wire(pair[0]), QuorumCertificate.from_wire(pair[1])))
        return SyncBlocks(Height(expect_int(m["from"], "from", minimum=1)), tuple(blocks))
    if tag == "sync/tip":
        expect_fields(m, tag, frozenset({"type", "height"}))
        return SyncTip(Height(expect_int(m["height"], "height", minimum=0)))
    raise SchemaError(
        "unknown sync message", expected=["sync/request", "sync/blocks", "sync/tip"], found=tag
    )
