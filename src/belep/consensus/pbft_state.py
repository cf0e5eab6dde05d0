"""What a PBFT replica persists, and how it reads it back.

Owns the keys and byte layout of the ``Persist`` effects of
:mod:`belep.consensus.pbft` (``docs/spec/pbft.md`` §Persistence):

* ``pbft/meta`` — :class:`PersistedMeta`: the view (or view-change target),
  the voting floor, and the last delivered height, hash and timestamp;
* ``pbft/stable`` — the highest stable checkpoint certificate;
* ``pbft/slot/<height>`` — :class:`PersistedSlot`: the prepare vote this
  replica sent at that height (view and block hash) and the highest-view
  prepared certificate it holds there;
* ``pbft/block/<height>/<hash>`` — a block named by a slot (written once).

Values are canonical CBOR (:mod:`belep.encoding`). Reading them back is
strict: a value that does not decode raises :class:`CorruptStore` — the
replica must not start from a state it cannot trust.

This module does no I/O (the host stores the bytes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from belep.consensus.messages import certificate_from_wire, certificate_to_wire, record_fields
from belep.encoding import Value, decode, encode, expect_bool, expect_bytes, expect_int, expect_list
from belep.errors import CorruptStore, ValidationError
from belep.ledger.block import HASH_SIZE, Block, Digest, Height, QuorumCertificate, View

__all__ = [
    "META_KEY",
    "STABLE_KEY",
    "PersistedMeta",
    "PersistedSlot",
    "RestoredState",
    "block_key",
    "decode_block",
    "encode_block",
    "encode_meta",
    "encode_slot",
    "load_state",
    "slot_key",
]

META_KEY = "pbft/meta"
STABLE_KEY = "pbft/stable"
SLOT_PREFIX = "pbft/slot/"
BLOCK_PREFIX = "pbft/block/"


def slot_key(height: int) -> str:
    return f"{SLOT_PREFIX}{height:016d}"


def block_key(height: int, block_hash: Digest) -> str:
    return f"{BLOCK_PREFIX}{height:016d}/{block_hash.hex()}"


@dataclass(frozen=True, slots=True)
class PersistedMeta:
    """The replica's position: view, voting floor and delivered chain tip."""

    view: View
    view_change: bool  # True: moving to ``view``, its new-view not yet installed
    floor: int  # never vote in a view <= floor (-1: no floor)
    delivered: Height
    delivered_hash: Digest
    delivered_ts: int


@dataclass(frozen=True, slots=True)
class PersistedSlot:
    """This replica's durable record at one height."""

    height: Height
    vote: tuple[View, Digest] | None
    prepared: QuorumCertificate | None


@dataclass(slots=True)
class RestoredState:
    """Everything :func:`load_state` found."""

    meta: PersistedMeta | None = None
    stable: QuorumCertificate | None = None
    slots: dict[Height, PersistedSlot] = field(default_factory=dict)
    blocks: dict[tuple[Height, Digest], Block] = field(default_factory=dict)


def encode_meta(meta: PersistedMeta) -> bytes:
    return encode(
        {
            "view": meta.view,
            "view_change": meta.view_change,
            "floor": meta.floor,
            "delivered": meta.delivered,
            "delivered_hash": meta.delivered_hash,
            "delivered_ts": meta.delivered_ts,
        }
    )


def _decode_meta(value: Value) -> PersistedMeta:
    m = record_fields(
        value,
        "pbft meta",
        frozenset({"view", "view_change", "floor", "delivered", "delivered_hash", "delivered_ts"}),
    )
    return PersistedMeta(
        view=View(expect_int(m["view"], "view", minimum=0)),
        view_change=expect_bool(m["view_change"], "view_change"),
        floor=expect_int(m["floor"], "floor", minimum=-1),
        delivered=Height(expect_int(m["delivered"], "delivered", minimum=0)),
        delivered_hash=Digest(expect_bytes(m["delivered_hash"], "delivered_hash", size=HASH_SIZE)),
        delivered_ts=expect_int(m["delivered_ts"], "delivered_ts", minimum=0),
    )


def encode_slot(slot: PersistedSlot) -> bytes:
    vote: Value = None if slot.vote is None else [slot.vote[0], slot.vote[1]]
    return encode(
        {"height": slot.height, "vote": vote, "prepared": certificate_to_wire(slot.prepared)}
    )


def _decode_slot(value: Value) -> PersistedSlot:
    m = record_fields(value, "pbft slot", frozenset({"height", "vote", "prepared"}))
    vote: tuple[View, Digest] | None = None
    if m["vote"] is not None:
        pair = expect_list(m["vote"], "vote")
        if len(pair) != 2:
            raise CorruptStore("pbft slot vote must be [view, hash]")
        vote = (
            View(expect_int(pair[0], "vote view", minimum=0)),
            Digest(expect_bytes(pair[1], "vote hash", size=HASH_SIZE)),
        )
    return PersistedSlot(
        height=Height(expect_int(m["height"], "height", minimum=1)),
        vote=vote,
        prepared=certificate_from_wire(m["prepared"]),
    )


def encode_block(block: Block) -> bytes:
    return encode(block.to_wire())


def decode_block(data: bytes) -> Block:
    return Block.from_wire(decode(data))


def load_state(persisted: Mapping[str, bytes]) -> RestoredState:
    """Parse every ``pbft/`` key; raise :class:`CorruptStore` on anything unreadable."""
    state = RestoredState()
    for key, data in persisted.items():
        try:
            if key == META_KEY:
                state.meta = _decode_meta(decode(data))
            elif key == STABLE_KEY:
                state.stable = QuorumCertificate.from_wire(decode(data))
            elif key.startswith(SLOT_PREFIX):
                slot = _decode_slot(decode(data))
                if slot_key(slot.height) != key:
                    raise CorruptStore(f"slot stored under another height: {key!r}")
                state.slots[slot.height] = slot
            elif key.startswith(BLOCK_PREFIX):
                block = decode_block(data)
                if block_key(block.height, block.block_hash) != key:
                    raise CorruptStore(f"block stored under another key: {key!r}")
                state.blocks[(block.height, block.block_hash)] = block
        except CorruptStore:
            raise
        except ValidationError as exc:
            raise CorruptStore(f"unreadable persisted value {key!r}: {exc}") from exc
    return state
