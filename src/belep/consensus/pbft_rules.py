"""PBFT's rules as pure functions: proposals, statements, view changes, new-view plans.

Owns the parts of ``docs/spec/pbft.md`` that do not depend on a replica's
mutable state, so the replica (:mod:`belep.consensus.pbft`) and tests call the
same code:

* :class:`PbftRules` — constants derived from the configuration (domain,
  voters, quorums, watermark window, batch size, clock skew, transaction
  check, planted bugs) and :meth:`PbftRules.primary`;
* :func:`check_proposal` — is a block a valid fresh proposal of a view;
* :func:`make_view_change` / :func:`check_view_change` — build and validate a
  ``ViewChange``;
* :func:`plan_new_view` — the deterministic choice of what a new view
  re-proposes, from a quorum of view changes;
* :func:`make_new_view` / :func:`check_new_view` — build and validate a
  ``NewView``, returning its plan.

Invariants of a :class:`NewViewPlan` computed from valid view changes:

* its stable checkpoint is the highest one among the view changes;
* its re-proposals occupy consecutive heights right above that checkpoint,
  each block's ``prev_hash`` naming the block (or checkpoint) below it;
* at each height it holds the block of the highest-view prepared certificate
  reported (ties, impossible with at most ``f`` faults, go to the larger hash).

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from belep.consensus.certificates import (
    BlockBodyCache,
    SignatureCache,
    verify_certificate,
)
from belep.consensus.checkpoints import CHECKPOINT_KIND
from belep.consensus.pbft_messages import (
    NewView,
    PreparedEntry,
    ViewChange,
    new_view_signing_bytes,
    view_change_signing_bytes,
)
from belep.crypto import PrivateKey, PublicKey
from belep.errors import (
    ChainError,
    InvalidSignature,
    ProtocolViolation,
    QuorumNotMet,
    UnknownSigner,
)
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
)
from belep.ledger.genesis import Committee, Member

__all__ = [
    "BUG_FORGET_PREPARED",
    "BUG_PREPARE_QUORUM_2F",
    "COMMIT_KIND",
    "PREPARE_KIND",
    "NewViewPlan",
    "PbftRules",
    "check_new_view",
    "check_proposal",
    "check_view_change",
    "make_new_view",
    "make_view_change",
    "plan_new_view",
]

PREPARE_KIND = "prepare"
COMMIT_KIND = "commit"
#: Planted bug: a prepared certificate needs only 2f prepare votes (test-only).
BUG_PREPARE_QUORUM_2F = "pbft_prepare_quorum_2f"
#: Planted bug: a new view ignores the prepared certificates it was given (test-only).
BUG_FORGET_PREPARED = "pbft_viewchange_forgets_prepared"


@dataclass(frozen=True, slots=True)
class PbftRules:
    """Constants of one PBFT domain, derived from the replica configuration."""

    domain: DomainId
    epoch: Epoch
    members: tuple[NodeId, ...]
    voters: Mapping[NodeId, PublicKey]
    quorum: int
    prepare_quorum: int
    checkpoint_interval: int
    log_size: int
    genesis_hash: Digest
    forget_prepared: bool
    max_batch_size: int = 500
    max_clock_skew_ms: int = 60_000
    validate_transaction: Callable[[Transaction], bool] = lambda _tx: True

    def primary(self, view: int) -> NodeId:
        """The primary of ``view``: ``members[view % n]``."""
        return self.members[view % len(self.members)]

    @property
    def committee(self) -> Committee:
        """Who commits blocks (every member, the commit quorum): for the ledger's one check."""
        members = tuple(Member(node, self.voters[node]) for node in self.members)
        return Committee(members, self.quorum, COMMIT_KIND, self.epoch)

    def statement(self, kind: str, view: View, height: Height, block_hash: Digest) -> VoteStatement:
        return VoteStatement(kind, self.domain, self.epoch, view, height, block_hash)


@dataclass(frozen=True, slots=True)
class NewViewPlan:
    """What a new view starts from: its stable checkpoint and the blocks it re-proposes."""

    view: View
    stable: QuorumCertificate | None
    reproposals: tuple[PreparedEntry, ...]

    @property
    def stable_height(self) -> Height:
        return Height(0) if self.stable is None else self.stable.statement.height

    def stable_hash(self, genesis_hash: Digest) -> Digest:
        return genesis_hash if self.stable is None else self.stable.statement.block_hash

    @property
    def last_height(self) -> Height:
        """The highest re-proposed height (the stable height if none)."""
        return self.reproposals[-1].height if self.reproposals else self.stable_height


def check_proposal(
    block: Block,
    rules: PbftRules,
    *,
    view: View,
    now_ms: int,
    parent: tuple[Digest, int | None] | None,
    bodies: BlockBodyCache,
) -> None:
    """Raise :class:`ChainError` unless ``block`` is a valid fresh proposal in ``view``.

    The header names this domain and epoch, ``view`` and its primary; the
    block holds at most ``max_batch_size`` distinct transactions that match
    its root and each pass the application's check; its timestamp is within
    ``max_clock_skew_ms`` of ``now_ms``; and, when the parent (hash, timestamp)
    is known, it links to it and is not older than it.
    """
    header = block.header
    primary = rules.primary(view)
    if (
        header.domain != rules.domain
        or header.epoch != rules.epoch
        or header.view != view
        or header.proposer != primary
    ):
        raise ChainError(
            "block header does not match the view",
            expected=(rules.domain, rules.epoch, view, primary),
            found=(header.domain, header.epoch, header.view, header.proposer),
        )
    if len(block.transactions) > rules.max_batch_size:
        raise ChainError(
            "block too large", expected=f"<= {rules.max_batch_size}", found=len(block.transactions)
        )
    if abs(header.timestamp_ms - now_ms) > rules.max_clock_skew_ms:
        raise ChainError(
            "block timestamp too far from local time",
            expected=f"{now_ms} ± {rules.max_clock_skew_ms}",
            found=header.timestamp_ms,
        )
    if parent is not None:
        parent_hash, parent_ts = parent
        if header.prev_hash != parent_hash:
            raise ChainError(
                "block does not extend the chain", expected=parent_hash, found=header.prev_hash
            )
        if parent_ts is not None and header.timestamp_ms < parent_ts:
            raise ChainError(
                "block timestamp before its parent's",
                expected=f">= {parent_ts}",
                found=header.timestamp_ms,
            )
    if len({tx.tx_hash for tx in block.transactions}) != len(block.transactions):
        raise ChainError("block repeats a transaction", where=f"height {header.height}")
    bodies.check(block)
    validate = rules.validate_transaction
    for tx in block.transactions:
        if not validate(tx):
            raise ChainError("block carries an invalid transaction", found=tx.tx_hash)


def make_view_change(
    key: PrivateKey,
    rules: PbftRules,
    new_view: View,
    replica: NodeId,
    stable: QuorumCertificate | None,
    prepared: Iterable[PreparedEntry],
) -> ViewChange:
    """This replica's signed request to move to ``new_view``."""
    entries = tuple(sorted(prepared, key=lambda e: e.height))
    signature = key.sign(
        view_change_signing_bytes(rules.domain, new_view, replica, stable, entries)
    )
    return ViewChange(rules.domain, new_view, replica, stable, entries, signature)


def check_view_change(
    vc: ViewChange, rules: PbftRules, cache: SignatureCache, bodies: BlockBodyCache
) -> None:
    """Raise a :class:`ValidationError` unless ``vc`` is a valid view change.

    Checks the domain, the signer and its signature, the stable checkpoint
    certificate, and every prepared entry: ascending heights inside the
    sender's watermark window, a prepare certificate from an earlier view with
    the prepare quorum, and a block whose hash, height and body match it.
    """
    if vc.domain != rules.domain:
        raise ProtocolViolation(
            "view change for another domain", expected=rules.domain, found=vc.domain
        )
    key = rules.voters.get(vc.replica)
    if key is None:
        raise UnknownSigner("view change from a non-member", found=vc.replica)
    if not cache.is_valid(key, vc.signing_bytes(), vc.signature):
        raise InvalidSignature(f"invalid view change signature by {vc.replica}")
    stable_height = 0
    if vc.stable is not None:
        s = vc.stable.statement
        if s.view != 0 or s.height <= 0 or s.height % rules.checkpoint_interval != 0:
            raise ProtocolViolation("malformed stable checkpoint", found=(s.view, s.height))
        verify_certificate(
            vc.stable,
            voters=rules.voters,
            quorum=rules.quorum,
            cache=cache,
            kind=CHECKPOINT_KIND,
            domain=rules.domain,
            epoch=rules.epoch,
        )
        stable_height = s.height
    previous = stable_height
    for entry in vc.prepared:
        s = entry.certificate.statement
        if s.height <= previous or s.height > stable_height + rules.log_size:
            raise ProtocolViolation(
                "prepared entry out of order or outside the watermarks",
                expected=f"({previous}, {stable_height + rules.log_size}]",
                found=s.height,
            )
        previous = s.height
        if s.view >= vc.new_view:
            raise ProtocolViolation(
                "prepared certificate not from an earlier view",
                expected=f"< {vc.new_view}",
                found=s.view,
            )
        block = entry.block
        if block.block_hash != s.block_hash or block.height != s.height:
            raise ChainError(
                "prepared block does not match its certificate",
                expected=(s.height, s.block_hash),
                found=(block.height, block.block_hash),
            )
        if block.header.domain != rules.domain or block.header.epoch != rules.epoch:
            raise ChainError("prepared block of another domain or epoch", found=block.header.domain)
        verify_certificate(
            entry.certificate,
            voters=rules.voters,
            quorum=rules.prepare_quorum,
            cache=cache,
            kind=PREPARE_KIND,
            domain=rules.domain,
            epoch=rules.epoch,
        )
        bodies.check(block)


def plan_new_view(view: View, view_changes: Sequence[ViewChange], rules: PbftRules) -> NewViewPlan:
    """The deterministic plan of ``view`` from (already validated) view changes.

    The stable checkpoint is the highest reported. Above it, each height gets
    the block of its highest-view prepared certificate; the re-proposals stop
    at the first height with none, or whose block does not link to the one
    below (with at most ``f`` faults neither happens below the highest
    reported height; see the spec's safety argument).
    """
    stable: QuorumCertificate | None = None
    for vc in view_changes:
        if vc.stable is not None and (
            stable is None or vc.stable.statement.height > stable.statement.height
        ):
            stable = vc.stable
    low = 0 if stable is None else stable.statement.height
    chosen: dict[int, PreparedEntry] = {}
    if not rules.forget_prepared:
        for vc in view_changes:
            for entry in vc.prepared:
                h = entry.height
                if h <= low:
                    continue
                best = chosen.get(h)
                if best is None or _outranks(entry, best):
                    chosen[h] = entry
    reproposals: list[PreparedEntry] = []
    prev = rules.genesis_hash if stable is None else stable.statement.block_hash
    next_height = low + 1
    while next_height in chosen and chosen[next_height].block.header.prev_hash == prev:
        picked = chosen[next_height]
        reproposals.append(picked)
        prev = picked.block.block_hash
        next_height += 1
    return NewViewPlan(view, stable, tuple(reproposals))


def _outranks(a: PreparedEntry, b: PreparedEntry) -> bool:
    """Higher view wins; equal views (never with at most f faults) by larger hash."""
    if a.view != b.view:
        return a.view > b.view
    return a.certificate.statement.block_hash > b.certificate.statement.block_hash


def make_new_view(
    key: PrivateKey, rules: PbftRules, view: View, view_changes: Sequence[ViewChange]
) -> tuple[NewView, NewViewPlan]:
    """The signed new-view of ``view`` from exactly a quorum of view changes, and its plan."""
    chosen = tuple(view_changes[: rules.quorum])
    signature = key.sign(new_view_signing_bytes(rules.domain, view, chosen))
    return NewView(rules.domain, view, chosen, signature), plan_new_view(view, chosen, rules)


def check_new_view(
    nv: NewView, rules: PbftRules, cache: SignatureCache, bodies: BlockBodyCache
) -> NewViewPlan:
    """Validate ``nv`` and return its plan; raise a :class:`ValidationError` otherwise.

    The new-view must be signed by the primary of its view and carry view
    changes for that view from a quorum of distinct members, each valid.
    """
    if nv.domain != rules.domain:
        raise ProtocolViolation(
            "new view for another domain", expected=rules.domain, found=nv.domain
        )
    if nv.view < 1:
        raise ProtocolViolation("new view for view 0", expected=">= 1", found=nv.view)
    primary = rules.primary(nv.view)
    if not cache.is_valid(rules.voters[primary], nv.signing_bytes(), nv.signature):
        raise InvalidSignature(f"new view {nv.view} not signed by its primary {primary}")
    replicas = [vc.replica for vc in nv.view_changes]
    if len(set(replicas)) != len(replicas):
        raise QuorumNotMet("new view counts a replica twice", found=replicas)
    if len(replicas) < rules.quorum:
        raise QuorumNotMet("new view below quorum", expected=rules.quorum, found=len(replicas))
    for vc in nv.view_changes:
        if vc.new_view != nv.view:
            raise ProtocolViolation(
                "new view carries a view change for another view",
                expected=nv.view,
                found=vc.new_view,
            )
        check_view_change(vc, rules, cache, bodies)
    return plan_new_view(nv.view, nv.view_changes, rules)
