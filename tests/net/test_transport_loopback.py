"""The asyncio transport on real sockets (127.0.0.1, ephemeral ports, one process).

Each hostile case — wrong key, unknown id, garbage, oversized frame, replayed
or modified frame, silent or stalled peer — is refused with its reason logged
and counted, and the node keeps serving honest peers afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random

import pytest
from net_testkit import (
    NODES,
    TEST_LIMITS,
    Inbox,
    RawPeer,
    address_of,
    allowed_keys,
    make_config,
    make_identity,
    run,
    wait_until,
)
from typer.testing import CliRunner

from belep.cli import app
from belep.crypto import PrivateKey
from belep.errors import NetworkError, ValidationError
from belep.ledger.block import NodeId
from belep.net import PeerAddress, QueueLimits, RejectReason, Transport
from belep.net.connection import ConnectionCore, Message, SendBytes
from belep.net.policy import BackoffPolicy, compute_backoff

pytestmark = pytest.mark.loopback

A, B, C = NODES


async def start(node: str, inbox: Inbox | None = None, **overrides: object) -> Transport:
    transport = Transport(make_config(node, **overrides), inbox or Inbox())  # type: ignore[arg-type]
    await transport.start()
    return transport


async def serving_b_and_c() -> tuple[Transport, Inbox, Transport, Inbox]:
    """node-b listening; node-c connected to it and exchanging messages."""
    b_inbox, c_inbox = Inbox(), Inbox()
    b = await start("node-b", b_inbox)
    c = await start("node-c", c_inbox)
    c.set_address(B, address_of(b))
    await c.wait_connected([B])
    await b.wait_connected([C])
    return b, b_inbox, c, c_inbox


async def still_serves(b: Transport, b_inbox: Inbox, c: Transport, tag: bytes) -> None:
    """node-b still delivers node-c's messages (the node was not harmed)."""
    await c.wait_connected([B])
    assert c.send(B, "dom", tag)
    await wait_until(lambda: tag in b_inbox.payloads())


def reject_logged(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    return any(getattr(r, "reason", None) == reason for r in caplog.records)


def test_two_nodes_exchange_messages_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="belep.net")

    async def body() -> None:
        a_inbox, b_inbox = Inbox(), Inbox()
        a = await start("node-a", a_inbox)
        b = await start("node-b", b_inbox)
        a.set_address(B, address_of(b))
        await a.wait_connected([B])
        for n in range(200):
            assert a.send(B, "station-1", n.to_bytes(2, "big"))
        await b.send_wait(A, "city", b"x" * 60_000)
        await wait_until(lambda: len(b_inbox.items) == 200 and len(a_inbox.items) == 1)
        assert b_inbox.items == [(A, "station-1", n.to_bytes(2, "big")) for n in range(200)]
        assert a_inbox.items == [(B, "city", b"x" * 60_000)]
        metrics = b.metrics()
        assert metrics.peers_connected == 1
        assert metrics.messages_in == 200
        assert metrics.messages_out == 1
        assert metrics.bytes_in > 200 * 2
        assert metrics.rejects == {}
        info = a.connection_info(B)
        assert info is not None
        assert info.direction == "outbound"
        assert info.initiator == A
        assert a.connection_info(C) is None
        await a.close()
        await b.close()
        connected = [r for r in caplog.records if getattr(r, "event", None) == "net.connected"]
        assert {(r.peer, r.direction) for r in connected} == {(B, "outbound"), (A, "inbound")}  # type: ignore[attr-defined]
        assert all(len(r.session) == 16 for r in connected)  # type: ignore[attr-defined]

    run(body())


def test_simultaneous_dials_settle_on_one_connection_both_sides_agree_on() -> None:
    async def body() -> None:
        for _ in range(4):
            a_inbox, b_inbox = Inbox(), Inbox()
            a = await start("node-a", a_inbox)
            b = await start("node-b", b_inbox)
            a.set_address(B, address_of(b))
            b.set_address(A, address_of(a))  # both dial at once

            def agreed(a: Transport = a, b: Transport = b) -> bool:
                ia, ib = a.connection_info(B), b.connection_info(A)
                return ia is not None and ib is not None and ia.session_id == ib.session_id

            await wait_until(agreed)
            info = a.connection_info(B)
            assert info is not None
            assert info.initiator == A  # the smaller id's dial survives a simultaneous dial
            assert a.send(B, "d", b"ping")
            assert b.send(A, "d", b"pong")
            await wait_until(lambda a_in=a_inbox, b_in=b_inbox: bool(a_in.items and b_in.items))
            assert a.metrics().rejects == {}
            assert b.metrics().rejects == {}
            await a.close()
            await b.close()

    run(body())


