"""belep.net."""
