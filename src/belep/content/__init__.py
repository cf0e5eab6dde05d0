"""The evidence content store: Kubo-identical CIDs, blockstore, CAR, gateway, replication.

Evidence files never go on chain; the chain records their CID, size and
SHA-256 (DESIGN §5). ``docs/spec/content.md`` is the normative description.

Pure core (no I/O, no clock, no threads): :mod:`~belep.content.multiformats`,
:mod:`~belep.content.cid`, :mod:`~belep.content.dagpb`,
:mod:`~belep.content.importer`, :mod:`~belep.content.exporter`.
I/O edges: :mod:`~belep.content.blockstore`, :mod:`~belep.content.ingest`,
:mod:`~belep.content.car`, :mod:`~belep.content.gateway` (ASGI),
:mod:`~belep.content.fetch` (httpx).

This package module re-exports only the pure core, so importing it pulls in
no I/O library; import the edges from their modules.
"""

from belep.content.cid import DAG_PB, RAW, Cid, compute_cid, parse_cid, verify_block
from belep.content.exporter import BlockSource, file_size, iter_dag, iter_file
from belep.content.importer import (
    CHUNK_SIZE,
    MAX_LINKS,
    BlockSink,
    FileImporter,
    ImportResult,
    import_file,
)

__all__ = [
    "CHUNK_SIZE",
    "DAG_PB",
    "MAX_LINKS",
    "RAW",
    "BlockSink",
    "BlockSource",
    "Cid",
    "FileImporter",
    "ImportResult",
    "compute_cid",
    "file_size",
    "import_file",
    "iter_dag",
    "iter_file",
    "parse_cid",
    "verify_block",
]
