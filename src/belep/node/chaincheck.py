"""Verifying a stored chain of one domain, whatever its protocol.

Owns :func:`verify_store` and :func:`verify_domain_chain`: the ledger's
:func:`~belep.ledger.verify.verify_chain` walk (hash links, heights, Merkle
roots, certificates against the committee the chain's own configuration
history names for each height, every configuration change) over a node's
block store, re-executing every block with the BELEP application
(:class:`~belep.app.machine.BelepApplication`) so that each header's state
root is checked too. One path for every protocol: the configuration history
is the ledger's (``belep.ledger.config``).

Reads the store it is given; no other I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from belep.app.machine import BelepApplication
from belep.ledger.genesis import Genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import VerifyReport, verify_chain

__all__ = ["ChainCheck", "verify_domain_chain", "verify_store"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    blocks: int
    problem: str | None


def verify_store(
    store: BlockStore,
    genesis: Genesis,
    *,
    check_sigs: bool = True,
    execute: bool = True,
    on_block: Callable[[int], None] | None = None,
) -> VerifyReport:
    """:func:`~belep.ledger.verify.verify_chain` over ``store``; ``execute``: re-execute every
    block with the BELEP application and check the state roots."""
    return verify_chain(
        store,
        genesis,
        application=BelepApplication() if execute else None,
        check_sigs=check_sigs,
        on_block=on_block,
    )


def verify_domain_chain(store: BlockStore, genesis: Genesis) -> ChainCheck:
    """Verify every block, certificate and state root of ``store``; the first problem, if any."""
    report = verify_store(store, genesis)
    problem = None if report.finding is None else str(report.finding)
    return ChainCheck(report.ok, report.blocks, problem)
