"""Content identifiers (CIDs) for the blocks of the content store.

Owns: the :class:`Cid` value, its binary and text forms, and the check that
a block's bytes match its CID (:func:`verify_block`).

Supported, and nothing else (anything else raises :class:`CidError`):

* CIDv0: the bare sha2-256 multihash ``0x12 0x20 <32 bytes>``, always dag-pb,
  written in base58btc (``Qm…``, 46 characters).
* CIDv1: ``varint(1) varint(codec) multihash`` with codec dag-pb (0x70) or
  raw (0x55) and a sha2-256 multihash, written in multibase base32 lower case
  (``b…``). For reading, base58btc (``z…``) and base16 (``f…``) multibase
  strings are accepted too.

Invariants: a :class:`Cid` is valid by construction (version, codec and
digest length are checked in ``__post_init__``), so any ``Cid`` that exists
can be turned into a storage key safely. ``parse_cid(str(cid)) == cid``.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from belep.content.multiformats import (
    decode_base32,
    decode_base58btc,
    decode_varint,
    encode_base32,
    encode_base58btc,
    encode_varint,
)
from belep.errors import CidError, EncodingError, HashMismatch

DAG_PB = 0x70
"""Multicodec of dag-pb (MerkleDAG protobuf) blocks."""
RAW = 0x55
"""Multicodec of raw blocks (CIDv1 leaves)."""
SHA2_256 = 0x12
"""Multihash code of sha2-256."""
SHA2_256_LENGTH = 32

_CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}
_MAX_CID_TEXT = 128


@dataclass(frozen=True, slots=True, repr=False)
class Cid:
    """A version-0 or version-1 CID over a sha2-256 digest."""

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise CidError("unsupported CID version", expected="0 or 1", found=self.version)
        if self.codec not in _CODEC_NAMES:
            raise CidError(
                "unsupported codec", expected="dag-pb (0x70) or raw (0x55)", found=hex(self.codec)
            )
        if self.version == 0 and self.codec != DAG_PB:
            raise CidError("a CIDv0 is always dag-pb", expected=hex(DAG_PB), found=hex(self.codec))
        if not isinstance(self.digest, bytes) or len(self.digest) != SHA2_256_LENGTH:
            raise CidError(
                "sha2-256 digest must be 32 bytes",
                expected=SHA2_256_LENGTH,
                found=len(self.digest) if isinstance(self.digest, bytes) else type(self.digest),
            )

    @property
    def codec_name(self) -> str:
        """``"dag-pb"`` or ``"raw"``."""
        return _CODEC_NAMES[self.codec]

    @property
    def multihash(self) -> bytes:
        """The sha2-256 multihash: ``0x12 0x20 || digest``."""
        return bytes((SHA2_256, SHA2_256_LENGTH)) + self.digest

    def to_bytes(self) -> bytes:
        """Binary CID (as stored in dag-pb links and CAR files)."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def encode(self) -> str:
        """Canonical text: base58btc for v0, multibase base32 (``b…``) for v1."""
        if self.version == 0:
            return encode_base58btc(self.multihash)
        return "b" + encode_base32(self.to_bytes())

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"Cid({self.encode()!r})"

    def to_v1(self) -> Cid:
        """The same content addressed by a CIDv1 (for v0, the dag-pb v1 form)."""
        return Cid(1, self.codec, self.digest)


def compute_cid(data: bytes | bytearray | memoryview, *, version: int, codec: int) -> Cid:
    """The CID of a block with bytes ``data``."""
    return Cid(version, codec, hashlib.sha256(data).digest())


def verify_block(cid: Cid, data: bytes | bytearray | memoryview) -> None:
    """Raise :class:`HashMismatch` naming ``cid`` unless ``data`` hashes to it."""
    found = hashlib.sha256(data).digest()
    if found != cid.digest:
        raise HashMismatch(
            "block bytes do not match their CID", expected=cid.digest, found=found, where=str(cid)
        )


def decode_multihash(data: bytes | memoryview, offset: int = 0) -> tuple[bytes, int]:
    """Read a sha2-256 multihash at ``data[offset:]``; return ``(digest, end)``."""
    try:
        code, position = decode_varint(data, offset)
        length, position = decode_varint(data, position)
    except EncodingError as exc:
        raise CidError("malformed multihash", where=f"byte {offset}") from exc
    if code != SHA2_256:
        raise CidError("unsupported multihash function", expected="sha2-256 (0x12)", found=code)
    if length != SHA2_256_LENGTH:
        raise CidError("wrong sha2-256 digest length", expected=SHA2_256_LENGTH, found=length)
    end = position + length
    if end > len(data):
        raise CidError("truncated multihash", expected=end, found=len(data))
    return bytes(data[position:end]), end


def read_cid(data: bytes | memoryview, offset: int = 0) -> tuple[Cid, int]:
    """Read the binary CID that starts at ``data[offset:]``; return ``(cid, end)``.

    A CIDv0 starts with the multihash bytes ``0x12 0x20``; anything else is
    read as ``varint(version) varint(codec) multihash``.
    """
    if len(data) - offset >= 2 and data[offset] == SHA2_256 and data[offset + 1] == SHA2_256_LENGTH:
        digest, end = decode_multihash(data, offset)
        return Cid(0, DAG_PB, digest), end
    try:
        version, position = decode_varint(data, offset)
        codec, position = decode_varint(data, position)
    except EncodingError as exc:
        raise CidError("malformed binary CID", where=f"byte {offset}") from exc
    if version != 1:
        raise CidError("unsupported binary CID version", expected=1, found=version)
    digest, end = decode_multihash(data, position)
    return Cid(1, codec, digest), end


def decode_cid(data: bytes | memoryview) -> Cid:
    """A binary CID that must span all of ``data``."""
    cid, end = read_cid(data, 0)
    if end != len(data):
        raise CidError("trailing bytes after binary CID", expected=end, found=len(data))
    return cid


def parse_cid(text: str) -> Cid:
    """Parse a CID string (``Qm…`` v0, or multibase ``b``/``z``/``f`` v1).

    Raises :class:`CidError` for anything else; the result re-encodes to the
    canonical form, which for base32 v1 strings is ``text`` itself.
    """
    if not isinstance(text, str) or not text or len(text) > _MAX_CID_TEXT:
        raise CidError("not a CID string", found=text)
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = decode_base58btc(text)
            cid = decode_cid(raw)
            if cid.version != 0:
                raise CidError("Qm… string is not a CIDv0", found=text)
            return cid
        prefix, body = text[0], text[1:]
        if prefix == "b":
            raw = decode_base32(body)
        elif prefix == "z":
            raw = decode_base58btc(body)
        elif prefix == "f":
            if body != body.lower():
                raise CidError("base16 multibase must be lower case", found=text)
            raw = bytes.fromhex(body)
        else:
            raise CidError(
                "unsupported multibase prefix", expected="'Qm', 'b', 'z' or 'f'", found=prefix
            )
    except (EncodingError, ValueError) as exc:
        raise CidError("malformed CID string", found=text) from exc
    cid = decode_cid(raw)
    if cid.version != 1:
        raise CidError("a multibase CID string must be a CIDv1", found=text)
    return cid
