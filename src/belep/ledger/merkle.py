"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``,
the empty tree hashes to ``SHA-256("")``. A tree of ``n`` leaves splits at the
largest power of two smaller than ``n`` (RFC 9162 §2.1.1).

Proofs are made in three steps, as in transparency-dev/merkle:

1. *plan* — :func:`plan_inclusion` / :func:`plan_consistency` name the proof
   nodes, each as the :class:`NodeRange` of leaves ``[begin, end)`` whose
   subtree hash it is (pure arithmetic on indices and sizes);
2. *fetch* — the caller hashes those ranges from its own storage
   (:func:`compute_range_hash` does it from a list of leaf hashes);
3. *verify* — :func:`verify_inclusion` / :func:`verify_consistency` rehash
   a proof (RFC 9162 §2.1.3.2 and §2.1.4.2) and raise
   :class:`~belep.errors.MalformedProof` for a proof of the wrong shape
   (length, hash sizes, indices out of range) or
   :class:`~belep.errors.ProofMismatch` carrying the expected and the
   computed root.

Invariants: a proof produced by :func:`inclusion_proof` or
:func:`consistency_proof` always verifies; its length is exactly the length
the plan gives for its sizes, and the verifiers accept no other length.

This module does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from belep.encoding import Value, expect_bytes, expect_fields, expect_int, expect_list, expect_map
from belep.errors import MalformedProof, ProofMismatch

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash of ``data``."""
    return _sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return _sha256(NODE_PREFIX + left + right).digest()


def compute_root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves have the given hashes (iterative, O(n))."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Fold complete power-of-two subtrees from the left, as in a compact range.
    stack: list[tuple[int, bytes]] = []  # (subtree size, hash)
    for leaf in leaf_hashes:
        size, node = 1, leaf
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            node = hash_children(left, node)
            size += left_size
        stack.append((size, node))
    _, root = stack.pop()
    while stack:
        _, left = stack.pop()
        root = hash_children(left, root)
    return root


def compute_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over the raw leaf data ``leaves``."""
    return compute_root_from_leaf_hashes([hash_leaf(leaf) for leaf in leaves])


# --------------------------------------------------------------------------
# Planning: which subtrees make up a proof
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRange:
    """A proof node: the subtree hash over leaves ``[begin, end)`` (``MTH(D[begin:end])``)."""

    begin: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.begin


