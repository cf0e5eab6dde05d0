"""Benchmark workload: signed evidence-record transactions of a realistic size.

Owns :func:`evidence_record` (one signed envelope shaped like the
application's ``RegisterDispatch`` and ``AttachEvidence`` transactions:
task number, vehicle plate, body-camera id, officer, location, case name,
capture metadata and a file digest) and :func:`presign` (many of them,
signed before a measurement starts, in worker processes, so the client's
signing never competes with the nodes during the measured window).

Invariants: every record is a valid :class:`~belep.ledger.envelope.Envelope`
(it passes :class:`~belep.ledger.envelope.EnvelopeValidator`); records of one
seed are distinct (the nonce is the sequence number), so their transaction
hashes are distinct; the encoded size is close to :data:`RECORD_BYTES`.
The body carries the file's CID as text, not in the envelope's ``cids``
list: a listed CID makes every committee member pin that file, and the
benchmark has no files behind its records.

Deterministic for a seed and timestamp (keys and bodies). I/O: the process
pool, and :func:`presign_cached`'s cache file (signing 100,000 records takes
tens of seconds on a busy 2-core machine; a rerun reads them back).
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from belep.crypto import PrivateKey, sha256
from belep.encoding import Value
from belep.ledger.envelope import sign_envelope

__all__ = [
    "AUTHORS",
    "RECORD_BYTES",
    "RecordStream",
    "evidence_record",
    "presign",
    "presign_cached",
]

#: Officers signing the workload (each transaction is signed by one of them).
AUTHORS = 32
#: Approximate encoded size of one record (signed envelope), in bytes.
RECORD_BYTES = 480
#: Records signed per worker task.
_CHUNK = 2000

_PLATES = ("云A·", "云A·J", "粤B·", "京A·")
_PLACES = ("呈贡区吴家营街道", "呈贡区龙城街道", "官渡区关上街道", "盘龙区拓东路")
_MEDIA = ("video/mp4", "image/jpeg", "audio/aac", "application/pdf")


def _author(seed: int, index: int) -> PrivateKey:
    return PrivateKey.from_seed(sha256(f"belep-bench-author:{seed}:{index}".encode()))


def evidence_record(key: PrivateKey, seq: int, rng: random.Random, timestamp_ms: int) -> bytes:
    """One signed transaction payload: a dispatch record with an attached evidence file."""
    digest = sha256(seq.to_bytes(8, "big") + rng.randbytes(8))
    body: dict[str, Value] = {
        "task": f"KM{2024_0000_0000 + seq:013d}",
        "plate": f"{rng.choice(_PLATES)}{rng.randrange(10_000, 99_999)}",
        "camera": f"DSJ-{rng.randrange(100_000, 999_999)}",
        "officer": f"执法人员{rng.randrange(1, 500):03d}",
        "location": f"{rng.choice(_PLACES)}{rng.randrange(1, 300)}号",
        "case": f"案件{rng.randrange(1, 10_000):05d}",
        "time_ms": timestamp_ms - rng.randrange(0, 600_000),
        "file_cid": "bafk" + digest.hex()[:55],
        "file_size": rng.randrange(10_000, 1_200_000_000),
        "file_sha256": digest,
        "media": rng.choice(_MEDIA),
    }
    envelope = sign_envelope(key, "register-dispatch", body, timestamp_ms=timestamp_ms, nonce=seq)
    return envelope.encode()


def _sign_range(seed: int, start: int, count: int, timestamp_ms: int) -> list[bytes]:
    keys = [_author(seed, i) for i in range(AUTHORS)]
    out = []
    for seq in range(start, start + count):
        rng = random.Random(seed * 1_000_003 + seq)
        out.append(evidence_record(keys[seq % AUTHORS], seq, rng, timestamp_ms))
    return out


def presign(
    count: int, *, seed: int, timestamp_ms: int, first: int = 0, workers: int = 2
) -> list[bytes]:
    """``count`` distinct signed records (sequence numbers ``first..first+count-1``)."""
    if count <= 0:
        return []
    starts = list(range(first, first + count, _CHUNK))
    sizes = [min(_CHUNK, first + count - s) for s in starts]
    if workers <= 1 or len(starts) == 1:
        chunks: Sequence[list[bytes]] = [
            _sign_range(seed, s, n, timestamp_ms) for s, n in zip(starts, sizes, strict=True)
        ]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunks = list(
                pool.map(
                    _sign_range,
                    [seed] * len(starts),
                    starts,
                    sizes,
                    [timestamp_ms] * len(starts),
                )
            )
    return [payload for chunk in chunks for payload in chunk]


#: Timestamp of cached records (the application checks no time window on them).
CACHE_TIMESTAMP_MS = 1_763_900_000_000
_CACHE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "belep" / "bench"


def presign_cached(count: int, *, seed: int, directory: Path | None = None) -> list[bytes]:
    """:func:`presign` records ``0..count-1`` of ``seed``, kept in a cache file for reruns.

    The file holds length-prefixed records; a larger cached set serves a smaller
    request. A missing, short or unreadable file is (re)written.
    """
    folder = cache_dir() if directory is None else directory
    path = folder / f"records-v{_CACHE_VERSION}-seed{seed}.bin"
    try:
        data = path.read_bytes()
        records: list[bytes] = []
        offset = 0
        while offset < len(data) and len(records) < count:
            (size,) = struct.unpack_from(">I", data, offset)
            records.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
        if len(records) == count and all(records):
            return records
    except (OSError, struct.error):
        pass
    records = presign(count, seed=seed, timestamp_ms=CACHE_TIMESTAMP_MS)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in records))
        os.replace(temporary, path)
    except OSError:
        pass  # a cache we cannot write only costs time
    return records


class RecordStream:
    """Records of a seed: first a presigned pool, then signed on demand (counted).

    A closed loop cannot know beforehand how many records it will consume;
    signing past the pool keeps the run going instead of silently ending it,
    and :attr:`signed_on_demand` lets the result say the client spent CPU on it.
    """

    def __init__(self, pool: Sequence[bytes], *, seed: int, first: int = 0) -> None:
        self._pool = pool
        self._seed = seed
        self._next = first
        self.signed_on_demand = 0
        self._keys: list[PrivateKey] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        seq = self._next
        self._next += 1
        if seq < len(self._pool):
            return self._pool[seq]
        if self._keys is None:
            self._keys = [_author(self._seed, i) for i in range(AUTHORS)]
        self.signed_on_demand += 1
        rng = random.Random(self._seed * 1_000_003 + seq)
        return evidence_record(self._keys[seq % AUTHORS], seq, rng, CACHE_TIMESTAMP_MS)

    @property
    def consumed(self) -> int:
        return self._next
