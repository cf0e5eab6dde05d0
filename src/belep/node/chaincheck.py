"""Verifying a node's stored chain of one domain, whatever its protocol.

Owns :func:`verify_domain_chain`: the ledger's :func:`~belep.ledger.verify.verify_chain`
walk (hash links, heights, Merkle roots, certificate statements and — for
protocols whose voters never change — every certificate signature against
the genesis voters), and for HPBFT, whose seats change by committed
``SubstituteSeat`` transactions, every commit certificate checked against
the seats in force at its height, replayed from the genesis with
:mod:`belep.consensus.hpbft_verify` (until the ledger's committee seam
answers configuration histories itself). Revival records are not replayed
here (a revived chain reports a finding).

Reads the store it is given; no other I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from belep.errors import ValidationError
from belep.ledger.genesis import Genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import verify_chain

__all__ = ["ChainCheck", "verify_domain_chain"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    blocks: int
    problem: str | None


def verify_domain_chain(store: BlockStore, genesis: Genesis) -> ChainCheck:
    if genesis.protocol != "hpbft":
        report = verify_chain(store, genesis)
        problem = None if report.finding is None else str(report.finding)
        return ChainCheck(report.ok, report.blocks, problem)
    report = verify_chain(store, genesis, check_sigs=False)
    if not report.ok:
        return ChainCheck(False, report.blocks, str(report.finding))
    from belep.consensus.certificates import SignatureCache
    from belep.consensus.hpbft_config import genesis_history
    from belep.consensus.hpbft_verify import check_certificate

    keys = {m.node_id: m.key for m in (*genesis.voters, *genesis.observers)}
    history = genesis_history(
        genesis.domain,
        tuple(m.node_id for m in genesis.voters),
        tuple(m.node_id for m in genesis.observers),
    )
    cache = SignatureCache()
    for block, certificate in store.iter_committed(1, None):
        try:
            check_certificate(history, keys, block, certificate, cache)
        except ValidationError as exc:
            return ChainCheck(False, report.blocks, f"height {block.height}: {exc}")
        history = history.after_block(block)
    return ChainCheck(True, report.blocks, None)
