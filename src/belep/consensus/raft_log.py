"""Raft's in-memory log and the layout of its persisted state.

Owns :class:`RaftLog` — the entries above the snapshot point — and the codec
of the keys a :class:`~belep.consensus.raft.RaftReplica` stores with
``Persist`` (``docs/spec/raft.md`` §Persistence):

* ``raft/hard`` — current term and vote;
* ``raft/applied`` — height, term and hash of the last delivered block;
* ``raft/log/<height, 20 digits>`` — one log entry (one block) per key.

Invariants of :class:`RaftLog`:

* entries have consecutive heights ``snapshot_index + 1 .. last_index``;
* each entry's ``prev_hash`` is the hash of the entry (or snapshot point)
  below it, so the log is one hash chain rooted at the snapshot point;
* entry terms never decrease;
* height ``0`` is the genesis: term 0, hash ``genesis_hash``.

:func:`restore_state` rebuilds the state from what the host stored; a crash
between the ``Persist`` effects of one list can leave a log whose tail is
cut short or does not link, so it keeps the longest hash-linked run above the
applied block and reports every other stored log key as stale.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from belep.consensus.raft_messages import Term, entry_term
from belep.encoding import (
    decode,
    encode,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_map,
    expect_str,
)
from belep.errors import CorruptStore, ValidationError
from belep.ledger.block import HASH_SIZE, Block, Digest, Height, NodeId

HARD_KEY = "raft/hard"
APPLIED_KEY = "raft/applied"
LOG_PREFIX = "raft/log/"


def log_key(height: int) -> str:
    """Storage key of the log entry at ``height`` (zero-padded so keys sort by height)."""
    return f"{LOG_PREFIX}{height:020d}"


class RaftLog:
    """The log entries above a snapshot point ``(index, term, hash)``."""

    __slots__ = ("_entries", "snapshot_hash", "snapshot_index", "snapshot_term")

    def __init__(self, snapshot_index: Height, snapshot_term: Term, snapshot_hash: Digest) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.snapshot_hash = snapshot_hash
        self._entries: list[Block] = []

    @property
    def last_index(self) -> Height:
        return Height(self.snapshot_index + len(self._entries))

    @property
    def last_term(self) -> Term:
        return entry_term(self._entries[-1]) if self._entries else self.snapshot_term

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, height: int) -> bool:
        """True if ``height`` is an entry in memory (strictly above the snapshot point)."""
        return self.snapshot_index < height <= self.last_index

    def entry(self, height: int) -> Block:
        """The block at ``height``; the caller checks :meth:`has` first."""
        return self._entries[height - self.snapshot_index - 1]

    def term_at(self, height: int) -> Term | None:
        """Term at ``height``, for the snapshot point and entries; ``None`` elsewhere."""
        if height == self.snapshot_index:
            return self.snapshot_term
        if self.has(height):
            return entry_term(self.entry(height))
        return None

    def hash_at(self, height: int) -> Digest | None:
        """Block hash at ``height``, for the snapshot point and entries; ``None`` elsewhere."""
        if height == self.snapshot_index:
            return self.snapshot_hash
        if self.has(height):
            return self.entry(height).block_hash
        return None

    def entries_between(self, low: int, high: int) -> tuple[Block, ...]:
        """Entries with ``low <= height <= high`` (both clipped to the entries in memory)."""
        start = max(low, self.snapshot_index + 1) - self.snapshot_index - 1
        stop = min(high, self.last_index) - self.snapshot_index
        return tuple(self._entries[start:stop]) if stop > start else ()

    def first_index_of_term_run(self, height: int) -> Height:
        """Lowest in-memory height ``j <= height`` such that ``j..height`` all have one term."""
        term = self.term_at(height)
        j = height
        while j - 1 > self.snapshot_index and self.term_at(j - 1) == term:
            j -= 1
        return Height(j)

    def append(self, block: Block) -> None:
        """Add ``block`` after the last entry; raises :class:`ValidationError` unless it links."""
        if block.height != self.last_index + 1:
            raise ValidationError(
                "entry out of order", expected=self.last_index + 1, found=block.height
            )
        if block.header.prev_hash != self.hash_at(self.last_index):
            raise ValidationError(
                "entry does not link to the log",
                expected=self.hash_at(self.last_index),
                found=block.header.prev_hash,
                where=f"height {block.height}",
            )
        if entry_term(block) < self.last_term:
            raise ValidationError(
                "entry term below the last term",
                expected=f">= {self.last_term}",
                found=entry_term(block),
            )
        self._entries.append(block)

    def truncate_from(self, height: int) -> list[Block]:
        """Delete the entries at ``height`` and above; return them (lowest first)."""
        keep = max(height - self.snapshot_index - 1, 0)
        removed = self._entries[keep:]
        del self._entries[keep:]
        return removed

    def compact_to(self, height: int) -> list[Block]:
        """Move the snapshot point up to in-memory ``height``; return the dropped entries."""
        if not self.has(height):
            return []
        block = self.entry(height)
        count = height - self.snapshot_index
        removed = self._entries[:count]
        del self._entries[:count]
        self.snapshot_index = block.height
        self.snapshot_term = entry_term(block)
        self.snapshot_hash = block.block_hash
        return removed

    def reset_snapshot(self, index: Height, term: Term, block_hash: Digest) -> list[Block]:
        """Make ``(index, term, hash)`` the snapshot point; return every entry dropped.

        Entries at or below ``index`` are dropped; entries above are kept only
        if the first of them links to ``block_hash``.
        """
        removed: list[Block] = []
        if index >= self.snapshot_index:
            removed = self._entries[: max(index - self.snapshot_index, 0)]
            del self._entries[: len(removed)]
        else:
            removed, self._entries = self._entries, []
        if self._entries and self._entries[0].header.prev_hash != block_hash:
            removed.extend(self._entries)
            self._entries = []
        self.snapshot_index, self.snapshot_term, self.snapshot_hash = index, term, block_hash
        return removed


# --------------------------------------------------------------------------
# Persisted state
# --------------------------------------------------------------------------


def encode_hard_state(term: Term, vote: NodeId | None) -> bytes:
    return encode({"term": term, "vote": vote})


def encode_applied(height: Height, term: Term, block_hash: Digest) -> bytes:
    return encode({"height": height, "term": term, "hash": block_hash})


def encode_entry(block: Block) -> bytes:
    return encode(block.to_wire())


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What a restarted replica knows from its persisted keys."""

    term: Term
    vote: NodeId | None
    applied_height: Height
    applied_term: Term
    applied_hash: Digest
    entries: tuple[Block, ...]
    stale_keys: tuple[str, ...]


