"""Genesis signatures: every voter and observer of a domain signs its genesis hash.

Owns the file ``genesis.sigs.json`` that sits beside ``genesis.json`` in a
domain directory, and the rule a node applies at start
(:func:`check_genesis_signatures`): the file names the genesis hash of the
genesis beside it, and **every** voter and observer listed in that genesis
has a valid signature over :func:`genesis_signing_bytes`. A genesis that one
member did not sign is not that member's network; unanimity is the rule
because a genesis only ever comes from ``belep init`` (or a ceremony where
each operator signs with ``belep``'s signing function) and is never changed
afterwards.

The signed statement is the canonical encoding of
``["belep-genesis-sig-v1", <genesis hash>]``, so a genesis signature can
never be confused with a vote or a transaction signature.

Only :func:`read_genesis_signatures` and :func:`write_genesis_signatures` do
I/O (one small JSON file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from belep.crypto import PrivateKey
from belep.encoding import encode
from belep.errors import ConfigError, InvalidSignature, StorageError, ValidationError
from belep.ledger.block import Digest, NodeId
from belep.ledger.genesis import Genesis

__all__ = [
    "GENESIS_SIGS_FILE",
    "check_genesis_signatures",
    "genesis_signing_bytes",
    "read_genesis_signatures",
    "sign_genesis",
    "write_genesis_signatures",
]

GENESIS_SIGS_FILE = "genesis.sigs.json"
SIG_TAG = "belep-genesis-sig-v1"


def genesis_signing_bytes(genesis_hash: bytes) -> bytes:
    """What a member signs to accept a genesis."""
    return encode([SIG_TAG, genesis_hash])


def sign_genesis(genesis: Genesis, keys: Mapping[NodeId, PrivateKey]) -> dict[NodeId, bytes]:
    """Signatures of ``keys`` (node id -> key) over the genesis hash."""
    message = genesis_signing_bytes(genesis.genesis_hash)
    return {node: key.sign(message) for node, key in keys.items()}


def check_genesis_signatures(
    genesis: Genesis, genesis_hash: bytes, signatures: Mapping[NodeId, bytes]
) -> None:
    """Raise unless every voter and observer of ``genesis`` signed its hash."""
    if genesis_hash != genesis.genesis_hash:
        raise ConfigError(
            "genesis signatures are for another genesis",
            expected=genesis.genesis_hash,
            found=genesis_hash,
            where=f"domain {genesis.domain}",
        )
    message = genesis_signing_bytes(genesis.genesis_hash)
    members = (*genesis.voters, *genesis.observers)
    listed = {m.node_id for m in members}
    extra = sorted(set(signatures) - listed)
    if extra:
        raise ConfigError(
            "genesis signed by nodes it does not name",
            found=extra,
            where=f"domain {genesis.domain}",
        )
    for member in members:
        signature = signatures.get(member.node_id)
        if signature is None:
            raise ConfigError(
                "genesis not signed by every member",
                expected=sorted(listed),
                found=sorted(signatures),
                where=f"domain {genesis.domain}",
            )
        if not member.key.is_valid_signature(message, signature):
            raise InvalidSignature(
                f"invalid genesis signature by {member.node_id}", where=f"domain {genesis.domain}"
            )


def write_genesis_signatures(
    path: Path, genesis: Genesis, signatures: Mapping[NodeId, bytes]
) -> None:
    """Write the signatures file (refuses to overwrite), fsynced."""
    document = {
        "format": SIG_TAG,
        "domain": genesis.domain,
        "genesis_hash": genesis.genesis_hash.hex(),
        "signatures": {node: signatures[node].hex() for node in sorted(signatures)},
    }
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(json.dumps(document, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
    except FileExistsError as exc:
        raise ConfigError("refusing to overwrite genesis signatures", where=str(path)) from exc
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def read_genesis_signatures(path: Path) -> tuple[Digest, dict[NodeId, bytes]]:
    """The genesis hash and the signatures recorded in ``path``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("genesis signatures file is not JSON", where=str(path)) from exc
    try:
        if not isinstance(document, dict) or document.get("format") != SIG_TAG:
            raise ConfigError("not a genesis signatures file", expected=SIG_TAG, where=str(path))
        genesis_hash = Digest(bytes.fromhex(document["genesis_hash"]))
        raw = document["signatures"]
        if not isinstance(raw, dict):
            raise ConfigError("signatures must be a map", where=str(path))
        signatures = {NodeId(str(k)): bytes.fromhex(v) for k, v in raw.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"malformed genesis signatures file: {exc}", where=str(path)) from exc
    except ValidationError:
        raise
    return genesis_hash, signatures
