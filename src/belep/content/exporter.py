"""The UnixFS file exporter: CID in, verified bytes (or blocks) out.

Owns: walking a UnixFS file DAG in order, checking that its structure is
self-consistent, and producing either the file's bytes (optionally a byte
range) or the DAG's blocks in depth-first pre-order (for CAR export and the
trustless gateway).

It reads blocks from a :class:`BlockSource`, whose contract is to return
bytes already verified against the CID (the blockstore re-hashes every read;
an in-memory source must do the same). On top of that the exporter checks,
and raises :class:`SchemaError` naming the block's CID otherwise:

* a dag-pb block carries UnixFS Data of type ``File`` or ``Raw``;
* it has exactly one ``blocksizes`` entry per link;
* its ``filesize`` (when present) equals its own data plus its blocksizes;
* every child's file size equals the parent's ``blocksizes`` entry for it;
* the DAG is at most :data:`MAX_DEPTH` levels deep.

Memory: one block per level of the path being walked (a few hundred KiB),
whatever the file size. Pure: no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from belep.content.cid import RAW, Cid
from belep.content.dagpb import DataType, decode_pbnode, decode_unixfs
from belep.errors import EncodingError, SchemaError, ValidationError

MAX_DEPTH = 32
"""Deeper DAGs are refused (Kubo's balanced DAG for 1 EiB is 6 levels)."""


class BlockSource(Protocol):
    """Somewhere to read blocks from."""

    def get(self, cid: Cid) -> bytes:
        """The block's bytes, verified against ``cid``.

        Raises :class:`~belep.errors.NotFound` if absent and a
        :class:`~belep.errors.CorruptStore` or
        :class:`~belep.errors.HashMismatch` naming the CID if they do not match.
        """


@dataclass(frozen=True, slots=True)
class FileNode:
    """One decoded block of a UnixFS file."""

    cid: Cid
    data: bytes
    """File bytes held in this block itself (before any children's bytes)."""
    children: tuple[Cid, ...]
    blocksizes: tuple[int, ...]
    filesize: int


def decode_file_node(cid: Cid, block: bytes) -> FileNode:
    """Decode and check one block of a UnixFS file (see the module rules)."""
    if cid.codec == RAW:
        return FileNode(cid, block, (), (), len(block))
    try:
        node = decode_pbnode(block)
        if node.data is None:
            raise SchemaError("dag-pb node without UnixFS Data", where=str(cid))
        unixfs = decode_unixfs(node.data)
    except EncodingError as exc:
        raise EncodingError(f"malformed block: {exc.message}", where=str(cid)) from exc
    if unixfs.type not in (DataType.FILE, DataType.RAW):
        raise SchemaError(
            "not a UnixFS file block",
            expected="File or Raw",
            found=unixfs.type.name,
            where=str(cid),
        )
    if len(unixfs.blocksizes) != len(node.links):
        raise SchemaError(
            "one blocksizes entry per link required",
            expected=len(node.links),
            found=len(unixfs.blocksizes),
            where=str(cid),
        )
    own = unixfs.data or b""
    total = len(own) + sum(unixfs.blocksizes)
    if unixfs.filesize is not None and unixfs.filesize != total:
        raise SchemaError(
            "filesize differs from data plus blocksizes",
            expected=total,
            found=unixfs.filesize,
            where=str(cid),
        )
    return FileNode(cid, own, tuple(link.cid for link in node.links), unixfs.blocksizes, total)


@dataclass(frozen=True, slots=True)
class VisitedBlock:
    """A block met by :func:`walk_file`, with the file offset its bytes start at."""

    cid: Cid
    block: bytes
    node: FileNode
    start: int


def file_size(root: Cid, source: BlockSource) -> int:
    """Size in bytes of the file whose root is ``root`` (reads one block)."""
    return decode_file_node(root, source.get(root)).filesize


def walk_file(
    root: Cid,
    source: BlockSource,
    *,
    start: int = 0,
    end: int | None = None,
    skip_repeats: bool = False,
) -> Iterator[VisitedBlock]:
    """Blocks of the file in depth-first pre-order, limited to those whose
    bytes meet ``[start, end)`` (the whole file by default).

    With ``skip_repeats`` a subtree whose root CID was already visited is not
    visited again (a CAR without duplicates); otherwise every occurrence is.
    """
    if start < 0 or (end is not None and end < start):
        raise ValidationError("invalid byte range", found=(start, end))
    seen: set[Cid] = set()
    yield from _walk(root, source, 0, None, start, end, 0, seen if skip_repeats else None)


def _walk(
    cid: Cid,
    source: BlockSource,
    offset: int,
    expected: int | None,
    start: int,
    end: int | None,
    depth: int,
    seen: set[Cid] | None,
) -> Iterator[VisitedBlock]:
    if depth > MAX_DEPTH:
        raise SchemaError("DAG deeper than allowed", expected=MAX_DEPTH, where=str(cid))
    if seen is not None:
        if cid in seen:
            return
        seen.add(cid)
    block = source.get(cid)
    node = decode_file_node(cid, block)
    if expected is not None and node.filesize != expected:
        raise SchemaError(
            "child size differs from its parent's blocksizes entry",
            expected=expected,
            found=node.filesize,
            where=str(cid),
        )
    yield VisitedBlock(cid, block, node, offset)
    child_offset = offset + len(node.data)
    for child, size in zip(node.children, node.blocksizes, strict=True):
        child_end = child_offset + size
        if child_end > start and (end is None or child_offset < end) and size > 0:
            yield from _walk(child, source, child_offset, size, start, end, depth + 1, seen)
        elif end is not None and child_offset >= end:
            return
        child_offset = child_end


def iter_file(
    root: Cid, source: BlockSource, *, offset: int = 0, length: int | None = None
) -> Iterator[bytes | memoryview]:
    """The file's bytes from ``offset`` (``length`` bytes, or to the end), in pieces.

    Every block is verified before any of its bytes are yielded.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValidationError("invalid byte range", found=(offset, length))
    end = None if length is None else offset + length
    if length == 0:
        return
    for visited in walk_file(root, source, start=offset, end=end):
        data = visited.node.data
        if not data:
            continue
        piece_start = visited.start
        piece_end = piece_start + len(data)
        low = max(offset, piece_start)
        high = piece_end if end is None else min(end, piece_end)
        if low >= high:
            continue
        if low == piece_start and high == piece_end:
            yield data
        else:
            yield memoryview(data)[low - piece_start : high - piece_start]


def iter_dag(
    root: Cid, source: BlockSource, *, duplicates: bool = False
) -> Iterator[tuple[Cid, bytes]]:
    """Every block of any dag-pb/raw DAG, depth-first pre-order (links in order).

    A block linked more than once is produced once, unless ``duplicates``
    asks for every occurrence (a CAR with ``dups=y``).
    """
    seen: set[Cid] = set()
    stack = [(root, 0)]
    while stack:
        cid, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SchemaError("DAG deeper than allowed", expected=MAX_DEPTH, where=str(cid))
        if not duplicates:
            if cid in seen:
                continue
            seen.add(cid)
        block = source.get(cid)
        yield cid, block
        if cid.codec != RAW:
            try:
                links = decode_pbnode(block).links
            except EncodingError as exc:
                raise EncodingError(f"malformed block: {exc.message}", where=str(cid)) from exc
            stack.extend((link.cid, depth + 1) for link in reversed(links))
