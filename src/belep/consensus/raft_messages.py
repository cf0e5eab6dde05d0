"""Raft's wire messages: frozen records with a strict canonical wire form.

Owns the seven message types of :mod:`belep.consensus.raft` (see
``docs/spec/raft.md`` §Messages) and their codecs. Every message is a frozen,
slotted dataclass; ``to_wire()`` gives a map with a ``"type"`` tag that
:func:`decode_raft_message` dispatches on, and ``from_wire`` accepts exactly
the fields its type has (the conventions and helpers of
:mod:`belep.consensus.messages`; :mod:`belep.consensus.registry` merges the
decoders of every protocol).

Invariants (checked in ``__post_init__``, so a malformed message cannot be
constructed, whether decoded from bytes or built in memory):

* terms and heights are non-negative integers (``bool`` is not an integer);
* a message never names a log position whose term exceeds the message's term;
* :class:`AppendEntries` carries consecutive blocks starting right after
  ``prev_log_index``, hash-linked to one another, with non-decreasing terms
  between ``prev_log_term`` and ``term``; its certificates are in strictly
  increasing height order;
* :class:`AppendResponse` signatures are in strictly increasing height order.

The sender of a message is not a field: the host authenticates it and names
it in :class:`~belep.consensus.types.Receive`.

A Raft *term* is the block header's ``view`` field: a log entry is one block,
and the entry's term is ``block.header.view``.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from belep.consensus.messages import (
    block_from_wire,
    message_fields,
    signature_from_wire,
    tagged,
    txs_from_wire,
)
from belep.encoding import (
    Value,
    decode,
    encode,
    expect_bool,
    expect_bytes,
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
    Height,
    QuorumCertificate,
    Transaction,
    View,
)

#: A Raft term. It is stored in (and equal to) the ``view`` field of the blocks a leader creates.
Term: TypeAlias = View

#: Most transactions one :class:`ForwardRequests` may carry.
MAX_FORWARD_TXS = 10_000


def entry_term(block: Block) -> Term:
    """The term of the log entry that is ``block``."""
    return block.header.view


def _check_count(value: object, what: str) -> None:
    if type(value) is not int or value < 0:
        raise SchemaError(f"{what} must be a non-negative integer", found=value)


def _check_not_above(low: int, high: int, what: str) -> None:
    if low > high:
        raise SchemaError(f"{what} is above the message term", expected=f"<= {high}", found=low)


@dataclass(frozen=True, slots=True)
class RequestVote:
    """Ask for a vote (``pre_vote=False``, thesis §3.4) or a pre-vote (thesis §9.6).

    For a pre-vote, ``term`` is the term the sender *would* campaign in
    (its current term + 1); neither side changes its term for a pre-vote.
    """

    TAG: ClassVar[str] = "raft/request-vote"

    term: Term
    last_log_index: Height
    last_log_term: Term
    pre_vote: bool

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        _check_count(self.last_log_index, "last_log_index")
        _check_count(self.last_log_term, "last_log_term")
        if type(self.pre_vote) is not bool:
            raise SchemaError("pre_vote must be a bool", found=self.pre_vote)
        _check_not_above(self.last_log_term, self.term, "last_log_term")

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "term": self.term,
                "last_log_index": self.last_log_index,
                "last_log_term": self.last_log_term,
                "pre_vote": self.pre_vote,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> RequestVote:
        m = message_fields(
            value, cls.TAG, frozenset({"term", "last_log_index", "last_log_term", "pre_vote"})
        )
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            last_log_index=Height(expect_int(m["last_log_index"], "last_log_index", minimum=0)),
            last_log_term=Term(expect_int(m["last_log_term"], "last_log_term", minimum=0)),
            pre_vote=expect_bool(m["pre_vote"], "pre_vote"),
        )


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """Answer to :class:`RequestVote`. For a granted pre-vote ``term`` echoes the request's term."""

    TAG: ClassVar[str] = "raft/vote-response"

    term: Term
    granted: bool
    pre_vote: bool

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        if type(self.granted) is not bool or type(self.pre_vote) is not bool:
            raise SchemaError("granted and pre_vote must be bools")

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG, {"term": self.term, "granted": self.granted, "pre_vote": self.pre_vote}
        )

    @classmethod
    def from_wire(cls, value: Value) -> VoteResponse:
        m = message_fields(value, cls.TAG, frozenset({"term", "granted", "pre_vote"}))
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            granted=expect_bool(m["granted"], "granted"),
            pre_vote=expect_bool(m["pre_vote"], "pre_vote"),
        )


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicate blocks after ``prev_log_index`` (§5.3) and hand over commit certificates.

    ``leader_commit`` is the leader's commit index; ``certificates`` are commit
    certificates for heights the receiver is believed to hold but not yet to
    have committed.
    """

    TAG: ClassVar[str] = "raft/append-entries"

    term: Term
    prev_log_index: Height
    prev_log_term: Term
    entries: tuple[Block, ...]
    leader_commit: Height
    certificates: tuple[QuorumCertificate, ...] = ()

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        _check_count(self.prev_log_index, "prev_log_index")
        _check_count(self.prev_log_term, "prev_log_term")
        _check_count(self.leader_commit, "leader_commit")
        _check_not_above(self.prev_log_term, self.term, "prev_log_term")
        if self.prev_log_index == 0 and self.prev_log_term != 0:
            raise SchemaError("the position before height 1 has term 0", found=self.prev_log_term)
        previous_term = self.prev_log_term
        previous_hash: Digest | None = None
        for offset, block in enumerate(self.entries):
            if not isinstance(block, Block):
                raise SchemaError("entries must be blocks", found=type(block).__name__)
            expected_height = self.prev_log_index + 1 + offset
            if block.height != expected_height:
                raise SchemaError(
                    "entries are not consecutive", expected=expected_height, found=block.height
                )
            term = entry_term(block)
            if term < previous_term or term > self.term:
                raise SchemaError(
                    "entry term out of order",
                    expected=f"{previous_term}..{self.term}",
                    found=term,
                    where=f"height {block.height}",
                )
            if previous_hash is not None and block.header.prev_hash != previous_hash:
                raise SchemaError(
                    "entries are not hash-linked",
                    expected=previous_hash,
                    found=block.header.prev_hash,
                    where=f"height {block.height}",
                )
            previous_term, previous_hash = term, block.block_hash
        previous_height = 0
        for certificate in self.certificates:
            if not isinstance(certificate, QuorumCertificate):
                raise SchemaError("certificates must be quorum certificates")
            if certificate.statement.height <= previous_height:
                raise SchemaError(
                    "certificates not in increasing height order",
                    found=certificate.statement.height,
                )
            previous_height = certificate.statement.height

    @property
    def last_index(self) -> Height:
        """Height of the last entry this message carries (``prev_log_index`` if none)."""
        return Height(self.prev_log_index + len(self.entries))

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "term": self.term,
                "prev_log_index": self.prev_log_index,
                "prev_log_term": self.prev_log_term,
                "entries": [block.to_wire() for block in self.entries],
                "leader_commit": self.leader_commit,
                "certificates": [cert.to_wire() for cert in self.certificates],
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> AppendEntries:
        m = message_fields(
            value,
            cls.TAG,
            frozenset(
                {
                    "term",
                    "prev_log_index",
                    "prev_log_term",
                    "entries",
                    "leader_commit",
                    "certificates",
                }
            ),
        )
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            prev_log_index=Height(expect_int(m["prev_log_index"], "prev_log_index", minimum=0)),
            prev_log_term=Term(expect_int(m["prev_log_term"], "prev_log_term", minimum=0)),
            entries=tuple(block_from_wire(item) for item in expect_list(m["entries"], "entries")),
            leader_commit=Height(expect_int(m["leader_commit"], "leader_commit", minimum=0)),
            certificates=tuple(
                QuorumCertificate.from_wire(item)
                for item in expect_list(m["certificates"], "certificates")
            ),
        )


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answer to :class:`AppendEntries` (and to a heartbeat).

    On success, ``match_index`` is the last height the request proved the
    receiver's log to share with the leader's. On failure, ``hint_index`` is
    the height the leader should try next. ``commit_index`` is the receiver's
    committed height. ``signatures`` are the receiver's ``raft-append``
    signatures, in the response's term, for heights it vouches for (see the
    certificate section of the spec).
    """

    TAG: ClassVar[str] = "raft/append-response"

    term: Term
    success: bool
    match_index: Height
    hint_index: Height
    commit_index: Height
    signatures: tuple[tuple[Height, bytes], ...] = ()

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        _check_count(self.match_index, "match_index")
        _check_count(self.hint_index, "hint_index")
        _check_count(self.commit_index, "commit_index")
        if type(self.success) is not bool:
            raise SchemaError("success must be a bool", found=self.success)
        previous = 0
        for height, signature in self.signatures:
            _check_count(height, "signature height")
            if height <= previous:
                raise SchemaError("signatures not in increasing height order", found=height)
            if not isinstance(signature, bytes):
                raise SchemaError("signature must be bytes", found=type(signature).__name__)
            previous = height
        if self.signatures and (not self.success or previous > self.match_index):
            raise SchemaError(
                "signatures only for matched heights", expected=self.match_index, found=previous
            )

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "term": self.term,
                "success": self.success,
                "match_index": self.match_index,
                "hint_index": self.hint_index,
                "commit_index": self.commit_index,
                "signatures": [[height, sig] for height, sig in self.signatures],
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> AppendResponse:
        m = message_fields(
            value,
            cls.TAG,
            frozenset(
                {"term", "success", "match_index", "hint_index", "commit_index", "signatures"}
            ),
        )
        signatures: list[tuple[Height, bytes]] = []
        for item in expect_list(m["signatures"], "signatures"):
            pair = expect_list(item, "signature entry")
            if len(pair) != 2:
                raise SchemaError("signature entry must be [height, signature]", found=len(pair))
            signatures.append(
                (
                    Height(expect_int(pair[0], "signature height", minimum=1)),
                    signature_from_wire(pair[1]),
                )
            )
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            success=expect_bool(m["success"], "success"),
            match_index=Height(expect_int(m["match_index"], "match_index", minimum=0)),
            hint_index=Height(expect_int(m["hint_index"], "hint_index", minimum=0)),
            commit_index=Height(expect_int(m["commit_index"], "commit_index", minimum=0)),
            signatures=tuple(signatures),
        )


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader compacted its log past what the receiver needs (§7).

    Names the leader's snapshot point; the receiver fetches the committed
    blocks up to it by state transfer (the blocks live in the ledger).
    """

    TAG: ClassVar[str] = "raft/install-snapshot"

    term: Term
    last_included_index: Height
    last_included_term: Term
    last_included_hash: Digest

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        _check_count(self.last_included_index, "last_included_index")
        _check_count(self.last_included_term, "last_included_term")
        _check_not_above(self.last_included_term, self.term, "last_included_term")
        if self.last_included_index < 1:
            raise SchemaError("a snapshot includes at least height 1", found=0)
        if not isinstance(self.last_included_hash, bytes) or len(self.last_included_hash) != (
            HASH_SIZE
        ):
            raise SchemaError("last_included_hash must be a 32-byte digest")

    def to_wire(self) -> dict[str, Value]:
        return tagged(
            self.TAG,
            {
                "term": self.term,
                "last_included_index": self.last_included_index,
                "last_included_term": self.last_included_term,
                "last_included_hash": self.last_included_hash,
            },
        )

    @classmethod
    def from_wire(cls, value: Value) -> InstallSnapshot:
        m = message_fields(
            value,
            cls.TAG,
            frozenset({"term", "last_included_index", "last_included_term", "last_included_hash"}),
        )
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            last_included_index=Height(
                expect_int(m["last_included_index"], "last_included_index", minimum=0)
            ),
            last_included_term=Term(
                expect_int(m["last_included_term"], "last_included_term", minimum=0)
            ),
            last_included_hash=Digest(
                expect_bytes(m["last_included_hash"], "last_included_hash", size=HASH_SIZE)
            ),
        )


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """Answer to :class:`InstallSnapshot`: the receiver's committed height."""

    TAG: ClassVar[str] = "raft/install-snapshot-response"

    term: Term
    commit_index: Height

    def __post_init__(self) -> None:
        _check_count(self.term, "term")
        _check_count(self.commit_index, "commit_index")

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"term": self.term, "commit_index": self.commit_index})

    @classmethod
    def from_wire(cls, value: Value) -> InstallSnapshotResponse:
        m = message_fields(value, cls.TAG, frozenset({"term", "commit_index"}))
        return cls(
            term=Term(expect_int(m["term"], "term", minimum=0)),
            commit_index=Height(expect_int(m["commit_index"], "commit_index", minimum=0)),
        )


