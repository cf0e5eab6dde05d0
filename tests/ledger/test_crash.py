"""Crash safety: a writer killed with SIGKILL at random moments loses no acknowledged block.

Each round starts ``crash_writer.py`` on the same store; it resumes from the
tip and prints every height once ``append`` has returned. The test kills it
after a seeded number of acknowledgements plus a seeded amount of extra
work (so the kill lands anywhere inside an append), then reopens the store:
the chain must verify, and every acknowledged height must be stored.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from belep.ledger.datadir import DomainDir
from belep.ledger.genesis import Genesis
from belep.ledger.genesis_file import write_genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import verify_chain

SEED = 20210311
ROUNDS = 8
WRITER = Path(__file__).with_name("crash_writer.py")

pytestmark = pytest.mark.slow


def busy_work(units: int) -> None:
    """Deterministic CPU work (not a sleep) that shifts the moment of the kill."""
    digest = b""
    for _ in range(units):
        digest = hashlib.sha256(digest).digest()


def test_sigkill_loses_no_acknowledged_block(tmp_path: Path, genesis: Genesis) -> None:
    domain = DomainDir(tmp_path)
    write_genesis(domain.genesis_path, genesis)
    rng = random.Random(SEED)
    acknowledged: list[int] = []
    tip_before = 0
    for round_ in range(ROUNDS):
        target = rng.randint(1, 12)
        extra = rng.randint(0, 60_000)
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        heights: list[int] = []
        for line in proc.stdout:
            heights.append(int(line))
            if len(heights) >= target:
                break
        busy_work(extra)
        os.kill(proc.pid, signal.SIGKILL)
        heights += [int(x) for x in proc.stdout.read().split()]  # printed before it died
        proc.wait()
        proc.stdout.close()
        replay = f"seed {SEED} round {round_} (target {target}, extra {extra})"
        assert proc.returncode == -signal.SIGKILL, replay
        assert heights, f"writer acknowledged nothing: {replay}"
        assert heights[0] == tip_before + 1, f"writer did not resume from the tip: {replay}"
        assert heights == list(range(heights[0], heights[-1] + 1)), replay
        acknowledged += heights
        with BlockStore.open(domain.chain_path, genesis) as store:  # recovery happens here
            report = verify_chain(store, genesis)
            assert report.ok, f"{replay}: {report.finding}"
            tip = store.tip()
            assert tip.height >= max(acknowledged), f"acknowledged block lost: {replay}"
            assert tip.height <= max(acknowledged) + 1, replay  # at most the one in flight
            assert store.get_block(max(acknowledged)).height == max(acknowledged)
            tip_before = tip.height
    # Heights only grow; a block stored but killed before its acknowledgement leaves a gap.
    assert acknowledged == sorted(set(acknowledged))
