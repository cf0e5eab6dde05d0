"""Verifying a stored chain of one domain, whatever its protocol.

Owns :func:`committee_source` — which voters and quorum certify each height
of a stored chain — and :func:`verify_domain_chain`, the ledger's
:func:`~belep.ledger.verify.verify_chain` walk (hash links, heights, Merkle
roots, certificate statements and signatures) with that source.

PBFT and Raft committees never change, so the genesis answers every height.
HPBFT seats change by committed ``SubstituteSeat`` transactions and revivals,
so its committees are replayed from the genesis through the chain itself with
:func:`belep.consensus.hpbft_verify.committee_source_for_chain`.

Reads the store it is given; no other I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from belep.consensus.hpbft_verify import committee_source_for_chain
from belep.errors import BelepError
from belep.ledger.genesis import Genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import CommitteeSource, Finding, VerifyReport, verify_chain

__all__ = ["ChainCheck", "committee_source", "verify_domain_chain", "verify_store"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    blocks: int
    problem: str | None


def committee_source(store: BlockStore, genesis: Genesis) -> CommitteeSource | None:
    """The committee source for ``genesis``'s protocol (``None``: the genesis answers).

    Raises :class:`~belep.errors.BelepError` if the stored chain cannot be read
    to replay its configuration.
    """
    if genesis.protocol != "hpbft":
        return None
    return committee_source_for_chain(genesis, store.iter_committed(1, None))


def verify_store(
    store: BlockStore,
    genesis: Genesis,
    *,
    check_sigs: bool = True,
    on_block: Callable[[int], None] | None = None,
) -> VerifyReport:
    """:func:`~belep.ledger.verify.verify_chain` over ``store`` with the protocol's committees."""
    try:
        source = committee_source(store, genesis)
    except BelepError as exc:
        return VerifyReport(
            domain=genesis.domain,
            genesis_hash=genesis.genesis_hash,
            blocks=0,
            transactions=0,
            signatures=0,
            tip_height=0,
            tip_hash=genesis.genesis_hash,
            finding=Finding(0, "configuration", f"cannot replay the configuration: {exc}"),
        )
    return verify_chain(
        store, genesis, committee_source=source, check_sigs=check_sigs, on_block=on_block
    )


def verify_domain_chain(store: BlockStore, genesis: Genesis) -> ChainCheck:
    """Verify every block and certificate of ``store``; the first problem, if any."""
    report = verify_store(store, genesis)
    problem = None if report.finding is None else str(report.finding)
    return ChainCheck(report.ok, report.blocks, problem)
