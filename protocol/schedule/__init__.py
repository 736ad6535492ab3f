"""Placing a crew: which device runs which pipeline stage and data-parallel rank.

Together's scheduler (Yuan et al., "Decentralized Training of Foundation Models in
Heterogeneous Environments", NeurIPS 2022) as pure code, its cost model extended with
compute and memory, the paper's genetic search (GCMA) kept as the baseline, and a
better anytime search. Link measurements arrive as signed, TTL-bounded reports
(`links`), and only links both ends agree on are used (`book`).

Entry point: `protocol.schedule.driver.schedule`. This package's own import stays
light (no numpy): `protocol.schedule.links` registers wire messages and is imported by
every node, the search modules only by whoever schedules.
"""
