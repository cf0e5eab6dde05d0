"""Tamper evidence: any single changed byte in a stored block, transaction or certificate is caught.

Three attacks on a chain stored in a real SQLite file, each at many seeded
random positions:

1. through SQL: a separate connection rewrites one stored header,
   transaction payload or certificate blob with one byte changed;
2. in the file: one byte of a blob's bytes is changed at its raw offset in
   the database file, behind SQLite's back;
3. anywhere in a page that holds such a blob (cell pointers, record headers,
   keys, free space). A change there may alter nothing that is stored (free
   space), so the oracle is a logical dump of every table: if the dump
   differs or SQLite cannot read it, verification must fail (or the store
   must refuse to open with a clear error); never pass silently.

A failing case prints the seed, the round and the position that replays it.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from belep.errors import BelepError
from belep.ledger.genesis import Genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import VerifyReport, verify_chain

from .conftest import ChainFactory

SEED = 20210310
BLOCKS = 12
TXS = 6
SQL_FLIPS = 600
FILE_FLIPS = 300
PAGE_FLIPS = 300

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Blob:
    kind: str  # "header", "qc" or "payload"
    height: int
    index: int  # transaction index, -1 for block columns
    data: bytes

    def where(self) -> tuple[str, tuple[int, ...]]:
        if self.kind == "payload":
            return "UPDATE txs SET payload = ? WHERE height = ? AND idx = ?", (
                self.height,
                self.index,
            )
        if self.kind == "header":
            return "UPDATE blocks SET header = ? WHERE height = ?", (self.height,)
        return "UPDATE blocks SET qc = ? WHERE height = ?", (self.height,)


def stored_blobs(path: Path) -> list[Blob]:
    conn = sqlite3.connect(path)
    blobs = [Blob("header", h, -1, d) for h, d in conn.execute("SELECT height, header FROM blocks")]
    blobs += [Blob("qc", h, -1, d) for h, d in conn.execute("SELECT height, qc FROM blocks")]
    blobs += [Blob("payload", h, i, d) for h, i, d in conn.execute("SELECT height, idx, payload FROM txs")]  # fmt: skip
    conn.close()
    return blobs


def pick(rng: random.Random, blobs: list[Blob]) -> Blob:
    kind = rng.choice(["header", "qc", "payload"])
    return rng.choice([b for b in blobs if b.kind == kind])


def verify_file(path: Path, genesis: Genesis) -> VerifyReport | BelepError:
    """Verify as `belep chain verify` does; a store that refuses to open returns its error."""
    try:
        with BlockStore.open(path, genesis, readonly=True) as reader:
            return verify_chain(reader, genesis)
    except BelepError as exc:
        return exc


def detected(outcome: VerifyReport | BelepError) -> bool:
    if isinstance(outcome, BelepError):
        return bool(str(outcome))  # refused to open, with a message
    return not outcome.ok


@pytest.fixture
def chain_file(build_chain: ChainFactory, tmp_path: Path, genesis: Genesis) -> Path:
    store, _ = build_chain(blocks=BLOCKS, txs=TXS)
    store.checkpoint()
    store.close()
    path = tmp_path / "chain.sqlite3"
    outcome = verify_file(path, genesis)
    assert isinstance(outcome, VerifyReport)
    assert outcome.ok
    return path


def test_byte_flips_through_sql(chain_file: Path, genesis: Genesis) -> None:
    rng = random.Random(SEED)
    blobs = stored_blobs(chain_file)
    conn = sqlite3.connect(chain_file)
    with BlockStore.open(chain_file, genesis, readonly=True) as reader:
        for round_ in range(SQL_FLIPS):
            blob = pick(rng, blobs)
            offset = rng.randrange(len(blob.data))
            mask = rng.randrange(1, 256)
            changed = bytearray(blob.data)
            changed[offset] ^= mask
            sql, key = blob.where()
            conn.execute(sql, (bytes(changed), *key))
            conn.commit()
            report = verify_chain(reader, genesis)
            replay = f"seed {SEED} round {round_}: {blob.kind} at height {blob.height} index {blob.index} byte {offset} ^ {mask:#x}"  # fmt: skip
            assert report.finding is not None, f"undetected: {replay}"
            assert report.finding.height == blob.height, f"{replay}: {report.finding}"
            conn.execute(sql, (blob.data, *key))
            conn.commit()
        assert verify_chain(reader, genesis).ok
    conn.close()


def flip_in_file(path: Path, position: int, mask: int) -> int:
    with open(path, "r+b") as f:
        f.seek(position)
        original = f.read(1)[0]
        f.seek(position)
        f.write(bytes([original ^ mask]))
    return original


def restore_in_file(path: Path, position: int, original: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(bytes([original]))


def blob_offsets(path: Path, blobs: list[Blob]) -> dict[Blob, int]:
    data = path.read_bytes()
    offsets = {}
    for blob in blobs:
        at = data.find(blob.data)
        assert at >= 0, f"{blob.kind} {blob.height} not in the file"
        assert data.find(blob.data, at + 1) < 0, f"{blob.kind} {blob.height} not unique"
        offsets[blob] = at
    return offsets


def test_byte_flips_in_the_database_file(chain_file: Path, genesis: Genesis) -> None:
    rng = random.Random(SEED + 1)
    blobs = stored_blobs(chain_file)
    offsets = blob_offsets(chain_file, blobs)
    for round_ in range(FILE_FLIPS):
        blob = pick(rng, blobs)
        position = offsets[blob] + rng.randrange(len(blob.data))
        mask = rng.randrange(1, 256)
        original = flip_in_file(chain_file, position, mask)
        outcome = verify_file(chain_file, genesis)
        replay = f"seed {SEED + 1} round {round_}: {blob.kind} at height {blob.height} file offset {position} ^ {mask:#x}"  # fmt: skip
        assert detected(outcome), f"undetected: {replay}"
        if isinstance(outcome, VerifyReport):
            assert outcome.finding is not None
            assert outcome.finding.height == blob.height, f"{replay}: {outcome.finding}"
        restore_in_file(chain_file, position, original)
    outcome = verify_file(chain_file, genesis)
    assert isinstance(outcome, VerifyReport)
    assert outcome.ok


def logical_dump(path: Path) -> list[object] | None:
    """Every row of every table, or None if SQLite cannot read the file."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return [
                conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall(),
                conn.execute("SELECT * FROM blocks ORDER BY height").fetchall(),
                conn.execute("SELECT * FROM txs ORDER BY height, idx").fetchall(),
                conn.execute("PRAGMA application_id").fetchall(),
                conn.execute("PRAGMA user_version").fetchall(),
            ]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def test_byte_flips_anywhere_in_pages_holding_blobs(chain_file: Path, genesis: Genesis) -> None:
    rng = random.Random(SEED + 2)
    blobs = stored_blobs(chain_file)
    offsets = blob_offsets(chain_file, blobs)
    conn = sqlite3.connect(chain_file)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    pages = sorted({offsets[b] // page_size for b in blobs})
    baseline = logical_dump(chain_file)
    changed_rounds = 0
    for round_ in range(PAGE_FLIPS):
        position = rng.choice(pages) * page_size + rng.randrange(page_size)
        mask = rng.randrange(1, 256)
        original = flip_in_file(chain_file, position, mask)
        if logical_dump(chain_file) != baseline:
            changed_rounds += 1
            outcome = verify_file(chain_file, genesis)
            assert detected(outcome), f"undetected: seed {SEED + 2} round {round_}: file offset {position} ^ {mask:#x}"  # fmt: skip
        restore_in_file(chain_file, position, original)
    assert logical_dump(chain_file) == baseline
    assert changed_rounds > PAGE_FLIPS // 2  # most flips in those pages do change stored data
