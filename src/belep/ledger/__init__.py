"""belep.ledger."""
