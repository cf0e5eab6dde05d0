"""Command groups of the ``belep`` CLI, one module per group; each exposes ``register(app)``."""
