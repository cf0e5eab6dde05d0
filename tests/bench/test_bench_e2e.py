"""Smoke runs of `belep bench consensus` and the PySyncObj reference: separate processes on
127.0.0.1, a few seconds each. They check the report's shape and that nothing is left running —
never speed (a 2-core CI machine shared with other work decides the numbers).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from belep.bench.consensus import LoadSpec
from belep.bench.pysyncobj_bench import PySyncObjCluster

pytestmark = pytest.mark.e2e

BELEP = [sys.executable, "-c", "from belep.cli import main; main()"]


def _processes_under(directory: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(str(directory) in part for part in cmdline):
            found.append(process)
    return found


def _wait_gone(directory: Path, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = _processes_under(directory)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_under(directory)
    return left


def test_bench_consensus_hpbft_reports_a_sane_point_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    net = tmp_path / "net"
    completed = subprocess.run(
        [
            *BELEP,
            "bench",
            "consensus",
            "--protocol",
            "hpbft",
            "--nodes",
            "4",
            "--standbys",
            "1",
            "--window",
            "8",
            "--warmup",
            "1",
            "--duration",
            "2",
            "--records",
            "3000",
            "--dir",
            str(net),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), **_env()},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    assert (report["system"], report["protocol"], report["nodes"], report["standbys"]) == (
        "belep",
        "hpbft",
        4,
        1,
    )
    assert report["mode"] == "closed"
    assert report["window"] == 8
    assert report["committed"] > 0
    assert report["committed_tps"] > 0
    assert report["p50_ms"] is not None
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["latency_samples"] > 0
    assert report["errors"] == 0
    assert report["rejected"] == 0
    assert set(report["cpu_percent"]) == {
        "station-1",
        "station-2",
        "station-3",
        "station-4",
        "city-1",
    }
    assert all(v >= 0 for v in report["cpu_percent"].values())
    assert report["blocks"] is not None
    assert report["blocks"] > 0
    assert 300 <= report["tx_bytes"] <= 700
    assert report["machine"]["cpus"] >= 1
    assert _wait_gone(net, 5.0) == []


def test_bench_consensus_stops_every_node_on_ctrl_c(tmp_path: Path) -> None:
    net = tmp_path / "net"
    bench = subprocess.Popen(
        [
            *BELEP,
            "bench",
            "consensus",
            "--protocol",
            "raft",
            "--nodes",
            "3",
            "--rate",
            "50",
            "--warmup",
            "1",
            "--duration",
            "60",
            "--records",
            "500",
            "--dir",
            str(net),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), **_env()},
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            nodes = [p for p in _processes_under(net) if p.pid != bench.pid]
            if len(nodes) >= 3 and (net / "nodes").is_dir():
                break
            assert bench.poll() is None, bench.stderr.read() if bench.stderr else ""
            time.sleep(0.2)
        else:
            pytest.fail("the benchmark network did not start")
        bench.send_signal(signal.SIGINT)
        bench.wait(60)
        left = _wait_gone(net, 15.0)
        assert left == [], [p.cmdline() for p in left]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def test_pysyncobj_reference_peer_reports_a_sane_point() -> None:
    with PySyncObjCluster.start(3) as cluster:
        pids = [p.process.pid for p in cluster.peers]
        result = cluster.measure(LoadSpec(window=6, warmup=0.5, duration=1.5), tx_bytes=480)
    assert (result.system, result.protocol, result.nodes) == ("pysyncobj", "raft", 3)
    assert result.committed > 0
    assert result.committed_tps > 0
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert result.p50_ms <= result.p99_ms
    assert result.errors == 0
    assert len(result.cpu_percent) == 3
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_lean_http_client_reuses_connections_and_replaces_one_the_server_closed() -> None:
    import asyncio

    from belep.bench.http_client import LeanHttpClient

    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            served += 1
            if body == b"chunked":
                writer.write(
                    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                )
            else:
                answer = b"echo:" + body
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer
                )
            await writer.drain()
            if body == b"close-after":
                break  # like a server dropping an idle keep-alive connection
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = LeanHttpClient(timeout_s=5.0)
        url = f"http://127.0.0.1:{port}/v1/x?wait=1"
        assert await client.post(url, b"one") == (200, b"echo:one")
        assert await client.post(url, b"two") == (200, b"echo:two")
        assert len(connections) == 1  # kept alive and reused
        assert await client.post(url, b"chunked") == (202, b"abcde")
        assert await client.post(url, b"close-after") == (200, b"echo:close-after")
        await asyncio.sleep(0.05)  # the server has closed that connection by now
        assert await client.post(url, b"three") == (200, b"echo:three")
        assert len(connections) == 2  # the stale connection was replaced once
        await client.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_nodes_are_stopped_even_when_the_benchmark_is_killed(tmp_path: Path) -> None:
    net = tmp_path / "net"
    bench = subprocess.Popen(
        [
            *BELEP,
            "bench",
            "consensus",
            "--protocol",
            "raft",
            "--nodes",
            "3",
            "--rate",
            "20",
            "--warmup",
            "1",
            "--duration",
            "60",
            "--records",
            "200",
            "--dir",
            str(net),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), **_env()},
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if len([p for p in _processes_under(net) if p.pid != bench.pid]) >= 3:
                break
            assert bench.poll() is None
            time.sleep(0.2)
        else:
            pytest.fail("the benchmark network did not start")
        time.sleep(1.0)  # the watchdog starts right after the nodes
        bench.kill()  # no chance to clean up: the watchdog must
        bench.wait()
        left = _wait_gone(net, 20.0)
        assert left == [], [p.cmdline() for p in left]
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
