"""Execution after ordering: ``apply_block``, transaction results and the state root.

Consensus orders blocks; every node then executes each committed block, in
height order, with the application's pure rules (``docs/spec/ledger.md``
§Execution). Owns:

* the interface an application implements (:class:`Application`): one pure
  function per transaction, over a read-only :class:`StateView` (keys and
  values are byte strings), returning a :class:`TxResult` — accepted, or
  rejected with a reason code — and, when accepted, the state writes;
* :func:`apply_block` — ``(state, block) -> (new_state, execution)``: runs the
  transactions in block order, each seeing the writes of the ones before it;
  a rejected transaction changes nothing;
* the **state root**, an accumulator over every execution since the genesis::

      root(0) = H(encode(["belep-state-v1", genesis_hash]))
      root(h) = H(encode(["belep-state-v1", root(h-1), h, block_hash(h),
                          results_root(h), writes_root(h)]))

  ``results_root`` is the RFC 6962 root over ``encode([tx_hash, code])`` per
  transaction, ``writes_root`` the hash of the sorted writes. The header of
  block ``h + 1`` carries ``root(h)`` in ``state_root``, so a node whose
  execution diverged is detected at the next block, and a receipt can prove
  a transaction was *accepted*, not merely ordered (its result leaf, the
  block's results root, and the root certified in the next header);
* :func:`check_state_root` — the chain rule on a header's ``state_root``;
* :class:`ChainExecutor` — executes a chain block after block over a mutable
  :class:`StateStore` the host owns (memory in the simulator, SQLite in the
  node), checking each block's state root first.

Invariants: the same chain gives the same results, writes and roots on every
node (applications are pure; no clock but the block's timestamp, no
randomness, no I/O); an execution never writes for a rejected transaction.

No I/O here; a :class:`StateStore` may do it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from belep.crypto import sha256
from belep.encoding import Value, encode
from belep.errors import ChainError, EnvironmentFault
from belep.ledger.block import (
    ZERO_HASH,
    Block,
    BlockHeader,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
)
from belep.ledger.merkle import compute_root

__all__ = [
    "ACCEPTED",
    "STATE_TAG",
    "TX_OK",
    "AcceptAll",
    "Application",
    "BlockContext",
    "BlockExecution",
    "ChainExecutor",
    "ExecutionState",
    "MemoryState",
    "Overlay",
    "StateStore",
    "StateView",
    "TxResult",
    "Writes",
    "apply_block",
    "check_state_root",
    "compute_results_root",
    "compute_state_root",
    "compute_writes_root",
    "genesis_state_root",
    "result_leaf",
]

STATE_TAG = "belep-state-v1"
#: The result code of an accepted transaction.
TX_OK = "ok"
_CODE = re.compile(r"[a-z][a-z0-9-]{0,63}")
#: Largest state key and value (bytes); an application that writes more is refused.
MAX_KEY_SIZE = 1024
MAX_VALUE_SIZE = 1024 * 1024

#: State writes of one block: key -> new value (``None`` deletes it).
Writes = Mapping[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class TxResult:
    """A transaction's outcome: ``code`` is :data:`TX_OK` or the reason it was rejected."""

    code: str

    def __post_init__(self) -> None:
        if not _CODE.fullmatch(self.code):
            raise ChainError(
                "bad result code", expected="[a-z][a-z0-9-]{0,63}", found=self.code[:80]
            )

    @property
    def accepted(self) -> bool:
        return self.code == TX_OK


ACCEPTED = TxResult(TX_OK)


class StateView(Protocol):
    """Read access to the application state."""

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key``, or ``None``."""
        ...


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a transaction may know of the block executing it (its timestamp is the time)."""

    domain: DomainId
    height: Height
    epoch: Epoch
    view: View
    timestamp_ms: int
    proposer: NodeId
    block_hash: Digest

    @classmethod
    def of(cls, header: BlockHeader) -> BlockContext:
        return cls(
            header.domain,
            header.height,
            header.epoch,
            header.view,
            header.timestamp_ms,
            header.proposer,
            header.block_hash,
        )


class Application(Protocol):
    """An application's rules: pure, deterministic, no I/O, no clock, no randomness."""

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        """The result of ``tx`` on ``state`` and, if accepted, its writes.

        Must not raise for bad input: a transaction that breaks a rule is a
        rejected result. (An exception that escapes, but an environment fault,
        is recorded as the rejection ``invalid``, as are writes beyond the size
        limits.)
        """
        ...


class AcceptAll:
    """An application without rules: every transaction accepted, nothing written.

    For chains that carry no application (tests of the ledger and consensus
    alone); the state root still commits to every block's results.
    """

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        return ACCEPTED, {}


