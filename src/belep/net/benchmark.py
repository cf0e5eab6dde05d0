"""Transport throughput on loopback: authenticated frames next to raw TCP.

Two processes on 127.0.0.1 (a sender here, a receiver spawned with
``multiprocessing``), for each payload size:

* **raw TCP** — the reference: the sender writes pre-built length-prefixed
  frames to a plain asyncio stream and half-closes; the receiver reads and
  counts bytes until EOF. No parsing, no crypto: the ceiling of asyncio
  streams on this machine (same buffer sizes as the transport).
* **framed TCP** — the same stream, but the receiver splits it into frames
  with :class:`~belep.net.wire.FrameDecoder`, one Python step per frame:
  separates per-message interpreter cost from cryptography.
* **belep.net** — two :class:`Transport` endpoints after a real handshake;
  the sender calls :meth:`Transport.send_wait` (backpressure, nothing
  dropped), the receiver's handler counts messages until a stop message.

Both measure at the receiver, from the first byte/message to the end marker,
so process start-up and the handshake are excluded. Used by
``belep bench transport``; the results go in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from belep.crypto import PrivateKey
from belep.errors import NetworkError
from belep.ledger.block import NodeId
from belep.net.config import PeerAddress, TransportConfig
from belep.net.transport import READ_SIZE, STREAM_LIMIT, WRITE_BATCH_BYTES, Transport
from belep.net.wire import DEFAULT_MAX_FRAME, FrameDecoder

SENDER = NodeId("bench-sender")
RECEIVER = NodeId("bench-receiver")
NETWORK = b"belep-bench"
CHANNEL = "bench"
STOP_CHANNEL = "stop"
MODES = ("raw-tcp", "framed-tcp", "belep-net")


@dataclass(frozen=True, slots=True)
class TransportBenchResult:
    """One measurement: ``mode`` is one of :data:`MODES`."""

    mode: str
    payload_bytes: int
    messages: int
    seconds: float

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.messages_per_second * self.payload_bytes / (1024 * 1024)


def _bench_key(node: NodeId) -> PrivateKey:
    """Fixed benchmark keys (never used outside this benchmark)."""
    return PrivateKey.from_seed(node.encode().ljust(32, b"\x00")[:32])


def _config(node: NodeId, listen: PeerAddress | None) -> TransportConfig:
    peers = {n: _bench_key(n).public_key for n in (SENDER, RECEIVER)}
    return TransportConfig(node, _bench_key(node), NETWORK, peers, listen=listen)


# -- receiver process ----------------------------------------------------------------


def receiver_main(mode: str, pipe: Connection) -> None:
    """Entry point of the receiver process: report the port, then (count, seconds)."""
    if mode in ("raw-tcp", "framed-tcp"):
        asyncio.run(_raw_receiver(pipe, framed=mode == "framed-tcp"))
    else:
        asyncio.run(_transport_receiver(pipe))


async def _raw_receiver(pipe: Connection, *, framed: bool) -> None:
    done = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        first = 0.0
        frames = 0
        decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        while data := await reader.read(READ_SIZE):
            if not total:
                first = time.perf_counter()
            total += len(data)
            if framed:
                decoder.feed(data)
                while decoder.next_frame() is not None:
                    frames += 1
        done.set_result((frames if framed else total, time.perf_counter() - first))
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, limit=STREAM_LIMIT)
    pipe.send(server.sockets[0].getsockname()[1])
    total, seconds = await done
    pipe.send((total, seconds))
    server.close()


async def _transport_receiver(pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"count": 0, "first": 0.0}

    def on_message(peer: NodeId, channel: str, payload: bytes) -> None:
        if channel == CHANNEL:
            if not state["count"]:
                state["first"] = time.perf_counter()
            state["count"] += 1
        elif not done.done():
            done.set_result(time.perf_counter() - state["first"])

    transport = Transport(_config(RECEIVER, PeerAddress("127.0.0.1", 0)), on_message)
    await transport.start()
    address = transport.listen_address
    pipe.send(address.port if address else 0)
    seconds = await done
    pipe.send((int(state["count"]), seconds))
    await transport.close()


# -- sender ----------------------------------------------------------------------------


def run_transport_benchmark(
    sizes: tuple[int, ...] = (1024, 64 * 1024), seconds: float = 2.0, repeat: int = 3
) -> list[TransportBenchResult]:
    """Best of ``repeat`` interleaved runs of raw TCP and belep.net for each size.

    Interleaving and keeping the best run make the ratio robust to other
    load on a shared machine (noise only ever slows a run down).
    """
    results: list[TransportBenchResult] = []
    for size in sizes:
        best: dict[str, TransportBenchResult] = {}
        for _ in range(repeat):
            for mode in MODES:
                result = _run_once(mode, size, seconds)
                if mode not in best or result.messages_per_second > best[mode].messages_per_second:
                    best[mode] = result
        results += [best[mode] for mode in MODES]
    return results


def _run_once(mode: str, size: int, seconds: float) -> TransportBenchResult:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=receiver_main, args=(mode, child), daemon=True)
    process.start()
    try:
        port = _receive(parent, 30.0)
        if mode == "raw-tcp":
            asyncio.run(_raw_sender(port, size, seconds))
            total, elapsed = _receive(parent, 30.0)
            count = total // (size + 4)
        elif mode == "framed-tcp":
            asyncio.run(_raw_sender(port, size, seconds))
            count, elapsed = _receive(parent, 30.0)
        else:
            asyncio.run(_transport_sender(port, size, seconds))
            count, elapsed = _receive(parent, 30.0)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    return TransportBenchResult(mode, size, count, elapsed)


def _receive(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise NetworkError(f"benchmark receiver did not answer within {timeout} s")
    return pipe.recv()


async def _raw_sender(port: int, size: int, seconds: float) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port, limit=STREAM_LIMIT)
    frame = size.to_bytes(4, "big") + bytes(size)
    batch = frame * max(1, WRITE_BATCH_BYTES // len(frame))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        writer.write(batch)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _transport_sender(port: int, size: int, seconds: float) -> None:
    config = _config(SENDER, None)
    transport = Transport(config, lambda *_: None)
    await transport.start()
    transport.set_address(RECEIVER, PeerAddress("127.0.0.1", port))
    await transport.wait_connected([RECEIVER])
    payload = bytes(size)
    deadline = time.perf_counter() + seconds
    sent = 0
    while True:
        await transport.send_wait(RECEIVER, CHANNEL, payload)
        sent += 1
        if sent % 64 == 0 and time.perf_counter() >= deadline:
            break
    await transport.send_wait(RECEIVER, STOP_CHANNEL, b"")
    while transport.metrics().queued_messages[RECEIVER]:
        await asyncio.sleep(0.01)
    await transport.close()
