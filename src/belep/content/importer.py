"""The UnixFS file importer: bytes in, Kubo-identical blocks and CID out.

Owns: chunking, the balanced DAG layout and the encoding of every block of a
file, exactly as ``ipfs add`` in Kubo does with its default
``unixfs-v0-2015`` profile (``cid_version=0``) or with ``--cid-version=1``
(raw leaves). ``docs/spec/content.md`` is the normative description; the
names used there (``import_file``, ``FileImporter.write``,
``FileImporter.finish``, ``compute_parent``) are the ones below.

Algorithm (streaming, memory bounded by one chunk plus ``max_links`` link
entries per tree level):

1. Cut the input into ``chunk_size`` (262144) byte chunks; only the last may
   be shorter. An empty input is one empty leaf.
2. Each chunk becomes a *leaf*: for CIDv0 a dag-pb node whose Data is a
   UnixFS ``File`` message carrying the chunk and its ``filesize``; for CIDv1
   the chunk itself as a ``raw`` block.
3. A single leaf is the file's root. Otherwise leaves are grouped in order
   into parents of at most ``max_links`` (174) links; the parents are grouped
   the same way, level by level, until one node remains. A parent is a dag-pb
   node with one link per child (empty Name, cumulative Tsize) and a UnixFS
   ``File`` Data with the total ``filesize`` and one ``blocksizes`` entry per
   child (the file bytes below that child).

A full group is encoded the moment its last child arrives, so at most one
partial group per level is held. Each block is hashed exactly once, while
the chunk is still in the importer's buffer; a leaf is hashed as
``prefix, chunk, suffix`` without building the concatenation.

Invariants: the same bytes and parameters always give the same blocks and
CID; the blocks are handed to the sink children before parents, so a sink
that persists them in order never holds a parent whose children are missing.

Pure: no I/O of its own (it reads only the readable it is given and writes
only to the sink it is given), no clock, no threads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from belep.content.cid import DAG_PB, RAW, Cid
from belep.content.dagpb import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    encode_pbnode,
    encode_unixfs,
    leaf_frame,
)
from belep.errors import ConfigError

CHUNK_SIZE = 262_144
"""Kubo's default fixed chunk size (``size-262144``)."""
MAX_LINKS = 174
"""Kubo's default maximum number of links per node of the balanced layout."""

BlockPart = bytes | bytearray | memoryview


class BlockSink(Protocol):
    """Where the importer hands each block it produces."""

    def put_block(self, cid: Cid, parts: Sequence[BlockPart]) -> None:
        """Store the block whose bytes are the concatenation of ``parts``.

        The parts may be views of the importer's buffer: they are valid only
        during the call and must be copied or written before it returns.
        """


@runtime_checkable
class Readable(Protocol):
    """A blocking binary stream (an open file, ``io.BytesIO``, a socket file)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        """Read up to ``len(buffer)`` bytes into ``buffer``; 0 at end of stream."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What importing one file gave."""

    cid: Cid
    size: int
    sha256: bytes | None
    """SHA-256 of the whole file, when asked for (``compute_sha256=True``)."""
    block_count: int
    """Blocks handed to the sink (a repeated chunk counts every time)."""


class _Child(NamedTuple):
    cid: Cid
    tsize: int
    filesize: int


def compute_parent(children: Sequence[_Child], cid_version: int) -> tuple[Cid, bytes, int]:
    """Encode the parent of ``children``; return ``(cid, block, tsize)``."""
    links = tuple(PBLink(child.cid, "", child.tsize) for child in children)
    data = UnixFSData(
        type=DataType.FILE,
        filesize=sum(child.filesize for child in children),
        blocksizes=tuple(child.filesize for child in children),
    )
    block = encode_pbnode(PBNode(links, encode_unixfs(data)))
    cid = Cid(cid_version, DAG_PB, hashlib.sha256(block).digest())
    return cid, block, len(block) + sum(child.tsize for child in children)


def empty_file_block(cid_version: int) -> tuple[Cid, bytes]:
    """The one block of an empty file (a leaf with no data)."""
    if cid_version == 1:
        return Cid(1, RAW, hashlib.sha256(b"").digest()), b""
    block = encode_pbnode(PBNode((), encode_unixfs(UnixFSData(type=DataType.FILE, filesize=0))))
    return Cid(0, DAG_PB, hashlib.sha256(block).digest()), block


