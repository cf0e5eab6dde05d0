"""Byzantine behaviour: what a faulty replica does to the messages it sends.

A Byzantine replica runs the real protocol code (so it is in the right view,
at the right height, with the right keys), and :class:`Adversary` rewrites
its outgoing messages, per destination:

* ``withhold`` — drop most messages to a fixed victim subset of peers (a
  third, or the role's ``targets``);
* ``forge`` — a vote whose signature is over the wrong data (re-signed with
  its own key over other bytes), a corrupted signature, or one that claims
  another member as its signer;
* ``tamper`` — a block whose transactions no longer match its header, a
  header changed under its signature, a certificate with a signature dropped
  or duplicated, a hash, view or height shifted by one;
* ``equivocate`` — every block it sends to one half of its peers (or to the
  role's ``targets``) is replaced
  by a different, well-formed block of the same height, parent and view
  (the same replacement for every recipient in that half), and so are the
  hashes in its votes for such a block, so that half sees a consistent
  alternative history (re-signed with the replica's own key when the
  message can be signed);
* ``replay`` — old messages (its own and those it received, possibly signed
  by others) are sent again later to random peers.

Twins (two copies of one replica with the same keys) are an engine feature,
see :mod:`belep.sim.engine`; they equivocate with genuine signatures.

Messages are rewritten generically, knowing only the shape of frozen
dataclasses: fields are found by type (:class:`Block`,
:class:`QuorumCertificate`, :class:`VoteStatement`, bytes, ints, node ids) and
by name (``signature``/``sig``, ``*hash``/``digest``, ``view``/``height``/
``term``/``seq``, ``voter``/``signer``/``replica``…), and replaced with
:func:`dataclasses.replace`. A protocol may register a precise hook in
:data:`ADVERSARY_HOOKS` (``hook(adversary, destination, message) -> messages``)
that is used instead for ``equivocate``.

All draws come from the engine's ``random.Random``. No I/O.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from belep.consensus.types import Block, NodeId, QuorumCertificate, Transaction
from belep.crypto import PrivateKey
from belep.ledger.block import Digest, VoteStatement, make_block
from belep.sim.workload import make_sim_transaction

__all__ = ["ADVERSARY_HOOKS", "Adversary", "AdversaryHook"]

AdversaryHook = Callable[["Adversary", NodeId, object], list[object]]
#: Per-protocol message rewriters for equivocation, by protocol name.
ADVERSARY_HOOKS: dict[str, AdversaryHook] = {}

_SIG_NAMES = ("signature", "sig", "sigs", "mac")
_SIGNER_NAMES = frozenset(
    {
        "voter",
        "signer",
        "replica",
        "sender",
        "node",
        "node_id",
        "author",
        "leader",
        "primary",
        "candidate",
        "proposer",
        "source",
        "origin",
        "replica_id",
        "leader_id",
        "candidate_id",
    }
)
_NUMBER_NAMES = frozenset(
    {
        "view",
        "height",
        "term",
        "seq",
        "sequence",
        "index",
        "epoch",
        "commit",
        "new_view",
        "last_log_index",
        "last_log_term",
        "prev_log_index",
        "prev_log_term",
        "leader_commit",
        "commit_index",
        "checkpoint",
        "low",
        "high",
        "from_height",
    }
)
_MAX_DEPTH = 3
_REPLAY_MEMORY = 256

Path = tuple[tuple[str, int | None], ...]  # (field name, index into a tuple or None)


class Adversary:
    """Rewrites the outgoing messages of one Byzantine replica."""

    __slots__ = (
        "_alt_blocks",
        "_hook",
        "_memory",
        "_rng",
        "_seq",
        "behaviours",
        "key",
        "members",
        "node",
        "other_half",
        "victims",
    )

    def __init__(
        self,
        node: NodeId,
        behaviours: tuple[str, ...],
        members: tuple[NodeId, ...],
        key: PrivateKey,
        rng: random.Random,
        hook: AdversaryHook | None = None,
        targets: tuple[NodeId, ...] = (),
    ) -> None:
        self.node = node
        self.behaviours = frozenset(behaviours)
        self.members = members
        self.key = key
        self._rng = rng
        self._hook = hook
        peers = [m for m in members if m != node]
        rng.shuffle(peers)
        half = max(1, len(peers) // 2)
        self.other_half = frozenset(targets or peers[:half])
        self.victims = frozenset(targets or peers[: max(1, len(peers) // 3)])
        self._alt_blocks: dict[Digest, Block] = {}
        self._memory: list[tuple[NodeId, object]] = []
        self._seq = 0

    # -- observation ----------------------------------------------------------

    def observe(self, sender: NodeId, message: object) -> None:
        """Remember a message for later replay."""
        if "replay" not in self.behaviours:
            return
        memory = self._memory
        if len(memory) < _REPLAY_MEMORY:
            memory.append((sender, message))
        else:
            memory[self._rng.randrange(_REPLAY_MEMORY)] = (sender, message)

    # -- rewriting ------------------------------------------------------------

    def rewrite(self, dst: NodeId, message: object) -> list[object]:
        """The messages actually sent to ``dst`` instead of ``message``."""
        b = self.behaviours
        rng = self._rng
        if "withhold" in b and dst in self.victims and rng.random() < 0.9:
            return []
        out = message
        if "equivocate" in b and dst in self.other_half:
            if self._hook is not None:
                return self._hook(self, dst, message)
            out = self._equivocate(out)
        if "forge" in b and rng.random() < 0.3:
            out = self._mutate(out, _forge_target)
        if "tamper" in b and rng.random() < 0.3:
            out = self._mutate(out, _tamper_target)
        result = [out]
        if "replay" in b:
            self.observe(self.node, message)
            if self._memory and rng.random() < 0.15:
                result.append(self._memory[rng.randrange(len(self._memory))][1])
        return result

    def _equivocate(self, message: object) -> object:
        """Swap every block for its alternative, and every hash naming a swapped block."""
        out = message
        for path, block in [(p, v) for p, v in _leaves(message, ()) if isinstance(v, Block)]:
            alt = self._alt_blocks.get(block.block_hash)
            if alt is None:
                alt = self._alternative(block)
                self._alt_blocks[block.block_hash] = alt
            out = _replace_at(out, path, alt)
        for original, alt in self._alt_blocks.items():  # votes for a block it equivocated on
            out = _replace_values(out, original, alt.block_hash)
        return out if out is message else self._resign(out)

    def _alternative(self, block: Block) -> Block:
        """A different, well-formed block at the same place in the chain."""
        self._seq += 1
        tx = make_sim_transaction(0xFFFF, self._seq, 200, self._rng)
        h = block.header
        return make_block(
            domain=h.domain,
            height=h.height,
            epoch=h.epoch,
            view=h.view,
            prev_hash=h.prev_hash,
            transactions=(tx, *block.transactions[1:]),
            timestamp_ms=h.timestamp_ms,
            proposer=h.proposer,
            state_root=h.state_root,
        )

    def _resign(self, message: object) -> object:
        """Re-sign a rewritten message with this replica's own key, if it knows how."""
        signing = getattr(message, "signing_bytes", None)
        if not callable(signing) or not dataclasses.is_dataclass(message):
            return message
        names = {f.name for f in dataclasses.fields(message)}
        for name in ("signature", "sig"):
            if name in names:
                try:
                    data = signing()
                    if isinstance(data, bytes):
                        return dataclasses.replace(message, **{name: self.key.sign(data)})  # type: ignore[type-var]
                except Exception:
                    return message
        return message

    def _mutate(self, message: object, pick: Callable[[str, object], bool]) -> object:
        targets = [(p, v) for p, v in _leaves(message, ()) if p and pick(p[-1][0], v)]
        if not targets:
            return message
        path, value = targets[self._rng.randrange(len(targets))]
        try:
            return _replace_at(message, path, self._mutated_value(path[-1][0], value))
        except Exception:
            return message

    def _mutated_value(self, name: str, value: object) -> object:
        rng = self._rng
        if isinstance(value, Block):
            return self.tampered_block(value)
        if isinstance(value, QuorumCertificate):
            sigs = value.signatures
            if len(sigs) > 1 and rng.random() < 0.5:
                return QuorumCertificate(value.statement, sigs[:-1])
            if sigs:
                return QuorumCertificate(value.statement, (*sigs, sigs[0]))
            return value
        if isinstance(value, VoteStatement):
            return dataclasses.replace(value, block_hash=Digest(rng.randbytes(32)))
        if isinstance(value, bytes):
            if name.lower() in _SIG_NAMES or "sig" in name.lower():
                if rng.random() < 0.5:  # a real signature, over the wrong data
                    return self.key.sign(b"wrong data " + rng.randbytes(8))
                return _flip(value, rng)
            if len(value) == 32:
                return rng.randbytes(32)
            return _flip(value, rng)
        if isinstance(value, bool):
            return not value
        if isinstance(value, int):
            return max(0, value + rng.choice((-1, 1)))
        if isinstance(value, str):
            others = [m for m in self.members if m != value]
            return rng.choice(others) if others else value
        return value

    def tampered_block(self, block: Block) -> Block:
        """The same block with its transactions or header changed (its hash may not match)."""
        rng = self._rng
        choice = rng.randrange(3)
        if choice == 0 and block.transactions:  # transactions changed under the header
            txs = list(block.transactions)
            i = rng.randrange(len(txs))
            txs[i] = Transaction(_flip(txs[i].payload, rng))
            return Block(block.header, tuple(txs))
        if choice == 1:  # an invalid transaction added under the header
            return Block(block.header, (*block.transactions, Transaction(b"tampered")))
        header = dataclasses.replace(block.header, timestamp_ms=block.header.timestamp_ms + 1)
        return Block(header, block.transactions)


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return b"\x01"
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _forge_target(name: str, value: object) -> bool:
    lname = name.lower()
    if isinstance(value, bytes):
        return lname in _SIG_NAMES or "sig" in lname
    if isinstance(value, str) and not isinstance(value, bool):
        return lname in _SIGNER_NAMES
    return isinstance(value, VoteStatement)


