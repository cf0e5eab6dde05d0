"""IPFS trustless-gateway routes over the blockstore (an ASGI router).

Owns: ``GET``/``HEAD /ipfs/{cid}`` as the IPFS Trustless Gateway
specification (specs.ipfs.tech/http-gateways/trustless-gateway) defines it,
plus a plain file download with ``Range`` for browsers and ``curl``. The node
mounts :func:`gateway_router`; :func:`create_gateway_app` wraps it alone.

Response type, chosen by ``?format=`` (which wins) or else ``Accept``:

* ``raw`` / ``application/vnd.ipld.raw``: the one block, verified.
* ``car`` / ``application/vnd.ipld.car``: a CARv1 of the DAG, depth-first,
  ``dups=n`` unless the client asks ``dups=y``; ``dag-scope=all|entity|block``
  and ``entity-bytes=from:to`` (inclusive, ``*`` and negative offsets) limit
  the blocks to those a client needs. Only ``version=1`` and ``order=dfs|unk``
  are offered (406 otherwise).
* anything else: the file's bytes (``application/octet-stream``), with a
  single ``Range: bytes=…`` answered by 206 / 416.

Status codes: 400 for a bad CID, format or range; 404 when the root block is
not in the store (412 with ``Cache-Control: only-if-cached``); 500 when a
stored block is corrupt (the message names its CID). Errors met after the
first byte was sent end the stream early; clients verify every block anyway.
Every response is immutable-cacheable, carries an ``Etag`` that depends on
CID, format and scope, and answers ``If-None-Match`` with 304.

Blocking store reads run in the thread pool, never on the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, Router

from belep.content.blockstore import Blockstore
from belep.content.car import iter_car
from belep.content.cid import Cid, parse_cid
from belep.content.exporter import FileNode, decode_file_node, iter_dag, iter_file, walk_file
from belep.errors import CidError, CorruptStore, NotFound, StorageError, ValidationError

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
PROBE_CID = "bafkqaaa"
_PROBE_BINARY = bytes((0x01, 0x55, 0x00, 0x00))
_IMMUTABLE = "public, max-age=29030400, immutable"


@dataclass(frozen=True, slots=True)
class CarRequest:
    """What a CAR request asked for, after negotiation."""

    duplicates: bool
    scope: str
    entity_bytes: tuple[int, int | None] | None
    """``(from, to)`` as sent (``to`` inclusive, None for ``*``), or None."""


class GatewayError(Exception):
    """An HTTP error answer (status and text); internal to the gateway."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def gateway_router(store: Blockstore) -> Router:
    """The ``/ipfs/{cid}`` routes serving ``store``."""

    async def endpoint(request: Request) -> Response:
        try:
            return await _respond(store, request)
        except GatewayError as exc:
            return PlainTextResponse(exc.text + "\n", status_code=exc.status)

    return Router(
        routes=[
            Route("/ipfs/{cid}", endpoint, methods=["GET", "HEAD"]),
            Route("/ipfs/{cid}/{path:path}", endpoint, methods=["GET", "HEAD"]),
        ]
    )


def create_gateway_app(store: Blockstore) -> Starlette:
    """A standalone ASGI app with only the gateway routes."""
    return Starlette(routes=gateway_router(store).routes)


# --------------------------------------------------------------------------
# Negotiation
# --------------------------------------------------------------------------


def _parse_accept(header: str) -> list[tuple[str, dict[str, str], float]]:
    entries: list[tuple[str, dict[str, str], float]] = []
    for item in header.split(","):
        fields = [field.strip() for field in item.split(";")]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        quality = 1.0
        for field in fields[1:]:
            name, _, value = field.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif name:
                params[name] = value
        if quality > 0:
            entries.append((fields[0].lower(), params, quality))
    entries.sort(key=lambda entry: -entry[2])
    return entries


def _car_params_ok(params: dict[str, str]) -> bool:
    return (
        params.get("version", "1") == "1"
        and params.get("order", "dfs") in ("dfs", "unk", "")
        and params.get("dups", "n") in ("y", "n")
    )


