"""What the route modules take from a request besides its body: the node's service and
the ``?wait`` of a request.

The routes take the service from the application's state and their path and
query parameters as plain strings (FastAPI documents them in the OpenAPI
document and never refuses them itself: a bad value gets the node's own
answer); a dependency per parameter would cost the hot submission path about
a fifth of its time (measured). No I/O.
"""

from __future__ import annotations

from starlette.requests import Request

from belep.node.service import NodeService

__all__ = ["MAX_WAIT_MS", "service_of", "wait_ms"]

#: The longest a request may wait for a commit (``?wait=`` is capped to it).
MAX_WAIT_MS = 30_000


def service_of(request: Request) -> NodeService:
    """The service the application serves (:func:`belep.api.app.build_routes`)."""
    service: NodeService = request.app.state.service
    return service


def wait_ms(wait: str) -> int:
    """``?wait=ms``: how long to wait for a commit, at most :data:`MAX_WAIT_MS`
    (anything but a decimal number means 0)."""
    if not (wait.isascii() and wait.isdigit()):
        return 0
    return min(int(wait), MAX_WAIT_MS)
