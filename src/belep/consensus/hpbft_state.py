"""HPBFT durable state: what a replica persists and how it reads it back after a restart.

Owns the persisted key layout of ``docs/spec/hpbft.md`` §Persistence and the
record :class:`DurableState`:

* ``hpbft/state`` — the configuration history, the current epoch's base, the
  view (and whether a view change is in progress), the view's base and
  designated chain, the delivered tip, the stable checkpoint certificate and
  the revival this node joined (if any);
* ``hpbft/votes`` — the prepare votes cast in the current view (so a
  restarted seat never votes for two blocks at one height of one view);
* ``hpbft/prepared/<height>`` — the highest-view prepare certificate held at a
  height, with its block (the lock a view change must report).

Invariant: the host writes a ``Persist`` before executing any later effect of
the same list, so a vote or report is never sent before what it implies is
durable.

No I/O here: encoding and decoding only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from belep.consensus.hpbft_config import ConfigHistory, EpochConfig, ReviveOrder
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

__all__ = [
    "PREPARED_PREFIX",
    "STATE_KEY",
    "VOTES_KEY",
    "DurableState",
    "decode_prepared",
    "decode_votes",
    "encode_prepared",
    "encode_votes",
    "prepared_key",
]

STATE_KEY = "hpbft/state"
VOTES_KEY = "hpbft/votes"
PREPARED_PREFIX = "hpbft/prepared/"


def prepared_key(height: int) -> str:
    return f"{PREPARED_PREFIX}{height:012d}"


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


def encode_votes(epoch: Epoch, view: View, votes: Mapping[Height, Digest]) -> bytes:
    return encode(
        {"epoch": epoch, "view": view, "votes": [[h, d] for h, d in sorted(votes.items())]}
    )


def decode_votes(data: bytes) -> tuple[Epoch, View, dict[Height, Digest]]:
    try:
        m = expect_map(decode(data), "hpbft votes")
        expect_fields(m, "hpbft votes", frozenset({"epoch", "view", "votes"}))
        votes = dict(_pair(item, "vote") for item in expect_list(m["votes"], "votes"))
        return (
            Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            View(expect_int(m["view"], "view", minimum=0)),
            votes,
        )
    except ValidationError as exc:
        raise ConfigError(f"unreadable persisted hpbft votes: {exc.message}") from exc


def encode_prepared(certificate: QuorumCertificate, block: Block) -> bytes:
    return encode({"qc": certificate.to_wire(), "block": block.to_wire()})


def decode_prepared(data: bytes) -> tuple[QuorumCertificate, Block]:
    try:
        m = expect_map(decode(data), "hpbft prepared")
        expect_fields(m, "hpbft prepared", frozenset({"qc", "block"}))
        return QuorumCertificate.from_wire(m["qc"]), Block.from_wire(m["block"])
    except ValidationError as exc:
        raise ConfigError(f"unreadable persisted prepared certificate: {exc.message}") from exc
