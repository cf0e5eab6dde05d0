"""Canonical encoding: round trip, determinism, agreement with an independent CBOR codec,
and rejection of every non-canonical or malformed form with a clear error."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from belep import encoding
from belep.encoding import MAX_DEPTH, Value, decode, encode
from belep.errors import EncodingError

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
keys = st.one_of(ints, st.text(max_size=8))
scalars = st.one_of(st.none(), st.booleans(), ints, st.binary(max_size=64), st.text(max_size=32))
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=40,
)


@given(values)
def test_round_trip(value: Value) -> None:
    assert decode(encode(value)) == value


@given(values)
def test_encoding_is_deterministic_and_canonical(value: Value) -> None:
    data = encode(value)
    assert encode(decode(data)) == data
    # A dict built in the reverse insertion order encodes identically.
    if isinstance(value, dict):
        assert encode(dict(reversed(list(value.items())))) == data


def _in_rfc8949_order(value: Any) -> Any:
    """Rebuild maps with keys in RFC 8949 §4.2.1 order (bytewise order of the encoded keys),
    computed with cbor2's encoder. (cbor2's own ``canonical=True`` implements the older
    RFC 7049 length-first order, which differs.)"""
    if isinstance(value, list):
        return [_in_rfc8949_order(item) for item in value]
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda kv: cbor2.dumps(kv[0]))
        return {k: _in_rfc8949_order(v) for k, v in ordered}
    return value


@given(values)
def test_agrees_with_independent_cbor_codec(value: Value) -> None:
    data = encode(value)
    assert cbor2.loads(data) == value
    assert cbor2.dumps(_in_rfc8949_order(value)) == data


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_decode_accepts_only_what_encode_produces(data: bytes) -> None:
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data


def _head(major: int, arg: int, widen: int) -> bytes:
    """A CBOR head; ``widen`` > 0 uses a longer argument form than the shortest one."""
    forms = [(24, 1), (25, 2), (26, 4), (27, 8)]
    if arg < 24 and not widen:
        return bytes([major << 5 | arg])
    fitting = [(info, n) for info, n in forms if arg < 1 << (8 * n)]
    info, n = fitting[min(max(widen - 1, 0), len(fitting) - 1)] if arg >= 24 else forms[widen - 1]
    return bytes([major << 5 | info]) + arg.to_bytes(n, "big")


_raw_scalars = st.one_of(
    st.tuples(st.just(0), st.integers(0, 2**16)),
    st.tuples(st.just(2), st.binary(max_size=40)),
    st.tuples(st.just(3), st.text(max_size=30)),
)


@st.composite
def _nearly_canonical_maps(draw: st.DrawFn) -> bytes:
    """Maps built byte by byte: keys possibly repeated or out of order, heads possibly
    longer than the shortest form — what a hostile client would send."""
    pairs = draw(
        st.lists(
            st.tuples(st.text(max_size=4), _raw_scalars, st.integers(0, 2), st.integers(0, 2)),
            max_size=6,
        )
    )
    if draw(st.booleans()):
        pairs.sort(key=lambda p: encode(p[0]))
    out = bytearray(_head(5, len(pairs), 0))
    for key, (major, item), widen_key, widen_item in pairs:
        raw_key = key.encode()
        out += _head(3, len(raw_key), widen_key) + raw_key
        if major == 0:
            assert isinstance(item, int)
            out += _head(0, item, widen_item)
        else:
            raw = item.encode() if isinstance(item, str) else item
            assert isinstance(raw, bytes)
            out += _head(major, len(raw), widen_item) + raw
    return bytes(out)


@given(_nearly_canonical_maps())
@settings(max_examples=500)
def test_a_nearly_canonical_map_is_decoded_exactly_or_refused(data: bytes) -> None:
    """Envelopes are maps, and the decoder's fast paths are in its map loop: bytes that
    are almost canonical either decode to a value that encodes back to exactly them, or
    are refused, by both decoders."""
    for decoder in (decode, lambda b: encoding.decode_map_spans(b)[0]):
        try:
            value = decoder(data)
        except EncodingError:
            continue
        assert encode(value) == data


def test_same_bytes_in_a_fresh_interpreter() -> None:
    """Hash seeds and dict orders differ between processes; the bytes must not."""
    program = (
        "from belep.encoding import encode;"
        "import sys;"
        "sys.stdout.write(encode({'z': [1, -2, b'\\x00'], 'a': {3: 'é', 1: None}, 7: True}).hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program],
            check=True,
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    local = encode({"z": [1, -2, b"\x00"], "a": {3: "é", 1: None}, 7: True}).hex()
    assert outputs == {local}


KNOWN = [
    ("zero", 0, "00"),
    ("23", 23, "17"),
    ("24", 24, "1818"),
    ("255", 255, "18ff"),
    ("256", 256, "190100"),
    ("2^32", 2**32, "1b0000000100000000"),
    ("max uint64", 2**64 - 1, "1bffffffffffffffff"),
    ("-1", -1, "20"),
    ("min nint64", -(2**64), "3bffffffffffffffff"),
    ("empty bytes", b"", "40"),
    ("bytes", b"\x01\x02", "420102"),
    ("text", "ab", "626162"),
    ("utf-8 text", "证据", "66e8af81e68dae"),
    ("false", False, "f4"),
    ("true", True, "f5"),
    ("null", None, "f6"),
    ("array", [1, [2]], "820181 02".replace(" ", "")),
    (
        "map keys sorted by encoded bytes",
        {"aa": 1, "b": 2, 10: 3},
        "a30a03616202626161 01".replace(" ", ""),
    ),
]


@pytest.mark.parametrize(("name", "value", "hex_bytes"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_encodings(name: str, value: Value, hex_bytes: str) -> None:
    assert encode(value).hex() == hex_bytes
    assert decode(bytes.fromhex(hex_bytes)) == value


REJECTED = [
    ("empty input", "", "empty input"),
    ("trailing bytes", "0000", "trailing bytes"),
    ("over-long 1-byte int", "1805", "non-minimal"),
    ("over-long 2-byte int", "190005", "non-minimal"),
    ("over-long 4-byte int", "1a0000ffff", "non-minimal"),
    ("over-long 8-byte int", "1b00000000ffffffff", "non-minimal"),
    ("over-long length", "5801ff", "non-minimal"),
    ("duplicate map key", "a2616101616102", "duplicate map key"),
    ("unsorted map keys", "a2616202616101", "canonical order"),
    ("'aa' before 'b' (bytewise, not length-first)", "a262616101616202", "canonical order"),
    ("indefinite byte string", "5fff", "indefinite length"),
    ("indefinite array", "9fff", "indefinite length"),
    ("indefinite map", "bfff", "indefinite length"),
    ("half float", "f93c00", "float"),
    ("double float", "fb3ff0000000000000", "float"),
    ("undefined", "f7", "simple value"),
    ("tag", "c11a514b67b0", "tags not allowed"),
    ("bignum tag", "c249010000000000000000", "tags not allowed"),
    ("reserved info", "1c", "reserved"),
    ("truncated head", "19 01".replace(" ", ""), "truncated"),
    ("truncated bytes", "4301", "truncated byte string"),
    ("impossible array count", "9a7fffffff", "truncated array"),
    ("invalid utf-8", "62c328", "invalid UTF-8"),
    ("bytes as map key", "a1410001", "map key"),
    ("array as map key", "a18001", "map key"),
]


@pytest.mark.parametrize(("name", "hex_bytes", "reason"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejects_non_canonical_and_malformed(name: str, hex_bytes: str, reason: str) -> None:
    with pytest.raises(EncodingError) as caught:
        decode(bytes.fromhex(hex_bytes))
    assert reason in str(caught.value)


def test_rejects_oversized_input() -> None:
    with pytest.raises(EncodingError, match="input too large") as caught:
        decode(encode(b"x" * 100), max_size=64)
    assert caught.value.expected == "<= 64 bytes"
    assert caught.value.found == 102


def test_rejects_deep_nesting() -> None:
    deep = bytes([0x81] * (MAX_DEPTH + 1)) + b"\x00"
    with pytest.raises(EncodingError, match="nesting too deep"):
        decode(deep)
    value: Value = 0
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(EncodingError, match="nesting too deep"):
        encode(value)


UNSUPPORTED: list[tuple[str, Any]] = [
    ("float", 1.5),
    ("set", {1}),
    ("object", object()),
    ("too large int", 2**64),
    ("too small int", -(2**64) - 1),
    ("bytes map key", {b"k": 1}),
    ("lone surrogate", "\ud800"),
]


@pytest.mark.parametrize(("name", "value"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_encode_rejects_unsupported(name: str, value: Any) -> None:
    with pytest.raises(EncodingError):
        encode(value)


def test_error_names_offset_expected_and_found() -> None:
    with pytest.raises(EncodingError) as caught:
        decode(bytes.fromhex("82001805"))
    error = caught.value
    assert error.where == "offset 2"
    assert "shortest form" in str(error.expected)
    assert "offset 2" in str(error)


def test_decoded_bytes_are_immutable_copies() -> None:
    source = bytearray(encode(b"abc"))
    value = decode(source)
    source[1] = 0
    assert value == b"abc"


def test_expect_helpers_report_shape_errors() -> None:
    with pytest.raises(EncodingError, match="wrong type"):
        encoding.expect_int(True, "height")
    with pytest.raises(EncodingError, match="out of range"):
        encoding.expect_int(-1, "height", minimum=0)
    with pytest.raises(EncodingError, match="wrong length"):
        encoding.expect_bytes(b"ab", "hash", size=32)
    with pytest.raises(EncodingError, match="wrong fields"):
        encoding.expect_fields({"a": 1, "c": 2}, "record", frozenset({"a", "b"}))


@given(st.dictionaries(st.text(max_size=6) | st.integers(-5, 300), values, max_size=6))
def test_decode_map_spans_gives_each_value_its_canonical_bytes(mapping: dict[Any, Any]) -> None:
    data = encode(mapping)
    decoded, spans = encoding.decode_map_spans(data)
    assert decoded == decode(data)
    assert set(spans) == set(decoded)
    for key, (start, end) in spans.items():
        assert data[start:end] == encode(decoded[key])


@pytest.mark.parametrize(
    "data",
    [encode([1, 2]), encode(7), encode({"a": 1}) + b"\x00", bytes.fromhex("a2616101616101"), b""],
    ids=["array", "integer", "trailing", "duplicate-key", "empty"],
)
def test_decode_map_spans_is_as_strict_as_decode(data: bytes) -> None:
    with pytest.raises(EncodingError):
        encoding.decode_map_spans(data)
