"""What the simulator needs to know about a protocol, beyond its factory.

A :class:`ProtocolProfile` bundles a protocol's replica factory (from
:data:`belep.consensus.registry.PROTOCOLS`) with its fault model — how many
faulty members it tolerates and whether those may be Byzantine — and its
certificate rule: which voters and how many signatures make a delivered
block's certificate valid. The invariant checker and the fault-schedule
generator consult only this record, so a new protocol (HPBFT) plugs in by
adding a profile (or by the registry growing one), not by editing them.

Known rules:

* ``pbft``: ``n = 3f+1`` members, up to ``f = (n-1)//3`` Byzantine-or-crashed
  members; a delivered block needs a ``commit`` certificate of ``2f+1``
  distinct member signatures, epoch 0.
* ``hpbft``: the same bound on the seats; certificates need ``2f+1`` seats of the
  epoch that covers the block's height (``belep.consensus.hpbft_verify``).
* ``raft``: ``n = 2f+1``, up to ``f = (n-1)//2`` *crashed* members, none Byzantine;
  certificates need a majority ``n//2 + 1`` of member signatures on Raft's
  ``raft-append`` statement (``belep.consensus.raft_cert.raft_committee``).

Every rule is the ledger's one certificate check
(:func:`belep.ledger.certificate.check_block_certificate`) with the protocol's
committee: kind, epoch, domain, height, hash, view order and signatures.
A registered protocol without a fault model here is refused.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.hpbft_verify import make_certificate_rule
from belep.consensus.raft_cert import raft_committee
from belep.consensus.registry import PROTOCOLS
from belep.consensus.types import Block, QuorumCertificate, Replica, ReplicaConfig
from belep.errors import ConfigError
from belep.ledger.certificate import check_block_certificate
from belep.ledger.config_tx import COMMIT_KIND
from belep.ledger.genesis import Committee, Member, bft_quorum

__all__ = [
    "CertificateRule",
    "ProtocolProfile",
    "ReplicaFactory",
    "available_protocols",
    "bft_rule",
    "get_profile",
    "majority_rule",
]

ReplicaFactory = Callable[[ReplicaConfig, Mapping[str, bytes]], Replica]
#: ``rule(config, chain, block, certificate)`` raises a ValidationError unless the
#: certificate proves ``block`` committed, given the chain delivered so far.
CertificateRule = Callable[[ReplicaConfig, Sequence[Block], Block, QuorumCertificate], None]


def _members(config: ReplicaConfig) -> tuple[Member, ...]:
    return tuple(Member(node, config.keys[node]) for node in config.members)


def bft_rule(
    config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
) -> None:
    """A ``commit`` certificate of ``2f+1`` distinct members (epoch 0): the ledger's one check."""
    committee = Committee(_members(config), bft_quorum(config.n), COMMIT_KIND)
    check_block_certificate(block.header, cert, committee)


def majority_rule(
    config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
) -> None:
    """Raft's certificate: a majority of ``raft-append`` signatures (the ledger's one check)."""
    check_block_certificate(block.header, cert, raft_committee(config.voter_keys()))


@dataclass(frozen=True, slots=True)
class ProtocolProfile:
    """A protocol as the simulator sees it."""

    name: str
    factory: ReplicaFactory
    byzantine_tolerant: bool
    max_faulty: Callable[[int], int]  # members -> faulty members tolerated at once
    certificate_rule: CertificateRule
    #: Planted-bug switches the protocol implements (documentation / CLI help only).
    planted_bugs: tuple[str, ...] = ()


def _bft_f(n: int) -> int:
    return (n - 1) // 3


def _crash_f(n: int) -> int:
    return (n - 1) // 2


_FAULT_MODELS: dict[
    str, tuple[bool, Callable[[int], int], Callable[[], CertificateRule], tuple[str, ...]]
] = {
    "pbft": (
        True,
        _bft_f,
        lambda: bft_rule,
        ("pbft_prepare_quorum_2f", "pbft_viewchange_forgets_prepared"),
    ),
    "hpbft": (
        True,
        _bft_f,
        make_certificate_rule,
        ("hpbft_mixed_quorum", "hpbft_standby_vote_before_substitution"),
    ),
    "raft": (False, _crash_f, lambda: majority_rule, ("raft_truncate_without_conflict",)),
}


def available_protocols() -> tuple[str, ...]:
    """Protocol names the registry provides, sorted."""
    return tuple(sorted(PROTOCOLS))


def get_profile(name: str) -> ProtocolProfile:
    """The profile of a registered protocol; raises :class:`ConfigError`."""
    factory = PROTOCOLS.get(name)
    if factory is None:
        raise ConfigError("unknown consensus protocol", expected=sorted(PROTOCOLS), found=name)
    model = _FAULT_MODELS.get(name)
    if model is None:
        raise ConfigError("no fault model for this protocol in the simulator", found=name)
    byzantine, max_faulty, make_rule, bugs = model
    return ProtocolProfile(name, factory, byzantine, max_faulty, make_rule(), bugs)
