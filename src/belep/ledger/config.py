"""Configuration history: the committee that certifies any height of a chain.

Owns the ledger-level answer to "who were the signers at this height?",
asked by chain verification, state transfer, the simulator's checker and
(later) receipts (``docs/spec/ledger.md`` §Configuration):

* :class:`EpochConfig` — one epoch: a fixed seat set, the standby order, the
  heights its certificates may certify, its quorum;
* :class:`ConfigHistory` — every epoch from the genesis, replayed block by
  block over the chain's configuration transactions
  (:mod:`belep.ledger.config_tx`): :meth:`ConfigHistory.after_block` applies a
  committed ``SubstituteSeat``, :meth:`ConfigHistory.with_revival` a verified
  revival; :meth:`ConfigHistory.committee` names the voters, quorum, commit
  kind and epoch of a certificate at a height;
* :func:`history_from_genesis`, :func:`replay_history`,
  :func:`scan_revivals`, :class:`ConfigReplay` and :func:`chain_replay` — the
  history of a whole chain, read block by block, for every protocol: PBFT and Raft committees never change (a
  configuration change in their chains is an error), HPBFT's change with
  seat substitutions and revivals.

Invariants:

* an epoch's seat set never changes; a configuration change always opens a
  new epoch whose number is one higher;
* a ``SubstituteSeat`` committed at height ``h`` closes its epoch at ``h`` and
  opens the next one at ``h + 1``; a revival closes the stalled epoch at the
  revival's top height and opens the next one above its base (both epochs
  certify the same blocks in between: the revived epoch re-certifies them);
* a standby never counts as a voter of an epoch in which it holds no seat;
* a configuration change is applied only if it was signed by whoever the
  framing requires (:func:`~belep.ledger.config_tx.find_config_tx`).

No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from belep.crypto import PublicKey
from belep.errors import ChainError, ConfigError, ValidationError
from belep.ledger.block import Block, DomainId, Epoch, Height, NodeId
from belep.ledger.certificate import SignatureCache
from belep.ledger.config_tx import (
    RevivalRecord,
    ReviveChild,
    SubstituteSeat,
    decode_config_tx,
    find_config_tx,
    is_config_payload,
)
from belep.ledger.genesis import Committee, Genesis, Member, quorum_size

__all__ = [
    "ConfigHistory",
    "ConfigReplay",
    "EpochConfig",
    "apply_revivals",
    "chain_replay",
    "check_revival",
    "genesis_history",
    "history_from_genesis",
    "replay_history",
    "scan_revivals",
]


@dataclass(frozen=True, slots=True)
class EpochConfig:
    """One epoch: a fixed seat set, the standby order, and the heights it certifies."""

    epoch: Epoch
    seats: tuple[NodeId, ...]
    standbys: tuple[NodeId, ...]
    first_height: Height
    last_height: Height | None = None  # set once a later configuration closed the epoch
    primary_offset: int = 0
    cause: str = "genesis"  # "genesis" | "substitute" | "revive"
    quorum_rule: str = "bft"

    @property
    def n(self) -> int:
        return len(self.seats)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Certificates of this epoch need this many distinct seats (``genesis.quorum_size``)."""
        return quorum_size(self.quorum_rule, self.n)

    def primary(self, view: int) -> NodeId:
        """The primary of ``view`` in this epoch."""
        return self.seats[(self.primary_offset + view) % self.n]

    def holds_seat(self, node: NodeId) -> bool:
        return node in self.seats

    def covers(self, height: int) -> bool:
        """May this epoch's certificates certify the block at ``height``?"""
        if height < self.first_height:
            return False
        return self.last_height is None or height <= self.last_height

    def voter_keys(self, keys: Mapping[NodeId, PublicKey]) -> dict[NodeId, PublicKey]:
        return {seat: keys[seat] for seat in self.seats}

    def next_standby(self, usable: Iterable[NodeId] | None = None) -> NodeId | None:
        """The first standby (in order) not holding a seat, restricted to ``usable`` if given."""
        allowed = None if usable is None else set(usable)
        for node in self.standbys:
            if node not in self.seats and (allowed is None or node in allowed):
                return node
        return None

    def check_substitution(self, change: SubstituteSeat, domain: DomainId) -> None:
        """Raise :class:`ChainError` unless ``change`` is valid as the next change of this epoch."""
        if change.domain != domain or change.epoch != self.epoch:
            raise ChainError(
                "substitution for another domain or epoch",
                expected=(domain, self.epoch),
                found=(change.domain, change.epoch),
            )
        if change.seat not in self.seats:
            raise ChainError("substitution of a node holding no seat", found=change.seat)
        if change.standby not in self.standbys or change.standby in self.seats:
            raise ChainError(
                "substitute is not an unseated standby",
                expected=list(self.standbys),
                found=change.standby,
            )

    def substituted(self, change: SubstituteSeat, height: Height, proposer: NodeId) -> EpochConfig:
        """The next epoch after ``change`` committed at ``height``."""
        seats = tuple(change.standby if s == change.seat else s for s in self.seats)
        standbys = (*(s for s in self.standbys if s != change.standby), change.seat)
        offset = seats.index(proposer) if proposer in seats else 0
        return EpochConfig(
            epoch=Epoch(self.epoch + 1),
            seats=seats,
            standbys=standbys,
            first_height=Height(height + 1),
            primary_offset=offset,
            cause="substitute",
            quorum_rule=self.quorum_rule,
        )


