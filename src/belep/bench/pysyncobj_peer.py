"""The reference peer: one PySyncObj (Python Raft library) process replicating BELEP-sized records.

Run as ``python -m belep.bench.pysyncobj_peer --self 127.0.0.1:P --partners
127.0.0.1:Q,…``. It is the same-machine anchor of the consensus benchmark
(:mod:`belep.bench.pysyncobj_bench` starts seven of them): a
:class:`RecordLog` whose one replicated method appends a record (the same
signed evidence-record bytes the BELEP client sends, from
:mod:`belep.bench.workload`) to an in-memory list on every replica.

PySyncObj has no client protocol, so each peer is also its own client: the
load runs inside the peer's process through the library's asynchronous
call (``append(record, callback=…)``), which calls back once the command is
applied on that peer (its submit-to-commit latency), after being forwarded
to the leader if the peer is a follower. The library's default
configuration is kept (in-memory journal, batched AppendEntries) except
that log compaction is disabled for the length of a run (it would pickle the
whole state in the middle of the measurement).

Control: one JSON object per line on stdin, one JSON object per line on
stdout. Commands: ``status`` (leader, ready), ``prepare`` (sign a pool of
``count`` records with sequence numbers from ``first``; the load cycles
through it, as PySyncObj never deduplicates commands), ``run`` (a load point:
``start_at`` wall-clock start, ``rate`` or ``window``, ``warmup``,
``duration``; answers with counts and latencies in microseconds) and
``stop``. Accounting follows :class:`belep.bench.loadgen.Recorder`.

I/O: the library's TCP sockets on 127.0.0.1, stdin, stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from pysyncobj import (  # type: ignore[import-untyped]
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
    replicated,
)

from belep.bench.loadgen import BatchOutcome, Recorder
from belep.bench.workload import presign

__all__ = ["RecordLog", "main"]

#: Open-loop pacing step (seconds), as in :func:`belep.bench.loadgen.run_open_loop`.
TICK = 0.01
DRAIN = 35.0


class RecordLog(SyncObj):  # type: ignore[misc]
    """A replicated append-only list of records."""

    def __init__(self, me: str, partners: list[str]) -> None:
        conf = SyncObjConf(
            commandsQueueSize=1_000_000,
            logCompactionMinEntries=1 << 40,
            logCompactionMinTime=1 << 30,
            dynamicMembershipChange=False,
        )
        super().__init__(me, partners, conf)
        self._records: list[bytes] = []
        self.applied = 0

    @replicated  # type: ignore[untyped-decorator]
    def append(self, record: bytes) -> int:
        self._records.append(record)
        self.applied += 1
        return self.applied


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Load:
    """One load point inside this peer (see the module docstring)."""

    def __init__(self, log: RecordLog, records: Iterator[bytes], command: dict[str, Any]) -> None:
        self.log = log
        self.records = records
        offset = float(command["start_at"]) - time.time()
        self.start = time.monotonic() + max(0.0, offset)
        warmup = float(command["warmup"])
        self.recorder = Recorder(
            self.start + warmup, self.start + warmup + float(command["duration"])
        )
        self.rate: float | None = command.get("rate")
        self.window: int | None = command.get("window")
        self.outstanding = 0
        self.lock = threading.Lock()
        self.drained = threading.Event()

    def _send_one(self) -> bool:
        record = next(self.records, None)
        if record is None:
            return False
        sent = time.monotonic()
        with self.lock:
            self.outstanding += 1

        def done(_result: object, error: int) -> None:
            ok = error == FAIL_REASON.SUCCESS
            outcome = BatchOutcome(1) if ok else BatchOutcome(0, error=True)
            acked = time.monotonic()
            with self.lock:
                self.recorder.record(sent, acked, outcome, 1)
                self.outstanding -= 1
                closing = acked >= self.recorder.t1
                if self.outstanding == 0 and closing:
                    self.drained.set()
            if self.window is not None and not closing:
                self._send_one()

        self.log.append(record, callback=done)
        return True

    def run(self) -> dict[str, Any]:
        time.sleep(max(0.0, self.start - time.monotonic()))
        if self.window is not None:
            for _ in range(self.window):
                self._send_one()
            time.sleep(max(0.0, self.recorder.t1 - time.monotonic()))
        elif self.rate is not None and self.rate > 0:
            sent = 0
            while (now := time.monotonic()) < self.recorder.t1:
                due = int(self.rate * (now - self.start)) - sent
                for _ in range(due):
                    if not self._send_one():
                        break
                    sent += 1
                time.sleep(max(0.0, TICK - (time.monotonic() - now)))
        with self.lock:
            if self.outstanding == 0:
                self.drained.set()
        self.drained.wait(DRAIN)
        with self.lock:
            r = self.recorder
            return {
                "submitted": r.submitted,
                "committed": r.committed_in_window,
                "timeouts": r.timeouts + self.outstanding,
                "errors": r.errors,
                "latencies_us": [round(v * 1e6) for v in r.latencies],
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="me", required=True)
    parser.add_argument("--partners", required=True)
    args = parser.parse_args(argv)
    log = RecordLog(args.me, [p for p in args.partners.split(",") if p])
    records: Iterator[bytes] = iter(())
    _emit({"event": "up", "node": args.me})
    for line in sys.stdin:
        command = json.loads(line)
        name = command.get("cmd")
        if name == "status":
            leader = log._getLeader()
            _emit({"leader": None if leader is None else str(leader), "ready": log.isReady()})
        elif name == "prepare":
            batch = presign(
                int(command["count"]),
                seed=int(command["seed"]),
                timestamp_ms=int(command["timestamp_ms"]),
                first=int(command["first"]),
                workers=1,
            )
            records = itertools.cycle(batch)  # PySyncObj does not deduplicate: reuse is fine
            _emit({"prepared": len(batch)})
        elif name == "run":
            _emit(_Load(log, records, command).run())
        elif name == "stop":
            break
    log.destroy()
    _emit({"event": "stopped"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
