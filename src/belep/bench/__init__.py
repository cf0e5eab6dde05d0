"""belep.bench."""