@dataclass(frozen=True, slots=True)
class ConfigHistory:
    """Every epoch from genesis, oldest first; the last one is current.

    ``keys`` are every member's and observer's public keys (the genesis): they
    check who signed a configuration change. ``reconfigurable`` is false for
    protocols whose committee never changes (PBFT, Raft): a configuration
    change in such a chain is an error.
    """

    domain: DomainId
    epochs: tuple[EpochConfig, ...]
    keys: Mapping[NodeId, PublicKey] = field(default_factory=dict, compare=False)
    commit_kind: str = "commit"
    reconfigurable: bool = True

    @property
    def current(self) -> EpochConfig:
        return self.epochs[-1]

    def epoch(self, number: int) -> EpochConfig | None:
        if 0 <= number < len(self.epochs) and self.epochs[number].epoch == number:
            return self.epochs[number]
        return None

    def for_certificate(self, height: int, epoch: int) -> EpochConfig:
        """The epoch whose seats must have signed a certificate of ``epoch`` at ``height``."""
        config = self.epoch(epoch)
        if config is None:
            raise ChainError(
                "certificate of an unknown epoch",
                expected=f"<= {self.current.epoch}",
                found=epoch,
                where=f"height {height}",
            )
        if not config.covers(height):
            raise ChainError(
                "certificate of an epoch that does not cover this height",
                expected=(config.first_height, config.last_height),
                found=height,
                where=f"epoch {epoch}",
            )
        return config

    def committee(self, height: int, epoch: int) -> Committee:
        """The committee a commit certificate of ``epoch`` at ``height`` must come from."""
        config = self.for_certificate(height, epoch)
        members = tuple(Member(seat, self.keys[seat]) for seat in config.seats)
        return Committee(members, config.quorum, self.commit_kind, config.epoch)

    def after_block(self, block: Block) -> ConfigHistory:
        """The history after ``block`` was committed (a new epoch if it substitutes a seat).

        A revival record applies here only if the replay did not apply it where
        the revived epoch began (its parent proof must have been verified).
        """
        change = find_config_tx(block, keys=self.keys or None)
        if change is None:
            return self
        if not self.reconfigurable:
            raise ChainError(
                "configuration change in a domain whose committee never changes",
                found=change.kind,
                where=f"height {block.height}",
            )
        if isinstance(change, RevivalRecord):
            # Already applied where the revived epoch began, unless the replay skipped it.
            if change.order.decision.epoch == self.current.epoch:
                return self.with_revival(change)
            return self
        current = self.current
        if block.header.epoch != current.epoch:
            raise ChainError(
                "substitution in a block of another epoch",
                expected=current.epoch,
                found=block.header.epoch,
                where=f"height {block.height}",
            )
        current.check_substitution(change, self.domain)
        closed = replace(current, last_height=block.height)
        opened = current.substituted(change, block.height, block.header.proposer)
        return replace(self, epochs=(*self.epochs[:-1], closed, opened))

    def with_revival(self, record: RevivalRecord) -> ConfigHistory:
        """The history after a revival (the decision must already be verified)."""
        decision = record.order.decision
        current = self.current
        check_revival(current, decision, self.domain)
        closed = replace(current, last_height=record.top_height)
        seats = decision.seats
        standbys = tuple(n for n in (*current.standbys, *current.seats) if n not in seats)
        opened = EpochConfig(
            epoch=Epoch(current.epoch + 1),
            seats=seats,
            standbys=standbys,
            first_height=Height(record.base_height + 1),
            primary_offset=0,
            cause="revive",
            quorum_rule=current.quorum_rule,
        )
        return replace(self, epochs=(*self.epochs[:-1], closed, opened))


