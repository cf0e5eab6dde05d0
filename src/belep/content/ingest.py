"""Adding a file to the store: what ``belep add`` and the node's upload path do.

Owns: :func:`add_file`, which imports a stream into a :class:`Blockstore`
(durable blocks, then the pin) and returns the three facts the chain records
for an evidence file: CID, size and SHA-256 of the bytes.

The file's SHA-256 is computed on one helper thread from copies of the
chunks, in parallel with the importer's per-block hashing on the calling
thread (``hashlib`` releases the GIL on large buffers), so the extra digest
costs a memory copy instead of a second hashing pass on the critical path.
At most 8 chunk copies (2 MiB) wait for the helper at any time.

Invariant: the pin is written only after every block is durable (see
:class:`~belep.content.blockstore.BlockWriter`); on any error nothing is
pinned and the error propagates.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import replace

from belep.content.blockstore import Blockstore
from belep.content.importer import CHUNK_SIZE, FileImporter, ImportResult, Readable


class _ParallelDigest:
    """SHA-256 of everything passed to :meth:`update`, hashed on a helper thread."""

    def __init__(self) -> None:
        self._hasher = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self._hasher.update(piece)

    def update(self, data: memoryview) -> None:
        self._queue.put(bytes(data))

    def digest(self) -> bytes:
        self.close()
        return self._hasher.digest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Tee:
    """A readable that also feeds every byte read to a digest."""

    def __init__(self, source: Readable, digest: _ParallelDigest) -> None:
        self._source = source
        self._digest = digest

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        count = self._source.readinto(buffer)
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return count


def add_file(
    source: Readable,
    store: Blockstore,
    *,
    cid_version: int = 0,
    pin: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> ImportResult:
    """Import ``source`` to its end into ``store``; pin its root if asked.

    Returns the CID, the size and the SHA-256 of the bytes read.
    """
    digest = _ParallelDigest()
    try:
        with store.writer() as writer:
            importer = FileImporter(writer, cid_version=cid_version, chunk_size=chunk_size)
            importer.write_from(_Tee(source, digest))
            result = importer.finish()
            if pin:
                writer.pin_on_commit(result.cid)
        return replace(result, sha256=digest.digest())
    finally:
        digest.close()
