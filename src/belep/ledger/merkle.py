"""RFC 6962 / RFC 9162 Merkle tree hashing.

Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``,
the empty tree hashes to ``SHA-256("")``. A tree of ``n`` leaves splits at the
largest power of two smaller than ``n`` (RFC 9162 §2.1.1).

This module does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash of ``data``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


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
