"""polnet node package."""
