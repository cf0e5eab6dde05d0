"""CAR v1 (Content Addressable aRchive) export and import.

Owns: the CARv1 byte format and moving a file's DAG between a CAR stream
and the :class:`~belep.content.blockstore.Blockstore`, so a file can travel
to or from any IPFS node (``ipfs dag export`` / ``ipfs dag import``).

Format (https://ipld.io/specs/transport/car/carv1/)::

    varint(len(header)) header                 header = DAG-CBOR {"roots": [CID, ...], "version": 1}
    ( varint(len(cid) + len(block)) cid block )*

The header is written as canonical DAG-CBOR (keys length-first: ``roots``,
then ``version``; a CID is tag 42 over a byte string ``0x00 || cid``).
Reading accepts exactly that map (either key order), and rejects anything
else: other keys, indefinite lengths, CARv2 (version 2), no roots.

Invariants:

* Every block read is verified against its CID before anything uses it
  (:class:`HashMismatch` naming the CID); a truncated stream raises
  :class:`EncodingError` with the byte offset.
* :func:`import_car` pins the roots only after every block has been
  verified, written durably, and every root's DAG has been shown complete;
  on any error nothing is pinned (blocks already written stay unpinned and
  are removed by the next garbage collection).
* :func:`export_car` writes each block once, depth-first pre-order from the
  root, as Kubo's ``ipfs dag export`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from belep.content.blockstore import MAX_BLOCK_SIZE, Blockstore, block_key
from belep.content.cid import RAW, Cid, decode_cid, read_cid, verify_block
from belep.content.dagpb import decode_pbnode
from belep.content.exporter import iter_dag
from belep.content.multiformats import decode_varint, encode_varint
from belep.errors import CidError, EncodingError

MAX_HEADER_SIZE = 1 << 16
_CID_TAG = 42


# --------------------------------------------------------------------------
# Header (a tiny strict DAG-CBOR subset)
# --------------------------------------------------------------------------


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes(((major << 5) | value,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes(((major << 5) | info,)) + value.to_bytes(width, "big")
    raise EncodingError("CBOR value too large", found=value)


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def encode_car_header(roots: Sequence[Cid | bytes]) -> bytes:
    """The CARv1 header bytes (without the leading length varint).

    A root given as ``bytes`` is a binary CID written verbatim (the gateway's
    identity-CID probe root, which :class:`Cid` deliberately cannot hold).
    """
    out = bytearray(_cbor_head(5, 2))
    out += _cbor_text("roots") + _cbor_head(4, len(roots))
    for root in roots:
        payload = b"\x00" + (root if isinstance(root, bytes) else root.to_bytes())
        out += _cbor_head(6, _CID_TAG) + _cbor_head(2, len(payload)) + payload
    out += _cbor_text("version") + _cbor_head(0, 1)
    return bytes(out)


class _CborReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def head(self) -> tuple[int, int]:
        if self.position >= len(self.data):
            raise EncodingError("truncated CAR header", where=f"header byte {self.position}")
        initial = self.data[self.position]
        self.position += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        widths = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in widths:
            raise EncodingError(
                "unsupported CBOR item in CAR header (indefinite length, float or simple)",
                found=hex(initial),
                where=f"header byte {self.position - 1}",
            )
        width = widths[info]
        raw = self.data[self.position : self.position + width]
        if len(raw) != width:
            raise EncodingError("truncated CAR header", where=f"header byte {self.position}")
        self.position += width
        value = int.from_bytes(raw, "big")
        if value < (24 if width == 1 else 1 << (8 * width // 2)):
            raise EncodingError("non-minimal CBOR length in CAR header", found=value)
        return major, value

    def expect(self, major: int, what: str) -> int:
        found, value = self.head()
        if found != major:
            raise EncodingError(f"CAR header: {what} has the wrong CBOR type", found=found)
        return value

    def take(self, length: int) -> bytes:
        end = self.position + length
        if end > len(self.data):
            raise EncodingError("truncated CAR header", where=f"header byte {self.position}")
        raw = self.data[self.position : end]
        self.position = end
        return raw

    def text(self) -> str:
        raw = self.take(self.expect(3, "map key"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError("CAR header key is not UTF-8") from exc

    def cid(self) -> Cid:
        if self.expect(6, "root") != _CID_TAG:
            raise EncodingError("CAR header root is not a CID (tag 42)")
        payload = self.take(self.expect(2, "root CID bytes"))
        if not payload or payload[0] != 0:
            raise EncodingError("CAR header root CID lacks the 0x00 multibase prefix")
        try:
            return decode_cid(payload[1:])
        except CidError as exc:
            raise EncodingError(f"CAR header root: {exc.message}") from exc


def decode_car_header(data: bytes) -> tuple[Cid, ...]:
    """The roots of a CARv1 header; strict (see the module docstring)."""
    reader = _CborReader(data)
    entries = reader.expect(5, "header")
    roots: tuple[Cid, ...] | None = None
    version: int | None = None
    for _ in range(entries):
        key = reader.text()
        if key == "roots" and roots is None:
            count = reader.expect(4, "roots")
            roots = tuple(reader.cid() for _ in range(count))
        elif key == "version" and version is None:
            version = reader.expect(0, "version")
        else:
            raise EncodingError("unexpected or repeated key in CAR header", found=key)
    if reader.position != len(data):
        raise EncodingError("trailing bytes in CAR header", found=len(data) - reader.position)
    if version != 1:
        raise EncodingError("unsupported CAR version (only CARv1)", expected=1, found=version)
    if not roots:
        raise EncodingError("CAR header has no roots")
    return roots


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def iter_car(roots: Sequence[Cid | bytes], blocks: Iterable[tuple[Cid, bytes]]) -> Iterator[bytes]:
    """The CAR's bytes, in pieces (header, then per block its frame and data)."""
    header = encode_car_header(roots)
    yield encode_varint(len(header)) + header
    for cid, block in blocks:
        cid_bytes = cid.to_bytes()
        yield encode_varint(len(cid_bytes) + len(block)) + cid_bytes
        yield block


