"""CARv1 export/import: format, verification, and all-or-nothing pinning."""

from __future__ import annotations

import io
from pathlib import Path

import cbor2
import pytest

from belep.content.blockstore import Blockstore
from belep.content.car import (
    CarReader,
    decode_car_header,
    encode_car_header,
    export_car,
    import_car,
    iter_car,
)
from belep.content.cid import parse_cid
from belep.content.deterministic import deterministic_bytes
from belep.content.exporter import iter_dag, iter_file
from belep.content.importer import import_file
from belep.content.multiformats import encode_varint
from belep.errors import EncodingError, HashMismatch, NotFound

from .conftest import add_bytes

HELLO = parse_cid("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")


def test_header_is_canonical_dag_cbor() -> None:
    header = encode_car_header([HELLO])
    assert len(header) == 0x38  # the length go-car writes for one CIDv0 root
    decoded = cbor2.loads(header)
    assert decoded == {"roots": [cbor2.CBORTag(42, b"\x00" + HELLO.to_bytes())], "version": 1}
    assert list(decoded) == ["roots", "version"]
    assert decode_car_header(header) == (HELLO,)
    # The other key order is valid CBOR too and is accepted.
    swapped = cbor2.dumps({"version": 1, "roots": [cbor2.CBORTag(42, b"\x00" + HELLO.to_bytes())]})
    assert decode_car_header(swapped) == (HELLO,)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        pytest.param({"version": 2}, "version", id="carv2-pragma"),
        pytest.param({"roots": [], "version": 1}, "no roots", id="no-roots"),
        pytest.param(
            {"roots": [cbor2.CBORTag(42, b"\x00" + HELLO.to_bytes())], "version": 1, "x": 1},
            "unexpected",
            id="extra-key",
        ),
        pytest.param(
            {"roots": [cbor2.CBORTag(43, b"\x00" + HELLO.to_bytes())], "version": 1},
            "tag 42",
            id="wrong-tag",
        ),
        pytest.param(
            {"roots": [cbor2.CBORTag(42, HELLO.to_bytes())], "version": 1},
            "0x00",
            id="no-multibase-prefix",
        ),
        pytest.param(
            {"roots": [cbor2.CBORTag(42, b"\x00\x01\x71")], "version": 1}, "root", id="bad-cid"
        ),
        pytest.param([1], "wrong CBOR type", id="not-a-map"),
    ],
)
def test_bad_headers_are_rejected(header: object, why: str) -> None:
    with pytest.raises(EncodingError, match=why):
        decode_car_header(cbor2.dumps(header))
    with pytest.raises(EncodingError):
        decode_car_header(b"\xbf\xff")  # indefinite-length map


def _car_of(store: Blockstore, data: bytes) -> tuple[bytes, object]:
    root = add_bytes(store, data).cid
    out = io.BytesIO()
    export_car(root, store, out)
    return out.getvalue(), root


def test_export_then_import_round_trips(store: Blockstore, tmp_path: Path) -> None:
    data = deterministic_bytes("car", 700_000)
    car, root = _car_of(store, data)
    reader = CarReader(io.BytesIO(car))
    assert reader.roots == (root,)
    assert [cid for cid, _ in reader] == [cid for cid, _ in iter_dag(root, store)]  # type: ignore[arg-type]
    other = Blockstore(tmp_path / "other")
    result = import_car(io.BytesIO(car), other)
    assert (result.roots, result.blocks, result.new_blocks) == ((root,), 4, 4)
    assert other.pins() == [root]
    assert b"".join(bytes(p) for p in iter_file(root, other)) == data  # type: ignore[arg-type]
    again = import_car(io.BytesIO(car), other)
    assert again.new_blocks == 0


def test_hello_world_car_bytes() -> None:
    block = bytes.fromhex("0a120802120c") + b"hello world\n" + b"\x18\x0c"
    car = b"".join(iter_car([HELLO], [(HELLO, block)]))
    header = encode_car_header([HELLO])
    assert (
        car
        == encode_varint(len(header))
        + header
        + encode_varint(34 + len(block))
        + HELLO.to_bytes()
        + block
    )


def _assert_nothing_kept(store: Blockstore) -> None:
    assert store.pins() == []
    store.gc()
    assert list(store.iter_keys()) == []
    assert not any((store.root / "tmp").iterdir())


def test_every_truncation_is_rejected_and_nothing_is_pinned(tmp_path: Path) -> None:
    source = Blockstore(tmp_path / "src", sync=False)
    with source.writer() as writer:
        root = import_file(
            io.BytesIO(deterministic_bytes("trunc", 900)), writer, chunk_size=100
        ).cid
    car = io.BytesIO()
    export_car(root, source, car)
    whole = car.getvalue()
    target = Blockstore(tmp_path / "dst", sync=False)
    for cut in range(len(whole)):
        with pytest.raises((EncodingError, NotFound)):
            import_car(io.BytesIO(whole[:cut]), target)
        _assert_nothing_kept(target)
    import_car(io.BytesIO(whole), target)
    assert target.pins() == [root]


def test_a_wrong_block_is_rejected_by_its_cid(store: Blockstore, tmp_path: Path) -> None:
    car, root = _car_of(store, deterministic_bytes("wrong", 600_000))
    sections = list(CarReader(io.BytesIO(car)))
    victim_cid, victim = sections[2]
    tampered = bytearray(victim)
    tampered[-1] ^= 0xFF
    sections[2] = (victim_cid, bytes(tampered))
    # iter_car does not verify: it lets us build the bad archive.
    bad = b"".join(iter_car([root], sections))  # type: ignore[list-item]
    target = Blockstore(tmp_path / "dst")
    with pytest.raises(HashMismatch, match=str(victim_cid)):
        import_car(io.BytesIO(bad), target)
    _assert_nothing_kept(target)


def test_a_car_missing_a_block_is_not_pinned(store: Blockstore, tmp_path: Path) -> None:
    car, root = _car_of(store, deterministic_bytes("hole", 600_000))
    sections = list(CarReader(io.BytesIO(car)))
    missing = sections[1][0]
    holed = b"".join(iter_car([root], sections[:1] + sections[2:]))  # type: ignore[list-item]
    target = Blockstore(tmp_path / "dst")
    with pytest.raises(NotFound, match=str(missing)):
        import_car(io.BytesIO(holed), target)
    _assert_nothing_kept(target)


def test_blocks_outside_the_car_may_come_from_the_store(store: Blockstore, tmp_path: Path) -> None:
    data = deterministic_bytes("partial", 600_000)
    car, root = _car_of(store, data)
    sections = list(CarReader(io.BytesIO(car)))
    target = Blockstore(tmp_path / "dst")
    leaf_cid, leaf = sections[1]
    target.put(leaf_cid, leaf)
    holed = b"".join(iter_car([root], sections[:1] + sections[2:]))  # type: ignore[list-item]
    result = import_car(io.BytesIO(holed), target)
    assert result.roots == (root,)
    assert b"".join(bytes(p) for p in iter_file(root, target)) == data  # type: ignore[arg-type]


def test_oversized_section_is_refused(tmp_path: Path) -> None:
    header = encode_car_header([HELLO])
    car = encode_varint(len(header)) + header + encode_varint(1 << 30)
    with pytest.raises(EncodingError, match="section length"):
        import_car(io.BytesIO(car), Blockstore(tmp_path / "dst"))
