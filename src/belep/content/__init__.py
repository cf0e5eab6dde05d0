"""belep.content."""
