"""The signed transaction envelope: round trip, tamper detection, strict parsing, verify-once cache."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.crypto import PrivateKey
from belep.encoding import decode, encode
from belep.errors import InvalidSignature, SchemaError, ValidationError
from belep.ledger.block import Transaction
from belep.ledger.envelope import Envelope, EnvelopeValidator, parse_envelope, sign_envelope

KEY = PrivateKey.from_seed(b"k" * 32)
OTHER = PrivateKey.from_seed(b"o" * 32)
CID = "QmTz3oc4gdpRMKP2sdGUPZTAGRngqjsi99BPoztyP53JMM"


def _tx(**overrides: object) -> Transaction:
    envelope = sign_envelope(
        KEY,
        "register-dispatch",
        {"task": "20210310001", "plate": "云A****1"},
        timestamp_ms=1_615_000_000_000,
        cids=(CID,),
        nonce=7,
    )
    wire = envelope.to_wire()
    wire.update(overrides)  # type: ignore[arg-type]
    return Transaction(encode(wire))


def test_round_trip_and_valid() -> None:
    tx = _tx()
    envelope = parse_envelope(tx.payload)
    assert envelope.encode() == tx.payload
    assert envelope.author == KEY.public_key
    assert envelope.cids == (CID,)
    assert EnvelopeValidator()(tx)


TAMPERED = [
    ("body", {"body": {"task": "20210310002", "plate": "云A****1"}}),
    ("kind", {"kind": "attach-evidence"}),
    ("timestamp", {"ts": 1_615_000_000_001}),
    ("nonce", {"nonce": 8}),
    ("cids", {"cids": []}),
    ("author", {"author": OTHER.public_key.raw}),
    ("signature", {"sig": bytes(64)}),
]


@pytest.mark.parametrize("change", [c for _, c in TAMPERED], ids=[i for i, _ in TAMPERED])
def test_any_changed_field_breaks_the_signature(change: dict[str, object]) -> None:
    assert not EnvelopeValidator()(_tx(**change))


MALFORMED = [
    ("extra-field", {"extra": 1}),
    ("bad-version", {"v": 2}),
    ("bad-kind", {"kind": "Bad Kind"}),
    ("bad-cid", {"cids": ["not-a-cid"]}),
    ("duplicate-cid", {"cids": [CID, CID]}),
    ("body-not-map", {"body": [1, 2]}),
    ("negative-ts", {"ts": -1}),
    ("bad-suite", {"suite": "rsa"}),
]


@pytest.mark.parametrize("change", [c for _, c in MALFORMED], ids=[i for i, _ in MALFORMED])
def test_malformed_envelopes_are_refused(change: dict[str, object]) -> None:
    tx = _tx(**change)
    with pytest.raises(ValidationError):
        parse_envelope(tx.payload)
    assert not EnvelopeValidator()(tx)


def test_not_cbor_or_not_a_map() -> None:
    with pytest.raises(ValidationError):
        parse_envelope(b"\xff")
    with pytest.raises(ValidationError):
        parse_envelope(encode([1, 2]))


def test_signature_verified_once_per_hash_and_cache_is_bounded() -> None:
    validator = EnvelopeValidator(capacity=2)
    txs = [
        Transaction(sign_envelope(KEY, "bench", {"i": i}, timestamp_ms=i).encode())
        for i in range(3)
    ]
    assert validator(txs[0])
    assert validator(txs[0])
    assert validator(txs[0])
    assert (validator.verifications, validator.hits) == (1, 2)
    bad = _tx(sig=bytes(64))
    assert not validator(bad)
    assert not validator(bad)
    assert validator.verifications == 2
    validator(txs[1])
    validator(txs[2])
    assert len(validator) == 2
    validator(txs[0])  # evicted: verified again
    assert validator.verifications == 5


def test_policy_is_applied() -> None:
    validator = EnvelopeValidator(policy=lambda e: e.kind != "register-dispatch")
    assert not validator(_tx())
    with pytest.raises(SchemaError, match="policy"):
        validator.check(_tx())


@given(
    body=st.dictionaries(
        st.text(max_size=8), st.integers(0, 2**32) | st.binary(max_size=16), max_size=4
    ),
    nonce=st.integers(0, 2**62),
)
def test_any_body_round_trips(body: dict[str, object], nonce: int) -> None:
    envelope = sign_envelope(KEY, "bench", body, timestamp_ms=5, nonce=nonce)  # type: ignore[arg-type]
    parsed = parse_envelope(envelope.encode())
    assert parsed == envelope
    parsed.verify()
    assert decode(envelope.encode())["nonce"] == nonce  # type: ignore[index]


def _slow_signing_bytes(envelope: Envelope) -> bytes:
    """The signed bytes re-encoded from the fields (an envelope not made by the parser)."""
    rebuilt = dataclasses.replace(envelope)
    assert rebuilt._signed is None
    return rebuilt.signing_bytes()


_bodies = st.dictionaries(
    st.text(max_size=8),
    st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.lists(st.integers(0, 9) | st.text(max_size=3), max_size=3)
    | st.none(),
    max_size=6,
)


@given(
    body=_bodies,
    kind=st.sampled_from(["bench", "register-dispatch", "a"]),
    ts=st.integers(0, 2**63 - 1),
    nonce=st.integers(0, 2**63 - 1),
    with_cid=st.booleans(),
)
def test_signed_bytes_from_the_payload_equal_the_re_encoded_ones(
    body: dict[str, object], kind: str, ts: int, nonce: int, with_cid: bool
) -> None:
    cids = (CID,) if with_cid else ()
    key = KEY if nonce % 2 else OTHER
    envelope = sign_envelope(key, kind, body, timestamp_ms=ts, nonce=nonce, cids=cids)  # type: ignore[arg-type]
    parsed = parse_envelope(envelope.encode())
    assert parsed._signed is not None
    assert parsed.signing_bytes() == _slow_signing_bytes(parsed) == envelope.signing_bytes()
    parsed.verify()


@given(data=st.data())
def test_any_tampered_byte_is_refused(data: st.DataObject) -> None:
    payload = bytearray(_tx().payload)
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] ^= data.draw(st.integers(1, 255))
    tx = Transaction(bytes(payload))
    assert not EnvelopeValidator()(tx)
    try:
        parsed = parse_envelope(tx.payload)
    except ValidationError:
        return
    assert parsed.signing_bytes() == _slow_signing_bytes(parsed)
    with pytest.raises(InvalidSignature):
        parsed.verify()
