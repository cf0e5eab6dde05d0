"""The consensus benchmark's pure parts: percentiles, window accounting, records, topologies, plots."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from belep.bench.consensus import LoadSpec, bench_topology
from belep.bench.gate import BusyGate
from belep.bench.loadgen import ERROR_BACKOFF_S, BatchOutcome, Recorder, run_closed_loop
from belep.bench.stats import ConsensusResult, percentile, summarize
from belep.bench.sweep import SystemPlan, is_saturated, parse_system, plot_sweep
from belep.bench.workload import RecordStream, presign, presign_cached
from belep.deploy.topology import parse_topology
from belep.errors import ConfigError
from belep.ledger.block import Transaction
from belep.ledger.envelope import EnvelopeValidator, parse_envelope


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0], 50, 1.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([float(i) for i in range(1, 1001)], 99, 990.0),
    ],
    ids=["one", "two-median-is-lower", "four-p50", "four-p75", "hundred-p99", "max", "thousand"],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_none_not_zero() -> None:
    assert percentile([], 50) is None
    summary = summarize([])
    assert summary.count == 0
    assert summary.p50_ms is None
    assert summary.p99_ms is None


def test_percentile_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)


def test_summary_in_milliseconds() -> None:
    summary = summarize([0.010, 0.020, 0.030, 0.040])
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms, summary.mean_ms) == (
        20.0,
        40.0,
        40.0,
        25.0,
    )


def test_recorder_counts_latency_by_send_time_and_throughput_by_ack_time() -> None:
    recorder = Recorder(t0=10.0, t1=20.0)
    recorder.record(9.0, 10.5, BatchOutcome(3), 3)  # sent in warm-up, acknowledged inside
    recorder.record(12.0, 12.25, BatchOutcome(2, rejected=1), 3)  # inside, one refused
    recorder.record(19.5, 21.0, BatchOutcome(1, timed_out=1), 2)  # sent inside, acked in drain
    recorder.record(20.5, 21.0, BatchOutcome(4), 4)  # drain: neither
    assert recorder.committed_in_window == 3 + 2
    assert recorder.submitted == 3 + 2
    assert recorder.rejected == 1
    assert recorder.timeouts == 1
    assert sorted(recorder.latencies) == [0.25, 0.25, 1.5]


def test_recorder_counts_failed_batches_as_errors() -> None:
    recorder = Recorder(t0=0.0, t1=1.0)
    recorder.record(0.5, 0.6, BatchOutcome(0, error=True), 5)
    assert recorder.errors == 5
    assert recorder.latencies == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"rate": 10.0, "window": 1}, "exactly one"),
        ({"rate": 0.0}, "positive"),
        ({"window": 0}, "positive"),
        ({"rate": 10.0, "duration": 0.0}, "duration"),
    ],
    ids=["neither", "both", "zero-rate", "zero-window", "zero-duration"],
)
def test_load_spec_is_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadSpec(**kwargs)  # type: ignore[arg-type]


def test_records_are_valid_distinct_and_evidence_sized() -> None:
    records = presign(40, seed=3, timestamp_ms=1_700_000_000_000, workers=1)
    validator = EnvelopeValidator()
    assert all(validator(Transaction(r)) for r in records)
    assert len({Transaction(r).tx_hash for r in records}) == 40
    assert all(300 <= len(r) <= 700 for r in records)
    envelope = parse_envelope(records[0])
    assert envelope.kind == "register-dispatch"
    assert envelope.cids == ()  # no pinning of files that do not exist
    assert {"task", "plate", "camera", "officer", "location", "file_sha256"} <= set(envelope.body)


def test_record_cache_round_trip_and_stream_continues_past_the_pool(tmp_path: Path) -> None:
    first = presign_cached(30, seed=5, directory=tmp_path)
    again = presign_cached(20, seed=5, directory=tmp_path)
    assert again == first[:20]
    stream = RecordStream(first[:10], seed=5)
    taken = [next(stream) for _ in range(30)]
    assert taken == first  # records signed on demand equal the cached ones
    assert stream.signed_on_demand == 20


@pytest.mark.parametrize(
    ("protocol", "nodes", "standbys", "domain", "voters", "observers"),
    [
        ("pbft", 7, 0, "bench", 7, 0),
        ("raft", 7, 0, "bench", 7, 0),
        ("hpbft", 4, 3, "station", 4, 3),
    ],
    ids=["pbft-7", "raft-7", "hpbft-4+3"],
)
def test_bench_topology_shapes(
    protocol: str, nodes: int, standbys: int, domain: str, voters: int, observers: int
) -> None:
    text, measured = bench_topology(protocol, nodes, standbys, 30_000)
    topology = parse_topology(text)
    assert measured == domain
    plan = next(d for d in topology.domains() if d.domain == domain)
    assert (plan.protocol, len(plan.voters), len(plan.observers)) == (protocol, voters, observers)
    assert len(topology.nodes) == nodes + standbys


def test_bench_topology_refuses_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown protocol"):
        bench_topology("paxos", 3, 0, 30_000)


def test_sweep_systems_and_labels() -> None:
    assert parse_system("hpbft", 7, (4, 3)) == SystemPlan("hpbft", 4, 3)
    assert parse_system("PBFT", 7, (4, 3)) == SystemPlan("pbft", 7)
    assert SystemPlan("hpbft", 4, 3).label == "BELEP HPBFT (4+3)"
    assert SystemPlan("pysyncobj", 7).label == "PySyncObj Raft (7)"
    with pytest.raises(ConfigError):
        parse_system("paxos", 7, (4, 3))


def _row(
    system: str, protocol: str, offered: float | None, tps: float, p50: float | None
) -> dict[str, object]:
    return {
        "system": system,
        "protocol": protocol,
        "nodes": 7 if protocol != "hpbft" else 4,
        "standbys": 3 if protocol == "hpbft" else 0,
        "offered_tps": offered,
        "window": None if offered else 1,
        "committed_tps": tps,
        "p50_ms": p50,
        "p99_ms": None if p50 is None else p50 * 3,
    }


def test_plot_writes_a_png_with_every_system(tmp_path: Path) -> None:
    rows = [
        _row("belep", "hpbft", None, 40.0, 20.0),
        _row("belep", "hpbft", 500.0, 500.0, 30.0),
        _row("belep", "hpbft", 1000.0, 900.0, 80.0),
        _row("belep", "pbft", 500.0, 480.0, 60.0),
        _row("pysyncobj", "raft", 500.0, 500.0, 200.0),
        _row("pysyncobj", "raft", 1000.0, 0.0, None),  # nothing committed: no latency point
        {**_row("belep", "hpbft", None, 950.0, 900.0), "window": 3000},  # saturation line
    ]
    out = tmp_path / "figures" / "fig7-8.png"
    plot_sweep(rows, out, subtitle="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.dumps(rows)  # the rows are what `--out` stores


def _result(offered: float | None, committed_tps: float) -> ConsensusResult:
    return ConsensusResult(
        system="belep",
        protocol="hpbft",
        nodes=4,
        standbys=3,
        mode="open" if offered else "closed",
        offered_tps=offered,
        window=None if offered else 3000,
        warmup_s=1.0,
        duration_s=1.0,
        tx_bytes=480,
        submitted=0,
        committed=0,
        committed_tps=committed_tps,
        p50_ms=None,
        p90_ms=None,
        p99_ms=None,
        max_ms=None,
        mean_ms=None,
        latency_samples=0,
        timeouts=0,
        rejected=0,
        errors=0,
        cpu_percent={},
        cpu_client_percent=0.0,
        cpu_machine_percent=0.0,
        machine={},
    )


def test_saturation_is_judged_on_open_loop_points_only() -> None:
    assert not is_saturated(_result(1000.0, 950.0))
    assert is_saturated(_result(1000.0, 700.0))
    assert not is_saturated(_result(None, 10.0))  # a closed loop offers no rate


def test_closed_loop_budget_follows_the_window() -> None:
    light = LoadSpec(window=1, warmup=1.0, duration=2.0)
    heavy = LoadSpec(window=3000, warmup=1.0, duration=2.0)
    assert light.budget(6000.0) < 2000
    assert heavy.budget(6000.0) >= 6000 * 4
    assert LoadSpec(rate=100.0, warmup=1.0, duration=2.0).budget(6000.0) >= 400


def test_cpu_per_transaction() -> None:
    from belep.bench.stats import cpu_ms_per_tx

    assert cpu_ms_per_tx({"a": 50.0, "b": 150.0}, 1000.0) == 2.0  # 2 CPU-s/s over 1000 tx/s
    assert cpu_ms_per_tx({"a": 50.0}, 0.0) is None


def test_busy_gate_is_an_aimd_limit_that_honours_retry_after() -> None:
    async def scenario() -> None:
        gate = BusyGate(initial=4)
        sent = [await gate.acquire() for _ in range(4)]
        assert gate.in_flight == 4
        fifth = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        assert not fifth.done()  # the limit holds
        gate.release(sent[0], None)  # accepted: the limit grows to 5
        assert gate.limit == 5
        sent.append(await fifth)
        gate.release(sent[1], 0.05)  # refused: halved once, closed for 50 ms
        gate.release(sent[2], 0.05)  # refused too, but sent before the decrease
        assert gate.limit == 2
        assert gate.in_flight == 2
        gate.release(sent[3], None)
        gate.release(sent[4], None)
        assert gate.limit == 4
        loop = asyncio.get_running_loop()
        started = loop.time()
        again = await gate.acquire()
        assert loop.time() - started >= 0.03  # waited for the retry time
        gate.release(again, 0.01)  # sent after the decrease: halves again
        assert gate.limit == 2
        for _ in range(10):
            gate.release(await gate.acquire(), 0.0)
        assert gate.limit == 1  # never below one

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="initial"):
        BusyGate(initial=0)


def test_busy_gate_keeps_its_limit_when_a_request_fails() -> None:
    async def scenario() -> None:
        gate = BusyGate(initial=4)
        for _ in range(3):
            gate.release(await gate.acquire(), None, failed=True)  # e.g. the node is down
        assert gate.limit == 4
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_closed_loop_backs_off_a_failing_node() -> None:
    """A stream whose node is down waits between batches instead of spinning through the
    workload (before: 200,000 failed transactions in 14 s against one killed node)."""
    calls = {0: 0, 1: 0}

    async def submit(target: int, batch: list[bytes]) -> BatchOutcome:
        calls[target] += 1
        if target == 1:
            raise ConnectionRefusedError
        await asyncio.sleep(0.01)
        return BatchOutcome(len(batch))

    payloads = iter([b"x"] * 1_000_000)
    recorder = asyncio.run(
        run_closed_loop(submit, payloads, targets=2, window=2, warmup=0.0, duration=0.3, drain=1)
    )
    assert calls[0] >= 10
    assert 1 <= calls[1] <= 0.3 / ERROR_BACKOFF_S + 2
    assert recorder.error_kinds == {"ConnectionRefusedError": calls[1]}


def test_busy_gate_grants_turns_in_arrival_order_and_survives_cancellation() -> None:
    async def scenario() -> list[int]:
        gate = BusyGate(initial=1)
        first = await gate.acquire()
        order: list[int] = []

        async def waiter(index: int) -> None:
            sent = await gate.acquire()
            order.append(index)
            await asyncio.sleep(0)
            gate.release(sent, None)

        tasks = [asyncio.create_task(waiter(i)) for i in range(6)]
        await asyncio.sleep(0.01)
        assert gate.waiting == 6
        tasks[2].cancel()  # gives up while waiting: its turn goes to the next
        gate.release(first, None)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert gate.in_flight == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 3, 4, 5]
