"""The dag-pb node and UnixFS ``Data`` protobuf messages, encoded by hand.

Owns: the byte layout of the two protobuf messages a UnixFS file DAG is made
of, exactly as Kubo (go-merkledag + go-unixfs) writes them, and strict
decoders for reading blocks back. ``docs/spec/content.md`` gives the layout.

dag-pb (``PBNode``)::

    message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

Encoding writes every ``Links`` entry *before* ``Data`` (the historic
go-merkledag order the CIDs depend on), and inside a link Hash, Name, Tsize
in that order, omitting only fields that are ``None``.

UnixFS (``Data``)::

    required DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
    repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
    optional uint32 mode = 7; optional UnixTime mtime = 8;

Encoding writes the fields in field-number order with ``blocksizes``
unpacked (one key per value), as gogo-protobuf does for proto2.

Decoders are strict (all raise :class:`EncodingError` with the byte offset):
a dag-pb node must contain only fields 1 and 2, every link before the data,
data at most once; a link must contain Hash first and then optionally Name
and Tsize, in that order, each once; wire types must match; varints must be
minimal; lengths must stay inside the buffer; Name must be UTF-8. A UnixFS
message must have a known Type, no unknown field and no repeated singular
field (``blocksizes`` may be packed or unpacked).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from belep.content.cid import Cid, read_cid
from belep.content.multiformats import decode_varint, encode_varint
from belep.errors import CidError, EncodingError

_VARINT = 0
_LENGTH = 2


class DataType(IntEnum):
    """UnixFS node types."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """A dag-pb link. ``name`` and ``tsize`` are ``None`` when absent on the wire."""

    cid: Cid
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node. ``data`` is ``None`` when the Data field is absent."""

    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """A UnixFS ``Data`` message (only the fields a file needs are typed)."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: bytes | None = None


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _key(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, _LENGTH) + encode_varint(len(payload)) + payload


def encode_pblink(link: PBLink) -> bytes:
    """Body of one PBLink message: Hash, then Name, then Tsize."""
    out = _length_delimited(1, link.cid.to_bytes())
    if link.name is not None:
        out += _length_delimited(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _key(3, _VARINT) + encode_varint(link.tsize)
    return out


def encode_pbnode(node: PBNode) -> bytes:
    """Canonical dag-pb bytes of ``node``: all links, then data."""
    parts = [_length_delimited(2, encode_pblink(link)) for link in node.links]
    if node.data is not None:
        parts.append(_length_delimited(1, node.data))
    return b"".join(parts)


def encode_unixfs(message: UnixFSData) -> bytes:
    """UnixFS ``Data`` bytes, fields in number order, blocksizes unpacked."""
    out = bytearray(_key(1, _VARINT) + encode_varint(int(message.type)))
    if message.data is not None:
        out += _length_delimited(2, message.data)
    if message.filesize is not None:
        out += _key(3, _VARINT) + encode_varint(message.filesize)
    for size in message.blocksizes:
        out += _key(4, _VARINT) + encode_varint(size)
    for field, value in ((5, message.hash_type), (6, message.fanout), (7, message.mode)):
        if value is not None:
            out += _key(field, _VARINT) + encode_varint(value)
    if message.mtime is not None:
        out += _length_delimited(8, message.mtime)
    return bytes(out)


def leaf_frame(chunk_length: int) -> tuple[bytes, bytes]:
    """Bytes around a chunk in a dag-pb leaf holding UnixFS ``File`` data.

    ``prefix + chunk + suffix == encode_pbnode(PBNode((), encode_unixfs(
    UnixFSData(FILE, data=chunk, filesize=len(chunk)))))`` for a non-empty
    chunk; the importer hashes the three parts without concatenating them.
    """
    if chunk_length <= 0:
        raise EncodingError("a framed leaf holds at least one byte", found=chunk_length)
    length = encode_varint(chunk_length)
    unixfs_head = _key(1, _VARINT) + encode_varint(int(DataType.FILE)) + _key(2, _LENGTH) + length
    suffix = _key(3, _VARINT) + length
    unixfs_length = len(unixfs_head) + chunk_length + len(suffix)
    prefix = _key(1, _LENGTH) + encode_varint(unixfs_length) + unixfs_head
    return prefix, suffix


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _read_key(data: memoryview, position: int) -> tuple[int, int, int]:
    key, after = decode_varint(data, position)
    return key >> 3, key & 0x07, after


def _read_bytes(data: memoryview, position: int, what: str) -> tuple[memoryview, int]:
    length, start = decode_varint(data, position)
    end = start + length
    if end > len(data):
        raise EncodingError(
            f"{what} runs past the end of the message",
            expected=end,
            found=len(data),
            where=f"byte {position}",
        )
    return data[start:end], end


def _expect_wire(field: int, wire_type: int, wanted: int, position: int, what: str) -> None:
    if wire_type != wanted:
        raise EncodingError(
            f"wrong wire type for {what} (field {field})",
            expected=wanted,
            found=wire_type,
            where=f"byte {position}",
        )


def decode_pblink(data: bytes | memoryview) -> PBLink:
    """Strictly decode the body of one PBLink."""
    view = memoryview(data)
    position = 0
    last_field = 0
    cid: Cid | None = None
    name: str | None = None
    tsize: int | None = None
    while position < len(view):
        start = position
        field, wire_type, position = _read_key(view, position)
        if field not in (1, 2, 3):
            raise EncodingError("unknown PBLink field", found=field, where=f"byte {start}")
        if field <= last_field:
            raise EncodingError(
                "PBLink fields out of order or repeated",
                expected="Hash, Name, Tsize in order, once each",
                found=field,
                where=f"byte {start}",
            )
        last_field = field
        if field == 1:
            _expect_wire(field, wire_type, _LENGTH, start, "Hash")
            raw, position = _read_bytes(view, position, "PBLink Hash")
            try:
                cid, end = read_cid(raw)
            except CidError as exc:
                raise EncodingError("PBLink Hash is not a CID", where=f"byte {start}") from exc
            if end != len(raw):
                raise EncodingError("trailing bytes after link CID", where=f"byte {start}")
        elif field == 2:
            _expect_wire(field, wire_type, _LENGTH, start, "Name")
            raw, position = _read_bytes(view, position, "PBLink Name")
            try:
                name = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EncodingError("PBLink Name is not UTF-8", where=f"byte {start}") from exc
        else:
            _expect_wire(field, wire_type, _VARINT, start, "Tsize")
            tsize, position = decode_varint(view, position)
    if cid is None:
        raise EncodingError("PBLink without Hash", expected="field 1")
    return PBLink(cid, name, tsize)


def decode_pbnode(data: bytes | bytearray | memoryview) -> PBNode:
    """Strictly decode a dag-pb block."""
    view = memoryview(data)
    position = 0
    links: list[PBLink] = []
    node_data: bytes | None = None
    while position < len(view):
        start = position
        field, wire_type, position = _read_key(view, position)
        if field == 2:
            _expect_wire(field, wire_type, _LENGTH, start, "Links")
            if node_data is not None:
                raise EncodingError("PBNode Links after Data", where=f"byte {start}")
            raw, position = _read_bytes(view, position, "PBNode link")
            try:
                links.append(decode_pblink(raw))
            except EncodingError as exc:
                raise EncodingError(
                    f"malformed link {len(links)}: {exc.message}", where=f"byte {start}"
                ) from exc
        elif field == 1:
            _expect_wire(field, wire_type, _LENGTH, start, "Data")
            if node_data is not None:
                raise EncodingError("PBNode Data repeated", where=f"byte {start}")
            raw, position = _read_bytes(view, position, "PBNode Data")
            node_data = bytes(raw)
        else:
            raise EncodingError("unknown PBNode field", found=field, where=f"byte {start}")
    return PBNode(tuple(links), node_data)


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    """Strictly decode a UnixFS ``Data`` message."""
    view = memoryview(data)
    position = 0
    seen: set[int] = set()
    values: dict[int, int] = {}
    payload: bytes | None = None
    mtime: bytes | None = None
    blocksizes: list[int] = []
    while position < len(view):
        start = position
        field, wire_type, position = _read_key(view, position)
        if field == 4:
            if wire_type == _VARINT:
                size, position = decode_varint(view, position)
                blocksizes.append(size)
            elif wire_type == _LENGTH:
                packed, position = _read_bytes(view, position, "packed blocksizes")
                inner = 0
                while inner < len(packed):
                    size, inner = decode_varint(packed, inner)
                    blocksizes.append(size)
            else:
                _expect_wire(field, wire_type, _VARINT, start, "blocksizes")
            continue
        if field not in (1, 2, 3, 5, 6, 7, 8):
            raise EncodingError("unknown UnixFS field", found=field, where=f"byte {start}")
        if field in seen:
            raise EncodingError("UnixFS field repeated", found=field, where=f"byte {start}")
        seen.add(field)
        if field in (2, 8):
            _expect_wire(field, wire_type, _LENGTH, start, "Data" if field == 2 else "mtime")
            raw, position = _read_bytes(view, position, "UnixFS bytes field")
            if field == 2:
                payload = bytes(raw)
            else:
                mtime = bytes(raw)
        else:
            _expect_wire(field, wire_type, _VARINT, start, f"UnixFS field {field}")
            values[field], position = decode_varint(view, position)
    if 1 not in values:
        raise EncodingError("UnixFS message without Type", expected="field 1")
    try:
        node_type = DataType(values[1])
    except ValueError as exc:
        raise EncodingError("unknown UnixFS type", found=values[1]) from exc
    return UnixFSData(
        type=node_type,
        data=payload,
        filesize=values.get(3),
        blocksizes=tuple(blocksizes),
        hash_type=values.get(5),
        fanout=values.get(6),
        mode=values.get(7),
        mtime=mtime,
    )