def negotiate(request: Request) -> tuple[str, dict[str, str]]:
    """``("raw"|"car"|"file", car parameters)`` for a request."""
    fmt = request.query_params.get("format")
    car_params: dict[str, str] = {}
    for name in ("version", "order", "dups"):
        value = request.query_params.get(f"car-{name}")
        if value is not None:
            car_params[name] = value
    if fmt is not None:
        if fmt not in ("raw", "car"):
            raise GatewayError(400, f"unsupported format {fmt!r} (this gateway serves raw, car)")
        if fmt == "car" and not _car_params_ok(car_params):
            raise GatewayError(406, "only CAR version=1, order=dfs|unk, dups=y|n are offered")
        return fmt, car_params
    wanted_ipld = False
    for media, params, _ in _parse_accept(request.headers.get("accept", "")):
        if media == RAW_TYPE:
            return "raw", {}
        if media == CAR_TYPE:
            wanted_ipld = True
            merged = {**params, **car_params}
            if _car_params_ok(merged):
                return "car", merged
        elif media.startswith("application/vnd.ipld.") or media.startswith("application/vnd.ipfs."):
            wanted_ipld = True
    if wanted_ipld:
        raise GatewayError(406, "none of the requested IPLD response types is offered")
    return "file", {}


def _car_request(request: Request, params: dict[str, str]) -> CarRequest:
    scope = request.query_params.get("dag-scope", "all")
    if scope not in ("all", "entity", "block"):
        raise GatewayError(400, f"invalid dag-scope {scope!r}")
    raw_range = request.query_params.get("entity-bytes")
    entity: tuple[int, int | None] | None = None
    if raw_range is not None:
        start_text, sep, end_text = raw_range.partition(":")
        try:
            if not sep:
                raise ValueError(raw_range)
            entity = (int(start_text), None if end_text == "*" else int(end_text))
        except ValueError:
            raise GatewayError(400, f"invalid entity-bytes {raw_range!r}") from None
        scope = "entity"
    return CarRequest(params.get("dups", "n") == "y", scope, entity)


