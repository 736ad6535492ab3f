"""polnet netsim package."""
