"""What a domain accepts before ordering: the stateless part of its transaction rules.

Owns :func:`transaction_policy`, the policy every node's
:class:`~belep.ledger.envelope.EnvelopeValidator` applies to a signed envelope
(after its signature verified) when a client submits it, when a voter relays
it, and when a BFT replica checks a proposed block:

* ``substitute-seat`` and ``revival`` are never a client's: only a proposer
  puts them in a block (HPBFT), signed by itself (``ledger/config_tx.py``);
* ``revive-child`` (a decision about a stalled child) and ``anchor`` (a
  child's tip) are accepted only from a voter of this domain, an anchor only
  when well formed;
* any other kind passes (its rules are the application's, after ordering:
  :mod:`belep.app.machine`).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from belep.app.anchors import ANCHOR_KIND, read_anchor
from belep.crypto import PublicKey
from belep.ledger.block import NodeId
from belep.ledger.config_tx import REVIVAL_KIND, REVIVE_CHILD_KIND, SUBSTITUTE_KIND
from belep.ledger.envelope import Envelope

__all__ = ["PROPOSER_ONLY_KINDS", "VOTER_ONLY_KINDS", "transaction_policy"]

#: Kinds only a block's proposer creates; never accepted from a client.
PROPOSER_ONLY_KINDS = frozenset({SUBSTITUTE_KIND, REVIVAL_KIND})
#: Kinds accepted only from a voter of the domain.
VOTER_ONLY_KINDS = frozenset({ANCHOR_KIND, REVIVE_CHILD_KIND})


def transaction_policy(voters: Mapping[NodeId, PublicKey]) -> Callable[[Envelope], bool]:
    """The domain's policy for ``voters`` (see the module docstring)."""
    keys = frozenset(voters.values())

    def policy(envelope: Envelope) -> bool:
        kind = envelope.kind
        if kind in PROPOSER_ONLY_KINDS:
            return False
        if kind in VOTER_ONLY_KINDS:
            if envelope.author not in keys:
                return False
            return kind != ANCHOR_KIND or read_anchor(envelope) is not None
        return True

    return policy