@dataclass(frozen=True, slots=True)
class ForwardRequests:
    """Client transactions a non-leader passes on to the leader it knows."""

    TAG: ClassVar[str] = "raft/forward-requests"

    txs: tuple[Transaction, ...]

    def __post_init__(self) -> None:
        if not self.txs or len(self.txs) > MAX_FORWARD_TXS:
            raise SchemaError(
                "wrong number of forwarded transactions",
                expected=f"1..{MAX_FORWARD_TXS}",
                found=len(self.txs),
            )
        for tx in self.txs:
            if not isinstance(tx, Transaction):
                raise SchemaError("txs must be transactions", found=type(tx).__name__)

    def to_wire(self) -> dict[str, Value]:
        return tagged(self.TAG, {"txs": [tx.payload for tx in self.txs]})

    @classmethod
    def from_wire(cls, value: Value) -> ForwardRequests:
        m = message_fields(value, cls.TAG, frozenset({"txs"}))
        return cls(txs=txs_from_wire(m["txs"]))


RaftMessage: TypeAlias = (
    RequestVote
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | ForwardRequests
)

#: Decoder of each message type, by its wire tag (for a protocol-wide message registry).
RAFT_MESSAGE_DECODERS: Mapping[str, Callable[[Value], RaftMessage]] = {
    RequestVote.TAG: RequestVote.from_wire,
    VoteResponse.TAG: VoteResponse.from_wire,
    AppendEntries.TAG: AppendEntries.from_wire,
    AppendResponse.TAG: AppendResponse.from_wire,
    InstallSnapshot.TAG: InstallSnapshot.from_wire,
    InstallSnapshotResponse.TAG: InstallSnapshotResponse.from_wire,
    ForwardRequests.TAG: ForwardRequests.from_wire,
}

RAFT_MESSAGE_TYPES: tuple[type[RaftMessage], ...] = (
    RequestVote,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ForwardRequests,
)


def decode_raft_message(value: Value) -> RaftMessage:
    """Decode the wire form of any Raft message; raises a :class:`ValidationError` subclass."""
    m = expect_map(value, "raft message")
    tag = expect_str(m.get("type"), "message type")
    decoder = RAFT_MESSAGE_DECODERS.get(tag)
    if decoder is None:
        raise SchemaError(
            "unknown raft message type", expected=sorted(RAFT_MESSAGE_DECODERS), found=tag
        )
    return decoder(m)


def encode_raft_message(message: RaftMessage) -> bytes:
    """Canonical bytes of ``message``."""
    return encode(message.to_wire())


def decode_raft_message_bytes(data: bytes) -> RaftMessage:
    """Inverse of :func:`encode_raft_message`."""
    return decode_raft_message(decode(data))
