"""The compute market: workers, elections, the eight task stages as ledger rules, roles."""
