"""How the benchmark client honours ``503 Retry-After``: :class:`BusyGate`.

A node under admission control (``docs/spec/node.md`` §7) refuses requests
with ``503`` and a suggested wait. A client that resent every refused batch
at once when the wait ends would turn each refusal into a burst of refusals
and spend the node's CPU on them. The gate does what a careful client
library does, one gate per node: an **AIMD concurrency limit** (TCP's rule):

* a request may be sent while fewer than ``limit`` are in flight to that
  node and the node's retry time has passed; waiting requests go in arrival
  order, and only as many are woken as may go (no thundering herd: the open
  loop can queue thousands of batches behind a busy node);
* an accepted request raises the limit by one (additive increase);
* a refusal halves it (multiplicative decrease, at least 1) and closes the
  gate until the suggested retry time — once per round trip: refusals of
  requests sent before the last decrease do not decrease it again.

Invariant: at most ``max(1, limit)`` requests of this gate are in flight
(right after a decrease, the ones already sent may exceed it until they end).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["BusyGate"]


class BusyGate:
    """An AIMD limit on the requests in flight to one node (see the module docstring)."""

    def __init__(self, initial: int = 64, maximum: int = 4096) -> None:
        if not 1 <= initial <= maximum:
            raise ValueError("need 1 <= initial <= maximum")
        self._limit = float(initial)
        self._maximum = float(maximum)
        self._in_flight = 0
        self._open_at = 0.0
        self._decreased_at = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiting if not f.done())

    async def acquire(self) -> float:
        """Wait for a turn (in arrival order); the send time to pass to :meth:`release`."""
        now = time.monotonic()
        if not self._waiting and now >= self._open_at and self._in_flight < self.limit:
            self._in_flight += 1
            return now
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self._pump()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._in_flight -= 1  # granted just as it was cancelled: give it back
                self._pump()
            raise
        return time.monotonic()

    def release(self, sent_at: float, retry_after_s: float | None, *, failed: bool = False) -> None:
        """The request sent at ``sent_at`` ended: accepted (``retry_after_s`` None), refused
        with a suggested wait, or ``failed`` otherwise (an error: the limit stays)."""
        self._in_flight -= 1
        now = time.monotonic()
        if failed:
            pass
        elif retry_after_s is None:
            self._limit = min(self._maximum, self._limit + 1)
        else:
            if sent_at >= self._decreased_at:
                self._limit = max(1.0, self._limit / 2)
                self._decreased_at = now
            self._open_at = max(self._open_at, now + retry_after_s)
        self._pump()

    def _pump(self) -> None:
        """Grant turns to the waiting requests that may go now; else wake up when open."""
        waiting = self._waiting
        while waiting and waiting[0].done():
            waiting.popleft()  # cancelled while waiting
        if not waiting:
            return
        now = time.monotonic()
        if now < self._open_at:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._open_at - now, self._wake)
            return
        while waiting and self._in_flight < self.limit:
            turn = waiting.popleft()
            if not turn.done():
                self._in_flight += 1
                turn.set_result(None)

    def _wake(self) -> None:
        self._timer = None
        self._pump()