def restore_state(persisted: Mapping[str, bytes], genesis_hash: Digest) -> RestoredState:
    """Decode every persisted key; raises :class:`CorruptStore` for bytes we never wrote."""
    term, vote = Term(0), None
    applied = (Height(0), Term(0), genesis_hash)
    blocks: dict[int, Block] = {}
    for key, data in persisted.items():
        try:
            if key == HARD_KEY:
                m = expect_map(decode(data), "raft hard state")
                expect_fields(m, "raft hard state", frozenset({"term", "vote"}))
                term = Term(expect_int(m["term"], "term", minimum=0))
                vote = None if m["vote"] is None else NodeId(expect_str(m["vote"], "vote"))
            elif key == APPLIED_KEY:
                m = expect_map(decode(data), "raft applied mark")
                expect_fields(m, "raft applied mark", frozenset({"height", "term", "hash"}))
                applied = (
                    Height(expect_int(m["height"], "height", minimum=0)),
                    Term(expect_int(m["term"], "term", minimum=0)),
                    Digest(expect_bytes(m["hash"], "hash", size=HASH_SIZE)),
                )
            elif key.startswith(LOG_PREFIX) and key == log_key(int(key[len(LOG_PREFIX) :])):
                block = Block.from_wire(decode(data))
                if log_key(block.height) != key:
                    raise CorruptStore(f"log entry stored under the wrong key: {key}")
                blocks[block.height] = block
            else:
                raise CorruptStore(f"unknown raft storage key: {key!r}")
        except (ValidationError, ValueError) as exc:
            raise CorruptStore(f"unreadable raft state under {key!r}: {exc}") from exc
    height, applied_term, applied_hash = applied
    entries: list[Block] = []
    previous_hash, previous_term = applied_hash, applied_term
    for h in range(height + 1, height + 1 + len(blocks)):
        stored = blocks.get(h)
        if (
            stored is None
            or stored.header.prev_hash != previous_hash
            or entry_term(stored) < previous_term
        ):
            break
        entries.append(stored)
        previous_hash, previous_term = stored.block_hash, entry_term(stored)
    kept = {block.height for block in entries}
    stale = tuple(sorted(log_key(h) for h in blocks if h not in kept))
    return RestoredState(term, vote, height, applied_term, applied_hash, tuple(entries), stale)
