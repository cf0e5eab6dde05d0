"""One node process: wires consensus, ledger, content, transport and HTTP (DESIGN §11).

``docs/spec/node.md`` and ``docs/spec/topology.md`` describe it. Modules:
``topology``/``presets``/``provision``/``config``/``genesis_seal`` (what ``belep
init`` makes and a node reads), ``runtime`` (the node), ``domain`` (the host of
one replica), ``kvstore``, ``sync``, ``commits``, ``anchoring``, ``pinning``,
``api``/``auth``/``metrics``/``logs`` (the HTTP and observability edge),
``launcher``/``status``/``demo`` (local networks), ``protocols`` (the registry
bridge), ``chaincheck`` (protocol-aware chain verification).
"""
