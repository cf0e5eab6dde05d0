"""The BELEP application's rules: what every node executes on every committed block.

Owns :class:`BelepApplication`, the :class:`~belep.ledger.execution.Application`
a node runs after ordering (``docs/spec/ledger.md`` §Execution,
``docs/spec/node.md`` §Execution). Each transaction is a signed envelope
(:mod:`belep.ledger.envelope`); its signature was verified before consensus
ordered it (``validate_transaction``: the commit certificate proves ``f + 1``
correct voters did), so the rules here are the ones that depend on the state
and on the order:

============================  ==================================================
kind                          rule (result code when refused)
============================  ==================================================
not an envelope               ``malformed``
configuration kinds           accepted (validated by consensus and the ledger's
                              configuration history, ``ledger/config.py``)
``anchor``                    a well-formed body (``malformed``); a child height
                              above the last accepted anchor of that child
                              (``anchor-not-newer``) — or, at the same height,
                              the same block (``anchor-conflicts``); records
                              ``anchor/<child>`` = ``[height, block hash]``
any other kind                accepted, no state (the evidence application's
                              kinds and rules come with it)
============================  ==================================================

Pure: no I/O, no clock (the block's timestamp is the time), no randomness.
"""

from __future__ import annotations

from collections.abc import Callable

from belep.app.anchors import ANCHOR_KIND, read_anchor
from belep.encoding import decode, encode, expect_bytes, expect_int, expect_list
from belep.errors import SchemaError, ValidationError
from belep.ledger.block import Transaction
from belep.ledger.config_tx import CONFIG_KINDS
from belep.ledger.envelope import Envelope, parse_envelope
from belep.ledger.execution import ACCEPTED, BlockContext, StateView, TxResult, Writes

__all__ = ["BelepApplication", "anchor_key"]

MALFORMED = TxResult("malformed")
ANCHOR_NOT_NEWER = TxResult("anchor-not-newer")
ANCHOR_CONFLICTS = TxResult("anchor-conflicts")


def _parse_payload(tx: Transaction) -> Envelope:
    return parse_envelope(tx.payload)


def anchor_key(child: str) -> bytes:
    """The state key of the last accepted anchor of ``child``."""
    return b"anchor/" + child.encode()


def _anchored(stored: bytes) -> tuple[int, bytes]:
    """The ``[height, block hash]`` this application stored for a child."""
    items = expect_list(decode(stored), "anchor state")
    if len(items) != 2:
        raise SchemaError("anchor state must be [height, block hash]", found=len(items))
    return expect_int(items[0], "anchored height"), expect_bytes(items[1], "anchored block hash")


class BelepApplication:
    """The rules every BELEP node executes (see the module docstring).

    ``parse`` turns a transaction into its envelope: by default
    :func:`~belep.ledger.envelope.parse_envelope`; a node passes one that
    reuses the envelope it parsed when it validated the transaction (the
    same bytes give the same envelope, so the outcome is the same).
    """

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[Transaction], Envelope] | None = None) -> None:
        self._parse = parse or _parse_payload

    def apply_transaction(
        self, state: StateView, tx: Transaction, context: BlockContext
    ) -> tuple[TxResult, Writes]:
        try:
            envelope = self._parse(tx)
        except ValidationError:
            return MALFORMED, {}
        if envelope.kind in CONFIG_KINDS:
            return ACCEPTED, {}
        if envelope.kind == ANCHOR_KIND:
            record = read_anchor(envelope)
            if record is None:
                return MALFORMED, {}
            key = anchor_key(record.domain)
            stored = state.get(key)
            if stored is not None:
                height, block_hash = _anchored(stored)
                if record.height < height:
                    return ANCHOR_NOT_NEWER, {}
                if record.height == height:
                    return (
                        ANCHOR_NOT_NEWER if record.block_hash == block_hash else ANCHOR_CONFLICTS
                    ), {}
            return ACCEPTED, {key: encode([record.height, record.block_hash])}
        return ACCEPTED, {}
