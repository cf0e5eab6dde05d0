"""Serving the node's API: a uvicorn server on the node's HTTP port.

Owns :func:`start_http` (what ``belep node`` gives the node to start its
HTTP edge with, :data:`belep.node.runtime.ServeHttp`) and
:class:`HttpServer`. The node owns SIGTERM/SIGINT, so uvicorn installs no
signal handlers; stopping the server closes the service's worker threads.

I/O: a listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import uvicorn

from belep.api.app import build_app
from belep.errors import NetworkError
from belep.node.runtime import Node
from belep.node.service import NodeService

__all__ = ["HttpServer", "start_http"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the node owns SIGTERM/SIGINT)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


@dataclass(slots=True)
class HttpServer:
    """A running uvicorn server, its task, and the service it serves."""

    server: _Server
    task: asyncio.Task[None]
    service: NodeService

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.to_thread(self.service.close)


async def start_http(node: Node) -> HttpServer:
    """Serve ``node`` on its HTTP port (returns once it is listening)."""
    service = NodeService(node)
    config = uvicorn.Config(
        build_app(service),
        host=node.config.host,
        port=node.config.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(), name="node-http")
    while not server.started:
        if task.done():
            service.close()
            task.result()
            raise NetworkError(f"cannot serve HTTP on {node.config.host}:{node.config.http_port}")
        await asyncio.sleep(0.01)
    return HttpServer(server, task, service)
