"""Configuration transactions: the chain's own record of who may certify it.

Owns the three configuration changes of ``docs/spec/ledger.md`` §Configuration
(defined by HPBFT, ``docs/spec/hpbft.md`` §2 and §10) and their framing:

* :class:`SubstituteSeat` — a domain gives a seat to a standby (committed by
  the domain itself);
* :class:`ReviveChild` — a parent domain's decision to restart a stalled
  child in a new epoch (committed by the *parent*), and :class:`ReviveOrder`,
  the decision with the proof that the parent committed it;
* :class:`RevivalRecord` — the child's on-chain record of a revival (in the
  revived epoch's first fresh block).

**Framing.** Every configuration change travels as a signed
:class:`~belep.ledger.envelope.Envelope` like any other transaction: the
envelope ``kind`` names the change (:data:`CONFIG_KINDS`), its ``body`` holds
the change's fields, and it is signed by the node that put it in a block —
the block's proposer for ``substitute-seat`` and ``revival``, a voter of the
committing (parent) domain for ``revive-child`` (that domain's transaction
policy checks it before ordering, the child again when it verifies the
order). :func:`find_config_tx` checks the proposer's signature on the
chain's own changes when given the members' keys. There is one framing for
every transaction on every chain; nothing on chain is unsigned.

Invariants: :func:`decode_config_tx` accepts exactly the payloads
:func:`config_transaction` produces (strict envelope and body decoding); a
block carries at most one configuration transaction (:func:`find_config_tx`).

No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from belep.crypto import PrivateKey, PublicKey
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
from belep.errors import ChainError, EncodingError, ValidationError
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
from belep.ledger.certificate import SignatureCache, check_quorum_signatures, check_statement
from belep.ledger.envelope import Envelope, parse_envelope, sign_envelope
from belep.ledger.genesis import bft_quorum
from belep.ledger.merkle import InclusionProof, hash_leaf, inclusion_proof

__all__ = [
    "COMMIT_KIND",
    "CONFIG_KINDS",
    "ConfigTx",
    "RevivalRecord",
    "ReviveChild",
    "ReviveOrder",
    "SubstituteSeat",
    "config_transaction",
    "decode_config_tx",
    "find_config_tx",
    "is_config_payload",
    "is_own_config_payload",
    "read_config_tx",
    "revive_order_from_block",
]

#: The certificate kind that commits a block of a BFT domain (see ``genesis.PROTOCOLS``).
COMMIT_KIND = "commit"

SUBSTITUTE_KIND = "substitute-seat"
REVIVE_CHILD_KIND = "revive-child"
REVIVAL_KIND = "revival"
#: Envelope kinds of configuration transactions.
CONFIG_KINDS = frozenset({SUBSTITUTE_KIND, REVIVE_CHILD_KIND, REVIVAL_KIND})
#: The kinds that change the configuration of the chain that carries them (a revive-child is a
#: decision about another domain, the child).
OWN_CONFIG_KINDS = frozenset({SUBSTITUTE_KIND, REVIVAL_KIND})
#: Canonical bytes of ``"kind": <config kind>`` inside an envelope: a payload holding none of
#: them is not a configuration transaction (a quick filter before a full parse).
_KIND_MARKS = tuple(encode("kind") + encode(kind) for kind in sorted(CONFIG_KINDS))
#: One search for any of them (three times faster than three ``in`` tests: every block's
#: transactions are scanned on every node, several times).
_KIND_MARK_SEARCH = re.compile(b"|".join(re.escape(mark) for mark in _KIND_MARKS)).search


#: A change's fields: an envelope body, or a map decoded from a replica's own state.
Body = Mapping[str, Value] | Mapping[Key, Value]


def _node_list(value: Value, what: str) -> tuple[NodeId, ...]:
    nodes = tuple(NodeId(expect_str(item, what)) for item in expect_list(value, what))
    if len(set(nodes)) != len(nodes):
        raise ChainError(f"{what}: a node is listed twice", found=list(nodes))
    return nodes


# --------------------------------------------------------------------------
# The changes
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

    kind = SUBSTITUTE_KIND

    def to_body(self) -> dict[str, Value]:
        return {
            "domain": self.domain,
            "epoch": self.epoch,
            "seat": self.seat,
            "standby": self.standby,
        }

    @classmethod
    def from_body(cls, m: Body) -> SubstituteSeat:
        expect_fields(m, SUBSTITUTE_KIND, frozenset({"domain", "epoch", "seat", "standby"}))
        return cls(
            DomainId(expect_str(m["domain"], "domain")),
            Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            NodeId(expect_str(m["seat"], "seat")),
            NodeId(expect_str(m["standby"], "standby")),
        )


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

    kind = REVIVE_CHILD_KIND

    def to_body(self) -> dict[str, Value]:
        return {
            "domain": self.domain,
            "epoch": self.epoch,
            "seats": list(self.seats),
            "failed": list(self.failed),
        }

    @classmethod
    def from_body(cls, m: Body) -> ReviveChild:
        expect_fields(m, REVIVE_CHILD_KIND, frozenset({"domain", "epoch", "seats", "failed"}))
        return cls(
            DomainId(expect_str(m["domain"], "domain")),
            Epoch(expect_int(m["epoch"], "epoch", minimum=0)),
            _node_list(m["seats"], "seats"),
            _node_list(m["failed"], "failed"),
        )


@dataclass(frozen=True, slots=True)
class ReviveOrder:
    """A :class:`ReviveChild` with the proof that the parent domain committed it.

    ``payload`` is the decision's transaction exactly as the parent committed
    it (a signed envelope); the proof is the parent block's header, the RFC
    6962 inclusion proof of that payload in the header's ``tx_root``, and the
    parent's commit certificate over that header.
    """

    payload: bytes
    header: BlockHeader
    inclusion: InclusionProof
    certificate: QuorumCertificate

    @property
    def decision(self) -> ReviveChild:
        change = decode_config_tx(self.payload)
        if not isinstance(change, ReviveChild):
            raise ChainError("revive order does not carry a revive-child decision")
        return change

    def to_wire(self) -> dict[str, Value]:
        return {
            "decision": self.payload,
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
        order = cls(
            expect_bytes(m["decision"], "decision"),
            BlockHeader.from_wire(m["header"]),
            InclusionProof.from_wire(m["inclusion"]),
            QuorumCertificate.from_wire(m["certificate"]),
        )
        order.decision  # noqa: B018 - decodes strictly: raises for anything but a revive-child
        return order

    def verify(
        self,
        *,
        parent: DomainId,
        parent_voters: Mapping[NodeId, PublicKey],
        cache: SignatureCache,
    ) -> None:
        """Raise unless the parent domain committed this decision.

        Checks the header is the parent's, the decision's payload is included
        in its transactions root, the decision is signed by one of
        ``parent_voters``, and the certificate is a parent commit certificate
        over the header with a quorum of ``parent_voters``.
        """
        if self.header.domain != parent:
            raise ChainError(
                "revive order from a block of another domain",
                expected=parent,
                found=self.header.domain,
            )
        self.inclusion.verify(hash_leaf(self.payload), self.header.tx_root)
        _, envelope = read_config_tx(self.payload)
        _check_author(envelope, frozenset(parent_voters.values()), "a voter of the parent")
        s = self.certificate.statement
        if s.block_hash != self.header.block_hash or s.height != self.header.height:
            raise ChainError(
                "revive order certificate certifies another parent block",
                expected=(self.header.height, self.header.block_hash),
                found=(s.height, s.block_hash),
            )
        check_statement(self.certificate, kind=COMMIT_KIND, domain=parent)
        check_quorum_signatures(
            self.certificate,
            voters=parent_voters,
            quorum=bft_quorum(len(parent_voters)),
            cache=cache,
        )


def revive_order_from_block(
    block: Block, decision: ReviveChild, certificate: QuorumCertificate
) -> ReviveOrder:
    """The order proving that the parent's committed ``block`` carries ``decision``.

    Raises :class:`ChainError` if the block does not carry the decision.
    """
    payloads = [tx.payload for tx in block.transactions]
    for index, payload in enumerate(payloads):
        if is_config_payload(payload) and decode_config_tx(payload) == decision:
            proof = inclusion_proof([hash_leaf(p) for p in payloads], index)
            return ReviveOrder(payload, block.header, proof, certificate)
    raise ChainError(
        "the parent block does not carry this decision", where=f"height {block.height}"
    )


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

    kind = REVIVAL_KIND

    def to_body(self) -> dict[str, Value]:
        return {
            "order": self.order.to_wire(),
            "base_height": self.base_height,
            "base_hash": self.base_hash,
            "top_height": self.top_height,
            "top_hash": self.top_hash,
        }

    @classmethod
    def from_body(cls, m: Body) -> RevivalRecord:
        expect_fields(
            m,
            REVIVAL_KIND,
            frozenset({"order", "base_height", "base_hash", "top_height", "top_hash"}),
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

    def encode(self) -> bytes:
        """The record's canonical bytes without a signature (for a replica's own state)."""
        return encode(self.to_body())

    @classmethod
    def decode(cls, data: bytes) -> RevivalRecord:
        return cls.from_body(expect_map(decode(data), REVIVAL_KIND))


ConfigTx = SubstituteSeat | ReviveChild | RevivalRecord
_DECODERS: dict[str, Callable[[Body], ConfigTx]] = {
    SUBSTITUTE_KIND: SubstituteSeat.from_body,
    REVIVE_CHILD_KIND: ReviveChild.from_body,
    REVIVAL_KIND: RevivalRecord.from_body,
}


# --------------------------------------------------------------------------
# Framing: signed envelopes
# --------------------------------------------------------------------------


def config_transaction(change: ConfigTx, key: PrivateKey, *, timestamp_ms: int) -> Transaction:
    """``change`` as a transaction: an envelope of its kind signed by ``key``."""
    envelope = sign_envelope(key, change.kind, change.to_body(), timestamp_ms=timestamp_ms)
    return envelope.to_transaction()


def is_config_payload(payload: bytes) -> bool:
    """True if ``payload`` is an envelope of a configuration kind (structure only)."""
    if _KIND_MARK_SEARCH(payload) is None:
        return False
    try:
        return parse_envelope(payload).kind in CONFIG_KINDS
    except ValidationError:
        return False


def read_config_tx(payload: bytes) -> tuple[ConfigTx, Envelope]:
    """Parse a configuration transaction strictly (its signature is not checked here)."""
    try:
        envelope = parse_envelope(payload)
    except ValidationError as exc:
        raise ChainError(f"malformed configuration transaction: {exc.message}") from exc
    decoder = _DECODERS.get(envelope.kind)
    if decoder is None:
        raise ChainError(
            "not a configuration transaction", expected=sorted(CONFIG_KINDS), found=envelope.kind
        )
    if envelope.cids:
        raise ChainError("a configuration transaction references no file", found=envelope.cids)
    try:
        return decoder(envelope.body), envelope
    except ChainError:
        raise
    except (EncodingError, ValidationError) as exc:
        raise ChainError(f"malformed {envelope.kind} transaction: {exc.message}") from exc


def decode_config_tx(payload: bytes) -> ConfigTx:
    """The change a configuration payload carries; raises :class:`ChainError`."""
    return read_config_tx(payload)[0]


def _check_author(envelope: Envelope, allowed: frozenset[PublicKey], who: str) -> None:
    if envelope.author not in allowed:
        raise ChainError(
            f"{envelope.kind} transaction not signed by {who}",
            found=envelope.author.fingerprint(),
        )
    try:
        envelope.verify()
    except ValidationError as exc:
        raise ChainError(f"{envelope.kind} transaction: {exc.message}") from exc


def find_config_tx(
    block: Block, *, keys: Mapping[NodeId, PublicKey] | None = None
) -> SubstituteSeat | RevivalRecord | None:
    """The block's own configuration change (``substitute-seat`` or ``revival``), if any;
    raises if it carries more than one.

    A ``revive-child`` is not one: it changes the child, which checks it
    (:meth:`ReviveOrder.verify`). With ``keys`` (every member and observer of
    the domain), also checks that the block's proposer signed the change.
    """
    found: tuple[SubstituteSeat | RevivalRecord, Envelope] | None = None
    for tx in block.transactions:
        if not is_config_payload(tx.payload):
            continue
        change, envelope = read_config_tx(tx.payload)
        if isinstance(change, ReviveChild):
            continue
        if found is not None:
            raise ChainError(
                "block carries more than one configuration change",
                where=f"height {block.height}",
            )
        found = (change, envelope)
    if found is None:
        return None
    change, envelope = found
    if keys is not None:
        proposer = keys.get(block.header.proposer)
        allowed = frozenset() if proposer is None else frozenset({proposer})
        _check_author(envelope, allowed, f"the block's proposer {block.header.proposer}")
    return change


def is_own_config_payload(payload: bytes) -> bool:
    """True if ``payload`` changes the configuration of the chain carrying it."""
    return is_config_payload(payload) and parse_envelope(payload).kind in OWN_CONFIG_KINDS