def check_revival(current: EpochConfig, decision: ReviveChild, domain: DomainId) -> None:
    """Raise unless ``decision`` may revive ``current`` (the enforced assumptions)."""
    if decision.domain != domain:
        raise ChainError("revival of another domain", expected=domain, found=decision.domain)
    if decision.epoch != current.epoch:
        raise ChainError(
            "revival of an epoch that is not the current one",
            expected=current.epoch,
            found=decision.epoch,
        )
    if not decision.seats:
        raise ChainError("revival without seats", expected=">= 1 seat", found=0)
    known = set(current.seats) | set(current.standbys)
    unknown = sorted(set(decision.seats) - known)
    if unknown:
        raise ChainError("revival seats a node outside the domain", found=unknown)
    if not set(decision.failed) <= set(current.seats):
        raise ChainError(
            "revival declares failed a node holding no seat",
            expected=list(current.seats),
            found=list(decision.failed),
        )
    if len(decision.failed) > 2 * current.f:
        raise ChainError(
            "revival declares more than 2f seats failed",
            expected=f"<= {2 * current.f}",
            found=len(decision.failed),
        )
    if set(decision.failed) & set(decision.seats):
        raise ChainError("revival seats a node it declares failed", found=list(decision.failed))


def genesis_history(
    domain: DomainId,
    members: tuple[NodeId, ...],
    observers: tuple[NodeId, ...],
    *,
    keys: Mapping[NodeId, PublicKey] | None = None,
    quorum_rule: str = "bft",
    commit_kind: str = "commit",
    reconfigurable: bool = True,
) -> ConfigHistory:
    """Epoch 0: the local validators hold the seats, the parent's validators stand by."""
    if not members:
        raise ConfigError("a domain needs at least one seat", expected=">= 1", found=0)
    nodes = (*members, *observers)
    if len(set(nodes)) != len(nodes):
        raise ConfigError("a node is both seat and standby, or listed twice", found=list(nodes))
    epoch = EpochConfig(Epoch(0), members, observers, Height(1), quorum_rule=quorum_rule)
    return ConfigHistory(
        domain,
        (epoch,),
        keys=dict(keys or {}),
        commit_kind=commit_kind,
        reconfigurable=reconfigurable,
    )


def history_from_genesis(genesis: Genesis) -> ConfigHistory:
    """The history at height 0 of ``genesis``'s chain, for any protocol."""
    return genesis_history(
        genesis.domain,
        tuple(m.node_id for m in genesis.voters),
        tuple(m.node_id for m in genesis.observers),
        keys={m.node_id: m.key for m in (*genesis.voters, *genesis.observers)},
        quorum_rule=genesis.quorum_rule,
        commit_kind=genesis.commit_kind,
        reconfigurable=genesis.reconfigurable,
    )


