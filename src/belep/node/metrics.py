"""Prometheus metrics of a node (``GET /metrics``, bearer token).

Owns :class:`NodeMetrics`: one private :class:`~prometheus_client.CollectorRegistry`
per node (never the global one, so tests can run several nodes in one
process). The commit-latency histogram is observed when a transaction
submitted to this node commits; everything else is read from the node's
live state at scrape time by a collector, so the hot path pays nothing for
it. Metric names and labels are listed in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["DomainSample", "NodeMetrics", "NodeSample"]

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class DomainSample:
    domain: str
    role: str
    height: int
    lag: int
    view: int | None
    view_changes: int
    queued_events: int
    blocks_delivered: int
    transactions_committed: int
    decode_errors: int
    peers_connected: int
    backlog: int = 0
    """Transactions accepted by this node and not yet committed."""
    backlog_age_s: float = 0.0
    """How long the oldest of them has waited."""
    refused: Mapping[str, int] = field(default_factory=dict)
    """Client submissions refused by admission control, by reason."""


@dataclass(frozen=True, slots=True)
class NodeSample:
    peers_connected: int
    peers_total: int
    messages_dropped: int
    queued_messages: int
    pins_done: int
    pins_failed: int
    pins_pending: int
    anchors_submitted: int
    waiting_clients: int
    domains: tuple[DomainSample, ...]


class _StateCollector(Collector):
    def __init__(self, sample: Callable[[], NodeSample]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._sample()
        yield GaugeMetricFamily(
            "belep_peers_connected", "Authenticated peer connections", s.peers_connected
        )
        yield GaugeMetricFamily(
            "belep_peers_total", "Peers this node should be connected to", s.peers_total
        )
        yield CounterMetricFamily(
            "belep_messages_dropped", "Messages the send queues dropped", s.messages_dropped
        )
        yield GaugeMetricFamily(
            "belep_send_queue_messages", "Messages waiting in the send queues", s.queued_messages
        )
        yield CounterMetricFamily("belep_pins", "Pinned file roots", s.pins_done)
        yield CounterMetricFamily(
            "belep_pin_failures", "Failed pin attempts (retried)", s.pins_failed
        )
        yield GaugeMetricFamily(
            "belep_pins_pending", "File roots waiting to be pinned", s.pins_pending
        )
        yield CounterMetricFamily(
            "belep_anchors_submitted", "Anchor transactions submitted", s.anchors_submitted
        )
        yield GaugeMetricFamily(
            "belep_waiting_clients", "Clients waiting for a commit", s.waiting_clients
        )
        per_domain: list[tuple[str, str, str, Callable[[DomainSample], float]]] = [
            ("belep_height", "gauge", "Committed height", lambda d: d.height),
            ("belep_blocks_behind", "gauge", "Blocks behind the best peer", lambda d: d.lag),
            (
                "belep_view",
                "gauge",
                "Current view or term",
                lambda d: -1 if d.view is None else d.view,
            ),
            ("belep_view_changes", "counter", "View (term) changes seen", lambda d: d.view_changes),
            (
                "belep_queue_depth",
                "gauge",
                "Events waiting for the replica",
                lambda d: d.queued_events,
            ),
            (
                "belep_blocks_committed",
                "counter",
                "Blocks committed since start",
                lambda d: d.blocks_delivered,
            ),
            (
                "belep_transactions_committed",
                "counter",
                "Transactions committed since start",
                lambda d: d.transactions_committed,
            ),
            (
                "belep_bad_messages",
                "counter",
                "Undecodable messages dropped",
                lambda d: d.decode_errors,
            ),
            (
                "belep_domain_peers_connected",
                "gauge",
                "Connected peers of the domain",
                lambda d: d.peers_connected,
            ),
        ]
        for name, kind, text, read in per_domain:
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "gauge":
                family = GaugeMetricFamily(name, text, labels=["domain", "role"])
            else:
                family = CounterMetricFamily(name, text, labels=["domain", "role"])
            for d in s.domains:
                family.add_metric([d.domain, d.role], read(d))
            yield family
        backlog = GaugeMetricFamily(
            "belep_backlog_transactions",
            "Transactions accepted by this node and not yet committed",
            labels=["domain"],
        )
        age = GaugeMetricFamily(
            "belep_backlog_age_seconds",
            "How long the oldest transaction of the backlog has waited",
            labels=["domain"],
        )
        refused = CounterMetricFamily(
            "belep_submissions_refused",
            "Client submissions refused by admission control (503)",
            labels=["domain", "reason"],
        )
        for d in s.domains:
            backlog.add_metric([d.domain], d.backlog)
            age.add_metric([d.domain], d.backlog_age_s)
            for reason in ("delay", "rate", "outstanding"):
                refused.add_metric([d.domain, reason], d.refused.get(reason, 0))
        yield backlog
        yield age
        yield refused


class NodeMetrics:
    """The node's registry: a latency histogram plus live state."""

    def __init__(self, sample: Callable[[], NodeSample]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_latency = Histogram(
            "belep_commit_latency_seconds",
            "Submit-to-commit latency of transactions submitted to this node",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(sample))

    def observe_latency(self, domain: str, seconds: float) -> None:
        self.commit_latency.labels(domain).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
