"""The reference measurement: a PySyncObj cluster of separate processes under the same load rules.

Owns :class:`PySyncObjCluster`: start ``nodes`` peers of
:mod:`belep.bench.pysyncobj_peer` on 127.0.0.1 (each its own process and
session), wait until every peer is ready and names the same leader, then
measure load points exactly as :func:`belep.bench.consensus.measure_point`
does for BELEP — same records, same warm-up and window, same percentiles,
CPU per process over the window — and stop every peer on exit (also on
Ctrl-C and errors: ``stop`` on stdin, then SIGTERM, then SIGKILL).

The offered rate (or window) is split evenly over the peers, the leader
first (so a window of one runs at the leader), as the BELEP client spreads
its batches over the domain's voters, leader first.

I/O: child processes and their pipes; a log file per peer in a temporary
directory removed on exit.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from belep.bench.consensus import LoadSpec, free_base_port
from belep.bench.stats import ConsensusResult, CpuMeter, cpu_ms_per_tx, summarize
from belep.errors import ConfigError, NetworkError

__all__ = ["PySyncObjCluster", "pysyncobj_available"]

#: Records each peer signs once and cycles through.
POOL = 2000
STOP_GRACE_S = 5.0


def pysyncobj_available() -> bool:
    """Whether the optional ``pysyncobj`` package (extra ``bench``) is installed."""
    try:
        import pysyncobj  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(slots=True)
class _Peer:
    address: str
    process: subprocess.Popen[str]
    log: IO[bytes]
    lines: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    def send(self, command: dict[str, Any]) -> None:
        stdin = self.process.stdin
        if stdin is None:  # pragma: no cover - always piped
            raise NetworkError("peer has no stdin")
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise NetworkError(
                f"PySyncObj peer {self.address} did not answer in {timeout:.0f} s"
            ) from None
        if message is None:
            raise NetworkError(
                f"PySyncObj peer {self.address} exited (status {self.process.poll()})"
            )
        return message


def _pump(stream: IO[str], lines: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        with contextlib.suppress(ValueError):
            lines.put(json.loads(line))
    lines.put(None)


@dataclass(slots=True)
class PySyncObjCluster:
    """A running PySyncObj cluster (a context manager: leaving it stops every peer)."""

    nodes: int
    root: Path
    peers: list[_Peer] = field(default_factory=list)

    @classmethod
    def start(cls, nodes: int, *, ready_timeout: float = 60.0, seed: int = 7) -> PySyncObjCluster:
        if not pysyncobj_available():
            raise ConfigError("PySyncObj is not installed (pip install 'belep[bench]')")
        if not 1 <= nodes <= 50:
            raise ConfigError("nodes must be 1..50", found=nodes)
        base = free_base_port(nodes)
        addresses = [f"127.0.0.1:{base + i}" for i in range(nodes)]
        cluster = cls(nodes, Path(tempfile.mkdtemp(prefix="belep-pysyncobj-")))
        try:
            for index, me in enumerate(addresses):
                partners = ",".join(a for a in addresses if a != me)
                log = open(cluster.root / f"peer-{index}.log", "wb")  # noqa: SIM115 (child's life)
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "belep.bench.pysyncobj_peer",
                        "--self",
                        me,
                        "--partners",
                        partners,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
                peer = _Peer(me, process, log)
                if process.stdout is not None:
                    threading.Thread(
                        target=_pump, args=(process.stdout, peer.lines), daemon=True
                    ).start()
                cluster.peers.append(peer)
            for peer in cluster.peers:
                peer.receive(ready_timeout)  # "up"
            cluster._wait_leader(ready_timeout)
            stamp = int(time.time() * 1000)
            for index, peer in enumerate(cluster.peers):
                peer.send(
                    {
                        "cmd": "prepare",
                        "count": POOL,
                        "seed": seed,
                        "first": index * POOL,
                        "timestamp_ms": stamp,
                    }
                )
            for peer in cluster.peers:
                peer.receive(ready_timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _wait_leader(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answers = []
            for peer in self.peers:
                peer.send({"cmd": "status"})
                answers.append(peer.receive(10.0))
            leaders = {a.get("leader") for a in answers}
            if len(leaders) == 1 and None not in leaders and all(a.get("ready") for a in answers):
                return
            time.sleep(0.2)
        raise NetworkError(f"PySyncObj cluster elected no common leader in {timeout:.0f} s")

    def _leader_first(self) -> list[_Peer]:
        """The peers, the current leader first (a small window goes to it, as in BELEP)."""
        self.peers[0].send({"cmd": "status"})
        leader = self.peers[0].receive(10.0).get("leader")
        return sorted(self.peers, key=lambda p: p.address != leader)

    def __enter__(self) -> PySyncObjCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ask every peer to stop; SIGTERM, then SIGKILL, whoever is still running."""
        for peer in self.peers:
            with contextlib.suppress(OSError, ValueError, NetworkError):
                peer.send({"cmd": "stop"})
        deadline = time.monotonic() + STOP_GRACE_S
        for peer in self.peers:
            process = peer.process
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            peer.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def measure(self, spec: LoadSpec, *, tx_bytes: int) -> ConsensusResult:
        """One load point (see the module docstring)."""
        count = len(self.peers)
        order = self._leader_first()
        start_at = time.time() + 0.3
        for index, peer in enumerate(order):
            command: dict[str, Any] = {
                "cmd": "run",
                "start_at": start_at,
                "warmup": spec.warmup,
                "duration": spec.duration,
            }
            if spec.rate is not None:
                command["rate"] = spec.rate / count
            else:
                window = int(spec.window or 1)
                command["window"] = window // count + (1 if index < window % count else 0)
            peer.send(command)
        meter = CpuMeter({f"peer-{i}": p.process.pid for i, p in enumerate(self.peers)})
        t0 = start_at + spec.warmup
        time.sleep(max(0.0, t0 - time.time()))
        meter.start()
        time.sleep(max(0.0, t0 + spec.duration - time.time()))
        per_node, machine = meter.stop()
        results = [p.receive(spec.warmup + spec.duration + 60.0) for p in order]
        latencies = [us / 1e6 for r in results for us in r["latencies_us"]]
        summary = summarize(latencies)
        committed = sum(int(r["committed"]) for r in results)
        return ConsensusResult(
            system="pysyncobj",
            protocol="raft",
            nodes=count,
            standbys=0,
            mode=spec.mode,
            offered_tps=spec.rate,
            window=spec.window,
            warmup_s=spec.warmup,
            duration_s=spec.duration,
            tx_bytes=tx_bytes,
            submitted=sum(int(r["submitted"]) for r in results),
            committed=committed,
            committed_tps=round(committed / spec.duration, 1),
            p50_ms=summary.p50_ms,
            p90_ms=summary.p90_ms,
            p99_ms=summary.p99_ms,
            max_ms=summary.max_ms,
            mean_ms=summary.mean_ms,
            latency_samples=summary.count,
            timeouts=sum(int(r["timeouts"]) for r in results),
            rejected=0,
            errors=sum(int(r["errors"]) for r in results),
            cpu_percent=per_node,
            node_cpu_ms_per_tx=cpu_ms_per_tx(per_node, committed / spec.duration),
            cpu_client_percent=0.0,
            cpu_machine_percent=machine,
            notes=["the load runs inside each peer (PySyncObj has no client protocol)"],
        )
