"""The watermarked message log of a BFT replica.

Owns :class:`WatermarkLog`, a map from heights (sequence numbers) to per-height
protocol state, bounded by two watermarks as in Castro & Liskov:

* the **low watermark** ``low`` is the height of the last *stable checkpoint*:
  everything at or below it is committed and proven, so its slots are
  garbage-collected (:meth:`WatermarkLog.advance`);
* the **high watermark** is ``low + size``: a replica accepts proposals and
  votes only for heights in ``(low, low + size]``, which bounds its memory and
  stops a faulty leader from exhausting the sequence space.

:func:`log_size` gives the window ``size`` from the checkpoint interval ``K``
and the pipelining depth: ``max(2K, K + window)``, so the next checkpoint
(``low + K``) and a full pipeline after it always fit.

The slot type is the protocol's own (PBFT and HPBFT keep different things per
height); the log only creates, finds and drops slots.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from belep.ledger.block import Height

__all__ = ["WatermarkLog", "log_size"]

S = TypeVar("S")


def log_size(checkpoint_interval: int, window: int) -> int:
    """Distance between the low and the high watermark."""
    return max(2 * checkpoint_interval, checkpoint_interval + window)


class WatermarkLog(Generic[S]):
    """Per-height slots between the watermarks."""

    __slots__ = ("_factory", "_low", "_size", "_slots")

    def __init__(self, size: int, factory: Callable[[Height], S], low: int = 0) -> None:
        self._size = size
        self._factory = factory
        self._low = Height(low)
        self._slots: dict[Height, S] = {}

    @property
    def low(self) -> Height:
        return self._low

    @property
    def high(self) -> Height:
        return Height(self._low + self._size)

    @property
    def size(self) -> int:
        return self._size

    def in_window(self, height: int) -> bool:
        """``low < height <= high``."""
        return self._low < height <= self._low + self._size

    def get(self, height: int) -> S | None:
        return self._slots.get(Height(height))

    def slot(self, height: Height) -> S:
        """The slot at ``height``, created if needed; the height must be in the window."""
        found = self._slots.get(height)
        if found is None:
            if not self.in_window(height):
                raise ValueError(f"height {height} outside ({self._low}, {self.high}]")
            found = self._slots[height] = self._factory(height)
        return found

    def heights(self) -> list[Height]:
        """Heights that have a slot, ascending."""
        return sorted(self._slots)

    def items(self) -> Iterator[tuple[Height, S]]:
        """(height, slot) pairs, ascending by height."""
        for h in sorted(self._slots):
            yield h, self._slots[h]

    def advance(self, low: Height) -> list[tuple[Height, S]]:
        """Move the low watermark up to ``low``; return the dropped slots."""
        if low <= self._low:
            return []
        dropped = [(h, s) for h, s in self._slots.items() if h <= low]
        for h, _ in dropped:
            del self._slots[h]
        self._low = low
        dropped.sort(key=lambda item: item[0])
        return dropped
