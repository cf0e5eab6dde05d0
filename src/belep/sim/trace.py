"""Event traces: a compact, deterministic, human-readable line per simulator step.

A trace line is ``<time> <event> <instance> <details>``, where messages are
described by :func:`describe`: the dataclass name and its fields, with bytes
shortened to 8 hex digits, blocks as ``Block(h=…, #hash, n txs)`` and
certificates as ``QC(kind h=… v=… #hash, signers)``. The description uses
only field values (no object ids, no hash-randomised set order), so equal
runs give byte-identical traces; :func:`trace_digest` is the SHA-256 of the
lines joined by newlines.

No I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

from belep.consensus.types import Block, QuorumCertificate, Transaction
from belep.ledger.block import VoteStatement

__all__ = ["describe", "trace_digest"]

_MAX_ITEMS = 6


def describe(value: object, depth: int = 0) -> str:
    """A short deterministic rendering of a message or field value."""
    if isinstance(value, bytes):
        return value[:4].hex() if value else "''"
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Block):
        h = value.header
        return (
            f"Block(h={h.height} v={h.view} #{value.block_hash[:4].hex()} "
            f"prev={h.prev_hash[:4].hex()} by={h.proposer} txs={len(value.transactions)})"
        )
    if isinstance(value, QuorumCertificate):
        s = value.statement
        return (
            f"QC({s.kind} h={s.height} v={s.view} #{s.block_hash[:4].hex()} "
            f"[{','.join(value.signers)}])"
        )
    if isinstance(value, VoteStatement):
        return f"Stmt({value.kind} h={value.height} v={value.view} #{value.block_hash[:4].hex()})"
    if isinstance(value, Transaction):
        return f"Tx(#{value.tx_hash[:4].hex()})"
    if depth > 3:
        return "…"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = [
            f"{f.name}={describe(getattr(value, f.name), depth + 1)}"
            for f in dataclasses.fields(value)
        ]
        return f"{type(value).__name__}({' '.join(parts)})"
    if isinstance(value, tuple | list):
        items = [describe(v, depth + 1) for v in value[:_MAX_ITEMS]]
        more = f" +{len(value) - _MAX_ITEMS}" if len(value) > _MAX_ITEMS else ""
        return f"[{', '.join(items)}{more}]"
    if isinstance(value, dict):
        items = [
            f"{describe(k, depth + 1)}: {describe(v, depth + 1)}"
            for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))[:_MAX_ITEMS]
        ]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, frozenset | set):
        return describe(sorted(value, key=repr), depth)
    return type(value).__name__


def trace_digest(lines: Iterable[str]) -> str:
    """SHA-256 (hex) of the trace lines joined by newlines."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
