"""The consensus protocols a domain can run, and the decoder of their messages.

Owns two tables, the only place that lists every protocol:

* :data:`PROTOCOLS` — protocol name (as written in a genesis configuration and
  given to ``belep sim --protocol``) to the replica factory, called as
  ``factory(config, persisted)``;
* :data:`MESSAGE_DECODERS` — message tag (the ``"type"`` entry of a message's
  wire map, see :mod:`belep.consensus.messages`) to the decoder of that type,
  used by :func:`decode_message` on bytes from the network.

Adding a protocol is two entries: its factory in ``PROTOCOLS`` and its
decoder map in ``_DECODER_MAPS``. A tag defined twice is refused at import.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from belep.consensus.hpbft import HpbftReplica
from belep.consensus.hpbft_messages import HPBFT_MESSAGES
from belep.consensus.messages import TYPE_KEY, WireMessage
from belep.consensus.pbft import PbftReplica
from belep.consensus.pbft_messages import PBFT_MESSAGE_DECODERS
from belep.consensus.raft import RaftReplica
from belep.consensus.raft_messages import RAFT_MESSAGE_DECODERS
from belep.consensus.types import Replica, ReplicaConfig
from belep.encoding import Value, decode, encode, expect_map, expect_str
from belep.errors import SchemaError

__all__ = [
    "MESSAGE_DECODERS",
    "PROTOCOLS",
    "ReplicaFactory",
    "decode_message",
    "encode_message",
    "message_from_wire",
]

ReplicaFactory = Callable[[ReplicaConfig, Mapping[str, bytes]], Replica]
MessageDecoder = Callable[[Value], object]

#: Replica factories by protocol name.
PROTOCOLS: dict[str, ReplicaFactory] = {
    "pbft": PbftReplica,
    "raft": RaftReplica,
    "hpbft": HpbftReplica,
}

_DECODER_MAPS: tuple[Mapping[str, MessageDecoder], ...] = (
    PBFT_MESSAGE_DECODERS,
    RAFT_MESSAGE_DECODERS,
    HPBFT_MESSAGES,
)


def _merge(maps: tuple[Mapping[str, MessageDecoder], ...]) -> dict[str, MessageDecoder]:
    merged: dict[str, MessageDecoder] = {}
    for m in maps:
        for tag, decoder in m.items():
            if tag in merged:
                raise SchemaError("message tag defined twice", found=tag)
            merged[tag] = decoder
    return merged


#: Message decoders by wire tag, for every registered protocol.
MESSAGE_DECODERS: Mapping[str, MessageDecoder] = _merge(_DECODER_MAPS)


def message_from_wire(value: Value) -> object:
    """Decode the wire map of any registered message; raises a ``ValidationError``."""
    m = expect_map(value, "consensus message")
    tag = expect_str(m.get(TYPE_KEY), "message type")
    decoder = MESSAGE_DECODERS.get(tag)
    if decoder is None:
        raise SchemaError("unknown message type", expected=sorted(MESSAGE_DECODERS), found=tag)
    return decoder(value)


def decode_message(data: bytes) -> object:
    """Decode wire bytes into the message they encode (strict)."""
    return message_from_wire(decode(data))


def encode_message(message: WireMessage) -> bytes:
    """The canonical wire bytes of a message."""
    return encode(message.to_wire())
