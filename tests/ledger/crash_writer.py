"""Writer process for test_crash.py: appends blocks forever, printing each height once stored.

Usage: ``python crash_writer.py DATA_DIR [MAX_BLOCKS]``. Resumes from the
store's tip; a printed height is *acknowledged*: ``append`` had returned.
Exits when stdout is closed or after MAX_BLOCKS appends.
"""

from __future__ import annotations

import sys
from pathlib import Path

from belep.app.machine import BelepApplication
from belep.crypto import sha256
from belep.ledger.builder import ChainBuilder, committee_keys
from belep.ledger.datadir import DomainDir
from belep.ledger.genesis_file import read_genesis
from belep.ledger.store import BlockStore

TXS_PER_BLOCK = 150
PAYLOAD_SIZE = 300


def payloads(height: int) -> list[bytes]:
    out = []
    for i in range(TXS_PER_BLOCK):
        seed = sha256(f"crash-{height}-{i}".encode())
        out.append((seed * (PAYLOAD_SIZE // 32 + 1))[:PAYLOAD_SIZE])
    return out


def main() -> None:
    domain = DomainDir(Path(sys.argv[1]))
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    genesis = read_genesis(domain.genesis_path)
    with BlockStore.open(domain.chain_path, genesis) as store:
        tip = store.tip()
        builder = ChainBuilder(genesis, committee_keys("v", 4), application=BelepApplication())
        builder.follow(block for block, _ in store.iter_committed(1, tip.height))
        for _ in range(limit):
            height = builder.height + 1
            block, qc = builder.next_block(payloads(height), timestamp_ms=height)
            store.append(block, qc)
            try:
                print(height, flush=True)
            except BrokenPipeError:
                return


if __name__ == "__main__":
    main()
