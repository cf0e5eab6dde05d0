"""Consensus protocols as pure, deterministic state machines (sans-IO).

The interface is in :mod:`belep.consensus.types`; each protocol module
(``pbft``, ``raft``, ``hpbft``) provides a replica class constructed as
``Replica(config, persisted)`` where ``persisted`` maps every key the replica
stored with ``Persist`` to its bytes (empty on first start).
"""
