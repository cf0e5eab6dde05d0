"""belep.node."""
