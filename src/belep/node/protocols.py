"""The node's view of the consensus registry: factories and the message codec.

Owns the bridge between :mod:`belep.consensus.registry` (protocol name ->
replica factory, and the generic message decoder) and the node: which
protocols are available (:func:`registered_protocols`), how a replica is
made (:func:`replica_factory`) and how a consensus message becomes bytes
on a transport channel and back (:func:`encode_message`,
:func:`decode_message`).

Encoding is the canonical CBOR of the message's ``to_wire()`` map; decoding
is strict (a :class:`~belep.errors.ValidationError` for anything that is not
exactly one known message), so a peer's garbage never reaches a replica.

No I/O.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from belep.consensus.types import Replica, ReplicaConfig
from belep.encoding import Value, decode, encode, expect_map, expect_str
from belep.errors import ConfigError, SchemaError

__all__ = [
    "ReplicaFactory",
    "decode_message",
    "encode_message",
    "registered_protocols",
    "replica_factory",
]

ReplicaFactory = Callable[[ReplicaConfig, Mapping[str, bytes]], Replica]

#: Message decoder tables of the protocol modules, used when the registry has no decoder.
_DECODER_TABLES = (
    ("belep.consensus.raft_messages", "RAFT_MESSAGE_DECODERS"),
    ("belep.consensus.pbft_messages", "PBFT_MESSAGE_DECODERS"),
    ("belep.consensus.hpbft_messages", "HPBFT_MESSAGE_DECODERS"),
)
_decoders: dict[str, Callable[[Value], object]] | None = None


def _registry() -> ModuleType | None:
    """The registry module, or ``None`` if this build has none (a broken one raises)."""
    try:
        return importlib.import_module("belep.consensus.registry")
    except ModuleNotFoundError as exc:
        if exc.name != "belep.consensus.registry":
            raise
        return None


def registered_protocols() -> frozenset[str]:
    """Protocol names the consensus registry provides."""
    module = _registry()
    if module is None:
        return frozenset()
    protocols: Mapping[str, ReplicaFactory] = module.PROTOCOLS
    return frozenset(protocols)


def replica_factory(name: str) -> ReplicaFactory:
    """The registered factory of ``name``; :class:`ConfigError` if it is not registered."""
    module = _registry()
    protocols: Mapping[str, ReplicaFactory] = {} if module is None else module.PROTOCOLS
    factory = protocols.get(name)
    if factory is None:
        raise ConfigError(
            "consensus protocol not available in this build", expected=sorted(protocols), found=name
        )
    return factory


def encode_message(message: object) -> bytes:
    """Canonical bytes of a consensus message (anything with ``to_wire()``)."""
    to_wire: Callable[[], Value] = message.to_wire  # type: ignore[attr-defined]
    return encode(to_wire())


def _decoder_table() -> dict[str, Callable[[Value], object]]:
    global _decoders
    if _decoders is None:
        table: dict[str, Callable[[Value], object]] = {}
        for module_name, attribute in _DECODER_TABLES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            found: Mapping[str, Callable[[Value], object]] = getattr(module, attribute, {})
            table.update(found)
        _decoders = table
    return _decoders


def decode_message(data: bytes) -> object:
    """Strictly decode a consensus message; raises a ValidationError subclass."""
    value = decode(data)
    module = _registry()
    decoder: Any = None if module is None else getattr(module, "message_from_wire", None)
    if decoder is not None:
        return decoder(value)
    m = expect_map(value, "consensus message")
    tag = expect_str(m.get("type"), "message type")
    table = _decoder_table()
    item = table.get(tag)
    if item is None:
        raise SchemaError("unknown consensus message type", expected=sorted(table), found=tag)
    return item(m)
