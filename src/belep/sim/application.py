"""The simulated clients' application: what every simulated node executes.

Owns :class:`SimApplication`, the rules ``apply_block`` runs on each block a
simulated replica delivers (``docs/spec/ledger.md`` §Execution): a client's
transactions must arrive in increasing sequence order — one the chain orders
after a later one of the same client is recorded as rejected
(``stale-sequence``) and changes nothing; an accepted one records the client's
latest sequence number. Transactions that are not the simulator's are
rejected (``malformed``). The outcome thus depends on the order consensus
chose, as a real application's does, and is the same on every correct node.

``nondeterministic=True`` plants a bug for tests: this node also rejects the
transactions whose hash starts with a zero byte, as an application reading a
node-local value would; the state root must expose it at the next block.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from belep.ledger.block import Transaction
from belep.ledger.execution import ACCEPTED, BlockContext, StateView, TxResult, Writes
from belep.sim.workload import read_sim_header

__all__ = ["PLANTED_NONDETERMINISM", "SimApplication"]

#: The planted bug's name (``belep sim --planted-bug``): one member executes differently.
PLANTED_NONDETERMINISM = "sim_app_nondeterminism"
_STALE = TxResult("stale-sequence")
_MALFORMED = TxResult("malformed")
_QUIRK = TxResult("node-local-quirk")


class SimApplication:
    """Per client, sequence numbers only grow (see the module docstring)."""

    __slots__ = ("nondeterministic",)

    def __init__(self, *, nondeterministic: bool = False) -> None:
        self.nondeterministic = nondeterministic

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        header = read_sim_header(tx.payload)
        if header is None:
            return _MALFORMED, {}
        if self.nondeterministic and tx.tx_hash[0] == 0:
            return _QUIRK, {}
        client, seq = header
        key = b"client/%d" % client
        last = state.get(key)
        if last is not None and seq <= int.from_bytes(last, "big"):
            return _STALE, {}
        return ACCEPTED, {key: seq.to_bytes(8, "big")}