class Overlay:
    """A view of ``base`` with pending writes on top (the writes of a block in progress)."""

    __slots__ = ("_base", "_writes")

    def __init__(self, base: StateView, writes: Mapping[bytes, bytes | None] | None = None) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = dict(writes or {})

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def update(self, writes: Writes) -> None:
        """Add ``writes`` (all or none: :class:`ChainError` if one is out of bounds)."""
        for key, value in writes.items():
            if not isinstance(key, bytes) or len(key) > MAX_KEY_SIZE:
                raise ChainError("state key must be bytes of at most 1 KiB", found=repr(key)[:80])
            if value is not None and (not isinstance(value, bytes) or len(value) > MAX_VALUE_SIZE):
                raise ChainError("state value must be bytes of at most 1 MiB or None")
        self._writes.update(writes)

    def writes(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """The pending writes, sorted by key."""
        return tuple(sorted(self._writes.items()))


@dataclass(frozen=True, slots=True)
class BlockExecution:
    """What executing one block produced (what the host stores and the roots commit to)."""

    height: Height
    block_hash: Digest
    view: View  # the view (term) the block was proposed in
    tx_hashes: tuple[Digest, ...]
    results: tuple[TxResult, ...]
    writes: tuple[tuple[bytes, bytes | None], ...]
    results_root: Digest
    writes_root: Digest
    state_root: Digest  # root(height): carried by the header of height + 1

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.results if r.accepted)


@dataclass(frozen=True, slots=True)
class ExecutionState:
    """The state after block ``height`` (hash ``block_hash``) and its root."""

    height: Height
    block_hash: Digest
    root: Digest
    view: StateView


def genesis_state_root(genesis_hash: bytes) -> Digest:
    """``root(0)``: the state root before any block (the empty state of that genesis)."""
    return Digest(sha256(encode([STATE_TAG, genesis_hash])))


def result_leaf(tx_hash: bytes, result: TxResult) -> bytes:
    """The Merkle leaf data of one transaction's result."""
    return encode([tx_hash, result.code])


def compute_results_root(
    tx_hashes: tuple[Digest, ...] | list[Digest], results: tuple[TxResult, ...] | list[TxResult]
) -> Digest:
    """RFC 6962 root over the results' leaves, in block order."""
    return Digest(
        compute_root([result_leaf(h, r) for h, r in zip(tx_hashes, results, strict=True)])
    )


def compute_writes_root(writes: tuple[tuple[bytes, bytes | None], ...]) -> Digest:
    """Hash of the block's writes, sorted by key (``None``: deleted)."""
    items: list[Value] = [[key, value] for key, value in writes]
    return Digest(sha256(encode(items)))


def compute_state_root(
    prev_root: bytes, height: int, block_hash: bytes, results_root: bytes, writes_root: bytes
) -> Digest:
    """``root(height)`` from ``root(height - 1)`` and block ``height``'s execution."""
    return Digest(
        sha256(encode([STATE_TAG, prev_root, height, block_hash, results_root, writes_root]))
    )


INVALID = TxResult("invalid")


def _apply_one(
    application: Application, overlay: Overlay, tx: Transaction, context: BlockContext
) -> TxResult:
    """One transaction's result; its writes join ``overlay`` if it is accepted.

    A rule that breaks — any exception of the application but an environment
    fault (a state store that cannot be read), or writes beyond the size
    limits — is the rejection ``invalid`` and changes nothing: the same on
    every node, so one odd transaction can never halt the chain.
    """
    try:
        result, writes = application.apply_transaction(overlay, tx, context)
        if result.accepted:
            overlay.update(writes)
    except EnvironmentFault:
        raise
    except Exception:
        # A rule that breaks breaks the same way on every node: a rejection, not a halt.
        return INVALID
    return result


def apply_block(
    application: Application, state: ExecutionState, block: Block
) -> tuple[ExecutionState, BlockExecution]:
    """Execute ``block`` on ``state`` (the state after its parent): ``(new_state, execution)``.

    Raises :class:`ChainError` if ``block`` does not extend ``state``'s block.
    Pure: ``state`` is not changed; the new state's view is ``state.view``
    with the block's writes on top.
    """
    header = block.header
    if header.height != state.height + 1 or header.prev_hash != state.block_hash:
        raise ChainError(
            "executed block does not extend the executed state",
            expected=(state.height + 1, state.block_hash),
            found=(header.height, header.prev_hash),
        )
    context = BlockContext.of(header)
    overlay = Overlay(state.view)
    results: list[TxResult] = []
    for tx in block.transactions:
        results.append(_apply_one(application, overlay, tx, context))
    tx_hashes = tuple(tx.tx_hash for tx in block.transactions)
    final = tuple(results)
    changes = overlay.writes()
    results_root = compute_results_root(tx_hashes, final)
    writes_root = compute_writes_root(changes)
    root = compute_state_root(
        state.root, header.height, block.block_hash, results_root, writes_root
    )
    execution = BlockExecution(
        header.height,
        block.block_hash,
        header.view,
        tx_hashes,
        final,
        changes,
        results_root,
        writes_root,
        root,
    )
    return ExecutionState(header.height, block.block_hash, root, overlay), execution


