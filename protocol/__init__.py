"""polnet's pure protocol core.

Everything here is deterministic and sans-IO: no clock, no sockets, no files, no
threads, no global randomness and no torch. Time comes in as an argument, randomness
from explicit seeds, and effects leave as command objects for a shell to run.
"""
