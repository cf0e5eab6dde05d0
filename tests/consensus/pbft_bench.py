"""CPU cost of PBFT replicas: every replica of a committee in one process, one core.

Runs the replicas on the deterministic router of ``pbft_cluster.py`` (virtual
time, no network) after the bootstrap view change, submits ``--txs``
transactions of 208 bytes to the primary and measures the wall-clock time
until every replica delivered all of them. ``--wire`` also passes every
message through the canonical wire codec, as the real network does.

Run: ``.venv/bin/python tests/consensus/pbft_bench.py [--wire] [--profile]``.
The router's own checks (each delivered certificate verified once) are
included in the time, so the figures are an upper bound of the replica cost.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from pbft_cluster import Cluster

from belep.consensus.pbft import Mode
from belep.ledger.block import Transaction


def run(n: int, txs_count: int, batch: int, *, wire: bool, profile: bool) -> None:
    c = Cluster(
        n=n,
        wire=wire,
        config_overrides={"max_batch_size": batch, "window": 8, "checkpoint_interval": 16},
    )
    c.start()
    c.run(lambda: all(r is not None and r.mode is Mode.NORMAL for r in c.replicas.values()))
    txs = [Transaction(b"%08d" % i + b"x" * 200) for i in range(txs_count)]
    primary = c.ids[1]
    need = -(-txs_count // batch)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for t in txs:
        c.submit(primary, t)
    ok = c.run(lambda: all(c.replica(x).committed_height >= need for x in c.ids), max_time=600_000)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - started
    blocks = c.replica(c.ids[0]).committed_height
    print(
        f"n={n} txs={txs_count} batch={batch} wire={wire} ok={ok} blocks={blocks} "
        f"wall={wall:.2f}s: {txs_count / wall:,.0f} tx/s through all {n} replicas; "
        f"{wall / blocks / n * 1000:.2f} ms per block per replica"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--txs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--wire", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for n in (4, 7):
        run(n, args.txs, args.batch, wire=args.wire, profile=args.profile)


if __name__ == "__main__":
    main()
