"""Proof of learning: the pure rules.

A task's training is specified declaratively (`spec`), priced before it runs (`flops`),
committed as a Merkle tree of checkpoints (`merkle`), spot-checked on segments chosen
after the commitment (`sampling`), and, when two parties disagree, narrowed to one
operation by a bisection game (`pinpoint`). Nothing here touches torch: the tensor work
is described by job records (`jobs`) that node/compute or the synthetic trainer
(`synthetic`) execute.
"""
