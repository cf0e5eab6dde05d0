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
  distinct member signatures.
* ``hpbft``: the same bound on the seats; certificates need ``2f+1`` seats of the
  epoch that covers the block's height (``belep.consensus.hpbft_verify``).
* ``raft``: ``n = 2f+1``, up to ``f = (n-1)//2`` *crashed* members, none Byzantine;
  certificates need a majority ``n//2 + 1`` of member signatures on Raft's
  ``raft-append`` statement (checked by ``belep.consensus.raft_cert``).
* any other registered protocol: the BFT bound and ``2f+1`` member signatures.

No I/O here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.types import Block, QuorumCertificate, Replica, ReplicaConfig
from belep.errors import ChainError, ConfigError

__all__ = [
    "CertificateRule",
    "ProtocolProfile",
    "ReplicaFactory",
    "available_protocols",
    "bft_rule",
    "get_profile",
    "majority_rule",
    "verify_block_certificate",
]

ReplicaFactory = Callable[[ReplicaConfig, Mapping[str, bytes]], Replica]
#: ``rule(config, chain, block, certificate)`` raises a ValidationError unless the
#: certificate proves ``block`` committed, given the chain delivered so far.
CertificateRule = Callable[[ReplicaConfig, Sequence[Block], Block, QuorumCertificate], None]


def verify_block_certificate(
    config: ReplicaConfig, block: Block, certificate: QuorumCertificate, quorum: int
) -> None:
    """The certificate names this block (hash, height, domain) and carries ``quorum``
    valid signatures of distinct members."""
    s = certificate.statement
    if s.block_hash != block.block_hash:
        raise ChainError(
            "certificate certifies another block",
            expected=block.block_hash,
            found=s.block_hash,
            where=f"height {block.height}",
        )
    if s.height != block.height or s.domain != block.header.domain:
        raise ChainError(
            "certificate statement does not match the block",
            expected=(block.header.domain, block.height),
            found=(s.domain, s.height),
        )
    certificate.verify(config.voter_keys(), quorum)


def bft_rule(
    config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
) -> None:
    """``2f+1`` distinct member signatures."""
    verify_block_certificate(config, block, cert, config.bft_quorum)


def majority_rule(
    config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
) -> None:
    """A majority ``n//2 + 1`` of member signatures."""
    verify_block_certificate(config, block, cert, config.n // 2 + 1)


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


def _raft_rule() -> CertificateRule:
    """Raft's own certificate check when its module is present, else a plain majority."""
    try:
        module = importlib.import_module("belep.consensus.raft_cert")
    except ImportError:
        return majority_rule
    verify = module.verify_raft_certificate

    def rule(
        config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
    ) -> None:
        verify(block, cert, config.voter_keys())

    return rule


def _hpbft_rule() -> CertificateRule:
    """HPBFT's own check: ``2f+1`` seats of the epoch covering the height (seats change with
    committed ``SubstituteSeat`` transactions, see ``belep.consensus.hpbft_verify``)."""
    module = importlib.import_module("belep.consensus.hpbft_verify")
    rule: CertificateRule = module.make_certificate_rule()
    return rule


def _pbft_rule() -> CertificateRule:
    """A PBFT block is proven by a *commit* certificate of ``2f+1`` members."""

    def rule(
        config: ReplicaConfig, chain: Sequence[Block], block: Block, cert: QuorumCertificate
    ) -> None:
        if cert.statement.kind != "commit":
            raise ChainError(
                "delivered with a certificate that is not a commit certificate",
                expected="commit",
                found=cert.statement.kind,
                where=f"height {block.height}",
            )
        bft_rule(config, chain, block, cert)

    return rule


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
        _pbft_rule,
        ("pbft_prepare_quorum_2f", "pbft_viewchange_forgets_prepared"),
    ),
    "hpbft": (
        True,
        _bft_f,
        _hpbft_rule,
        ("hpbft_mixed_quorum", "hpbft_standby_vote_before_substitution"),
    ),
    "raft": (False, _crash_f, _raft_rule, ("raft_truncate_without_conflict",)),
}


def _registry() -> Mapping[str, ReplicaFactory]:
    try:
        module = importlib.import_module("belep.consensus.registry")
    except ModuleNotFoundError as exc:  # no registry at all; any other error propagates
        if exc.name != "belep.consensus.registry":
            raise
        return {}
    protocols: Mapping[str, ReplicaFactory] = module.PROTOCOLS
    return protocols


def available_protocols() -> tuple[str, ...]:
    """Protocol names the registry provides, sorted."""
    return tuple(sorted(_registry()))


def get_profile(name: str) -> ProtocolProfile:
    """The profile of a registered protocol; raises :class:`ConfigError`."""
    factories = _registry()
    factory = factories.get(name)
    if factory is None:
        raise ConfigError("unknown consensus protocol", expected=sorted(factories), found=name)
    byzantine, max_faulty, make_rule, bugs = _FAULT_MODELS.get(
        name, (True, _bft_f, lambda: bft_rule, ())
    )
    return ProtocolProfile(name, factory, byzantine, max_faulty, make_rule(), bugs)
