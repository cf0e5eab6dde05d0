"""Benchmark workload: signed evidence-record transactions of a realistic size.

Owns :func:`evidence_record` (one signed envelope shaped like the
application's ``RegisterDispatch`` and ``AttachEvidence`` transactions:
task number, vehicle plate, body-camera id, officer, location, case name,
capture metadata and a file digest) and :func:`presign` (many of them,
signed before a measurement starts, in worker processes, so the client's
signing never competes with the nodes during the measured window).

Invariants: every record is a valid :class:`~belep.app.envelope.Envelope`
(it passes :class:`~belep.app.envelope.EnvelopeValidator`); records of one
seed are distinct (the nonce is the sequence number), so their transaction
hashes are distinct; the encoded size is close to :data:`RECORD_BYTES`.
The body carries the file's CID as text, not in the envelope's ``cids``
list: a listed CID makes every committee member pin that file, and the
benchmark has no files behind its records.

Deterministic for a seed (keys and bodies); the only I/O is the process pool.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from belep.app.envelope import sign_envelope
from belep.crypto import PrivateKey, sha256
from belep.encoding import Value

__all__ = ["AUTHORS", "RECORD_BYTES", "evidence_record", "presign"]

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
