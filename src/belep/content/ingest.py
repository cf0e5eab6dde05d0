"""Adding a file to the store: what ``belep add`` and the node's upload path do.

Owns: :func:`add_file`, which imports a stream into a :class:`Blockstore`
(durable blocks, then the pin) and returns the three facts the chain records
for an evidence file: CID, size and SHA-256 of the bytes.

Work split (measured in ``docs/BENCHMARKS.md``): the calling thread reads
each chunk into the importer's buffer and hashes it twice there (block CID
and file SHA-256, both while the chunk is in cache, no copy for either); the
:class:`~belep.content.blockstore.BlockWriter` copies each block once and
writes it on its own thread, so the file system calls overlap the hashing.
An earlier version hashed the file on a third thread from a copy of every
chunk: faster only when both cores are free, slower (more CPU: the copy and
the hand-offs) when another process holds one, which is the normal case on
a shared node. A digest thread hashing the importer's buffer in place (no
copy; each read waits for the previous chunk's digest) did not help either:
2.10 x the reference against 1.97 x inline, tmpfs, idle machine.

Invariant: the pin is written only after every block is durable (see
:class:`~belep.content.blockstore.BlockWriter`); on any error nothing is
pinned and the error propagates.
"""

from __future__ import annotations

from belep.content.blockstore import Blockstore
from belep.content.importer import CHUNK_SIZE, FileImporter, ImportResult, Readable


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
    with store.writer() as writer:
        importer = FileImporter(
            writer, cid_version=cid_version, compute_sha256=True, chunk_size=chunk_size
        )
        importer.write_from(source)
        result = importer.finish()
        if pin:
            writer.pin_on_commit(result.cid)
    return result
