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
* **rate** (Little's law): a request that would take the backlog above what
  the node's transactions commit in two ``max_delay_s`` (their commit rate over
  the last seconds times :data:`RATE_HORIZON` × ``max_delay_s``, at least
  :data:`MIN_BACKLOG`) is refused. The delay test alone lets a burst in — after a refusal every
  waiting client comes back at once, each request finding the oldest entry
  young — and a burst of several seconds of work would wait past the request
  timer all the same;
* **count**: a request that would take the backlog above ``max_outstanding``
  is refused, which bounds memory whatever the rate.

A request that finds the backlog empty is always admitted (up to
``max_outstanding``), so a node makes progress from a standing start; one
larger than half the rate bound counts as half of it, so a large batch is
admitted once the backlog is half empty rather than waiting for it to empty.

A refusal names the reason and how long to wait (about the time the excess
takes to commit at the recent rate, within 50 ms .. ``max_delay_s``); nothing
of a refused request is accepted, so the client resubmits it whole. Relayed transactions
and the node's own anchors are not client submissions and are never refused.

Pure: no I/O, no clock (ages come in).
"""

from __future__ import annotations

from dataclasses import dataclass

from belep.node.commits import MAX_TRACKED, Backlog

__all__ = ["AdmissionPolicy", "Refusal", "refusal"]

#: Default bound on a domain's backlog at one node, in transactions.
DEFAULT_MAX_OUTSTANDING = 20_000
#: Shortest retry delay suggested to a refused client.
MIN_RETRY_MS = 50
#: The rate test never bounds the backlog below this many transactions.
MIN_BACKLOG = 100
#: The rate test admits this many delays' worth of work: with 1 the bound would hold the
#: backlog at whatever rate it has now (Little's law is an equilibrium at any rate below
#: capacity); with 2 it grows while transactions commit faster than the delay, and a burst
#: still waits at most two delays (a request timeout by default, half the censorship bound).
RATE_HORIZON = 2


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
        timeout; ``max_outstanding`` 0 = :data:`DEFAULT_MAX_OUTSTANDING`, and never more than
        the tracker remembers (:data:`~belep.node.commits.MAX_TRACKED`)."""
        delay_ms = admission_delay_ms or max(1, request_timeout_ms // 2)
        limit = min(max_outstanding or DEFAULT_MAX_OUTSTANDING, MAX_TRACKED)  # all tracked
        return cls(delay_ms / 1000, limit)

    @property
    def retry_after_ms(self) -> int:
        """The longest wait suggested to a refused client (the delay bound)."""
        return max(MIN_RETRY_MS, round(self.max_delay_s * 1000))

    def retry_after_for(self, excess: int, rate: float) -> int:
        """The wait suggested when ``excess`` transactions must commit first at ``rate``
        per second: that long, within :data:`MIN_RETRY_MS` .. :attr:`retry_after_ms`."""
        if rate <= 0:
            return self.retry_after_ms
        return max(MIN_RETRY_MS, min(self.retry_after_ms, round(excess / rate * 1000)))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a submission is refused, for the ``503`` answer."""

    reason: str
    """``delay``, ``rate`` or ``outstanding``."""
    message: str
    retry_after_ms: int


def refusal(policy: AdmissionPolicy, backlog: Backlog, incoming: int) -> Refusal | None:
    """``None`` if ``incoming`` more transactions may be accepted, else why not."""
    if backlog.count and backlog.oldest_age_s > policy.max_delay_s:
        return Refusal(
            "delay",
            f"node busy: its oldest uncommitted transaction has waited "
            f"{backlog.oldest_age_s * 1000:.0f} ms (limit {policy.max_delay_s * 1000:.0f} ms)",
            policy.retry_after_for(backlog.count, backlog.commit_rate),
        )
    allowed = max(MIN_BACKLOG, int(backlog.commit_rate * RATE_HORIZON * policy.max_delay_s))
    # A request larger than half the bound counts as half of it: admitted once the backlog
    # is at most half full, instead of only when it is empty (never, under steady load).
    counted = min(incoming, allowed // 2)
    if backlog.count and backlog.count + counted > allowed:
        return Refusal(
            "rate",
            f"node busy: {backlog.count} transactions uncommitted and {incoming} more would "
            f"take longer than {RATE_HORIZON * policy.max_delay_s * 1000:.0f} ms to commit at the recent "
            f"rate of {backlog.commit_rate:.0f} tx/s",
            policy.retry_after_for(backlog.count + counted - allowed, backlog.commit_rate),
        )
    if backlog.count + incoming > policy.max_outstanding:
        return Refusal(
            "outstanding",
            f"node busy: {backlog.count} transactions uncommitted, {incoming} more would "
            f"exceed the limit of {policy.max_outstanding}",
            policy.retry_after_ms,
        )
    return None
