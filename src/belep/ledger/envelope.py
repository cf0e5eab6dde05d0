"""The signed transaction envelope: what every BELEP transaction payload is.

Owns :class:`Envelope` (``docs/spec/transactions.md``): a transaction
``kind``, its author's public key, a ``body`` (a canonical CBOR map), the
CIDs of the files it references, the author's timestamp, a nonce, and the
author's signature over :meth:`Envelope.signing_bytes`. The transaction
payload on chain is :meth:`Envelope.encode`; its hash is the transaction
hash. The evidence application (a later issue) defines the kinds and their
bodies; this module only fixes the frame and its authentication.

Invariants:

* an :class:`Envelope` is structurally valid by construction (kind, CIDs,
  sizes); :func:`parse_envelope` accepts exactly the bytes
  :meth:`Envelope.encode` produces (the encoding is canonical);
* the signature covers every field but itself, under the domain tag
  ``belep-tx-v1``, so it can never be replayed as a vote or a genesis
  signature;
* :class:`EnvelopeValidator` verifies a given transaction's signature at
  most once per transaction hash while the hash stays in its bounded LRU
  cache (valid and invalid outcomes are both remembered).

Pure: no clock, no I/O (the timestamp is the author's claim; time-window
rules belong to the application).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from belep.content.cid import parse_cid
from belep.crypto import PrivateKey, PublicKey
from belep.encoding import (
    Value,
    decode_map_spans,
    encode,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import CidError, InvalidSignature, SchemaError, ValidationError
from belep.ledger.block import Digest, Transaction

__all__ = [
    "ENVELOPE_TAG",
    "Envelope",
    "EnvelopeValidator",
    "parse_envelope",
    "sign_envelope",
]

ENVELOPE_TAG = "belep-tx-v1"
VERSION = 1
MAX_CIDS = 64
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_FIELDS = frozenset({"v", "kind", "suite", "author", "body", "cids", "ts", "nonce", "sig"})
#: The signed fields, in the order of the signed array (after the tag).
_SIGNED_FIELDS = ("kind", "suite", "author", "body", "cids", "ts", "nonce")
#: Head of the signed array (8 items: tag + the signed fields) followed by the encoded tag.
_SIGNED_PREFIX = encode([ENVELOPE_TAG, 0, 0, 0, 0, 0, 0, 0])[:-7]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed transaction (see the module docstring)."""

    kind: str
    author: PublicKey
    body: Mapping[str, Value]
    cids: tuple[str, ...]
    timestamp_ms: int
    nonce: int
    signature: bytes
    #: The signed bytes, when :func:`parse_envelope` took them from the payload
    #: (byte-identical to re-encoding, since the payload is canonical).
    _signed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _KIND.fullmatch(self.kind):
            raise SchemaError(
                "bad transaction kind", expected="[a-z][a-z0-9-]{0,31}", found=self.kind
            )
        if len(self.cids) > MAX_CIDS:
            raise SchemaError("too many CIDs", expected=f"<= {MAX_CIDS}", found=len(self.cids))
        for text in self.cids:
            try:
                canonical = str(parse_cid(text))
            except CidError as exc:
                raise SchemaError(f"bad CID: {exc.message}", found=text, where="cids") from exc
            if canonical != text:
                raise SchemaError("CID not in canonical text form", expected=canonical, found=text)
        if len(set(self.cids)) != len(self.cids):
            raise SchemaError("CID listed twice", found=self.cids)
        for key in self.body:
            if not isinstance(key, str):
                raise SchemaError("body keys must be strings", found=key)
        if not 0 <= self.timestamp_ms < 1 << 63 or not 0 <= self.nonce < 1 << 63:
            raise SchemaError(
                "timestamp or nonce out of range", found=(self.timestamp_ms, self.nonce)
            )

    def signing_bytes(self) -> bytes:
        """What the author signs: every field but the signature, under the envelope tag."""
        if self._signed is not None:
            return self._signed
        return encode(
            [
                ENVELOPE_TAG,
                self.kind,
                self.author.suite,
                self.author.raw,
                dict(self.body),
                list(self.cids),
                self.timestamp_ms,
                self.nonce,
            ]
        )

    def to_wire(self) -> dict[str, Value]:
        return {
            "v": VERSION,
            "kind": self.kind,
            "suite": self.author.suite,
            "author": self.author.raw,
            "body": dict(self.body),
            "cids": list(self.cids),
            "ts": self.timestamp_ms,
            "nonce": self.nonce,
            "sig": self.signature,
        }

    def encode(self) -> bytes:
        """The transaction payload."""
        return encode(self.to_wire())

    def to_transaction(self) -> Transaction:
        return Transaction(self.encode())

    def verify(self) -> None:
        """Raise :class:`InvalidSignature` unless the author's signature verifies."""
        if not self.author.is_valid_signature(self.signing_bytes(), self.signature):
            raise InvalidSignature(
                "transaction signature does not verify", where=f"author {self.author.fingerprint()}"
            )


