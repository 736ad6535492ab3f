"""Proof-of-learning compute with torch: the shell side of protocol/pol.

Training runs one step as an explicit sequence of operations (the same sequence the
pinpoint game bisects over), so the trainer, the tracer and the referee share one
implementation and an honest trace always reproduces the honest checkpoints bit for bit.
"""
