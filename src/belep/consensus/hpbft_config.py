"""HPBFT configuration: seats, standbys, epochs, and the transactions that change them.

Owns, for the HPBFT protocol (``docs/spec/hpbft.md`` §Epochs):

* the canonical payloads of the **configuration transactions**: a
  :class:`SubstituteSeat` (committed by the domain itself), a
  :class:`ReviveChild` decision (committed by the *parent* domain), and a
  :class:`RevivalRecord` (the child's on-chain record of a revival, carrying
  the parent's decision with its proof of commitment). Every configuration
  payload starts with :data:`CONFIG_MAGIC` followed by one canonical CBOR map,
  so it can never be mistaken for an application transaction;
* :class:`EpochConfig` — one epoch's fixed seat set, standby order and the
  heights its certificates may certify — and :class:`ConfigHistory`, the
  epochs from genesis, replayed block by block (:meth:`ConfigHistory.after_block`);
* :func:`genesis_history` — epoch 0 (replaying a chain from it is
  :mod:`belep.consensus.hpbft_verify`).

Invariants:

* an epoch's seat set never changes; a configuration change always opens a
  new epoch whose number is one higher;
* a :class:`SubstituteSeat` committed at height ``h`` closes its epoch at
  ``h`` and opens the next one at ``h + 1``; a revival closes the stalled epoch
  at the revival's base height and opens the next one at the revival's first
  re-certified height (the two ranges may overlap: both epochs certify the same
  blocks there, see the spec);
* a standby never counts as a voter of an epoch in which it holds no seat.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from belep.consensus.certificates import SignatureCache, verify_certificate
from belep.crypto import PublicKey
from belep.encoding import (
    Key,
    Value,
    decode,
    encode,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import ChainError, ConfigError, EncodingError, ValidationError
from belep.ledger.block import (
    HASH_SIZE,
    Block,
    BlockHeader,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
)
from belep.ledger.genesis import bft_quorum as ledger_bft_quorum
from belep.ledger.merkle import InclusionProof, hash_leaf, inclusion_proof

__all__ = [
    "COMMIT_KIND",
    "CONFIG_MAGIC",
    "PREPARE_KIND",
    "ConfigHistory",
    "ConfigTx",
    "EpochConfig",
    "RevivalRecord",
    "ReviveChild",
    "ReviveOrder",
    "SubstituteSeat",
    "bft_quorum",
    "decode_config_tx",
    "find_config_tx",
    "genesis_history",
    "is_config_payload",
    "revive_order_from_block",
]

#: Prefix of every configuration transaction payload (never a valid CBOR head byte sequence
#: of an application transaction, which starts with its own magic or a CBOR map).
CONFIG_MAGIC = b"BELEP-HPBFT-CONFIG/1\n"
PREPARE_KIND = "prepare"
COMMIT_KIND = "commit"


def bft_quorum(n: int) -> int:
    """Seat quorum: :func:`belep.ledger.genesis.bft_quorum` (``2f + 1`` when ``n = 3f + 1``)."""
    return ledger_bft_quorum(n)


def _node_list(value: Value, what: str) -> tuple[NodeId, ...]:
    nodes = tuple(NodeId(expect_str(item, what)) for item in expect_list(value, what))
    if len(set(nodes)) != len(nodes):
        raise ChainError(f"{what}: a node is listed twice", found=list(nodes))
    return nodes


# --------------------------------------------------------------------------
# Configuration transactions
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubstituteSeat:
    """Give ``seat``'s seat to ``standby`` from the block after the one carrying this.

    ``epoch`` is the epoch in which it is proposed (and committed).
    """

    domain: DomainId
    epoch: Epoch
    seat: NodeId
    standby: NodeId

    def to_wire(self) -> dict[str, Value]:
        return {
            "type": "substitute-seat",
            "domain": self.domain,
            "epoch": self.epoch,
            "seat": self.seat,
            "standby": self.standby,
        }

    @classmethod
    def from_wire(cls, m: dict[Key, Value]) -> SubstituteSeat:
        expect_fields(
            m, "substitute-seat", frozenset({"type", "domain", "epoch", "seat", "standby"})
        )
        return cls(
            DomainId(expect_str(m["domain"], "domain")),
            Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            NodeId(expect_str(m["seat"], "seat")),
            NodeId(expect_str(m["standby"], "standby")),
        )

    def payload(self) -> bytes:
        return CONFIG_MAGIC + encode(self.to_wire())

    def transaction(self) -> Transaction:
        return Transaction(self.payload())


@dataclass(frozen=True, slots=True)
class ReviveChild:
    """The parent's decision: restart ``domain``, stalled in ``epoch``, with ``seats``.

    ``failed`` are the old seats the parent declares crashed (never more than
    ``2f`` of the stalled epoch's seats; they get no seat in the new epoch).
    """

    domain: DomainId
    epoch: Epoch
    seats: tuple[NodeId, ...]
    failed: tuple[NodeId, ...]

    def to_wire(self) -> dict[str, Value]:
        return {
            "type": "revive-child",
            "domain": self.domain,
            "epoch": self.epoch,
            "seats": list(self.seats),
            "failed": list(self.failed),
        }

    @classmethod
    def from_wire(cls, m: dict[Key, Value]) -> ReviveChild:
        expect_fields(m, "revive-child", frozenset({"type", "domain", "epoch", "seats", "failed"}))
        return cls(
            DomainId(expect_str(m["domain"], "domain")),
            Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            _node_list(m["seats"], "seats"),
            _node_list(m["failed"], "failed"),
        )

    def payload(self) -> bytes:
        return CONFIG_MAGIC + encode(self.to_wire())

    def transaction(self) -> Transaction:
        return Transaction(self.payload())


@dataclass(frozen=True, slots=True)
class ReviveOrder:
    """A :class:`ReviveChild` with the proof that the parent domain committed it.

    The proof is the parent block's header, the RFC 6962 inclusion proof of the
    decision's payload in the header's ``tx_root``, and the parent's commit
    certificate over that header.
    """

    decision: ReviveChild
    header: BlockHeader
    inclusion: InclusionProof
    certificate: QuorumCertificate

    def to_wire(self) -> dict[str, Value]:
        return {
            "decision": self.decision.payload(),
            "header": self.header.to_wire(),
            "inclusion": self.inclusion.to_wire(),
            "certificate": self.certificate.to_wire(),
        }

    @classmethod
    def from_wire(cls, value: Value) -> ReviveOrder:
        m = expect_map(value, "revive order")
        expect_fields(
            m, "revive order", frozenset({"decision", "header", "inclusion", "certificate"})
        )
        decision = decode_config_tx(expect_bytes(m["decision"], "decision"))
        if not isinstance(decision, ReviveChild):
            raise ChainError("revive order does not carry a revive-child decision")
        return cls(
            decision,
            BlockHeader.from_wire(m["header"]),
            InclusionProof.from_wire(m["inclusion"]),
            QuorumCertificate.from_wire(m["certificate"]),
        )

    def verify(
        self,
        *,
        parent: DomainId,
        parent_voters: Mapping[NodeId, PublicKey],
        cache: SignatureCache,
    ) -> None:
        """Raise unless the parent domain committed this decision.

        Checks the header is the parent's, the decision's payload is included
        in its transactions root, and the certificate is a parent commit
        certificate over the header with ``2f+1`` of ``parent_voters``.
        """
        if self.header.domain != parent:
            raise ChainError(
                "revive order from a block of another domain",
                expected=parent,
                found=self.header.domain,
            )
        self.inclusion.verify(hash_leaf(self.decision.payload()), self.header.tx_root)
        s = self.certificate.statement
        if s.block_hash != self.header.block_hash or s.height != self.header.height:
            raise ChainError(
                "revive order certificate certifies another parent block",
                expected=(self.header.height, self.header.block_hash),
                found=(s.height, s.block_hash),
            )
        verify_certificate(
            self.certificate,
            voters=parent_voters,
            quorum=bft_quorum(len(parent_voters)),
            cache=cache,
            kind=COMMIT_KIND,
            domain=parent,
        )


def revive_order_from_block(
    block: Block, decision: ReviveChild, certificate: QuorumCertificate
) -> ReviveOrder:
    """The order proving that the parent's committed ``block`` carries ``decision``.

    Raises :class:`ChainError` if the block does not carry the decision.
    """
    payload = decision.payload()
    payloads = [tx.payload for tx in block.transactions]
    if payload not in payloads:
        raise ChainError(
            "the parent block does not carry this decision", where=f"height {block.height}"
        )
    index = payloads.index(payload)
    proof = inclusion_proof([hash_leaf(p) for p in payloads], index)
    return ReviveOrder(decision, block.header, proof, certificate)


@dataclass(frozen=True, slots=True)
class RevivalRecord:
    """The child's on-chain record of a revival (first fresh block of the revived epoch).

    The revived epoch starts above ``base_height`` (the highest stable
    checkpoint reported, block ``base_hash``), re-certifies the prepared chain
    selected from the reports up to ``top_height`` (block ``top_hash``) and
    certifies everything above. The stalled epoch certifies nothing above
    ``top_height``.
    """

    order: ReviveOrder
    base_height: Height
    base_hash: Digest
    top_height: Height
    top_hash: Digest

    def to_wire(self) -> dict[str, Value]:
        return {
            "type": "revival",
            "order": self.order.to_wire(),
            "base_height": self.base_height,
            "base_hash": self.base_hash,
            "top_height": self.top_height,
            "top_hash": self.top_hash,
        }

    @classmethod
    def from_wire(cls, m: dict[Key, Value]) -> RevivalRecord:
        expect_fields(
            m,
            "revival",
            frozenset({"type", "order", "base_height", "base_hash", "top_height", "top_hash"}),
        )
        record = cls(
            ReviveOrder.from_wire(m["order"]),
            Height(expect_int(m["base_height"], "base_height", minimum=0)),
            Digest(expect_bytes(m["base_hash"], "base_hash", size=HASH_SIZE)),
            Height(expect_int(m["top_height"], "top_height", minimum=0)),
            Digest(expect_bytes(m["top_hash"], "top_hash", size=HASH_SIZE)),
        )
        if record.top_height < record.base_height:
            raise ChainError(
                "revival top below its base",
                expected=f">= {record.base_height}",
                found=record.top_height,
            )
        return record

    def payload(self) -> bytes:
        return CONFIG_MAGIC + encode(self.to_wire())

    def transaction(self) -> Transaction:
        return Transaction(self.payload())


ConfigTx = SubstituteSeat | ReviveChild | RevivalRecord


def is_config_payload(payload: bytes) -> bool:
    """True if ``payload`` claims to be a configuration transaction."""
    return payload.startswith(CONFIG_MAGIC)


def decode_config_tx(payload: bytes) -> ConfigTx:
    """Parse a configuration payload strictly; raises :class:`ChainError`."""
    if not is_config_payload(payload):
        raise ChainError("not a configuration transaction", expected="config magic")
    try:
        fields = expect_map(decode(payload[len(CONFIG_MAGIC) :]), "configuration transaction")
        kind = expect_str(fields.get("type"), "configuration type")
        if kind == "substitute-seat":
            return SubstituteSeat.from_wire(fields)
        if kind == "revive-child":
            return ReviveChild.from_wire(fields)
        if kind == "revival":
            return RevivalRecord.from_wire(fields)
    except ChainError:
        raise
    except (EncodingError, ValidationError) as exc:
        raise ChainError(f"malformed configuration transaction: {exc.message}") from exc
    raise ChainError(
        "unknown configuration transaction type",
        expected=["substitute-seat", "revive-child", "revival"],
        found=kind,
    )


def find_config_tx(block: Block) -> ConfigTx | None:
    """The block's configuration transaction, if any; raises if it carries more than one."""
    found: ConfigTx | None = None
    for tx in block.transactions:
        if is_config_payload(tx.payload):
            if found is not None:
                raise ChainError(
                    "block carries more than one configuration transaction",
                    where=f"height {block.height}",
                )
            found = decode_config_tx(tx.payload)
    return found


# --------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpochConfig:
    """One epoch: a fixed seat set, the standby order, and the heights it certifies."""

    epoch: Epoch
    seats: tuple[NodeId, ...]
    standbys: tuple[NodeId, ...]
    first_height: Height
    last_height: Height | None = None  # set once a later configuration closed the epoch
    primary_offset: int = 0
    cause: str = "genesis"  # "genesis" | "substitute" | "revive"

    @property
    def n(self) -> int:
        return len(self.seats)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Certificates of this epoch need this many distinct seats (:func:`bft_quorum`)."""
        return bft_quorum(self.n)

    def primary(self, view: int) -> NodeId:
        """The primary of ``view`` in this epoch."""
        return self.seats[(self.primary_offset + view) % self.n]

    def holds_seat(self, node: NodeId) -> bool:
        return node in self.seats

    def covers(self, height: int) -> bool:
        """May this epoch's certificates certify the block at ``height``?"""
        if height < self.first_height:
            return False
        return self.last_height is None or height <= self.last_height

    def voter_keys(self, keys: Mapping[NodeId, PublicKey]) -> dict[NodeId, PublicKey]:
        return {seat: keys[seat] for seat in self.seats}

    def next_standby(self, usable: Iterable[NodeId] | None = None) -> NodeId | None:
        """The first standby (in order) not holding a seat, restricted to ``usable`` if given."""
        allowed = None if usable is None else set(usable)
        for node in self.standbys:
            if node not in self.seats and (allowed is None or node in allowed):
                return node
        return None

    def check_substitution(self, change: SubstituteSeat, domain: DomainId) -> None:
        """Raise :class:`ChainError` unless ``change`` is valid as the next change of this epoch."""
        if change.domain != domain or change.epoch != self.epoch:
            raise ChainError(
                "substitution for another domain or epoch",
                expected=(domain, self.epoch),
                found=(change.domain, change.epoch),
            )
        if change.seat not in self.seats:
            raise ChainError("substitution of a node holding no seat", found=change.seat)
        if change.standby not in self.standbys or change.standby in self.seats:
            raise ChainError(
                "substitute is not an unseated standby",
                expected=list(self.standbys),
                found=change.standby,
            )

    def substituted(self, change: SubstituteSeat, height: Height, proposer: NodeId) -> EpochConfig:
        """The next epoch after ``change`` committed at ``height``."""
        seats = tuple(change.standby if s == change.seat else s for s in self.seats)
        standbys = (*(s for s in self.standbys if s != change.standby), change.seat)
        offset = seats.index(proposer) if proposer in seats else 0
        return EpochConfig(
            epoch=Epoch(self.epoch + 1),
            seats=seats,
            standbys=standbys,
            first_height=Height(height + 1),
            primary_offset=offset,
            cause="substitute",
        )


@dataclass(frozen=True, slots=True)
class ConfigHistory:
    """Every epoch from genesis, oldest first; the last one is current."""

    domain: DomainId
    epochs: tuple[EpochConfig, ...]

    @property
    def current(self) -> EpochConfig:
        return self.epochs[-1]

    def epoch(self, number: int) -> EpochConfig | None:
        if 0 <= number < len(self.epochs) and self.epochs[number].epoch == number:
            return self.epochs[number]
        return None

    def for_certificate(self, height: int, epoch: int) -> EpochConfig:
        """The epoch whose seats must have signed a certificate of ``epoch`` at ``height``."""
        config = self.epoch(epoch)
        if config is None:
            raise ChainError(
                "certificate of an unknown epoch",
                expected=f"<= {self.current.epoch}",
                found=epoch,
                where=f"height {height}",
            )
        if not config.covers(height):
            raise ChainError(
                "certificate of an epoch that does not cover this height",
                expected=(config.first_height, config.last_height),
                found=height,
                where=f"epoch {epoch}",
            )
        return config

    def after_block(self, block: Block) -> ConfigHistory:
        """The history after ``block`` was committed (a new epoch if it substitutes a seat).

        A revival record applies here only if the replay did not apply it where
        the revived epoch began (its parent proof must have been verified).
        """
        change = find_config_tx(block)
        if isinstance(change, RevivalRecord):
            # Already applied where the revived epoch began, unless the replay skipped it.
            if change.order.decision.epoch == self.current.epoch:
                return self.with_revival(change)
            return self
        if not isinstance(change, SubstituteSeat):
            return self
        current = self.current
        if block.header.epoch != current.epoch:
            raise ChainError(
                "substitution in a block of another epoch",
                expected=current.epoch,
                found=block.header.epoch,
                where=f"height {block.height}",
            )
        current.check_substitution(change, self.domain)
        closed = replace(current, last_height=block.height)
        opened = current.substituted(change, block.height, block.header.proposer)
        return ConfigHistory(self.domain, (*self.epochs[:-1], closed, opened))

    def with_revival(self, record: RevivalRecord) -> ConfigHistory:
        """The history after a revival (the decision must already be verified)."""
        decision = record.order.decision
        current = self.current
        check_revival(current, decision, self.domain)
        closed = replace(current, last_height=record.top_height)
        seats = decision.seats
        standbys = tuple(n for n in (*current.standbys, *current.seats) if n not in seats)
        opened = EpochConfig(
            epoch=Epoch(current.epoch + 1),
            seats=seats,
            standbys=standbys,
            first_height=Height(record.base_height + 1),
            primary_offset=0,
            cause="revive",
        )
        return ConfigHistory(self.domain, (*self.epochs[:-1], closed, opened))


def check_revival(current: EpochConfig, decision: ReviveChild, domain: DomainId) -> None:
    """Raise unless ``decision`` may revive ``current`` (the enforced assumptions)."""
    if decision.domain != domain:
        raise ChainError("revival of another domain", expected=domain, found=decision.domain)
    if decision.epoch != current.epoch:
        raise ChainError(
            "revival of an epoch that is not the current one",
            expected=current.epoch,
            found=decision.epoch,
        )
    if not decision.seats:
        raise ChainError("revival without seats", expected=">= 1 seat", found=0)
    known = set(current.seats) | set(current.standbys)
    unknown = sorted(set(decision.seats) - known)
    if unknown:
        raise ChainError("revival seats a node outside the domain", found=unknown)
    if not set(decision.failed) <= set(current.seats):
        raise ChainError(
            "revival declares failed a node holding no seat",
            expected=list(current.seats),
            found=list(decision.failed),
        )
    if len(decision.failed) > 2 * current.f:
        raise ChainError(
            "revival declares more than 2f seats failed",
            expected=f"<= {2 * current.f}",
            found=len(decision.failed),
        )
    if set(decision.failed) & set(decision.seats):
        raise ChainError("revival seats a node it declares failed", found=list(decision.failed))


def genesis_history(
    domain: DomainId, members: tuple[NodeId, ...], observers: tuple[NodeId, ...]
) -> ConfigHistory:
    """Epoch 0: the local validators hold the seats, the parent's validators stand by."""
    if not members:
        raise ConfigError("hpbft needs at least one seat", expected=">= 1", found=0)
    nodes = (*members, *observers)
    if len(set(nodes)) != len(nodes):
        raise ConfigError("a node is both seat and standby, or listed twice", found=list(nodes))
    return ConfigHistory(domain, (EpochConfig(Epoch(0), members, observers, Height(1)),))
