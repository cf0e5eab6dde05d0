"""`belep cid`, `belep add`, `belep get`, `belep car export|import`: the content store CLI.

``belep cid`` needs no store: it prints ``CID  FILE`` per file, like
``sha256sum``, with the CID ``ipfs add`` in Kubo would give. The other
commands work on a store directory (``--store``, or ``$BELEP_STORE``, by
default ``~/.belep/content``).

Exit codes: 0 success; 1 when a file, block or CAR is bad or missing (the
message names the file or the block's CID); 2 for usage errors.
A progress bar is drawn on stderr for files over 8 MiB, only when stderr is a
terminal.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO, cast

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from belep.content.blockstore import Blockstore
from belep.content.car import export_car, import_car
from belep.content.cid import Cid, parse_cid
from belep.content.exporter import file_size, iter_file
from belep.content.importer import FileImporter, ImportResult, Readable
from belep.content.ingest import add_file
from belep.errors import BelepError

PROGRESS_THRESHOLD = 8 << 20

car_app = typer.Typer(help="CAR v1 archives of a file's DAG (ipfs dag export/import).")

StoreOpt = Annotated[
    Path,
    typer.Option(
        "--store",
        envvar="BELEP_STORE",
        help="Content store directory.",
        file_okay=False,
    ),
]
VersionOpt = Annotated[
    int,
    typer.Option(
        "--cid-version",
        min=0,
        max=1,
        help="0: Kubo default (Qm…); 1: as `ipfs add --cid-version=1` (raw leaves, bafy…/bafk…).",
    ),
]
_DEFAULT_STORE = Path.home() / ".belep" / "content"
_stderr = Console(stderr=True)


class _Counting:
    """A readable that reports progress as the importer pulls bytes."""

    def __init__(self, handle: Readable, progress: Progress, task: TaskID) -> None:
        self._handle = handle
        self._progress = progress
        self._task = task

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        count = self._handle.readinto(buffer)
        if count:
            self._progress.update(self._task, advance=count)
        return int(count or 0)


def _show_progress(size: int) -> bool:
    return size > PROGRESS_THRESHOLD and sys.stderr.isatty()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_stderr,
        transient=True,
    )


def _import_path(path: Path, importer: FileImporter) -> ImportResult:
    with path.open("rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        if _show_progress(size):
            with _progress() as progress:
                task = progress.add_task(path.name, total=size)
                importer.write_from(_Counting(handle, progress, task))
        else:
            importer.write_from(handle)
    return importer.finish()


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _parse(text: str) -> Cid:
    try:
        return parse_cid(text)
    except BelepError as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None


def cid_command(
    files: Annotated[list[Path], typer.Argument(help="Files to hash ('-' for stdin).")],
    cid_version: VersionOpt = 0,
) -> None:
    """Print the IPFS CID of each FILE as `ipfs add` would, without storing anything."""
    status = 0
    for path in files:
        importer = FileImporter(None, cid_version=cid_version)
        try:
            if str(path) == "-":
                importer.write_from(cast(Readable, sys.stdin.buffer))
                result = importer.finish()
            else:
                result = _import_path(path, importer)
        except OSError as exc:
            _fail(f"{path}: {exc.strerror or exc}")
            status = 1
            continue
        typer.echo(f"{result.cid}  {path}")
    raise typer.Exit(status)


def add_command(
    files: Annotated[list[Path], typer.Argument(help="Files to import.", exists=True)],
    store: StoreOpt = _DEFAULT_STORE,
    cid_version: VersionOpt = 0,
    pin: Annotated[bool, typer.Option(help="Pin each file's root.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
) -> None:
    """Import FILEs into the store (blocks + pin); print CID, size and SHA-256."""
    try:
        blocks = Blockstore(store)
        for path in files:
            with path.open("rb", buffering=0) as handle:
                size = os.fstat(handle.fileno()).st_size
                if _show_progress(size):
                    with _progress() as progress:
                        task = progress.add_task(path.name, total=size)
                        source: Readable = _Counting(handle, progress, task)
                        result = add_file(source, blocks, cid_version=cid_version, pin=pin)
                else:
                    result = add_file(handle, blocks, cid_version=cid_version, pin=pin)
            digest = (result.sha256 or b"").hex()
            if as_json:
                record = {"cid": str(result.cid), "size": result.size, "sha256": digest}
                typer.echo(json.dumps({**record, "file": str(path)}, sort_keys=True))
            else:
                typer.echo(f"added {result.cid} {result.size} sha256:{digest} {path}")
    except (BelepError, OSError) as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None


def get_command(
    cid: Annotated[str, typer.Argument(help="CID of the file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write ('-': stdout).")],
    store: StoreOpt = _DEFAULT_STORE,
) -> None:
    """Write the file CID to OUTPUT, verifying every block (nothing is left on failure)."""
    root = _parse(cid)
    try:
        blocks = Blockstore(store)
        size = file_size(root, blocks)
        if str(output) == "-":
            _stream(root, blocks, sys.stdout.buffer, size)
            sys.stdout.buffer.flush()
            return
        with _atomic_output(output) as handle:
            _stream(root, blocks, handle, size)
    except (BelepError, OSError) as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None


def _stream(root: Cid, blocks: Blockstore, out: BinaryIO, size: int) -> None:
    if _show_progress(size):
        with _progress() as progress:
            task = progress.add_task(str(root)[:16], total=size)
            for piece in iter_file(root, blocks):
                out.write(piece)
                progress.update(task, advance=len(piece))
    else:
        for piece in iter_file(root, blocks):
            out.write(piece)


@contextmanager
def _atomic_output(output: Path) -> Iterator[BinaryIO]:
    partial = output.with_name(output.name + ".part")
    try:
        with partial.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@car_app.command("export")
def car_export(
    cid: Annotated[str, typer.Argument(help="Root CID to export.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CAR file to write.")],
    store: StoreOpt = _DEFAULT_STORE,
) -> None:
    """Write the DAG under CID as a CARv1 file (each block once, depth-first)."""
    root = _parse(cid)
    try:
        blocks = Blockstore(store)
        with _atomic_output(output) as handle:
            written = export_car(root, blocks, handle)
    except (BelepError, OSError) as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"exported {root} {written} bytes to {output}")


@car_app.command("import")
def car_import(
    car_file: Annotated[Path, typer.Argument(help="CARv1 file to import.", exists=True)],
    store: StoreOpt = _DEFAULT_STORE,
) -> None:
    """Verify and store every block of a CARv1 file, then pin its roots."""
    try:
        blocks = Blockstore(store)
        with car_file.open("rb") as handle:
            result = import_car(handle, blocks)
    except (BelepError, OSError) as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None
    for root in result.roots:
        typer.echo(f"pinned {root} ({result.blocks} blocks, {result.new_blocks} new)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root application."""
    app.command("cid")(cid_command)
    app.command("add")(add_command)
    app.command("get")(get_command)
    app.add_typer(car_app, name="car")
