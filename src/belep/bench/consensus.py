"""``belep bench consensus``: a fresh local BELEP network under a measured load.

Owns :class:`BenchNetwork` (generate a one-domain network, start every node
as its own process on 127.0.0.1 through :class:`~belep.deploy.launcher.LocalNetwork`,
wait until all peers are connected, stop everything on exit) and
:func:`measure_point` (one offered load against a running network: the
result record of :mod:`belep.bench.stats`).

The generated topology (``docs/spec/topology.md``): with ``standbys = 0``
one unit ``bench`` whose ``nodes`` validators run the protocol; with
``standbys = K`` a parent unit ``city`` of ``K`` validators (plain PBFT,
receiving the child's anchors) and the measured unit ``station`` of
``nodes`` validators, whose domain has the city's validators as standbys
(HPBFT) or observers (PBFT, Raft) — exactly the shape of a station in the
demo, so HPBFT(4+3) is ``nodes=4, standbys=3``: 7 processes.

The client runs in this process: signed records are made before the
network starts (:func:`~belep.bench.workload.presign`), then batches go to
the domain's voters over the node's batch endpoint
(``POST /v1/domains/{d}/transactions/batch?wait=…``, ``docs/spec/node.md``),
round robin, each answered when its transactions are committed (over
:class:`~belep.bench.http_client.LeanHttpClient`). CPU per
node process is sampled over the measured window only.

Teardown: :meth:`BenchNetwork.close` (also on Ctrl-C, SIGTERM and errors)
sends SIGTERM to every node and SIGKILLs stragglers after a grace period;
the temporary directory is removed unless the caller kept it. A watchdog
process holding a pipe from this one stops the nodes if this process ends
without closing the network (SIGKILL, a crash).

I/O: files under the network directory, child processes, HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

from belep.bench.gate import BusyGate
from belep.bench.http_client import LeanHttpClient
from belep.bench.loadgen import BatchOutcome, Recorder, run_closed_loop, run_open_loop
from belep.bench.stats import ConsensusResult, CpuMeter, cpu_ms_per_tx, summarize
from belep.bench.workload import RecordStream
from belep.deploy.launcher import LocalNetwork
from belep.deploy.provision import provision
from belep.deploy.topology import parse_topology
from belep.encoding import encode
from belep.errors import ConfigError, NetworkError
from belep.node.protocols import registered_protocols

__all__ = [
    "BenchNetwork",
    "BenchTerminated",
    "LoadSpec",
    "bench_topology",
    "free_base_port",
    "measure_point",
    "stop_on_sigterm",
]

#: Longest a batch request waits for its commit (the node caps ``wait`` at 30 s).
COMMIT_WAIT_MS = 30_000
BENCH_PROTOCOLS = ("pbft", "hpbft", "raft")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load point: an offered rate (open loop) or a window (closed loop)."""

    rate: float | None = None
    window: int | None = None
    warmup: float = 3.0
    duration: float = 10.0

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.window is None):
            raise ConfigError("give exactly one of an offered rate and a window")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("offered rate must be positive", found=self.rate)
        if self.window is not None and self.window <= 0:
            raise ConfigError("window must be positive", found=self.window)
        if self.duration <= 0 or self.warmup < 0:
            raise ConfigError("duration must be positive, warm-up non-negative")

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"

    def budget(self, ceiling_tps: float) -> int:
        """How many records the point may consume (closed loop: at ``ceiling_tps``)."""
        seconds = self.warmup + self.duration + 1.0
        # A closed loop commits at most its window every few milliseconds.
        rate = self.rate if self.rate is not None else min(ceiling_tps, 200.0 * (self.window or 1))
        return int(rate * seconds) + (self.window or 0) + 1000


def bench_topology(
    protocol: str,
    nodes: int,
    standbys: int,
    base_port: int,
    tuning: Mapping[str, int] | None = None,
) -> tuple[str, str]:
    """The topology TOML of a benchmark network and the measured domain's id.

    ``tuning`` sets ``[consensus]`` knobs (``max_batch_size``,
    ``max_batch_wait_ms``, ``window``…) for every domain; absent, every domain
    runs the node's defaults, as an operator's network would.
    """
    if protocol not in BENCH_PROTOCOLS:
        raise ConfigError("unknown protocol", expected=list(BENCH_PROTOCOLS), found=protocol)
    if not 1 <= nodes <= 50 or not 0 <= standbys <= 50:
        raise ConfigError("nodes must be 1..50 and standbys 0..50", found=(nodes, standbys))
    head = f'[network]\nname = "belep-bench"\nhost = "127.0.0.1"\nbase_port = {base_port}\n\n'
    if tuning:
        head += "[consensus]\n" + "".join(f"{k} = {int(v)}\n" for k, v in sorted(tuning.items()))
        head += "\n"
    if standbys == 0:
        unit = f'[[units]]\nid = "bench"\nprotocol = "{protocol}"\nvalidators = {nodes}\n'
        return head + unit, "bench"
    city = f'[[units]]\nid = "city"\nprotocol = "pbft"\nvalidators = {standbys}\n\n'
    station = (
        f'[[units]]\nid = "station"\nparent = "city"\nprotocol = "{protocol}"\n'
        f"validators = {nodes}\n"
    )
    return head + city + station, "station"


def free_base_port(count: int) -> int:
    """A base port such that ``count`` consecutive ports can be bound on 127.0.0.1 now."""
    for base in range(21_000, 60_000 - count, 97):
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise NetworkError(f"no {count} consecutive free ports on 127.0.0.1")


class BenchTerminated(Exception):
    """SIGTERM arrived: unwind so the network is stopped."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise BenchTerminated


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`BenchTerminated` (so every ``with`` block stops its processes)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Run by the watchdog process: when its stdin closes (the benchmark process ended without
#: stopping the network, even by SIGKILL), it stops the node processes it was given.
_WATCHDOG = """
import os, signal, sys, time
def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
pids = [int(p) for p in sys.argv[1:]]
sys.stdin.buffer.read()
for sig, pause in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + pause
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    pids = [p for p in pids if running(p)]
"""


def _start_watchdog(pids: list[int]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, *map(str, pids)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@dataclass(slots=True)
class BenchNetwork:
    """A running benchmark network (a context manager: leaving it stops every node)."""

    protocol: str
    nodes: int
    standbys: int
    root: Path
    domain: str
    network: LocalNetwork
    keep: bool = False
    voters: list[str] = field(default_factory=list)
    tuning: dict[str, int] = field(default_factory=dict)
    _owned_root: bool = False
    _previous_sigterm: Any = None
    _watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        protocol: str,
        nodes: int,
        standbys: int,
        *,
        directory: Path | None = None,
        ready_timeout: float = 120.0,
        tuning: Mapping[str, int] | None = None,
    ) -> BenchNetwork:
        if protocol not in registered_protocols():
            raise ConfigError(
                "protocol not available in this build",
                expected=sorted(registered_protocols()),
                found=protocol,
            )
        owned = directory is None
        root = Path(tempfile.mkdtemp(prefix="belep-bench-")) if directory is None else directory
        text, domain = bench_topology(
            protocol, nodes, standbys, free_base_port(2 * (nodes + standbys)), tuning
        )
        try:
            provision(parse_topology(text), root, topology_text=text)
            network = LocalNetwork.open(root)
        except BaseException:
            if owned:
                shutil.rmtree(root, ignore_errors=True)
            raise
        bench = cls(protocol, nodes, standbys, root, domain, network, keep=not owned)
        bench._owned_root = owned
        bench.tuning = dict(tuning or {})
        bench.voters = [n for n, p in network.nodes.items() if p.config.unit == domain]
        bench._previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            network.start()
            bench._watchdog = _start_watchdog(list(bench.pids().values()))
            network.wait_ready(ready_timeout)
        except BaseException:
            bench.close()
            raise
        return bench

    def __enter__(self) -> BenchNetwork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 10 s); remove a temporary directory."""
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:  # stopped first, so it never signals a reused pid
            watchdog.kill()
            watchdog.wait()
            if watchdog.stdin is not None:
                watchdog.stdin.close()
        try:
            self.network.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None
            if self._owned_root and not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        return {
            n: p.process.pid
            for n, p in self.network.nodes.items()
            if p.process is not None and p.process.poll() is None
        }

    def url(self, node: str) -> str:
        return self.network.nodes[node].config.http_url

    def token(self, node: str) -> str:
        return self.network.nodes[node].token

    async def status(self, http: httpx.AsyncClient, node: str) -> dict[str, Any]:
        response = await http.get(
            f"{self.url(node)}/v1/status",
            headers={"Authorization": f"Bearer {self.token(node)}"},
            timeout=5.0,
        )
        body: dict[str, Any] = response.json()
        return body

    async def domain_position(
        self, http: httpx.AsyncClient, node: str
    ) -> tuple[int, int | None] | None:
        """The measured domain's (height, view or term) at ``node``."""
        try:
            body = await self.status(http, node)
        except (httpx.HTTPError, ValueError):
            return None
        for entry in body.get("domains", []):
            if entry.get("domain") == self.domain:
                view = entry.get("view")
                return int(entry["height"]), None if view is None else int(view)
        return None

    async def leader(self, http: httpx.AsyncClient) -> str | None:
        for node in self.voters:
            try:
                body = await self.status(http, node)
            except (httpx.HTTPError, ValueError):
                continue
            for entry in body.get("domains", []):
                if entry.get("domain") == self.domain and entry.get("leader") in self.voters:
                    return str(entry["leader"])
        return None


def _retry_after_s(answer: bytes) -> float:
    """The wait a ``503`` answer asks for (``retry_after_ms``), within 0.05..5 s."""
    try:
        wanted = float(json.loads(answer).get("retry_after_ms", 1000)) / 1000
    except (ValueError, AttributeError, TypeError):
        wanted = 1.0
    return min(5.0, max(0.05, wanted))


def _outcome(status: int, answer: bytes, size: int) -> BatchOutcome:
    if status not in (200, 202):
        return BatchOutcome(0, error=True, detail=f"HTTP {status}")
    body = json.loads(answer)
    accepted = len(body.get("accepted", []))
    committed = sum(1 for c in body.get("committed") or [] if c is not None)
    return BatchOutcome(committed, rejected=size - accepted, timed_out=accepted - committed)


async def _measure(
    bench: BenchNetwork, spec: LoadSpec, payloads: Iterator[bytes], submit_to: str
) -> tuple[Recorder, dict[str, float], float, float, int | None, int | None]:
    lean = LeanHttpClient(timeout_s=COMMIT_WAIT_MS / 1000 + 15.0)
    async with httpx.AsyncClient(timeout=10.0) as http:
        targets = list(bench.voters)
        leader = await bench.leader(http)
        if submit_to == "leader":
            if leader is None:
                raise NetworkError("no leader reported by the voters")
            targets = [leader]
        elif leader is not None:
            # The leader first: a window smaller than the voter count goes to it.
            targets.remove(leader)
            targets.insert(0, leader)
        urls = [
            f"{bench.url(t)}/v1/domains/{bench.domain}/transactions/batch?wait={COMMIT_WAIT_MS}"
            for t in targets
        ]

        gates = [BusyGate() for _ in urls]

        async def submit(target: int, batch: list[bytes]) -> BatchOutcome:
            body = encode(batch)
            busy = 0
            gate = gates[target]
            while True:
                sent = await gate.acquire()
                try:
                    status, answer = await lean.post(urls[target], body)
                except BaseException:
                    gate.release(sent, None, failed=True)
                    raise
                # 503: admission control accepted nothing of the batch; resend it later.
                if status == 503:
                    gate.release(sent, _retry_after_s(answer))
                else:
                    gate.release(sent, None, failed=status not in (200, 202))
                if status != 503:
                    return replace(_outcome(status, answer, len(batch)), busy=busy)
                busy += 1

        meter = CpuMeter({**bench.pids(), "client": _self_pid()})
        probe = bench.voters[0]
        heights: list[tuple[int, int | None] | None] = []

        async def sample_window(t0: float, t1: float) -> tuple[dict[str, float], float]:
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            meter.start()
            heights.append(await bench.domain_position(http, probe))
            await asyncio.sleep(max(0.0, t1 - time.monotonic()))
            cpu = meter.stop()
            heights.append(await bench.domain_position(http, probe))
            return cpu

        start = time.monotonic()
        sampler = asyncio.create_task(
            sample_window(start + spec.warmup, start + spec.warmup + spec.duration)
        )
        if spec.rate is not None:
            recorder = await run_open_loop(
                submit,
                payloads,
                targets=len(urls),
                rate=spec.rate,
                warmup=spec.warmup,
                duration=spec.duration,
            )
        else:
            recorder = await run_closed_loop(
                submit,
                payloads,
                targets=len(urls),
                window=int(spec.window or 1),
                warmup=spec.warmup,
                duration=spec.duration,
            )
        per_node, machine = await sampler
        await lean.aclose()
    client = per_node.pop("client", 0.0)
    blocks = None
    views = None
    if len(heights) == 2 and heights[0] is not None and heights[1] is not None:
        blocks = heights[1][0] - heights[0][0]
        if heights[0][1] is not None and heights[1][1] is not None:
            views = heights[1][1] - heights[0][1]
    return recorder, per_node, client, machine, blocks, views


