"""The host's side of execution, for the test routers of the three protocols.

A host executes every block its replica delivers and feeds the state root
back (``Executed``, the host contract of ``belep.consensus.types``). The
routers (``pbft_cluster``, ``hpbft_cluster``, ``raft_cluster``) keep one
:class:`HostExecution` per node, next to its delivered chain: it executes
each new block with a rule-free application (every transaction accepted),
checking the block's state root first, and remembers the root after each
height so that a restarted replica can be told where it stands.
"""

from __future__ import annotations

from belep.consensus.types import Block, Executed
from belep.ledger.block import Digest
from belep.ledger.execution import AcceptAll, ChainExecutor, MemoryState, genesis_state_root


class HostExecution:
    """Execution of one node's delivered chain (see the module docstring)."""

    def __init__(self, genesis_hash: bytes, *, term_start_root_unknown: bool = False) -> None:
        self._genesis = genesis_hash
        self._term_start = term_start_root_unknown
        self.reset()

    def reset(self) -> None:
        """Start again from the genesis (a wiped disk)."""
        self._executor = ChainExecutor.from_genesis(
            AcceptAll(), MemoryState(), self._genesis, term_start_root_unknown=self._term_start
        )
        self._blocks: list[Block] = []
        self._roots: list[Digest] = [genesis_state_root(self._genesis)]

    def execute(self, block: Block) -> Executed:
        """Execute the next delivered block; raises a ValidationError on a wrong state root."""
        execution = self._executor.execute(block)
        self._blocks.append(block)
        self._roots.append(execution.state_root)
        return Executed(block.height, block.block_hash, execution.state_root)

    def executed(self, height: int) -> Executed | None:
        """``Executed`` for a height already executed (``None`` at the genesis or beyond)."""
        if height < 1 or height > len(self._blocks):
            return None
        block = self._blocks[height - 1]
        return Executed(block.height, block.block_hash, self._roots[height])
