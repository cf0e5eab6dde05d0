"""The load generator: open-loop (offered rate) and closed-loop (window) drivers.

Owns :class:`Recorder` (what happened to every transaction: when its batch
left, when its commit was acknowledged) and the two asyncio drivers,
:func:`run_open_loop` and :func:`run_closed_loop`, which call a
``submit(target, payloads)`` coroutine (one batch to one target node; it
returns a :class:`BatchOutcome` once the batch is committed, refused or
timed out). The drivers know nothing about HTTP or nodes.

Measurement rules (the same for every system measured):

* time runs ``warmup`` seconds, then the measured window of ``duration``
  seconds, then a drain: no new sends, outstanding batches are awaited;
* **throughput** = transactions whose commit acknowledgement arrived inside
  the window, divided by the window;
* **latency** = acknowledgement time minus the time the transaction's batch
  was sent, for transactions *sent* inside the window (acknowledged during
  the drain too); a batch's transactions share its latency, so above one
  transaction per batch a latency is that of the batch's last commit;
* open loop: every ``tick`` (20 ms; ``1/rate`` when that is longer) the
  driver sends what the offered rate makes due since the start, as one batch
  to the next target (round robin), without
  waiting for earlier batches (no coordinated omission: a slow system does
  not slow the offered load);
* closed loop: ``window`` transactions are outstanding at all times, split
  over up to ``streams`` concurrent batches, each to its own target; a stream
  whose batch failed waits :data:`ERROR_BACKOFF_S` before its next one.

Invariant: a payload is sent at most once (they come from one iterator).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "BatchOutcome",
    "Recorder",
    "SubmitFunction",
    "run_closed_loop",
    "run_open_loop",
]

#: Most transactions in one open-loop batch.
MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What became of one submitted batch."""

    committed: int
    rejected: int = 0
    timed_out: int = 0
    error: bool = False
    detail: str = ""
    busy: int = 0
    """``503`` answers received (and waited out) before the batch was accepted."""


SubmitFunction = Callable[[int, list[bytes]], Awaitable[BatchOutcome]]


@dataclass(slots=True)
class Recorder:
    """Per-transaction accounting against the measured window ``[t0, t1)`` (monotonic seconds)."""

    t0: float
    t1: float
    submitted: int = 0
    committed_in_window: int = 0
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    rejected: int = 0
    errors: int = 0
    busy_refusals: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def record(self, sent: float, acked: float, outcome: BatchOutcome, size: int) -> None:
        in_window_send = self.t0 <= sent < self.t1
        self.busy_refusals += outcome.busy
        if in_window_send:
            self.submitted += size
            self.timeouts += outcome.timed_out
            self.rejected += outcome.rejected
            if outcome.error:
                self.errors += size - outcome.committed - outcome.rejected - outcome.timed_out
                kind = outcome.detail or "error"
                self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            if outcome.committed:
                self.latencies.extend([acked - sent] * outcome.committed)
        if self.t0 <= acked < self.t1:
            self.committed_in_window += outcome.committed

    @property
    def duration(self) -> float:
        return self.t1 - self.t0


#: A closed-loop stream whose batch failed (e.g. its node is down) waits this long before
#: the next one, instead of spinning through the workload against a dead node.
ERROR_BACKOFF_S = 0.1


async def _send(
    submit: SubmitFunction, target: int, batch: list[bytes], recorder: Recorder
) -> BatchOutcome:
    sent = time.monotonic()
    try:
        outcome = await submit(target, batch)
    except Exception as exc:  # the system under test failed this batch; count it, keep going
        outcome = BatchOutcome(0, error=True, detail=type(exc).__name__)
    recorder.record(sent, time.monotonic(), outcome, len(batch))
    return outcome


async def run_open_loop(
    submit: SubmitFunction,
    payloads: Iterator[bytes],
    *,
    targets: int,
    rate: float,
    warmup: float,
    duration: float,
    tick: float = 0.02,
    drain: float = 35.0,
) -> Recorder:
    """Offer ``rate`` transactions per second for ``warmup + duration`` seconds."""
    if rate <= 0 or targets <= 0:
        raise ValueError("rate and targets must be positive")
    start = time.monotonic()
    recorder = Recorder(start + warmup, start + warmup + duration)
    tick = min(tick, 1.0 / rate)  # at most one batch per transaction when the rate is low
    tasks: set[asyncio.Task[BatchOutcome]] = set()
    sent = 0
    turn = 0
    exhausted = False
    while not exhausted:
        now = time.monotonic()
        if now >= recorder.t1:
            break
        due = int(rate * (now - start)) - sent
        while due > 0:
            size = min(due, MAX_BATCH)
            batch = [p for _, p in zip(range(size), payloads, strict=False)]
            if not batch:
                exhausted = True
                break
            sent += len(batch)
            due -= len(batch)
            task = asyncio.create_task(_send(submit, turn % targets, batch, recorder))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            turn += 1
        await asyncio.sleep(max(0.0, start + (int((now - start) / tick) + 1) * tick - now))
    if tasks:
        await asyncio.wait(set(tasks), timeout=drain)
    for task in tasks:
        task.cancel()
    return recorder


async def run_closed_loop(
    submit: SubmitFunction,
    payloads: Iterator[bytes],
    *,
    targets: int,
    window: int,
    warmup: float,
    duration: float,
    streams: int | None = None,
    drain: float = 35.0,
) -> Recorder:
    """Keep ``window`` transactions outstanding for ``warmup + duration`` seconds."""
    if window <= 0 or targets <= 0:
        raise ValueError("window and targets must be positive")
    count = min(window, streams if streams is not None else max(1, 2 * targets))
    sizes = [window // count + (1 if i < window % count else 0) for i in range(count)]
    start = time.monotonic()
    recorder = Recorder(start + warmup, start + warmup + duration)

    async def stream(index: int, size: int) -> None:
        target = index % targets
        while time.monotonic() < recorder.t1:
            batch = [p for _, p in zip(range(size), payloads, strict=False)]
            if not batch:
                return
            outcome = await _send(submit, target, batch, recorder)
            if outcome.error:
                await asyncio.sleep(ERROR_BACKOFF_S)

    tasks = [asyncio.create_task(stream(i, s)) for i, s in enumerate(sizes)]
    await asyncio.wait(tasks, timeout=warmup + duration + drain)
    for task in tasks:
        task.cancel()
    return recorder
