"""Regenerate ``merkle_rfc6962.json`` (run: ``python tests/vectors/gen_merkle_vectors.py``).

The valid vectors are the published RFC 6962 test values as they appear in
transparency-dev/merkle ``proof/verify_test.go`` (the same values as the
certificate-transparency reference tests): the 8 leaves, the roots of the
trees of sizes 1..8, and inclusion/consistency proofs. This script restates
them (converted to 0-based leaf indices) and derives the deliberately broken
proofs by the corruption rules of that repository's ``testdata`` (wrong
index, wrong size, wrong leaf or root, garbage before or after, one flipped
bit per node, a removed or inserted node). It does not import BELEP, so the
vectors never depend on the code they test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SOURCE = (
    "transparency-dev/merkle proof/verify_test.go (Apache-2.0): RFC 6962 test leaves, "
    "roots and proofs, as in the certificate-transparency reference tests"
)

LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
          "606162636465666768696a6b6c6d6e6f"]  # fmt: skip

ROOTS = [  # root of the tree over the first i+1 leaves
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SOME_HASH = "abacaba000000000000000000000000000000000000000000060061e00123456"

# (0-based leaf index, tree size, path); the published table uses 1-based leaves.
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip

CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip


def flip(node: str, mask: int) -> str:
    raw = bytearray(bytes.fromhex(node))
    raw[0] ^= mask
    return raw.hex()


def broken_inclusion(index: int, size: int, path: list[str]) -> list[dict[str, Any]]:
    leaf = LEAVES[index]
    root = ROOTS[size - 1]
    wrong_leaf = b"WrongLeaf".hex()
    cases: list[tuple[str, int, int, str, str, list[str]]] = [
        ("index - 1", index - 1, size, leaf, root, path),
        ("index + 1", index + 1, size, leaf, root, path),
        ("index ^ 2", index ^ 2, size, leaf, root, path),
        ("size * 2", index, size * 2, leaf, root, path),
        ("size / 2", index, size // 2, leaf, root, path),
        ("wrong leaf", index, size, wrong_leaf, root, path),
        ("empty root", index, size, leaf, EMPTY_ROOT, path),
        ("random root", index, size, leaf, SOME_HASH, path),
        ("trailing garbage", index, size, leaf, root, [*path, ""]),
        ("trailing root", index, size, leaf, root, [*path, root]),
        ("preceding garbage", index, size, leaf, root, ["", *path]),
        ("preceding root", index, size, leaf, root, [root, *path]),
    ]
    for i in range(len(path)):
        bad = list(path)
        bad[i] = flip(bad[i], 8)
        cases.append((f"proof[{i}] bit 3 flipped", index, size, leaf, root, bad))
    if path:
        cases.append(("removed node", index, size, leaf, root, path[:-1]))
    if len(path) > 1:
        cases.append(("inserted node", index, size, leaf, root, [path[0], SOME_HASH, *path[1:]]))
    return [
        {"desc": d, "leaf_index": i, "tree_size": s, "leaf": lf, "root": r, "path": p}
        for d, i, s, lf, r, p in cases
        if i >= 0
    ]


def broken_consistency(size1: int, size2: int, path: list[str]) -> list[dict[str, Any]]:
    root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
    wrong = SOME_HASH
    cases: list[tuple[str, int, int, str, str, list[str]]] = [
        ("size1 - 1", size1 - 1, size2, root1, root2, path),
        ("size1 + 1", size1 + 1, size2, root1, root2, path),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, path),
        ("size2 * 2", size1, size2 * 2, root1, root2, path),
        ("size2 / 2", size1, size2 // 2, root1, root2, path),
        ("wrong root1", size1, size2, wrong, root2, path),
        ("wrong root2", size1, size2, root1, wrong, path),
        ("swapped roots", size1, size2, root2, root1, path),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*path, ""]),
        ("trailing root1", size1, size2, root1, root2, [*path, root1]),
        ("trailing root2", size1, size2, root1, root2, [*path, root2]),
        ("preceding garbage", size1, size2, root1, root2, ["", *path]),
        ("preceding root1", size1, size2, root1, root2, [root1, *path]),
        ("preceding root2", size1, size2, root1, root2, [root2, *path]),
        ("preceding proof[0]", size1, size2, root1, root2, [path[0], *path]),
        ("truncated proof", size1, size2, root1, root2, path[:-1]),
    ]
    for i in range(len(path)):
        bad = list(path)
        bad[i] = flip(bad[i], 16)
        cases.append((f"proof[{i}] bit 4 flipped", size1, size2, root1, root2, bad))
    return [
        {"desc": d, "size1": s1, "size2": s2, "root1": r1, "root2": r2, "path": p}
        for d, s1, s2, r1, r2, p in cases
    ]


def build() -> dict[str, Any]:
    return {
        "source": SOURCE,
        "hash": "sha256; leaf = H(0x00 || leaf), node = H(0x01 || left || right)",
        "empty_root": EMPTY_ROOT,
        "leaves": LEAVES,
        "roots": ROOTS,
        "inclusion": [{"leaf_index": i, "tree_size": s, "path": p} for i, s, p in INCLUSION],
        "consistency": [{"size1": a, "size2": b, "path": p} for a, b, p in CONSISTENCY],
        "invalid_inclusion": [case for i, s, p in INCLUSION for case in broken_inclusion(i, s, p)],
        "invalid_consistency": [
            case for a, b, p in CONSISTENCY if p for case in broken_consistency(a, b, p)
        ],
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("merkle_rfc6962.json")
    out.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
