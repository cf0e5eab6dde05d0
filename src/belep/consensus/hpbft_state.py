"""HPBFT durable state: what a replica persists and how it reads it back after a restart.

Owns the persisted key layout of ``docs/spec/hpbft.md`` §Persistence and the
record :class:`DurableState`:

* ``hpbft/state`` — the configuration history, the current epoch's base, the
  view (and whether a view change is in progress), the view's base and
  designated chain, the delivered tip, the stable checkpoint certificate and
  the revival this node joined (if any);
* ``hpbft/tip`` — the delivered tip (height and hash), rewritten at every
  delivery (``hpbft/state`` is rewritten only when the view, epoch or
  checkpoint changes);
* ``hpbft/vote/<height>`` — the prepare vote cast at a height (epoch, view,
  block hash), so a restarted seat never votes for two blocks at one height of
  one view;
* ``hpbft/prepared/<height>`` — the highest-view prepare certificate held at a
  height, with its block (the lock a view change must report).

Invariant: the host writes a ``Persist`` before executing any later effect of
the same list, so a vote or report is never sent before what it implies is
durable.

No I/O here: encoding and decoding only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from belep.encoding import (
    Value,
    decode,
    encode,
    expect_bool,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import ConfigError, ValidationError
from belep.ledger.block import (
    HASH_SIZE,
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    View,
)
from belep.ledger.config import (
    ConfigHistory,
    EpochConfig,
)
from belep.ledger.config_tx import (
    ReviveOrder,
)

__all__ = [
    "PREPARED_PREFIX",
    "STATE_KEY",
    "TIP_KEY",
    "VOTE_PREFIX",
    "DurableState",
    "decode_prepared",
    "decode_tip",
    "decode_vote",
    "encode_prepared",
    "encode_tip",
    "encode_vote",
    "prepared_key",
    "vote_key",
]

STATE_KEY = "hpbft/state"
TIP_KEY = "hpbft/tip"
VOTE_PREFIX = "hpbft/vote/"
PREPARED_PREFIX = "hpbft/prepared/"


def prepared_key(height: int) -> str:
    return f"{PREPARED_PREFIX}{height:012d}"


def vote_key(height: int) -> str:
    return f"{VOTE_PREFIX}{height:012d}"


def _epoch_to_wire(e: EpochConfig) -> dict[str, Value]:
    return {
        "epoch": e.epoch,
        "seats": list(e.seats),
        "standbys": list(e.standbys),
        "first": e.first_height,
        "last": e.last_height,
        "offset": e.primary_offset,
        "cause": e.cause,
    }


def _epoch_from_wire(value: Value) -> EpochConfig:
    m = expect_map(value, "epoch")
    expect_fields(
        m, "epoch", frozenset({"epoch", "seats", "standbys", "first", "last", "offset", "cause"})
    )
    last = m["last"]
    return EpochConfig(
        epoch=Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
        seats=tuple(NodeId(expect_str(s, "seat")) for s in expect_list(m["seats"], "seats")),
        standbys=tuple(
            NodeId(expect_str(s, "standby")) for s in expect_list(m["standbys"], "standbys")
        ),
        first_height=Height(expect_int(m["first"], "first", minimum=0)),
        last_height=None if last is None else Height(expect_int(last, "last", minimum=0)),
        primary_offset=expect_int(m["offset"], "offset", minimum=0),
        cause=expect_str(m["cause"], "cause"),
    )


def _pair(value: Value, what: str) -> tuple[Height, Digest]:
    items = expect_list(value, what)
    if len(items) != 2:
        raise ConfigError(f"{what} must be [height, hash]", found=len(items))
    return (
        Height(expect_int(items[0], what, minimum=0)),
        Digest(expect_bytes(items[1], what, size=HASH_SIZE)),
    )


@dataclass(frozen=True, slots=True)
class DurableState:
    """Everything in ``hpbft/state``."""

    history: ConfigHistory
    base: tuple[Height, Digest]
    view: View
    in_view_change: bool
    view_base: tuple[Height, Digest]
    designated: tuple[Digest, ...]
    delivered: tuple[Height, Digest]
    stable: QuorumCertificate | None
    reviving: ReviveOrder | None

    def encode(self) -> bytes:
        return encode(
            {
                "domain": self.history.domain,
                "epochs": [_epoch_to_wire(e) for e in self.history.epochs],
                "base": [self.base[0], self.base[1]],
                "view": self.view,
                "in_vc": self.in_view_change,
                "view_base": [self.view_base[0], self.view_base[1]],
                "designated": list(self.designated),
                "delivered": [self.delivered[0], self.delivered[1]],
                "stable": None if self.stable is None else self.stable.to_wire(),
                "reviving": None if self.reviving is None else self.reviving.to_wire(),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> DurableState:
        try:
            m = expect_map(decode(data), "hpbft state")
            expect_fields(
                m,
                "hpbft state",
                frozenset(
                    {
                        "domain",
                        "epochs",
                        "base",
                        "view",
                        "in_vc",
                        "view_base",
                        "designated",
                        "delivered",
                        "stable",
                        "reviving",
                    }
                ),
            )
            epochs = tuple(_epoch_from_wire(e) for e in expect_list(m["epochs"], "epochs"))
            if not epochs:
                raise ConfigError("persisted hpbft state has no epoch")
            stable = m["stable"]
            reviving = m["reviving"]
            return cls(
                history=ConfigHistory(DomainId(expect_str(m["domain"], "domain")), epochs),
                base=_pair(m["base"], "base"),
                view=View(expect_int(m["view"], "view", minimum=0)),
                in_view_change=expect_bool(m["in_vc"], "in_vc"),
                view_base=_pair(m["view_base"], "view_base"),
                designated=tuple(
                    Digest(expect_bytes(d, "designated", size=HASH_SIZE))
                    for d in expect_list(m["designated"], "designated")
                ),
                delivered=_pair(m["delivered"], "delivered"),
                stable=None if stable is None else QuorumCertificate.from_wire(stable),
                reviving=None if reviving is None else ReviveOrder.from_wire(reviving),
            )
        except ConfigError:
            raise
        except ValidationError as exc:
            raise ConfigError(f"unreadable persisted hpbft state: {exc.message}") from exc


def encode_tip(height: Height, digest: Digest) -> bytes:
    return encode([height, digest])


def decode_tip(data: bytes) -> tuple[Height, Digest]:
    try:
        return _pair(decode(data), "tip")
    except ValidationError as exc:
        raise ConfigError(f"unreadable persisted hpbft tip: {exc.message}") from exc


def encode_vote(epoch: Epoch, view: View, digest: Digest) -> bytes:
    return encode([epoch, view, digest])


def decode_vote(data: bytes) -> tuple[Epoch, View, Digest]:
    try:
        items = expect_list(decode(data), "vote")
        if len(items) != 3:
            raise ConfigError("persisted vote must be [epoch, view, hash]", found=len(items))
        return (
            Epoch(expect_int(items[0], "epoch", minimum=0)),
            View(expect_int(items[1], "view", minimum=0)),
            Digest(expect_bytes(items[2], "hash", size=HASH_SIZE)),
        )
    except ConfigError:
        raise
    except ValidationError as exc:
        raise ConfigError(f"unreadable persisted hpbft vote: {exc.message}") from exc


#: Encoded blocks by hash. Every seat of a domain persists the same blocks, and a
#: simulation runs all of them in one process: a bounded memo of a pure function
#: (the canonical encoding) that changes no result.
_ENCODED_BLOCKS: OrderedDict[Digest, bytes] = OrderedDict()
_ENCODED_BLOCKS_MAX = 512


def _encoded_block(block: Block) -> bytes:
    digest = block.block_hash
    data = _ENCODED_BLOCKS.get(digest)
    if data is None:
        data = encode(block.to_wire())
        _ENCODED_BLOCKS[digest] = data
        if len(_ENCODED_BLOCKS) > _ENCODED_BLOCKS_MAX:
            _ENCODED_BLOCKS.popitem(last=False)
    return data


def encode_prepared(certificate: QuorumCertificate, block: Block) -> bytes:
    return encode({"qc": certificate.to_wire(), "block": _encoded_block(block)})


def decode_prepared(data: bytes) -> tuple[QuorumCertificate, Block]:
    try:
        m = expect_map(decode(data), "hpbft prepared")
        expect_fields(m, "hpbft prepared", frozenset({"qc", "block"}))
        block = Block.from_wire(decode(expect_bytes(m["block"], "block")))
        return QuorumCertificate.from_wire(m["qc"]), block
    except ValidationError as exc:
        raise ConfigError(f"unreadable persisted prepared certificate: {exc.message}") from exc
