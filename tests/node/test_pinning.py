"""Pinner: CIDs of blocks committed in this process come from memory, older ones from the store.

No network: a file counts as pinnable once it is pinned in the local content store (a
pinner with no gateway cannot fetch anything), so each pass is deterministic.
Covered: the read-back range between the durable cursor and the tip at start-up; a
block with files wakes the pinner and holds the cursor until its files are pinned; a
block without files neither wakes it nor reads the store; the cursor survives a restart.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx

from belep.app.machine import BelepApplication
from belep.content.blockstore import Blockstore
from belep.content.importer import import_file
from belep.content.ingest import add_file
from belep.crypto import PrivateKey
from belep.ledger.block import Block, DomainId
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.envelope import sign_envelope
from belep.ledger.store import BlockStore
from belep.node.kvstore import ConsensusState
from belep.node.pinning import PinDomain, Pinner, cids_of_payloads

KEYS = committee_keys("pin", 4)
AUTHOR = PrivateKey.from_seed(b"a" * 32)
DOMAIN = DomainId("d")


def _payload(nonce: int, cids: tuple[str, ...] = ()) -> bytes:
    envelope = sign_envelope(
        AUTHOR, "attach-evidence", {"n": nonce}, timestamp_ms=1, nonce=nonce, cids=cids
    )
    return envelope.encode()


def _file_cid(data: bytes) -> str:
    return str(import_file([data]).cid)


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.genesis = make_genesis("d", KEYS)
        self.chain = BlockStore.open(root / "chain.sqlite3", self.genesis)
        self.builder = ChainBuilder(self.genesis, KEYS, application=BelepApplication())
        self.content = Blockstore(root / "content", sync=False)

    def commit(self, payloads: list[bytes]) -> Block:
        block, qc = self.builder.next_block(payloads, timestamp_ms=self.chain.tip().height + 1)
        self.chain.append(block, qc)
        return block

    def pinner(self) -> tuple[Pinner, BlockStore]:
        reader = BlockStore.open(self.root / "chain.sqlite3", self.genesis, readonly=True)
        entry = PinDomain(DOMAIN, reader, (), lambda: self.chain.tip().height)
        pinner = Pinner(
            self.content, ConsensusState(self.root / "state.sqlite3"), {DOMAIN: entry}, str
        )
        pinner.load_cursors()
        return pinner, reader


async def _pass(pinner: Pinner) -> bool:
    """One pass; True if it stopped on a failure."""
    async with httpx.AsyncClient() as client:
        _, failed = await pinner._pass(client)
    return failed


def test_memory_for_new_blocks_store_for_the_recovery_range(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    here = add_file(io.BytesIO(b"already here"), rig.content)
    here_cid = str(here.cid)
    missing_data = b"arrives later"
    missing_cid = _file_cid(missing_data)
    rig.commit([_payload(1)])
    rig.commit([_payload(2, (here_cid,)), _payload(3)])
    rig.commit([_payload(4)])

    pinner, reader = rig.pinner()
    entry = pinner.domains[DOMAIN]
    assert (entry.cursor, entry.memory_from, pinner.lag()) == (0, 4, 3)
    assert not asyncio.run(_pass(pinner))  # read back from the store, pins what it finds
    assert entry.cursor == 3
    assert pinner.lag() == 0

    block = rig.commit([_payload(5), _payload(6, (missing_cid,))])
    pinner.on_commit(DOMAIN, block)
    assert entry.found == {4: [missing_cid]}
    assert pinner._wake.is_set()
    assert pinner.lag() == 1
    assert asyncio.run(_pass(pinner))  # nobody can serve it: the cursor waits
    assert entry.cursor == 3
    assert pinner.lag() == 1

    add_file(io.BytesIO(missing_data), rig.content)
    pinner._wake.clear()
    empty = rig.commit([_payload(7)])
    pinner.on_commit(DOMAIN, empty)
    assert not pinner._wake.is_set()
    assert 5 not in entry.found
    reader.close()  # blocks committed in this process are never read back
    assert not asyncio.run(_pass(pinner))
    assert entry.cursor == 5
    assert entry.found == {}
    assert pinner.lag() == 0

    restarted, again = rig.pinner()  # the cursor is durable
    assert restarted.domains[DOMAIN].cursor == 5
    assert restarted.lag() == 0
    again.close()


def test_cids_of_payloads_skips_foreign_payloads_and_duplicates() -> None:
    cid = _file_cid(b"x")
    payloads = [b"not an envelope", _payload(1, (cid,)), _payload(2, (cid,)), _payload(3)]
    assert cids_of_payloads(payloads) == [cid]
