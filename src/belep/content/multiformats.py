"""Unsigned varints and the two multibase alphabets a CID string uses.

Owns: the unsigned LEB128 varint of the multiformats specs (used by CIDs,
multihashes and CAR framing) and the base58btc / base32 (RFC 4648, lower
case, no padding) text encodings.

Invariants:

* :func:`decode_varint` accepts only the minimal encoding of a value below
  2**63 (at most 9 bytes), as the unsigned-varint spec requires, so every
  value has exactly one byte form.
* The decoders are strict: a character outside the alphabet, padding, a
  non-canonical base32 tail or an empty string raise :class:`EncodingError`.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii

from belep.errors import EncodingError

MAX_VARINT_BYTES = 9
"""The unsigned-varint spec caps a varint at 9 bytes (values below 2**63)."""

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: index for index, char in enumerate(_B58_ALPHABET)}
_B32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def encode_varint(value: int) -> bytes:
    """Minimal unsigned LEB128 encoding of ``value`` (0 <= value < 2**63)."""
    if value < 0 or value >= 1 << 63:
        raise EncodingError("varint out of range", expected="0 <= n < 2**63", found=value)
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode the varint at ``data[offset:]``; return ``(value, end_offset)``.

    Raises :class:`EncodingError` if the varint is truncated, longer than
    9 bytes, or not minimally encoded.
    """
    value = 0
    shift = 0
    position = offset
    end = len(data)
    while True:
        if position >= end:
            raise EncodingError("truncated varint", where=f"byte {offset}")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and position - offset > 1:
                raise EncodingError("non-minimal varint", where=f"byte {offset}")
            return value, position
        shift += 7
        if position - offset >= MAX_VARINT_BYTES:
            raise EncodingError(
                "varint longer than 9 bytes", expected="<= 9 bytes", where=f"byte {offset}"
            )


def encode_base58btc(data: bytes) -> str:
    """Bitcoin-alphabet base58 of ``data`` (leading zero bytes become ``1``)."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(_B58_ALPHABET[remainder])
    return "1" * zeros + "".join(reversed(digits))


def decode_base58btc(text: str) -> bytes:
    """Inverse of :func:`encode_base58btc`; strict about the alphabet."""
    if not text:
        raise EncodingError("empty base58btc string")
    number = 0
    for position, char in enumerate(text):
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise EncodingError(
                "character outside the base58btc alphabet", found=char, where=f"char {position}"
            )
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + body


def encode_base32(data: bytes) -> str:
    """RFC 4648 base32, lower case, without padding (multibase ``b``)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def decode_base32(text: str) -> bytes:
    """Inverse of :func:`encode_base32`; rejects padding and non-canonical tails."""
    if not text:
        raise EncodingError("empty base32 string")
    for position, char in enumerate(text):
        if char not in _B32_ALPHABET:
            raise EncodingError(
                "character outside the lower-case base32 alphabet",
                found=char,
                where=f"char {position}",
            )
    if len(text) % 8 in (1, 3, 6):
        raise EncodingError("impossible base32 length", found=len(text))
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except binascii.Error as exc:
        raise EncodingError("invalid base32", found=text) from exc
    if encode_base32(raw) != text:
        raise EncodingError("non-canonical base32 (stray trailing bits)", found=text)
    return raw
