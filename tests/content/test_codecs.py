"""Varints, multibase, CIDs and the dag-pb / UnixFS protobuf codecs."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.content.cid import (
    DAG_PB,
    RAW,
    Cid,
    compute_cid,
    decode_cid,
    parse_cid,
    read_cid,
    verify_block,
)
from belep.content.dagpb import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_pbnode,
    decode_unixfs,
    encode_pbnode,
    encode_unixfs,
    leaf_frame,
)
from belep.content.multiformats import (
    decode_base32,
    decode_base58btc,
    decode_varint,
    encode_base32,
    encode_base58btc,
    encode_varint,
)
from belep.errors import CidError, EncodingError, HashMismatch

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
EMPTY_RAW_V1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"

# --------------------------------------------------------------------------
# varint and multibase
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (16384, "808001")],
)
def test_varint_known_encodings(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@given(st.integers(min_value=0, max_value=(1 << 63) - 1))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw + b"\xff") == (value, len(raw))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "truncated"),
        ("80", "truncated"),
        ("8000", "non-minimal"),
        ("ffffffffffffffffff01", "longer than 9 bytes"),
    ],
)
def test_varint_rejects(raw: str, why: str) -> None:
    with pytest.raises(EncodingError, match=why):
        decode_varint(bytes.fromhex(raw))


@given(st.binary(max_size=64))
def test_base58_and_base32_round_trip(data: bytes) -> None:
    if data:
        assert decode_base58btc(encode_base58btc(data)) == data
        assert decode_base32(encode_base32(data)) == data


@pytest.mark.parametrize(
    ("decoder", "text"),
    [
        (decode_base58btc, ""),
        (decode_base58btc, "0OIl"),
        (decode_base32, ""),
        (decode_base32, "MZXW6"),  # upper case is not multibase 'b'
        (decode_base32, "mzxw6==="),  # padding
        (decode_base32, "mzxw7"),  # stray trailing bits
        (decode_base32, "a"),  # impossible length
    ],
)
def test_multibase_rejects(decoder: object, text: str) -> None:
    with pytest.raises(EncodingError):
        decoder(text)  # type: ignore[operator]


# --------------------------------------------------------------------------
# CIDs
# --------------------------------------------------------------------------


def test_cid_v0_text_and_bytes() -> None:
    cid = parse_cid(HELLO_V0)
    assert (cid.version, cid.codec, len(cid.digest)) == (0, DAG_PB, 32)
    assert str(cid) == HELLO_V0
    assert cid.to_bytes()[:2] == b"\x12\x20"
    assert decode_cid(cid.to_bytes()) == cid
    assert str(cid.to_v1()) == "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"
    assert parse_cid(str(cid.to_v1())) == cid.to_v1()


def test_cid_v1_raw_empty() -> None:
    cid = compute_cid(b"", version=1, codec=RAW)
    assert str(cid) == EMPTY_RAW_V1
    assert parse_cid(EMPTY_RAW_V1) == cid
    # The same CID in base58btc and base16 multibase.
    assert parse_cid("z" + encode_base58btc(cid.to_bytes())) == cid
    assert parse_cid("f" + cid.to_bytes().hex()) == cid
    verify_block(cid, b"")
    with pytest.raises(HashMismatch, match=EMPTY_RAW_V1):
        verify_block(cid, b"x")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qm",
        HELLO_V0[:-1],
        HELLO_V0[:-1] + "0",  # '0' is not base58
        "../../etc/passwd",
        "b" + EMPTY_RAW_V1[1:].upper(),
        "m" + EMPTY_RAW_V1[1:],  # unsupported multibase
        "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",  # dag-cbor
        "f01551120" + "00" * 32,  # multihash length 0x20 stated but sha1 code
        "zQm",
        "x" * 200,
    ],
)
def test_parse_cid_rejects(text: str) -> None:
    with pytest.raises(CidError):
        parse_cid(text)


def test_cid_constructor_validates() -> None:
    with pytest.raises(CidError):
        Cid(0, RAW, bytes(32))
    with pytest.raises(CidError):
        Cid(1, DAG_PB, bytes(31))
    with pytest.raises(CidError):
        Cid(2, DAG_PB, bytes(32))
    with pytest.raises(CidError):
        Cid(1, 0x71, bytes(32))


def test_read_cid_reports_end() -> None:
    v0 = parse_cid(HELLO_V0)
    v1 = compute_cid(b"abc", version=1, codec=RAW)
    data = v0.to_bytes() + v1.to_bytes() + b"tail"
    first, end = read_cid(data)
    second, end2 = read_cid(data, end)
    assert (first, second, data[end2:]) == (v0, v1, b"tail")
    with pytest.raises(CidError, match="trailing"):
        decode_cid(v1.to_bytes() + b"\x00")


# --------------------------------------------------------------------------
# dag-pb and UnixFS
# --------------------------------------------------------------------------


def test_hello_world_block_is_kubos() -> None:
    chunk = b"hello world\n"
    unixfs = encode_unixfs(UnixFSData(DataType.FILE, data=chunk, filesize=len(chunk)))
    block = encode_pbnode(PBNode((), unixfs))
    assert block.hex() == "0a12" + "0802" + "120c" + chunk.hex() + "180c"
    assert str(compute_cid(block, version=0, codec=DAG_PB)) == HELLO_V0
    prefix, suffix = leaf_frame(len(chunk))
    assert prefix + chunk + suffix == block
    assert decode_unixfs(decode_pbnode(block).data or b"").data == chunk


@given(st.integers(min_value=1, max_value=1 << 21))
def test_leaf_frame_matches_generic_encoder(length: int) -> None:
    prefix, suffix = leaf_frame(length)
    unixfs_head = encode_unixfs(UnixFSData(DataType.FILE, data=b"", filesize=length))
    # Generic encoding of a zero-filled chunk of that length.
    block = encode_pbnode(
        PBNode((), encode_unixfs(UnixFSData(DataType.FILE, data=bytes(length), filesize=length)))
    )
    assert prefix + bytes(length) + suffix == block
    assert unixfs_head.startswith(b"\x08\x02")


def test_links_are_written_before_data_with_empty_names() -> None:
    child = compute_cid(b"child", version=0, codec=DAG_PB)
    node = PBNode((PBLink(child, "", 5),), b"\x08\x02")
    raw = encode_pbnode(node)
    assert raw[0] == 0x12  # field 2 (Links) first
    assert raw.endswith(b"\x0a\x02\x08\x02")  # field 1 (Data) last
    assert b"\x12\x00\x18\x05" in raw  # empty Name present, then Tsize
    assert decode_pbnode(raw) == node


cids = st.builds(
    Cid,
    st.just(1),
    st.sampled_from([DAG_PB, RAW]),
    st.binary(min_size=32, max_size=32),
) | st.builds(Cid, st.just(0), st.just(DAG_PB), st.binary(min_size=32, max_size=32))
links = st.builds(
    PBLink,
    cids,
    st.none() | st.text(max_size=20),
    st.none() | st.integers(min_value=0, max_value=1 << 40),
)
nodes = st.builds(
    PBNode, st.lists(links, max_size=6).map(tuple), st.none() | st.binary(max_size=64)
)
unixfs_messages = st.builds(
    UnixFSData,
    st.sampled_from(list(DataType)),
    st.none() | st.binary(max_size=64),
    st.none() | st.integers(min_value=0, max_value=1 << 50),
    st.lists(st.integers(min_value=0, max_value=1 << 30), max_size=8).map(tuple),
    st.none() | st.integers(min_value=0, max_value=100),
    st.none() | st.integers(min_value=0, max_value=1024),
    st.none() | st.integers(min_value=0, max_value=0o7777),
    st.none() | st.binary(max_size=12),
)


@given(nodes)
def test_pbnode_round_trip(node: PBNode) -> None:
    raw = encode_pbnode(node)
    assert decode_pbnode(raw) == node
    assert encode_pbnode(decode_pbnode(raw)) == raw


@given(unixfs_messages)
def test_unixfs_round_trip(message: UnixFSData) -> None:
    raw = encode_unixfs(message)
    assert decode_unixfs(raw) == message
    assert encode_unixfs(decode_unixfs(raw)) == raw


@given(st.binary(max_size=200))
def test_decoders_never_crash_on_garbage(raw: bytes) -> None:
    for decoder in (decode_pbnode, decode_unixfs):
        with contextlib.suppress(EncodingError):
            decoder(raw)


def test_packed_blocksizes_are_accepted() -> None:
    packed = b"\x08\x02\x18\x0a" + b"\x22\x02\x03\x07"
    assert decode_unixfs(packed).blocksizes == (3, 7)


_LINK = compute_cid(b"x", version=0, codec=DAG_PB).to_bytes()
_LINK_BODY = b"\x0a\x22" + _LINK


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param(b"\x0a\x00\x12\x24" + _LINK_BODY, "Links after Data", id="data-before-links"),
        pytest.param(b"\x0a\x00\x0a\x00", "Data repeated", id="data-twice"),
        pytest.param(b"\x1a\x00", "unknown PBNode field", id="unknown-field"),
        pytest.param(b"\x08\x01", "wrong wire type", id="data-as-varint"),
        pytest.param(b"\x0a\x05ab", "past the end", id="data-overruns"),
        pytest.param(b"\x12\x02\x18\x01", "without Hash", id="link-no-hash"),
        pytest.param(b"\x12\x26\x12\x00" + _LINK_BODY, "out of order", id="link-name-before-hash"),
        pytest.param(b"\x12\x04\x0a\x02\x12\x20", "not a CID", id="link-bad-cid"),
        pytest.param(b"\x12\x28" + _LINK_BODY + b"\x12\x02\xff\xfe", "UTF-8", id="link-bad-name"),
        pytest.param(
            b"\x12\x28" + _LINK_BODY + b"\x18\x01\x18\x02", "out of order", id="tsize-twice"
        ),
        pytest.param(b"\x0a\x80\x00", "non-minimal", id="non-minimal-length"),
    ],
)
def test_pbnode_strict_decoding(raw: bytes, why: str) -> None:
    with pytest.raises(EncodingError, match=why):
        decode_pbnode(raw)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param(b"", "without Type", id="empty"),
        pytest.param(b"\x08\x09", "unknown UnixFS type", id="bad-type"),
        pytest.param(b"\x08\x02\x08\x02", "repeated", id="type-twice"),
        pytest.param(b"\x08\x02\x48\x01", "unknown UnixFS field", id="field-9"),
        pytest.param(b"\x08\x02\x12\x05ab", "past the end", id="data-overruns"),
        pytest.param(b"\x08\x02\x1a\x00", "wrong wire type", id="filesize-as-bytes"),
    ],
)
def test_unixfs_strict_decoding(raw: bytes, why: str) -> None:
    with pytest.raises(EncodingError, match=why):
        decode_unixfs(raw)


def test_compute_cid_is_sha256() -> None:
    assert compute_cid(b"abc", version=1, codec=RAW).digest == hashlib.sha256(b"abc").digest()