def export_car(root: Cid, store: Blockstore, out: BinaryIO) -> int:
    """Write the DAG under ``root`` as a CARv1; return the bytes written."""
    written = 0
    for piece in iter_car([root], iter_dag(root, store)):
        out.write(piece)
        written += len(piece)
    return written


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


class CarReader:
    """Reads a CARv1 stream; iterate for verified ``(cid, block)`` pairs."""

    def __init__(self, stream: BinaryIO, *, max_block_size: int = MAX_BLOCK_SIZE) -> None:
        self._stream = stream
        self._max = max_block_size
        self.offset = 0
        length = self._read_varint(allow_eof=False)
        if length is None or length > MAX_HEADER_SIZE:
            raise EncodingError("CAR header length out of range", found=length)
        self.roots = decode_car_header(self._read_exactly(length))

    def _read_exactly(self, count: int) -> bytes:
        data = self._stream.read(count)
        if len(data) != count:
            raise EncodingError(
                "truncated CAR", expected=count, found=len(data), where=f"byte {self.offset}"
            )
        self.offset += count
        return data

    def _read_varint(self, *, allow_eof: bool) -> int | None:
        raw = bytearray()
        while True:
            byte = self._stream.read(1)
            if not byte:
                if allow_eof and not raw:
                    return None
                raise EncodingError("truncated CAR (inside a varint)", where=f"byte {self.offset}")
            raw += byte
            if byte[0] < 0x80 or len(raw) >= 9:
                break
        value, _ = decode_varint(bytes(raw))
        self.offset += len(raw)
        return value

    def __iter__(self) -> Iterator[tuple[Cid, bytes]]:
        while True:
            start = self.offset
            length = self._read_varint(allow_eof=True)
            if length is None:
                return
            if length == 0 or length > self._max + 64:
                raise EncodingError(
                    "CAR section length out of range", found=length, where=f"byte {start}"
                )
            section = self._read_exactly(length)
            try:
                cid, end = read_cid(section)
            except CidError as exc:
                raise EncodingError(
                    f"CAR section CID: {exc.message}", where=f"byte {start}"
                ) from exc
            block = section[end:]
            verify_block(cid, block)
            yield cid, block


@dataclass(frozen=True, slots=True)
class CarImport:
    """What :func:`import_car` stored."""

    roots: tuple[Cid, ...]
    blocks: int
    new_blocks: int


def import_car(stream: BinaryIO, store: Blockstore) -> CarImport:
    """Verify and store every block of a CARv1, then pin its roots.

    Raises :class:`EncodingError` (truncated or malformed CAR),
    :class:`HashMismatch` (a block that is not what its CID says) or
    :class:`~belep.errors.NotFound` (a root's DAG is incomplete); nothing is
    pinned then.
    """
    reader = CarReader(stream)
    present: set[str] = set()
    needed: dict[str, Cid] = {}
    count = 0
    with store.writer() as writer:
        for cid, block in reader:
            writer.put_block(cid, (block,))
            present.add(block_key(cid))
            count += 1
            if cid.codec != RAW:
                try:
                    links = decode_pbnode(block).links
                except EncodingError as exc:
                    raise EncodingError(f"malformed block: {exc.message}", where=str(cid)) from exc
                for link in links:
                    needed.setdefault(block_key(link.cid), link.cid)
        for root in reader.roots:
            needed.setdefault(block_key(root), root)
        writer.flush()
        outside = [cid for key, cid in needed.items() if key not in present]
        # Blocks the CAR leaves out must already be in the store with their
        # whole DAG below them; reading them proves it (or raises NotFound).
        store.reachable_keys(outside, verify_raw=True)
        for root in reader.roots:
            writer.pin_on_commit(root)
    return CarImport(reader.roots, count, writer.written)
