"""Scenarios built on netsim (consensus, ledger, market); filled by their subsystems."""
