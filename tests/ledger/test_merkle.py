"""Merkle trees: published vectors, broken proofs, and a naive reference implementation.

The reference below follows RFC 6962 §2.1 literally (recursive MTH, PATH and
SUBPROOF); the fast code in :mod:`belep.ledger.merkle` must agree with it for
every tree size Hypothesis draws up to 2000 leaves.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from belep.encoding import decode, encode
from belep.errors import MalformedProof, ProofMismatch, ValidationError
from belep.ledger.merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    InclusionProof,
    NodeRange,
    compute_range_hash,
    compute_root,
    compute_root_from_leaf_hashes,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    plan_consistency,
    plan_inclusion,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "merkle_rfc6962.json").read_text("utf-8")
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --------------------------------------------------------------------------
# Naive reference (RFC 6962 §2.1, recursive, over leaf hashes)
# --------------------------------------------------------------------------


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = ref_k(len(d))
    return ref_node(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = ref_k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_consistency(m: int, d: list[bytes]) -> list[bytes]:
    if m in (0, len(d)):
        return []
    return ref_subproof(m, d, True)


@cache
def leaf_hashes(n: int) -> list[bytes]:
    """Leaf hashes of a deterministic tree of ``n`` leaves (precomputed once)."""
    return [hash_leaf(i.to_bytes(4, "big")) for i in range(n)]


@cache
def prefix_roots(n: int) -> list[bytes]:
    """Roots of every prefix of the tree of 2000 leaves, by the reference."""
    return [ref_mth(leaf_hashes(n)[:size]) for size in range(n + 1)]


# --------------------------------------------------------------------------
# Published vectors
# --------------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert compute_root([]) == EMPTY_ROOT == h(VECTORS["empty_root"])


@pytest.mark.parametrize("size", range(1, 9))
def test_published_roots(size: int) -> None:
    assert compute_root(LEAVES[:size]) == ROOTS[size - 1]
    assert ref_mth([hash_leaf(x) for x in LEAVES[:size]]) == ROOTS[size - 1]


@pytest.mark.parametrize(
    "vec", VECTORS["inclusion"], ids=lambda v: f"leaf{v['leaf_index']}-of-{v['tree_size']}"
)
def test_published_inclusion_proofs(vec: dict[str, Any]) -> None:
    index, size = vec["leaf_index"], vec["tree_size"]
    path = tuple(h(x) for x in vec["path"])
    hashes = [hash_leaf(x) for x in LEAVES[:size]]
    assert inclusion_proof(hashes, index).path == path
    verify_inclusion(index, size, hash_leaf(LEAVES[index]), path, ROOTS[size - 1])


@pytest.mark.parametrize(
    "vec", VECTORS["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_published_consistency_proofs(vec: dict[str, Any]) -> None:
    size1, size2 = vec["size1"], vec["size2"]
    path = tuple(h(x) for x in vec["path"])
    hashes = [hash_leaf(x) for x in LEAVES[:size2]]
    assert consistency_proof(hashes, size1).path == path
    verify_consistency(size1, size2, ROOTS[size1 - 1], ROOTS[size2 - 1], path)


@pytest.mark.parametrize(
    "vec",
    VECTORS["invalid_inclusion"],
    ids=lambda v: f"leaf{v['leaf_index']}-of-{v['tree_size']}:{v['desc']}",
)
def test_broken_inclusion_proofs_are_rejected(vec: dict[str, Any]) -> None:
    path = [h(x) for x in vec["path"]]
    with pytest.raises((ProofMismatch, MalformedProof)):
        verify_inclusion(
            vec["leaf_index"], vec["tree_size"], hash_leaf(h(vec["leaf"])), path, h(vec["root"])
        )


@pytest.mark.parametrize(
    "vec",
    VECTORS["invalid_consistency"],
    ids=lambda v: f"{v['size1']}-to-{v['size2']}:{v['desc']}",
)
def test_broken_consistency_proofs_are_rejected(vec: dict[str, Any]) -> None:
    path = [h(x) for x in vec["path"]]
    with pytest.raises((ProofMismatch, MalformedProof)):
        verify_consistency(vec["size1"], vec["size2"], h(vec["root1"]), h(vec["root2"]), path)


# --------------------------------------------------------------------------
# Error types carry what was expected and what was found
# --------------------------------------------------------------------------


def test_mismatch_reports_expected_and_computed_root() -> None:
    hashes = [hash_leaf(x) for x in LEAVES]
    proof = inclusion_proof(hashes, 3)
    wrong_root = bytes(32)
    with pytest.raises(ProofMismatch) as info:
        proof.verify(hashes[3], wrong_root)
    assert info.value.expected == wrong_root
    assert info.value.found == ROOTS[7]


def test_wrong_length_is_malformed_not_mismatch() -> None:
    hashes = [hash_leaf(x) for x in LEAVES]
    proof = inclusion_proof(hashes, 3)
    with pytest.raises(MalformedProof) as info:
        verify_inclusion(3, 8, hashes[3], proof.path[:-1], ROOTS[7])
    assert (info.value.expected, info.value.found) == (3, 2)
    with pytest.raises(MalformedProof):
        verify_inclusion(3, 8, hashes[3], [*proof.path[:-1], b"short"], ROOTS[7])
    with pytest.raises(MalformedProof):
        verify_inclusion(8, 8, hashes[3], proof.path, ROOTS[7])
    with pytest.raises(MalformedProof):
        verify_inclusion(3, 8, b"not a hash", proof.path, ROOTS[7])


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "path", "error"),
    [
        pytest.param(0, 0, EMPTY_ROOT, EMPTY_ROOT, [], None, id="empty-to-empty"),
        pytest.param(0, 5, EMPTY_ROOT, ROOTS[4], [], None, id="empty-to-any"),
        pytest.param(0, 5, ROOTS[0], ROOTS[4], [], ProofMismatch, id="empty-tree-wrong-root"),
        pytest.param(0, 0, EMPTY_ROOT, ROOTS[0], [], ProofMismatch, id="empty-vs-nonempty"),
        pytest.param(3, 3, ROOTS[2], ROOTS[2], [], None, id="same-size"),
        pytest.param(3, 3, ROOTS[2], ROOTS[3], [], ProofMismatch, id="same-size-other-root"),
        pytest.param(3, 3, ROOTS[2], ROOTS[2], [EMPTY_ROOT], MalformedProof, id="same-size-nonempty"),
        pytest.param(0, 1, EMPTY_ROOT, ROOTS[0], [EMPTY_ROOT], MalformedProof, id="empty-nonempty-proof"),
        pytest.param(4, 3, ROOTS[3], ROOTS[2], [], MalformedProof, id="shrinking-tree"),
        pytest.param(1, 2, ROOTS[0], ROOTS[1], [], MalformedProof, id="missing-proof"),
        pytest.param(1, 2, ROOTS[0][:5], ROOTS[1], [], MalformedProof, id="short-root"),
    ],
)  # fmt: skip
def test_consistency_edge_cases(
    size1: int,
    size2: int,
    root1: bytes,
    root2: bytes,
    path: list[bytes],
    error: type[ValidationError] | None,
) -> None:
    if error is None:
        verify_consistency(size1, size2, root1, root2, path)
    else:
        with pytest.raises(error):
            verify_consistency(size1, size2, root1, root2, path)


def test_proof_records_round_trip_through_canonical_encoding() -> None:
    hashes = [hash_leaf(x) for x in LEAVES]
    inc = inclusion_proof(hashes, 5)
    con = consistency_proof(hashes, 6)
    assert InclusionProof.from_wire(decode(encode(inc.to_wire()))) == inc
    assert ConsistencyProof.from_wire(decode(encode(con.to_wire()))) == con
    con.verify(ROOTS[5], ROOTS[7])
    assert inc.root_from(hashes[5]) == ROOTS[7]


def test_plans_name_leaf_ranges() -> None:
    assert plan_inclusion(5, 8) == (NodeRange(4, 5), NodeRange(6, 8), NodeRange(0, 4))
    assert plan_consistency(6, 8) == (NodeRange(4, 6), NodeRange(6, 8), NodeRange(0, 4))
    assert plan_consistency(4, 8) == (NodeRange(4, 8),)
    with pytest.raises(MalformedProof):
        compute_range_hash(leaf_hashes(4), NodeRange(2, 5))


# --------------------------------------------------------------------------
# Against the reference, for many tree sizes
# --------------------------------------------------------------------------

MAX_SIZE = 2000


@settings(max_examples=120, deadline=None)
@given(size=st.integers(0, MAX_SIZE), data=st.data())
def test_matches_reference(size: int, data: st.DataObject) -> None:
    hashes = leaf_hashes(MAX_SIZE)[:size]
    roots = prefix_roots(MAX_SIZE)
    assert compute_root_from_leaf_hashes(hashes) == roots[size]
    if size:
        index = data.draw(st.integers(0, size - 1), label="index")
        proof = inclusion_proof(hashes, index)
        assert list(proof.path) == ref_path(index, hashes)
        assert root_from_inclusion_proof(index, size, hashes[index], proof.path) == roots[size]
        if size > 1:  # the same proof must not verify another leaf
            other = (index + 1) % size
            with pytest.raises((ProofMismatch, MalformedProof)):
                verify_inclusion(other, size, hashes[other], proof.path, roots[size])
    size1 = data.draw(st.integers(0, size), label="size1")
    cproof = consistency_proof(hashes, size1)
    assert list(cproof.path) == ref_consistency(size1, hashes)
    verify_consistency(size1, size, roots[size1], roots[size], cproof.path)
    if 0 < size1 < size:
        with pytest.raises(ProofMismatch):
            verify_consistency(size1, size, roots[size1 - 1], roots[size], cproof.path)
        with pytest.raises(ProofMismatch):
            verify_consistency(size1, size, roots[size1], roots[size - 1], cproof.path)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, MAX_SIZE), data=st.data())
def test_any_flipped_bit_in_a_proof_is_caught(size: int, data: st.DataObject) -> None:
    hashes = leaf_hashes(MAX_SIZE)[:size]
    roots = prefix_roots(MAX_SIZE)
    index = data.draw(st.integers(0, size - 1), label="index")
    path = list(inclusion_proof(hashes, index).path)
    if path:
        node = data.draw(st.integers(0, len(path) - 1), label="node")
        bit = data.draw(st.integers(0, 255), label="bit")
        corrupted = bytearray(path[node])
        corrupted[bit // 8] ^= 1 << (bit % 8)
        path[node] = bytes(corrupted)
        with pytest.raises(ProofMismatch):
            verify_inclusion(index, size, hashes[index], path, roots[size])
