"""The genesis of a domain, and which committee certifies blocks at a height.

A :class:`Genesis` names the domain, its parent domain (``None`` for the city
domain), the cryptographic suite, the consensus protocol, the quorum rule,
the voters (ordered: the order decides the primary of each view) and the
observers, each with its public key. It is stored as a JSON file
(``genesis.json``) that people can read; the **genesis hash** is SHA-256 of
the canonical encoding (:mod:`belep.encoding`) of the record parsed from that
file, so whitespace, key order or escapes in the JSON never change it.

Invariants (checked on construction, so an invalid genesis cannot exist):

* domain and node ids are 1..64 characters of ``[A-Za-z0-9._-]``;
* there is at least one voter; no node id appears twice across voters and
  observers; no public key appears twice; every key belongs to the suite;
* the quorum rule fits the protocol (``bft`` for pbft/hpbft, ``majority``
  for raft).

:meth:`Genesis.committee` is the committee of epoch 0; which committee
certifies a later height is the configuration history's answer
(:mod:`belep.ledger.config`), replayed over the chain's configuration
transactions.

Pure: reading and writing ``genesis.json`` is :mod:`belep.ledger.genesis_file`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from belep.crypto import PublicKey, get_suite, sha256
from belep.encoding import (
    Value,
    decode,
    encode,
    expect_fields,
    expect_int,
    expect_list,
    expect_map,
    expect_str,
)
from belep.errors import ConfigError, EncodingError, ValidationError
from belep.ledger.block import Digest, DomainId, Epoch, NodeId

GENESIS_FORMAT = "belep-genesis-v1"

#: protocol -> (quorum rule, ``VoteStatement.kind`` of the certificate that commits a block).
#: The kinds are the consensus modules' (``belep.consensus.raft_cert.RAFT_CERT_KIND`` for Raft);
#: the ledger sits below consensus, so they are restated here and checked by a test.
PROTOCOLS: Mapping[str, tuple[str, str]] = {
    "pbft": ("bft", "commit"),
    "hpbft": ("bft", "commit"),
    "raft": ("majority", "raft-append"),
}
#: Protocols whose committee changes by configuration transactions (``ledger/config.py``).
RECONFIGURABLE = frozenset({"hpbft"})
#: Protocols whose leader must propose the first block of its term (view) before the block
#: below it is committed (Raft commits an earlier term's entries only through one of its own,
#: thesis §3.6.2): that block may carry an unknown state root (``ledger/execution.py``).
TERM_START_ROOT_UNKNOWN = frozenset({"raft"})
QUORUM_RULES = frozenset({"bft", "majority"})

#: The configuration epoch the genesis committee forms.
GENESIS_EPOCH = Epoch(0)

_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FIELDS = frozenset(
    {
        "format",
        "domain",
        "parent",
        "suite",
        "protocol",
        "quorum_rule",
        "voters",
        "observers",
        "created_ms",
    }
)


def is_valid_id(value: str) -> bool:
    """Is ``value`` a valid domain or node id (``[A-Za-z0-9._-]{1,64}``, not ``.``/``..``)?"""
    return bool(_ID_PATTERN.fullmatch(value)) and value not in {".", ".."}


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid domain or node id, else raise :class:`ConfigError`."""
    if not is_valid_id(value):
        raise ConfigError(
            f"invalid {what}", expected="1..64 characters of [A-Za-z0-9._-]", found=value
        )
    return value


