"""Ledger benchmark: append and verify throughput next to raw SQLite inserts.

``run_ledger_bench`` builds ``blocks`` blocks of ``txs`` evidence-like
transactions (about ``payload_size`` bytes each) certified by ``signers``
real Ed25519 signatures, and measures, in the same run and on the same disk:

* **append**: :meth:`BlockStore.append` (chain rules, Merkle root, canonical
  encoding, one fsynced WAL transaction per block; certificate signatures
  are not re-checked, as in the node, where consensus has checked them);
* **raw**: plain ``INSERT``s of the same bytes into the same schema, one
  transaction per block, same ``journal_mode=WAL`` and ``synchronous=FULL``
  — the floor SQLite itself sets;
* **verify**: :func:`verify_chain` over the stored chain (every hash, every
  Merkle root, every certificate signature checked once);
* **verify + execute**: the same walk executing every block again with the
  BELEP application and checking every state root (what ``belep chain
  verify`` does by default). The benchmark's payloads are CBOR records, not
  signed envelopes, so the application rejects each one after a parse: this
  is the walk's own cost of execution, not of the evidence application's
  rules.

Block building and signing are timed separately (that is consensus's cost,
not the ledger's). Append and raw inserts alternate block by block, so both
see the same machine noise.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from belep.app.machine import BelepApplication
from belep.crypto import sha256
from belep.encoding import encode
from belep.ledger.block import NodeId
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.genesis import Genesis
from belep.ledger.store import SCHEMA, BlockStore
from belep.ledger.verify import verify_chain


@dataclass(frozen=True, slots=True)
class LedgerBenchResult:
    """Figures of one run; rates are transactions per second unless named otherwise."""

    blocks: int
    txs_per_block: int
    payload_bytes: int
    signers: int
    build_s: float
    append_s: float
    raw_s: float
    verify_s: float
    verify_execute_s: float
    append_tx_per_s: float
    raw_tx_per_s: float
    verify_tx_per_s: float
    verify_execute_tx_per_s: float
    append_blocks_per_s: float
    append_vs_raw: float
    verify_vs_raw: float
    db_bytes: int
    verified: bool
    machine: dict[str, str]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def machine_info() -> dict[str, str]:
    """CPU count and model, Python and SQLite versions, and the date (UTC)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count() or 0),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


class _PayloadFactory:
    """Distinct ~``size``-byte payloads shaped like an evidence attachment (canonical CBOR)."""

    def __init__(self, size: int) -> None:
        template = encode(
            {
                "type": "AttachEvidence",
                "task": "20210310001",
                "cid": "Qm" + "x" * 44,
                "sha256": bytes(32),
                "size": 48_000_000,
                "media": "video/mp4",
                "device": "camera-1",
                "captured_ms": 1_615_334_400_000,
                "sig": bytes(64),
                "unique_padding": b"",  # the longest key: canonically the last entry
            }
        )
        self.prefix = template[: len(template) - 1]  # drop its empty value (0x40)
        self.pad = max(0, size - len(template) - 17)
        self.counter = 0

    def next(self) -> bytes:
        self.counter += 1
        unique = sha256(self.counter.to_bytes(8, "big"))
        body = (unique * (self.pad // 32 + 2))[: 16 + self.pad]
        return self.prefix + encode(body)


def _raw_database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def run_ledger_bench(
    directory: Path,
    *,
    blocks: int = 10_000,
    txs: int = 100,
    payload_size: int = 300,
    signers: int = 3,
    on_progress: Callable[[str, int], None] | None = None,
) -> LedgerBenchResult:
    """Run the benchmark in ``directory`` (which must exist); see the module docstring."""
    keys = committee_keys("bench", max(4, signers))
    genesis: Genesis = make_genesis("bench-domain", keys)
    builder = ChainBuilder(genesis, keys, application=BelepApplication(), signers=[NodeId(f"bench-{i}") for i in range(1, signers + 1)])  # fmt: skip
    payloads = _PayloadFactory(payload_size)
    chain_path = directory / "chain.sqlite3"
    raw = _raw_database(directory / "raw.sqlite3")
    build_s = append_s = raw_s = 0.0
    payload_bytes = 0
    with BlockStore.open(chain_path, genesis) as store:
        for h in range(1, blocks + 1):
            started = time.perf_counter()
            batch = [payloads.next() for _ in range(txs)]
            block, qc = builder.next_block(batch, timestamp_ms=1_615_334_400_000 + h)
            header_bytes = block.header.encode()
            qc_bytes = encode(qc.to_wire())
            rows = [(h, i, tx.tx_hash, tx.payload) for i, tx in enumerate(block.transactions)]
            payload_bytes += sum(len(p) for p in batch)
            mid = time.perf_counter()
            store.append(block, qc)
            done = time.perf_counter()
            raw.execute("BEGIN")
            raw.execute(
                "INSERT INTO blocks (height, block_hash, header, qc, tx_count) VALUES (?, ?, ?, ?, ?)",
                (h, block.block_hash, header_bytes, qc_bytes, len(rows)),
            )
            raw.executemany("INSERT INTO txs (height, idx, tx_hash, payload) VALUES (?, ?, ?, ?)", rows)  # fmt: skip
            raw.execute("COMMIT")
            end = time.perf_counter()
            build_s += mid - started
            append_s += done - mid
            raw_s += end - done
            if on_progress is not None:
                on_progress("append", h)
        store.checkpoint()
    raw.close()
    db_bytes = chain_path.stat().st_size
    with BlockStore.open(chain_path, genesis, readonly=True) as reader:
        started = time.perf_counter()
        report = verify_chain(
            reader,
            genesis,
            on_block=(lambda h: on_progress("verify", h)) if on_progress else None,
        )
        verify_s = time.perf_counter() - started
        started = time.perf_counter()
        executed = verify_chain(reader, genesis, application=BelepApplication())
        verify_execute_s = time.perf_counter() - started
    total = blocks * txs
    raw_rate = total / raw_s if raw_s else 0.0
    return LedgerBenchResult(
        blocks=blocks,
        txs_per_block=txs,
        payload_bytes=round(payload_bytes / total) if total else 0,
        signers=signers,
        build_s=round(build_s, 3),
        append_s=round(append_s, 3),
        raw_s=round(raw_s, 3),
        verify_s=round(verify_s, 3),
        verify_execute_s=round(verify_execute_s, 3),
        append_tx_per_s=round(total / append_s),
        raw_tx_per_s=round(raw_rate),
        verify_tx_per_s=round(total / verify_s),
        verify_execute_tx_per_s=round(total / verify_execute_s),
        append_blocks_per_s=round(blocks / append_s, 1),
        append_vs_raw=round((total / append_s) / raw_rate, 3) if raw_rate else 0.0,
        verify_vs_raw=round((total / verify_s) / raw_rate, 3) if raw_rate else 0.0,
        db_bytes=db_bytes,
        verified=report.ok and report.blocks == blocks and executed.ok,
        machine=machine_info(),
    )