class FileImporter:
    """Push bytes with :meth:`write` or :meth:`write_from`, then :meth:`finish`.

    ``sink=None`` only computes the CID (``belep cid``, ``ipfs add -n``).
    """

    def __init__(
        self,
        sink: BlockSink | None = None,
        *,
        cid_version: int = 0,
        compute_sha256: bool = False,
        chunk_size: int = CHUNK_SIZE,
        max_links: int = MAX_LINKS,
    ) -> None:
        if cid_version not in (0, 1):
            raise ConfigError("unsupported CID version", expected="0 or 1", found=cid_version)
        if chunk_size < 1 or chunk_size > 1 << 21:
            raise ConfigError("chunk size out of range", expected="1..2097152", found=chunk_size)
        if max_links < 2:
            raise ConfigError("a node needs room for at least 2 links", found=max_links)
        self._sink = sink
        self._version = cid_version
        self._chunk_size = chunk_size
        self._max_links = max_links
        self._buffer = bytearray(chunk_size)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._size = 0
        self._leaves = 0
        self._blocks = 0
        self._levels: list[list[_Child]] = [[]]
        self._file_hash = hashlib.sha256() if compute_sha256 else None
        self._full_frame = leaf_frame(chunk_size) if cid_version == 0 else (b"", b"")
        self._result: ImportResult | None = None

    @property
    def size(self) -> int:
        """Bytes accepted so far."""
        return self._size + self._filled

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the file (copied into the chunk buffer)."""
        self._check_open()
        view = memoryview(data).cast("B")
        offset = 0
        while offset < len(view):
            room = self._chunk_size - self._filled
            take = min(room, len(view) - offset)
            self._view[self._filled : self._filled + take] = view[offset : offset + take]
            self._filled += take
            offset += take
            if self._filled == self._chunk_size:
                self._emit_leaf()

    def write_from(self, source: Readable) -> int:
        """Read ``source`` to its end straight into the chunk buffer; return bytes read."""
        self._check_open()
        total = 0
        while True:
            count = source.readinto(self._view[self._filled :])
            if count is None:
                raise TypeError("write_from needs a blocking stream (readinto returned None)")
            if count == 0:
                return total
            self._filled += count
            total += count
            if self._filled == self._chunk_size:
                self._emit_leaf()

    def finish(self) -> ImportResult:
        """Emit the last leaf and the parents above it; return the root."""
        if self._result is not None:
            return self._result
        if self._filled:
            self._emit_leaf()
        if self._leaves == 0:
            cid, block = empty_file_block(self._version)
            self._put(cid, (block,))
            root = cid
        elif self._leaves == 1:
            root = self._levels[0][0].cid
        else:
            root = self._collapse()
        digest = self._file_hash.digest() if self._file_hash is not None else None
        self._result = ImportResult(root, self._size, digest, self._blocks)
        self._view.release()
        return self._result

    # ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._result is not None:
            raise ValueError("importer already finished")

    def _put(self, cid: Cid, parts: Sequence[BlockPart]) -> None:
        self._blocks += 1
        if self._sink is not None:
            self._sink.put_block(cid, parts)

    def _emit_leaf(self) -> None:
        length = self._filled
        chunk = self._view[:length]
        if self._file_hash is not None:
            self._file_hash.update(chunk)
        if self._version == 0:
            prefix, suffix = self._full_frame if length == self._chunk_size else leaf_frame(length)
            hasher = hashlib.sha256(prefix)
            hasher.update(chunk)
            hasher.update(suffix)
            cid = Cid(0, DAG_PB, hasher.digest())
            self._put(cid, (prefix, chunk, suffix))
            tsize = len(prefix) + length + len(suffix)
        else:
            cid = Cid(1, RAW, hashlib.sha256(chunk).digest())
            self._put(cid, (chunk,))
            tsize = length
        chunk.release()
        self._size += length
        self._filled = 0
        self._leaves += 1
        self._push(0, _Child(cid, tsize, length))

    def _push(self, level: int, child: _Child) -> None:
        while True:
            if level == len(self._levels):
                self._levels.append([])
            group = self._levels[level]
            group.append(child)
            if len(group) < self._max_links:
                return
            child = self._parent_of(group)
            self._levels[level] = []
            level += 1

    def _parent_of(self, children: Sequence[_Child]) -> _Child:
        cid, block, tsize = compute_parent(children, self._version)
        self._put(cid, (block,))
        return _Child(cid, tsize, sum(child.filesize for child in children))

    def _collapse(self) -> Cid:
        level = 0
        while True:
            group = self._levels[level]
            higher = any(self._levels[above] for above in range(level + 1, len(self._levels)))
            if not higher and len(group) == 1:
                return group[0].cid
            if group:
                self._levels[level] = []
                self._push(level + 1, self._parent_of(group))
            level += 1


def import_file(
    source: Readable | Iterable[bytes | bytearray | memoryview],
    sink: BlockSink | None = None,
    *,
    cid_version: int = 0,
    compute_sha256: bool = False,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> ImportResult:
    """Import a whole file from a blocking readable or an iterable of byte strings."""
    importer = FileImporter(
        sink,
        cid_version=cid_version,
        compute_sha256=compute_sha256,
        chunk_size=chunk_size,
        max_links=max_links,
    )
    if isinstance(source, Readable):
        importer.write_from(source)
    else:
        for piece in source:
            importer.write(piece)
    return importer.finish()
