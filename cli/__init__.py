"""polnet cli package."""
