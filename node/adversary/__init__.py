"""The standing adversary suite: a hostile peer (a stock py-libp2p host with a funded key
of its own, speaking our signed envelopes) and the attacks it runs against separate
daemon processes (tests/test_adversary_*.py, bench/adversary.py, `polnet swarm up
--attack`). See node/adversary/attacks.py for the catalogue and what each one cost
before the fixes it pins.
"""