def _tamper_target(name: str, value: object) -> bool:
    if isinstance(value, Block | QuorumCertificate):
        return True
    lname = name.lower()
    if isinstance(value, bytes):
        return "hash" in lname or "digest" in lname
    if isinstance(value, int) and not isinstance(value, bool):
        return lname in _NUMBER_NAMES
    return False


def _leaves(value: object, path: Path, depth: int = 0) -> list[tuple[Path, object]]:
    """Every (path, value) below a dataclass message, stopping at blocks and certificates."""
    out: list[tuple[Path, object]] = []
    if depth > _MAX_DEPTH or not dataclasses.is_dataclass(value) or isinstance(value, type):
        return out
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        here = (*path, (f.name, None))
        out.append((here, v))
        if isinstance(v, Block | QuorumCertificate | VoteStatement):
            continue
        if dataclasses.is_dataclass(v):
            out.extend(_leaves(v, here, depth + 1))
        elif isinstance(v, tuple) and v:
            i = len(v) - 1 if len(v) == 1 else 0
            item = v[i]
            slot = (*path, (f.name, i))
            if isinstance(item, Block | QuorumCertificate):
                out.append((slot, item))
            elif dataclasses.is_dataclass(item):
                out.extend(_leaves(item, slot, depth + 1))
    return out


def _replace_at(value: Any, path: Path, new: object) -> Any:
    if not path:
        return new
    (name, index), rest = path[0], path[1:]
    current = getattr(value, name)
    if index is None:
        return dataclasses.replace(value, **{name: _replace_at(current, rest, new)})
    items = list(current)
    items[index] = _replace_at(items[index], rest, new)
    return dataclasses.replace(value, **{name: tuple(items)})


def _replace_values(value: Any, old: bytes, new: bytes, depth: int = 0) -> Any:
    """Replace every bytes field equal to ``old`` (a block hash) by ``new``."""
    if depth > _MAX_DEPTH or not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    if isinstance(value, Block | QuorumCertificate):
        return value
    changes: dict[str, object] = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if isinstance(v, bytes) and v == old:
            changes[f.name] = new
        elif dataclasses.is_dataclass(v) and not isinstance(v, Block | QuorumCertificate):
            nv = _replace_values(v, old, new, depth + 1)
            if nv is not v:
                changes[f.name] = nv
    return dataclasses.replace(value, **changes) if changes else value
