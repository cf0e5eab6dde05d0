"""Batched, pipelined block writes into a :class:`Blockstore`: the :class:`BlockWriter`.

Owns: how blocks reach ``blocks/`` (temporary file, grouped durability,
rename) and the two helper threads that do it, so the caller's thread keeps
hashing while the file system works (``hashlib`` and the system calls release
the GIL):

* the caller copies each block once in :meth:`BlockWriter.put_block` and
  queues it (at most 8 blocks queued, so memory stays constant);
* the *writer* thread writes each block to a temporary file under ``tmp/``,
  asks the kernel to start writing it to disk at once
  (:meth:`Blockstore.start_writeback`, a hint: where it is missing or refused
  the group's sync does all the writing), and hands each full group (256
  blocks or 64 MiB by default; 64 blocks where each file needs its own
  ``fdatasync``, its fd held open until then) to the syncer;
* the *syncer* thread makes a group durable (:meth:`Blockstore.sync_files`),
  renames its files into place, and makes the renames durable
  (:meth:`Blockstore.sync_directories`), while the writer thread already
  writes the next group.

Invariants: a block file appears under ``blocks/`` only by ``rename`` of a
complete temporary file whose data is durable, and :meth:`BlockWriter.flush` /
:meth:`BlockWriter.commit` return only after every group handed so far is
durable and renamed, with the renames durable (so a root pinned by
:meth:`BlockWriter.commit` never names a block that could vanish in a crash).
A failure on either thread is raised on the caller's thread by the next
:meth:`BlockWriter.put_block`, :meth:`BlockWriter.flush` or
:meth:`BlockWriter.commit`; nothing of a failed group is renamed into place.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from belep.content.blockstore import MAX_BLOCK_SIZE, Blockstore, block_key
from belep.content.cid import Cid, verify_block
from belep.content.importer import BlockPart
from belep.errors import HashMismatch, StorageError

_GROUP_BLOCKS = 64
"""Blocks per durable group when each file is ``fdatasync``ed (their fds stay open)."""
_GROUP_BLOCKS_SYNCFS = 256
"""Blocks per durable group when one ``syncfs`` covers the group (no fd held)."""
_GROUP_BYTES = 64 << 20
"""Bytes per durable group (16 and 32 MiB measured no faster on /work)."""
_QUEUED_BLOCKS = 8
"""Blocks copied and waiting for the writer thread (bounds memory to ~2 MiB)."""


@dataclass(slots=True)
class _Pending:
    fd: int
    """Open only while the group still needs per-file ``fdatasync``; else -1."""
    temporary: str
    final: str


@dataclass(frozen=True, slots=True)
class _Job:
    cid: Cid
    key: str
    data: bytes


class BlockWriter:
    """Writes many blocks with grouped durability; a :class:`BlockSink`.

    :meth:`put_block` copies the block (one copy, so the caller's buffer is
    free again when it returns) and hands it to a writer thread through a
    queue of at most 8 blocks, so the caller hashes the next chunk while
    earlier blocks are written (``hashlib`` and the file system calls release
    the GIL). The writer thread writes each block to a temporary file and
    starts its writeback (unless ``early_writeback=False``); every
    ``group_blocks`` (256; 64 when each file needs its own ``fdatasync``) or
    ``group_bytes`` (64 MiB), and on :meth:`flush` / :meth:`commit`, the group is made
    durable (:meth:`Blockstore.sync_files`), renamed into place, and the
    renames made durable (:meth:`Blockstore.sync_directories`). A failure of
    the writer thread is raised by the next :meth:`put_block`, :meth:`flush`
    or :meth:`commit`; nothing of a failed group is renamed into place.

    Until :meth:`commit` returns, a concurrent :meth:`Blockstore.gc` waits. On
    an exception inside ``with``, uncommitted temporary files are removed;
    blocks of earlier groups stay (unpinned, so the next garbage collection
    removes them unless something pins them). One caller at a time.
    """

    def __init__(
        self,
        store: Blockstore,
        *,
        group_blocks: int | None = None,
        group_bytes: int | None = None,
        early_writeback: bool = True,
    ) -> None:
        self._store = store
        self._tmp = str(store._tmp)
        self._blocks = str(store._blocks)
        self._hold_fds = store.sync and not store.syncs_whole_filesystem
        default = _GROUP_BLOCKS if self._hold_fds else _GROUP_BLOCKS_SYNCFS
        if group_blocks is not None and group_blocks < 1:
            raise StorageError(f"a group needs at least one block, not {group_blocks}")
        if group_bytes is not None and group_bytes < 1:
            raise StorageError(f"a group needs at least one byte, not {group_bytes}")
        self._group_blocks = group_blocks or default
        self._group_bytes = group_bytes or _GROUP_BYTES
        self._early_writeback = early_writeback and store.sync
        self.early_writebacks = 0
        """Blocks whose writeback was started as soon as they were written."""
        self._shards: set[str] = set()
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._handed: set[str] = set()
        self._roots: list[Cid] = []
        self._closed = False
        self._jobs: queue.Queue[_Job | threading.Event | None] = queue.Queue(_QUEUED_BLOCKS)
        self._groups: queue.Queue[list[_Pending] | threading.Event | None] = queue.Queue(1)
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._discarding = False
        self.written = 0
        """Blocks newly written (not already present)."""
        self._lock = store._lock(exclusive=False)
        self._lock.__enter__()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    def put(self, cid: Cid, data: bytes | bytearray | memoryview) -> None:
        """Verify ``data`` against ``cid`` (:class:`HashMismatch`), then write it."""
        if len(data) > MAX_BLOCK_SIZE:
            raise HashMismatch(
                "block larger than the store accepts",
                expected=f"<= {MAX_BLOCK_SIZE} bytes",
                found=len(data),
                where=str(cid),
            )
        verify_block(cid, data)
        self.put_block(cid, (data,))

    def put_block(self, cid: Cid, parts: Sequence[BlockPart]) -> None:
        """Write a block whose CID the caller has already established."""
        if self._closed:
            raise StorageError("block writer already closed")
        self._raise_failure()
        key = block_key(cid)
        if key in self._handed:
            return
        self._handed.add(key)
        # One copy of the block (none if the caller already gave immutable bytes).
        data = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        if self._thread is None:
            self._syncer = threading.Thread(target=self._sync_run, name="blocksync", daemon=True)
            self._syncer.start()
            self._thread = threading.Thread(target=self._run, name="blockwriter", daemon=True)
            self._thread.start()
        self._jobs.put(_Job(cid, key, data))

    def pin_on_commit(self, cid: Cid) -> None:
        """Pin ``cid`` in :meth:`commit`, after its blocks are durable and before
        garbage collection can run again. The caller vouches the DAG is complete."""
        self._roots.append(cid)

    def drain(self) -> None:
        """Wait until the writer thread has written every block handed so far
        (full groups renamed into place; the last partial group stays pending)."""
        if self._thread is not None:
            self._jobs.join()
            self._groups.join()
        self._raise_failure()

    def flush(self) -> None:
        """Make the blocks written so far durable and visible."""
        if self._thread is None:
            return
        done = threading.Event()
        self._jobs.put(done)
        done.wait()
        self._raise_failure()

    def commit(self) -> None:
        """Make every written block durable and visible, pin the roots asked
        for, and release the store lock."""
        if self._closed:
            return
        try:
            self.flush()
            for root in self._roots:
                self._store.pin(root)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._stop()
        self._lock.release()

    def abort(self) -> None:
        """Drop uncommitted blocks; release the store lock."""
        if self._closed:
            return
        self._closed = True
        try:
            self._discarding = True
            self._stop()
            self._discard(self._pending)
        finally:
            self._lock.release()

    # -- internals (the writer thread) ---------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._syncer is not None:
            self._groups.put(None)
            self._syncer.join()
            self._syncer = None

    def _run(self) -> None:
        """The writer thread: temporary files, then whole groups to the syncer."""
        while (job := self._jobs.get()) is not None:
            try:
                if isinstance(job, threading.Event):
                    # The syncer sets it once every earlier group is done.
                    self._hand_group()
                    self._groups.put(job)
                elif self._failure is None:
                    self._write(job)
            except BaseException as exc:  # re-raised on the caller's thread
                self._failure = exc
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def _sync_run(self) -> None:
        """The syncer thread: makes one group durable and visible while the
        writer thread already writes the next one."""
        while (group := self._groups.get()) is not None:
            try:
                if isinstance(group, threading.Event):
                    group.set()
                elif self._failure is not None or self._discarding:
                    self._discard(group)
                else:
                    self._flush_group(group)
            except BaseException as exc:  # re-raised on the caller's thread
                self._failure = exc
            finally:
                self._groups.task_done()
        self._groups.task_done()

    def _hand_group(self) -> None:
        if self._pending:
            group, self._pending, self._pending_bytes = self._pending, [], 0
            self._groups.put(group)

    def _write(self, job: _Job) -> None:
        shard = f"{self._blocks}/{job.key[-3:-1]}"
        final = f"{shard}/{job.key}"
        size = len(job.data)
        if self._store.is_intact(job.cid, size, path=Path(final)):
            return
        temporary = f"{self._tmp}/{job.key}.{os.getpid()}.{id(self)}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, job.data)
                if self._early_writeback:
                    if self._store.start_writeback(fd):
                        self.early_writebacks += 1
                    else:
                        self._early_writeback = False
                if not self._hold_fds:
                    os.close(fd)
                    fd = -1
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                os.unlink(temporary)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write block {job.cid}: {exc}") from exc
        self._pending.append(_Pending(fd, temporary, final))
        self._pending_bytes += size
        if len(self._pending) >= self._group_blocks or self._pending_bytes >= self._group_bytes:
            self._hand_group()

    def _flush_group(self, group: list[_Pending]) -> None:
        sync = self._store.sync
        directories: set[str] = set()
        try:
            if sync:
                self._store.sync_files(p.fd for p in group if p.fd >= 0)
            for pending in group:
                if pending.fd >= 0:
                    os.close(pending.fd)
                    pending.fd = -1
                shard = pending.final[: pending.final.rindex("/")]
                if shard not in self._shards:
                    try:
                        os.mkdir(shard)
                        directories.add(self._blocks)
                    except FileExistsError:
                        pass
                    self._shards.add(shard)
                os.replace(pending.temporary, pending.final)
                directories.add(shard)
            if sync:
                self._store.sync_directories(Path(d) for d in directories)
        except OSError as exc:
            self._discard(group)
            raise StorageError(f"cannot commit blocks: {exc}") from exc
        self.written += len(group)

    @staticmethod
    def _discard(group: list[_Pending]) -> None:
        for pending in group:
            if pending.fd >= 0:
                os.close(pending.fd)
                pending.fd = -1
            Path(pending.temporary).unlink(missing_ok=True)
        group.clear()


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])
