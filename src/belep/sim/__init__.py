"""belep.sim."""
