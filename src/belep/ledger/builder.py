"""Building blocks: the one block builder, and certified chains without consensus.

* :func:`build_block` — how every proposer (PBFT, HPBFT, Raft, and
  :class:`ChainBuilder`) makes a block: the transactions root over the batch,
  the state root after the parent (``ledger/execution.py``), a timestamp that
  never goes back before the parent's;
* :class:`ChainBuilder` — for demos, benchmarks, tests and simulations,
  anywhere a chain is made without running consensus: block after block,
  exactly what consensus would deliver — a block extending the previous one,
  its state root from executing the chain with an application, and a commit
  certificate signed by a quorum of the genesis voters.

Pure: keys and timestamps are inputs (:func:`committee_keys` derives keys
from a label, for reproducible runs; pass fresh keys for real ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from belep.crypto import DEFAULT_SUITE, PrivateKey, sha256
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.execution import Application, ChainExecutor, MemoryState, StateStore
from belep.ledger.genesis import Genesis, Member


def build_block(
    *,
    domain: DomainId,
    height: int,
    epoch: int,
    view: int,
    parent_hash: bytes,
    parent_timestamp_ms: int | None,
    transactions: tuple[Transaction, ...],
    now_ms: int,
    proposer: NodeId,
    state_root: bytes,
) -> Block:
    """The block a proposer makes at ``height`` on top of ``parent_hash``.

    ``state_root`` is the execution root after the parent
    (:func:`~belep.ledger.execution.check_state_root`); the timestamp is the
    proposer's clock, but never before the parent's (``None``: unknown, e.g.
    the genesis or a checkpoint).
    """
    return make_block(
        domain=domain,
        height=Height(height),
        epoch=Epoch(epoch),
        view=View(view),
        prev_hash=Digest(parent_hash),
        transactions=transactions,
        timestamp_ms=max(now_ms, parent_timestamp_ms or 0),
        proposer=proposer,
        state_root=Digest(state_root),
    )


def committee_keys(label: str, count: int, suite: str = DEFAULT_SUITE) -> dict[NodeId, PrivateKey]:
    """``count`` deterministic keys named ``<label>-1`` .. ``<label>-<count>`` (not secret!)."""
    return {
        NodeId(f"{label}-{i}"): PrivateKey.from_seed(sha256(f"{label}-{i}".encode()), suite)
        for i in range(1, count + 1)
    }


def make_genesis(
    domain: str,
    keys: Mapping[NodeId, PrivateKey],
    *,
    protocol: str = "pbft",
    observers: Mapping[NodeId, PrivateKey] | None = None,
    parent: str | None = None,
    created_ms: int = 0,
) -> Genesis:
    """A genesis whose voters are ``keys`` (in the mapping's order)."""
    suites = {k.suite for k in keys.values()}
    return Genesis(
        domain=DomainId(domain),
        suite=next(iter(suites)) if len(suites) == 1 else DEFAULT_SUITE,
        protocol=protocol,
        voters=tuple(Member(n, k.public_key) for n, k in keys.items()),
        observers=tuple(Member(n, k.public_key) for n, k in (observers or {}).items()),
        parent=None if parent is None else DomainId(parent),
        created_ms=created_ms,
    )


class ChainBuilder:
    """Makes the next certified block of a chain, given its genesis and voter keys.

    ``application`` executes each block (its state root goes into the next
    block); pass the rules the chain will be verified with.
    """

    __slots__ = ("executor", "genesis", "height", "keys", "signers", "tip_hash", "tip_timestamp_ms")

    def __init__(
        self,
        genesis: Genesis,
        keys: Mapping[NodeId, PrivateKey],
        *,
        application: Application,
        state: StateStore | None = None,
        signers: Sequence[NodeId] | None = None,
    ) -> None:
        self.genesis = genesis
        self.keys = dict(keys)
        quorum = genesis.committee().node_ids[: genesis.quorum]
        self.signers = tuple(signers) if signers is not None else quorum
        self.height = Height(0)
        self.tip_hash = genesis.genesis_hash
        self.tip_timestamp_ms: int | None = None
        self.executor = ChainExecutor.from_genesis(
            application,
            MemoryState() if state is None else state,
            genesis.genesis_hash,
            term_start_root_unknown=genesis.term_start_root_unknown,
        )

    def follow(self, blocks: Iterable[Block]) -> ChainBuilder:
        """Take ``blocks`` (the chain's next blocks, e.g. read back from a store) as the
        tip, executing them; returns ``self``. Raises if they do not extend the tip."""
        for block in blocks:
            self.executor.execute(block)
            self.height = block.height
            self.tip_hash = block.block_hash
            self.tip_timestamp_ms = block.header.timestamp_ms
        return self

    def certify(self, block: Block, *, view: int | None = None) -> QuorumCertificate:
        """A commit certificate for ``block`` signed by :attr:`signers`."""
        header = block.header
        statement = VoteStatement(
            kind=self.genesis.commit_kind,
            domain=header.domain,
            epoch=header.epoch,
            view=View(header.view if view is None else view),
            height=header.height,
            block_hash=header.block_hash,
        )
        message = statement.signing_bytes()
        return QuorumCertificate(
            statement, tuple((s, self.keys[s].sign(message)) for s in self.signers)
        )

    def next_block(
        self,
        payloads: Sequence[bytes],
        *,
        timestamp_ms: int,
        view: int = 0,
        epoch: int = 0,
        proposer: NodeId | None = None,
    ) -> tuple[Block, QuorumCertificate]:
        """The block after the current tip, executed and certified; advances the tip."""
        voters = self.genesis.committee().node_ids
        block = build_block(
            domain=self.genesis.domain,
            height=self.height + 1,
            epoch=epoch,
            view=view,
            parent_hash=self.tip_hash,
            parent_timestamp_ms=self.tip_timestamp_ms,
            transactions=tuple(Transaction(p) for p in payloads),
            now_ms=timestamp_ms,
            proposer=proposer or voters[view % len(voters)],
            state_root=self.executor.root,
        )
        self.executor.execute(block)
        qc = self.certify(block)
        self.height = block.height
        self.tip_hash = block.block_hash
        self.tip_timestamp_ms = block.header.timestamp_ms
        return block, qc