def test_a_peer_with_a_wrong_key_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="belep.net")

    async def body() -> None:
        b, b_inbox, c, _ = await serving_b_and_c()
        impostor = await RawPeer.connect(address_of(b))
        # The impostor accepts node-b's proof, but its own FINISH does not verify.
        await impostor.authenticate("node-a", "node-b", key=PrivateKey.from_seed(b"\x66" * 32))
        assert await impostor.closed_by_server()
        await wait_until(lambda: b.metrics().rejects.get("bad_signature") == 1)
        assert not b.is_connected(A)
        assert reject_logged(caplog, RejectReason.BAD_SIGNATURE)
        await still_serves(b, b_inbox, c, b"after impostor")
        impostor.close()
        await b.close()
        await c.close()

    run(body())


def test_an_unknown_node_id_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="belep.net")

    async def body() -> None:
        b, b_inbox, c, _ = await serving_b_and_c()
        stranger = await RawPeer.connect(address_of(b))
        with pytest.raises(ConnectionError):
            await stranger.authenticate("mallory", "node-b")
        stranger.close()
        await wait_until(lambda: b.metrics().rejects.get("unknown_peer") == 1)
        assert reject_logged(caplog, RejectReason.UNKNOWN_PEER)
        await still_serves(b, b_inbox, c, b"after stranger")
        await b.close()
        await c.close()

    run(body())


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "oversized_frame", id="http request"),
        pytest.param(b"\x00\x00\x00\x00", "malformed_frame", id="empty frame"),
        pytest.param(
            b"\x00\x00\x00\x10" + bytes(range(16)), "malformed_handshake", id="noise frame"
        ),
        pytest.param(b"\x00\x00\x10\x00" + b"z" * 100, "oversized_frame", id="big pre-auth frame"),
    ],
)
def test_garbage_is_refused_before_authentication(
    garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="belep.net")

    async def body() -> None:
        b, b_inbox, c, _ = await serving_b_and_c()
        raw = await RawPeer.connect(address_of(b))
        raw.write(garbage)
        assert await raw.closed_by_server()
        assert b.metrics().rejects == {reason: 1}
        assert reject_logged(caplog, reason)
        await still_serves(b, b_inbox, c, b"after garbage")
        await b.close()
        await c.close()

    run(body())


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        pytest.param("oversized", "oversized_frame", id="frame above max_frame_size"),
        pytest.param("replay", "replayed_frame", id="replayed message"),
        pytest.param("modify", "bad_mac", id="modified message"),
        pytest.param("garbage", "out_of_order_frame", id="random garbage after handshake"),
        pytest.param("forged", "bad_mac", id="forged frame with the next sequence number"),
        pytest.param("skip", "out_of_order_frame", id="dropped frame"),
    ],
)
def test_an_authenticated_peer_breaking_the_session_is_cut_off(
    attack: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """node-a authenticates properly, then misbehaves; node-b delivers nothing bad."""
    caplog.set_level(logging.INFO, logger="belep.net")

    async def body() -> None:
        b, b_inbox, c, _ = await serving_b_and_c()
        peer = await RawPeer.connect(address_of(b))
        await peer.authenticate("node-a", "node-b")
        first = peer.sealed("dom", b"vote-1")
        peer.write(first)
        await wait_until(lambda: b"vote-1" in b_inbox.payloads())
        assert b.is_connected(A)
        if attack == "oversized":
            peer.write((64 * 1024 + 1).to_bytes(4, "big") + b"\x00" * 1000)
        elif attack == "replay":
            peer.write(first)
        elif attack == "modify":
            frame = bytearray(peer.sealed("dom", b"vote-2"))
            frame[-20] ^= 0x01
            peer.write(bytes(frame))
        elif attack == "garbage":
            peer.write(b"\x00\x00\x00\x30" + b"\xff" + os.urandom(0x2F))
        elif attack == "forged":
            peer.write(b"\x00\x00\x00\x30" + (1).to_bytes(8, "big") + os.urandom(0x28))
        else:
            peer.sealed("dom", b"vote-2")  # sealed but never sent
            peer.write(peer.sealed("dom", b"vote-3"))
        assert await peer.closed_by_server()
        await wait_until(lambda: not b.is_connected(A))
        assert b.metrics().rejects == {reason: 1}
        assert reject_logged(caplog, reason)
        assert [p for p in b_inbox.payloads() if p.startswith(b"vote")] == [b"vote-1"]
        await still_serves(b, b_inbox, c, b"after " + attack.encode())
        await b.close()
        await c.close()

    run(body())


def test_a_silent_connection_times_out_in_the_handshake() -> None:
    async def body() -> None:
        b = await start("node-b", handshake_timeout=0.2)
        raw = await RawPeer.connect(address_of(b))
        assert await raw.closed_by_server()
        assert b.metrics().rejects == {"handshake_timeout": 1}
        await b.close()

    run(body())


def test_unauthenticated_connections_are_capped() -> None:
    async def body() -> None:
        b, b_inbox, c, _ = await serving_b_and_c()
        await b.close()
        b = await start("node-b", b_inbox, max_pending_handshakes=1, handshake_timeout=5.0)
        first = await RawPeer.connect(address_of(b))
        await wait_until(lambda: b._pending_handshakes == 1)  # the test observes the cap
        second = await RawPeer.connect(address_of(b))
        assert await second.closed_by_server()
        assert b.metrics().rejects == {"too_many_handshakes": 1}
        first.close()
        await b.close()
        await c.close()

    run(body())


def test_a_stalled_authenticated_peer_is_dropped_after_the_idle_timeout() -> None:
    async def body() -> None:
        b = await start("node-b", ping_interval=0.05, idle_timeout=0.3)
        peer = await RawPeer.connect(address_of(b))
        await peer.authenticate("node-a", "node-b")
        await wait_until(lambda: b.is_connected(A))
        assert await peer.closed_by_server()  # node-a never sends anything
        assert b.metrics().rejects == {"idle_timeout": 1}
        await b.close()

    run(body())


def test_idle_but_healthy_peers_stay_connected_thanks_to_pings() -> None:
    async def body() -> None:
        a = await start("node-a", ping_interval=0.05, idle_timeout=0.3)
        b = await start("node-b", ping_interval=0.05, idle_timeout=0.3)
        a.set_address(B, address_of(b))
        await a.wait_connected([B])
        session = a.connection_info(B)
        await asyncio.sleep(0.8)  # the condition under test is time passing with no traffic
        assert a.connection_info(B) == session
        assert b.metrics().rejects == {}
        assert b.metrics().frames_in > 4
        await a.close()
        await b.close()

    run(body())


def test_reconnects_after_the_peer_restarts_and_delivers_what_was_queued() -> None:
    async def body() -> None:
        a_inbox = Inbox()
        a = await start("node-a", a_inbox)
        b_inbox = Inbox()
        b = await start("node-b", b_inbox)
        port = address_of(b).port
        a.set_address(B, address_of(b))
        await a.wait_connected([B])
        first = a.connection_info(B)
        await b.close()
        await wait_until(lambda: not a.is_connected(B))
        for n in range(5):
            assert a.send(B, "dom", b"queued-%d" % n)
        b2_inbox = Inbox()
        b2 = await start("node-b", b2_inbox, listen=PeerAddress("127.0.0.1", port))
        await a.wait_connected([B])
        await wait_until(lambda: len(b2_inbox.items) == 5)
        assert b2_inbox.payloads() == [b"queued-%d" % n for n in range(5)]
        second = a.connection_info(B)
        assert first is not None
        assert second is not None
        assert second.peer_incarnation != first.peer_incarnation
        assert b2.send(A, "dom", b"back")
        await wait_until(lambda: b"back" in a_inbox.payloads())
        await a.close()
        await b2.close()

    run(body())


def test_redial_delays_follow_the_backoff_policy_with_the_injected_rng() -> None:
    """No wall clock: the injected sleep records each delay and returns at once."""

    async def body() -> None:
        closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        delays: list[float] = []

        async def record(delay: float) -> None:
            delays.append(delay)
            await asyncio.sleep(0)

        policy = BackoffPolicy(initial=0.1, maximum=1.0)
        a = Transport(
            make_config("node-a", backoff=policy, listen=None),
            Inbox(),
            rng=random.Random(42),
            sleep=record,
        )
        await a.start()
        a.set_address(B, PeerAddress("127.0.0.1", port))
        await wait_until(lambda: len(delays) >= 8)
        await a.close()
        rng = random.Random(42)
        assert delays[:8] == [compute_backoff(policy, n, rng.random()) for n in range(8)]
        assert a.metrics().dial_failures >= 8

    run(body())


def test_a_slow_peer_costs_bounded_memory_drop_oldest() -> None:
    async def body() -> None:
        limits = QueueLimits(max_bytes=1 << 20, max_messages=5)
        a = await start("node-a", queue=limits)
        for n in range(20):
            assert a.send(B, "dom", b"m%d" % n)
        metrics = a.metrics()
        assert metrics.messages_dropped == 15
        assert metrics.queued_messages[B] == 5
        b_inbox = Inbox()
        b = await start("node-b", b_inbox)
        a.set_address(B, address_of(b))
        await wait_until(lambda: len(b_inbox.items) == 5)
        assert b_inbox.payloads() == [b"m%d" % n for n in range(15, 20)]
        await a.close()
        await b.close()

    run(body())


def test_send_wait_blocks_while_the_queue_is_full_and_never_drops() -> None:
    async def body() -> None:
        limits = QueueLimits(max_bytes=1 << 20, max_messages=2)
        a = await start("node-a", queue=limits)
        await a.send_wait(B, "client", b"r0")
        await a.send_wait(B, "client", b"r1")
        third = asyncio.ensure_future(a.send_wait(B, "client", b"r2"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not third.done()
        assert not a.send(B, "dom", b"droppable")  # a full reliable queue refuses it
        b_inbox = Inbox()
        b = await start("node-b", b_inbox)
        a.set_address(B, address_of(b))
        await third
        await wait_until(lambda: len(b_inbox.items) == 3)
        assert b_inbox.payloads() == [b"r0", b"r1", b"r2"]
        await b.close()
        await wait_until(lambda: not a.is_connected(B))
        await a.send_wait(B, "client", b"r3")
        await a.send_wait(B, "client", b"r4")
        blocked = asyncio.ensure_future(a.send_wait(B, "client", b"r5"))
        await asyncio.sleep(0)
        await a.close()
        with pytest.raises(NetworkError):
            await blocked

    run(body())


def test_a_failing_handler_does_not_cost_the_connection() -> None:
    async def body() -> None:
        got: list[bytes] = []

        def handler(peer: NodeId, channel: str, payload: bytes) -> None:
            if payload == b"boom":
                raise RuntimeError("handler bug")
            got.append(payload)

        b = Transport(make_config("node-b"), handler)
        await b.start()
        a = await start("node-a")
        a.set_address(B, address_of(b))
        await a.wait_connected([B])
        a.send(B, "dom", b"boom")
        a.send(B, "dom", b"fine")
        await wait_until(lambda: got == [b"fine"])
        assert b.metrics().handler_errors == 1
        assert b.is_connected(A)
        await a.close()
        await b.close()

    run(body())


def test_caller_errors_are_reported_to_the_caller() -> None:
    async def body() -> None:
        a = await start("node-a")
        with pytest.raises(ValidationError):
            a.send(NodeId("mallory"), "dom", b"x")
        with pytest.raises(ValidationError):
            a.send(A, "dom", b"to myself")
        with pytest.raises(ValidationError):
            a.send(B, "dom", b"x" * (64 * 1024))
        with pytest.raises(ValidationError):
            a.send(B, "", b"x")
        with pytest.raises(NetworkError):
            await a.start()
        await a.close()
        with pytest.raises(NetworkError):
            a.send(B, "dom", b"x")

    run(body())


def test_bench_transport_command_measures_both_modes() -> None:
    """`belep bench transport` end to end, tiny: two processes per mode."""
    result = CliRunner().invoke(
        app,
        ["bench", "transport", "--sizes", "2048", "--seconds", "0.2", "--repeat", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [r["mode"] for r in report["results"]] == ["raw-tcp", "framed-tcp", "belep-net"]
    for row in report["results"]:
        assert row["payload_bytes"] == 2048
        assert row["messages"] > 0
        assert row["messages_per_second"] > 0
    assert report["results"][0]["ratio_to_raw_tcp"] == 1.0


def test_close_lets_bytes_already_in_the_socket_reach_the_peer() -> None:
    """node-b (hand-driven) stops reading, so node-a's socket buffer backs up;
    what node-a had already written must still arrive when it closes."""

    async def body() -> None:
        release = asyncio.Event()
        received: list[bytes] = []
        finished = asyncio.Event()

        async def node_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            core = ConnectionCore.accepting(make_identity("node-b"), TEST_LIMITS, allowed_keys())
            released = False
            while data := await reader.read(65536):
                for event in core.receive_data(data):
                    if isinstance(event, SendBytes):
                        writer.write(event.data)
                    elif isinstance(event, Message):
                        received.append(event.payload)
                if core.is_open and not released:
                    await release.wait()
                    released = True
            finished.set()
            writer.close()

        server = await asyncio.start_server(node_b, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = await start("node-a")
        a.set_address(B, PeerAddress("127.0.0.1", port))
        await a.wait_connected([B])
        for n in range(300):
            assert a.send(B, "dom", n.to_bytes(2, "big") * 30_000)
        # Wait until the kernel is full and the writer is parked on a backed-up buffer.
        await wait_until(lambda: a.metrics().socket_buffered_bytes[B] > 64 * 1024)
        written = a.metrics().messages_out
        assert 0 < written < 300
        closing = asyncio.ensure_future(a.close())
        for _ in range(10):  # node-a's close runs for a while before node-b reads again
            await asyncio.sleep(0)
        release.set()
        await closing
        await finished.wait()
        assert received == [n.to_bytes(2, "big") * 30_000 for n in range(written)]
        server.close()
        await server.wait_closed()

    run(body())