def _self_pid() -> int:
    import os

    return os.getpid()


def measure_point(
    bench: BenchNetwork,
    spec: LoadSpec,
    payloads: Iterator[bytes],
    *,
    tx_bytes: int,
    submit_to: str = "all",
) -> ConsensusResult:
    """Run one load point against a running network."""
    signed_before = payloads.signed_on_demand if isinstance(payloads, RecordStream) else 0
    recorder, per_node, client, machine, blocks, views = asyncio.run(
        _measure(bench, spec, payloads, submit_to)
    )
    latency = summarize(recorder.latencies)
    committed = recorder.committed_in_window
    notes = []
    if spec.mode == "closed" and recorder.submitted == 0:
        notes.append("no batch was sent inside the window")
    if recorder.error_kinds:
        notes.append(
            "failed batches: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(recorder.error_kinds.items()))
        )
    if isinstance(payloads, RecordStream) and payloads.signed_on_demand > signed_before:
        notes.append(
            f"the client signed {payloads.signed_on_demand - signed_before} records during the"
            " run (presigned pool too small): its CPU competed with the nodes"
        )
    return ConsensusResult(
        system="belep",
        protocol=bench.protocol,
        nodes=bench.nodes,
        standbys=bench.standbys,
        mode=spec.mode,
        offered_tps=spec.rate,
        window=spec.window,
        warmup_s=spec.warmup,
        duration_s=spec.duration,
        tx_bytes=tx_bytes,
        submitted=recorder.submitted,
        committed=committed,
        committed_tps=round(committed / recorder.duration, 1),
        p50_ms=latency.p50_ms,
        p90_ms=latency.p90_ms,
        p99_ms=latency.p99_ms,
        max_ms=latency.max_ms,
        mean_ms=latency.mean_ms,
        latency_samples=latency.count,
        timeouts=recorder.timeouts,
        rejected=recorder.rejected,
        errors=recorder.errors,
        busy_refusals=recorder.busy_refusals,
        cpu_percent=per_node,
        node_cpu_ms_per_tx=cpu_ms_per_tx(per_node, committed / recorder.duration),
        cpu_client_percent=client,
        cpu_machine_percent=machine,
        blocks=blocks,
        avg_block_txs=round(committed / blocks, 1) if blocks else None,
        view_changes=views,
        notes=notes,
        tuning=dict(bench.tuning),
    )
