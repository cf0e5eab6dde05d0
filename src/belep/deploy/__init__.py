"""Deployment tools: what sets a network up and drives it from outside (DESIGN §11).

``topology`` (the TOML format), ``presets``, ``provision`` (keys, signed
geneses, node configurations: ``belep init``), ``launcher`` (a local network
of node processes: ``belep up``), ``status`` (``belep status``), ``demo``
(``belep demo``); ``docs/spec/topology.md`` describes them. Not the running
node: they import :mod:`belep.node`, never the reverse. They print nothing;
what they have to say is returned or handed to a reporter that
:mod:`belep.commands` implements.
"""
