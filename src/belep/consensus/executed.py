"""What a replica knows of its host's execution: the state root to propose and check.

Owns :class:`ExecutionCursor`. The host executes delivered blocks and tells
the replica (``Executed`` events, ``consensus/types.py``); the cursor keeps
the latest: the state root after the replica's executed block. A proposer
puts :meth:`ExecutionCursor.root_after` its parent into the block
(``ledger.builder.build_block``); a voter votes for a block only if the
block's ``state_root`` equals it (:meth:`ExecutionCursor.check`), and waits
while it does not yet know it.

Invariants: the cursor only moves forward; before any ``Executed`` it stands
at the genesis (height 0, the genesis hash, ``genesis_state_root``).

No I/O.
"""

from __future__ import annotations

from enum import Enum

from belep.consensus.types import Executed
from belep.ledger.block import Block, Digest, Height
from belep.ledger.execution import genesis_state_root

__all__ = ["ExecutionCursor", "RootCheck"]


class RootCheck(Enum):
    """A block's state root against what this replica executed."""

    MATCHES = "matches"
    DIFFERS = "differs"
    UNKNOWN = "unknown"  # the parent is not executed here yet: wait


class ExecutionCursor:
    """The latest ``Executed`` a replica was told of."""

    __slots__ = ("block_hash", "height", "root")

    def __init__(self, genesis_hash: bytes) -> None:
        self.height = Height(0)
        self.block_hash = Digest(genesis_hash)
        self.root = genesis_state_root(genesis_hash)

    def advance(self, event: Executed) -> bool:
        """Record ``event`` if it is later than what is known; True if the cursor moved."""
        if event.height <= self.height:
            return False
        self.height = event.height
        self.block_hash = event.block_hash
        self.root = event.state_root
        return True

    def root_after(self, height: int, block_hash: bytes) -> Digest | None:
        """The state root after block ``height`` (``block_hash``), if that is what was executed."""
        if height == self.height and block_hash == self.block_hash:
            return self.root
        return None

    def check(self, block: Block) -> RootCheck:
        """Does ``block`` carry the root after its parent, as executed here?"""
        header = block.header
        root = self.root_after(header.height - 1, header.prev_hash)
        if root is None:
            return RootCheck.UNKNOWN
        return RootCheck.MATCHES if header.state_root == root else RootCheck.DIFFERS
