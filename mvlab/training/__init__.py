"""Pieces of the proxy trainer (``mvlab.train``) and the benchmark (``mvlab.bench``): device and
precision handling, optimiser/scheduler construction, checkpoints, evaluation, complexity."""
