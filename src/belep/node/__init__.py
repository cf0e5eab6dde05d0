"""One node process: wires consensus, ledger, content and transport, and offers a small
service interface (DESIGN §11).

``docs/spec/node.md`` describes it. Modules: ``config``/``genesis_seal`` (what
a node reads at start), ``runtime`` (the node), ``domain`` (the host of one
replica), ``kvstore``, ``sync``, ``commits``, ``admission``, ``anchoring``,
``pinning``, ``service``/``chainreads`` (what clients may ask of a running
node; the HTTP layer is :mod:`belep.api`), ``auth``/``metrics``/``logs``,
``protocols`` (the registry bridge), ``chaincheck`` (protocol-aware chain
verification). Nothing here imports :mod:`belep.api` or :mod:`belep.deploy`.
"""