# --------------------------------------------------------------------------
# Replaying a chain
# --------------------------------------------------------------------------


def scan_revivals(
    blocks: Iterable[Block],
    *,
    parent: DomainId,
    parent_voters: Mapping[NodeId, PublicKey],
    cache: SignatureCache | None = None,
) -> list[RevivalRecord]:
    """Every revival record in ``blocks`` whose parent proof verifies (others are skipped)."""
    cache = cache or SignatureCache()
    records = []
    for block in blocks:
        for tx in block.transactions:
            if not is_config_payload(tx.payload):
                continue
            try:
                change = decode_config_tx(tx.payload)
                if isinstance(change, RevivalRecord):
                    change.order.verify(parent=parent, parent_voters=parent_voters, cache=cache)
                    records.append(change)
            except ValidationError:
                continue
    return records


def apply_revivals(
    history: ConfigHistory, pending: list[RevivalRecord], height: int
) -> ConfigHistory:
    """Apply (and remove from ``pending``, sorted by base) the revivals whose revived epoch
    begins at or below ``height``."""
    while pending and pending[0].base_height < height:
        record = pending.pop(0)
        if record.order.decision.epoch == history.current.epoch:
            history = history.with_revival(record)
    return history


def replay_history(
    start: ConfigHistory,
    blocks: Iterable[Block],
    revivals: Iterable[RevivalRecord] = (),
) -> ConfigHistory:
    """The history after replaying ``blocks`` (heights 1, 2, … in order) from ``start``.

    ``revivals`` (verified, e.g. by :func:`scan_revivals`) are applied when the
    replay reaches the first height their revived epoch certifies.
    """
    pending = sorted(revivals, key=lambda r: r.base_height)
    history = start
    for block in blocks:
        history = apply_revivals(history, pending, block.height)
        history = history.after_block(block)
    return apply_revivals(history, pending, 1 << 62)


class ConfigReplay:
    """The configuration history of a chain read block by block, in height order.

    ``committee(height, epoch)`` names the committee whose certificate of
    ``epoch`` commits the block at ``height`` (the next block to read); then
    :meth:`advance` applies that block. Revival records (``revivals``, verified,
    e.g. by :func:`scan_revivals`) are applied where the revived epoch begins:
    a reader must collect them first, because a revived epoch re-certifies
    blocks below the block that records it. Memory is one history, whatever
    the chain's length.
    """

    __slots__ = ("_history", "_pending")

    def __init__(self, start: ConfigHistory, revivals: Iterable[RevivalRecord] = ()) -> None:
        self._pending = sorted(revivals, key=lambda r: r.base_height)
        self._history = start

    @property
    def history(self) -> ConfigHistory:
        return self._history

    def committee(self, height: int, epoch: int) -> Committee:
        self._history = apply_revivals(self._history, self._pending, height)
        return self._history.committee(height, epoch)

    def advance(self, block: Block) -> None:
        """Apply a committed block; raises :class:`ChainError` for an invalid change."""
        self._history = apply_revivals(self._history, self._pending, block.height)
        self._history = self._history.after_block(block)


def chain_replay(
    genesis: Genesis,
    blocks: Callable[[], Iterable[Block]],
    *,
    parent_voters: Mapping[NodeId, PublicKey] | None = None,
) -> ConfigReplay:
    """A :class:`ConfigReplay` from ``genesis`` for the chain that ``blocks()`` reads.

    For a reconfigurable domain with a parent, ``blocks()`` is read once first
    for revival records, verified against the parent's validators (by default
    the genesis observers, the parent's standbys); other domains need no pass.
    """
    records: list[RevivalRecord] = []
    if genesis.parent is not None and genesis.reconfigurable:
        voters = parent_voters or {m.node_id: m.key for m in genesis.observers}
        records = scan_revivals(blocks(), parent=genesis.parent, parent_voters=voters)
    return ConfigReplay(history_from_genesis(genesis), records)