def check_state_root(
    header: BlockHeader,
    expected: bytes,
    *,
    parent_view: int | None = None,
    term_start_root_unknown: bool = False,
) -> None:
    """``header.state_root`` is the root after the block below it (``expected``).

    The one exception (``term_start_root_unknown``, Raft): the first block of a
    later view than its parent's (``parent_view``) may carry ``ZERO_HASH`` — a
    new leader commits the blocks below it only through a block of its own
    term, so it cannot wait for their execution. The next block's root covers
    both.
    """
    root = header.state_root
    if root == expected:
        return
    if (
        root == ZERO_HASH
        and term_start_root_unknown
        and parent_view is not None
        and header.view > parent_view
    ):
        return
    if root == ZERO_HASH:
        raise ChainError(
            "block carries no state root (written before execution after ordering, or by a"
            " faulty proposer)",
            expected=expected,
            found=root,
            where=f"height {header.height}",
        )
    raise ChainError(
        "state root does not match the execution of the blocks below",
        expected=expected,
        found=root,
        where=f"height {header.height}",
    )


# --------------------------------------------------------------------------
# Executing a chain
# --------------------------------------------------------------------------


class StateStore(StateView, Protocol):
    """The host's mutable application state (memory, SQLite, …)."""

    def apply(self, execution: BlockExecution) -> None:
        """Make ``execution``'s writes the state (the host decides when they are durable)."""
        ...


class MemoryState:
    """A :class:`StateStore` in a dict (the simulator, tests, offline re-execution)."""

    __slots__ = ("_items", "executions")

    def __init__(self) -> None:
        self._items: dict[bytes, bytes] = {}
        self.executions = 0

    def get(self, key: bytes) -> bytes | None:
        return self._items.get(key)

    def apply(self, execution: BlockExecution) -> None:
        for key, value in execution.writes:
            if value is None:
                self._items.pop(key, None)
            else:
                self._items[key] = value
        self.executions += 1

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every entry, sorted by key."""
        return iter(sorted(self._items.items()))

    def __len__(self) -> int:
        return len(self._items)


class ChainExecutor:
    """Executes one chain block after block, checking each block's state root first.

    ``state`` is where execution stands: the genesis (height 0, the genesis
    hash, :func:`genesis_state_root`) or a host's stored position.
    ``parent_view`` is the view of the block at that height (``None`` at the
    genesis), needed for Raft's term-start exception.
    """

    __slots__ = ("_application", "_parent_view", "_state", "_store", "_term_start")

    def __init__(
        self,
        application: Application,
        store: StateStore,
        *,
        height: int,
        block_hash: bytes,
        root: bytes,
        parent_view: int | None = None,
        term_start_root_unknown: bool = False,
    ) -> None:
        self._application = application
        self._store = store
        self._state = ExecutionState(Height(height), Digest(block_hash), Digest(root), store)
        self._parent_view = parent_view
        self._term_start = term_start_root_unknown

    @classmethod
    def from_genesis(
        cls,
        application: Application,
        store: StateStore,
        genesis_hash: bytes,
        *,
        term_start_root_unknown: bool = False,
    ) -> ChainExecutor:
        return cls(
            application,
            store,
            height=0,
            block_hash=genesis_hash,
            root=genesis_state_root(genesis_hash),
            term_start_root_unknown=term_start_root_unknown,
        )

    @property
    def height(self) -> Height:
        return self._state.height

    @property
    def block_hash(self) -> Digest:
        return self._state.block_hash

    @property
    def root(self) -> Digest:
        """``root(height)``: what the next block's header must carry."""
        return self._state.root

    def check(self, block: Block) -> None:
        """Raise :class:`ChainError` unless ``block`` is the next block and carries the root."""
        header = block.header
        if header.height != self._state.height + 1 or header.prev_hash != self._state.block_hash:
            raise ChainError(
                "executed block does not extend the executed state",
                expected=(self._state.height + 1, self._state.block_hash),
                found=(header.height, header.prev_hash),
            )
        check_state_root(
            header,
            self._state.root,
            parent_view=self._parent_view,
            term_start_root_unknown=self._term_start,
        )

    def execute(self, block: Block) -> BlockExecution:
        """Check and execute the next block; its writes go to the store."""
        self.check(block)
        new_state, execution = apply_block(self._application, self._state, block)
        self._store.apply(execution)
        self._state = ExecutionState(
            new_state.height, new_state.block_hash, new_state.root, self._store
        )
        self._parent_view = block.header.view
        return execution