def bft_quorum(n: int) -> int:
    """Signers a Byzantine-fault-tolerant certificate needs among ``n`` voters.

    ``max(2f + 1, (n + f) // 2 + 1)`` with ``f = (n - 1) // 3``: equal to
    ``2f + 1`` when ``n = 3f + 1``, and in general large enough that any two
    quorums share at least ``f + 1`` voters, hence one correct voter. Plain
    ``2f + 1`` is unsafe for other ``n``: with 3 voters (``f = 0``) it is 1, so
    two partitioned voters could each certify a different block; with 5 voters
    (``f = 1``) two sets of 3 may meet only in the faulty voter.
    """
    f = (n - 1) // 3
    return max(2 * f + 1, (n + f) // 2 + 1)


def quorum_size(rule: str, n: int) -> int:
    """Signers a certificate needs among ``n`` voters under ``rule``.

    ``bft``: :func:`bft_quorum`; ``majority``: ``n // 2 + 1``.
    """
    if rule == "bft":
        return bft_quorum(n)
    if rule == "majority":
        return n // 2 + 1
    raise ConfigError("unknown quorum rule", expected=sorted(QUORUM_RULES), found=rule)


@dataclass(frozen=True, slots=True)
class Member:
    """A node named in a genesis, with its public key."""

    node_id: NodeId
    key: PublicKey

    def to_wire(self) -> dict[str, Value]:
        return {"id": self.node_id, "key": self.key.to_text()}

    @classmethod
    def from_wire(cls, value: Value) -> Member:
        m = expect_map(value, "member")
        expect_fields(m, "member", frozenset({"id", "key"}))
        node_id = NodeId(check_id(expect_str(m["id"], "member id"), "node id"))
        return cls(node_id, PublicKey.from_text(expect_str(m["key"], "member key")))


@dataclass(frozen=True, slots=True)
class Committee:
    """The voters whose certificates commit blocks at some height, the quorum, the
    certificate kind that commits a block, and the configuration epoch they form."""

    members: tuple[Member, ...]
    quorum: int
    commit_kind: str
    epoch: Epoch = GENESIS_EPOCH
    keys: dict[NodeId, PublicKey] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", {m.node_id: m.key for m in self.members})

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return tuple(m.node_id for m in self.members)


@dataclass(frozen=True, slots=True)
class Genesis:
    """The first, unchangeable configuration of one domain's chain."""

    domain: DomainId
    suite: str
    protocol: str
    voters: tuple[Member, ...]
    observers: tuple[Member, ...] = ()
    parent: DomainId | None = None
    created_ms: int = 0
    quorum_rule: str = ""  # empty: the protocol's rule
    genesis_hash: Digest = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_id(self.domain, "domain id")
        if self.parent is not None:
            check_id(self.parent, "parent domain id")
            if self.parent == self.domain:
                raise ConfigError("a domain cannot be its own parent", found=self.parent)
        get_suite(self.suite)
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                "unknown consensus protocol", expected=sorted(PROTOCOLS), found=self.protocol
            )
        rule = PROTOCOLS[self.protocol][0]
        if not self.quorum_rule:
            object.__setattr__(self, "quorum_rule", rule)
        elif self.quorum_rule != rule:
            raise ConfigError(
                f"quorum rule does not fit protocol {self.protocol}",
                expected=rule,
                found=self.quorum_rule,
            )
        if not self.voters:
            raise ConfigError("a genesis needs at least one voter", expected=">= 1", found=0)
        if self.created_ms < 0:
            raise ConfigError("created_ms is negative", expected=">= 0", found=self.created_ms)
        seen_ids: set[str] = set()
        seen_keys: set[PublicKey] = set()
        for member in (*self.voters, *self.observers):
            check_id(member.node_id, "node id")
            if member.node_id in seen_ids:
                raise ConfigError("node id listed twice in genesis", found=member.node_id)
            if member.key in seen_keys:
                raise ConfigError(
                    "public key listed twice in genesis", found=member.key.fingerprint()
                )
            if member.key.suite != self.suite:
                raise ConfigError(
                    f"key of {member.node_id} is not of the genesis suite",
                    expected=self.suite,
                    found=member.key.suite,
                )
            seen_ids.add(member.node_id)
            seen_keys.add(member.key)
        object.__setattr__(self, "genesis_hash", Digest(sha256(self.encode())))

    @property
    def quorum(self) -> int:
        return quorum_size(self.quorum_rule, len(self.voters))

    @property
    def commit_kind(self) -> str:
        return PROTOCOLS[self.protocol][1]

    @property
    def reconfigurable(self) -> bool:
        """Does the committee change by configuration transactions (HPBFT seats)?"""
        return self.protocol in RECONFIGURABLE

    @property
    def term_start_root_unknown(self) -> bool:
        """May the first block of a view carry an unknown state root (Raft)?"""
        return self.protocol in TERM_START_ROOT_UNKNOWN

    def committee(self) -> Committee:
        return Committee(self.voters, self.quorum, self.commit_kind)

    def to_wire(self) -> dict[str, Value]:
        return {
            "format": GENESIS_FORMAT,
            "domain": self.domain,
            "parent": self.parent,
            "suite": self.suite,
            "protocol": self.protocol,
            "quorum_rule": self.quorum_rule,
            "voters": [m.to_wire() for m in self.voters],
            "observers": [m.to_wire() for m in self.observers],
            "created_ms": self.created_ms,
        }

    def encode(self) -> bytes:
        """Canonical bytes; ``genesis_hash`` is their SHA-256."""
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, value: Value) -> Genesis:
        try:
            m = expect_map(value, "genesis")
            expect_fields(m, "genesis", _FIELDS)
            fmt = expect_str(m["format"], "format")
            if fmt != GENESIS_FORMAT:
                raise ConfigError("unsupported genesis format", expected=GENESIS_FORMAT, found=fmt)
            parent = m["parent"]
            rule = expect_str(m["quorum_rule"], "quorum_rule")
            if rule not in QUORUM_RULES:
                raise ConfigError("unknown quorum rule", expected=sorted(QUORUM_RULES), found=rule)
            return cls(
                domain=DomainId(expect_str(m["domain"], "domain")),
                parent=None if parent is None else DomainId(expect_str(parent, "parent")),
                suite=expect_str(m["suite"], "suite"),
                protocol=expect_str(m["protocol"], "protocol"),
                quorum_rule=rule,
                voters=tuple(Member.from_wire(v) for v in expect_list(m["voters"], "voters")),
                observers=tuple(
                    Member.from_wire(v) for v in expect_list(m["observers"], "observers")
                ),
                created_ms=expect_int(m["created_ms"], "created_ms", minimum=0),
            )
        except ConfigError:
            raise
        except ValidationError as exc:
            raise ConfigError(
                f"invalid genesis: {exc.message}",
                expected=exc.expected,
                found=exc.found,
                where=exc.where,
            ) from exc

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        """Parse canonical bytes (as produced by :meth:`encode`)."""
        return cls.from_wire(decode(data))

    def to_json(self) -> str:
        """The human-readable file form (not hashed; see the module docstring)."""
        return json.dumps(self.to_wire(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Genesis:
        """Parse the file form strictly: no duplicate keys, no floats, exact fields."""
        try:
            value = json.loads(
                text,
                object_pairs_hook=_unique_object,
                parse_float=_reject_float,
                parse_constant=_reject_float,
            )
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "genesis is not valid JSON", found=exc.msg, where=f"line {exc.lineno}"
            ) from exc
        return cls.from_wire(_json_to_value(value))


# --------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError("duplicate key in genesis JSON", found=key)
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise ConfigError("numbers in a genesis must be integers", found=text)


def _json_to_value(value: Any) -> Value:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list):
        return [_json_to_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_to_value(v) for k, v in value.items()}
    raise EncodingError("unsupported JSON value", found=type(value).__name__)