def sign_envelope(
    key: PrivateKey,
    kind: str,
    body: Mapping[str, Value],
    *,
    timestamp_ms: int,
    cids: tuple[str, ...] = (),
    nonce: int = 0,
) -> Envelope:
    """A new envelope signed by ``key``."""
    unsigned = Envelope(kind, key.public_key, body, cids, timestamp_ms, nonce, b"")
    signature = key.sign(unsigned.signing_bytes())
    return Envelope(kind, key.public_key, body, cids, timestamp_ms, nonce, signature)


def parse_envelope(payload: bytes) -> Envelope:
    """Decode a transaction payload strictly (structure only; see :meth:`Envelope.verify`).

    The envelope keeps its signed bytes as slices of ``payload``: the decoder
    accepts canonical bytes only, so each field's bytes are exactly its
    encoding, and ``0x88 || encode(tag) || kind || suite || ... || nonce`` is
    what :meth:`Envelope.signing_bytes` would re-encode from the fields.
    """
    m, spans = decode_map_spans(payload)
    if m.keys() != _FIELDS:
        expect_fields(m, "transaction", _FIELDS)  # raises, naming the wrong fields
    version = m["v"]
    if version != VERSION or type(version) is not int:
        expect_int(version, "v")
        raise SchemaError("unsupported envelope version", expected=VERSION, found=version)
    body = expect_map(m["body"], "body")
    for key in body:
        expect_str(key, "body key")
    raw_cids = expect_list(m["cids"], "cids")
    cids = tuple(expect_str(c, "cid") for c in raw_cids) if raw_cids else ()
    author = PublicKey(expect_str(m["suite"], "suite"), expect_bytes(m["author"], "author"))
    envelope = Envelope(
        kind=expect_str(m["kind"], "kind"),
        author=author,
        body=body,  # type: ignore[arg-type]  # every key checked to be a str above
        cids=cids,
        timestamp_ms=expect_int(m["ts"], "ts", minimum=0),
        nonce=expect_int(m["nonce"], "nonce", minimum=0),
        signature=expect_bytes(m["sig"], "sig"),
    )
    signed = _SIGNED_PREFIX + b"".join(
        payload[a:b] for a, b in map(spans.__getitem__, _SIGNED_FIELDS)
    )
    object.__setattr__(envelope, "_signed", signed)
    return envelope


class EnvelopeValidator:
    """``validate_transaction`` for consensus: parse + verify, once per transaction hash.

    ``policy`` (optional, pure) adds a rule on the parsed envelope, e.g. "an
    ``anchor`` must be authored by a voter of this domain". The outcome for a
    hash is cached in a bounded LRU (``capacity`` hashes). ``on_parsed`` is
    told every envelope parsed, by transaction hash (the node keeps the latest
    for execution, which would otherwise parse each one again).
    """

    __slots__ = ("_cache", "_capacity", "_on_parsed", "_policy", "hits", "verifications")

    def __init__(
        self,
        capacity: int = 200_000,
        policy: Callable[[Envelope], bool] | None = None,
        *,
        on_parsed: Callable[[Digest, Envelope], None] | None = None,
    ) -> None:
        self._cache: OrderedDict[Digest, bool] = OrderedDict()
        self._capacity = max(1, capacity)
        self._policy = policy
        self._on_parsed = on_parsed
        self.hits = 0
        self.verifications = 0

    def __call__(self, tx: Transaction) -> bool:
        return self.is_valid(tx)

    def is_valid(self, tx: Transaction) -> bool:
        cached = self._cache.get(tx.tx_hash)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(tx.tx_hash)
            return cached
        try:
            self.check(tx)
            outcome = True
        except ValidationError:
            outcome = False
        self.remember(tx.tx_hash, outcome)
        return outcome

    def check(self, tx: Transaction) -> Envelope:
        """Parse, verify and apply the policy; raise a ValidationError (not cached)."""
        envelope = parse_envelope(tx.payload)
        if self._on_parsed is not None:
            self._on_parsed(tx.tx_hash, envelope)
        self.verifications += 1
        envelope.verify()
        if self._policy is not None and not self._policy(envelope):
            raise SchemaError("transaction refused by the domain's policy", found=envelope.kind)
        return envelope

    def known_valid(self, tx_hash: Digest) -> bool:
        """Was the transaction with this hash found valid (and is it still remembered)?"""
        return self._cache.get(tx_hash) is True

    def remember(self, tx_hash: Digest, outcome: bool) -> None:
        """Record an outcome (used when the caller already checked the transaction)."""
        self._cache[tx_hash] = outcome
        self._cache.move_to_end(tx_hash)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return len(self._cache)
