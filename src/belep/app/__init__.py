"""The evidence application; for now only the signed transaction envelope (``envelope``)."""
