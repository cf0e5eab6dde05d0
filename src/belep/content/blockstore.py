"""The on-disk blockstore: one file per block, pins, garbage collection.

Owns: the directory layout below, atomic and durable block writes, verified
reads, pins and garbage collection.

Layout (``root`` is the store directory)::

    root/blocks/<shard>/<key>   one block; key = base32(multihash), shard = key[-3:-1]
    root/pins/<cid>             an empty file per pinned root (CID text)
    root/tmp/                   blocks being written
    root/lock                   flock: writers shared, garbage collection exclusive

The key is derived from a parsed, validated :class:`Cid` (lower-case base32
of its sha2-256 multihash), never from caller text, so no request can name a
path outside ``blocks/``. Blocks are keyed by multihash as in Kubo: the same
bytes stored as ``raw`` and as ``dag-pb`` share one file. The shard is the
next-to-last two characters of the key (go-ds-flatfs ``next-to-last/2``),
which spreads keys evenly over 1024 directories, all created with a new store.

Invariants:

* A file under ``blocks/`` only ever appears by ``rename`` of a complete,
  durable temporary file, so after a crash a block file is either absent or
  complete. Durability is made per group of blocks: on Linux with two
  ``syncfs(2)`` calls on the store's filesystem (data, then renames), which
  also flushes whatever else is pending on that filesystem; elsewhere with
  ``fdatasync`` per file and ``fsync`` per directory. With ``sync=False``
  (tests, scratch stores) nothing is synced.
* Every read re-hashes the bytes: :meth:`Blockstore.get` returns bytes that
  match the CID or raises :class:`CorruptStore` naming the CID.
* Writing a block that is already stored re-checks the stored copy and
  replaces it if it no longer matches (re-adding a file heals rot).
* A root is pinned only by :meth:`Blockstore.pin`, which callers invoke after
  the whole DAG has been committed; :meth:`Blockstore.gc` deletes exactly the
  blocks not reachable from a pin, while holding the exclusive lock that every
  :class:`BlockWriter` holds shared until it commits.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from belep.content.cid import RAW, Cid, parse_cid, verify_block
from belep.content.dagpb import decode_pbnode
from belep.content.multiformats import encode_base32
from belep.errors import CidError, CorruptStore, HashMismatch, NotFound, StorageError

if TYPE_CHECKING:
    from belep.content.blockwriter import BlockWriter

MAX_BLOCK_SIZE = 4 << 20
"""Largest block accepted (Kubo's limit is 2 MiB for bitswap; leave headroom)."""


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
"""The alphabet of block keys (RFC 4648 base32, lower case): the shard characters."""


def block_key(cid: Cid) -> str:
    """Storage key of a block: lower-case base32 of its multihash."""
    return encode_base32(cid.multihash)


@dataclass(frozen=True, slots=True)
class GcReport:
    """What a garbage collection removed and kept."""

    removed_blocks: int
    removed_bytes: int
    kept_blocks: int


class Blockstore:
    """A directory of blocks. Safe to share between threads of one process."""

    def __init__(self, root: Path | str, *, sync: bool = True) -> None:
        self.root = Path(root)
        self.sync = sync
        self._blocks = self.root / "blocks"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        try:
            for directory in (self._blocks, self._pins, self._tmp):
                directory.mkdir(parents=True, exist_ok=True)
            (self.root / "lock").touch(exist_ok=True)
            if len(os.listdir(self._blocks)) < len(_BASE32) ** 2:
                self._create_shards()  # a new store, or one whose creation was cut short
        except OSError as exc:
            raise StorageError(f"cannot open blockstore at {self.root}: {exc}") from exc

    def _create_shards(self) -> None:
        """Create the missing ones of the 1024 shard directories (and make them durable),
        so that adding a file creates only its block files: directory creation is paid
        once per store, not in every early add (a 256 MiB file touches ~650 shards). Every
        open checks that all are there (one directory listing), so a creation cut short
        by a crash is completed by the next open."""
        for first in _BASE32:
            for second in _BASE32:
                (self._blocks / f"{first}{second}").mkdir(exist_ok=True)
        if self.sync:
            _fsync_directory(self._blocks)

    # -- paths ---------------------------------------------------------

    def block_path(self, cid: Cid) -> Path:
        """Where the block of ``cid`` lives (whether or not it exists)."""
        return self._key_path(block_key(cid))

    def _key_path(self, key: str) -> Path:
        return self._blocks / key[-3:-1] / key

    # -- reading -------------------------------------------------------

    def has(self, cid: Cid) -> bool:
        """True if a block file for ``cid`` exists (not re-hashed)."""
        return self.block_path(cid).is_file()

    def get(self, cid: Cid) -> bytes:
        """The block's bytes, re-hashed against ``cid``.

        Raises :class:`NotFound` if absent and :class:`CorruptStore` (naming
        the CID) if the stored bytes no longer match.
        """
        path = self.block_path(cid)
        try:
            data = _read_block_file(path)
        except FileNotFoundError:
            raise NotFound(f"block {cid}") from None
        except OSError as exc:
            raise StorageError(f"cannot read block {cid}: {exc}") from exc
        if len(data) > MAX_BLOCK_SIZE:
            raise CorruptStore(f"block {cid} is corrupt: larger than {MAX_BLOCK_SIZE} bytes")
        try:
            verify_block(cid, data)
        except HashMismatch as exc:
            raise CorruptStore(
                f"block {cid} is corrupt: stored bytes hash to {exc.found.hex()}"
            ) from exc
        return data

    def is_intact(self, cid: Cid, size: int | None = None, *, path: Path | None = None) -> bool:
        """True if the block is stored and its bytes still match ``cid``.

        Writers call this before skipping a block that already exists, so
        adding a file again heals a block that has rotted on disk.
        """
        path = path or self.block_path(cid)
        try:
            if size is not None and path.stat().st_size != size:
                return False
            data = _read_block_file(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot read block {cid}: {exc}") from exc
        return hashlib.sha256(data).digest() == cid.digest

    def iter_keys(self) -> Iterator[str]:
        """Keys of every stored block (any order)."""
        for shard in sorted(self._blocks.iterdir()):
            if shard.is_dir():
                for entry in sorted(shard.iterdir()):
                    yield entry.name

    # -- writing -------------------------------------------------------

    def writer(
        self,
        *,
        group_blocks: int | None = None,
        group_bytes: int | None = None,
        early_writeback: bool = True,
    ) -> BlockWriter:
        """A batch writer; use as a context manager (commits on success).

        ``group_blocks`` / ``group_bytes`` override how many blocks / bytes make
        a durable group; ``early_writeback=False`` leaves the writeback of
        each block to the group's sync.
        """
        from belep.content.blockwriter import BlockWriter  # it imports this module

        return BlockWriter(
            self,
            group_blocks=group_blocks,
            group_bytes=group_bytes,
            early_writeback=early_writeback,
        )

    def put(self, cid: Cid, data: bytes | bytearray | memoryview) -> None:
        """Verify ``data`` against ``cid`` and store it durably.

        Raises :class:`HashMismatch` (nothing written) if it does not match.
        """
        with self.writer() as writer:
            writer.put(cid, data)

    def delete(self, cid: Cid) -> bool:
        """Remove a block; True if it existed. Pins are not consulted."""
        try:
            self.block_path(cid).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete block {cid}: {exc}") from exc
        return True

    # -- durability ----------------------------------------------------

    def sync_files(self, fds: Iterable[int]) -> None:
        """Make the data of the open files ``fds`` (all in this store) durable.

        On Linux one ``syncfs`` of the store's filesystem does it for the whole
        group (one journal commit instead of one per file); elsewhere each file
        is ``fdatasync``ed.
        """
        if not self._syncfs_whole_filesystem():
            for fd in fds:
                os.fdatasync(fd)

    def sync_directories(self, directories: Iterable[Path]) -> None:
        """Make renames into ``directories`` (all in this store) durable."""
        if not self._syncfs_whole_filesystem():
            for directory in sorted(directories):
                _fsync_directory(directory)

    def start_writeback(self, fd: int) -> bool:
        """Ask the kernel to start writing the open file ``fd`` to disk now.

        Only a hint that shortens the later :meth:`sync_files` (which alone
        makes the data durable): Linux ``sync_file_range(2)`` with
        ``SYNC_FILE_RANGE_WRITE``, which queues the dirty pages for writing
        without waiting for them. Returns False, doing nothing, when the store
        does not sync or the call is unavailable or refused (then
        :meth:`sync_files` writes the data itself).
        """
        if not self.sync or _SYNC_FILE_RANGE is None:
            return False
        return _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) == 0

    @property
    def syncs_whole_filesystem(self) -> bool:
        """True if :meth:`sync_files` ignores its fds (one ``syncfs`` does it all)."""
        return _SYNCFS is not None

    def _syncfs_whole_filesystem(self) -> bool:
        if _SYNCFS is None:
            return False
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(self.root))
        finally:
            os.close(fd)
        return True

    # -- pins ----------------------------------------------------------

    def pin(self, cid: Cid) -> None:
        """Record ``cid`` as a root to keep (durably). Its DAG must be complete."""
        path = self._pins / str(cid)
        if path.exists():
            return
        try:
            # An empty file: creating it is atomic, only the directory entry
            # needs to reach the disk.
            path.touch()
            if self.sync:
                _fsync_directory(self._pins)
        except OSError as exc:
            raise StorageError(f"cannot pin {cid}: {exc}") from exc

    def unpin(self, cid: Cid) -> bool:
        """Remove the pin of ``cid``; True if it was pinned."""
        try:
            (self._pins / str(cid)).unlink()
        except FileNotFoundError:
            return False
        if self.sync:
            _fsync_directory(self._pins)
        return True

    def pins(self) -> list[Cid]:
        """Pinned roots, sorted by their text form."""
        roots: list[Cid] = []
        for entry in sorted(self._pins.iterdir()):
            try:
                roots.append(parse_cid(entry.name))
            except CidError as exc:
                raise CorruptStore(f"unexpected file in pins/: {entry.name}") from exc
        return roots

    def is_pinned(self, cid: Cid) -> bool:
        """True if ``cid`` is a pinned root."""
        return (self._pins / str(cid)).exists()

    # -- garbage collection --------------------------------------------

    def reachable_keys(self, roots: Sequence[Cid], *, verify_raw: bool = False) -> set[str]:
        """Keys of every block reachable from ``roots``.

        dag-pb blocks are read and verified (their links are needed); raw
        blocks are only checked to exist unless ``verify_raw`` asks for their
        hashes too. Raises :class:`NotFound` or :class:`CorruptStore` naming
        the first block that is missing or damaged.
        """
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            cid = stack.pop()
            key = block_key(cid)
            if key in seen:
                continue
            seen.add(key)
            if cid.codec == RAW:
                if not self.has(cid):
                    raise NotFound(f"block {cid}")
                if verify_raw and not self.is_intact(cid):
                    raise CorruptStore(f"block {cid} is corrupt: stored bytes do not match")
                continue
            node = decode_pbnode(self.get(cid))
            stack.extend(link.cid for link in node.links)
        return seen

    def gc(self) -> GcReport:
        """Delete every block not reachable from a pin, and stale temporary files."""
        with self._lock(exclusive=True):
            keep = self.reachable_keys(self.pins())
            removed = removed_bytes = kept = 0
            for shard in sorted(self._blocks.iterdir()):
                for entry in sorted(shard.iterdir()):
                    if entry.name in keep:
                        kept += 1
                        continue
                    removed_bytes += entry.stat().st_size
                    entry.unlink()
                    removed += 1
            for entry in self._tmp.iterdir():
                entry.unlink()
        return GcReport(removed, removed_bytes, kept)

    def _lock(self, *, exclusive: bool) -> _FileLock:
        return _FileLock(self.root / "lock", exclusive=exclusive)


class _FileLock:
    def __init__(self, path: Path, *, exclusive: bool) -> None:
        self._path = path
        self._exclusive = exclusive
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX if self._exclusive else fcntl.LOCK_SH)

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_block_file(path: Path) -> bytes:
    """The file's bytes (at most ``MAX_BLOCK_SIZE + 1``), in one exact-size buffer."""
    with path.open("rb", buffering=0) as handle:
        size = min(os.fstat(handle.fileno()).st_size, MAX_BLOCK_SIZE + 1)
        buffer = bytearray(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size and (count := handle.readinto(view[filled:])):
            filled += count
        del view
        return bytes(buffer[:filled]) if filled < size else bytes(buffer)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc ``syncfs(2)`` on Linux; None elsewhere (per-file fsync is used)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int], int], function)


_SYNCFS = _load_syncfs()

_SYNC_FILE_RANGE_WRITE = 2
"""``SYNC_FILE_RANGE_WRITE`` from ``<linux/fs.h>``: start writeback, do not wait."""


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc ``sync_file_range(2)`` on Linux; None elsewhere (no early writeback)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_SYNC_FILE_RANGE = _load_sync_file_range()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