def resolve_entity_bytes(entity: tuple[int, int | None], size: int) -> tuple[int, int]:
    """``[start, end)`` for an ``entity-bytes`` pair on a file of ``size`` bytes."""
    start, last = entity
    if start < 0:
        start = max(0, size + start)
    end = size if last is None else (size + last + 1 if last < 0 else last + 1)
    end = min(end, size)
    if start >= size or end <= start:
        raise GatewayError(400, f"entity-bytes outside the file's {size} bytes")
    return start, end


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` for a single-range ``Range`` header; None to ignore it.

    Raises a 416 :class:`GatewayError` when the range cannot be satisfied.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise GatewayError(416, "empty suffix range")
            return max(0, size - suffix), size
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    except ValueError:
        return None
    if start < 0 or start >= size or end <= start:
        raise GatewayError(416, f"range outside the file's {size} bytes")
    return start, end


# --------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------


async def _respond(store: Blockstore, request: Request) -> Response:
    text = request.path_params["cid"]
    path = request.path_params.get("path")
    fmt, params = negotiate(request)
    if text == PROBE_CID and not path:
        return _probe(fmt)
    try:
        cid = parse_cid(text)
    except CidError as exc:
        raise GatewayError(400, f"invalid CID: {exc}") from None
    if path:
        if fmt == "raw":
            raise GatewayError(400, "raw block requests take no path")
        raise GatewayError(404, f"no link named {path.split('/')[0]!r} under {cid}")
    head = request.method == "HEAD"
    try:
        block = await run_in_threadpool(store.get, cid)
    except NotFound:
        if "only-if-cached" in request.headers.get("cache-control", ""):
            raise GatewayError(412, f"{cid} is not in this gateway's store") from None
        raise GatewayError(404, f"{cid} is not in this gateway's store") from None
    except (CorruptStore, StorageError) as exc:
        raise GatewayError(500, str(exc)) from None
    common = {
        "Cache-Control": _IMMUTABLE,
        "X-Content-Type-Options": "nosniff",
        "X-Ipfs-Path": f"/ipfs/{cid}",
        "Vary": "Accept",
    }
    if fmt == "raw":
        etag = f'"{cid}.raw"'
        if _not_modified(request, etag):
            return Response(status_code=304, headers={"Etag": etag})
        headers = {
            **common,
            "Etag": etag,
            "Content-Disposition": f'attachment; filename="{cid}.bin"',
        }
        if "format" not in request.query_params:
            headers["Content-Location"] = f"/ipfs/{cid}?format=raw"
        if head:
            headers["Content-Length"] = str(len(block))
            return Response(media_type=RAW_TYPE, headers=headers)
        return Response(block, media_type=RAW_TYPE, headers=headers)
    if fmt == "car":
        return _car_response(store, request, params, cid, block, common, head=head)
    try:
        node = decode_file_node(cid, block)
    except ValidationError as exc:
        raise GatewayError(501, f"{cid} is not a UnixFS file: {exc}") from None
    return _file_response(store, request, cid, node, common, head=head)


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if wanted is None:
        return False
    return wanted.strip() == "*" or etag in (tag.strip() for tag in wanted.split(","))


def _probe(fmt: str) -> Response:
    if fmt == "raw":
        return Response(b"", media_type=RAW_TYPE)
    if fmt == "car":
        header = b"".join(iter_car([_PROBE_BINARY], []))
        return Response(header, media_type=f"{CAR_TYPE}; version=1; order=dfs; dups=n")
    raise GatewayError(400, "the probe CID answers only raw and car requests")


def _car_response(
    store: Blockstore,
    request: Request,
    params: dict[str, str],
    cid: Cid,
    block: bytes,
    common: dict[str, str],
    *,
    head: bool,
) -> Response:
    car = _car_request(request, params)
    tag = hashlib.sha256(repr((car.scope, car.duplicates, car.entity_bytes)).encode()).hexdigest()
    etag = f'"{cid}.car.{tag[:16]}"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"Etag": etag})
    dups = "y" if car.duplicates else "n"
    headers = {
        **common,
        "Etag": etag,
        "Content-Disposition": f'attachment; filename="{cid}.car"',
    }
    if "format" not in request.query_params:
        headers["Content-Location"] = f"/ipfs/{cid}?format=car"
    media_type = f"{CAR_TYPE}; version=1; order=dfs; dups={dups}"
    node: FileNode | None = None
    if car.entity_bytes is not None:
        try:
            node = decode_file_node(cid, block)
        except ValidationError:
            node = None  # not a byte array: entity-bytes is ignored (spec)
    if car.entity_bytes is not None and node is not None:
        start, end = resolve_entity_bytes(car.entity_bytes, node.filesize)
        blocks: Iterator[tuple[Cid, bytes]] = (
            (visited.cid, visited.block)
            for visited in walk_file(
                cid, store, start=start, end=end, skip_repeats=not car.duplicates
            )
        )
    elif car.scope == "block":
        blocks = iter([(cid, block)])
    else:
        blocks = iter_dag(cid, store, duplicates=car.duplicates)
    if head:
        # The CAR's length is not known without walking the DAG: say nothing.
        response = Response(media_type=media_type, headers=headers)
        del response.headers["content-length"]
        return response
    return StreamingResponse(iter_car([cid], blocks), media_type=media_type, headers=headers)


def _file_response(
    store: Blockstore,
    request: Request,
    cid: Cid,
    node: FileNode,
    common: dict[str, str],
    *,
    head: bool,
) -> Response:
    size = node.filesize
    etag = f'"{cid}"'
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"Etag": etag})
    filename = request.query_params.get("filename", str(cid))
    safe_name = "".join(ch for ch in filename if ch.isprintable() and ch not in '"\\/') or str(cid)
    headers = {
        **common,
        "Etag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{safe_name}"',
    }
    status = 200
    start, end = 0, size
    range_header = request.headers.get("range")
    if range_header is not None and size > 0:
        try:
            wanted = parse_range(range_header, size)
        except GatewayError as exc:
            return PlainTextResponse(
                exc.text + "\n", status_code=416, headers={"Content-Range": f"bytes */{size}"}
            )
        if wanted is not None:
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if head:
        return Response(status_code=status, media_type="application/octet-stream", headers=headers)
    body = iter_file(cid, store, offset=start, length=end - start)
    return StreamingResponse(
        (bytes(piece) for piece in body),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )
