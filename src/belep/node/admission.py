"""Admission control: when a node refuses new client transactions (``503 Retry-After``).

Owns :class:`AdmissionPolicy` and :func:`refusal`. A domain commits at most
so many transactions per second; a node that accepted everything offered
above that rate would grow an unbounded backlog, and with it the time every
transaction waits. Worse, a BFT seat cannot tell a primary working through a
long queue from one that censors a transaction: its request timer
(``docs/spec/hpbft.md``, ``docs/spec/pbft.md``) suspects the primary once a
known transaction has waited about two request timeouts, so an overloaded but
honest domain would change views again and again and commit almost nothing
(measured: 4,000 tx/s offered to HPBFT(4+3) committed 62 tx/s).

So each node bounds, per domain, the transactions *it* accepted and that are
not yet committed (:class:`~belep.node.commits.Backlog`):

* **delay**: while the oldest of them has waited longer than
  ``max_delay_s`` (by default half the domain's request timeout), new
  submissions are refused; the queue drains, the oldest commits, admission
  reopens. This bounds every accepted transaction's wait well below the
  request timer whatever the domain's throughput (a slower machine simply
  admits less), and keeps the primary's queue deep enough (``max_delay_s``
  worth of transactions) to fill its pipeline;
* **count**: a batch that would take the backlog above ``max_outstanding`` is
  refused, which bounds memory when commits are fast but clients are many.

A refusal names the reason and how long to wait; nothing of a refused
request is accepted, so the client resubmits it whole. Relayed transactions
and the node's own anchors are not client submissions and are never refused.

Pure: no I/O, no clock (ages come in).
"""

from __future__ import annotations

from dataclasses import dataclass

from belep.node.commits import Backlog

__all__ = ["AdmissionPolicy", "Refusal", "refusal"]

#: Default bound on a domain's backlog at one node, in transactions.
DEFAULT_MAX_OUTSTANDING = 20_000
#: Shortest retry delay suggested to a refused client.
MIN_RETRY_MS = 100


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """A domain's admission limits at one node."""

    max_delay_s: float
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING

    @classmethod
    def for_domain(
        cls, request_timeout_ms: int, admission_delay_ms: int = 0, max_outstanding: int = 0
    ) -> AdmissionPolicy:
        """The policy of a domain's tuning: ``admission_delay_ms`` 0 = half the request
        timeout; ``max_outstanding`` 0 = :data:`DEFAULT_MAX_OUTSTANDING`."""
        delay_ms = admission_delay_ms or max(1, request_timeout_ms // 2)
        return cls(delay_ms / 1000, max_outstanding or DEFAULT_MAX_OUTSTANDING)

    @property
    def retry_after_ms(self) -> int:
        """How long a refused client should wait before resubmitting."""
        return max(MIN_RETRY_MS, round(self.max_delay_s * 1000))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submission is refused, for the ``503`` answer."""

    reason: str
    """``delay`` or ``outstanding``."""
    message: str
    retry_after_ms: int


def refusal(policy: AdmissionPolicy, backlog: Backlog, incoming: int) -> Refusal | None:
    """``None`` if ``incoming`` more transactions may be accepted, else why not."""
    if backlog.count and backlog.oldest_age_s > policy.max_delay_s:
        return Refusal(
            "delay",
            f"node busy: its oldest uncommitted transaction has waited "
            f"{backlog.oldest_age_s * 1000:.0f} ms (limit {policy.max_delay_s * 1000:.0f} ms)",
            policy.retry_after_ms,
        )
    if backlog.count + incoming > policy.max_outstanding:
        return Refusal(
            "outstanding",
            f"node busy: {backlog.count} transactions uncommitted, {incoming} more would "
            f"exceed the limit of {policy.max_outstanding}",
            policy.retry_after_ms,
        )
    return None
