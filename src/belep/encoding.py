"""Canonical encoding of everything BELEP hashes or signs.

The encoding is a strict subset of CBOR (RFC 8949) in its *core deterministic*
form (§4.2.1); the byte layout is specified in ``docs/spec/encoding.md``.

Invariants:

* ``encode`` is a pure function of the value: the same value gives the same
  bytes on every machine and run.
* ``decode`` accepts exactly the bytes ``encode`` produces and nothing else:
  ``encode(decode(b)) == b`` for every ``b`` that ``decode`` accepts. Anything
  else — non-minimal lengths, unsorted or duplicate map keys, indefinite
  lengths, floats, tags, trailing bytes, invalid UTF-8, input or nesting over
  the limits — raises :class:`belep.errors.EncodingError` naming the byte
  offset, what was expected and what was found.

Supported values (:data:`Value`): ``None``, ``bool``, ``int`` in
``[-2**64, 2**64 - 1]``, ``bytes``, ``str``, ``list``/``tuple`` (decoded as
``list``) and ``dict`` whose keys are ``int`` or ``str``.

This module does no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TypeAlias, Union

from belep.errors import EncodingError

Value: TypeAlias = Union[  # noqa: UP007 (a recursive alias needs Union with string forward refs)
    bool,
    int,
    bytes,
    str,
    Sequence["Value"],
    Mapping[str, "Value"],
    Mapping[int, "Value"],
    Mapping["Key", "Value"],
    None,
]
Key: TypeAlias = int | str

#: Largest input ``decode`` accepts by default (bytes).
MAX_INPUT = 64 * 1024 * 1024
#: Deepest nesting of arrays and maps ``decode`` and ``encode`` accept.
MAX_DEPTH = 64

_UINT_MAX = (1 << 64) - 1
_NINT_MIN = -(1 << 64)

_MT_UINT = 0
_MT_NINT = 1
_MT_BYTES = 2
_MT_TEXT = 3
_MT_ARRAY = 4
_MT_MAP = 5
_MT_TAG = 6
_MT_SIMPLE = 7

_FALSE = 0xF4
_TRUE = 0xF5
_NULL = 0xF6

_MAJOR_NAMES = {
    _MT_UINT: "unsigned integer",
    _MT_NINT: "negative integer",
    _MT_BYTES: "byte string",
    _MT_TEXT: "text string",
    _MT_ARRAY: "array",
    _MT_MAP: "map",
    _MT_TAG: "tag",
    _MT_SIMPLE: "simple value or float",
}

_pack_b = struct.Struct(">B").pack
_pack_h = struct.Struct(">BH").pack
_pack_i = struct.Struct(">BI").pack
_pack_q = struct.Struct(">BQ").pack


def _head(major: int, arg: int) -> bytes:
    """The shortest head for ``major`` with argument ``arg`` (0 <= arg < 2**64)."""
    mt = major << 5
    if arg < 24:
        return _pack_b(mt | arg)
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return _pack_h(mt | 25, arg)
    if arg < 0x100000000:
        return _pack_i(mt | 26, arg)
    return _pack_q(mt | 27, arg)


def encode(value: Value) -> bytes:
    """Return the canonical encoding of ``value``.

    Raises :class:`EncodingError` for unsupported types (floats, sets, objects),
    integers outside 64 bits, map keys that are not ``int``/``str``, duplicate
    keys after normalisation, and nesting deeper than :data:`MAX_DEPTH`.
    """
    out = bytearray()
    _encode_into(out, value, 0)
    return bytes(out)


def _encode_into(out: bytearray, value: Value, depth: int) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif type(value) is int:
        if value >= 0:
            if value > _UINT_MAX:
                raise EncodingError(
                    "integer too large", expected=f"<= {_UINT_MAX}", found=value, where="encode"
                )
            out += _head(_MT_UINT, value)
        else:
            if value < _NINT_MIN:
                raise EncodingError(
                    "integer too small", expected=f">= {_NINT_MIN}", found=value, where="encode"
                )
            out += _head(_MT_NINT, -1 - value)
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += _head(_MT_BYTES, len(raw))
        out += raw
    elif type(value) is str:
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodingError(
                "text is not valid Unicode (lone surrogate)",
                expected="encodable text",
                found=value[exc.start : exc.end],
                where="encode",
            ) from exc
        out += _head(_MT_TEXT, len(raw))
        out += raw
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise EncodingError("nesting too deep", expected=f"<= {MAX_DEPTH}", found=depth + 1)
        out += _head(_MT_ARRAY, len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise EncodingError("nesting too deep", expected=f"<= {MAX_DEPTH}", found=depth + 1)
        items: list[tuple[bytes, Value]] = []
        for key, item in value.items():
            if type(key) is not int and type(key) is not str:
                raise EncodingError(
                    "unsupported map key type",
                    expected="int or str",
                    found=type(key).__name__,
                    where="encode",
                )
            items.append((encode(key), item))
        items.sort(key=lambda pair: pair[0])
        out += _head(_MT_MAP, len(items))
        for encoded_key, item in items:
            out += encoded_key
            _encode_into(out, item, depth + 1)
    else:
        raise EncodingError(
            "unsupported type",
            expected="None, bool, int, bytes, str, list, tuple or dict",
            found=type(value).__name__,
            where="encode",
        )


def decode(data: bytes | bytearray | memoryview, *, max_size: int = MAX_INPUT) -> Value:
    """Decode exactly one canonical value occupying all of ``data``.

    Raises :class:`EncodingError` for anything :func:`encode` would not have
    produced, and for input longer than ``max_size`` bytes.
    """
    buf = bytes(data)
    if len(buf) > max_size:
        raise EncodingError("input too large", expected=f"<= {max_size} bytes", found=len(buf))
    if not buf:
        raise EncodingError("empty input", expected="one encoded value", found="0 bytes")
    value, end = _Decoder(buf).value(0, 0)
    _check_end(end, len(buf))
    return value


def decode_map_spans(
    data: bytes | bytearray | memoryview, *, max_size: int = MAX_INPUT
) -> tuple[dict[Key, Value], dict[Key, tuple[int, int]]]:
    """Decode one canonical *map* like :func:`decode`, with each top-level value's byte span.

    Returns ``(mapping, spans)`` where ``spans[key] = (start, end)`` delimits
    the bytes of ``mapping[key]`` in ``data``. Because the decoder accepts
    canonical bytes only, ``data[start:end] == encode(mapping[key])`` for every
    key: a caller may reuse those bytes instead of re-encoding the value.
    Raises :class:`EncodingError` as :func:`decode` does, and if the value is
    not a map.
    """
    buf = bytes(data)
    if len(buf) > max_size:
        raise EncodingError("input too large", expected=f"<= {max_size} bytes", found=len(buf))
    if not buf:
        raise EncodingError("empty input", expected="one encoded value", found="0 bytes")
    decoder = _Decoder(buf)
    major, arg, pos = decoder._head(0)
    if major != _MT_MAP:
        raise EncodingError(
            "wrong type", expected="map", found=_MAJOR_NAMES[major], where="offset 0"
        )
    spans: dict[Key, tuple[int, int]] = {}
    mapping, end = decoder.map(pos, arg, 0, spans)
    _check_end(end, len(buf))
    return mapping, spans


def _check_end(end: int, size: int) -> None:
    if end != size:
        raise EncodingError(
            "trailing bytes after value",
            expected=f"{end} bytes",
            found=f"{size} bytes",
            where=f"offset {end}",
        )


class _Decoder:
    __slots__ = ("buf", "size")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)

    def _need(self, pos: int, count: int, what: str) -> None:
        if count > self.size - pos:
            raise EncodingError(
                f"truncated {what}",
                expected=f"{count} more bytes",
                found=f"{max(self.size - pos, 0)}",
                where=f"offset {pos}",
            )

    def _head(self, pos: int) -> tuple[int, int, int]:
        """Return (major, argument, next offset), enforcing the shortest form."""
        self._need(pos, 1, "head")
        initial = self.buf[pos]
        major, info = initial >> 5, initial & 0x1F
        if major == _MT_SIMPLE:
            return major, info, pos + 1
        if info < 24:
            return major, info, pos + 1
        if info == 24:
            self._need(pos + 1, 1, "argument")
            arg, minimum, end = self.buf[pos + 1], 24, pos + 2
        elif info == 25:
            self._need(pos + 1, 2, "argument")
            arg, minimum, end = int.from_bytes(self.buf[pos + 1 : pos + 3]), 0x100, pos + 3
        elif info == 26:
            self._need(pos + 1, 4, "argument")
            arg, minimum, end = int.from_bytes(self.buf[pos + 1 : pos + 5]), 0x10000, pos + 5
        elif info == 27:
            self._need(pos + 1, 8, "argument")
            arg, minimum, end = int.from_bytes(self.buf[pos + 1 : pos + 9]), 1 << 32, pos + 9
        elif info == 31:
            raise EncodingError(
                "indefinite length not allowed",
                expected="definite length",
                found=_MAJOR_NAMES[major],
                where=f"offset {pos}",
            )
        else:
            raise EncodingError(
                "reserved additional information",
                expected="0..27",
                found=info,
                where=f"offset {pos}",
            )
        if arg < minimum:
            raise EncodingError(
                "over-long (non-minimal) integer or length",
                expected=f"shortest form for {arg}",
                found=f"{1 << (info - 24)}-byte argument",
                where=f"offset {pos}",
            )
        return major, arg, end

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        if pos < self.size and self.buf[pos] & 0x1F < 24:
            # Fast path: an argument inside the initial byte is always the shortest form.
            initial = self.buf[pos]
            major, arg, pos_after = initial >> 5, initial & 0x1F, pos + 1
        else:
            major, arg, pos_after = self._head(pos)
        if major == _MT_UINT:
            return arg, pos_after
        if major == _MT_NINT:
            return -1 - arg, pos_after
        if major == _MT_BYTES:
            if arg > self.size - pos_after:
                self._need(pos_after, arg, "byte string")
            return self.buf[pos_after : pos_after + arg], pos_after + arg
        if major == _MT_TEXT:
            if arg > self.size - pos_after:
                self._need(pos_after, arg, "text string")
            raw = self.buf[pos_after : pos_after + arg]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EncodingError(
                    "invalid UTF-8 in text string",
                    expected="UTF-8",
                    found=raw[exc.start : exc.end],
                    where=f"offset {pos_after + exc.start}",
                ) from exc
            return text, pos_after + arg
        if major == _MT_ARRAY:
            self._check_depth(depth, pos)
            # Every item takes at least one byte: reject impossible counts before allocating.
            self._need(pos_after, arg, "array")
            items: list[Value] = []
            cursor = pos_after
            for _ in range(arg):
                item, cursor = self.value(cursor, depth + 1)
                items.append(item)
            return items, cursor
        if major == _MT_MAP:
            self._check_depth(depth, pos)
            return self.map(pos_after, arg, depth, None)
        if major == _MT_TAG:
            raise EncodingError(
                "tags not allowed",
                expected="untagged value",
                found=f"tag {arg}",
                where=f"offset {pos}",
            )
        # major 7
        initial = self.buf[pos]
        if initial == _FALSE:
            return False, pos_after
        if initial == _TRUE:
            return True, pos_after
        if initial == _NULL:
            return None, pos_after
        raise EncodingError(
            "unsupported simple value or float",
            expected="false, true or null",
            found=f"0x{initial:02x}",
            where=f"offset {pos}",
        )

    def map(
        self, pos_after: int, arg: int, depth: int, spans: dict[Key, tuple[int, int]] | None
    ) -> tuple[dict[Key, Value], int]:
        """Decode ``arg`` key/value pairs from ``pos_after`` (the map's head already read).

        Every envelope and record is a map of short text keys and mostly short
        scalar values, decoded on every node for every transaction: those are
        decoded here without a call per item (the same checks as :meth:`value`:
        an argument below 24 or a one-byte argument of at least 24 is the
        shortest form). Anything else goes through :meth:`value`.
        """
        self._need(pos_after, 2 * arg, "map")
        result: dict[Key, Value] = {}
        cursor = pos_after
        previous_key: bytes | None = None
        buf = self.buf
        size = self.size
        for _ in range(arg):
            key_start = cursor
            initial = buf[cursor] if cursor < size else 0xFF
            if 0x60 <= initial < 0x78 and (end := cursor + 1 + (initial & 0x1F)) <= size:
                # Fast path: a short text key (the usual record field name).
                try:
                    key: Key = buf[cursor + 1 : end].decode("utf-8")
                except UnicodeDecodeError:
                    self.value(key_start, depth + 1)  # raises with the offset
                    raise  # (never reached)
                cursor = end
            else:
                other, cursor = self.value(cursor, depth + 1)
                if type(other) is not int and type(other) is not str:
                    raise EncodingError(
                        "unsupported map key type",
                        expected="integer or text string",
                        found=type(other).__name__,
                        where=f"offset {key_start}",
                    )
                key = other
            encoded_key = buf[key_start:cursor]
            if previous_key is not None and encoded_key <= previous_key:
                if encoded_key == previous_key:
                    raise EncodingError(
                        "duplicate map key",
                        expected="unique keys",
                        found=key,
                        where=f"offset {key_start}",
                    )
                raise EncodingError(
                    "map keys not in canonical order",
                    expected=f"key sorting after {previous_key.hex()}",
                    found=encoded_key,
                    where=f"offset {key_start}",
                )
            previous_key = encoded_key
            item_start = cursor
            initial = buf[cursor] if cursor < size else 0xFF
            major = initial >> 5
            info = initial & 0x1F
            item: Value
            if major == _MT_UINT and info < 24:
                item = info
                cursor += 1
            elif major in (_MT_TEXT, _MT_BYTES) and (
                info < 24 or (info == 24 and cursor + 1 < size and buf[cursor + 1] >= 24)
            ):
                if info < 24:
                    start = cursor + 1
                    end = start + info
                else:
                    start = cursor + 2
                    end = start + buf[cursor + 1]
                if end > size:
                    item, cursor = self.value(item_start, depth + 1)  # raises: truncated
                elif major == _MT_BYTES:
                    item = buf[start:end]
                    cursor = end
                else:
                    try:
                        item = buf[start:end].decode("utf-8")
                    except UnicodeDecodeError:
                        item, cursor = self.value(item_start, depth + 1)  # raises
                    cursor = end
            else:
                item, cursor = self.value(cursor, depth + 1)
            result[key] = item
            if spans is not None:
                spans[key] = (item_start, cursor)
        return result, cursor

    @staticmethod
    def _check_depth(depth: int, pos: int) -> None:
        if depth >= MAX_DEPTH:
            raise EncodingError(
                "nesting too deep",
                expected=f"<= {MAX_DEPTH}",
                found=depth + 1,
                where=f"offset {pos}",
            )


# --------------------------------------------------------------------------
# Typed access to decoded values (for record decoders)
# --------------------------------------------------------------------------


def expect_map(value: Value, what: str) -> dict[Key, Value]:
    """Return ``value`` as a map or raise :class:`EncodingError` naming ``what``."""
    if not isinstance(value, dict):
        raise EncodingError(f"{what}: wrong type", expected="map", found=type(value).__name__)
    return value


def expect_list(value: Value, what: str) -> list[Value]:
    """Return ``value`` as an array or raise naming ``what``."""
    if not isinstance(value, list):
        raise EncodingError(f"{what}: wrong type", expected="array", found=type(value).__name__)
    return value


def expect_int(
    value: Value, what: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` as an integer (not a bool), optionally within bounds (inclusive)."""
    if type(value) is not int:
        raise EncodingError(f"{what}: wrong type", expected="integer", found=type(value).__name__)
    if minimum is not None and value < minimum:
        raise EncodingError(f"{what}: out of range", expected=f">= {minimum}", found=value)
    if maximum is not None and value > maximum:
        raise EncodingError(f"{what}: out of range", expected=f"<= {maximum}", found=value)
    return value


def expect_bytes(value: Value, what: str, *, size: int | None = None) -> bytes:
    """Return ``value`` as bytes, optionally of an exact ``size``."""
    if not isinstance(value, bytes):
        raise EncodingError(f"{what}: wrong type", expected="bytes", found=type(value).__name__)
    if size is not None and len(value) != size:
        raise EncodingError(f"{what}: wrong length", expected=size, found=len(value))
    return value


def expect_str(value: Value, what: str) -> str:
    """Return ``value`` as a text string."""
    if not isinstance(value, str):
        raise EncodingError(f"{what}: wrong type", expected="text", found=type(value).__name__)
    return value


def expect_bool(value: Value, what: str) -> bool:
    """Return ``value`` as a boolean."""
    if not isinstance(value, bool):
        raise EncodingError(f"{what}: wrong type", expected="bool", found=type(value).__name__)
    return value


def expect_fields(
    mapping: Mapping[Key, Value] | Mapping[str, Value], what: str, fields: frozenset[str]
) -> None:
    """Require ``mapping`` to have exactly the keys ``fields``."""
    keys = set(mapping)
    if keys != fields:
        missing = sorted(str(k) for k in fields - keys)
        extra = sorted(str(k) for k in keys - fields)
        raise EncodingError(
            f"{what}: wrong fields",
            expected=sorted(fields),
            found=f"missing {missing}, unexpected {extra}",
        )
