"""The node's view of the consensus registry: factories and the message codec.

Owns the bridge between :mod:`belep.consensus.registry` (protocol name ->
replica factory, and the strict message decoder) and the node: which
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

from collections.abc import Callable

from belep.consensus.registry import PROTOCOLS, ReplicaFactory, message_from_wire
from belep.encoding import Value, decode, encode
from belep.errors import ConfigError

__all__ = [
    "ReplicaFactory",
    "decode_message",
    "encode_message",
    "registered_protocols",
    "replica_factory",
]


def registered_protocols() -> frozenset[str]:
    """Protocol names the consensus registry provides."""
    return frozenset(PROTOCOLS)


def replica_factory(name: str) -> ReplicaFactory:
    """The registered factory of ``name``; :class:`ConfigError` if it is not registered."""
    factory = PROTOCOLS.get(name)
    if factory is None:
        raise ConfigError(
            "consensus protocol not available in this build", expected=sorted(PROTOCOLS), found=name
        )
    return factory


def encode_message(message: object) -> bytes:
    """Canonical bytes of a consensus message (anything with ``to_wire()``)."""
    to_wire: Callable[[], Value] = message.to_wire  # type: ignore[attr-defined]
    return encode(to_wire())


def decode_message(data: bytes) -> object:
    """Strictly decode a consensus message; raises a ValidationError subclass."""
    return message_from_wire(decode(data))
