"""belep.net: the authenticated TCP transport between BELEP nodes.

The public API is re-exported here; see ``docs/spec/transport.md``.

* pure cores (no I/O): :mod:`~belep.net.wire` (frames),
  :mod:`~belep.net.handshake`, :mod:`~belep.net.session` (records),
  :mod:`~belep.net.connection` (one connection as a state machine),
  :mod:`~belep.net.policy` (backoff, duplicate connections, send queue);
* public records: :mod:`~belep.net.config`;
* the asyncio edge: :mod:`~belep.net.transport` (with its bookkeeping in
  :mod:`~belep.net.peers`) and :mod:`~belep.net.benchmark`.
"""

from belep.net.config import ConnectionInfo, PeerAddress, TransportConfig, TransportMetrics
from belep.net.policy import BackoffPolicy, QueueLimits
from belep.net.transport import MessageHandler, Transport
from belep.net.wire import DEFAULT_MAX_FRAME, Limits, RejectReason

__all__ = [
    "DEFAULT_MAX_FRAME",
    "BackoffPolicy",
    "ConnectionInfo",
    "Limits",
    "MessageHandler",
    "PeerAddress",
    "QueueLimits",
    "RejectReason",
    "Transport",
    "TransportConfig",
    "TransportMetrics",
]
