"""Benchmark accounting: latency percentiles, CPU per process, and the run's result record.

Owns :func:`percentile` (nearest-rank, the definition used in every figure),
:class:`LatencySummary`, :class:`CpuMeter` (CPU seconds of a set of processes
between two samples, from :mod:`psutil`), :func:`machine_info` and
:class:`ConsensusResult` (the one JSON object ``belep bench consensus``
prints).

Invariants: percentiles of an empty sample are ``None`` (never 0, which would
read as "instant"); CPU percentages are CPU seconds over wall seconds times
100, so a process that saturates one core shows 100 and the machine's
ceiling is ``100 * cpu_count``. A process that exited between two samples
keeps the CPU time of its last sample.

I/O: reads process and machine counters only.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

__all__ = [
    "ConsensusResult",
    "CpuMeter",
    "LatencySummary",
    "cpu_ms_per_tx",
    "machine_info",
    "percentile",
    "summarize",
]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted values."""
    if not sorted_values:
        return None
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[max(0, rank - 1)]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Submit-to-commit latencies in milliseconds."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    """Percentiles of latencies given in seconds, reported in milliseconds (0.01 ms)."""
    values = sorted(latencies_s)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return LatencySummary(
        count=len(values),
        p50_ms=ms(percentile(values, 50)),
        p90_ms=ms(percentile(values, 90)),
        p99_ms=ms(percentile(values, 99)),
        max_ms=ms(values[-1] if values else None),
        mean_ms=ms(sum(values) / len(values) if values else None),
    )


class CpuMeter:
    """CPU seconds (user + system) of named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._procs: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            try:
                self._procs[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._start: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._t0 = 0.0
        self._machine0: Any = None

    def _cpu(self, name: str) -> float:
        try:
            times = self._procs[name].cpu_times()
            value = float(times.user + times.system)
        except psutil.Error:
            return self._last.get(name, 0.0)
        self._last[name] = value
        return value

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: self._cpu(name) for name in self._procs}
        self._machine0 = psutil.cpu_times()

    def stop(self) -> tuple[dict[str, float], float]:
        """Each process's CPU percent over the interval, and the whole machine's busy percent."""
        wall = max(1e-9, time.monotonic() - self._t0)
        per = {
            name: round((self._cpu(name) - self._start[name]) / wall * 100, 1)
            for name in self._procs
        }
        machine = psutil.cpu_times()
        busy = 0.0
        if self._machine0 is not None:
            total = sum(machine) - sum(self._machine0)
            idle = (machine.idle + getattr(machine, "iowait", 0.0)) - (
                self._machine0.idle + getattr(self._machine0, "iowait", 0.0)
            )
            busy = 0.0 if total <= 0 else (total - idle) / total * 100 * (os.cpu_count() or 1)
        return per, round(busy, 1)


def machine_info() -> dict[str, Any]:
    """CPU model and count, OS, Python, load average, date (for the results table)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@dataclass(frozen=True, slots=True)
class ConsensusResult:
    """One measured point: a protocol and network at one offered load."""

    system: str
    protocol: str
    nodes: int
    standbys: int
    mode: str
    offered_tps: float | None
    window: int | None
    warmup_s: float
    duration_s: float
    tx_bytes: int
    submitted: int
    committed: int
    committed_tps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    latency_samples: int
    timeouts: int
    rejected: int
    errors: int
    cpu_percent: dict[str, float]
    cpu_client_percent: float
    cpu_machine_percent: float
    #: ``503`` answers (admission control) before batches were accepted; each was resent.
    busy_refusals: int = 0
    blocks: int | None = None
    avg_block_txs: float | None = None
    view_changes: int | None = None
    #: CPU milliseconds all node processes spent per committed transaction (window only).
    node_cpu_ms_per_tx: float | None = None
    notes: list[str] = field(default_factory=list)
    tuning: dict[str, int] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_ms_per_tx(cpu_percent: Mapping[str, float], committed_tps: float) -> float | None:
    """CPU milliseconds per committed transaction, from per-process CPU percentages."""
    if committed_tps <= 0:
        return None
    return round(sum(cpu_percent.values()) / 100 / committed_tps * 1000, 3)
