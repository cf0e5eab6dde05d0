"""The asyncio edge of the transport: sockets, tasks, timers, metrics, logs.

:class:`Transport` keeps at most one authenticated connection per peer of
the caller's allowed set (node id -> public key, from the genesis), dials the
peers it has addresses for, accepts connections from any of them, and moves
``(peer, channel, payload)`` messages. All protocol decisions live in the
pure modules (:mod:`~belep.net.connection`, :mod:`~belep.net.policy`); this
module only runs them against real sockets.

Delivery contract (``docs/spec/transport.md`` §6):

* at most once, in order per connection; messages queued or in flight when
  a connection drops may be lost (consensus retransmits);
* ``on_message(peer, channel, payload)`` is called in the connection's
  reader task; ``peer`` is the authenticated node id. It must not block; an
  exception it raises is logged and counted and does not close the
  connection (it is not the peer's fault);
* :meth:`Transport.send` never waits (droppable, drop-oldest when the
  peer's queue is full); :meth:`Transport.send_wait` waits for room and
  is never dropped by the queue.

Every connection close is logged on the ``belep.net`` logger with the
structured fields ``event``, ``peer``, ``remote``, ``direction`` and, for
refusals, ``reason`` (a :class:`~belep.net.wire.RejectReason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from belep.errors import NetworkError, PeerRejected, ValidationError
from belep.ledger.block import NodeId
from belep.net.config import ConnectionInfo, PeerAddress, TransportConfig, TransportMetrics
from belep.net.connection import (
    Close,
    ConnectionCore,
    ConnectionEvent,
    Established,
    Message,
    SendBytes,
)
from belep.net.handshake import INCARNATION_SIZE, LocalIdentity
from belep.net.peers import Counters, LiveConnection, PeerState
from belep.net.policy import OutboundMessage, compute_backoff, is_preferred_connection
from belep.net.session import compute_max_payload, encode_channel
from belep.net.wire import RejectReason

log = logging.getLogger("belep.net")

MessageHandler = Callable[[NodeId, str, bytes], None]
Sleep = Callable[[float], Awaitable[None]]

#: Bytes asked of the socket per read.
READ_SIZE = 256 * 1024
#: Largest batch of queued messages sealed and written in one go.
WRITE_BATCH_BYTES = 1024 * 1024
#: asyncio stream buffer limit (reading pauses above twice this).
STREAM_LIMIT = 1024 * 1024


class Transport:
    """Authenticated message transport between the nodes of one network."""

    def __init__(
        self,
        config: TransportConfig,
        on_message: MessageHandler,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        incarnation: bytes | None = None,
    ) -> None:
        self._config = config
        self._on_message = on_message
        self._rng = rng if rng is not None else random.SystemRandom()
        self._clock = clock
        self._sleep = sleep
        self._identity = LocalIdentity(
            config.node_id,
            config.key,
            config.network_id,
            incarnation if incarnation is not None else os.urandom(INCARNATION_SIZE),
        )
        self._allowed = {n: k for n, k in config.peers.items() if n != config.node_id}
        self._peers = {
            n: PeerState(n, k, config.addresses.get(n), config.queue)
            for n, k in self._allowed.items()
        }
        self._counters = Counters()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[LiveConnection] = set()
        self._pending_handshakes = 0
        self._started = False
        self._closed = False

    # -- public API --------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._config.node_id

    @property
    def incarnation(self) -> bytes:
        return self._identity.incarnation

    @property
    def listen_address(self) -> PeerAddress | None:
        """The address actually bound (the real port when ``listen.port`` was 0)."""
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return PeerAddress(host, port)

    async def start(self) -> None:
        """Listen (if configured), start dialing and the keep-alive timer."""
        if self._started:
            raise NetworkError("transport already started")
        self._started = True
        listen = self._config.listen
        if listen is not None:
            try:
                self._server = await asyncio.start_server(
                    self._accept, listen.host, listen.port, limit=STREAM_LIMIT
                )
            except OSError as exc:
                raise NetworkError(f"cannot listen on {listen.host}:{listen.port}: {exc}") from exc
            log.info("listening on %s", self.listen_address, extra={"event": "net.listening"})
        for peer in self._peers.values():
            if peer.address is not None:
                self._start_dialer(peer)
        self._spawn(self._keepalive_loop(), "net-keepalive")

    def set_address(self, peer_id: NodeId, address: PeerAddress) -> None:
        """Learn or change where ``peer_id`` listens; dial it from now on."""
        peer = self._peer(peer_id)
        peer.address = address
        if self._started and not self._closed and peer.dialer is None:
            self._start_dialer(peer)

    def send(self, peer_id: NodeId, channel: str, payload: bytes) -> bool:
        """Queue a droppable message; never waits. False if the queue refused it.

        When the peer's queue is full the oldest droppable messages are
        evicted to make room (consensus traffic: the protocols retransmit).
        """
        if self._closed:
            raise NetworkError("transport is closed")
        peer = self._peer(peer_id)
        message = self._outbound(channel, payload, droppable=True)
        outcome = peer.queue.push(message)
        self._counters.messages_dropped += outcome.evicted + (not outcome.accepted)
        if outcome.accepted:
            peer.has_data.set()
        return outcome.accepted

    async def send_wait(self, peer_id: NodeId, channel: str, payload: bytes) -> None:
        """Queue a message the queue never evicts; wait while the queue has no room.

        Backpressure for client traffic and state transfer. Like every
        message, it is still lost if its connection drops while it is in
        flight: end-to-end acknowledgement is the caller's business.
        """
        peer = self._peer(peer_id)
        message = self._outbound(channel, payload, droppable=False)
        while True:
            if self._closed:
                raise NetworkError("transport is closed")
            if peer.queue.can_accept(message):
                outcome = peer.queue.push(message)
                self._counters.messages_dropped += outcome.evicted
                peer.has_data.set()
                return
            peer.has_space.clear()
            await peer.has_space.wait()

    def is_connected(self, peer_id: NodeId) -> bool:
        return self._peer(peer_id).connection is not None

    def connection_info(self, peer_id: NodeId) -> ConnectionInfo | None:
        """The current connection to ``peer_id``, or ``None``."""
        conn = self._peer(peer_id).connection
        if conn is None:
            return None
        result = conn.result
        return ConnectionInfo(
            peer=peer_id,
            direction=conn.direction,
            remote=conn.remote,
            initiator=result.initiator,
            session_id=result.session_id.hex(),
            peer_incarnation=result.peer_incarnation.hex(),
        )

    def connected_peers(self) -> frozenset[NodeId]:
        return frozenset(p.node_id for p in self._peers.values() if p.connection is not None)

    async def wait_connected(self, peers: Iterable[NodeId] | None = None) -> None:
        """Return once every peer in ``peers`` (default: all) is connected."""
        for peer_id in self._peers if peers is None else peers:
            await self._peer(peer_id).connected.wait()

    def metrics(self) -> TransportMetrics:
        c = self._counters
        return TransportMetrics(
            peers_connected=len(self.connected_peers()),
            frames_in=c.frames_in,
            frames_out=c.frames_out,
            messages_in=c.messages_in,
            messages_out=c.messages_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            messages_dropped=c.messages_dropped,
            handler_errors=c.handler_errors,
            handshakes_completed=c.handshakes_completed,
            duplicate_connections=c.duplicate_connections,
            dial_failures=c.dial_failures,
            rejects=dict(c.rejects),
            queued_messages={p.node_id: len(p.queue) for p in self._peers.values()},
            queued_bytes={p.node_id: p.queue.bytes for p in self._peers.values()},
            socket_buffered_bytes={
                p.node_id: p.connection.writer.transport.get_write_buffer_size()
                if p.connection is not None
                else 0
                for p in self._peers.values()
            },
        )

    async def close(self, grace: float = 2.0) -> None:
        """Close every connection (telling peers why) and stop all tasks.

        Bytes already handed to a socket get up to ``grace`` seconds to reach
        the peer; messages still in a send queue are discarded.
        """
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            peer.has_space.set()  # wake send_wait callers: they raise NetworkError
            if peer.connection is not None:
                self._close_connection(peer.connection, "shutdown")
        flushing = [c.writer.wait_closed() for c in self._connections if c.closed]
        if flushing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*flushing, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._connections):  # e.g. a graceful close a stalled peer never read
            self._abort(conn)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("transport closed", extra={"event": "net.closed"})

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- helpers -------------------------------------------------------------------

    def _peer(self, peer_id: NodeId) -> PeerState:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise ValidationError(
                "not a peer of this node", found=peer_id, expected="a node id of the allowed set"
            )
        return peer

    def _outbound(self, channel: str, payload: bytes, *, droppable: bool) -> OutboundMessage:
        limit = compute_max_payload(self._config.limits.max_frame_size, encode_channel(channel))
        if len(payload) > limit:
            raise ValidationError(
                "message too large for one frame", expected=f"<= {limit}", found=len(payload)
            )
        message = OutboundMessage(channel, payload, droppable)
        if message.cost > self._config.queue.max_bytes:
            raise ValidationError(
                "message larger than the send queue",
                expected=f"<= {self._config.queue.max_bytes}",
                found=message.cost,
            )
        return message

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_dialer(self, peer: PeerState) -> None:
        peer.dialer = self._spawn(self._dial_loop(peer), f"net-dial-{peer.node_id}")

    def _reject(self, conn: LiveConnection, reason: str, detail: object) -> None:
        self._counters.rejects[reason] = self._counters.rejects.get(reason, 0) + 1
        log.warning(
            "refusing connection %s (%s): %s",
            conn.remote,
            reason,
            detail,
            extra=conn.fields("net.rejected", reason=reason),
        )

    # -- connections -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        core = ConnectionCore.accepting(self._identity, self._config.limits, self._allowed)
        conn = self._track(LiveConnection(core, reader, writer, "inbound"))
        if self._closed:
            self._abort(conn)
            return
        if self._pending_handshakes >= self._config.max_pending_handshakes:
            self._reject(conn, RejectReason.TOO_MANY_HANDSHAKES, "handshake limit reached")
            self._abort(conn)
            return
        try:
            await self._run_connection(conn)
        except asyncio.CancelledError:
            # Only close() cancels these tasks. asyncio's server callback would
            # report a cancelled handler as an error, so end quietly instead.
            self._abort(conn)

    async def _dial_loop(self, peer: PeerState) -> None:
        attempt = 0
        while not self._closed:
            if peer.connection is not None:
                await peer.disconnected.wait()
                continue
            address = peer.address
            if address is None:  # unreachable: a dialer starts only with an address
                return
            try:
                authenticated = await self._dial_once(peer, address)
            except Exception:  # a bug must cost one dial, never the dialer
                log.exception(
                    "dialing %s failed", peer.node_id, extra={"event": "net.internal_error"}
                )
                authenticated = False
            if authenticated:
                attempt = 0
            if peer.connection is not None:
                continue
            delay = compute_backoff(self._config.backoff, attempt, self._rng.random())
            attempt += 1
            log.debug(
                "redialing %s in %.3f s",
                peer.node_id,
                delay,
                extra={"event": "net.backoff", "peer": peer.node_id, "delay": delay},
            )
            await self._sleep(delay)

    async def _dial_once(self, peer: PeerState, address: PeerAddress) -> bool:
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    address.host, address.port, limit=STREAM_LIMIT
                )
        except (OSError, TimeoutError) as exc:
            self._counters.dial_failures += 1
            log.debug(
                "cannot reach %s at %s:%s: %s",
                peer.node_id,
                address.host,
                address.port,
                exc,
                extra={"event": "net.dial_failed", "peer": peer.node_id},
            )
            return False
        core = ConnectionCore.dialing(self._identity, self._config.limits, peer.node_id, peer.key)
        return await self._run_connection(
            self._track(LiveConnection(core, reader, writer, "outbound"))
        )

    async def _run_connection(self, conn: LiveConnection) -> bool:
        """Handshake, then serve the connection until it ends. True if it authenticated."""
        try:
            return await self._serve(conn)
        finally:
            await self._finish(conn)

    async def _serve(self, conn: LiveConnection) -> bool:
        try:
            self._pending_handshakes += 1
            try:
                async with asyncio.timeout(self._config.handshake_timeout):
                    pending = await self._handshake(conn)
            finally:
                self._pending_handshakes -= 1
        except asyncio.CancelledError:
            self._abort(conn)
            raise
        except PeerRejected as exc:
            self._reject(conn, exc.reason, exc)
            self._abort(conn)
            return False
        except TimeoutError:
            self._reject(conn, RejectReason.HANDSHAKE_TIMEOUT, "handshake took too long")
            self._abort(conn)
            return False
        except (OSError, NetworkError, ValidationError) as exc:
            log.info(
                "connection %s ended during the handshake: %s",
                conn.remote,
                exc,
                extra=conn.fields("net.handshake_aborted"),
            )
            self._abort(conn)
            return False
        except Exception:  # a bug must cost one connection, never the node
            log.exception("internal error in handshake", extra=conn.fields("net.internal_error"))
            self._abort(conn)
            return False
        peer = self._peers[conn.result.peer]
        if not self._adopt(peer, conn):
            return True
        why = "closed by peer"
        try:
            self._deliver(peer.node_id, conn, pending)
            why = await self._read_loop(peer.node_id, conn)
        except PeerRejected as exc:
            self._reject(conn, exc.reason, exc)
            why = exc.reason
            self._abort(conn)
        except (OSError, NetworkError) as exc:
            why = f"connection error: {exc}"
        except Exception as exc:  # a bug must cost one connection, never the node
            log.exception("internal error on connection", extra=conn.fields("net.internal_error"))
            why = f"internal error: {type(exc).__name__}"
        finally:
            self._release(peer, conn, why)
        return True

    async def _handshake(self, conn: LiveConnection) -> list[ConnectionEvent]:
        """Run the handshake; return the events that followed ``Established``."""
        initial = conn.core.initial_bytes()
        if initial:
            self._write(conn, initial)
        while True:
            data = await conn.reader.read(READ_SIZE)
            if not data:
                raise NetworkError("peer closed the connection")
            self._counters.bytes_in += len(data)
            before = conn.core.frames_received
            events = conn.core.receive_data(data)
            self._counters.frames_in += conn.core.frames_received - before
            for index, event in enumerate(events):
                if isinstance(event, SendBytes):
                    self._write(conn, event.data)
                elif isinstance(event, Established):
                    return events[index + 1 :]

    def _adopt(self, peer: PeerState, conn: LiveConnection) -> bool:
        """Make ``conn`` the peer's connection unless an existing one is preferred."""
        self._counters.handshakes_completed += 1
        result = conn.result
        current = peer.connection
        if current is not None:
            self._counters.duplicate_connections += 1
            if not is_preferred_connection(self.node_id, current.result, result):
                log.info(
                    "keeping the existing connection to %s; closing the duplicate",
                    peer.node_id,
                    extra=conn.fields("net.duplicate", session=result.session_id.hex()),
                )
                self._close_connection(conn, "duplicate connection")
                return False
            log.info(
                "replacing the connection to %s",
                peer.node_id,
                extra=current.fields("net.superseded", session=result.session_id.hex()),
            )
            self._close_connection(current, "superseded by a newer connection")
            self._release(peer, current, "superseded")
        now = self._clock()
        conn.last_rx = conn.last_tx = now
        peer.connection = conn
        peer.disconnected.clear()
        peer.connected.set()
        conn.writer_task = self._spawn(self._write_loop(peer, conn), f"net-write-{peer.node_id}")
        log.info(
            "connected to %s (%s)",
            peer.node_id,
            conn.direction,
            extra=conn.fields("net.connected", session=result.session_id.hex()),
        )
        return True

    def _release(self, peer: PeerState, conn: LiveConnection, why: str) -> None:
        """Forget ``conn`` (already closed or broken)."""
        if not conn.closed:
            self._abort(conn)
        if peer.connection is conn:
            peer.connection = None
            peer.connected.clear()
            peer.disconnected.set()
            log.info(
                "disconnected from %s: %s",
                peer.node_id,
                why,
                extra=conn.fields("net.disconnected", why=why),
            )

    def _close_connection(self, conn: LiveConnection, reason: str) -> None:
        """Tell the peer why (if the session is open), then close gracefully."""
        if conn.closed:
            return
        if conn.core.is_open:
            self._write(conn, conn.core.seal_close(reason))
        conn.closed = True
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        conn.writer.close()

    def _abort(self, conn: LiveConnection) -> None:
        """Drop the connection at once, discarding unsent bytes."""
        conn.closed = True
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        conn.writer.transport.abort()
        self._connections.discard(conn)

    def _track(self, conn: LiveConnection) -> LiveConnection:
        """Remember ``conn`` until it is aborted or its socket is closed."""
        self._connections.add(conn)
        return conn

    async def _finish(self, conn: LiveConnection) -> None:
        """Let a graceful close flush (bounded by the handshake timeout), then drop."""
        if not self._closed and not conn.writer.transport.is_closing():
            conn.writer.close()
        if not self._closed:
            try:
                async with asyncio.timeout(self._config.handshake_timeout):
                    await conn.writer.wait_closed()
            except Exception:  # noqa: S110 (reset, timeout: either way it ends here)
                pass
        self._abort(conn)

    def _write(self, conn: LiveConnection, data: bytes) -> None:
        """Write one frame (handshake, ping or close)."""
        conn.writer.write(data)
        self._counters.bytes_out += len(data)
        self._counters.frames_out += 1

    # -- reading and writing ---------------------------------------------------------------

    async def _read_loop(self, peer_id: NodeId, conn: LiveConnection) -> str:
        reader = conn.reader
        core = conn.core
        counters = self._counters
        while not conn.closed:
            data = await reader.read(READ_SIZE)
            if not data:
                return "closed" if conn.closed else "closed by peer"
            counters.bytes_in += len(data)
            conn.last_rx = self._clock()
            before = core.frames_received
            events = core.receive_data(data)
            counters.frames_in += core.frames_received - before
            if events:
                self._deliver(peer_id, conn, events)
        return "closed"

    def _deliver(
        self, peer_id: NodeId, conn: LiveConnection, events: list[ConnectionEvent]
    ) -> None:
        counters = self._counters
        for event in events:
            if type(event) is Message:
                counters.messages_in += 1
                try:
                    self._on_message(peer_id, event.channel, event.payload)
                except Exception:
                    counters.handler_errors += 1
                    log.exception(
                        "message handler failed",
                        extra=conn.fields("net.handler_error", channel=event.channel),
                    )
            elif type(event) is Close:
                log.info(
                    "%s closed the connection: %s",
                    peer_id,
                    event.reason,
                    extra=conn.fields("net.peer_closed", why=event.reason),
                )
                conn.closed = True
                if conn.writer_task is not None:
                    conn.writer_task.cancel()
                conn.writer.close()
                return

    async def _write_loop(self, peer: PeerState, conn: LiveConnection) -> None:
        queue = peer.queue
        core = conn.core
        writer = conn.writer
        counters = self._counters
        try:
            while not conn.closed:
                if not queue:
                    peer.has_data.clear()
                    await peer.has_data.wait()
                    continue
                batch = queue.pop_batch(WRITE_BATCH_BYTES)
                peer.has_space.set()
                data = b"".join([core.seal_message(m.channel, m.payload) for m in batch])
                writer.write(data)
                counters.bytes_out += len(data)
                counters.frames_out += len(batch)
                counters.messages_out += len(batch)
                conn.last_tx = self._clock()
                await writer.drain()
        except (OSError, NetworkError) as exc:
            log.info(
                "write to %s failed: %s",
                peer.node_id,
                exc,
                extra=conn.fields("net.write_failed"),
            )
            self._abort(conn)

    async def _keepalive_loop(self) -> None:
        interval = self._config.ping_interval
        idle = self._config.idle_timeout
        while True:
            await asyncio.sleep(interval / 2)
            now = self._clock()
            for peer in self._peers.values():
                conn = peer.connection
                if conn is None or conn.closed:
                    continue
                if now - conn.last_rx > idle:
                    self._reject(conn, RejectReason.IDLE_TIMEOUT, f"nothing received for {idle} s")
                    self._abort(conn)
                elif (
                    now - conn.last_tx >= interval
                    and not conn.writer.transport.get_write_buffer_size()
                ):  # with bytes still queued in the socket a ping would add nothing
                    self._write(conn, conn.core.seal_ping())
                    conn.last_tx = now