def split_point(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def plan_inclusion(index: int, size: int) -> tuple[NodeRange, ...]:
    """Nodes of the inclusion proof of leaf ``index`` in a tree of ``size`` leaves.

    Ordered from the leaf upwards (RFC 6962 ``PATH``). Raises
    :class:`MalformedProof` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise MalformedProof(
            "leaf index outside the tree", expected=f"0 <= index < {size}", found=index
        )
    nodes: list[NodeRange] = []
    begin, end = 0, size
    while end - begin > 1:
        k = split_point(end - begin)
        if index < begin + k:
            nodes.append(NodeRange(begin + k, end))
            end = begin + k
        else:
            nodes.append(NodeRange(begin, begin + k))
            begin += k
    nodes.reverse()
    return tuple(nodes)


def plan_consistency(size1: int, size2: int) -> tuple[NodeRange, ...]:
    """Nodes of the consistency proof from a tree of ``size1`` to one of ``size2`` leaves.

    Ordered as RFC 6962 ``SUBPROOF`` emits them (deepest first). Empty when
    ``size1`` is 0 or equals ``size2``. Raises :class:`MalformedProof` when
    ``size1 > size2`` or a size is negative.
    """
    if size1 < 0 or size2 < size1:
        raise MalformedProof(
            "consistency proof sizes out of order",
            expected="0 <= size1 <= size2",
            found=(size1, size2),
        )
    if size1 == 0 or size1 == size2:
        return ()
    nodes: list[NodeRange] = []
    begin, end, m, complete = 0, size2, size1, True
    while m != end - begin:
        k = split_point(end - begin)
        if m <= k:
            nodes.append(NodeRange(begin + k, end))
            end = begin + k
        else:
            nodes.append(NodeRange(begin, begin + k))
            begin, m, complete = begin + k, m - k, False
    if not complete:
        nodes.append(NodeRange(begin, end))
    nodes.reverse()
    return tuple(nodes)


def compute_range_hash(leaf_hashes: Sequence[bytes], node: NodeRange) -> bytes:
    """Subtree hash of ``node`` from the tree's leaf hashes."""
    if not 0 <= node.begin < node.end <= len(leaf_hashes):
        raise MalformedProof(
            "node range outside the tree",
            expected=f"0 <= begin < end <= {len(leaf_hashes)}",
            found=(node.begin, node.end),
        )
    return compute_root_from_leaf_hashes(leaf_hashes[node.begin : node.end])


# --------------------------------------------------------------------------
# Proof records
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Proof that leaf ``leaf_index`` is in the tree of ``tree_size`` leaves."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def root_from(self, leaf_hash: bytes) -> bytes:
        """The root this proof yields for ``leaf_hash`` (see :func:`root_from_inclusion_proof`)."""
        return root_from_inclusion_proof(self.leaf_index, self.tree_size, leaf_hash, self.path)

    def verify(self, leaf_hash: bytes, root: bytes) -> None:
        """Raise unless this proof binds ``leaf_hash`` to ``root``."""
        verify_inclusion(self.leaf_index, self.tree_size, leaf_hash, self.path, root)

    def to_wire(self) -> dict[str, Value]:
        return {"index": self.leaf_index, "size": self.tree_size, "path": list(self.path)}

    @classmethod
    def from_wire(cls, value: Value) -> InclusionProof:
        m = expect_map(value, "inclusion proof")
        expect_fields(m, "inclusion proof", frozenset({"index", "size", "path"}))
        path = tuple(
            expect_bytes(item, "proof node", size=HASH_SIZE)
            for item in expect_list(m["path"], "path")
        )
        return cls(
            leaf_index=expect_int(m["index"], "index", minimum=0),
            tree_size=expect_int(m["size"], "size", minimum=0),
            path=path,
        )


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """Proof that the tree of ``size2`` leaves extends the tree of its first ``size1``."""

    size1: int
    size2: int
    path: tuple[bytes, ...]

    def verify(self, root1: bytes, root2: bytes) -> None:
        """Raise unless this proof shows ``root2``'s tree extends ``root1``'s."""
        verify_consistency(self.size1, self.size2, root1, root2, self.path)

    def to_wire(self) -> dict[str, Value]:
        return {"size1": self.size1, "size2": self.size2, "path": list(self.path)}

    @classmethod
    def from_wire(cls, value: Value) -> ConsistencyProof:
        m = expect_map(value, "consistency proof")
        expect_fields(m, "consistency proof", frozenset({"size1", "size2", "path"}))
        path = tuple(
            expect_bytes(item, "proof node", size=HASH_SIZE)
            for item in expect_list(m["path"], "path")
        )
        return cls(
            size1=expect_int(m["size1"], "size1", minimum=0),
            size2=expect_int(m["size2"], "size2", minimum=0),
            path=path,
        )


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> InclusionProof:
    """Inclusion proof of leaf ``index`` in the tree over ``leaf_hashes``."""
    size = len(leaf_hashes)
    plan = plan_inclusion(index, size)
    return InclusionProof(index, size, tuple(compute_range_hash(leaf_hashes, n) for n in plan))


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> ConsistencyProof:
    """Consistency proof from the first ``size1`` leaves to all of ``leaf_hashes``."""
    size2 = len(leaf_hashes)
    plan = plan_consistency(size1, size2)
    return ConsistencyProof(size1, size2, tuple(compute_range_hash(leaf_hashes, n) for n in plan))


# --------------------------------------------------------------------------
# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2)
# --------------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise MalformedProof(f"{what} has the wrong length", expected=HASH_SIZE, found=len(value))


def _check_path(path: Sequence[bytes], expected_length: int) -> None:
    if len(path) != expected_length:
        raise MalformedProof(
            "proof has the wrong number of nodes", expected=expected_length, found=len(path)
        )
    for i, node in enumerate(path):
        if len(node) != HASH_SIZE:
            raise MalformedProof(
                "proof node has the wrong length",
                expected=HASH_SIZE,
                found=len(node),
                where=f"proof[{i}]",
            )


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, path: Sequence[bytes]
) -> bytes:
    """The root that ``path`` yields for ``leaf_hash`` at ``index`` in a tree of ``size``.

    Raises :class:`MalformedProof` if the index is outside the tree or the
    proof does not have exactly the shape its sizes require.
    """
    plan = plan_inclusion(index, size)
    _check_hash(leaf_hash, "leaf hash")
    _check_path(path, len(plan))
    fn, sn = index, size - 1
    node = leaf_hash
    for sibling in path:
        if fn & 1 or fn == sn:
            node = hash_children(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = hash_children(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # unreachable when the length check passed; kept as a guard
        raise MalformedProof("proof too short for the tree size", where="inclusion proof")
    return node


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Check that ``path`` proves ``leaf_hash`` at ``index`` in the tree with ``root``."""
    _check_hash(root, "root")
    computed = root_from_inclusion_proof(index, size, leaf_hash, path)
    if computed != root:
        raise ProofMismatch(
            "inclusion proof does not lead to the expected root",
            expected=root,
            found=computed,
            where=f"leaf {index} of {size}",
        )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, path: Sequence[bytes]
) -> None:
    """Check that ``path`` proves the tree (``size2``, ``root2``) extends (``size1``, ``root1``).

    Stricter than RFC 9162 at the edges: an empty tree's root must be
    :data:`EMPTY_ROOT`, and equal sizes need equal roots and an empty proof.
    """
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    plan = plan_consistency(size1, size2)
    _check_path(path, len(plan))
    if size1 == 0:
        if root1 != EMPTY_ROOT:
            raise ProofMismatch("root of the empty tree", expected=EMPTY_ROOT, found=root1)
        if size2 == 0 and root2 != EMPTY_ROOT:
            raise ProofMismatch("root of the empty tree", expected=EMPTY_ROOT, found=root2)
        return
    if size1 == size2:
        if root1 != root2:
            raise ProofMismatch(
                "trees of equal size have different roots", expected=root1, found=root2
            )
        return
    nodes = list(path)
    if size1 & (size1 - 1) == 0:  # the old tree is a complete subtree: its root is implied
        nodes.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = nodes[0]
    for node in nodes[1:]:
        if sn == 0:  # unreachable when the length check passed; kept as a guard
            raise MalformedProof("proof too long for the tree sizes", where="consistency proof")
        if fn & 1 or fn == sn:
            first = hash_children(node, first)
            second = hash_children(node, second)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = hash_children(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # unreachable when the length check passed; kept as a guard
        raise MalformedProof("proof too short for the tree sizes", where="consistency proof")
    if first != root1:
        raise ProofMismatch(
            "consistency proof does not lead to the first root",
            expected=root1,
            found=first,
            where=f"size {size1}",
        )
    if second != root2:
        raise ProofMismatch(
            "consistency proof does not lead to the second root",
            expected=root2,
            found=second,
            where=f"size {size2}",
        )
