"""A lean HTTP/1.1 client for the load generator: keep-alive connections on asyncio streams.

Owns :class:`LeanHttpClient`. The benchmark keeps hundreds of long-polling
batch requests in flight (each answered when its transactions commit); a
general-purpose client's connection-pool bookkeeping grows with the number of
connections, and at a few hundred the client process became the busiest
process of the benchmark. This client does only what the benchmark needs:
``POST`` a body to a fixed origin and read a ``Content-Length`` (or chunked)
answer, on a per-origin stack of idle keep-alive connections (a new
connection when none is idle).

Invariants: a connection is reused only after its previous response was read
completely, the server did not ask to close it, and it has been idle less
than :data:`MAX_IDLE_S`; a reused connection the server had already closed
is replaced once (resending is safe: nodes deduplicate submissions by
transaction hash); any other error closes the connection and raises
:class:`~belep.errors.NetworkError`.

I/O: TCP connections to the given origins (loopback in the benchmark).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from belep.errors import NetworkError

__all__ = ["LeanHttpClient"]


def loop_time() -> float:
    return asyncio.get_running_loop().time()


MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

#: Idle connections older than this are closed instead of reused (servers drop idle
#: keep-alive connections after a few seconds; uvicorn's default is 5 s).
MAX_IDLE_S = 2.0

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LeanHttpClient:
    """POST to ``http://host:port`` origins over reused connections (see the module docstring)."""

    def __init__(self, timeout_s: float) -> None:
        self._idle: dict[tuple[str, int], list[tuple[float, _Conn]]] = {}
        self._timeout = timeout_s
        self._open: set[asyncio.StreamWriter] = set()

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """``POST url`` with ``body``; the status code and the response body."""
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        origin = (host, port)
        idle = self._idle.setdefault(origin, [])
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/cbor\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii")
        now = loop_time()
        while idle and now - idle[-1][0] > MAX_IDLE_S:
            self._close(idle.pop()[1][1])
        reused = bool(idle)
        reader, writer = idle.pop()[1] if idle else await self._connect(host, port)
        try:
            writer.write(head + body)
            status, payload, keep = await asyncio.wait_for(self._response(reader), self._timeout)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            self._close(writer)
            if reused and isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
                # The server closed the idle connection first: resend on a new one
                # (submissions are idempotent: a node deduplicates by transaction hash).
                return await self.post(url, body)
            raise NetworkError(f"HTTP POST {url} failed: {type(exc).__name__}") from exc
        if keep:
            idle.append((loop_time(), (reader, writer)))
        else:
            self._close(writer)
        return status, payload

    async def _connect(self, host: str, port: int) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEADER_BYTES)
        except OSError as exc:
            raise NetworkError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(writer)
        return reader, writer

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        fields = lines[0].split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/1."):
            raise ValueError("not an HTTP/1.x status line")
        status = int(fields[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return status, b"".join(chunks), keep
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY_BYTES:
            raise ValueError("bad content length")
        return status, await reader.readexactly(length), keep

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        with contextlib.suppress(Exception):
            writer.close()

    async def aclose(self) -> None:
        """Close every connection (idle or not)."""
        for writer in list(self._open):
            self._close(writer)
        self._idle.clear()
