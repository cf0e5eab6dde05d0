"""BELEP: a permissioned blockchain that fixes police law-enforcement electronic evidence.

Subpackages (DESIGN §11): ``ledger`` (blocks, Merkle proofs, block store),
``consensus`` (pure protocol state machines), ``sim`` (deterministic
simulator), ``content`` (IPFS-compatible content store), ``net`` (transport),
``node`` (one node process and its service interface), ``api`` (its HTTP
API), ``deploy`` (topology, provisioning, local networks, the demo),
``commands`` (the CLI), ``bench`` (experiments). ``encoding``,
``crypto`` and ``errors`` are shared by all of them.
"""

__version__ = "0.1.0"
